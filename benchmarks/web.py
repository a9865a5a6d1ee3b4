"""Web app latency: page request to first image, and mouse-up to the edited segment on screen.

Peers: the figure checked on this machine type when trame-slicer was chosen (issue 12, shared
CONVENTIONS.md: "a page shows its first images about a second after the request"), used as the 1.0 s
reference; goals: first image of both views within 1.0 s of the request, a painted stroke in the page within
0.5 s of mouse-up (on 2 CPU cores, llvmpipe).

Usage (in .venv-web, with Debian's chromium)::

    python benchmarks/web.py                 # the sample case at 1.6 mm, 5 page loads, 5 strokes
    python benchmarks/web.py --repeats 10 --case MRI.nii.gz --mask MASK.nii.gz
    python benchmarks/web.py --page ice      # the ICE sample: 5 page loads, 5 scribble edits (shipped models)
    python benchmarks/web.py --page ice --busy 1   # ... while one other process keeps a core busy
    python benchmarks/web.py --page ice --threads 2  # losslab app --threads 2 (default: its own choice)

``--busy N`` starts N processes that spin (``python -c 'while True: pass'``) for the whole measurement: the
machine as a clinician's workstation is when something else runs. The load average is printed with the
figures.

Measured in the browser (``performance.now()``): from ``page.goto`` to both views' images decoded, per fresh
page; from mouse-up to the checklist showing the stroke's voxels (the segment edited on the server, the state
pushed to the page; the slice image is pushed in the same update). ICE page: from mouse-up on a scribble to the
edit's row in the history table (stroke -> voxels, the editing model, the segment written with its undo state,
the history pushed), on frame 13 of the bundled sample with the shipped models; no peer figure exists for it,
the goal is the editing model's own (0.5 s per edit).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [
    str(ROOT / "Web"),
    str(ROOT / "LossLab"),
    str(ROOT / "FetalParcellation"),
    str(ROOT / "Testing" / "mrml"),
]

from LossLabWeb.browser import (  # noqa: E402
    VIEWS_READY_JS,
    ice_segment_and_show_frame,
    launch_chromium,
    start_app,
    stop_app,
)  # noqa: E402

FIRST_IMAGE_REFERENCE_S = 1.0
STROKE_GOAL_S = 0.5

ROWS_JS = "() => document.querySelectorAll('.ice-history tbody tr').length"
ICE_FRAME = 13

COUNT_JS = (
    "() => document.querySelector('.fetal-checklist tbody tr').innerText.split(/\\s+/).filter(Boolean)[1]"
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", help="an MRI (default: the atlas sample case at --spacing mm)")
    parser.add_argument("--mask")
    parser.add_argument("--spacing", type=float, default=1.6)
    parser.add_argument("--page", choices=("fetal", "ice"), default="fetal")
    parser.add_argument("--busy", type=int, default=0, help="processes keeping a core busy meanwhile")
    parser.add_argument("--threads", type=int, help="losslab app --threads (default: the app's choice)")
    args = parser.parse_args(argv)
    app_args = [] if args.threads is None else ["--threads", str(args.threads)]
    with busy_cores(args.busy):
        if args.page == "ice":
            return ice(args.repeats, app_args, args.busy)
        return fetal(args, app_args)


@contextlib.contextmanager
def busy_cores(n: int):
    """``n`` processes that spin for as long as the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(0, n))]
    try:
        if procs:
            time.sleep(1.0)
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def conditions(busy: int) -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} cores, {busy} busy process(es) started by the benchmark, load average {load}"


