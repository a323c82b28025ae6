"""OpenVINO backend: the exported ONNX graphs on OpenVINO's CPU plugin (no torch; ``pip install 'lightbsr[openvino]'``).

The same files as the onnxruntime backend (``model.onnx`` with ``model.estimator.onnx`` and
``model.restorer.onnx`` beside it, the contract's metadata and tensor names checked), run by
another engine: on Intel CPUs with BF16 instructions (AVX512-BF16, AMX) it is the fastest
CPU path lightbsr measured (``benchmarks/results/cpu-2core-avx512.md``).

Precision is explicit, never OpenVINO's silent default. OpenVINO computes in BF16 by default
wherever the CPU has BF16 instructions; this backend pins its *inference precision hint*:

* ``precision=None`` / ``"fp32"``: FP32 (a float16 graph computes in FP32 too);
* ``"bf16"`` (``--bf16``): BF16, refused on a CPU without BF16 instructions (OpenVINO would
  quietly compute in FP32 there);
* an INT8 graph (``lightbsr quantize --int8``, either ``--target``): its Q/DQ pairs become
  OpenVINO's integer kernels (VNNI/AMX), the layers left in float compute in FP32 (or BF16
  with ``"bf16"``).

The precision OpenVINO really chose is read back from the compiled model and checked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lightbsr import contract
from lightbsr.errors import BackendUnavailableError, ConfigError, ModelFileError, first_line
from lightbsr.hardware import available_cpus
from lightbsr.runtime.backend import GraphBackend, Workload, check_graph, typed_feeds

try:
    import openvino as ov
except ImportError as _err:
    raise ModuleNotFoundError("openvino is not installed (pip install 'lightbsr[openvino]')", name="openvino") from _err

HINTS = {"fp32": "f32", "bf16": "bf16"}
"""Backend precision → OpenVINO inference precision hint."""
_OOM_MESSAGES = ("out of memory", "bad_alloc", "bad allocation", "cannot allocate", "failed to allocate")


_SS_DISABLE = 2  # <signal.h>


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def _same_signal_stack() -> Iterator[None]:
    """Leave the calling thread's alternate signal stack as it was (Linux; elsewhere nothing to do).

    OpenVINO's CPU plugin (2026.4, on a CPU with AMX) gives the thread that compiles a model an alternate signal stack
    of its own, and puts back the one it found when that model is freed. Two models freed in the order they were
    compiled leave the thread on the freed stack of the first, and the next signal the process gets (Ctrl-C, SIGTERM)
    kills it with a segmentation fault. Python handles signals on the thread's own stack, so the stack OpenVINO
    installed is taken back right after compiling.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        sigaltstack = libc.sigaltstack
    except (OSError, AttributeError):  # pragma: no cover - not a POSIX libc
        yield
        return
    before = _StackT()
    if sigaltstack(None, ctypes.byref(before)) != 0:  # pragma: no cover - cannot read it: leave it alone
        yield
        return
    try:
        yield
    finally:
        now = _StackT()
        if sigaltstack(None, ctypes.byref(now)) == 0 and (now.ss_sp, now.ss_flags) != (before.ss_sp, before.ss_flags):
            if before.ss_flags & _SS_DISABLE:
                before = _StackT(None, _SS_DISABLE, 0)
            sigaltstack(ctypes.byref(before), None)


