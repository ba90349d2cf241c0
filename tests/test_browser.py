"""The operators' page in headless Chromium against a real `camtrace serve` process.

The index is the API tests' one (the synthetic footage of three cameras,
ingested with the CLI), copied so that this module's feedback does not change
what the API tests see; users are created with `camtrace user add`. Playwright
drives Debian's chromium (/usr/bin/chromium): Playwright's own browser
download is not used. Screenshots of each step land in the test's tmp_path
(the README's screenshot comes from tests/page_screenshot.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import pytest
from api_fixtures import PASSWORD, api_env, run_cli  # noqa: F401 (api_env is a fixture)
from distributed_fixtures import free_port, settings_from, wait_for
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
expect.set_options(timeout=30_000)  # the first search loads the models in the service


@dataclass
class PageService:
    url: str
    cameras: list[str]
    footage: object
    env: dict | None = None


@pytest.fixture(scope="module")
def page_service(tmp_path_factory, api_env, footage):  # noqa: F811 (pytest fixture injection)
    """`camtrace serve` on a copy of the indexed footage, with an investigator, an operator and a camera-limited user."""
    data_dir = tmp_path_factory.mktemp("page") / "data"
    shutil.copytree(api_env["CAMTRACE_DATA_DIR"], data_dir, ignore=shutil.ignore_patterns("*.lock"))
    env = {**api_env, "CAMTRACE_DATA_DIR": str(data_dir), "YOLO_CONFIG_DIR": str(data_dir / "ultralytics")}
    cameras = sorted(footage.videos)
    for name, role, limit in (
        ("ines", "investigator", []),
        ("otto", "operator", []),
        ("rita", "investigator", [cameras[0]]),
    ):
        limit_args = [arg for camera in limit for arg in ("--camera", camera)]
        run_cli(env, "user", "add", name, "--role", role, *limit_args, "--password-stdin", stdin=PASSWORD + "\n")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 (closed after the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "camtrace.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        assert process.poll() is None, (data_dir / "serve.log").read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 60, "camtrace serve to answer /healthz")
        yield PageService(url, cameras, footage, env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser: Browser, service: PageService, width: int = 1600, height: int = 1000) -> tuple[Page, list]:
    """A fresh browser context (no cookies) on the page; the list collects the page's script errors."""
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    # What the Content-Security-Policy blocks is reported on the console: the page must need nothing it forbids.
    page.on(
        "console",
        lambda message: (
            script_errors.append(message.text) if message.type == "error" and "Content Security Policy" in message.text else None
        ),
    )
    page.goto(service.url + "/")
    return page, script_errors


def sign_in(page: Page, username: str) -> None:
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("user")).to_have_text(username)


def search(page: Page, text: str) -> None:
    page.get_by_test_id("search-input").fill(text)
    page.get_by_test_id("search-input").press("Enter")
    expect(page.get_by_test_id("result-card").first).to_be_visible()


