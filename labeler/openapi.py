"""The OpenAPI 3.1 document served at /api/v1/openapi.json, written by hand so it reads as documentation.

tests/labeler/test_api.py checks that every route under /api/v1 appears here with its methods.
"""

from __future__ import annotations

from labeler import __version__


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict, description: str = "") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": {"$ref": "#/components/responses/Error"},
    "401": {"$ref": "#/components/responses/Error"},
    "404": {"$ref": "#/components/responses/Error"},
    "422": {"$ref": "#/components/responses/Error"},
}
ADMIN_ERRORS = {**ERRORS, "403": {"$ref": "#/components/responses/Error"}}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "description": "project name"}


def path_id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"], "description": "the field at fault"}},
    },
    "ProjectIn": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$"},
            "k": {"type": "integer", "minimum": 2, "maximum": 20, "default": 2, "description": "responses per task"},
            "overlap": {"type": "integer", "minimum": 1, "default": 1, "description": "annotators per task"},
            "criteria": {"type": "array", "items": {"type": "string"}, "description": "names of optional 1-5 scores"},
            "guidelines": {"type": "string", "description": "Markdown shown to annotators"},
            "lease_seconds": {"type": "integer", "minimum": 10, "default": 900},
            "allow_edit": {"type": "boolean", "default": True},
            "ask_rationale": {"type": "boolean", "default": True},
        },
    },
    "Project": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "k": {"type": "integer"}, "overlap": {"type": "integer"},
            "criteria": {"type": "array", "items": {"type": "string"}}, "guidelines": {"type": "string"},
            "lease_seconds": {"type": "integer"}, "allow_edit": {"type": "boolean"}, "ask_rationale": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Message": {
        "type": "object", "required": ["role", "content"],
        "properties": {"role": {"enum": ["system", "user", "assistant", "tool"]}, "content": {"type": "string"}},
    },
    "Prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": ref("Message"), "minItems": 1}]},
    "TaskIn": {
        "type": "object",
        "description": "one task: the same object as a line of the JSONL file `labeler import` reads",
        "required": ["prompt", "responses"],
        "additionalProperties": False,
        "properties": {
            "prompt": ref("Prompt"),
            "responses": {
                "type": "array", "minItems": 2, "description": "exactly the project's k",
                "items": {"type": "object", "required": ["text"], "additionalProperties": False,
                          "properties": {"text": {"type": "string"}, "model": {"type": "string"}, "meta": {"type": "object"}}},
            },
            "meta": {"type": "object"},
            "gold_ranking": {"type": "array", "items": {"type": "integer", "minimum": 1},
                             "description": "known ranks in response order (1 = best); marks the task as gold"},
        },
    },
    "Task": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "project": {"type": "string"}, "prompt": ref("Prompt"),
            "responses": {"type": "array", "description": "in this annotator's stored display order",
                          "items": {"type": "object", "properties": {"id": {"type": "integer"}, "text": {"type": "string"},
                                                                     "model": {"type": "string"}}}},
            "meta": {"type": "object"}, "criteria": {"type": "array", "items": {"type": "string"}},
            "lease_expires_at": {"type": "string", "format": "date-time"},
        },
    },
    "AnnotationIn": {
        "type": "object",
        "additionalProperties": False,
        "description": "ranking is required unless all_bad is true (then every response ties)",
        "properties": {
            "ranking": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1},
                        "description": "{response_id: rank}: every response once, 1 = best, equal ranks for ties"},
            "all_bad": {"type": "boolean", "default": False},
            "scores": {"type": "object", "description": "{criterion: {response_id: 1..5}}",
                       "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 5}}},
            "rationale": {"type": "string"},
            "edited_response": {"type": ["string", "null"], "description": "a better response, written by hand"},
            "seconds_spent": {"type": "number", "minimum": 0},
        },
    },
    "Annotation": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "task_id": {"type": "integer"}, "user_id": {"type": "integer"},
            "ranking": {"type": "object"}, "all_bad": {"type": "boolean"}, "scores": {"type": "object"},
            "rationale": {"type": "string"}, "edited_response": {"type": ["string", "null"]},
            "display_order": {"type": "array", "items": {"type": "integer"}}, "seconds_spent": {"type": "number"},
            "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "Progress": {
        "type": "object",
        "properties": {"done": {"type": "integer"}, "remaining": {"type": "integer"}, "seconds": {"type": "number"}},
    },
    "ExportIn": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "aggregation": {"enum": ["majority", "bradley-terry"], "default": "majority"},
            "min_agreement": {"type": "number", "minimum": 0, "maximum": 1},
            "min_gold_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
            "test_fraction": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        },
    },
    "Export": {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "content_hash": {"type": "string"}, "counts": {"type": "object"},
                       "path": {"type": "string"}, "download_url": {"type": "string"}},
    },
}

