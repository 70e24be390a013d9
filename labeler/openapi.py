"""The OpenAPI 3.1 document served at /api/v1/openapi.json. The paths are written here so they read as
documentation; every request and answer schema is generated from labeler.schemas, the models the
server validates with, so the document cannot disagree with the server.

tests/labeler/test_api.py checks that every route under /api/v1 appears here with its methods, and
tests/labeler/test_fuzz_api.py runs schemathesis against a live server with this document.
"""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from labeler import __version__
from labeler.errors import MAX_ID
from labeler.schemas import ANSWERS, PROJECT_NAME_PATTERN, REQUESTS


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict, description: str = "") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = {"$ref": "#/components/responses/Error"}
# 503: the database is down, restarting or busy; the answer says when to retry (labeler.errors)
ERRORS = {**{code: ERROR for code in ("400", "401", "404", "413", "422")}, "503": {"$ref": "#/components/responses/Unavailable"}}
ADMIN_ERRORS = {**ERRORS, "403": ERROR}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": PROJECT_NAME_PATTERN},
        "description": "project name"}


def path_id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}


def schema_components() -> dict:
    """Requests as pydantic validates them, answers as the server writes them."""
    _, top = models_json_schema([(model, "validation") for model in REQUESTS] + [(model, "serialization") for model in ANSWERS],
                                ref_template="#/components/schemas/{model}")
    return top["$defs"]


PATHS = {
    "/api/v1/openapi.json": {
        "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}},
    },
    "/api/v1/projects": {
        "get": {
            "summary": "List projects",
            "responses": {"200": json_body(ref("ProjectList")), **ERRORS},
        },
        "post": {
            "summary": "Create a project (admin)",
            "requestBody": {"required": True, **json_body(ref("ProjectIn"))},
            "responses": {"201": json_body(ref("ProjectAnswer"), "created"),
                          "409": {"$ref": "#/components/responses/Error"}, **ADMIN_ERRORS},
        },
    },
    "/api/v1/projects/{name}/tasks": {
        "post": {
            "summary": "Push tasks (admin); idempotent: tasks already present are skipped",
            "parameters": [NAME],
            "requestBody": {"required": True, **json_body(ref("TasksIn"))},
            "responses": {"201": json_body(ref("ImportCounts")),
                          **ADMIN_ERRORS},
        },
    },
    "/api/v1/projects/{name}/next": {
        "get": {
            "summary": "Lease the next task for the calling annotator (or renew the one they hold)",
            "parameters": [NAME],
            "responses": {"200": json_body(ref("NextTask"), "task is null when nothing is left for this annotator"), **ERRORS},
        },
    },
    "/api/v1/tasks/{task_id}/annotations": {
        "post": {
            "summary": "Submit (201) or update (200) the caller's annotation of a task",
            "parameters": [path_id("task_id")],
            "requestBody": {"required": True, **json_body(ref("AnnotationIn"))},
            "responses": {
                "201": json_body(ref("AnnotationAnswer"), "created"),
                "200": json_body(ref("AnnotationAnswer"), "updated in place, or a retry of what is stored"),
                "409": {"$ref": "#/components/responses/Error"},
                **ERRORS,
            },
        },
    },
    "/api/v1/annotations/{annotation_id}": {
        "get": {
            "summary": "Read one of your own annotations (anyone else's answers 404)",
            "parameters": [path_id("annotation_id")],
            "responses": {"200": json_body(ref("AnnotationAnswer")), **ERRORS},
        },
    },
    "/api/v1/projects/{name}/stats": {
        "get": {
            "summary": "Project counts, your progress, and (admins) quality figures",
            "parameters": [NAME],
            "responses": {"200": json_body(ref("Stats")), **ERRORS},
        },
    },
    "/api/v1/projects/{name}/exports": {
        "post": {
            "summary": "Export the project's preferences, SFT data and raw annotations (admin)",
            "parameters": [NAME],
            "requestBody": {"required": False, **json_body(ref("ExportIn"))},
            "responses": {"201": json_body(ref("ExportAnswer")), **ADMIN_ERRORS},
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
            "schemas": schema_components(),
            "responses": {
                "Error": json_body(ref("Error"), "an error naming the field at fault"),
                "Unavailable": {
                    **json_body(ref("Error"), "the database is down, restarting or busy: send the same request "
                                              "again after Retry-After seconds (a repeated submission is safe)"),
                    "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}},
                },
            },
        },
    }
