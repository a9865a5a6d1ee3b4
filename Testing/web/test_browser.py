"""The fetal page in headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright): one server
process started with ``losslab app`` on a free loopback port, one browser, few steps (the rest is serverless).
Needs trame-slicer and Playwright (``.venv-web``) and chromium (``.ci/run`` installs it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="trame-slicer is not installed: run in .venv-web (docs/web.md)")
pytest.importorskip("playwright", reason="Playwright is not installed: run in .venv-web (docs/web.md)")

from fetal_cases import write_small_case  # noqa: E402
from LossLabWeb.browser import CHROMIUM, VIEWS_READY_JS, launch_chromium, start_app, stop_app  # noqa: E402
from PIL import Image  # noqa: E402


def view_pixels(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("L"), dtype=float)


@pytest.fixture(scope="module")
def app_page(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    case = write_small_case("GA26_operated", tmp_path_factory.mktemp("case"), spacing=1.6)
    proc, url = start_app(["--case", str(case["srr"]), "--mask", str(case["mask"])])
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            yield page, case, tmp_path_factory.mktemp("bad")
            browser.close()
    finally:
        stop_app(proc)


def test_the_page_shows_both_views_and_paints_with_the_mouse(app_page):
    page, _, _ = app_page
    views = page.locator("img.image-display-area")
    page.wait_for_function(VIEWS_READY_JS, arg=2, timeout=60_000)
    assert views.count() == 2
    axial, threed = view_pixels(views.nth(0)), view_pixels(views.nth(1))
    assert axial.std() > 10  # the MRI (not a uniform background)
    assert threed.std() > 1  # the slice plane in 3D
    rows = page.locator(".fetal-checklist tbody tr")
    assert rows.count() == 8 and rows.nth(0).inner_text().split()[:2] == ["WM", "0"]

    page.get_by_role("button", name="Paint").click()
    page.wait_for_timeout(1000)  # the effect reaches the server (the browser sends it after pending calls)
    box = views.nth(0).bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 40, cy)
    page.mouse.down()
    for dx in range(-40, 41, 8):
        page.mouse.move(cx + dx, cy)
    page.mouse.up()
    page.wait_for_function(
        "document.querySelector('.fetal-checklist tbody tr').innerText.split(/\\s+/).filter(Boolean)[1] !== '0'",
        timeout=30_000,
    )
    assert "WM" in page.locator(".fetal-problems").inner_text()  # painted, not yet declared
    page.locator(".fetal-checklist tbody tr").nth(0).locator("input[type=checkbox]").check()
    page.wait_for_function(
        "!document.querySelector('.fetal-problems').innerText.includes('WM')", timeout=30_000
    )


def test_a_bad_file_shows_a_message_in_the_page(app_page):
    page, _, bad_dir = app_page
    bad = bad_dir / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file")
    page.get_by_label("MRI (.nii.gz, .nrrd)").fill(str(bad))
    page.get_by_label("brain mask (optional)").fill("")
    page.locator(".fetal-load").click()
    page.locator(".fetal-confirm").wait_for(timeout=30_000)  # the WM painted above: the page asks first
    page.locator(".fetal-confirm-ok").click()
    message = page.locator(".fetal-message")
    message.filter(has_text="broken.nii.gz").wait_for(timeout=30_000)
    text = message.inner_text()
    assert "Load" in text and "Traceback" not in text and "File " not in text


def test_uploading_the_mri_and_mask_from_the_browser_loads_them(app_page):
    page, case, _ = app_page
    page.locator(".fetal-upload input[type=file]").set_input_files([str(case["srr"]), str(case["mask"])])
    # the case above still holds the WM painted: the page asks first, naming what would be lost (the dialog's
    # text arrives with the state after its buttons: wait for it rather than read it on the first frame)
    page.locator(".fetal-confirm").filter(has_text="painted voxels: WM").wait_for(timeout=30_000)
    page.locator(".fetal-confirm-ok").click()
    page.locator(".fetal-message").filter(has_text="Loaded srr").wait_for(timeout=60_000)
    assert page.locator(".fetal-checklist tbody tr").count() == 8
