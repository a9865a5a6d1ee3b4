"""Create the web tests' environment: ``python Testing/web/web_venv.py [.venv-web]`` (run with ``.venv``'s Python).

Why a second environment: trame-slicer 2.0.0's ``standalone`` extra needs slicer-core 5.11.x and vtk 9.6.0
(its compiled ``slicer-layer-dm`` is built against slicer-core 5.11), while the ``[test]`` environment runs the
Lib tests on slicer-core 5.13 / vtk 9.6.2. ``.venv-web`` is a thin layer over ``.venv``: a ``.pth`` file adds
``.venv``'s site-packages (torch, numpy, MONAI... are not installed twice) *after* its own, so its own
slicer-core / vtk / trame win. It gets the ``[web]`` extra (editable) and Playwright (the browser tests drive
Debian's chromium with it; Playwright's own browser download is never used).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAYWRIGHT = "playwright==1.65.2"


def site_packages(env: Path) -> Path:
    out = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else ROOT / ".venv-web").resolve()
    base = Path(sysconfig.get_path("purelib"))
    if sys.prefix == sys.base_prefix:
        print(f"web_venv.py: run it with the project's .venv Python, not {sys.executable}", file=sys.stderr)
        return 2
    venv.create(target, with_pip=True, clear=target.exists())
    pth = site_packages(target) / "losslab_base_venv.pth"
    pth.write_text(f"import site; site.addsitedir({str(base)!r})\n")
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-e", f"{ROOT}[web]", PLAYWRIGHT], check=True)
    print(f"web_venv.py: {target} ready (over {base})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
