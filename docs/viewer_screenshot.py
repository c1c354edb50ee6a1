"""Screenshot of a timeline viewer page, taken by the test browser (Debian's chromium, Playwright).

    .venv/bin/python docs/viewer_screenshot.py outputs/predict/<name>.html docs/viewer.png

Opens the page from file://, seeks to ``--at`` (a fraction of the video), rests the pointer on a
lane at the playhead so the hover read-out shows, and saves the picture.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

VIEWPORT = {"width": 1280, "height": 860}
SETTLE_MS = 1000  # chromium's controls keep a loading spinner for a moment after a seek


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--at", type=float, default=0.4, help="where to seek, 0-1 of the video")
    parser.add_argument("--lane", default="action", help="the lane the pointer rests on")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print(
            "viewer_screenshot: no chromium on PATH (`make browser` installs it)", file=sys.stderr
        )
        return 1
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(args.page.resolve().as_uri())
        page.wait_for_function("document.getElementById('video').readyState >= 2")
        page.evaluate(
            """([at, SETTLE_MS]) => new Promise((done) => {
                const video = document.getElementById('video');
                video.addEventListener('seeked', () => setTimeout(done, SETTLE_MS), { once: true });
                video.currentTime = at * video.duration;
            })""",
            [args.at, SETTLE_MS],
        )
        lane = page.locator(f'canvas.lane[data-genre="{args.lane}"]').bounding_box()
        head = page.locator("#playhead").bounding_box()
        page.mouse.move(head["x"] + head["width"] / 2, lane["y"] + lane["height"] / 2)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
