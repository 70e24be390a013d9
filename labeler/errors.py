"""The one exception type for errors a user can cause, and the one boundary that answers them.

Anything a client can get wrong (a bad payload, an unknown project, an id out of range) is raised as a
LabelerError naming the field; `init_app` turns it into a 4xx: JSON {"error", "field"} on the API and
for fetch() calls, an error page for the browser. A 500 is a bug.
"""

from __future__ import annotations

MAX_ID = 2**31 - 1  # ids are INTEGER columns: 32-bit signed on PostgreSQL, so no row can have a larger one


class LabelerError(Exception):
    """A user-caused error; the message names the file, line, field or URL at fault.

    `status` is the HTTP status the API answers with when this reaches a view (4xx).
    """

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


def answers_json() -> bool:
    from flask import request

    return (request.path.startswith("/api/") or request.is_json
            or "application/json" in request.headers.get("Accept", ""))


def error_response(message: str, status: int, field: str | None):
    from flask import jsonify, render_template

    if answers_json():
        response = jsonify(error=message, field=field)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="labeler"'
        return response, status
    return render_template("error.html", status=status, message=message, field=field), status


def handle_labeler_error(err: LabelerError):
    return error_response(str(err), err.status, err.field)


def handle_http_error(err):
    """Werkzeug's 4xx (unknown URL, wrong method, body too large) in the same shape as ours."""
    from flask import request

    if err.code is None or err.code >= 500:
        return err
    if answers_json():
        response, status = error_response(f"{err.description} ({request.method} {request.path})", err.code, None)
        if getattr(err, "valid_methods", None):  # 405 says what is allowed (RFC 9110)
            response.headers["Allow"] = ", ".join(err.valid_methods)
        return response, status
    return err


def check_url_ids(endpoint, values) -> None:
    """Ids in a URL (`<int:task_id>`) beyond signed 64-bit cannot name a row: 404 naming the field,
    before any query sees a number the database driver would overflow on."""
    for key, value in (values or {}).items():
        if isinstance(value, int) and not 0 <= value <= MAX_ID:
            raise LabelerError(f"{key}: {value} is not an id (ids run from 1 to 2^31-1)", status=404, field=key)


def init_app(app) -> None:
    from werkzeug.exceptions import HTTPException

    app.register_error_handler(LabelerError, handle_labeler_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.url_value_preprocessor(check_url_ids)
