"""What the ICEEditing module's buttons do, on a parameter node: the body of ``ICEEditingLogic``.

``ICEEditing/ICEEditing.py`` keeps the Slicer names (``ICEEditingLogic`` subclasses
:class:`ICEEditingModuleLogic` and ``ScriptedLoadableModuleLogic``) and supplies what only desktop Slicer
has, through four hooks: :meth:`~ICEEditingModuleLogic.ensureDependencies` (the first-use install),
:meth:`~ICEEditingModuleLogic.redSliceNodes` (the red view), :meth:`~ICEEditingModuleLogic.editorNode`
(the Segment Editor's masking settings) and the scene. ``p`` is the module's parameter node, or any object
with its fields (``inputVolume``, ``segmentation``, ``segmentId``, ``editModel``, ``frame``, ...).

No Qt, no ``slicer.app``: it runs on slicer-core (Testing/mrml/test_ice_module_logic.py). Imports of the core
are deferred to the methods, so that the module file imports this before torch is installed.
"""

from __future__ import annotations

import logging

from LossLabLib.module_logic import ModuleLogicBase


class ICEEditingModuleLogic(ModuleLogicBase):
    """Load a case (the sample or a folder), segment it, step through its frames, and edit a segment with
    scribble curves (multi-level undo / redo), on ``scene``.

    Args:
        scene: the MRML scene (``None``: the hook :meth:`mrmlScene` decides; Slicer's is the default there).
    """

    def __init__(self, scene=None) -> None:
        super().__init__(scene)
        self.sceneCase = None
        self.sessions = None

    # Hooks of ICE editing (the module file overrides them in Slicer) --------------------------------------

    def redSliceNodes(self):
        """(slice node, slice composite node) of the view that shows the frames (Slicer: the red view)."""
        raise ValueError("no slice view to show the frame in")

    def editorNode(self):
        """The Segment Editor's parameter node, whose masking settings the edits honour (None: none)."""
        return None

    # Case and frames ---------------------------------------------------------------------------------------

    def sceneClosed(self) -> None:
        """Forget the loaded case and the editing sessions (their nodes are gone)."""
        self.sceneCase = None
        if self.sessions is not None:
            self.sessions.clear()

    def modelNames(self, field: str) -> list:
        """Model names for a combo box ("segmentModel" or "editModel"); the defaults before torch is there."""
        import ICEEditingLib

        kind = "segmentation" if field == "segmentModel" else "editing"
        try:
            return ICEEditingLib.available_models(kind)
        except ImportError:
            default = "DEFAULT_SEGMENTATION_MODEL" if kind == "segmentation" else "DEFAULT_EDITING_MODEL"
            return [getattr(ICEEditingLib, default)]

    def state(self, p) -> dict:
        """What the buttons need: the number of frames loaded, and whether undo / redo are possible."""
        session = self._currentSession(p)
        return {
            "frames": self.sceneCase.n_frames if self.sceneCase is not None else 0,
            "canUndo": bool(session and session.can_undo),
            "canRedo": bool(session and session.can_redo),
        }

    def buttonStates(self, p) -> dict:
        """{button name in the .ui: enabled} for the parameter node ``p`` (None: no parameter node yet)."""
        state = self.state(p)
        frames = state["frames"] > 0
        return {
            "segmentButton": bool(p and p.inputVolume),
            "previousFrameButton": frames,
            "nextFrameButton": frames,
            "showFrameButton": frames,
            "applyCurveButton": bool(p and p.segmentation and p.scribbleCurve and p.inputVolume),
            "undoButton": state["canUndo"],
            "redoButton": state["canRedo"],
        }

    def _loaded(self, p, sceneCase) -> str:
        self.sceneCase = sceneCase
        p.inputVolume = sceneCase.volume_node
        p.frame = 0
        return f"Loaded {sceneCase.n_frames} frames"

    def loadSample(self, p, progress=None) -> str:
        self.ensureDependencies()
        from ICEEditingLib import sample_data

        return self._loaded(p, sample_data.load_sample(self.mrmlScene(), progress=progress))

    def loadCase(self, p, progress=None) -> str:
        self.ensureDependencies()
        import ICEEditingLib

        folder = str(p.caseFolder) if p.caseFolder is not None else ""
        if folder in ("", "."):
            raise ValueError("Choose a case folder written by 'losslab ice simulate' (cases/<id>).")
        return self._loaded(p, ICEEditingLib.load_case(self.mrmlScene(), folder, progress=progress))

    def segment(self, p, progress=None) -> str:
        """y_init: the segmentation model (by name) on the input volume -> a new segmentation to edit."""
        self.ensureDependencies()
        import ICEEditingLib

        source = self.sceneCase if self.sceneCase is not None else p.inputVolume
        p.segmentation, p.segmentId = ICEEditingLib.initial_segmentation(
            self.mrmlScene(),
            source,
            p.segmentModel,
            device=p.device,
            segmentation_node=p.segmentation,
            progress=progress,
        )
        return f"Segmented with {p.segmentModel}: segment '{p.segmentId}'"

    def stepFrame(self, p, step: int) -> str:
        """Align the frames' view with frame ``p.frame + step`` (clamped to the frames)."""
        import ICEEditingLib

        if self.sceneCase is None:
            raise ValueError("Load an ICE case first: frames come with the case.")
        p.frame = min(max(0, p.frame + int(step)), self.sceneCase.n_frames - 1)
        sliceNode, compositeNode = self.redSliceNodes()
        ICEEditingLib.align_slice_node(sliceNode, self.sceneCase, p.frame, compositeNode)
        return f"Frame {p.frame} of {self.sceneCase.n_frames}"

    # Editing -----------------------------------------------------------------------------------------------

    def _currentSession(self, p):
        if p is None or self.sessions is None or not (p.segmentation and p.inputVolume and p.segmentId):
            return None
        if not self.sessions.has(p.segmentation, p.segmentId, p.inputVolume, p.editModel, p.device):
            return None
        return self.sessions.get(
            self.mrmlScene(), p.segmentation, p.segmentId, p.inputVolume, p.editModel, device=p.device
        )

    def session(self, p, progress=None):
        """The editing session of the parameter node's segment (one per segment; options from ``p``)."""
        from ICEEditingLib import effect

        if self.sessions is None:
            self.sessions = effect.SessionCache()
        own_case = self.sceneCase is not None and self.sceneCase.volume_node is p.inputVolume
        session = self.sessions.get(
            self.mrmlScene(),
            p.segmentation,
            p.segmentId,
            p.inputVolume,
            p.editModel,
            device=p.device,
            cas=self.sceneCase if own_case else None,
            undo_levels=p.undoLevels,
            history_table=p.historyTable,
        )
        session.writer.copy_masking_from(self.editorNode())  # the Segment Editor's masking settings
        session.progress = progress
        session.sigma_mm = p.sigmaMm if p.sigmaMm > 0 else None
        session.strict_threshold = p.strictThreshold if p.strictLocal else None
        session.adapt_sigma = p.adaptSigma
        if session.undo_levels != p.undoLevels:
            session.set_undo_levels(p.undoLevels)
        return session

    def applyCurve(self, p, progress=None) -> str:
        """Edit the segment with the scribble curve (console: set p.scribbleCurve, then call this)."""
        self.ensureDependencies()
        session = self.session(p, progress)
        record = session.edit_from_curve(p.scribbleCurve)
        p.historyTable = session.history_table
        logging.info("ICEEditing: %s", record.summary())
        return record.summary()

    def undo(self, p) -> str:
        return f"Undone: edit {self.session(p).undo().index}"

    def redo(self, p) -> str:
        return f"Redone: edit {self.session(p).redo().index}"
