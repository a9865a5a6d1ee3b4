"""``losslab app``'s command line (runs in every environment; the server itself is tested in test_browser.py).

The command is the web app's (``Web/LossLabWeb/cli.py``), registered through the entry point group
``losslab.commands``; the core only looks the group up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from losslab.cli import COMMAND_MODULES, main

ROOT = Path(__file__).resolve().parents[2]


def test_the_core_imports_nothing_of_the_web_app():
    """DESIGN.md: the core never imports Web. No core file names the app's package or the Web folder, and
    importing the core's CLI (``losslab app`` included) loads neither the app nor its stack."""
    offenders = []
    for path in sorted((ROOT / "LossLab" / "losslab").rglob("*.py")):
        text = path.read_text()
        if re.search(r"\bLossLabWeb\b|[\"']Web[\"']", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    code = (
        "import sys, losslab.cli, losslab.cli.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('LossLabWeb', 'trame', 'trame_slicer', 'slicer', 'vtkmodules')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "LossLab")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "losslab.cli.app" in COMMAND_MODULES


def test_the_app_is_a_plugin_of_the_command_line():
    from losslab.cli.app import plugins

    assert [(e.name, e.value) for e in plugins()] == [("app", "LossLabWeb.cli:register_commands")]
    code = (
        "import sys; from losslab.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trame', 'trame_slicer', 'slicer')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "LossLab")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # the parser (and --help) needs no web stack


def test_without_the_plugin_app_is_one_line_with_the_install_hint(monkeypatch, capsys):
    from losslab.cli import app

    monkeypatch.setattr(app, "plugins", lambda: [])
    assert main(["app", "--port", "8999"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[web]"' in err and "not installed" in err, err


def test_without_the_web_extra_it_is_one_line_with_the_install_hint(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trame_slicer", None)  # as if trame-slicer were not installed
    assert main(["app", "--port", "8999"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[web]"' in err and "is missing" in err, err


class FakeServer:
    """Stands in for ``LossLabWeb.server``: records what ``serve`` was asked."""

    def __init__(self):
        self.calls = []

    def serve(self, page, **kwargs):
        self.calls.append((page, kwargs))


@pytest.fixture
def fake_server(monkeypatch):
    from LossLabWeb import cli

    server = FakeServer()
    monkeypatch.setattr(cli, "_import_server", lambda: server)
    monkeypatch.setattr(cli, "set_threads", lambda n: n)
    return server


@pytest.mark.parametrize(
    ("argv", "page", "sample"),
    [
        (["--sample", "ice"], "ice", True),  # issue 20 defect 1: served the fetal page
        (["--sample", "fetal"], "fetal", True),
        (["--page", "ice", "--sample", "ice"], "ice", True),
        (["--page", "ice"], "ice", False),
        ([], "fetal", False),
    ],
)
def test_the_sample_chooses_the_page(fake_server, argv, page, sample):
    assert main(["app", *argv]) == 0
    assert [(p, kw["sample"]) for p, kw in fake_server.calls] == [(page, sample)]


def test_threads_are_set_deliberately(fake_server, monkeypatch):
    from LossLabWeb import cli

    monkeypatch.setattr(cli, "default_threads", lambda: 3)
    assert main(["app"]) == 0 and fake_server.calls[-1][1]["threads"] == 3  # the default, not torch's
    assert main(["app", "--threads", "1"]) == 0 and fake_server.calls[-1][1]["threads"] == 1


def test_the_default_thread_count_leaves_cores_free(monkeypatch):
    from LossLabWeb import cli

    for cores, expected in ((1, 1), (2, 1), (4, 2), (16, 8), (64, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert cli.default_threads() == expected


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["app", "--port", "0"], "--port must be in 1..65535, got 0"),
        (["app", "--threads", "0"], "--threads must be at least 1, got 0"),
        (["app", "--case", "/no/such/mri.nii.gz"], "no such file"),
        (["app", "--mask", "m.nii.gz"], "--mask needs --case"),
        (["app", "--case", "/no/such/case", "--page", "ice"], "no such folder"),
        (
            ["app", "--case", str(ROOT / "Web"), "--page", "ice"],
            "not an ICE case folder, image.nii.gz is missing",
        ),
        (
            ["app", "--case", str(ROOT), "--page", "ice", "--mask", "m.nii.gz"],
            "--mask needs --case on the fetal",
        ),
        (["app", "--page", "ice", "--sample", "fetal"], "--page ice and --sample fetal disagree"),
        (["app", "--page", "fetal", "--sample", "ice"], "--page fetal and --sample ice disagree"),
        (["app", "--sample", "ice", "--case", str(ROOT)], "--case and --sample both name a case"),
        (["app", "--sample", "heart"], "invalid choice"),
        (["app", "--page", "heart"], "invalid choice"),
    ],
)
def test_bad_options_are_one_line_errors(argv, expect, capsys):
    with pytest.raises(SystemExit) if "heart" in argv else _nothing():
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err


def test_a_closed_tab_leaves_one_line_not_a_traceback(caplog):
    """Issue 20 defect 8: closing a tab left ClientConnectionResetError tracebacks in the server's log
    (wslink and aiohttp writing to the closed socket; a task's exception, and a request handler's)."""
    import asyncio
    import logging

    from LossLabWeb import server

    loop = asyncio.new_event_loop()
    try:
        reported = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        server.quiet_disconnects(loop)
        handler = loop.get_exception_handler()
        gone = ConnectionResetError("Cannot write to closing transport")
        handler(loop, {"message": "Task exception was never retrieved", "exception": gone})
        assert reported == []
        handler(loop, {"message": "Task exception was never retrieved", "exception": ValueError("a bug")})
        assert len(reported) == 1  # anything else is still reported
    finally:
        loop.close()
    with caplog.at_level(logging.INFO):
        try:
            raise ConnectionResetError("Cannot write to closing transport")
        except ConnectionResetError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
        logging.getLogger("wslink").error(
            "aiohttp.client_exceptions.ClientConnectionResetError: Cannot write to closing transport"
        )
        logging.getLogger("aiohttp.server").error("a real problem")
    messages = [r.getMessage() for r in caplog.records]
    assert "Error handling request" not in messages and "a real problem" in messages
    assert not any("ClientConnectionResetError" in m for m in messages)
    assert messages.count("a browser closed its connection while the server was writing to it") == 2
