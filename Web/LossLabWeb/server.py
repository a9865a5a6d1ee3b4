"""The LossLab web app: a trame server, one trame-slicer ``SlicerApp`` and one page (one user per process).

Pages plug in through :data:`PAGES`: ``name -> "module:Class"``. A page class takes
``(server, slicer_app, sample_loader=...)``, keeps its state under its own prefix, and offers
``title``, ``build_drawer()`` (its panel), ``load(mri, mask)`` and ``load_sample()``. The server builds the
views (an axial slice view and a 3D view, streamed as images by trame-rca: no WebGL in the browser) and puts the
page's panel in the drawer beside them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging

#: The pages: name -> "module:Class" (imported on use).
PAGES = {"fetal": "LossLabWeb.fetal_page:FetalPage", "ice": "LossLabWeb.ice_page:ICEPage"}
#: Sample loaders per page: name -> "module:function" returning the paths ``page.load`` takes.
SAMPLES = {"fetal": "LossLabWeb.sample:fetal_sample", "ice": "LossLabWeb.ice:sample_folder"}
LAYOUT_ID = "Axial and 3D"


def _resolve(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def layout_views():
    """The app's layout: an axial slice view beside a 3D view."""
    from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

    return Layout(
        LayoutDirection.Horizontal, [ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.threed_view()]
    )


def build_server(page: str = "fetal", *, sample: bool = False, case=None, server=None):
    """A trame server showing ``page``; ``sample``: load the page's sample case; ``case``: a path (or a
    ``(mri, mask)`` pair) to load. Returns ``(server, page_object)``; a case that fails to load leaves a
    message in the page."""
    from trame.app import get_server
    from trame.ui.vuetify3 import SinglePageWithDrawerLayout
    from trame_slicer import module as trame_slicer_module
    from trame_slicer.core import LayoutManager, SlicerApp
    from trame_slicer.rca_view import register_rca_factories

    if page not in PAGES:
        raise ValueError(f"unknown page {page!r}; expected one of {', '.join(PAGES)}")
    server = server or get_server(name=f"losslab-{page}", client_type="vue3")
    server.enable_module(trame_slicer_module)
    slicer_app = SlicerApp()
    register_rca_factories(slicer_app.view_manager, server)
    layouts = LayoutManager(slicer_app.scene, slicer_app.view_manager, server)
    layouts.register_layout_dict({LAYOUT_ID: layout_views()})
    page_obj = _resolve(PAGES[page])(
        server, slicer_app, sample_loader=_resolve(SAMPLES[page]) if page in SAMPLES else None
    )

    server.state.trame__title = page_obj.title
    with SinglePageWithDrawerLayout(server, full_height=True) as ui:
        ui.title.set_text(page_obj.title)
        ui.drawer.width = 360
        with ui.drawer:
            page_obj.build_drawer()
        with ui.content:
            layouts.initialize_layout_grid(ui)
    layouts.set_layout(LAYOUT_ID)

    if case is not None:
        mri, mask = (case, None) if isinstance(case, (str, bytes)) or not hasattr(case, "__len__") else case
        page_obj.load(str(mri), "" if mask is None else str(mask))
    elif sample:
        page_obj.load_sample()
    return server, page_obj


#: Where the server's logs of a browser that went away end up (one line each, at INFO).
log = logging.getLogger("LossLabWeb.server")
#: The loggers that print a traceback when a browser tab closes while the server writes to it.
CONNECTION_LOGGERS = ("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.access", "wslink")
_GONE_TEXT = ("ClientConnectionResetError", "Cannot write to closing transport")


def _gone(exc) -> bool:
    """Whether an exception only says that the browser's connection closed (a tab closed mid-write)."""
    return isinstance(exc, (ConnectionResetError, BrokenPipeError))


class QuietDisconnects(logging.Filter):
    """Drops the tracebacks that a closed tab leaves (wslink and aiohttp writing to its closed socket: not an
    error of the app) and logs one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage() if exc is None else ""
        if _gone(exc) or any(t in text for t in _GONE_TEXT):
            log.info("a browser closed its connection while the server was writing to it")
            return False
        return True


def quiet_disconnects(loop: asyncio.AbstractEventLoop) -> None:
    """Install :class:`QuietDisconnects` on the server's loggers and an event loop exception handler that does
    the same for tasks whose writes failed on a closed connection ("Task exception was never retrieved");
    every other exception is reported as before."""
    for name in CONNECTION_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietDisconnects) for f in logger.filters):
            logger.addFilter(QuietDisconnects())
    previous = loop.get_exception_handler()

    def handler(loop, context):
        if _gone(context.get("exception")):
            log.info("a browser closed its connection while the server was writing to it")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def serve(
    page: str = "fetal",
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    sample: bool = False,
    case=None,
    threads: int | None = None,
):
    """Build the server and serve it until interrupted (no browser is opened). ``threads``: torch's thread
    count, set by the caller (``losslab app --threads``), only reported here."""
    server, page_obj = build_server(page, sample=sample, case=case)
    server.controller.on_server_ready.add(lambda **_: quiet_disconnects(asyncio.get_running_loop()))
    using = "" if threads is None else f" ({threads} torch thread{'s' if threads != 1 else ''})"
    print(f"losslab app: serving the {page} page on http://{host}:{port}/{using}", flush=True)
    server.start(host=host, port=port, open_browser=False, show_connection_info=False)


__all__ = ["PAGES", "SAMPLES", "QuietDisconnects", "build_server", "quiet_disconnects", "serve"]
