"""Drive the app in a browser (tests, the README screenshot, benchmarks/web.py): ``losslab app`` on a free
loopback port and Debian's chromium through Playwright (never Playwright's own browser download).

Chromium runs as root on a closed network here: ``--no-sandbox`` and the flags that stop its background
connections (without them it keeps trying to reach Google's hosts).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LOSSLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: JavaScript: true once every view of the page shows an image.
VIEWS_READY_JS = (
    "(n) => { const v = Array.from(document.querySelectorAll('img.image-display-area'));"
    " return v.length >= n && v.every(i => i.complete && i.naturalWidth > 0); }"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(args: list[str], timeout: float = 120.0, python: str | None = None, log=None):
    """``losslab app ARGS`` on a free loopback port: ``(process, url)`` once the page answers. The caller
    terminates the process. ``log``: a file for the server's output (default: a pipe, read at exit)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "LossLab"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    out = subprocess.PIPE if log is None else open(log, "w")  # noqa: SIM115 (closed below; the child keeps it)
    try:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "losslab", "app", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        if log is not None:
            out.close()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout is not None else Path(log).read_text()
            raise RuntimeError(f"losslab app exited with {proc.returncode}:\n{output[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    stop_app(proc)
    raise RuntimeError(f"losslab app did not answer on {url} within {timeout} s")


def stop_app(proc) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch_chromium(playwright):
    """Headless Debian chromium (``$LOSSLAB_CHROMIUM``, default /usr/bin/chromium)."""
    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"no chromium at {CHROMIUM}: apt-get install -y chromium")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def ice_segment_and_show_frame(page, frame: int, timeout_ms: int = 300_000) -> None:
    """On a loaded ICE page: *Segment* with the selected model (and the editing model loaded with it), show
    ``frame`` (typed in the frame field) and switch *Scribble* on. Raises RuntimeError with the page's message
    if the segmentation fails."""
    import re

    message = page.locator(".ice-message")
    page.locator(".ice-segment").click()
    message.filter(has_text=re.compile(r"Turn on Scribble|Segment: |Loading the editing model: ")).wait_for(
        timeout=timeout_ms
    )
    if "Turn on Scribble" not in message.inner_text():  # "Segment: ..." is the page's one-line error
        raise RuntimeError(message.inner_text())
    field = page.locator(".ice-frame-field input")
    field.fill(str(frame))
    page.wait_for_function(
        f"document.querySelector('.ice-frame-field input').value === '{frame}'", timeout=60_000
    )
    page.wait_for_timeout(500)  # the slice view aligned with the frame
    page.locator(".ice-scribble input").check()
