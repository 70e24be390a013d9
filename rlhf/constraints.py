"""Verifiable instruction constraints (in the spirit of IFEval): a checker and an instruction sentence per type.

A constraint is data: {"type": "max_words", "params": {"n": 40}}. The prompt set stores them, the prompt
text carries their instruction sentences, and both the simulated annotators and the evaluation score a
response by the share of its prompt's constraints it meets:

    check_constraint({"type": "no_commas", "params": {}}, "no commas here")   -> True
    score_response(constraints, response)                                     -> 0.0 .. 1.0
    instruction_text({"type": "max_words", "params": {"n": 40}})              -> "Answer in fewer than 40 words."

Checks are deliberately fair to a small model: surrounding whitespace is ignored, letter-case checks ignore
non-letters, phrase and keyword matches ignore case (so "all lowercase" combines with "include the keyword
X"), a JSON answer may sit in a ``` code fence. A blank response meets no constraint, so an empty answer
never wins a ranking.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from rlhf.errors import RlhfError

WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")


@dataclass(frozen=True)
class ConstraintType:
    """One kind of checkable instruction.

    params: {name: (python type, description)}; every param is required. `check(response, **params)` and
    `instruction(**params)` take exactly these names.
    """

    id: str
    description: str
    check: Callable[..., bool]
    instruction: Callable[..., str]
    params: dict[str, tuple[type, str]] = field(default_factory=dict)


# ---- helpers shared by several checkers -------------------------------------------------------------


def count_words(text: str) -> int:
    return len(WORD_RE.findall(text))


def count_sentences(text: str) -> int:
    """Runs of text ending at . ! ? (or at the end); a run without a word is not a sentence."""
    parts = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return sum(1 for p in parts if WORD_RE.search(p))


def word_pattern(word: str) -> re.Pattern:
    """The word on word boundaries, case-insensitive, with an optional plural ending ("bread" ~ "breads")."""
    return re.compile(r"(?<![\w])" + re.escape(word) + r"(?:s|es)?(?![\w])", re.IGNORECASE)


def strip_code_fence(text: str) -> str:
    m = re.fullmatch(r"```[a-zA-Z]*\s*\n?(.*?)\n?\s*```", text.strip(), re.DOTALL)
    return m.group(1).strip() if m else text.strip()


def plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


# ---- the checkers -----------------------------------------------------------------------------------


def check_lowercase(response: str) -> bool:
    return response == response.lower() and any(c.isalpha() for c in response)


def check_uppercase(response: str) -> bool:
    return response == response.upper() and any(c.isalpha() for c in response)


BULLET_RE = re.compile(r"^\s*(?:[-*•])\s+\S", re.MULTILINE)


def check_bullet_count(response: str, n: int) -> bool:
    return len(BULLET_RE.findall(response)) == n


def check_max_words(response: str, n: int) -> bool:
    return count_words(response) < n


def check_min_words(response: str, n: int) -> bool:
    return count_words(response) >= n


def check_end_phrase(response: str, phrase: str) -> bool:
    return response.strip().lower().endswith(phrase.strip().lower())


def check_start_word(response: str, word: str) -> bool:
    # Leading quotes, markdown or punctuation do not count as the first word.
    m = WORD_RE.search(response)
    return bool(m) and not WORD_RE.search(response[: m.start()]) and m.group(0).lower() == word.lower()


def check_json_format(response: str) -> bool:
    try:
        value = json.loads(strip_code_fence(response))
    except ValueError:
        return False
    return isinstance(value, (dict, list))  # "wrap the answer in JSON" means an object or array, not a bare 42


def check_no_commas(response: str) -> bool:
    return "," not in response and "，" not in response


def check_include_keywords(response: str, keywords: list) -> bool:
    return all(word_pattern(k).search(response) for k in keywords)


def check_exclude_word(response: str, word: str) -> bool:
    return not word_pattern(word).search(response)


def check_keyword_frequency(response: str, word: str, n: int) -> bool:
    return len(word_pattern(word).findall(response)) >= n


def check_paragraph_count(response: str, n: int) -> bool:
    paragraphs = [p for p in re.split(r"\n\s*\n", response.strip()) if p.strip()]
    return len(paragraphs) == n


def check_max_sentences(response: str, n: int) -> bool:
    return count_sentences(response) <= n


def check_title(response: str) -> bool:
    return any(t.strip() for t in re.findall(r"<<([^\n<>]+)>>", response))


def check_postscript(response: str) -> bool:
    return bool(re.search(r"^\s*p\.\s?s\.", response, re.IGNORECASE | re.MULTILINE))


def check_quotation(response: str) -> bool:
    text = response.strip()
    return len(text) >= 2 and text[0] in '"“' and text[-1] in '"”'


def check_highlight_count(response: str, n: int) -> bool:
    bold = re.findall(r"\*\*([^\n*]+)\*\*", response)
    single = re.findall(r"(?<!\*)\*([^\n*\s][^\n*]*)\*(?!\*)", response)  # "* item" bullets never open a highlight
    return sum(1 for h in bold + single if h.strip()) >= n


def check_placeholder_count(response: str, n: int) -> bool:
    return sum(1 for p in re.findall(r"\[([^\[\]\n]+)\]", response) if p.strip()) >= n


def check_max_lines(response: str, n: int) -> bool:
    return sum(1 for line in response.strip().splitlines() if line.strip()) <= n


CONSTRAINTS: dict[str, ConstraintType] = {
    c.id: c
    for c in [
        ConstraintType(
            "lowercase", "every letter is lowercase (digits and punctuation are ignored)",
            check_lowercase, lambda: "Write your whole answer in lowercase letters only, with no capital letters.",
        ),
        ConstraintType(
            "uppercase", "every letter is uppercase (digits and punctuation are ignored)",
            check_uppercase, lambda: "Write your whole answer in capital letters only.",
        ),
        ConstraintType(
            "bullet_count", "exactly n bullet lines starting with '- ', '* ' or '• '",
            check_bullet_count,
            lambda n: f"Use exactly {n} bullet points, each on its own line starting with \"- \".",
            {"n": (int, "number of bullet lines")},
        ),
        ConstraintType(
            "max_words", "fewer than n words", check_max_words,
            lambda n: f"Answer in fewer than {n} words.", {"n": (int, "word limit (exclusive)")},
        ),
        ConstraintType(
            "min_words", "at least n words", check_min_words,
            lambda n: f"Write at least {n} words.", {"n": (int, "minimum number of words")},
        ),
        ConstraintType(
            "end_phrase", "the answer ends with the phrase (case-insensitive, nothing after it)", check_end_phrase,
            lambda phrase: f"End your answer with the exact phrase \"{phrase}\" and write nothing after it.",
            {"phrase": (str, "the closing phrase")},
        ),
        ConstraintType(
            "start_word", "the first word is this word (case-insensitive; leading punctuation ignored)",
            check_start_word, lambda word: f"Start your answer with the word \"{word}\".",
            {"word": (str, "the opening word")},
        ),
        ConstraintType(
            "json_format", "the whole answer is a JSON object or array (a ``` code fence is allowed)",
            check_json_format, lambda: "Wrap your entire answer in valid JSON.",
        ),
        ConstraintType(
            "no_commas", "no comma anywhere", check_no_commas, lambda: "Do not use any commas in your answer.",
        ),
        ConstraintType(
            "include_keywords", "every keyword appears as a word (case-insensitive, plural allowed)",
            check_include_keywords,
            lambda keywords: "Include the "
            + plural(len(keywords), "keyword ", "keywords ")
            + " and ".join(f"\"{k}\"" for k in keywords)
            + " in your answer.",
            {"keywords": (list, "words that must all appear")},
        ),
        ConstraintType(
            "exclude_word", "the word never appears (case-insensitive, plural included)", check_exclude_word,
            lambda word: f"Do not use the word \"{word}\".", {"word": (str, "the forbidden word")},
        ),
        ConstraintType(
            "keyword_frequency", "the word appears at least n times (case-insensitive, plural allowed)",
            check_keyword_frequency, lambda word, n: f"Use the word \"{word}\" at least {n} times.",
            {"word": (str, "the word to repeat"), "n": (int, "minimum number of uses")},
        ),
        ConstraintType(
            "paragraph_count", "exactly n paragraphs separated by blank lines", check_paragraph_count,
            lambda n: f"Write exactly {n} paragraphs separated by a blank line.", {"n": (int, "number of paragraphs")},
        ),
        ConstraintType(
            "max_sentences", "at most n sentences (text ending at . ! ? or a line break)", check_max_sentences,
            lambda n: f"Use at most {n} {plural(n, 'sentence', 'sentences')}.", {"n": (int, "sentence limit")},
        ),
        ConstraintType(
            "title", "contains a non-empty title in double angle brackets, like <<title>>", check_title,
            lambda: "Give your answer a title in double angle brackets, like <<my title>>.",
        ),
        ConstraintType(
            "postscript", "a line starts with P.S. (case-insensitive)", check_postscript,
            lambda: "End with a postscript that starts with P.S.",
        ),
        ConstraintType(
            "quotation", "the whole answer is wrapped in double quotation marks", check_quotation,
            lambda: "Wrap your entire answer in double quotation marks.",
        ),
        ConstraintType(
            "highlight_count", "at least n sections highlighted with markdown, *like this* or **like this**",
            check_highlight_count,
            lambda n: f"Highlight at least {n} {plural(n, 'part', 'parts')} with markdown, like *this part*.",
            {"n": (int, "minimum number of highlights")},
        ),
        ConstraintType(
            "placeholder_count", "at least n placeholders in square brackets, like [name]", check_placeholder_count,
            lambda n: f"Include at least {n} {plural(n, 'placeholder', 'placeholders')} in square brackets, like [name].",
            {"n": (int, "minimum number of placeholders")},
        ),
        ConstraintType(
            "max_lines", "at most n non-empty lines", check_max_lines,
            lambda n: f"Respond in {n} lines or fewer.", {"n": (int, "line limit")},
        ),
    ]
}


def validate_constraint(constraint: Any) -> tuple[ConstraintType, dict[str, Any]]:
    """The constraint's type and params, checked: unknown types, missing or extra params, wrong types fail."""
    if not isinstance(constraint, dict) or "type" not in constraint:
        raise RlhfError(f"a constraint must be {{\"type\": ..., \"params\": {{...}}}}, got {constraint!r}")
    name = constraint["type"]
    if name not in CONSTRAINTS:
        raise RlhfError(f"unknown constraint type '{name}' (known: {', '.join(sorted(CONSTRAINTS))})")
    ctype = CONSTRAINTS[name]
    params = constraint.get("params") or {}
    if not isinstance(params, dict):
        raise RlhfError(f"constraint '{name}': field 'params' must be a mapping, got {type(params).__name__}")
    for key in params:
        if key not in ctype.params:
            raise RlhfError(f"constraint '{name}': unknown param '{key}' (takes: {', '.join(ctype.params) or 'none'})")
    for key, (kind, doc) in ctype.params.items():
        if key not in params:
            raise RlhfError(f"constraint '{name}': missing param '{key}' ({doc})")
        value = params[key]
        if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise RlhfError(f"constraint '{name}': param '{key}' must be a positive integer, got {value!r}")
        if kind is str and (not isinstance(value, str) or not value.strip()):
            raise RlhfError(f"constraint '{name}': param '{key}' must be a non-empty string, got {value!r}")
        if kind is list and (
            not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise RlhfError(f"constraint '{name}': param '{key}' must be a non-empty list of words, got {value!r}")
    return ctype, params


def check_constraint(constraint: dict, response: str) -> bool:
    ctype, params = validate_constraint(constraint)
    if not isinstance(response, str) or not response.strip():
        return False
    return bool(ctype.check(response.strip(), **params))


def score_response(constraints: list[dict], response: str) -> float:
    """The fraction of constraints the response meets (1.0 when there are none)."""
    if not constraints:
        return 1.0
    return sum(check_constraint(c, response) for c in constraints) / len(constraints)


def all_met(constraints: list[dict], response: str) -> bool:
    return all(check_constraint(c, response) for c in constraints)


def instruction_text(constraint: dict) -> str:
    ctype, params = validate_constraint(constraint)
    return ctype.instruction(**params)


# ---- which constraints may share a prompt -----------------------------------------------------------

# Pairs that contradict each other or make a fair answer needlessly awkward (a JSON answer cannot start
# with a word, end with a phrase, or hold bullet lines; "* item" bullets and *highlights* confuse each other).
CONFLICTS: set[frozenset[str]] = {
    frozenset(pair)
    for pair in [
        ("lowercase", "uppercase"),
        ("max_words", "min_words"),
        ("min_words", "max_sentences"),
        ("min_words", "max_lines"),
        ("json_format", "bullet_count"),
        ("json_format", "paragraph_count"),
        ("json_format", "title"),
        ("json_format", "postscript"),
        ("json_format", "quotation"),
        ("json_format", "highlight_count"),
        ("json_format", "end_phrase"),
        ("json_format", "start_word"),
        ("json_format", "no_commas"),
        ("quotation", "end_phrase"),
        ("quotation", "bullet_count"),
        ("postscript", "end_phrase"),
        ("bullet_count", "paragraph_count"),
        ("bullet_count", "max_lines"),
        ("bullet_count", "max_sentences"),
        ("bullet_count", "highlight_count"),
        ("paragraph_count", "max_lines"),
        ("paragraph_count", "max_sentences"),
        ("start_word", "title"),
        ("include_keywords", "keyword_frequency"),
    ]
}


def find_conflict(constraints: list[dict]) -> str | None:
    """Why these constraints cannot (fairly) share one prompt, or None when they can."""
    types = [c["type"] for c in constraints]
    if len(set(types)) != len(types):
        return f"a constraint type is repeated: {types}"
    for i, a in enumerate(types):
        for b in types[i + 1:]:
            if frozenset((a, b)) in CONFLICTS:
                return f"'{a}' conflicts with '{b}'"
    by_type = {c["type"]: c.get("params") or {} for c in constraints}
    if "exclude_word" in by_type:
        banned = word_pattern(by_type["exclude_word"]["word"])
        required = " ".join(
            by_type.get("include_keywords", {}).get("keywords", [])
            + [by_type.get(t, {}).get(k, "") for t, k in (("keyword_frequency", "word"), ("start_word", "word"),
                                                           ("end_phrase", "phrase"))]
        )
        if banned.search(required):
            return "the excluded word is also required"
    if "no_commas" in by_type and "," in by_type.get("end_phrase", {}).get("phrase", ""):
        return "the end phrase has a comma but commas are not allowed"
    if "max_words" in by_type:
        needed = len(by_type.get("include_keywords", {}).get("keywords", [])) + by_type.get("keyword_frequency", {}).get("n", 0)
        needed += 3 * by_type.get("bullet_count", {}).get("n", 0) + count_words(by_type.get("end_phrase", {}).get("phrase", ""))
        if needed + 5 > by_type["max_words"]["n"]:
            return "the word limit leaves no room for the other constraints"
    return None
