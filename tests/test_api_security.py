"""The query service attacked from outside, by an operator and by a clumsy admin, over real HTTP.

One test (or more) per finding of the security review: pixel bombs, bodies read before credentials, camera
passwords, ingest roots and symlinks, changes without their audit row, relative video paths, NaN and NUL
inputs, server paths in errors, login floods and forged X-Forwarded-For, security headers and docs, the
CLI's validation, and token lifetimes. The pixel bombs and the bodies go to a `camtrace serve` process
started in another folder than the ingest, so its memory can be read from /proc.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from api_fixtures import PASSWORD, ThreadedServer, api, api_env, data_copy, iso, run_cli  # noqa: F401
from distributed_fixtures import Worker, camtrace_env, free_port, redis_server, settings_from, wait_for  # noqa: F401
from sqlalchemy import delete, text

SECRET = "s3cret-Pa55"


# Helpers -------------------------------------------------------------------------------------------------
def jpeg_claiming(width: int, height: int) -> bytes:
    """A real tiny JPEG whose frame header is rewritten to declare ``width`` x ``height``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "JPEG", quality=10)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_of_zeros(width: int, height: int) -> bytes:
    """A complete grey PNG of ``width`` x ``height`` zeros: a few hundred KB that inflate to width x height bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + one grey byte per pixel
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def raw_request(port: int, head: str, chunks: list[bytes] = ()) -> tuple[int, dict, bytes]:
    """Send a request head (and maybe some body) over a plain socket and read the answer; the declared body
    is never sent in full, so an answer proves the server did not wait for it."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: the rest was never read
                break
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        want = int(headers.get("content-length", "0"))
        while len(body) < want:
            part = sock.recv(65536)
            if not part:
                break
            body += part
    return int(lines[0].split()[1]), headers, body


def audit_actions(api, **params) -> list[dict]:
    with api.client("admin") as admin:
        return admin.get("/api/audit", params={"limit": 1000, **params}).json()["rows"]


# A service started in another folder than the ingest ----------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_yolo_dir, tiny_siglip_dir, footage):
    """`camtrace ingest footage/cam1.mp4` typed in one folder, `camtrace serve` started in another."""
    root = tmp_path_factory.mktemp("site")
    (root / "ingest-here" / "footage").mkdir(parents=True)
    camera, video = sorted(footage.videos.items())[0]
    shutil.copyfile(video, root / "ingest-here" / "footage" / "cam1.mp4")
    spool = root / "spool"
    spool.mkdir()
    env = camtrace_env(
        root / "data", tiny_yolo_dir, tiny_siglip_dir, CAMTRACE_MAX_UPLOAD_MB="1", CAMTRACE_LOG_LEVEL="WARNING", TMPDIR=str(spool)
    )
    cli = [sys.executable, "-m", "camtrace.cli"]
    subprocess.run(
        [*cli, "ingest", "footage/cam1.mp4", "--camera", "cam1", "--start", iso(footage.start_ts[camera]), "--no-progress"],
        cwd=root / "ingest-here",
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = subprocess.run(
        [*cli, "user", "add", "boss", "--role", "admin", "--json"], env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout
    token = json.loads(out)["token"]
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)], cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

    def answers():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 60, "camtrace serve to answer")
    yield {
        "url": f"http://127.0.0.1:{port}",
        "port": port,
        "pid": server.pid,
        "env": env,
        "token": token,
        "root": root,
        "spool": spool,
        "video": root / "ingest-here" / "footage" / "cam1.mp4",
    }
    server.terminate()
    server.communicate(timeout=20)


def site_client(site) -> httpx.Client:
    return httpx.Client(base_url=site["url"], headers={"Authorization": f"Bearer {site['token']}"}, timeout=120)


def site_track(site):
    from camtrace.storage import Database
    from camtrace.storage.sql import Detection, Track, Video

    db = Database(settings_from(site["env"]).sql_url)
    with db.engine.connect() as conn:
        track = conn.execute(Track.__table__.select().limit(1)).first()
        source = conn.execute(Video.__table__.select()).first().source
        crop_key = conn.execute(Detection.__table__.select().limit(1)).first().crop_key
    db.close()
    return track.id, source, crop_key


