"""Real MRML scenes from the ``slicer-core`` wheel, for testing the Qt-free ``*Lib`` logic headless.

The recipe (shared/CONVENTIONS.md, "Testing MRML logic headless"): a ``vtkMRMLScene``; a
``vtkSlicerApplicationLogic`` on it; the colour logic (which adds the default colour nodes); the Volumes,
Segmentations, Markups and Tables logics, each given the scene and the application logic and registered
with ``app.SetModuleLogic(name, logic)`` under Slicer's module name ("Volumes"...: the Volumes logic finds
the colour logic as "Colors"). The Segmentations logic gets the scene before any segmentation
node is created: that registers the representation converters.

Fixtures:

- ``mrml`` (function scope, about 15 ms): a :class:`MRMLContext` with a fresh scene and its logics. It also
  sets ``slicer.mrmlScene``, ``slicer.app`` (a stand-in exposing ``applicationLogic()``) and
  ``slicer.modules.<name>.logic()`` for the duration of the test, so the ``slicer.util`` helpers that read
  them (``arrayFromSegmentBinaryLabelmap``, ``updateSegmentBinaryLabelmapFromArray``, ``saveNode``...) work.
  The Lib code under test never reads those globals: it gets the scene as an argument.
- ``scene``: the fresh scene of ``mrml``.

Every test in this folder is skipped, with the reason, when ``import slicer`` fails (slicer-core missing).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import pytest

try:
    import slicer
    import slicer.util  # noqa: F401  (imported here so that the helpers are ready in every test)
    import vtk

    _SLICER_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    slicer = None
    _SLICER_ERROR = exc

_SKIP_REASON = (
    "slicer-core is not installed (import slicer failed: {}); the MRML tests need it: "
    "pip install slicer-core (never the unrelated PyPI package 'slicer')"
)


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.mrml)
            if _SLICER_ERROR is not None:
                item.add_marker(pytest.mark.skip(reason=_SKIP_REASON.format(_SLICER_ERROR)))


class _AppStandIn:
    """The little of ``slicer.app`` that slicer.util's data helpers use, for scripts run headless."""

    def __init__(self, app_logic):
        self._app_logic = app_logic

    def applicationLogic(self):  # noqa: N802 (Slicer's name)
        return self._app_logic


@dataclass
class MRMLContext:
    """A real MRML scene and the module logics registered on its application logic."""

    scene: object
    app_logic: object
    logics: dict = field(default_factory=dict)

    @property
    def segmentations_logic(self):
        return self.logics["segmentations"]

    @property
    def volumes_logic(self):
        return self.logics["volumes"]

    @property
    def markups_logic(self):
        return self.logics["markups"]


def build_mrml_context() -> MRMLContext:
    """A fresh scene, its application logic and the Colors, Volumes, Segmentations, Markups, Tables logics."""
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    # Headless there is no Slicer home folder, so the colour logic reports (as an error) that it cannot find
    # the colour files shipped with Slicer; the built-in colour tables are still created. Keep the log clean.
    vtk.vtkObject.GlobalWarningDisplayOff()
    try:
        colors = slicer.vtkSlicerColorLogic()
        colors.SetMRMLApplicationLogic(app)
        colors.SetMRMLScene(scene)  # adds the default colour nodes
    finally:
        vtk.vtkObject.GlobalWarningDisplayOn()
    app.SetColorLogic(colors)
    # Registered under Slicer's module names (other logics look them up so: Volumes asks for "Colors").
    app.SetModuleLogic("Colors", colors)
    logics = {"colors": colors}
    for name, cls in (
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),  # first: registers the converters
        ("Volumes", slicer.vtkSlicerVolumesLogic),
        ("Markups", slicer.vtkSlicerMarkupsLogic),
        ("Tables", slicer.vtkSlicerTablesLogic),
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        logics[name.lower()] = logic
    return MRMLContext(scene=scene, app_logic=app, logics=logics)


@pytest.fixture
def mrml():
    """A fresh real-MRML context; ``slicer.mrmlScene`` / ``slicer.app`` / ``slicer.modules`` point at it."""
    ctx = build_mrml_context()
    saved = {name: getattr(slicer, name, None) for name in ("mrmlScene", "app", "modules")}
    slicer.mrmlScene = ctx.scene
    slicer.app = _AppStandIn(ctx.app_logic)
    slicer.modules = types.SimpleNamespace(
        **{name: types.SimpleNamespace(logic=(lambda lg=lg: lg)) for name, lg in ctx.logics.items()}
    )
    try:
        yield ctx
    finally:
        for name, value in saved.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)
        ctx.scene.Clear(1)


@pytest.fixture
def scene(mrml):
    """The fresh scene of :func:`mrml`."""
    return mrml.scene
