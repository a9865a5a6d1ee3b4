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


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, as oneDNN reports it).

    Elsewhere bfloat16 is emulated and slower than float32, so :func:`amp_dtype` keeps float32 there.
    """
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(check())
    except RuntimeError:  # a build without oneDNN's bf16 kernels
        return False


def amp_dtype(device: torch.device, amp: str | bool = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for float32.

    - CUDA: ``"auto"`` or ``True``: bfloat16 where supported, else float16.
    - CPU: ``True`` only (``"auto"`` keeps CPU results in float32): bfloat16 on CPUs that compute it natively
      (:func:`cpu_bf16_supported`: AVX512-BF16 / AMX, where convolutions run 2-3x faster), float32 elsewhere.
    - MPS, or ``False``: float32.
    """
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and amp is True and cpu_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` when ``dtype`` is set, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
