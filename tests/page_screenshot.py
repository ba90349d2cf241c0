"""Take the README's screenshot of the investigation view (docs/page.png).

    .venv/bin/python tests/page_screenshot.py docs/page.png

Builds tiny random models and synthetic footage of three cameras whose
recordings start apart (so a trace has transit times), indexes it with
`camtrace ingest`, starts `camtrace serve`, and drives the page in Debian's
chromium: search, open a track, confirm and reject candidates, open the trace.
The models are random, so the matches are not meaningful; the page is real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_fixtures import camtrace_env, free_port, wait_for  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
CAMERA_OFFSETS = {"cam1": 0.0, "cam2": 9.0, "cam3": 21.0}  # seconds after cam1's recording starts
MAX_PNG_BYTES = 400_000


def cli(env: dict, *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "camtrace.cli", *args],
        env=env,
        input=stdin,
        text=True,
        check=True,
        cwd=env["CAMTRACE_DATA_DIR"],
        stdout=subprocess.DEVNULL,
    )


def build_service(root: Path) -> tuple[dict, object]:
    from camtrace.detection.tiny_model import build_tiny_yolo
    from camtrace.embedding.tiny_model import build_tiny_siglip
    from camtrace.synthetic import generate_footage

    os.environ["YOLO_CONFIG_DIR"] = str(root / "ultralytics")
    yolo, siglip = build_tiny_yolo(root / "tiny-yolo"), build_tiny_siglip(root / "tiny-siglip")
    footage = generate_footage(root / "footage", cameras=3, identities=5, seconds=10.0, fps=10, seed=7)
    (root / "data").mkdir()
    env = camtrace_env(root / "data", yolo, siglip, CAMTRACE_LOG_LEVEL="WARNING")
    for camera, path in sorted(footage.videos.items()):
        start = datetime.fromtimestamp(footage.start_ts[camera] + CAMERA_OFFSETS[camera], tz=UTC).isoformat()
        cli(env, "ingest", str(path), "--camera", camera, "--start", start, "--no-progress")
    cli(env, "user", "add", "m.novak", "--role", "investigator", "--password-stdin", stdin=PASSWORD + "\n")
    return env, footage


def shoot(url: str, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url + "/")
        page.get_by_test_id("login-username").fill("m.novak")
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        page.locator('[data-testid="camera-chip"][data-camera="cam2"]').click()  # start from the middle camera
        page.get_by_test_id("search-input").fill("woman, red top, blue trousers, black backpack")
        page.get_by_test_id("search-input").press("Enter")
        cards = page.locator('[data-testid="result-card"][data-camera="cam2"]')
        expect(cards.first).to_be_visible()
        cards.first.get_by_test_id("find-elsewhere-card").click()
        candidates = page.get_by_test_id("candidate-card")
        expect(candidates.nth(3)).to_be_visible()
        for verdict in ("confirm", "confirm", "reject"):
            candidates.first.get_by_test_id(verdict).click()
            page.wait_for_timeout(700)
        expect(page.get_by_test_id("trace-step").first).to_be_visible()
        page.wait_for_function("() => [...document.images].every(image => image.complete)")
        page.mouse.move(0, 0)
        page.screenshot(path=str(out))
        browser.close()


def shrink(path: Path) -> None:
    """Quantise to a palette when the PNG is over budget (the page is flat colours, it loses little)."""
    if path.stat().st_size <= MAX_PNG_BYTES:
        return
    from PIL import Image

    Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/page.png").resolve()
    with tempfile.TemporaryDirectory(prefix="camtrace-shot-") as tmp:
        env, _ = build_service(Path(tmp))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "camtrace.cli", "serve", "--port", str(port)], env=env, cwd=tmp)
        try:

            def healthy() -> bool:
                try:
                    return httpx.get(url + "/healthz", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(healthy, 60, "camtrace serve")
            shoot(url, out)
        finally:
            server.terminate()
            server.wait(timeout=15)
    shrink(out)
    print(f"{out}: {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