def test_investigator_traces_a_person_across_cameras(browser, page_service, tmp_path):
    page, script_errors = open_page(browser, page_service)
    sign_in(page, "ines")
    expect(page.get_by_test_id("role")).to_have_text("investigator")
    expect(page.get_by_test_id("camera-chip")).to_have_text(page_service.cameras)

    search(page, "person, red top, blue trousers")
    cards = page.get_by_test_id("result-card")
    assert cards.count() >= 3
    for camera in cards.evaluate_all("cards => cards.map(card => card.dataset.camera)"):
        assert camera in page_service.cameras
    page.screenshot(path=tmp_path / "1-results.png")

    # A camera chip filters the search inside the service.
    page.locator(f'[data-testid="camera-chip"][data-camera="{page_service.cameras[1]}"]').click()
    expect(page.locator(f'[data-testid="result-card"]:not([data-camera="{page_service.cameras[1]}"])')).to_have_count(0)
    expect(cards.first).to_be_visible()
    page.locator(f'[data-testid="camera-chip"][data-camera="{page_service.cameras[1]}"]').click()
    expect(page.locator(f'[data-testid="result-card"]:not([data-camera="{page_service.cameras[1]}"])').first).to_be_visible()

    # Open the first result's track: its frame, crops, camera and time span.
    seed = cards.first
    seed_track, seed_camera = seed.get_attribute("data-track"), seed.get_attribute("data-camera")
    seed.get_by_test_id("open-track").click()
    expect(page.get_by_test_id("track-view")).to_be_visible()
    expect(page.get_by_test_id("track-id")).to_have_text(seed_track)
    expect(page.get_by_test_id("track-camera")).to_have_text(seed_camera)
    expect(page.get_by_test_id("track-crop").first).to_be_visible()
    page.wait_for_function("() => document.querySelector('[data-testid=track-frame]').naturalWidth > 0")

    # The same person elsewhere: candidates from the other cameras only.
    page.get_by_test_id("find-elsewhere").click()
    candidates = page.get_by_test_id("candidate-card")
    expect(candidates.nth(1)).to_be_visible()
    assert seed_camera not in candidates.evaluate_all("cards => cards.map(card => card.dataset.camera)")
    confirmed = candidates.nth(0).get_attribute("data-track")
    rejected = candidates.nth(1).get_attribute("data-track")
    assert seed_track not in (confirmed, rejected)

    candidates.nth(0).get_by_test_id("confirm").click()
    expect(page.locator(f'[data-testid="candidate-card"][data-track="{confirmed}"]')).to_have_count(0)
    # Confirming opens the trace: the seed and the confirmed step, each in its camera's lane.
    expect(page.get_by_test_id("trace")).to_be_visible()
    expect(page.locator(f'[data-testid="trace-step"][data-track="{seed_track}"]')).to_have_attribute("data-status", "seed")
    confirmed_step = page.locator(f'[data-testid="trace-step"][data-track="{confirmed}"]')
    expect(confirmed_step).to_have_attribute("data-status", "confirmed")
    expect(page.locator(f'[data-testid="trace-lane"][data-camera="{seed_camera}"]')).to_be_visible()

    rejected_card = page.locator(f'[data-testid="candidate-card"][data-track="{rejected}"]')
    rejected_card.get_by_test_id("reject").click()
    expect(rejected_card).to_have_count(0)
    expect(page.locator(f'[data-testid="trace-step"][data-track="{rejected}"]')).to_have_count(0)

    # Asking again: the service no longer proposes either decided track.
    generation = page.get_by_test_id("candidates").get_attribute("data-generation")
    page.get_by_test_id("find-elsewhere").click()
    expect(page.get_by_test_id("candidates")).not_to_have_attribute("data-generation", generation)
    expect(candidates.first).to_be_visible()
    again = candidates.evaluate_all("cards => cards.map(card => card.dataset.track)")
    assert confirmed not in again and rejected not in again

    page.screenshot(path=tmp_path / "2-investigation.png")

    # Export the trace: a download holding the seed and the confirmed match.
    with page.expect_download() as download_info:
        page.get_by_test_id("export-csv").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    csv_text = Path(download.path()).read_text()
    assert seed_track in csv_text and confirmed in csv_text and rejected not in csv_text
    with page.expect_download() as download_info:
        page.get_by_test_id("export-json").click()
    exported = json.loads(Path(download_info.value.path()).read_text())
    exported_text = json.dumps(exported)
    assert seed_track in exported_text and confirmed in exported_text and "ines" in exported_text

    # Escape goes back to the results; signing out brings the login form back, also after a reload.
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("results-view")).to_be_visible()
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("login-form")).to_be_visible()
    assert script_errors == []


def test_operator_searches_but_cannot_decide_or_export(browser, page_service, tmp_path):
    page, script_errors = open_page(browser, page_service, 1366, 768)
    sign_in(page, "otto")
    expect(page.get_by_test_id("role")).to_have_text("operator")
    search(page, "person")
    page.get_by_test_id("find-elsewhere-card").first.click()
    expect(page.get_by_test_id("candidate-card").first).to_be_visible()
    expect(page.get_by_test_id("confirm")).to_have_count(0)
    expect(page.get_by_test_id("reject")).to_have_count(0)
    page.get_by_test_id("open-trace").click()
    expect(page.get_by_test_id("trace-step").first).to_be_visible()
    expect(page.get_by_test_id("export-csv")).to_be_hidden()
    page.screenshot(path=tmp_path / "operator-1366.png")

    # The open track is in the address: the browser's Back and Forward and a reload follow it.
    track = page.get_by_test_id("track-id").inner_text()
    page.go_back()
    expect(page.get_by_test_id("results-view")).to_be_visible()
    expect(page.get_by_test_id("result-card").first).to_be_visible()
    page.go_forward()
    expect(page.get_by_test_id("track-id")).to_have_text(track)
    page.reload()
    expect(page.get_by_test_id("track-id")).to_have_text(track)
    assert script_errors == []


def test_camera_limited_user_sees_only_their_cameras(browser, page_service):
    page, script_errors = open_page(browser, page_service)
    sign_in(page, "rita")
    only = page_service.cameras[0]
    expect(page.get_by_test_id("camera-chip")).to_have_text([only])
    search(page, "person")
    assert set(page.get_by_test_id("result-card").evaluate_all("cards => cards.map(c => c.dataset.camera)")) == {only}


def test_photo_search_by_drop_and_errors_are_shown(browser, page_service, tmp_path):
    page, script_errors = open_page(browser, page_service)
    expect(page.get_by_test_id("login-form")).to_be_visible()
    page.get_by_test_id("login-username").fill("ines")
    page.get_by_test_id("login-password").fill("not the password")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong username or password.")
    sign_in(page, "ines")

    # A frame of the footage, dropped onto the page: the persons found are offered, results shown.
    footage = page_service.footage
    camera = page_service.cameras[0]
    capture = cv2.VideoCapture(str(footage.videos[camera]))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, frame = capture.read()
    capture.release()
    assert ok
    photo = tmp_path / "frame.png"
    cv2.imwrite(str(photo), frame)
    drop_file(page, photo.read_bytes(), "frame.png", "image/png")
    expect(page.get_by_test_id("persons")).to_be_visible()
    expect(page.get_by_test_id("result-card").first).to_be_visible()
    choices = page.get_by_test_id("person-choice")
    expect(page.locator('[data-testid="person-choice"][aria-pressed="true"]')).to_have_count(1)  # the service's pick
    if choices.count() > 1:  # another person: the search runs again for them
        choices.nth(1).click()
        expect(choices.nth(1)).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_test_id("result-card").first).to_be_visible()
    page.screenshot(path=tmp_path / "photo.png")

    # Not an image: the service's message is shown as it is, and nothing else changes.
    page.get_by_test_id("photo-input").set_input_files(
        files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"these are not pixels"}]
    )
    expect(page.get_by_test_id("error")).to_contain_text("notes.jpg")
    expect(page.get_by_test_id("result-card").first).to_be_visible()
    assert script_errors == []


