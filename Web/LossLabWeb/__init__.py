"""LossLab in the browser: pages on trame-slicer (Kitware's web Slicer on the same MRML as desktop Slicer).

Layout and event wiring only: every behaviour is a call into the modules' Lib layers
(:mod:`FetalParcellationLib`, :mod:`ICEEditingLib`) or into trame-slicer's :class:`SlicerApp`.

- :mod:`.fetal`: :class:`~.fetal.FetalController`, the fetal annotator's actions on a ``SlicerApp`` (no server:
  tests drive it with trame-slicer's ``DirectViewFactory``);
- :mod:`.fetal_page`: the fetal page (trame widgets bound to a controller);
- :mod:`.ice` / :mod:`.ice_page`: the ICE editor's actions (:class:`~.ice.ICEController`) and its page;
- :mod:`.server`: :func:`~.server.build_server` / :func:`~.server.serve`, the page registry (:data:`PAGES`);
- :mod:`.sample`: the sample case (the CC0 fetal atlas case of ``FetalParcellationLib.sample_data``).

Importing this package imports neither trame nor slicer; the submodules do.
"""

from __future__ import annotations

import os

# Offscreen rendering through EGL (Mesa llvmpipe on machines without a GPU); must be set before VTK renders.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def user_message(exc: BaseException) -> str:
    """One line for the page: what went wrong, never a traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and getattr(exc, "filename", None) and getattr(exc, "strerror", None):
        text = f"{exc.filename}: {exc.strerror}"
    return text
