"""The "ICE Edit" Segment Editor effect (registered by the ICEEditing module at startup)."""

from .SegmentEditorEffect import SegmentEditorEffect  # noqa: F401
