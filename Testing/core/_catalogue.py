"""Shared harness of the issue-22 catalogues (``test_cli_catalogue_ice.py``, ``_fetal.py``, ``_issue22.py``):
run ``losslab.cli.main`` in process on a case and check what a user must get.

A case is refused when: exit code 2 (or the case's own code), exactly one non-empty line on stderr that starts
with ``losslab <command>`` and holds the case's words, no traceback, and every file under the case's folder
byte-identical with no file added (the sha256 of every file, before and after).

Each case carries the class of defect it was on the issue (``CATEGORIES``): the counts before / after a fix
are those of ``pytest Testing/core/test_cli_catalogue_*.py`` on the old and the new code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: data loss, silent wrong result, traceback, runaway (hours of work), message (one line, but wrong or vague)
CATEGORIES = ("loss", "wrong", "traceback", "runaway", "message")


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run(argv: list, capsys) -> tuple[int | str, str, str]:
    """``main(argv)`` in process: (exit code, stdout, stderr). A traceback reaching the user is a failure."""
    from losslab.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    except KeyboardInterrupt:  # must not escape main(): it would stop the test run
        code = "KeyboardInterrupt escaped main()"
    out, err = capsys.readouterr()
    return code, out, err


def check_refused(argv: list, words: list[str], root: Path, capsys, code: int = 2) -> str:
    """Run a case that must be refused (see the module docstring); returns its one stderr line."""
    before = hashes(root)
    rc, out, err = run(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code, (rc, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"losslab {argv[0]}"), line
    for word in words:
        assert word in line, (word, line)
    after = hashes(root)
    changed = sorted(k for k in before if after.get(k) != before[k])
    added = sorted(set(after) - set(before))
    assert not changed, f"files changed or lost: {changed}"
    assert not added, f"files left behind: {added}"
    return line
