"""The README's screenshots: ``python Web/screenshot.py [--page fetal|ice] [OUT.png]`` (run in .venv-web).

Fetal (default): starts ``losslab app --sample fetal`` on a free loopback port, opens it in headless Debian
chromium, waits for both views, paints one stroke of white matter on the axial view with the mouse, ticks WM in
the checklist, and saves the page (default ``Resources/Screenshots/web-fetal.png``).

ICE (``--page ice``): ``losslab app --page ice --sample ice``; *Segment* with the registered
``ice-segmentation-64`` (the shipped models, or ``LOSSLAB_MODELS_DIR``), steps to frame 13 (mid-sweep), draws one scribble
with the mouse and saves the page after the edit (default ``Resources/Screenshots/web-ice.png``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from LossLabWeb.browser import (  # noqa: E402
    ROOT,
    VIEWS_READY_JS,
    ice_segment_and_show_frame,
    launch_chromium,
    start_app,
    stop_app,
)

DEFAULT_OUT = ROOT / "Resources" / "Screenshots" / "web-fetal.png"
DEFAULT_ICE_OUT = ROOT / "Resources" / "Screenshots" / "web-ice.png"
#: the ICE frame the scribble is drawn on (the middle of the sample's sweep: the atrium is cut widest there)
FRAME = 13


def ice_screenshot(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from losslab import io as _io

    proc, url = start_app(["--page", "ice", "--sample", "ice"])
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(url)
            page.wait_for_function(VIEWS_READY_JS, arg=2, timeout=120_000)
            message = page.locator(".ice-message")
            ice_segment_and_show_frame(page, FRAME)
            box = page.locator("img.image-display-area").nth(0).bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.5
            page.mouse.move(cx - 50, cy)
            page.mouse.down()
            for dx in range(-50, 51, 5):
                page.mouse.move(cx + dx, cy + dx * dx / 100)
            page.mouse.up()
            # "Edit 1: frame ..." after the edit, "Edit: ..." when it failed (the page's one-line error)
            message.filter(has_text=re.compile(r"Edit( \d+)?:")).wait_for(timeout=300_000)
            if not re.match(r"Edit \d+:", message.inner_text()):
                raise RuntimeError(f"screenshot.py: {message.inner_text()}")
            page.locator(".ice-history tbody tr").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)
            _io.write_bytes(out, page.screenshot())
            browser.close()
    finally:
        stop_app(proc)


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    from losslab import io as _io

    if argv[:1] == ["--page"]:
        if len(argv) < 2 or argv[1] not in ("fetal", "ice"):
            print("screenshot.py: --page takes fetal or ice", file=sys.stderr)
            return 2
        page_name, argv = argv[1], argv[2:]
    else:
        page_name = "fetal"
    if page_name == "ice":
        out = Path(argv[0]) if argv else DEFAULT_ICE_OUT
        ice_screenshot(out)
        print(f"screenshot.py: wrote {out}")
        return 0
    out = Path(argv[0]) if argv else DEFAULT_OUT
    proc, url = start_app(["--sample", "fetal"])
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(url)
            page.wait_for_function(VIEWS_READY_JS, arg=2, timeout=120_000)
            page.get_by_role("button", name="Paint").click()
            box = page.locator("img.image-display-area").nth(0).bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.45
            page.mouse.move(cx - 60, cy)
            page.mouse.down()
            for dx in range(-60, 61, 6):
                page.mouse.move(cx + dx, cy + dx * dx / 120)
            page.mouse.up()
            page.wait_for_function(
                "document.querySelector('.fetal-checklist tbody tr').innerText.split(/\\s+/).filter(Boolean)[1] !== '0'",
                timeout=60_000,
            )
            page.locator(".fetal-checklist tbody tr").nth(0).locator("input[type=checkbox]").check()
            page.wait_for_timeout(1500)
            _io.write_bytes(out, page.screenshot())
            browser.close()
    finally:
        stop_app(proc)
    print(f"screenshot.py: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
