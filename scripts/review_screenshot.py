"""The review page in headless Chromium at a reader's screen size: each case's height, and the
README's screenshot (after ``make demo``).

Run: ``python scripts/review_screenshot.py outputs/demo/review`` prints each case's document height
at 1280 × 800 for a blinded reader; ``--out docs/review_page.jpg`` also saves the first case's first
screen (``--case N`` another case, ``--full`` the whole page). The session is copied to a temporary
folder first: its readers and ratings are never touched. Needs Debian's ``chromium`` and
``chromium-driver`` and the ``selenium`` package.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _served(folder: Path):
    """The review page of ``folder`` on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    from xmed.review.server import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(folder), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def _browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


def case_heights(driver, base: str, n_cases: int) -> list[int]:
    """The document height of each case page (1-based positions), in CSS pixels."""
    heights = []
    for n in range(1, n_cases + 1):
        driver.get(f"{base}/case/{n}")
        driver.execute_script("return document.fonts.ready")
        heights.append(int(driver.execute_script("return document.documentElement.scrollHeight")))
    return heights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("session", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--out", type=Path, default=None, help="save a screenshot here (.png or .jpg)")
    parser.add_argument("--case", type=int, default=1, help="the case (position) of the screenshot")
    parser.add_argument("--full", action="store_true", help="the whole page, not its first screen")
    parser.add_argument("--reader", default="Screenshot reader")
    args = parser.parse_args(argv)

    from PIL import Image

    from xmed.review.session import load_session
    from xmed.review.store import STORE_FILE, RatingStore

    n_cases = len(load_session(args.session)["cases"])
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(shutil.copytree(args.session, Path(scratch) / "session",
                                      ignore=shutil.ignore_patterns(STORE_FILE + "*", "address.json")))
        token = RatingStore(folder / STORE_FILE).add_reader(args.reader)
        driver = _browser(args.width, args.height)
        try:
            with _served(folder) as base:
                driver.get(f"{base}/login?token={token}")
                heights = case_heights(driver, base, n_cases)
                print(f"document height per case at {args.width}×{args.height}: {heights} "
                      f"(largest {max(heights)} px = {max(heights) / args.height:.2f} screens)")
                if args.out is not None:
                    driver.get(f"{base}/case/{args.case}")
                    if args.full:
                        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                            "width": args.width, "height": heights[args.case - 1], "deviceScaleFactor": 1,
                            "mobile": False})
                    png = Path(scratch) / "shot.png"
                    driver.save_screenshot(str(png))
                    with Image.open(png) as image:
                        image.convert("RGB").save(args.out, quality=88)
                    print(f"wrote {args.out}")
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