def drop_file(page: Page, data: bytes, name: str, mime: str) -> None:
    """Drop a file onto the page as a person dragging it from their desktop would."""
    transfer = page.evaluate_handle(
        """([bytes, name, mime]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
            return transfer;
        }""",
        [list(data), name, mime],
    )
    page.dispatch_event("body", "dragenter", {"dataTransfer": transfer})
    expect(page.get_by_test_id("drop-zone")).to_be_visible()
    page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    expect(page.get_by_test_id("drop-zone")).to_be_hidden()


def test_api_docs_render_from_the_service_own_files_under_its_csp(browser, page_service):
    page, errors = open_page(browser, page_service)
    sign_in(page, "ines")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(page_service.url + "/docs")
    expect(page.get_by_text("/api/search/text").first).to_be_visible()
    assert all(url.startswith(page_service.url) or url.startswith(("data:", "blob:")) for url in requested), requested
    assert errors == []


def test_a_watchlist_alert_arrives_live_as_a_banner_and_is_dismissed(browser, page_service):
    from sqlalchemy import select

    from camtrace.services import Services
    from camtrace.storage.sql import Track
    from camtrace.storage.watchlists import NewAlert, WatchStore

    services = Services(settings_from(page_service.env))
    first, second = page_service.cameras[:2]
    with services.db.engine.connect() as conn:
        seed, seen = (
            conn.execute(select(Track).where(Track.camera_id == camera).order_by(Track.id)).first() for camera in (first, second)
        )
    store = WatchStore(services.db)
    entry = store.add_entry("person", username="ines", track_id=seed.id, note="the man with the bag")
    page, script_errors = open_page(browser, page_service)
    sign_in(page, "ines")
    limited, limited_errors = open_page(browser, page_service)
    sign_in(limited, "rita")  # limited to the first camera: the alert is on the second
    page.wait_for_timeout(1500)  # both streams are open (each starts after the newest alert)
    alert = store.add_alert(NewAlert(entry.id, seen.id, second, seen.ts_start, 0.87, 0.93, seen.best_crop_key), [])

    banner = page.get_by_test_id("alert-banner")
    expect(banner).to_have_count(1, timeout=10_000)
    expect(banner).to_contain_text(f"Watchlist match on {second}")
    expect(banner).to_contain_text("87% likely")
    assert banner.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")  # the crop, with the session
    banner.get_by_test_id("alert-dismiss").click()
    expect(banner).to_have_count(0)
    assert store.alert(alert.id).status == "dismissed" and store.alert(alert.id).handled_by == "ines"
    assert [(f.track_id, f.candidate_track_id, f.verdict) for f in services.db.feedback_for([seen.id])] == [
        (seed.id, seen.id, "different")
    ]
    expect(limited.get_by_test_id("alert-banner")).to_have_count(0)
    assert script_errors == [] and limited_errors == []


def test_a_track_clip_plays_in_the_track_view(browser, page_service, tmp_path):
    page, script_errors = open_page(browser, page_service)
    sign_in(page, "otto")
    search(page, "person")
    page.get_by_test_id("result-card").first.get_by_test_id("open-track").click()
    expect(page.get_by_test_id("track-view")).to_be_visible()
    video = page.get_by_test_id("track-clip")
    expect(video).to_be_visible()
    # Muted, so headless Chromium lets the page start it like any browser would let a click.
    page.evaluate(
        """() => {
            const video = document.querySelector('[data-testid=track-clip]');
            window.clipPlaying = false;
            video.addEventListener('playing', () => { window.clipPlaying = true; });
            return video.play();
        }"""
    )
    page.wait_for_function("() => window.clipPlaying")
    started = page.evaluate("() => document.querySelector('[data-testid=track-clip]').currentTime")
    page.wait_for_function(
        "start => { const v = document.querySelector('[data-testid=track-clip]');"
        " return !v.paused && v.currentTime > start + 0.5; }",
        arg=started,
    )
    facts = page.evaluate(
        """() => { const v = document.querySelector('[data-testid=track-clip]');
                   return { width: v.videoWidth, height: v.videoHeight, duration: v.duration, error: v.error }; }"""
    )
    assert facts["width"] > 0 and facts["height"] > 0 and facts["error"] is None, facts
    page.screenshot(path=tmp_path / "clip.png")
    expect(page.get_by_test_id("clip-missing")).to_be_hidden()
    assert script_errors == []