def _onnx_header(path: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(metadata, {input: type}, [outputs]) of an ONNX file, read without its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ModelFileError(f"{path}: not a loadable ONNX model ({first_line(err)})") from err
    names = {value: f"tensor({name.lower()})" for name, value in onnx.TensorProto.DataType.items()}
    names[onnx.TensorProto.FLOAT] = "tensor(float)"
    names[onnx.TensorProto.FLOAT16] = "tensor(float16)"
    initializers = {i.name for i in model.graph.initializer}
    inputs = {
        i.name: names.get(i.type.tensor_type.elem_type, "?") for i in model.graph.input if i.name not in initializers
    }
    return {p.key: p.value for p in model.metadata_props}, inputs, [o.name for o in model.graph.output]


class _Graph:
    """One compiled OpenVINO model with the contract checked."""

    def __init__(self, core: Any, path: Path, graph: str, config: Mapping[str, Any]) -> None:
        if not path.is_file():
            raise ModelFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        meta, self.inputs, self.outputs = _onnx_header(path)
        self.family, self.scale = check_graph(path, graph, meta, self.inputs, self.outputs)
        self.graph_precision = meta.get(contract.META_PRECISION) or "fp32"
        self.source = meta.get(contract.META_SOURCE_SHA256, "")
        self.path = path
        with _same_signal_stack():
            try:
                self.compiled = core.compile_model(core.read_model(str(path)), "CPU", dict(config))
            except Exception as err:
                raise ModelFileError(f"{path}: OpenVINO cannot compile it ({first_line(err)})") from err
            self.computes = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            self.request = self.compiled.create_infer_request()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            result = self.request.infer(typed_feeds(feeds, self.inputs))
        except Exception as err:
            if isinstance(err, MemoryError):
                raise
            raise ModelFileError(f"OpenVINO failed to run {self.path.name} ({first_line(err)})") from err
        # copies: the request reuses its output buffers on the next call
        return [np.array(result[self.compiled.output(name)], dtype=np.float32) for name in self.outputs]


def cpu_has_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin can compute in BF16 on this CPU."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoBackend(GraphBackend):
    """Split (estimator + restorer) or full lightbsr ONNX graphs on OpenVINO's CPU plugin."""

    name = "openvino"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        device: str = "auto",
        precision: str | None = None,
        threads: int | None = None,
        split: bool = True,
    ) -> None:
        if device not in ("auto", "cpu"):
            raise ConfigError(f"the openvino backend runs on the CPU; got --device {device}")
        if precision not in (None, *HINTS):
            raise ConfigError(f"the openvino backend computes in {' or '.join(HINTS)}, not {precision}")
        core = ov.Core()
        if precision == "bf16" and not cpu_has_bf16(core):
            raise BackendUnavailableError(
                "this CPU has no BF16 instructions (AVX512-BF16 or AMX), so OpenVINO would compute in FP32; drop --bf16"
            )
        hint = HINTS[precision or "fp32"]
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads or available_cpus()}
        files = contract.resolve_graphs(model_path)
        present = files.present() if split else {contract.GRAPH_FULL: files.full}
        opened = {graph: _Graph(core, path, graph, config) for graph, path in present.items()}
        self._set_graphs(opened, files)
        first = next(iter(opened.values()))
        for graph in opened.values():
            if graph.computes != getattr(ov.Type, hint):
                raise BackendUnavailableError(
                    f"OpenVINO chose to compute {graph.path.name} in {graph.computes.get_type_name()}, "
                    f"not the {hint} asked for"
                )
        self.device = "cpu"
        self.graph_precision = first.graph_precision
        self.precision = "int8" if first.graph_precision == "int8" else precision or "fp32"
        self.inference_precision = hint

    def is_out_of_memory(self, err: BaseException) -> bool:
        return isinstance(err, MemoryError) or any(m in str(err).lower() for m in _OOM_MESSAGES)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "openvino": ov.get_version(),
            "inference_precision": self.inference_precision,
            "graph_precision": self.graph_precision,
        }


def load(
    model_path: str | os.PathLike[str],
    *,
    device: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    split: bool = True,
    workload: Workload | None = None,
    **options: Any,
) -> OpenVinoBackend:
    """An OpenVINO backend for ``model.onnx`` (split graphs beside it preferred, unless ``split=False``)."""
    if options:
        raise ConfigError(f"unknown openvino backend option(s) {', '.join(sorted(options))}; known: threads, split")
    return OpenVinoBackend(model_path, device=device, precision=precision, threads=threads, split=split)
