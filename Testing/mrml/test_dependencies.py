"""LossLabLib.dependencies without Slicer: what it installs (with fake installers) given what is missing,
in which order, with or without a prompt; clear errors; the real requirements file and checks; the
SlicerPyTorch adapter against a fake PyTorchUtils; and an import that needs nothing installed."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from LossLabLib import dependencies
from LossLabLib.dependencies import (
    DependencyPlan,
    ensure_dependencies,
    install_torch_with_slicer_pytorch,
    plan_dependencies,
    read_requirements,
    requirement_name,
    requirement_satisfied,
)

#: the requirements of the fake environments below
REQUIREMENTS = ["scipy>=1.10", "slicerio>=1.0", "tqdm>=4.60", "matplotlib>=3.6"]
#: LossLab/Resources/requirements.txt
SHIPPED_REQUIREMENTS = [*REQUIREMENTS, "edt>=3.0", "monai>=1.3"]


class FakeEnvironment:
    """A Python environment: which distributions are installed, whether torch is; installers that record
    their calls (in one shared log, to check the order) and install for real in this fake world."""

    def __init__(self, installed=(), torch=True, pip_works=True, torch_answer=True):
        self.installed = set(installed)
        self.torch = torch
        self.pip_works, self.torch_answer = pip_works, torch_answer
        self.log = []

    def is_satisfied(self, requirement):
        return requirement_name(requirement) in self.installed

    def has_torch(self):
        return self.torch

    def pip_install(self, requirements):
        self.log.append(("pip", list(requirements)))
        if self.pip_works:
            self.installed |= {requirement_name(r) for r in requirements}

    def install_torch(self, requirement, ask_confirmation):
        self.log.append(("torch", requirement, ask_confirmation))
        if self.torch_answer:
            self.torch = True
        return self.torch_answer

    def ensure(self, **kwargs):
        return ensure_dependencies(
            pip_install=self.pip_install,
            install_torch=kwargs.pop("install_torch", self.install_torch),
            requirements=REQUIREMENTS,
            is_satisfied=self.is_satisfied,
            has_torch=self.has_torch,
            **kwargs,
        )


def test_nothing_is_installed_when_everything_is_there():
    env = FakeEnvironment(installed={"scipy", "slicerio", "tqdm", "matplotlib"})
    plan = env.ensure()
    assert plan == DependencyPlan(torch=False, packages=[]) and plan.empty
    assert env.log == []


def test_missing_packages_go_to_pip_in_one_call_in_file_order():
    env = FakeEnvironment(installed={"slicerio", "matplotlib"})
    assert plan_dependencies(REQUIREMENTS, is_satisfied=env.is_satisfied, has_torch=env.has_torch) == (
        DependencyPlan(torch=False, packages=["scipy>=1.10", "tqdm>=4.60"])
    )
    plan = env.ensure()
    assert plan.packages == ["scipy>=1.10", "tqdm>=4.60"] and not plan.torch
    assert env.log == [("pip", ["scipy>=1.10", "tqdm>=4.60"])]
    assert env.ensure().empty and len(env.log) == 1  # the second Apply installs nothing


@pytest.mark.parametrize("ask", [True, False])
def test_torch_first_through_its_installer_then_pip(ask):
    env = FakeEnvironment(installed={"scipy", "slicerio", "tqdm"}, torch=False)
    plan = env.ensure(ask_confirmation=ask, torch_requirement=">=2.4")
    assert plan == DependencyPlan(torch=True, packages=["matplotlib>=3.6"])
    assert env.log == [("torch", ">=2.4", ask), ("pip", ["matplotlib>=3.6"])]  # never torch by pip


def test_torch_missing_without_installer_or_declined_is_a_clear_error():
    env = FakeEnvironment(torch=False)
    with pytest.raises(RuntimeError, match="install the PyTorch extension from the Extensions Manager"):
        env.ensure(install_torch=None)
    assert env.log == []
    env = FakeEnvironment(torch=False, torch_answer=False)
    with pytest.raises(RuntimeError, match=r"torch>=2.2\), which was not installed"):
        env.ensure()
    assert env.log == [("torch", ">=2.2", True)]  # and no pip install after a declined torch


def test_a_package_still_missing_after_pip_is_an_error():
    env = FakeEnvironment(installed={"scipy", "tqdm", "matplotlib"}, pip_works=False)
    with pytest.raises(RuntimeError, match=r"still missing after pip install: \['slicerio>=1.0'\]"):
        env.ensure()


def test_the_shipped_requirements_and_the_real_checks(tmp_path):
    assert read_requirements() == SHIPPED_REQUIREMENTS  # Resources/requirements.txt, comments left out
    assert dependencies.REQUIREMENTS_FILE.parent.name == "Resources"
    text = tmp_path / "requirements.txt"
    text.write_text("# a comment\n\nnumpy>=1.0  # inline\n>=2\n")
    with pytest.raises(ValueError, match=r"requirements.txt:4: not a requirement: '>=2'"):
        read_requirements(text)
    text.write_text("numpy>=1.0  # inline\nscikit-image[data]>=0.1; python_version>'3'\n")
    assert [requirement_name(r) for r in read_requirements(text)] == ["numpy", "scikit-image"]
    assert requirement_satisfied("pytest>=1.0") and requirement_satisfied("numpy")
    assert not requirement_satisfied("pytest>=9999")  # installed, but too old: pip upgrades it
    assert not requirement_satisfied("losslab-no-such-distribution-xyz")


def test_install_torch_with_slicer_pytorch_calls_the_extension(monkeypatch):
    calls = []

    class FakeLogic:
        answer = types.ModuleType("torch")

        def installTorch(self, askConfirmation=False, torchVersionRequirement=None):  # noqa: N802, N803
            calls.append((askConfirmation, torchVersionRequirement))
            return self.answer

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=FakeLogic))
    assert install_torch_with_slicer_pytorch(">=2.2", False) is True
    assert calls == [(False, ">=2.2")]
    FakeLogic.answer = None  # SlicerPyTorch returns None when the user declines
    assert install_torch_with_slicer_pytorch(">=2.5", True) is False
    assert calls[-1] == (True, ">=2.5")
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the extension is not installed
    with pytest.raises(RuntimeError, match="needs the PyTorch extension"):
        install_torch_with_slicer_pytorch()


def test_importing_the_installer_needs_nothing_to_be_installed():
    """First Apply in a fresh Slicer: scipy, torch, even the core are not there yet; LossLabLib's other parts
    (which import them) load only when used."""
    code = (
        "import sys, LossLabLib.dependencies as d; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('scipy', 'torch', 'numpy', 'losslab', 'slicer', 'vtk', 'SimpleITK')); "
        "print(heavy, sorted(m for m in sys.modules if m.startswith('LossLabLib')))"
    )
    folder = str(dependencies.REQUIREMENTS_FILE.parents[1])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": folder}
    ).stdout
    assert out.strip() == "[] ['LossLabLib', 'LossLabLib.dependencies']"


def test_lazy_package_exports_resolve():
    import LossLabLib

    assert sorted(LossLabLib.__all__) == sorted(LossLabLib._EXPORTS)
    for name in LossLabLib.__all__:
        assert getattr(LossLabLib, name) is not None
    assert LossLabLib.training.TrainingJob is LossLabLib.TrainingJob  # submodules by attribute too
    assert set(LossLabLib._SUBMODULES) == {
        p.stem for p in dependencies.REQUIREMENTS_FILE.parents[1].joinpath("LossLabLib").glob("*.py")
    } - {"__init__"}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        LossLabLib.Nope  # noqa: B018