def test_a_service_started_in_another_folder_serves_frames_of_footage_ingested_by_a_relative_path(site):
    track_id, source, _ = site_track(site)
    assert source == str(site["video"].resolve())  # stored absolute, whatever was typed
    with site_client(site) as client:
        frame = client.get(f"/api/tracks/{track_id}/frame")
        assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8", frame.text


def test_errors_name_what_failed_never_a_server_path_or_sql(site):
    track_id, source, crop_key = site_track(site)
    moved = site["video"].with_suffix(".moved")
    crop = Path(settings_from(site["env"]).crops_dir) / crop_key
    kept = crop.read_bytes()
    site["video"].rename(moved)
    crop.unlink()
    try:
        with site_client(site) as client:
            frame = client.get(f"/api/tracks/{track_id}/frame")
            missing = client.get(f"/api/crops/{crop_key}")
    finally:
        moved.rename(site["video"])
        crop.write_bytes(kept)
    assert frame.status_code == 400 and track_id in frame.json()["error"]
    assert missing.status_code == 404 and crop_key in missing.json()["error"]
    for answer in (frame.text, missing.text):
        assert str(site["root"]) not in answer and "/tmp" not in answer and "cam1.mp4" not in answer, answer


def test_pixel_bombs_are_refused_from_their_header_and_cost_no_memory(site):
    from PIL import Image

    small = io.BytesIO()
    Image.new("RGB", (64, 128), "grey").save(small, "JPEG")
    bombs = {"bomb.jpg": jpeg_claiming(32000, 32000), "bomb.png": png_of_zeros(30000, 30000)}
    assert len(bombs["bomb.jpg"]) < 1000 and len(bombs["bomb.png"]) < 2**20  # both fit the 1 MiB upload limit
    over_limit = png_of_zeros(8000, 6000)  # 48 million pixels: a real image just over the default limit
    with site_client(site) as client:
        warm = client.post("/api/search/image", params={"detect": "false"}, files={"file": ("ok.jpg", small.getvalue())})
        assert warm.status_code == 200, warm.text  # models loaded: what follows is the bombs' own cost
        before = peak_rss_mib(site["pid"])
        for name, data in (*bombs.items(), ("big.png", over_limit)):
            for _ in range(3):
                refused = client.post("/api/search/image", files={"file": (name, data, "image/png")})
                assert refused.status_code == 413, refused.text
                assert "CAMTRACE_MAX_UPLOAD_PIXELS" in refused.json()["error"] and name in refused.json()["error"]
        after = peak_rss_mib(site["pid"])
    print(f"peak memory of the service: {before:.0f} MiB before 9 pixel bombs, {after:.0f} MiB after")
    assert after - before < 64, (before, after)


def test_bodies_are_refused_before_they_are_read_or_spooled(site):
    port, token = site["port"], site["token"]
    multipart = (
        "POST /api/search/image HTTP/1.1\nHost: x\nContent-Type: multipart/form-data; boundary=b\n"
        f"Content-Length: {300 * 2**20}\n{{auth}}\n"
    )
    json_head = "POST /api/search/text HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {n}\n{auth}\n"
    auth = f"Authorization: Bearer {token}"
    # Without credentials: 401 at once, the 300 MB and 56 MB never sent.
    for head in (multipart.format(auth=""), json_head.format(n=56 * 2**20, auth="")):
        status, headers, body = raw_request(port, head)
        assert status == 401 and json.loads(body)["kind"] == "AuthError"
    malformed = json_head.format(n=9, auth="")
    status, _, _ = raw_request(port, malformed, [b"{not json"])
    assert status == 401  # a malformed body without credentials is an authentication failure first
    # With credentials: 413 at once, still nothing read.
    for head, limit in (
        (multipart.format(auth=auth), "CAMTRACE_MAX_UPLOAD_MB"),
        (json_head.format(n=56 * 2**20, auth=auth), "64 KiB"),
    ):
        status, _, body = raw_request(port, head)
        assert status == 413 and limit in json.loads(body)["error"]
    # A streamed body with no length is cut off at the limit.
    chunked = (
        "POST /api/search/image HTTP/1.1\nHost: x\nContent-Type: multipart/form-data; boundary=b\n"
        f"{auth}\nTransfer-Encoding: chunked\n"
    )
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    pieces = [part] + [b"x" * 65536] * 48  # 3 MiB of file, never ending
    status, _, body = raw_request(port, chunked, [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces])
    assert status == 413 and "CAMTRACE_MAX_UPLOAD_MB" in json.loads(body)["error"]


