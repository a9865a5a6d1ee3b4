"""The ICE page in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright): ``losslab app --page
ice --sample ice`` on a free loopback port with tiny models registered under the shipped names in a temporary
registry (``LOSSLAB_MODELS_DIR``, inherited by the server); one browser, one walk through the page (the rest is
serverless, test_ice_serverless.py). Needs trame-slicer and Playwright (``.venv-web``) and chromium."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.importorskip("trame_slicer", reason="trame-slicer is not installed: run in .venv-web (docs/web.md)")
pytest.importorskip("playwright", reason="Playwright is not installed: run in .venv-web (docs/web.md)")

from ice_helpers import tiny_registry  # noqa: E402
from LossLabWeb.browser import CHROMIUM, VIEWS_READY_JS, launch_chromium, start_app, stop_app  # noqa: E402

from losslab import models  # noqa: E402


def test_segment_step_frames_and_a_mouse_stroke_edits_the_segment(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    registry = tiny_registry(tmp_path_factory)
    previous = os.environ.get(models.ENV_ROOT)
    os.environ[models.ENV_ROOT] = str(registry)
    try:
        proc, url = start_app(["--page", "ice", "--sample", "ice"])
    finally:
        if previous is None:
            os.environ.pop(models.ENV_ROOT)
        else:
            os.environ[models.ENV_ROOT] = previous
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.wait_for_function(VIEWS_READY_JS, arg=2, timeout=60_000)
            message = page.locator(".ice-message")
            message.filter(has_text="Loaded").wait_for(timeout=30_000)

            page.locator(".ice-segment").click()
            message.filter(has_text="Turn on Scribble").wait_for(timeout=120_000)  # the editing model ready
            page.locator(".ice-next").click()
            page.wait_for_function(
                "document.querySelector('.ice-frame-field input').value === '1'", timeout=30_000
            )
            page.locator(".ice-scribble input").check()

            views = page.locator("img.image-display-area")
            box = views.nth(0).bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 40, cy)
            page.mouse.down()
            for dx in range(-40, 41, 8):
                page.mouse.move(cx + dx, cy + dx / 4)
            page.mouse.up()
            rows = page.locator(".ice-history tbody tr")
            rows.first.wait_for(timeout=120_000)  # the first edit loads the editing model
            cells = rows.first.inner_text().split()
            assert cells[:2] == ["1", "1"], cells  # edit 1, drawn on frame 1
            assert re.fullmatch(r"\+\d+/-\d+", cells[2]) and cells[-1] in ("applied", "no change"), cells
            text = message.inner_text()
            assert "Edit 1: frame 1" in text and "Traceback" not in text, text
            browser.close()
    finally:
        stop_app(proc)
