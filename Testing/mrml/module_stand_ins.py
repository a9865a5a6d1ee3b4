"""Stand-ins for desktop Slicer's Qt side, to load and drive a module file (``LossLab/<Module>.py``) headless.

slicer-core has MRML, VTK and ``slicer.util`` but no Qt: ``qt``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper`` and ``slicer.i18n`` are replaced in ``sys.modules`` for the import only
(:func:`load_module`). The Widget then runs for real against:

- :class:`FakeUI`: the widgets named in the module's ``.ui`` file (and only those), each a
  :class:`FakeWidget` that records the signals connected to it and every method called on it;
- :class:`FakeParameterNode`: the parameter node's fields, with the observer and ``connectGui`` API;
- :class:`Recorder`: ``slicer.util``'s GUI helpers (``loadUI``, ``tryWithErrorDisplay``,
  ``setSliceViewerLayers``, ``errorDisplay``...) and ``slicer.app`` / ``slicer.modules.plots``, recorded.

A Widget gets its Logic from its ``logicFactory`` class attribute: tests inject a strict fake there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "LossLab"


class _Base:
    def __init__(self, *args, **kwargs):
        pass


class _WidgetBase:
    """ScriptedLoadableModuleWidget: a parent with ``isEntered``, a layout, ``setup`` and ``resourcePath``."""

    #: the loaded module folder's Resources (set by :func:`load_module`)
    resource_dir = MODULE_DIR / "Resources"

    def __init__(self, parent=None):
        self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=True)
        self.layout = FakeWidget("layout")

    def setup(self):
        pass

    def resourcePath(self, relative):  # noqa: N802 (Slicer's name)
        return str(self.resource_dir / relative)


class FakeTimer:
    """qt.QTimer: records its interval, connections and whether it runs."""

    def __init__(self):
        self.active = False
        self.interval = None
        self.slots = {}

    def setInterval(self, ms):  # noqa: N802
        self.interval = ms

    def setSingleShot(self, single):  # noqa: N802
        self.single_shot = single

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):  # noqa: N802
        return self.active


def stand_in_modules() -> dict[str, types.ModuleType]:
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        return mod

    return {
        "qt": module("qt", QTimer=FakeTimer),
        "slicer.i18n": module("slicer.i18n", tr=lambda text: text),
        "slicer.parameterNodeWrapper": module(
            "slicer.parameterNodeWrapper",
            parameterNodeWrapper=lambda cls: cls,
            Choice=lambda *a, **k: None,
            WithinRange=lambda *a, **k: None,
        ),
        "slicer.ScriptedLoadableModule": module(
            "slicer.ScriptedLoadableModule",
            ScriptedLoadableModule=_Base,
            ScriptedLoadableModuleLogic=_Base,
            ScriptedLoadableModuleTest=_Base,
            ScriptedLoadableModuleWidget=_WidgetBase,
        ),
    }


def load_module(monkeypatch, name: str, folder: Path = MODULE_DIR):
    """Import ``<folder>/<name>.py`` (default ``LossLab/``) with the stand-ins in ``sys.modules`` (restored
    after the test); its Widget's ``resourcePath`` resolves in ``folder/Resources``."""
    for mod_name, mod in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, mod_name, mod)
    monkeypatch.setattr(_WidgetBase, "resource_dir", Path(folder) / "Resources")
    spec = importlib.util.spec_from_file_location(f"{name}ModuleUnderTest", Path(folder) / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeWidget:
    """A Qt widget: ``connect(signal, slot)`` is kept in :attr:`slots`; any other method call is recorded in
    :attr:`calls` as ``(name, args, kwargs)``; properties (``enabled``, ``text``, ``value``...) are plain
    attributes."""

    def __init__(self, name: str):
        self.__dict__.update(name=name, slots={}, calls=[])

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def emit(self, signal, *args):
        """What Qt does when the user acts: call the slot connected to ``signal``."""
        assert signal in self.slots, (
            f"{self.name}: nothing connected to {signal}; connected: {list(self.slots)}"
        )
        return self.slots[signal](*args)

    def called(self, method: str) -> list[tuple]:
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]

    def __getattr__(self, method):
        if method.startswith("__"):
            raise AttributeError(method)

        def record(*args, **kwargs):
            self.calls.append((method, args, kwargs))

        return record


