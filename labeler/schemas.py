"""Every payload the labeler accepts, written once as a pydantic v2 model, and the answers it gives.

The API, the CLI, the admin forms and the importer validate through `parse`, and labeler.openapi builds
its components from these classes, so the document cannot disagree with the server. Validation is
strict: no silent coercion (`"rationale": 0` or `"scores": []` is a 422 naming the field), bounds on
every number and text, ids within signed 64-bit. The one allowance is a whole float for an integer
field (`1706.0`): JSON Schema calls that an integer, so the document and the server agree on it.

Rules that depend on stored rows (a ranking names exactly the task's responses, a task has the
project's k responses) are checked where the rows are (labeler.assignment, labeler.importer) and are
422s too.
"""

import json
import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

from labeler.errors import MAX_ID, LabelerError
from labeler.models import AUDIT_ACTIONS, PROJECT_KINDS, ROLES

MAX_K = 20  # responses per task
MAX_OVERLAP = 1000
MAX_LEASE_SECONDS = 30 * 24 * 3600  # a lease beyond 30 days is a mistake, and expiry must fit a datetime
MAX_TEXT = 100_000  # characters in a prompt, response, rationale, edit or guidelines
MAX_SECONDS_SPENT = 7 * 24 * 3600.0
MAX_TASKS_PER_CALL = 10_000
MAX_JSON_DEPTH = 32  # the deepest real payload (a task's meta) is far shallower
MAX_PAGE = 1_000_000  # list pages in the admin's views
NO_NUL = r"^[^\u0000]*$"
PROJECT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$"  # names appear in URLs: /api/v1/projects/<name>
AGGREGATIONS = ("majority", "bradley-terry")
MESSAGE_ROLES = ("system", "user", "assistant", "tool")


def whole_number(value):
    """1706.0 is the integer 1706 in JSON Schema; 1706.5, "1706" and true stay errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def bounded_int(low: int, high: int, description: str | None = None):
    # the bounds come before the validator so that the JSON schema states them as minimum/maximum
    return Annotated[int, Field(ge=low, le=high, description=description), BeforeValidator(whole_number)]


def text(max_length: int = MAX_TEXT, min_length: int = 0, description: str | None = None):
    # no NUL: PostgreSQL's text cannot hold one, and no one means to send it
    return Annotated[str, Field(min_length=min_length, max_length=max_length, pattern=NO_NUL, description=description)]


Id = bounded_int(1, MAX_ID)
# Patterns use only explicit character classes: pydantic runs them as Rust regexes, JSON Schema reads them
# as ECMA-262 and a fuzzer as Python's re, which disagree on \s, \S and '.' (U+0085 is space to two of them).
Name = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[^\u0000-\u0020]+(?: [^\u0000-\u0020]+)*$",
                            description="words separated by single spaces; no control characters")]
ResponseId = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,18}$", description="a response id, as a string key")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
JsonObject = dict[str, Any]


def keyed_by_response(value_type, description: str):
    """{response_id: value} with only id-shaped keys, stated in the schema as well."""
    return Annotated[dict[ResponseId, value_type], Field(description=description, json_schema_extra={"additionalProperties": False})]


class Payload(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# ---- requests --------------------------------------------------------------------------------------


class ProjectIn(Payload):
    """POST /api/v1/projects, `labeler projects create`."""

    name: Annotated[str, Field(pattern=PROJECT_NAME_PATTERN, description="letters, digits, '.', '_', '-' (it appears in URLs)")]
    k: bounded_int(2, MAX_K, "responses per task") = 2
    overlap: bounded_int(1, MAX_OVERLAP, "annotators per task") = 1
    criteria: Annotated[list[Name], Field(max_length=20, description="names of optional 1-5 scores",
                                          json_schema_extra={"uniqueItems": True})] = []
    guidelines: text(description="Markdown shown to annotators") = ""
    lease_seconds: bounded_int(10, MAX_LEASE_SECONDS, "how long an annotator holds a task (at most 30 days)") = 900
    allow_edit: bool = True
    ask_rationale: bool = True
    kind: Annotated[Literal[PROJECT_KINDS], Field(description="ranking: rank K responses; arena: blind A/B votes "
                                                              "between checkpoints (K = 2)")] = "ranking"

    @field_validator("kind")
    @classmethod
    def arena_is_pairwise(cls, value: str, info):
        # a field validator (k is declared before kind) so that the error names a field, not the body
        if value == "arena" and info.data.get("k", 2) != 2:
            raise ValueError(f"an arena project compares two responses: k must be 2, got {info.data['k']}")
        return value

    @field_validator("criteria")
    @classmethod
    def criteria_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"has a duplicate name: {value}")
        return value


class Message(Payload):
    role: Literal[MESSAGE_ROLES]
    content: text()


def prompt_kind(value) -> str | None:
    return "prompt-text" if isinstance(value, str) else "prompt-messages" if isinstance(value, list) else None


UNION_TAGS = {"prompt-text", "prompt-messages"}  # left out of field paths in error messages
Prompt = Annotated[
    Union[
        Annotated[Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=r"^[^\u0000]*[^\u0000-\u0020][^\u0000]*$")], Tag("prompt-text")],
        Annotated[Annotated[list[Message], Field(min_length=1, max_length=1000)], Tag("prompt-messages")],
    ],
    Discriminator(prompt_kind, custom_error_type="prompt_type",
                  custom_error_message="expected a non-empty string or a non-empty list of {'role', 'content'} messages"),
]


class ResponseIn(Payload):
    text: text()
    model: text(255) = ""
    meta: JsonObject = {}


class TaskIn(Payload):
    """One line of the tasks JSONL contract (docs/data-contracts.md); a task has exactly its project's k responses."""

    prompt: Prompt
    responses: Annotated[list[ResponseIn], Field(min_length=2, max_length=MAX_K, description="exactly the project's k")]
    meta: JsonObject = {}
    gold_ranking: Optional[Annotated[list[bounded_int(1, MAX_K)], Field(
        min_length=2, max_length=MAX_K, description="known ranks in response order (1 = best); marks the task as gold")]] = None


