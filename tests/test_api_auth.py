"""Access control over HTTP: deny by default, roles, tokens, password sessions, throttled logins, ingest roots."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import httpx
import pytest
from api_fixtures import PASSWORD, api, api_env, run_cli  # noqa: F401
from distributed_fixtures import free_port, wait_for
from fastapi.routing import iter_route_contexts

from camtrace.api.deps import PUBLIC, route_role

ROLES_BELOW = {"operator": [], "investigator": ["operator"], "admin": ["operator", "investigator"]}


def api_routes(app):
    """Every route of the app with its methods and declared role (new routes are covered automatically)."""
    for route in iter_route_contexts(app.routes):
        if getattr(route, "methods", None) and getattr(route, "endpoint", None) is not None:
            yield route.path, sorted(route.methods - {"HEAD"}), route_role(route.endpoint)


def concrete(path: str) -> str:
    return (
        path.replace("{crop_key:path}", "cam/x.jpg")
        .replace("{track_id}", "t1")
        .replace("{job_id}", "j1")
        .replace("{username}", "nobody")
        .replace("{token_id}", "t0")
    )


def test_every_data_route_refuses_missing_and_wrong_credentials_and_low_roles(api):
    routes = list(api_routes(api.app))
    assert len(routes) > 20
    public = {path for path, _, role in routes if role == PUBLIC}
    # Only health, login/logout, the page and Swagger UI's own files are public.
    assert public <= {"/healthz", "/api/login", "/api/logout", "/login", "/docs/{name}"}
    users = {"operator": "operator", "investigator": "investigator", "admin": "admin"}
    checked = 0
    for path, methods, role in routes:
        if role == PUBLIC:
            continue
        for method in methods:
            url = concrete(path)
            with httpx.Client(base_url=api.url, timeout=30) as anonymous:
                missing = anonymous.request(method, url)
                assert missing.status_code == 401, (method, path, missing.text)
                assert missing.json()["kind"] == "AuthError"
                wrong = anonymous.request(method, url, headers={"Authorization": "Bearer not-a-token"})
                assert wrong.status_code == 401, (method, path)
                basic = anonymous.request(method, url, headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
                assert basic.status_code == 401 and "Bearer" in basic.json()["error"]
                stale_cookie = anonymous.request(method, url, cookies={"camtrace_session": "expired-or-forged"})
                assert stale_cookie.status_code == 401
            for lower in ROLES_BELOW[role]:
                with api.client(users[lower]) as client:
                    refused = client.request(method, url)
                    assert refused.status_code == 403, (lower, method, path, refused.text)
                    assert role in refused.json()["error"]
            checked += 1
    assert checked >= 20


def test_the_schema_documents_every_error_an_authenticated_route_can_answer(api):
    schema = api.app.openapi()
    for path, methods, role in api_routes(api.app):
        if role == PUBLIC or path not in schema["paths"]:
            continue
        for method in methods:
            documented = set(schema["paths"][path][method.lower()]["responses"])
            assert {"401", "403", "422", "503"} <= documented, (method, path, documented)


def test_public_routes_answer_without_credentials(api):
    with httpx.Client(base_url=api.url) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok", "mode": "local"}
        assert anonymous.get("/metrics").status_code == 401
        page = anonymous.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert anonymous.get("/login").status_code == 200
    with api.client("operator") as client:
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "python_info" in metrics.text


def test_password_login_sets_a_strict_httponly_session_that_logout_ends(api):
    with httpx.Client(base_url=api.url) as browser:
        wrong = browser.post("/api/login", json={"username": "operator", "password": "guess"})
        assert wrong.status_code == 401 and "camtrace_session" not in wrong.headers.get("set-cookie", "")
        response = browser.post("/api/login", json={"username": "operator", "password": PASSWORD})
        assert response.status_code == 200, response.text
        assert response.json() == {"username": "operator", "role": "operator", "cameras": None}
        cookie = response.headers["set-cookie"].lower()
        assert "camtrace_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        session_id = browser.cookies["camtrace_session"]
        assert browser.get("/api/me").json()["username"] == "operator"
        assert browser.get("/api/users").status_code == 403  # a session carries the user's role, nothing more
        # Only a hash of the session id is stored.
        from sqlalchemy import text

        with api.services.db.engine.connect() as conn:
            stored = [row[0] for row in conn.execute(text("SELECT session_hash FROM login_sessions"))]
        assert session_id not in stored and stored
        assert browser.post("/api/logout").status_code == 204
        browser.cookies.clear()
        assert browser.get("/api/me", cookies={"camtrace_session": session_id}).status_code == 401
    with api.client("admin") as admin:
        actions = [row["action"] for row in admin.get("/api/audit", params={"user": "operator"}).json()["rows"]]
        assert "login" in actions and "login_failed" in actions


def test_repeated_failed_logins_are_slowed_down_per_user_and_client(api):
    run_cli(api.env, "user", "add", "target", "--role", "operator", "--password-stdin", stdin=PASSWORD + "\n")
    with httpx.Client(base_url=api.url) as attacker:
        statuses = [attacker.post("/api/login", json={"username": "target", "password": f"guess{i}"}).status_code for i in range(7)]
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
        throttled = attacker.post("/api/login", json={"username": "target", "password": PASSWORD})
        assert throttled.status_code == 429, "the right password must wait too, or guessing would go on"
        assert int(throttled.headers["Retry-After"]) >= 1 and "try again" in throttled.json()["error"]
        # Another user from the same client is not held back.
        assert attacker.post("/api/login", json={"username": "operator", "password": PASSWORD}).status_code == 200
    with api.client("admin") as admin:
        rows = admin.get("/api/audit", params={"user": "target"}).json()["rows"]
        assert [r["action"] for r in rows].count("login_failed") == 5 and rows[0]["action"] == "login_throttled"


def test_tokens_are_stored_hashed_and_removed_users_lose_access(api):
    out = run_cli(api.env, "user", "add", "temp", "--role", "investigator", "--camera", api.cameras[1], "--json")
    import json

    token = json.loads(out)["token"]
    second = run_cli(api.env, "token", "create", "temp").strip()
    from sqlalchemy import text

    with api.services.db.engine.connect() as conn:
        stored = " ".join(row[0] for row in conn.execute(text("SELECT token_hash FROM api_tokens")))
    assert token not in stored and second not in stored
    for secret in (token, second):
        me = httpx.get(f"{api.url}/api/me", headers={"Authorization": f"Bearer {secret}"})
        assert me.json() == {"username": "temp", "role": "investigator", "cameras": [api.cameras[1]]}
    with api.client("admin") as admin:
        assert "temp" in [u["username"] for u in admin.get("/api/users").json()]
        assert admin.delete("/api/users/temp").status_code == 204
        assert admin.delete("/api/users/temp").status_code == 404
        assert admin.delete("/api/users/admin").status_code == 403  # not oneself
    assert httpx.get(f"{api.url}/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    rows = json.loads(run_cli(api.env, "audit", "--json", "--limit", "500"))
    about_temp = [(r["action"], r["client"]) for r in rows if r["result_ids"] == ["temp"]]
    assert ("user_add", "cli") in about_temp and ("token_create", "cli") in about_temp
    assert ("user_remove", "127.0.0.1") in about_temp  # removed over HTTP: the client's address


def test_admins_create_users_over_http_with_a_token_shown_once(api):
    with api.client("admin") as admin:
        created = admin.post("/api/users", json={"username": "viewer", "role": "operator", "cameras": [api.cameras[2]]})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["cameras"] == [api.cameras[2]] and len(body["token"]) >= 40
        assert "token" not in admin.get("/api/users").json()[0]
        assert admin.post("/api/users", json={"username": "viewer", "role": "operator"}).status_code == 400
        assert admin.post("/api/users", json={"username": "x", "role": "superuser"}).status_code == 422
    me = httpx.get(f"{api.url}/api/me", headers={"Authorization": f"Bearer {body['token']}"}).json()
    assert me["role"] == "operator"


def test_http_ingest_is_limited_to_the_ingest_roots(api, footage, tmp_path):
    root = api.services.settings.ingest_root_paths()[0]
    inside = root / "clip.mp4"
    inside.write_bytes(next(iter(footage.videos.values())).read_bytes())
    escape = root / "escape"
    if not escape.exists():
        escape.symlink_to(tmp_path)
    (tmp_path / "outside.mp4").write_bytes(b"x")
    with api.client("admin") as admin:
        for source in ("/etc/passwd", f"{root}/../../outside.mp4", f"{escape}/outside.mp4", "rtsp://10.0.0.1/stream"):
            refused = admin.post("/api/jobs", json={"source": source, "camera": "gate"})
            assert refused.status_code == 403, (source, refused.text)
            assert "CAMTRACE_INGEST_ROOTS" in refused.json()["error"]
        missing = admin.post("/api/jobs", json={"source": str(root / "nope.mp4"), "camera": "gate"})
        assert missing.status_code == 400
        # Inside the roots the request reaches the job stage, which needs workers in this local-mode service.
        local = admin.post("/api/jobs", json={"source": str(inside), "camera": "gate"})
        assert local.status_code == 409 and "CAMTRACE_BROKER_URL" in local.json()["error"]
        assert admin.get("/api/jobs").status_code == 200
        assert admin.get("/api/jobs/no-such-job").status_code == 404
    from camtrace.api.routers.jobs import checked_source

    with pytest.raises(Exception, match="CAMTRACE_INGEST_ROOTS"):
        checked_source(str(inside), [])  # empty setting: HTTP ingest disabled


def test_serve_starts_on_the_embedded_defaults_and_says_how_to_create_the_first_user(tmp_path, tiny_yolo_dir, tiny_siglip_dir):
    from distributed_fixtures import camtrace_env

    env = camtrace_env(tmp_path / "data", tiny_yolo_dir, tiny_siglip_dir)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "camtrace.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answers():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
            except OSError:
                return None

        assert b'"status":"ok"' in wait_for(answers, 60, "camtrace serve to answer")
        refused = httpx.get(f"http://127.0.0.1:{port}/api/cameras")
        assert refused.status_code == 401
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=20)
    assert "camtrace user add admin --role admin" in stderr


def test_a_route_that_declares_no_role_is_admin_only(api):
    from distributed_fixtures import settings_from
    from fastapi.testclient import TestClient

    from camtrace.api.app import create_app

    app = create_app(settings_from(api.env))

    @app.get("/api/forgotten")
    def forgotten() -> dict:
        return {"secret": 42}

    from starlette.routing import Mount

    page = next(route for route in app.router.routes if isinstance(route, Mount))
    app.router.routes.remove(page)  # the page's catch-all mount stays last
    app.router.routes.append(page)

    with TestClient(app) as client:
        assert client.get("/api/forgotten").status_code == 401
        for user in ("operator", "investigator"):
            assert client.get("/api/forgotten", headers={"Authorization": f"Bearer {api.tokens[user]}"}).status_code == 403
        allowed = client.get("/api/forgotten", headers={"Authorization": f"Bearer {api.tokens['admin']}"})
        assert allowed.json() == {"secret": 42}