PATHS = {
    "/api/v1/openapi.json": {
        "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}},
    },
    "/api/v1/projects": {
        "get": {
            "summary": "List projects",
            "responses": {"200": json_body({"type": "object", "properties": {"projects": {"type": "array", "items": ref("Project")}}}), **ERRORS},
        },
        "post": {
            "summary": "Create a project (admin)",
            "requestBody": {"required": True, **json_body(ref("ProjectIn"))},
            "responses": {"201": json_body({"type": "object", "properties": {"project": ref("Project")}}, "created"),
                          "409": {"$ref": "#/components/responses/Error"}, **ADMIN_ERRORS},
        },
    },
    "/api/v1/projects/{name}/tasks": {
        "post": {
            "summary": "Push tasks (admin); idempotent: tasks already present are skipped",
            "parameters": [NAME],
            "requestBody": {"required": True, **json_body({"type": "object", "required": ["tasks"],
                                                           "properties": {"tasks": {"type": "array", "items": ref("TaskIn")}}})},
            "responses": {"201": json_body({"type": "object", "properties": {"created": {"type": "integer"}, "skipped": {"type": "integer"}}}),
                          **ADMIN_ERRORS},
        },
    },
    "/api/v1/projects/{name}/next": {
        "get": {
            "summary": "Lease the next task for the calling annotator (or renew the one they hold)",
            "parameters": [NAME],
            "responses": {"200": json_body({"allOf": [ref("Progress"), {"type": "object", "properties": {"task": {"oneOf": [ref("Task"), {"type": "null"}]}}}]},
                                           "task is null when nothing is left for this annotator"), **ERRORS},
        },
    },
    "/api/v1/tasks/{task_id}/annotations": {
        "post": {
            "summary": "Submit (201) or update (200) the caller's annotation of a task",
            "parameters": [path_id("task_id")],
            "requestBody": {"required": True, **json_body(ref("AnnotationIn"))},
            "responses": {
                "201": json_body({"type": "object", "properties": {"annotation": ref("Annotation")}}, "created"),
                "200": json_body({"type": "object", "properties": {"annotation": ref("Annotation")}}, "updated in place"),
                "409": {"$ref": "#/components/responses/Error"},
                **ERRORS,
            },
        },
    },
    "/api/v1/annotations/{annotation_id}": {
        "get": {
            "summary": "Read one of your own annotations (anyone else's answers 404)",
            "parameters": [path_id("annotation_id")],
            "responses": {"200": json_body({"type": "object", "properties": {"annotation": ref("Annotation")}}), **ERRORS},
        },
    },
    "/api/v1/projects/{name}/stats": {
        "get": {
            "summary": "Project counts, your progress, and (admins) quality figures",
            "parameters": [NAME],
            "responses": {"200": json_body({"type": "object", "properties": {
                "project": {"type": "string"}, "counts": {"type": "object"}, "you": ref("Progress"),
                "quality": {"type": ["object", "null"]}}}), **ERRORS},
        },
    },
    "/api/v1/projects/{name}/exports": {
        "post": {
            "summary": "Export the project's preferences, SFT data and raw annotations (admin)",
            "parameters": [NAME],
            "requestBody": {"required": False, **json_body(ref("ExportIn"))},
            "responses": {"201": json_body({"type": "object", "properties": {"export": ref("Export")}}), **ADMIN_ERRORS},
        },
    },
    "/api/v1/exports/{export_id}/download": {
        "get": {
            "summary": "Download an export folder as a zip (admin)",
            "parameters": [path_id("export_id")],
            "responses": {"200": {"description": "zip archive", "content": {"application/zip": {}}},
                          "410": {"$ref": "#/components/responses/Error"}, **ADMIN_ERRORS},
        },
    },
}


def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "labeler API",
            "version": __version__,
            "description": "Push tasks, fetch the next task, submit rankings, read stats, download exports. "
                           "Authenticate with `Authorization: Bearer <token>` (`labeler users token USERNAME`). "
                           "Errors are {\"error\": message, \"field\": name}.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
            "responses": {"Error": json_body(ref("Error"), "an error naming the field at fault")},
        },
    }
