"""What every page of the app shares: its state prefix, one-line messages, actions that run once, slow work off
the event loop with live progress, confirmation before a case with work in it is replaced, and views fitted
once the browser has sized them.

A page's state names all start with its ``name`` and an underscore (``fetal_message``, ``ice_busy``), so that
pages can live side by side on one server.

- :meth:`Page._act` runs an action and turns any exception into a one-line message in the page (the
  traceback goes to the server's log): the page never shows a stack trace.
- Buttons call :meth:`Page.button` handlers, which return nothing to the browser (a ``Path`` or a result
  object cannot be serialised: Chromium's console said "Method result cannot be serialized") and receive what
  the browser showed when it was clicked: the page's action counter ``<name>_epoch`` and the values of the
  fields the action reads. A click sent before the page had shown the end of the previous action (the second
  click of a double click, queued behind the first) carries an old counter and is ignored, and a field typed
  while another action ran (the browser holds such edits back until the server answers) reaches the action
  with the click itself.
- :meth:`Page._background` runs slow work (models, file reading) in a worker thread while the event loop keeps
  serving the browser: each progress message is pushed as it comes, ``<name>_busy`` disables what cannot run
  meanwhile, and what touches the scene runs back on the event loop. Without a running event loop (tests,
  scripts) it runs at once.
- :meth:`Page._replace` asks before an action replaces a case that holds the user's work (``<name>_confirm``:
  a dialog with the work named); :meth:`Page.confirm` runs it, :meth:`Page.cancel` keeps the case.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import user_message


@dataclass
class Then:
    """The next step of a background action (what :meth:`Page._background`'s ``finish`` may return)."""

    what: str
    work: Callable
    finish: Callable | None = None


class Page:
    """Base of the app's pages on ``server`` (a trame server) and ``slicer_app``.

    Subclasses set ``name`` (the state prefix) and ``title``; the base puts ``<name>_message``,
    ``<name>_message_type``, ``<name>_busy``, ``<name>_progress``, ``<name>_status``, ``<name>_epoch`` and
    ``<name>_confirm`` in the state.
    """

    name = "page"
    title = "LossLab"

    def __init__(self, server, slicer_app, *, sample_loader=None):
        self.server = server
        self.state = server.state
        self.app = slicer_app
        self.sample_loader = sample_loader
        self.log = logging.getLogger(f"LossLabWeb.{self.name}")
        self._pending: Callable[[], Any] | None = None
        self._task: asyncio.Task | None = None
        self._fit_pending = False
        self._resize_observers: list[tuple] = []
        self.state.update(
            {
                self._key("message"): "",
                self._key("message_type"): "info",
                self._key("busy"): False,
                self._key("progress"): 0.0,
                self._key("status"): "",
                self._key("epoch"): 0,
                self._key("confirm"): None,
            }
        )

    def _key(self, what: str) -> str:
        return f"{self.name}_{what}"

    def _say(self, text: str, kind: str = "info") -> None:
        """Show ``text`` as the page's message; ``kind`` is ``info``, ``success``, ``warning`` or ``error``."""
        self.state[self._key("message")], self.state[self._key("message_type")] = text, kind

    @property
    def busy(self) -> bool:
        return bool(self.state[self._key("busy")])

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

    def progress_bar(self) -> None:
        """The progress bar and status line of slow work (CSS class ``<name>-status``)."""
        from trame.widgets import html
        from trame.widgets import vuetify3 as v

        busy = self._key("busy")
        v.VProgressLinear(v_if=busy, model_value=(f"{self._key('progress')} * 100",), height=6)
        html.Div(f"{{{{ {self._key('status')} }}}}", v_if=busy, classes=f"text-caption {self.name}-status")

    # Actions ---------------------------------------------------------------------------------------------

    def _act(self, what: str, fn, *args):
        """Run ``fn(*args)``; an exception becomes ``"<what>: <one line>"`` in the page and None is returned."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 (the page shows every failure as a message)
            self.log.exception("%s failed", what)
            self._say(f"{what}: {user_message(exc)}", "error")
            return None

    def _bump(self) -> None:
        self.state[self._key("epoch")] = int(self.state[self._key("epoch")] or 0) + 1

    def button(self, handler: Callable, *fields: str, once: bool = True, while_busy: bool = False):
        """``(callback, args)`` for a button's ``click``: the browser sends the page's action counter and the
        values of ``fields`` (state names) as it shows them; the callback sets those fields and runs
        ``handler()``, and returns nothing to the browser. With ``once`` (actions that load, replace, write or
        start something) a stale click (see the module docstring) is ignored and the counter moves on; unless
        ``while_busy`` (stepping through frames), nothing runs while the page's background work does."""
        names = list(fields)

        def callback(epoch=None, *values):
            if once and epoch is not None and int(epoch) != int(self.state[self._key("epoch")] or 0):
                self.log.info(
                    "ignored a %s click sent before the page showed the last action", handler.__name__
                )
                return None
            if self.busy and not while_busy:
                self.log.info("ignored a %s click while busy", handler.__name__)
                return None
            for name, value in zip(names, values):
                self.state[name] = value
            if once:
                self._bump()
            handler()
            return None

        return (callback, "[" + ", ".join([self._key("epoch"), *names]) + "]")

    # Slow work -------------------------------------------------------------------------------------------

    def _progress_now(self, fraction: float, message: str) -> None:
        self.state[self._key("progress")], self.state[self._key("status")] = float(fraction), str(message)
        try:  # push it now (while the work runs in a worker thread, the event loop sends it at once)
            self.state.flush()
        except Exception:  # noqa: BLE001 (progress must never break the work)
            self.log.debug("progress flush failed", exc_info=True)

    def _background(self, what: str, work: Callable, finish: Callable | None = None) -> bool:
        """Run ``work(progress)`` in a worker thread (no MRML there: arrays and files only), then
        ``finish(result)`` on the event loop; ``<name>_busy`` is on meanwhile, progress is pushed as it comes,
        an error is the page's one-line message. ``work`` returns a result (not ``None``); ``finish`` may
        return a :class:`Then` to run one more step in the same busy period. Returns False when the page is
        busy (nothing started); without a running event loop everything runs here, at once, and the return
        value says whether it all succeeded."""
        if self.busy:
            return False
        self.state[self._key("busy")] = True
        self._progress_now(0.0, f"{what}...")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._task = loop.create_task(self._run(what, work, finish))
            return True
        try:
            while True:
                result = self._act(what, work, self._progress_now)
                if result is None:
                    return False
                done = self._act(what, finish, result) if finish is not None else True
                if not isinstance(done, Then):
                    return bool(done)
                what, work, finish = done.what, done.work, done.finish
                self._progress_now(0.0, f"{what}...")
        finally:
            self.state[self._key("busy")] = False
            self._bump()

    async def _run(self, what: str, work: Callable, finish: Callable | None) -> None:
        loop = asyncio.get_running_loop()

        def progress(fraction: float, message: str) -> None:  # called in the worker thread
            loop.call_soon_threadsafe(self._progress_now, fraction, message)

        try:
            while True:
                try:
                    result = await loop.run_in_executor(None, work, progress)
                except Exception as exc:  # noqa: BLE001 (the page shows every failure as a message)
                    self.log.error("%s failed", what, exc_info=exc)
                    with self.state:
                        self._say(f"{what}: {user_message(exc)}", "error")
                    return
                with self.state:
                    done = self._act(what, finish, result) if finish is not None else True
                    if not isinstance(done, Then):
                        return
                    what, work, finish = done.what, done.work, done.finish
                    self._progress_now(0.0, f"{what}...")
        finally:
            with self.state:
                self.state[self._key("busy")] = False
                self._bump()

    async def wait(self) -> None:
        """Until the page's background work (if any) has finished (tests, scripts)."""
        if self._task is not None:
            await self._task

    # Replacing a case ------------------------------------------------------------------------------------

    def _replace(self, what: str, lost: str | None, action: Callable[[], Any]):
        """Run ``action()`` now when ``lost`` is None (nothing of the user's would be lost); else ask first:
        the dialog names ``lost`` and :meth:`confirm` runs the action."""
        if lost is None:
            return action()
        self._pending = action
        self.state[self._key("confirm")] = {
            "title": f"{what}: replace the current case?",
            "text": f"It holds your work ({lost}), which {what} would replace. Save it first if you need it.",
            "action": what,
        }
        return None

    def confirm(self):
        """The dialog's *Replace* button: run the action it asked about."""
        action, self._pending = self._pending, None
        self.state[self._key("confirm")] = None
        if action is not None:
            self._bump()
            return action()
        return None

    def cancel(self) -> None:
        """The dialog's *Cancel* button: nothing is replaced."""
        self._pending = None
        self.state[self._key("confirm")] = None
        self._say("Kept the current case")

    def confirm_dialog(self) -> None:
        """The confirmation dialog (call inside the drawer's layout); buttons ``<name>-confirm-cancel`` and
        ``<name>-confirm-ok``."""
        from trame.widgets import vuetify3 as v

        key = self._key("confirm")
        with v.VDialog(model_value=(f"!!{key}",), persistent=True, max_width=460):
            with v.VCard(classes=f"{self.name}-confirm"):
                v.VCardTitle(f"{{{{ {key} && {key}.title }}}}", classes="text-subtitle-1")
                v.VCardText(f"{{{{ {key} && {key}.text }}}}")
                with v.VCardActions():
                    v.VSpacer()
                    v.VBtn("Cancel", click=self._silent(self.cancel), classes=f"{self.name}-confirm-cancel")
                    v.VBtn(
                        "Replace",
                        click=self._silent(self.confirm),
                        color="error",
                        classes=f"{self.name}-confirm-ok",
                    )

    @staticmethod
    def _silent(handler: Callable) -> Callable:
        """A callback that runs ``handler()`` and returns nothing to the browser."""

        def callback(*_args):
            handler()
            return None

        return callback

    # Views -----------------------------------------------------------------------------------------------

    def fit_views(self) -> None:
        """Fit the views to the case shown (pages override). Called after a load and, while a fit is pending
        (:meth:`_fit_when_sized`), when the browser gives a view its size."""

    def _fit_when_sized(self) -> None:
        """Fit the views again when the browser next sizes one: a case loaded before any browser connected
        (``losslab app --sample``) was fitted to the views' default size, not the page's."""
        self._fit_pending = True
        if self._resize_observers:
            return
        for view in self.app.view_manager.get_views():
            # the event trame-rca sends when the browser sizes a view; priority -1: after the view's own
            # observer, which gives the slice node the new size
            interactor = view.interactor()
            tag = interactor.AddObserver("WindowResizeEvent", self._on_resize, -1.0)
            self._resize_observers.append((interactor, tag))

    def _on_resize(self, *_args) -> None:
        if self._fit_pending:
            self._fit_pending = False
            self._act("Fit", self.fit_views)


__all__ = ["Page", "Then"]
