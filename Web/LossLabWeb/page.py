"""What every page of the app shares: its state prefix, one-line messages, and :meth:`Page._act`.

A page's state names all start with its ``name`` and an underscore (``fetal_message``, ``ice_busy``), so that
pages can live side by side on one server. :meth:`Page._act` runs an action and turns any exception into a
one-line message in the page (the traceback goes to the server's log): the page never shows a stack trace.
"""

from __future__ import annotations

import logging

from . import user_message


class Page:
    """Base of the app's pages on ``server`` (a trame server) and ``slicer_app``.

    Subclasses set ``name`` (the state prefix) and ``title``, and put ``<name>_message`` and
    ``<name>_message_type`` (and, to show a busy indicator, ``<name>_busy``) in the state.
    """

    name = "page"
    title = "LossLab"

    def __init__(self, server, slicer_app, *, sample_loader=None):
        self.server = server
        self.state = server.state
        self.app = slicer_app
        self.sample_loader = sample_loader
        self.log = logging.getLogger(f"LossLabWeb.{self.name}")

    def _key(self, what: str) -> str:
        return f"{self.name}_{what}"

    def _say(self, text: str, kind: str = "info") -> None:
        """Show ``text`` as the page's message; ``kind`` is ``info``, ``success``, ``warning`` or ``error``."""
        self.state[self._key("message")], self.state[self._key("message_type")] = text, kind

    def message_alert(self) -> None:
        """The page's one-line message box (call inside the drawer's layout); CSS class ``<name>-message``."""
        from trame.widgets import vuetify3 as v

        key = self._key("message")
        v.VAlert(
            v_if=key,
            text=(key,),
            type=(self._key("message_type"),),
            density="compact",
            classes=f"mb-2 {self.name}-message",
        )

    def _act(self, what: str, fn, *args):
        """Run ``fn(*args)``; an exception becomes ``"<what>: <one line>"`` in the page and None is returned."""
        busy = self._key("busy")
        tracks_busy = busy in self.state
        if tracks_busy:
            self.state[busy] = True
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 (the page shows every failure as a message)
            self.log.exception("%s failed", what)
            self._say(f"{what}: {user_message(exc)}", "error")
            return None
        finally:
            if tracks_busy:
                self.state[busy] = False


__all__ = ["Page"]