# The shared service (uvicorn in a thread over the session's index) ----------------------------------------
def test_security_headers_on_every_answer(api):
    with httpx.Client(base_url=api.url) as anonymous, api.client("operator") as operator:
        answers = [
            anonymous.get("/"),
            anonymous.get("/app.js"),
            anonymous.get("/healthz"),
            anonymous.get("/api/me"),
            anonymous.post("/api/login", json={}),
            operator.get("/api/tracks/none"),
            operator.get("/api/me"),
            operator.request("OPTIONS", "/api/cameras"),
            operator.put("/api/cameras"),
            operator.get("/docs"),
        ]
    for response in answers:
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert [r.status_code for r in answers] == [200, 200, 200, 401, 422, 404, 200, 204, 405, 200]
    assert set(answers[7].headers["allow"].split(", ")) == {"GET", "POST", "OPTIONS"}
    assert set(answers[8].headers["allow"].split(", ")) == {"GET", "POST", "OPTIONS"}


def test_schema_and_docs_need_credentials_and_load_nothing_from_elsewhere(api):
    with httpx.Client(base_url=api.url) as anonymous:
        for path in ("/openapi.json", "/docs"):
            assert anonymous.get(path).status_code == 401
        assert anonymous.get("/redoc").status_code == 404
        assert anonymous.get("/docs/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
        assert anonymous.get("/docs/index.html").status_code == 404  # only the two files it needs
    with api.client("operator") as operator:
        page = operator.get("/docs").text
        assert operator.get("/openapi.json").json()["info"]["title"] == "camtrace"
    assert "http" not in page.replace("http-equiv", "") and "<script>" not in page  # own files only, no inline code
    for asset in ("/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs.js"):
        assert asset in page and httpx.get(api.url + asset).status_code == 200


def test_camera_passwords_never_leave_the_server(api, copy_service):
    app, service_url, env = copy_service
    url = f"rtsp://viewer:{SECRET}@10.1.2.3:554/stream?token={SECRET}"

    def client(user: str) -> httpx.Client:
        return httpx.Client(base_url=service_url, headers={"Authorization": f"Bearer {api.tokens[user]}"})

    with client("admin") as admin:
        added = admin.post("/api/cameras", json={"id": "dock", "url": url})
        assert added.status_code == 201 and SECRET not in added.text and "10.1.2.3" in added.json()["url"]
    app.state.services.db.update_camera("dock", last_error=f"cannot open stream {url}")
    with client("admin") as admin, client("operator") as operator:
        for listing in (admin, operator):
            listed = listing.get("/api/cameras")
            assert listed.status_code == 200 and "dock" in listed.text and SECRET not in listed.text
        assert SECRET not in admin.get("/api/audit", params={"action": "camera_add"}).text
    assert SECRET not in run_cli(env, "camera", "list", "--json") + run_cli(env, "status", "--json")
    stored = {c.id: c.url for c in app.state.services.db.list_cameras()}["dock"]
    assert stored == url  # the recorder still has what it needs


def test_every_change_and_its_audit_row_commit_together(api, tracks_by_camera):
    """With audit inserts failing (a trigger in the real database), nothing is changed and nothing leaks."""
    first, second = tracks_by_camera[api.cameras[0]][0], tracks_by_camera[api.cameras[1]][0]
    db = api.services.db
    with db.engine.begin() as conn:
        conn.execute(
            text("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit inserts refused'); END")
        )
    try:
        with api.client("admin") as admin, api.client("investigator") as investigator:
            answers = [
                investigator.post("/api/feedback", json={"track_id": first, "candidate_track_id": second, "verdict": "different"}),
                admin.post("/api/users", json={"username": "mallory", "role": "admin", "password": PASSWORD}),
                admin.post("/api/cameras", json={"id": "ghostcam"}),
                admin.post("/api/users/operator/tokens", json={}),
                admin.delete("/api/users/investigator"),
                httpx.post(f"{api.url}/api/login", json={"username": "operator", "password": PASSWORD}),
                investigator.post("/api/search/text", json={"text": "red top"}),
            ]
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_audit"))
    assert [a.status_code for a in answers] == [503] * len(answers), [a.text for a in answers]
    for answer in answers:
        assert "INSERT" not in answer.text and "sqlite" not in answer.text.lower() and "/tmp" not in answer.text
        assert "set-cookie" not in answer.headers
    assert all(not {first, second} <= {f.track_id, f.candidate_track_id} or f.verdict != "different" for f in db.feedback_pairs())
    assert "mallory" not in [u.username for u, _ in api.access.users()] and "ghostcam" not in db.camera_ids()
    assert len(api.access.tokens("operator")) == 1 and api.access.get_user("investigator")
    assert httpx.post(f"{api.url}/api/login", json={"username": "mallory", "password": PASSWORD}).status_code == 401
    assert api.access.verify_audit().ok


def test_nan_huge_numbers_and_nul_bytes_answer_documented_4xx(api, tracks_by_camera):
    track = tracks_by_camera[api.cameras[0]][0]
    schema = api.app.openapi()
    with api.client("admin") as admin:
        cases = [
            (
                admin.post(
                    "/api/search/text", content='{"text": "red", "since": NaN}', headers={"content-type": "application/json"}
                ),
                422,
            ),
            (admin.post("/api/search/text", json={"text": "red", "until": "inf"}), 422),
            (admin.post("/api/search/text", json={"text": "red", "since": 1e300}), 422),
            (
                admin.post(
                    "/api/search/text",
                    content='{"text": "red", "min_score": Infinity}',
                    headers={"content-type": "application/json"},
                ),
                422,
            ),
            (admin.get("/api/audit", params={"offset": 2**63}), 422),
            (admin.get("/api/audit", params={"since": "nan"}), 400),
            (admin.get(f"/api/trace/{track}", params={"min_probability": "nan"}), 422),
            (admin.post("/api/search/image", params={"since": "inf"}, files={"file": ("a.jpg", jpeg_claiming(8, 8))}), 400),
            (admin.post("/api/jobs", json={"source": "/footage/a\u0000.mp4", "camera": "gate"}), 422),
            (admin.post("/api/search/text", json={"text": "red\u0000"}), 422),
            (admin.get("/api/tracks/a%00b"), 400),
            (admin.get("/api/audit", params={"user": "a\u0000"}), 400),
            (admin.post("/api/search/image", files={"file": ("huge.jpg", jpeg_claiming(40000, 30000))}), 413),
        ]
    for index, (response, status) in enumerate(cases):
        assert response.status_code == status, (index, response.text)
        assert response.json()["kind"] and response.json()["error"]
        path = response.request.url.path
        documented = {code for method in schema["paths"].get(path, {}).values() for code in method["responses"]}
        assert not documented or str(status) in documented, (path, status, documented)


def test_forged_forwarded_for_counts_for_nothing_without_trusted_proxies(api):
    name = f"nobody{random.randrange(10**6)}"
    answer = httpx.post(
        f"{api.url}/api/login", json={"username": name, "password": "wrong password"}, headers={"X-Forwarded-For": "6.6.6.6"}
    )
    assert answer.status_code == 401
    rows = audit_actions(api, user=name)
    assert [(r["action"], r["client"]) for r in rows] == [("login_failed", "127.0.0.1")]


@pytest.fixture
def copy_service(api, tmp_path):
    """A service over a throwaway copy of the data (what it changes stays there), behind a trusted proxy
    (127.0.0.1) for the login floods; yields the app, its address and its environment."""
    from camtrace.api.app import create_app

    env = {**api.env, "CAMTRACE_DATA_DIR": str(data_copy(api, tmp_path)), "CAMTRACE_TRUSTED_PROXIES": "127.0.0.1"}
    app = create_app(settings_from(env))
    port = free_port()
    with ThreadedServer(app, port):
        yield app, f"http://127.0.0.1:{port}", env
    app.state.services.close()


def login(url: str, name: str, address: str, password: str = "wrong password") -> httpx.Response:
    return httpx.post(
        f"{url}/api/login",
        json={"username": name, "password": password},
        headers={"X-Forwarded-For": f"203.0.113.9, {address}"},
        timeout=60,
    )


def test_failed_logins_are_limited_per_address_and_globally(copy_service, monkeypatch):
    from camtrace.storage import access as access_module

    app, url, _ = copy_service
    # Failed logins of the tests before this one (the service's data is a copy of the shared one) count
    # globally for an hour: start from none.
    with app.state.services.db.write("clearing failed logins") as conn:
        conn.execute(delete(access_module.LoginFailure))
    # From one address, a new name each time: the per-address limit stops it.
    statuses = [login(url, f"guess{i}", "198.51.100.7").status_code for i in range(access_module.FREE_ADDRESS_FAILURES + 2)]
    assert statuses[: access_module.FREE_ADDRESS_FAILURES] == [401] * access_module.FREE_ADDRESS_FAILURES
    assert statuses[-1] == 429
    assert login(url, "operator", "198.51.100.7", PASSWORD).status_code == 429  # the right password waits too
    assert login(url, "operator", "198.51.100.8", PASSWORD).status_code == 200  # another address is not held back
    rows = app.state.access.audit_rows(action="login_failed", limit=5)
    assert {r.client for r in rows} == {"198.51.100.7"}  # the proxy's X-Forwarded-For named the client
    # From ever new addresses: the global limit (lowered here to keep the test short) stops it.
    monkeypatch.setattr(access_module, "FREE_GLOBAL_FAILURES", 30)
    statuses = [login(url, f"spray{i}", f"192.0.2.{i}").status_code for i in range(40)]
    assert 429 in statuses and statuses[-1] == 429 and statuses[0] == 401
    throttled = login(url, "investigator", "192.0.2.250", PASSWORD)
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1


def test_password_hashing_work_is_bounded_under_a_login_flood(copy_service, monkeypatch):
    from camtrace.storage import access as access_module

    _, url, _ = copy_service
    running, peak, lock = 0, 0, threading.Lock()
    hasher = access_module._hasher

    class CountingHasher:
        """The real Argon2 hasher, counting how many checks run at once."""

        def verify(self, *args):
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                return hasher.verify(*args)
            finally:
                with lock:
                    running -= 1

    monkeypatch.setattr(access_module, "_hasher", CountingHasher())
    statuses: list[int] = []

    def attempt(i: int) -> None:
        statuses.append(login(url, f"flood{i}", f"100.64.{i}.1").status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak <= access_module.HASH_SLOTS and peak >= 1
    assert set(statuses) <= {401, 429} and len(statuses) == 16


def test_the_cli_refuses_what_the_api_refuses(api):
    from click.testing import CliRunner

    from camtrace.cli import cli

    def refused(*args: str, stdin: str | None = None) -> str:
        result = CliRunner().invoke(cli, list(args), env=api.env, input=stdin)
        assert result.exit_code != 0, result.output
        return result.output

    assert "password" in refused("user", "add", "shorty", "--role", "operator", "--password-stdin", stdin="a\n")
    assert "user name" in refused("user", "add", "<b>bob</b>", "--role", "operator")
    assert "camera id" in refused("user", "add", "carol", "--role", "operator", "--camera", "<script>")
    assert "camera id" in refused("camera", "add", "<img src=x>", "rtsp://h/s")
    assert "camera id" in refused("ingest", "/nonexistent.mp4", "--camera", "a b")
    with api.client("admin") as admin:
        for body in (
            {"username": "<b>bob</b>", "role": "operator"},
            {"username": "carol", "role": "operator", "cameras": ["<script>"]},
            {"username": "dave", "role": "operator", "password": "a"},
        ):
            assert admin.post("/api/users", json=body).status_code == 422
    names = [u.username for u, _ in api.access.users()]
    assert not {"shorty", "<b>bob</b>", "carol", "dave"} & set(names)


def test_tokens_expire_and_are_listed_and_revoked_one_by_one_over_http_and_the_cli(api):
    run_cli(api.env, "user", "add", "scripts", "--role", "operator")
    created = json.loads(run_cli(api.env, "token", "create", "scripts", "--days", "1", "--json"))
    assert created["expires_at"] > time.time() + 3600 and created["id"]
    listed = json.loads(run_cli(api.env, "token", "list", "scripts", "--json"))
    assert [t["id"] for t in listed][-1] == created["id"] and "token" not in listed[0]
    bearer = {"Authorization": f"Bearer {created['token']}"}
    assert httpx.get(f"{api.url}/api/me", headers=bearer).status_code == 200
    with api.services.db.engine.begin() as conn:  # a day passes
        conn.execute(text("UPDATE api_tokens SET expires_at = :t WHERE id = :i"), {"t": time.time() - 1, "i": created["id"]})
    assert httpx.get(f"{api.url}/api/me", headers=bearer).status_code == 401
    with api.client("admin") as admin:
        assert admin.post("/api/users/scripts/tokens", json={"expires": "2001-01-01T00:00"}).status_code == 400
        made = admin.post("/api/users/scripts/tokens", json={"expires": time.time() + 86400})
        assert made.status_code == 201, made.text
        token = made.json()
        ids = [t["id"] for t in admin.get("/api/users/scripts/tokens").json()]
        assert token["id"] in ids and len(ids) == 3
        bearer = {"Authorization": f"Bearer {token['token']}"}
        assert httpx.get(f"{api.url}/api/me", headers=bearer).status_code == 200
        assert admin.delete(f"/api/tokens/{token['id']}").status_code == 204
        assert admin.delete(f"/api/tokens/{token['id']}").status_code == 404
        assert admin.get("/api/users/nobody/tokens").status_code == 404
    assert httpx.get(f"{api.url}/api/me", headers=bearer).status_code == 401
    first = listed[0]["id"]
    assert "revoked" in run_cli(api.env, "token", "revoke", first)
    assert [t["id"] for t in json.loads(run_cli(api.env, "token", "list", "scripts", "--json"))] == [created["id"]]
    actions = [(r["action"], r["client"]) for r in audit_actions(api) if "scripts" in json.dumps(r)]
    for expected in (
        ("token_create", "cli"),
        ("token_create", "127.0.0.1"),
        ("token_revoke", "127.0.0.1"),
        ("token_revoke", "cli"),
    ):
        assert expected in actions, actions


def test_a_folder_under_the_ingest_roots_with_a_symlink_out_of_them_is_ingested_without_it(api, redis_server, footage, tmp_path):
    """The real ingest task on a real worker: the linked file is skipped and named in the job's error."""
    from camtrace.api.app import create_app

    copy = data_copy(api, tmp_path)
    root = tmp_path / "roots" / "lobby"
    root.mkdir(parents=True)
    videos = sorted(footage.videos.values())
    shutil.copyfile(videos[0], root / "a-inside.mp4")
    outside = tmp_path / "private"
    outside.mkdir()
    shutil.copyfile(videos[1], outside / "secret.mp4")
    (root / "b-link.mp4").symlink_to(outside / "secret.mp4")
    env = {
        **api.env,
        "CAMTRACE_DATA_DIR": str(copy),
        "CAMTRACE_BROKER_URL": redis_server.url,
        "CAMTRACE_INGEST_ROOTS": str(tmp_path / "roots"),
    }
    app = create_app(settings_from(env))
    worker = Worker("ingest", env, tmp_path / "worker.log")
    port = free_port()
    try:
        with (
            ThreadedServer(app, port),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {api.tokens['admin']}"}) as admin,
        ):
            refused = admin.post("/api/jobs", json={"source": str(root / "b-link.mp4"), "camera": "lobby"})
            assert refused.status_code == 403  # named directly, the link is refused at once
            queued = admin.post("/api/jobs", json={"source": str(root), "camera": "lobby"})
            assert queued.status_code == 202, queued.text
            job_id = queued.json()["id"]

            def planned():
                job = admin.get(f"/api/jobs/{job_id}").json()
                return job if job["segments_total"] else None

            job = wait_for(planned, 120, "the ingest task to plan the job")
    finally:
        worker.stop()
        app.state.services.close()
    assert "outside CAMTRACE_INGEST_ROOTS" in job["error"] and "b-link.mp4" in job["error"]
    from camtrace.storage import Database

    db = Database(settings_from(env).sql_url)
    with db.engine.connect() as conn:
        sources = {
            row[0]
            for row in conn.execute(
                text("SELECT v.source FROM videos v JOIN segments s ON s.video_id = v.id WHERE s.job_id = :j"), {"j": job_id}
            )
        }
    db.close()
    assert sources == {str((root / "a-inside.mp4").resolve())}


@pytest.fixture(scope="module")
def tracks_by_camera(api) -> dict[str, list[str]]:
    from camtrace.storage.sql import Track

    with api.services.db.engine.connect() as conn:
        rows = conn.execute(Track.__table__.select().order_by(Track.id)).all()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.camera_id, []).append(row.id)
    return found