def fetal(args, app_args) -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        if args.case:
            mri, mask = args.case, args.mask
        else:
            from fetal_cases import write_small_case

            files = write_small_case("GA26_operated", Path(tmp) / "case", spacing=args.spacing)
            mri, mask = files["srr"], files["mask"]
        proc, url = start_app(["--case", str(mri)] + (["--mask", str(mask)] if mask else []) + app_args)
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                loads, strokes = _page_loads(browser, url, args.repeats), []
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(url)
                page.wait_for_function(VIEWS_READY_JS, arg=2, timeout=120_000)
                page.get_by_role("button", name="Paint").click()
                page.wait_for_timeout(500)
                box = page.locator("img.image-display-area").nth(0).bounding_box()
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                for k in range(args.repeats):
                    y = cy - 60 + 30 * k
                    page.mouse.move(cx - 50, y)
                    page.wait_for_timeout(400)  # let the brush preview settle: measure the stroke only
                    page.mouse.down()
                    for dx in range(-50, 51, 10):
                        page.mouse.move(cx + dx, y)
                    page.wait_for_timeout(300)
                    before = page.evaluate(COUNT_JS)
                    t0 = time.perf_counter()
                    page.mouse.up()
                    page.wait_for_function(f"() => ({COUNT_JS})() !== {before!r}", timeout=30_000, polling=10)
                    strokes.append(time.perf_counter() - t0)
                browser.close()
        finally:
            stop_app(proc)
    load, stroke = statistics.median(loads), statistics.median(strokes)
    print(
        f"page request -> first image of both views: median {load:.2f} s over {len(loads)} loads "
        f"(reference {FIRST_IMAGE_REFERENCE_S:.1f} s: ratio {load / FIRST_IMAGE_REFERENCE_S:.2f})"
    )
    print(
        f"mouse-up -> the stroke's voxels in the page: median {stroke:.3f} s over {len(strokes)} strokes "
        f"(goal {STROKE_GOAL_S:.1f} s: ratio {stroke / STROKE_GOAL_S:.2f})"
    )
    print(f"conditions: {conditions(args.busy)}")
    return 0


def _page_loads(browser, url: str, repeats: int) -> list[float]:
    loads = []
    for _ in range(repeats):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function(VIEWS_READY_JS, arg=2, timeout=120_000, polling=10)
        loads.append(time.perf_counter() - t0)
        page.close()
    return loads


def ice(repeats: int, app_args=(), busy: int = 0) -> int:
    """The ICE page: page loads, then ``repeats`` scribble edits on frame 13, mouse-up -> history row."""
    from playwright.sync_api import sync_playwright

    proc, url = start_app(["--sample", "ice", *app_args])
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            loads = _page_loads(browser, url, repeats)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.wait_for_function(VIEWS_READY_JS, arg=2, timeout=120_000)
            ice_segment_and_show_frame(page, ICE_FRAME)
            box = page.locator("img.image-display-area").nth(0).bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            edits = []
            for k in range(repeats + 1):  # the first edit loads the editing model: not counted
                y = cy - 40 + 20 * (k % 5)
                page.mouse.move(cx - 40, y)
                page.mouse.down()
                for dx in range(-40, 41, 8):
                    page.mouse.move(cx + dx, y + dx / 4)
                before = page.evaluate(ROWS_JS)
                t0 = time.perf_counter()
                page.mouse.up()
                page.wait_for_function(f"() => ({ROWS_JS})() > {before}", timeout=120_000, polling=10)
                if k:
                    edits.append(time.perf_counter() - t0)
            browser.close()
    finally:
        stop_app(proc)
    load, edit = statistics.median(loads), statistics.median(edits)
    print(
        f"ICE page request -> first image of both views: median {load:.2f} s over {len(loads)} loads "
        f"(reference {FIRST_IMAGE_REFERENCE_S:.1f} s: ratio {load / FIRST_IMAGE_REFERENCE_S:.2f})"
    )
    print(
        f"mouse-up -> the edit's row in the history: median {edit:.3f} s over {len(edits)} edits, max "
        f"{max(edits):.3f} s (goal {STROKE_GOAL_S:.1f} s: ratio {edit / STROKE_GOAL_S:.2f})"
    )
    print(f"conditions: {conditions(busy)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
