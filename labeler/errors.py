"""The one exception type for errors a user can cause, and the one boundary that answers them.

Anything a client can get wrong (a bad payload, an unknown project, an id out of range) is raised as a
LabelerError naming the field; `init_app` turns it into a 4xx: JSON {"error", "field"} on the API and
for fetch() calls, an error page for the browser. A database that is down, restarting or locked past its
busy timeout answers 503 with Retry-After in the same two shapes: the request's transaction was rolled
back (or, if the connection died during its COMMIT, may have gone through: sending the same request again
is safe either way, since a repeated submission is answered as a retry of what is stored). Any other 500
is a bug.
"""

from __future__ import annotations

MAX_ID = 2**31 - 1  # ids are INTEGER columns: 32-bit signed on PostgreSQL, so no row can have a larger one
# Seconds a client should wait after a 503: an immediate-mode restart of PostgreSQL takes about half a second
# here (docs/scaling.md), and clients that all come back at once would meet the same cold server.
RETRY_AFTER_SECONDS = 2


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


def handle_database_error(err):
    """503 with Retry-After when the database is unreachable (labeler.db.database_unavailable); any other
    database error is re-raised, so that Flask answers 500 and logs its traceback as before. The view's
    session has already rolled back: its `with db.write()` block ended with this exception."""
    from flask import current_app, g, make_response

    from labeler.db import database_unavailable

    if not database_unavailable(err):
        raise err
    current_app.logger.warning("database unavailable, answered 503: %s", (str(getattr(err, "orig", err)).splitlines() or [""])[0])
    # base.html asks current_user() who is logged in; unless this request already knows, the error page
    # shows the logged-out header rather than query the database that just failed
    g.setdefault("labeler_user", None)
    response = make_response(error_response(f"the database is unavailable (down, restarting or busy): send the same "
                                            f"request again in {RETRY_AFTER_SECONDS} s", 503, None))
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


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
    from sqlalchemy.exc import DBAPIError, DisconnectionError
    from werkzeug.exceptions import HTTPException

    app.register_error_handler(LabelerError, handle_labeler_error)
    app.register_error_handler(DBAPIError, handle_database_error)
    app.register_error_handler(DisconnectionError, handle_database_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.url_value_preprocessor(check_url_ids)
