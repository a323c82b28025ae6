"""Device memory and a CUDA stream for the TensorRT backend: from torch where it has CUDA, else cuda-python.

:class:`DeviceBuffers` keeps one buffer per tensor that grows as needed, and copies
asynchronously on its stream until :meth:`DeviceBuffers.synchronize`. :func:`open_buffers`
picks the implementation (``buffers="auto"``, ``"torch"`` or ``"cuda-python"``). Each selects
its device when created: TensorRT runs on the current device. No torch needed.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from lightbsr.cuda import import_cudart
from lightbsr.errors import BackendUnavailableError, ConfigError

__all__ = ["BUFFERS", "CudaPythonBuffers", "DeviceBuffers", "TorchBuffers", "open_buffers"]

BUFFERS = ("auto", "torch", "cuda-python")


class DeviceBuffers(abc.ABC):
    """Device memory and one CUDA stream. Each tensor keeps a buffer (:meth:`slot`) that grows as needed.

    Subclasses provide the primitives; all copies are asynchronous on :attr:`stream`
    until :meth:`synchronize`. Host arrays must be C-contiguous.
    """

    kind: ClassVar[str]

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, int]] = {}  # key → (pointer, capacity in bytes)

    @property
    @abc.abstractmethod
    def stream(self) -> int:
        """The CUDA stream handle ``execute_async_v3`` is given."""

    @abc.abstractmethod
    def allocate(self, nbytes: int) -> int:
        """Device memory of ``nbytes`` bytes → its address (MemoryError when out of memory)."""

    @abc.abstractmethod
    def free(self, pointer: int) -> None: ...

    @abc.abstractmethod
    def upload(self, pointer: int, array: np.ndarray) -> None:
        """Copy ``array``'s bytes to ``pointer`` (asynchronously on the stream)."""

    @abc.abstractmethod
    def download(self, pointer: int, out: np.ndarray) -> None:
        """Copy ``out.nbytes`` bytes from ``pointer`` into ``out`` (asynchronously on the stream)."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait for everything queued on the stream."""

    def free_memory(self) -> int | None:
        """Bytes free on the device, or None if unknown."""
        return None

    def slot(self, key: str, nbytes: int) -> int:
        """A buffer of at least ``nbytes`` for ``key``, reused across calls (reallocated when too small)."""
        pointer, capacity = self._slots.get(key, (0, 0))
        if capacity >= nbytes > 0:
            return pointer
        if capacity:
            del self._slots[key]
            self.free(pointer)
        size = max(nbytes, 1)
        pointer = self.allocate(size)
        self._slots[key] = (pointer, size)
        return pointer

    def release(self) -> None:
        """Free every buffer (after an out-of-memory error; the next call allocates again)."""
        self.synchronize()
        slots, self._slots = self._slots, {}
        for pointer, _ in slots.values():
            self.free(pointer)


def _byte_view(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1).view(np.uint8)


class TorchBuffers(DeviceBuffers):
    """Buffers from torch's caching allocator, on a stream of its own (preferred where torch has CUDA)."""

    kind = "torch"

    def __init__(self, device_index: int) -> None:
        super().__init__()
        import torch

        self._torch = torch
        self._device = torch.device("cuda", device_index)
        torch.cuda.set_device(self._device)  # TensorRT runs on the current device
        self._stream = torch.cuda.Stream(self._device)
        self._blocks: dict[int, Any] = {}

    @property
    def stream(self) -> int:
        return int(self._stream.cuda_stream)

    def allocate(self, nbytes: int) -> int:
        with self._torch.cuda.stream(self._stream):  # the block then belongs to our stream
            block = self._torch.empty(nbytes, dtype=self._torch.uint8, device=self._device)
        pointer = int(block.data_ptr())
        self._blocks[pointer] = block
        return pointer

    def free(self, pointer: int) -> None:
        self._blocks.pop(pointer, None)

    def upload(self, pointer: int, array: np.ndarray) -> None:
        host = self._torch.from_numpy(_byte_view(array))
        with self._torch.cuda.stream(self._stream):
            self._blocks[pointer][: host.numel()].copy_(host, non_blocking=True)

    def download(self, pointer: int, out: np.ndarray) -> None:
        host = self._torch.from_numpy(_byte_view(out))
        with self._torch.cuda.stream(self._stream):
            host.copy_(self._blocks[pointer][: host.numel()], non_blocking=True)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def free_memory(self) -> int | None:
        cuda = self._torch.cuda
        free, _ = cuda.mem_get_info(self._device)
        cached = cuda.memory_reserved(self._device) - cuda.memory_allocated(self._device)
        return int(free + cached)

    def release(self) -> None:
        super().release()
        self._torch.cuda.empty_cache()


