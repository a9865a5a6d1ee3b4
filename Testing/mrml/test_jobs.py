"""LossLabLib.jobs.SubprocessJob with tiny Python scripts as the child: events streamed while the child runs,
progress, a clean stop through the stop file or SIGTERM, a kill when the child ignores both, and a crashing
child that reports its last stderr line."""

from __future__ import annotations

import sys
import textwrap

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from LossLabLib.jobs import SubprocessJob, python_command, wait_for  # noqa: E402

# The child: emits events, then (when asked) waits for the stop file or a SIGTERM and reports how it stopped.
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, time
    mode, stop_file = sys.argv[1], sys.argv[2]
    def emit(**event):
        print(json.dumps(event), flush=True)
    stopped = []
    signal.signal(signal.SIGTERM, lambda *a: stopped.append("signal"))
    for step in range(1, 5):
        emit(event="progress", fraction=step / 8, message=f"step {step}/8")
    print("plain text on stdout", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    if mode == "crash":
        1 / 0
    if mode == "error":
        emit(event="error", type="ValueError", message="bad input: x")
        sys.exit(2)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        emit(event="ready")
        while True:
            time.sleep(0.05)
    if mode == "wait":
        emit(event="ready")
        while not stopped and not os.path.exists(stop_file):
            time.sleep(0.02)
        emit(event="result", stopped=stopped[0] if stopped else "file")
        sys.exit(0)
    for step in range(5, 9):
        emit(event="progress", fraction=step / 8, message=f"step {step}/8")
    emit(event="result", value=42)
    """
)


def _ready(job: SubprocessJob) -> bool:
    return any(e["event"] == "ready" for e in job.events)


@pytest.fixture
def child(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    jobs = []

    def make(mode: str, stop_file: bool = True) -> SubprocessJob:
        stop = tmp_path / "STOP"
        job = SubprocessJob(
            [sys.executable, str(script), mode, str(stop)],
            cwd=tmp_path,
            stop_path=stop if stop_file else None,
        )
        jobs.append(job)
        return job

    yield make
    for job in jobs:  # a failed test must not leave a child behind
        job.kill()
        if job.started:
            job.wait(10)


def test_events_progress_log_and_result(child):
    job = child("run")
    assert not job.started and job.status() == "not started" and job.returncode is None
    job.start()
    assert job.wait(60) == 0
    assert job.finished and job.error is None and job.result == {"event": "result", "value": 42}
    progress = [e for e in job.events if e["event"] == "progress"]
    assert [e["fraction"] for e in progress] == [k / 8 for k in range(1, 9)]
    assert job.progress == 1.0
    logs = {(e["stream"], e["message"]) for e in job.events if e["event"] == "log"}
    assert logs == {("stdout", "plain text on stdout"), ("stderr", "a warning on stderr")}
    assert job.log[:4] == [f"step {k}/8" for k in range(1, 5)] and "a warning on stderr" in job.log
    assert job.last_stderr_line == "a warning on stderr"
    assert job.status() == "done" and not job.stopped
    with pytest.raises(RuntimeError, match="already started"):
        job.start()


def test_events_arrive_while_the_child_runs_and_the_stop_file_stops_it(child, tmp_path):
    job = child("wait").start()
    # streamed: the events are there while the child is still waiting for its stop file
    assert wait_for(job, _ready, timeout=60), job.log
    assert job.is_running and not job.finished
    assert job.progress == pytest.approx(0.5)
    assert job.status() == job.log[-1]  # the last log line while it runs
    (tmp_path / "STOP").touch()  # what request_stop does first: the child stops by itself, exit 0
    assert job.wait(30) == 0
    assert job.result["stopped"] == "file" and job.error is None and job.finished


def test_request_stop_signals_a_child_without_stop_file(child, tmp_path):
    job = child("wait", stop_file=False).start()
    assert wait_for(job, _ready, timeout=60)
    job.request_stop()
    assert job.status() == "stopping..."
    assert job.wait(30) == 0
    assert job.result["stopped"] == "signal" and job.stopped and job.status() == "stopped"
    assert not (tmp_path / "STOP").exists()


def test_a_stale_stop_file_is_removed_and_stop_kills_a_stubborn_child(child, tmp_path):
    (tmp_path / "STOP").touch()  # left by an earlier run: it must not stop this one
    job = child("stubborn").start()
    assert not (tmp_path / "STOP").exists()
    assert wait_for(job, _ready, timeout=60)
    code = job.stop(timeout=1.0)  # it ignores the stop file and SIGTERM: killed after the timeout
    assert code == -9 and not job.is_running and job.finished
    assert (tmp_path / "STOP").exists()
    assert job.stopped and job.error is None  # killed on request is not a failure


def test_a_crashing_child_reports_its_last_stderr_line(child):
    job = child("crash").start()
    assert wait_for(job, lambda j: j.finished, timeout=60)
    assert job.returncode == 1
    assert job.error == {
        "event": "error",
        "type": "exit",
        "code": 1,
        "message": "ZeroDivisionError: division by zero",
    }
    assert job.events[-1] is job.error and job.log[-1] == "error (exit): ZeroDivisionError: division by zero"
    assert job.status() == "failed: ZeroDivisionError: division by zero"
    assert job.progress == pytest.approx(0.5) and not job.stopped


def test_the_child_own_error_event_is_kept(child):
    job = child("error").start()
    assert job.wait(60) == 2
    assert job.error == {"event": "error", "type": "ValueError", "message": "bad input: x"}
    assert [e for e in job.events if e["event"] == "error"] == [job.error]  # no second, generic one


def test_a_missing_executable_and_python_command(tmp_path):
    with pytest.raises(FileNotFoundError):
        SubprocessJob([str(tmp_path / "no-python"), "-c", "pass"]).start()
    with pytest.raises(ValueError, match="no command"):
        SubprocessJob().start()
    assert python_command("losslab", "metrics", tmp_path) == [
        sys.executable,
        "-m",
        "losslab",
        "metrics",
        str(tmp_path),
    ]
    # the child gets the environment given and finds the core package (PYTHONPATH) from anywhere
    code = (
        "import json, os, losslab; "
        "print(json.dumps({'event': 'env', 'value': os.environ['LOSSLAB_JOB_TEST'], 'core': losslab.__file__}))"
    )
    job = SubprocessJob([sys.executable, "-c", code], cwd=tmp_path, env={"LOSSLAB_JOB_TEST": "x"}).start()
    assert job.wait(60) == 0, job.log
    import losslab

    assert job.events == [{"event": "env", "value": "x", "core": losslab.__file__}]
