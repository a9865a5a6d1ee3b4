"""Serverless page helpers of the web tests: trame-slicer's direct (offscreen) views, their pixels, and mouse
drags injected in a view's interactor as the browser's events arrive."""

from __future__ import annotations

import numpy as np


def direct_app(name: str, size: int = 256):
    """``(server, slicer_app, views)``: a SlicerApp whose views (the app's layout: axial and 3D) come from
    ``DirectViewFactory`` and render offscreen at ``size`` x ``size``, and a trame server named ``name``."""
    from LossLabWeb.server import layout_views
    from trame.app import get_server
    from trame_slicer.core import SlicerApp
    from trame_slicer.views import DirectViewFactory

    app = SlicerApp()
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    views = [app.view_manager.create_view(v) for v in layout_views().items]
    for view in views:
        view.render_window().SetSize(size, size)
        # no render on every change of the scene (DirectViewFactory renders at once, a server coalesces):
        # the tests render when they look (pixels)
        view.set_render_blocked(True)
    return get_server(name=name, client_type="vue3"), app, views


def pixels(view) -> np.ndarray:
    """The view rendered now, ``(height, width, components)`` uint8."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    view.render_window().Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(view.render_window())
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    w, h, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)


def drag(view, points):
    """A left-button drag through ``points`` (display pixels), as the browser's mouse events arrive."""
    it = view.interactor()
    it.SetEventPosition(*points[0])
    it.InvokeEvent("MouseMoveEvent")
    it.InvokeEvent("LeftButtonPressEvent")
    for p in points[1:]:
        it.SetEventPosition(*p)
        it.InvokeEvent("MouseMoveEvent")
    it.InvokeEvent("LeftButtonReleaseEvent")


def resize(view, width: int, height: int) -> None:
    """The browser gives the view a new size (what trame-rca does with its resize events)."""
    interactor = view.interactor()
    interactor.UpdateSize(width, height)
    interactor.InvokeEvent("WindowResizeEvent")


def fits(slice_view, volume_node, tolerance: float = 0.02) -> bool:
    """Whether the slice view's field of view holds the volume's whole extent in its plane (axial: R-L by
    A-P), with at most ``tolerance`` of it cut."""
    bounds = [0.0] * 6
    volume_node.GetRASBounds(bounds)
    fov = slice_view.get_view_node().GetFieldOfView()
    width, height = bounds[1] - bounds[0], bounds[3] - bounds[2]
    return fov[0] >= width * (1 - tolerance) and fov[1] >= height * (1 - tolerance)
