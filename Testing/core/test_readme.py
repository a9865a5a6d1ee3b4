"""The README's first two commands are the ones CI runs, so a green CI means the README is true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]  # the opening section, before the first heading of level 2
    return [ln.strip() for ln in re.findall(r"^    (\S.*)$", head, flags=re.M)]


def test_readme_opens_with_exactly_two_commands():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "torch==2.13.0" in commands[0] and "losslab demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_commands_verbatim():
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in readme_commands():
        assert command in ci_lines, f"{command!r} is not a line of .ci/run"


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def run_blocks(title: str, capsys) -> tuple[dict, str]:
    """Run the Python snippets of a README section as written, in order, in one namespace."""
    blocks = python_blocks(readme_section(title))
    assert blocks, f"no Python snippet in the README's section {title!r}"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"README.md ({title})", "exec"), namespace)  # noqa: S102 - our own README
    return namespace, capsys.readouterr().out


def test_the_metrics_snippet_runs_as_written(capsys):
    """Issue 20: the snippet used names it never defined (pred, ref, scribble, cas, y_init, y_hat)."""
    ns, out = run_blocks("Metrics (`losslab.metrics`)", capsys)
    assert out.splitlines()[0] == "0.893 3.3"  # the values its comment gives
    assert ns["res"].stats["near"]["p95"] < ns["res"].stats["no_editing"]["p95"]  # the edit got closer


def test_the_losses_snippet_runs_and_prints_what_it_says(capsys):
    """Issue 20: the comment said "every name with its options, defaults and types" of a line that printed
    the names only."""
    ns, out = run_blocks("Losses (`losslab.losses`)", capsys)
    lines = out.splitlines()
    assert lines[0].startswith("['compound', 'cross_entropy'")  # the names
    assert "name='alpha'" in lines[1] and "default=" in lines[1] and "annotation=" in lines[1]


def test_the_ice_data_snippet_runs_as_written(capsys):
    """Issue 20: the snippet used y_init without defining it."""
    ns, _ = run_blocks("ICE data (`losslab.ice`)", capsys)
    assert ns["u"].shape == ns["case"].label.shape and ns["u"].max() > 0.5
