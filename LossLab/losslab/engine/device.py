"""Device choice and mixed precision: one code path for CUDA, MPS and CPU."""

from __future__ import annotations

import contextlib

import torch


def select_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when present (``cuda:local_rank`` under DDP), else MPS where it exists, else CPU.

    Raises:
        ValueError: not a device name (auto, cpu, cuda, cuda:N, mps), or the device asked for is not
            available here (the message says which ones are).
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or 0)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's message lists its ~20 internal device types: say ours
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for, but CUDA is not available here; use 'auto' or 'cpu'"
            )
        index = device.index if device.index is not None else (local_rank or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
        return torch.device("cuda", index)
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device {name!r} asked for, but MPS is not available here; use 'auto' or 'cpu'")
    return device


def amp_dtype(device: torch.device, amp: str | bool = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` (bfloat16 where supported, else float16), or None for float32.

    Mixed precision is used on CUDA only (``amp`` ``"auto"`` or ``True``).
    """
    if amp is False or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` when ``dtype`` is set, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
