"""CUDA devices without torch: cuda-python's runtime bindings, found once (no import cost where unused).

NVIDIA's own TensorRT samples use cuda-python; where it is missing, torch (when installed
with CUDA) stands in. Used by the TensorRT package (which device builds and loads an engine),
the runtime's device buffers and the ONNX Runtime backend's free-memory probe.
"""

from __future__ import annotations

import contextlib
from typing import Any

from lightbsr.errors import BackendUnavailableError

__all__ = ["free_memory", "import_cudart", "select_device"]


def import_cudart() -> Any | None:
    """cuda-python's CUDA runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6), or None."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]  # older cuda-python
        except ImportError:
            return None
    return cudart


def _error(result: Any) -> int:
    return int(result[0] if isinstance(result, tuple) else result)


def select_device(device: int) -> None:
    """Make CUDA device ``device`` the current one (TensorRT builds, tunes and loads on the current device).

    Through cuda-python, else torch; without either only device 0 can be meant, and another
    index is refused (BackendUnavailableError).
    """
    cudart = import_cudart()
    if cudart is not None:
        code = _error(cudart.cudaSetDevice(device))
        if code != 0:
            raise BackendUnavailableError(f"cannot select CUDA device {device} (CUDA error {code})")
        return
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(device)
            return
    if device != 0:
        raise BackendUnavailableError(f"selecting CUDA device {device} needs cuda-python or torch with CUDA")


def free_memory(device: int) -> int | None:
    """Free bytes on CUDA device ``device`` (made current first), or None where it cannot be told."""
    cudart = import_cudart()
    if cudart is None:
        return None
    try:
        if _error(cudart.cudaSetDevice(device)) != 0:
            return None
        result = cudart.cudaMemGetInfo()  # of the current device
    except Exception:  # a driver problem only loses the memory estimate
        return None
    return int(result[1]) if _error(result) == 0 else None