class CudaPythonBuffers(DeviceBuffers):
    """Buffers from ``cudaMalloc`` and a ``cudaStreamCreate`` stream, through cuda-python (no torch needed)."""

    kind = "cuda-python"

    def __init__(self, device_index: int) -> None:
        super().__init__()
        cudart = import_cudart()
        if cudart is None:
            raise BackendUnavailableError("cuda-python is not installed (pip install cuda-python)")
        self._cudart = cudart
        self._call("cudaSetDevice", device_index)  # TensorRT runs on the current device
        self._stream = self._call("cudaStreamCreate")

    def _call(self, function: str, *args: Any) -> Any:
        """``cudart.<function>(*args)`` with its error code checked; returns the other result (or None)."""
        result = getattr(self._cudart, function)(*args)
        err, *values = result if isinstance(result, tuple) else (result,)
        code = int(err)
        if code != 0:
            _, name = self._cudart.cudaGetErrorName(err)
            name = name.decode() if isinstance(name, bytes) else str(name)
            if code == int(self._cudart.cudaError_t.cudaErrorMemoryAllocation):
                raise MemoryError(f"{function}: CUDA out of memory ({name})")
            raise RuntimeError(f"{function} failed: CUDA error {code} ({name})")
        return values[0] if len(values) == 1 else None

    @property
    def stream(self) -> int:
        return int(self._stream)

    def allocate(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", nbytes))

    def free(self, pointer: int) -> None:
        self._call("cudaFree", pointer)

    def upload(self, pointer: int, array: np.ndarray) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", pointer, array.ctypes.data, array.nbytes, kind, self._stream)

    def download(self, pointer: int, out: np.ndarray) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", out.ctypes.data, pointer, out.nbytes, kind, self._stream)

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self._stream)

    def free_memory(self) -> int | None:
        result = self._cudart.cudaMemGetInfo()
        return int(result[1]) if int(result[0]) == 0 else None


def _cuda_torch() -> Any | None:
    """torch, if it is installed with a usable CUDA device; else None."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA setup only means: no torch buffers
        return None


def open_buffers(buffers: str | DeviceBuffers, device_index: int) -> DeviceBuffers:
    """Device buffers: ``"auto"`` (torch with CUDA, else cuda-python), ``"torch"``, ``"cuda-python"`` or ready ones."""
    if isinstance(buffers, DeviceBuffers):
        return buffers
    if buffers not in BUFFERS:
        raise ConfigError(f"unknown buffers {buffers!r}; choose from {', '.join(BUFFERS)}")
    if buffers in ("auto", "torch"):
        if _cuda_torch() is not None:
            return TorchBuffers(device_index)
        if buffers == "torch":
            raise BackendUnavailableError("buffers='torch' needs torch built with CUDA and a CUDA device")
    if import_cudart() is None:
        raise BackendUnavailableError(
            "the TensorRT backend needs torch with CUDA or cuda-python for device buffers; found neither "
            "(pip install cuda-python)"
        )
    return CudaPythonBuffers(device_index)