class FakeUI:
    """``slicer.util.childWidgetVariables``: one :class:`FakeWidget` per widget of the .ui file, no others."""

    def __init__(self, ui_file: Path):
        root = ET.parse(ui_file).getroot()
        names = {w.get("name") for w in root.iter("widget")}
        self.__dict__["_widgets"] = {n: FakeWidget(n) for n in names if n}
        self.__dict__["_file"] = ui_file.name

    def __getattr__(self, name):
        try:
            return self._widgets[name]
        except KeyError:
            raise AttributeError(f"{self._file} has no widget {name!r}") from None


class FakeParameterNode:
    """A parameter node (``@parameterNodeWrapper`` object): the fields, observers, ``connectGui``."""

    def __init__(self, parameter_class, **values):
        fields = set(parameter_class.__annotations__)
        unknown = set(values) - fields
        assert not unknown, f"not parameter node fields: {unknown}"
        for f in fields:
            setattr(self, f, values.get(f, getattr(parameter_class, f, None)))
        self._observers = {}
        self.guiConnections = []

    def AddObserver(self, event, callback, priority=0.0):  # noqa: N802 (VTK's name)
        tag = len(self._observers) + 1
        self._observers[tag] = callback
        return tag

    def RemoveObserver(self, tag):  # noqa: N802
        self._observers.pop(tag, None)

    def Modified(self):  # noqa: N802
        for callback in list(self._observers.values()):
            callback(self, "ModifiedEvent")

    def connectGui(self, ui):  # noqa: N802
        self.guiConnections.append(ui)
        return len(self.guiConnections)

    def disconnectGui(self, tag):  # noqa: N802
        self.guiConnections[tag - 1] = None


class Recorder:
    """Records calls by name: ``recorder.calls == [("errorDisplay", ("text",), {})...]``."""

    def __init__(self):
        self.calls = []

    def record(self, name, returns=None):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return returns(*args, **kwargs) if callable(returns) else returns

        return call

    def called(self, name):
        return [(args, kwargs) for n, args, kwargs in self.calls if n == name]


def patch_slicer_gui(monkeypatch, ui_file: Path) -> Recorder:
    """Replace the GUI helpers of ``slicer.util``, ``slicer.app`` and ``slicer.modules.plots`` by recorders.

    ``tryWithErrorDisplay`` re-raises (a test must see a failing handler) after recording the message.
    """
    import slicer
    import slicer.util

    rec = Recorder()
    root = FakeWidget("uiWidget")

    @contextlib.contextmanager
    def try_with_error_display(message="", waitCursor=False):  # noqa: N803 (Slicer's name)
        rec.calls.append(("tryWithErrorDisplay", (message,), {"waitCursor": waitCursor}))
        yield

    monkeypatch.setattr(slicer.util, "loadUI", rec.record("loadUI", returns=lambda path: root))
    monkeypatch.setattr(
        slicer.util, "childWidgetVariables", rec.record("childWidgetVariables", lambda w: FakeUI(ui_file))
    )
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", rec.record("setSliceViewerLayers"))
    monkeypatch.setattr(slicer.util, "errorDisplay", rec.record("errorDisplay"))
    monkeypatch.setattr(slicer.util, "pip_install", rec.record("pip_install"))
    app = types.SimpleNamespace(
        processEvents=rec.record("processEvents"),
        testingEnabled=lambda: True,
        temporaryPath="/nonexistent-temporary-path",
    )
    monkeypatch.setattr(slicer, "app", app, raising=False)
    plots_logic = types.SimpleNamespace(ShowChartInLayout=rec.record("ShowChartInLayout"))
    modules = getattr(slicer, "modules", None) or types.SimpleNamespace()
    monkeypatch.setattr(modules, "plots", types.SimpleNamespace(logic=lambda: plots_logic), raising=False)
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    rec.root = root
    return rec


class StrictFakeLogic:
    """Base of the fake Logics: only the methods a subclass defines exist; each call is recorded."""

    def __init__(self):
        self.calls = []

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))

    def names(self):
        return [c[0] for c in self.calls]