class TasksIn(Payload):
    """POST /api/v1/projects/{name}/tasks."""

    tasks: Annotated[list[TaskIn], Field(min_length=1, max_length=MAX_TASKS_PER_CALL)]


class AnnotationIn(Payload):
    """POST /api/v1/tasks/{task_id}/annotations, and the annotation page's submit.

    `ranking` may be null only with `all_bad` (then every response ties). Changing an annotation you
    already made needs its current `version`; without it, or with an older one, the answer is 409 and
    nothing is written, so a delayed request can never overwrite a newer label. Re-sending exactly
    what is stored is answered 200 and writes nothing (a retry).
    """

    model_config = ConfigDict(json_schema_extra={  # ranking is required unless all_bad is true, said in the schema too
        "if": {"properties": {"all_bad": {"const": True}}, "required": ["all_bad"]}, "then": {}, "else": {"required": ["ranking"]}})

    ranking: Optional[keyed_by_response(bounded_int(1, MAX_K), "{response_id: rank}: every response once, 1 = best, "
                                        "equal ranks for ties; may be left out or null when all_bad is true")] = None
    all_bad: bool = False
    scores: Annotated[dict[Name, keyed_by_response(bounded_int(1, 5), "{response_id: 1..5}")],
                      Field(max_length=20, description="{criterion: {response_id: 1..5}}",
                            json_schema_extra={"additionalProperties": False})] = {}
    rationale: text() = ""
    edited_response: Optional[text()] = None
    seconds_spent: Annotated[float, Field(ge=0.0, le=MAX_SECONDS_SPENT, allow_inf_nan=False)] = 0.0
    version: Optional[Annotated[Id, Field(description="the version of your annotation this replaces; required to change one")]] = None


class ExportIn(Payload):
    """POST /api/v1/projects/{name}/exports, the admin page's export form, `labeler export`."""

    aggregation: Literal[AGGREGATIONS] = "majority"
    min_agreement: Optional[Fraction] = None
    min_gold_accuracy: Optional[Fraction] = None
    test_fraction: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False, description="share of prompts held out")] = 0.1


class UserIn(Payload):
    """`labeler users add` (and the admin's user form)."""

    username: Name
    password: text(1024, 1)
    role: Literal[ROLES] = "annotator"
    simulated: bool = False


class PasswordIn(Payload):
    """The admin's password reset form."""

    password: text(1024, 1)


class TokenIn(Payload):
    """`labeler users token` and the admin's token form."""

    name: text(80) = ""


class TaskListIn(Payload):
    """The admin's task list: ?page=N&q=words (a case-insensitive search in the prompt text)."""

    page: bounded_int(1, MAX_PAGE) = 1
    q: text(200) = ""


class AuditListIn(Payload):
    """The admin's audit log: ?page=N&action=NAME."""

    page: bounded_int(1, MAX_PAGE) = 1
    action: Optional[Literal[AUDIT_ACTIONS]] = None


# ---- answers (documented in the OpenAPI document; the fuzz test checks the server against them) ----


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Error(Answer):
    error: str
    field: Optional[str] = Field(description="the field at fault")


class Project(Answer):
    id: int
    name: str
    k: int
    overlap: int
    criteria: list[str]
    guidelines: str
    lease_seconds: int
    allow_edit: bool
    ask_rationale: bool
    created_at: Optional[DateTime]


class ResponseShown(Answer):
    id: int
    text: str
    model: str


class Task(Answer):
    id: int
    project: str
    prompt: Union[str, list[Message]]
    responses: list[ResponseShown] = Field(description="in this annotator's stored display order")
    meta: JsonObject
    criteria: list[str]
    lease_expires_at: DateTime = Field(description="renewed by every GET .../next while the lease is held")


class Progress(Answer):
    done: int
    remaining: int
    seconds: float


class NextTask(Progress):
    task: Optional[Task] = Field(description="null when nothing is left for this annotator")


class Annotation(Answer):
    id: int
    task_id: int
    user_id: int
    version: int = Field(description="send it back as `version` to change this annotation")
    ranking: dict[str, int]
    all_bad: bool
    scores: dict[str, dict[str, int]]
    rationale: str
    edited_response: Optional[str]
    display_order: list[int]
    seconds_spent: float
    created_at: Optional[DateTime]
    updated_at: Optional[DateTime]


