"""Install what the LossLab modules need, on the first Apply: torch through SlicerPyTorch, the rest by pip.

Slicer's Python ships numpy, SimpleITK and VTK; LossLab also needs torch and the packages listed in
``Resources/requirements.txt`` (scipy, slicerio, ...). Following Slicer's conventions, nothing is installed at
import or in a widget's ``setup()``: a module's Logic calls :func:`ensure_dependencies` when the user first
presses Apply. torch comes only through the PyTorch extension (SlicerPyTorch's
``PyTorchUtilsLogic().installTorch(askConfirmation=..., torchVersionRequirement=...)``), which picks the build
for the machine's GPU; the rest goes through ``slicer.util.pip_install``.

The installers are arguments, so this module runs (and is tested) without Slicer: the module files pass
``slicer.util.pip_install`` and :func:`install_torch_with_slicer_pytorch`, with ``ask_confirmation=False``
while Slicer's tests run (no prompt then). What counts as installed is an argument too (default: the
distribution is installed at a version the requirement accepts, see :func:`requirement_satisfied`).

Importing this module needs only the standard library: it works before anything is installed (the package
``LossLabLib`` loads its other parts lazily).

Example (what ``LossLabLogic.ensureDependencies`` does)::

    from LossLabLib import dependencies
    dependencies.ensure_dependencies(
        pip_install=slicer.util.pip_install,
        install_torch=dependencies.install_torch_with_slicer_pytorch,
        ask_confirmation=not slicer.app.testingEnabled(),
    )
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REQUIREMENTS_FILE",
    "TORCH_REQUIREMENT",
    "DependencyPlan",
    "ensure_dependencies",
    "install_torch_with_slicer_pytorch",
    "plan_dependencies",
    "read_requirements",
    "requirement_name",
    "requirement_satisfied",
    "torch_available",
]

#: ``Resources/requirements.txt`` next to this package (the same in the source tree and in Slicer's install)
REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
#: the torch versions LossLab works with (passed to SlicerPyTorch)
TORCH_REQUIREMENT = ">=2.2"

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def read_requirements(path: str | os.PathLike = REQUIREMENTS_FILE) -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines left out).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a requirement (no package name), naming the file and line.
    """
    path = Path(path)
    out = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _NAME.match(line):
            raise ValueError(f"{path}:{number}: not a requirement: {raw!r} (expected e.g. 'scipy>=1.10')")
        out.append(line)
    return out


def requirement_name(requirement: str) -> str:
    """The distribution name of a requirement: ``"scipy>=1.10"`` -> ``"scipy"``."""
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r} (expected e.g. 'scipy>=1.10')")
    return match.group(1)


def requirement_satisfied(requirement: str) -> bool:
    """Whether the distribution of ``requirement`` is installed at a version it accepts.

    The version is checked with ``packaging`` when it is importable (Slicer's Python has it); otherwise
    presence is enough. A name without installed metadata counts when it imports (``find_spec``).
    """
    name = requirement_name(requirement)
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return importlib.util.find_spec(name.replace("-", "_")) is not None
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no version check without packaging: an installed distribution counts
        return True
    return Requirement(requirement).specifier.contains(installed, prereleases=True)


def torch_available() -> bool:
    """Whether torch can be imported (without importing it: that takes seconds)."""
    return importlib.util.find_spec("torch") is not None


@dataclass
class DependencyPlan:
    """What is missing: ``torch`` (to install through SlicerPyTorch) and the pip ``packages``."""

    torch: bool = False
    packages: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.torch and not self.packages


def plan_dependencies(
    requirements: Sequence[str] | None = None,
    *,
    is_satisfied: Callable[[str], bool] = requirement_satisfied,
    has_torch: Callable[[], bool] = torch_available,
) -> DependencyPlan:
    """What :func:`ensure_dependencies` would install (``requirements`` default: :func:`read_requirements`)."""
    wanted = read_requirements() if requirements is None else list(requirements)
    return DependencyPlan(torch=not has_torch(), packages=[r for r in wanted if not is_satisfied(r)])


def ensure_dependencies(
    *,
    pip_install: Callable[[list[str]], object],
    install_torch: Callable[[str, bool], bool] | None,
    requirements: Sequence[str] | None = None,
    torch_requirement: str = TORCH_REQUIREMENT,
    ask_confirmation: bool = True,
    is_satisfied: Callable[[str], bool] = requirement_satisfied,
    has_torch: Callable[[], bool] = torch_available,
) -> DependencyPlan:
    """Install what is missing (torch first, then the pip packages in one call) and check it worked.

    Args:
        pip_install: installs a list of requirements (``slicer.util.pip_install`` in Slicer).
        install_torch: ``install_torch(torch_requirement, ask_confirmation) -> bool`` (False: the user
            declined or it failed); :func:`install_torch_with_slicer_pytorch` in Slicer. ``None``: torch
            cannot be installed here, so a missing torch is an error.
        requirements: the pip requirements (default: ``Resources/requirements.txt``).
        torch_requirement: the torch versions accepted (given to ``install_torch``).
        ask_confirmation: let the torch installer ask the user (False while tests run).
        is_satisfied, has_torch: what counts as installed (defaults: :func:`requirement_satisfied`,
            :func:`torch_available`).

    Returns:
        The :class:`DependencyPlan` that was carried out (empty when everything was there).

    Raises:
        RuntimeError: torch is missing and cannot be installed (no installer, or it declined or failed), or a
            package is still missing after the install; the message says what to do.
    """
    plan = plan_dependencies(requirements, is_satisfied=is_satisfied, has_torch=has_torch)
    if plan.torch:
        if install_torch is None:
            raise RuntimeError(
                "LossLab needs PyTorch: install the PyTorch extension from the Extensions Manager, then "
                f"torch{torch_requirement} from its PyTorch Utils module"
            )
        if not install_torch(torch_requirement, ask_confirmation):
            raise RuntimeError(
                f"LossLab needs PyTorch (torch{torch_requirement}), which was not installed: install it from "
                "the PyTorch Utils module (PyTorch extension), then press Apply again"
            )
        importlib.invalidate_caches()
        if not has_torch():
            raise RuntimeError(
                "torch is still not importable after its installation: restart Slicer and press Apply again"
            )
    if plan.packages:
        pip_install(list(plan.packages))
        importlib.invalidate_caches()
        still = [r for r in plan.packages if not is_satisfied(r)]
        if still:
            raise RuntimeError(
                f"these packages are still missing after pip install: {still}; install them from Slicer's "
                "Python console with slicer.util.pip_install, or restart Slicer if they were just installed"
            )
    return plan


def install_torch_with_slicer_pytorch(
    requirement: str = TORCH_REQUIREMENT, ask_confirmation: bool = True
) -> bool:
    """Install torch through the PyTorch extension (SlicerPyTorch), the only route LossLab uses for torch.

    ``PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask_confirmation,
    torchVersionRequirement=requirement)``: the extension picks the build for the machine (CUDA or CPU) and
    asks the user first when ``ask_confirmation`` is true (its dialog, not ours). Returns whether torch was
    installed.

    Raises:
        RuntimeError: the PyTorch extension is not installed.
    """
    try:
        import PyTorchUtils
    except ImportError:
        raise RuntimeError(
            "LossLab needs the PyTorch extension (SlicerPyTorch): install it from the Extensions Manager, "
            "restart Slicer and press Apply again"
        ) from None
    installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=bool(ask_confirmation), torchVersionRequirement=requirement
    )
    return installed is not None and installed is not False
