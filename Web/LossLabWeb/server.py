"""The LossLab web app: a trame server, one trame-slicer ``SlicerApp`` and one page (one user per process).

Pages plug in through :data:`PAGES`: ``name -> "module:Class"``. A page class takes
``(server, slicer_app, sample_loader=...)``, keeps its state under its own prefix, and offers
``title``, ``build_drawer()`` (its panel), ``load(mri, mask)`` and ``load_sample()``. The server builds the
views (an axial slice view and a 3D view, streamed as images by trame-rca: no WebGL in the browser) and puts the
page's panel in the drawer beside them.
"""

from __future__ import annotations

import importlib

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
    using = "" if threads is None else f" ({threads} torch thread{'s' if threads != 1 else ''})"
    print(f"losslab app: serving the {page} page on http://{host}:{port}/{using}", flush=True)
    server.start(host=host, port=port, open_browser=False, show_connection_info=False)


__all__ = ["PAGES", "SAMPLES", "build_server", "serve"]