class AnnotationAnswer(Answer):
    annotation: Annotation


class ProjectAnswer(Answer):
    project: Project


class ProjectList(Answer):
    projects: list[Project]


class ImportCounts(Answer):
    created: int
    skipped: int


class Stats(Answer):
    project: str
    counts: JsonObject
    you: Progress
    quality: Optional[JsonObject] = None


class Export(Answer):
    id: int
    content_hash: str
    counts: JsonObject
    filters: JsonObject
    path: str
    download_url: str


class ExportAnswer(Answer):
    export: Export


REQUESTS = (ProjectIn, TasksIn, AnnotationIn, ExportIn)
ANSWERS = (Error, ProjectList, ProjectAnswer, ImportCounts, NextTask, AnnotationAnswer, Stats, ExportAnswer)


# ---- parsing ---------------------------------------------------------------------------------------


def field_path(loc) -> str:
    """('tasks', 2, 'prompt-messages', 0, 'role') -> 'tasks[2].prompt[0].role'."""
    path = ""
    for part in loc:
        if part in UNION_TAGS or part == "[key]":
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def parse(model: type[Payload], data, where: str | None = None):
    """`data` validated as `model`, or a 422 LabelerError naming the first field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        first = errors[0]
        field = field_path(first["loc"])
        if first["type"] == "extra_forbidden":
            allowed = f" (allowed: {', '.join(model.model_fields)})" if len(first["loc"]) == 1 else ""
            message = f"unknown key{allowed}"
        elif first["type"] == "missing":
            message = "required"
        else:
            message = first["msg"]
            value = first.get("input")
            if value is None or isinstance(value, (bool, int, float, str)):
                message += f", got {json.dumps(value, ensure_ascii=True)[:80]}"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        prefix = f"{where}: " if where else ""
        raise LabelerError(f"{prefix}field '{field}': {message}{more}", status=422, field=field) from None


NOT_TEXT = re.compile("[\ud800-\udfff\x00]")  # lone surrogates cannot be encoded; PostgreSQL refuses NUL


def check_json_value(value, where: str | None = None) -> None:
    """Depth at most MAX_JSON_DEPTH and no lone surrogate or NUL in any string or key, walked without recursion."""
    prefix = f"{where}: " if where else ""
    stack = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        field = path or "body"
        if depth > MAX_JSON_DEPTH:
            raise LabelerError(f"{prefix}field '{field}': JSON nested deeper than {MAX_JSON_DEPTH} levels", status=400, field=field)
        if isinstance(item, str):
            found = NOT_TEXT.search(item)
            if found:
                what = "a NUL character" if found.group() == "\x00" else f"a lone surrogate (U+{ord(found.group()):04X})"
                raise LabelerError(f"{prefix}field '{field}': {what} is not allowed in text", status=422, field=field)
        elif isinstance(item, dict):
            for key, child in item.items():
                if NOT_TEXT.search(key):
                    raise LabelerError(f"{prefix}field '{field}': a key holds a lone surrogate or NUL, which is not allowed", status=422, field=field)
                stack.append((child, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))


def reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def loads_json(data: bytes | str, where: str | None = None):
    """Strict JSON: UTF-8, no NaN/Infinity, not too deep, no lone surrogate or NUL; otherwise a 400/422 naming
    the field ('body' for the whole document), prefixed with `where` (a file:line) when given."""
    prefix = f"{where}: " if where else "field 'body': "
    try:
        text_value = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        raise LabelerError(f"{prefix}not UTF-8 (bad byte at offset {err.start})", status=400, field="body") from None
    try:
        value = json.loads(text_value, parse_constant=reject_constant)
    except RecursionError:
        raise LabelerError(f"{prefix}JSON nested deeper than {MAX_JSON_DEPTH} levels", status=400, field="body") from None
    except ValueError as err:  # JSONDecodeError, NaN, an integer of more than 4300 digits
        raise LabelerError(f"{prefix}not valid JSON ({str(err)[:120]})", status=400, field="body") from None
    check_json_value(value, where)
    return value


def form_int(value: str):
    """A web form field's digits as an int; anything else stays text, for the schema to refuse by name."""
    return int(value) if re.fullmatch(r"[0-9]{1,19}", value) else value


def form_bool(value: str | None):
    """A checkbox: absent is False, a browser's "on" (or "1", "true") is True; anything else stays text,
    for the schema to refuse by name."""
    if value is None:
        return False
    return True if value.lower() in ("on", "1", "true") else value


def read_json_body(optional: bool = False):
    """The request's JSON body as loaded by `loads_json`; an empty body is {} when `optional`."""
    from flask import request

    data = request.get_data(cache=True)
    if optional and not data.strip():
        return {}
    if not request.is_json:
        raise LabelerError("field 'body': send a JSON object with Content-Type: application/json", status=400, field="body")
    value = loads_json(data)
    if not isinstance(value, dict):
        raise LabelerError("field 'body': the request body must be a JSON object", status=400, field="body")
    return value
