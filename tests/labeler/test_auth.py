"""Login, logout, rate limiting, CSRF and security headers, through Flask's test client."""

import re

from conftest import PASSWORD
from labeler.app import create_app
from labeler.db import get_db
from labeler.models import User


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def login(client, username, password=PASSWORD):
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def test_login_success_redirects_and_sets_safe_cookie(client, make_user):
    make_user("ann")
    response = login(client, "ann")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/").status_code == 200


def test_bad_password_and_unknown_user_get_the_same_401(client, make_user):
    make_user("ann")
    wrong = login(client, "ann", "nope")
    unknown = login(client, "nobody", "nope")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password" in wrong.text
    assert client.get("/").status_code == 302  # still logged out


def test_inactive_user_cannot_log_in(client, make_user, app):
    make_user("gone")
    with get_db(app).write() as s:
        s.query(User).filter_by(username="gone").one().active = False
    assert login(client, "gone").status_code == 401


def test_deactivated_user_is_logged_out_on_next_request(client, make_user, app):
    make_user("ann")
    login(client, "ann")
    assert client.get("/").status_code == 200
    with get_db(app).write() as s:
        s.query(User).filter_by(username="ann").one().active = False
    assert client.get("/").status_code == 302


def test_login_rate_limit_answers_429_then_blocks_even_the_right_password(db_url, make_user):
    client = create_app({"TESTING": True, "DATABASE_URL": db_url, "LOGIN_RATE_LIMIT": 3}).test_client()
    make_user("ann")
    assert [login(client, "ann", "bad").status_code for _ in range(3)] == [401, 401, 401]
    assert login(client, "ann", "bad").status_code == 429
    assert login(client, "ann").status_code == 429
    # another username from the same address is not locked out
    make_user("bob")
    assert login(client, "bob").status_code == 302


def test_login_rejects_open_redirect(client, make_user):
    make_user("ann")
    token = csrf_from(client.get("/login").text)
    response = client.post("/login", data={"username": "ann", "password": PASSWORD, "csrf_token": token, "next": "https://evil.example/x"})
    assert response.headers["Location"] == "/"


def test_post_without_csrf_token_is_rejected(client, make_user):
    make_user("ann")
    response = client.post("/login", data={"username": "ann", "password": PASSWORD})
    assert response.status_code == 400 and "CSRF" in response.text
    login(client, "ann")
    assert client.post("/logout").status_code == 400  # logged in, still no token
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    bad_json = client.post("/projects/x/tasks/1/submit", json={"ranking": {}}, headers={"X-CSRF-Token": "forged"})
    assert bad_json.status_code == 400 and bad_json.json["field"] == "csrf_token"


def test_logout_with_token_ends_the_session(client, make_user):
    make_user("ann")
    login(client, "ann")
    token = csrf_from(client.get("/").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_csrf_token_changes_at_login(client, make_user):
    make_user("ann")
    before = csrf_from(client.get("/login").text)
    login(client, "ann")
    assert csrf_from(client.get("/").text) != before


def test_api_bearer_requests_are_exempt_from_csrf(client, make_user, auth_header):
    admin = make_user("boss", role="admin")
    response = client.post("/api/v1/projects", json={"name": "p1", "k": 2}, headers=auth_header(admin))
    assert response.status_code != 400 or "CSRF" not in response.text
    assert response.status_code in (200, 201)


def test_security_headers_on_every_response(client):
    for path in ("/login", "/static/style.css", "/does-not-exist"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        script_src = re.search(r"script-src ([^;]+)", csp).group(1)
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        assert "default-src 'self'" in csp and "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"]


def test_pages_have_no_inline_script_or_style(client, make_user, make_project):
    make_user("ann")
    make_project("demo", k=3, criteria=["helpfulness"])
    login(client, "ann")
    for path in ("/login", "/", "/projects/demo/annotate"):
        html = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"\son[a-z]+=", html), path
        assert " style=" not in html and "<style" not in html, path
