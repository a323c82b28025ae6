"""Latency, throughput, peak memory and accuracy of every backend × precision, against PyTorch FP32 eager.

One run measures a grid: LR sizes × batch sizes × targets. A target is a backend and precision on a
device (``torch-fp32`` is the reference; ``torch-bf16``, ``torch-fp16``, ``torch-compile-fp32`` /
``-fp16``; ``ort-cpu`` / ``ort-cuda`` / ``ort-trt`` for every ONNX file given, whose precision comes
from its metadata). Targets that cannot run here are kept as *skipped* rows with the reason.

Timing: ``warmup`` untimed runs, then up to ``repeats`` timed runs (stopping early after
``min_repeats`` once ``max_seconds`` is spent). On CUDA each run is timed with CUDA events around the
call (PyTorch: input already on the device, output left there); ONNX Runtime runs, and everything on
the CPU, are timed with ``time.perf_counter`` (ONNX Runtime CUDA/TensorRT: numpy in and out, so the
host↔device copies are included).
Throughput is **output** megapixels per second (batch × (4H) × (4W) / median). Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` (PyTorch targets only; ONNX Runtime allocates outside PyTorch);
on the CPU the process's peak resident set (Linux ``VmHWM``, reset before each target through
``/proc/self/clear_refs``), which includes the Python process itself.

Accuracy: every target upscales the same real image crop at batch 1, and the output (clamped to
[0, 1]) is compared with the reference's by PSNR (RGB, peak 1, no shave; ``inf`` when identical).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightbsr.contract import check_sr
from lightbsr.errors import BackendUnavailableError, ConfigError, first_line
from lightbsr.hardware import ORT_SPINNING, available_cpus, cpu_isa, cpu_name, wait_policy

REFERENCE = "torch-fp32"
TORCH_TARGETS = (
    "torch-fp32", "torch-bf16", "torch-fp16", "torch-compile-fp32", "torch-compile-bf16", "torch-compile-fp16",
    "torch-channels-last-fp32",
)  # fmt: skip
ORT_PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
}
ORT_CPU_VARIANTS: dict[str, dict[str, Any]] = {
    "ort-cpu-spin": {"spinning": True},
    "ort-cpu-extended": {"optimize": "extended"},
    "ort-cpu-basic": {"optimize": "basic"},
    "ort-cpu-no-arena": {"memory_arena": False},
}
"""ONNX Runtime CPU session options measured against the defaults of ``ort-cpu`` (graph optimisation ``all``, which
adds the NCHWc layout transform; idle threads sleep; memory arena and patterns on); FP32 files only."""
OPENVINO_VARIANTS: dict[str, str] = {"openvino-cpu": "fp32", "openvino-cpu-bf16": "bf16"}
"""OpenVINO's CPU plugin (the openvino backend, ``pip install 'lightbsr[openvino]'``): target kind → the precision
it computes in. ``openvino-cpu`` is FP32 on FP32 files (the backend pins it: OpenVINO's own default on a CPU with BF16
instructions is BF16) and also runs INT8 files (their Q/DQ pairs as integer kernels, the rest FP32);
``openvino-cpu-bf16`` computes in BF16 what is not INT8 (all of an FP32 file: ``openvino-cpu-bf16``; the float layers
of an INT8 file: ``openvino-cpu-bf16-int8-cpu``), skipped on a CPU without BF16 instructions."""
OPENVINO_BF16_ISA = ("avx512_bf16", "amx_bf16")
SIZE_ALIASES = {"720p": (720, 1280), "1080p": (1080, 1920)}

Runner = Callable[[np.ndarray], Any]
"""Runs one batch; returns the output (on the device for GPU targets)."""


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed run, and their summary."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (linear interpolation, as numpy)."""
        return float(np.percentile(np.asarray(self.times), q))


def time_runs(
    run: Callable[[], Any],
    *,
    warmup: int = 2,
    repeats: int = 20,
    min_repeats: int = 3,
    max_seconds: float = math.inf,
    cuda: bool = False,
    on_run: Callable[[], None] | None = None,
) -> Timing:
    """Warm up, then time ``run`` up to ``repeats`` times (at least ``min_repeats``, at most ~``max_seconds``)."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be ≥ 1 and warmup ≥ 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        run()
    if cuda:
        import torch

        torch.cuda.synchronize()
    times: list[float] = []
    spent_start = time.perf_counter()
    while len(times) < repeats:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            start_s = time.perf_counter()
            run()
            times.append(time.perf_counter() - start_s)
        if on_run is not None:
            on_run()
        if len(times) >= min(min_repeats, repeats) and time.perf_counter() - spent_start > max_seconds:
            break
    return Timing(tuple(times))


# --------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory of one target: CUDA allocator peak, or the process's peak RSS on the CPU."""

    def __init__(self, device: str, torch_target: bool) -> None:
        self.device = device
        self.torch_target = torch_target
        self.method = ""

    def reset(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")

    def peak_bytes(self) -> int | None:
        if self.device.startswith("cuda"):
            if not self.torch_target:
                self.method = "not measured: ONNX Runtime allocates outside PyTorch"
                return None
            import torch

            self.method = "torch.cuda.max_memory_allocated"
            return int(torch.cuda.max_memory_allocated())
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.method = "process peak RSS (VmHWM, reset per target)"
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        self.method = "process peak RSS since start (ru_maxrss)"
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """One backend × precision × device to measure."""

    name: str
    backend: str
    precision: str
    device: str
    model_file: str = ""
    skip_reason: str = ""
    prepare: Callable[[], Runner] | None = field(default=None, repr=False)
    to_numpy: Callable[[Any], np.ndarray] = field(default=np.asarray, repr=False)
    torch_target: bool = False


def torch_targets(model: Any, device: str, names: Sequence[str], force: Sequence[str] = ()) -> list[Target]:
    """PyTorch targets (eager FP32 reference, autocast BF16/FP16, torch.compile) for ``model``.

    On the CPU, FP16 and torch.compile are skipped unless named in ``force``.
    """
    import torch

    targets = []
    cuda = device.startswith("cuda")
    for name in names:
        compiled = name.startswith("torch-compile")
        channels_last = "channels-last" in name
        precision = name.rsplit("-", 1)[1]
        backend = "torch.compile" if compiled else "torch channels-last" if channels_last else "torch"
        target = Target(name, backend, precision, device, torch_target=True)
        if compiled and not cuda and name not in force:
            target.skip_reason = "torch.compile is benchmarked on CUDA by default (minutes of compile on a CPU)"
        elif precision == "fp16" and not cuda and name not in force:
            target.skip_reason = "FP16 convolutions on the CPU are not a deployment target (name it to force)"
        else:
            dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            target.prepare = _torch_prepare(model, device, dtype, compiled, channels_last)
            target.to_numpy = _torch_to_numpy
        targets.append(target)
    return targets


def _torch_prepare(
    model: Any, device: str, dtype: Any, compiled: bool, channels_last: bool = False
) -> Callable[[], Runner]:
    def prepare() -> Runner:
        import copy

        import torch

        net = model.to(device).eval()
        layout = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            net = copy.deepcopy(net).to(memory_format=layout)  # the reference keeps its own layout
        fn = net
        if compiled:
            try:
                # on CUDA: CUDA graphs (one launch per forward, no autotuning: minutes saved); on the CPU: inductor
                fn = torch.compile(net, mode="reduce-overhead" if device.startswith("cuda") else None)
            except Exception as err:  # no compiler toolchain, unsupported platform
                raise BackendUnavailableError(f"torch.compile failed: {first_line(err)}") from err
        device_type = "cuda" if device.startswith("cuda") else "cpu"

        last: dict[str, Any] = {}

        def run(lr: np.ndarray) -> Any:
            if last.get("lr") is not lr:  # copy each input to the device once, not in every timed run
                last.update(lr=lr, x=torch.from_numpy(lr).to(device).contiguous(memory_format=layout))
            x = last["x"]
            with torch.inference_mode(), torch.autocast(device_type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                return fn(x)

        return run

    return prepare


def _torch_to_numpy(out: Any) -> np.ndarray:
    return out.detach().float().cpu().numpy()


def onnx_targets(
    paths: Sequence[str | os.PathLike[str]], device: str, kinds: Sequence[str], threads: int
) -> list[Target]:
    """ONNX Runtime targets: every file × execution provider (CPU; CUDA and TensorRT on a GPU).

    ``kinds`` may also name :data:`ORT_CPU_VARIANTS` (FP32 files only) and :data:`OPENVINO_VARIANTS`.
    An INT8 file's target name ends with its INT8 target (``ort-cpu-int8-cpu``, ``ort-cpu-int8-tensorrt``); names
    that two files would share end with the file's name.
    """
    try:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
    except ImportError:
        available = set()
    targets = []
    for path in paths:
        precision, int8_target = onnx_precision(path), onnx_int8_target(path)
        label = f"{precision}-{int8_target}" if int8_target else precision
        for kind in kinds:
            if kind in OPENVINO_VARIANTS:
                computes = OPENVINO_VARIANTS[kind]
                if precision not in ("fp32", "int8"):
                    continue
                name = kind if computes == "bf16" and precision == "fp32" else f"{kind}-{label}"
                target = Target(name, "openvino", "int8" if precision == "int8" else computes, "cpu")
                target.model_file = str(path)
                if importlib.util.find_spec("openvino") is None:
                    target.skip_reason = "OpenVINO is not installed (pip install 'lightbsr[openvino]')"
                elif computes == "bf16" and not set(OPENVINO_BF16_ISA) & set(cpu_isa()):
                    target.skip_reason = "this CPU has no BF16 instructions (OpenVINO would compute in FP32)"
                else:
                    target.prepare = _openvino_prepare(Path(path), threads, computes)
                targets.append(target)
                continue
            if kind in ORT_CPU_VARIANTS:
                if precision != "fp32":
                    continue
                target = Target(f"{kind}-{label}", "onnxruntime", precision, "cpu")
                target.model_file = str(path)
                target.prepare = _ort_prepare(Path(path), "ort-cpu", precision, threads, ORT_CPU_VARIANTS[kind])
                targets.append(target)
                continue
            provider = ORT_PROVIDERS[kind]
            target = Target(f"{kind}-{label}", "onnxruntime", precision, "cpu" if kind == "ort-cpu" else device)
            target.model_file = str(path)
            if provider not in available:
                target.skip_reason = f"onnxruntime has no {provider} (pip install 'lightbsr[gpu]' on a CUDA machine)"
            elif kind != "ort-cpu" and not device.startswith("cuda"):
                target.skip_reason = f"{provider} needs --device cuda"
            else:
                target.prepare = _ort_prepare(Path(path), kind, precision, threads)
            targets.append(target)
    names = Counter(target.name for target in targets)
    for target in targets:  # two files of one precision and INT8 target: the rows say which file
        if names[target.name] > 1:
            target.name = f"{target.name} ({Path(target.model_file or '').name})"
    return targets


def onnx_precision(path: str | os.PathLike[str]) -> str:
    """The ``lightbsr.precision`` metadata of an ONNX file (``fp32`` if absent)."""
    import onnx

    from lightbsr import contract

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}.get(contract.META_PRECISION) or "fp32"


def onnx_int8_target(path: str | os.PathLike[str]) -> str | None:
    """The INT8 target (``tensorrt`` / ``cpu``) of an INT8 ONNX file, else ``None``."""
    import onnx

    from lightbsr import contract

    model = onnx.load(str(path), load_external_data=False)
    return contract.int8_target({p.key: p.value for p in model.metadata_props})


def _openvino_prepare(path: Path, threads: int, computes: str) -> Callable[[], Runner]:
    def prepare() -> Runner:
        from lightbsr.runtime import load_backend

        precision = "bf16" if computes == "bf16" else None  # None: FP32, or an INT8 file's own
        options = {"threads": threads or None, "split": False}
        backend = load_backend("openvino", path, device="cpu", precision=precision, **options)
        return backend.forward

    return prepare


def _ort_prepare(
    path: Path, kind: str, precision: str, threads: int, session_options: dict[str, Any] | None = None
) -> Callable[[], Runner]:
    def prepare() -> Runner:
        from lightbsr.runtime import load_backend

        providers: list[Any] = [ORT_PROVIDERS[kind]]
        if kind == "ort-trt":
            providers = [
                (ORT_PROVIDERS[kind], {"trt_fp16_enable": precision != "fp32", "trt_int8_enable": precision == "int8"}),
                "CUDAExecutionProvider",
            ]
        options = {"providers": providers, "threads": threads or None, "session_options": session_options}
        backend = load_backend("onnxruntime", path, split=False, **options)
        return backend.forward

    return prepare


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    """One measurement (or one skipped target)."""

    target: str
    backend: str
    precision: str
    device: str
    height: int
    width: int
    batch: int
    status: str = "ok"
    reason: str = ""
    runs: int = 0
    median_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    output_mp_per_s: float | None = None
    peak_memory_mb: float | None = None
    memory_method: str = ""
    speedup: float | None = None
    psnr_vs_reference_db: float | str | None = None
    model_file: str = ""
    gflop_per_s: float | None = None
    """2 × the model's multiply-accumulates (all of them, whatever precision each runs in) / median."""
    pct_of_peak: float | None = None
    """``gflop_per_s`` as a percentage of the measured GEMM peak of the row's precision (INT8 rows: the U8S8 peak)."""
    pct_of_fp32_peak: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_size(text: str) -> tuple[int, int]:
    """``256`` → (256, 256); ``480x640`` → (480, 640) (H×W); ``720p`` → (720, 1280)."""
    if text in SIZE_ALIASES:
        return SIZE_ALIASES[text]
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ConfigError(f"bad size {text!r}: expected N, HxW or one of {', '.join(SIZE_ALIASES)}")
    return (parts[0], parts[-1])


def image_crop(path: str | os.PathLike[str], height: int, width: int) -> np.ndarray:
    """A (1, 3, H, W) float32 LR input in [0, 1] from a real image: resized to cover H×W, centre-cropped."""
    import cv2

    from lightbsr.imageio import read_image

    image = read_image(path)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.float32) / (65535.0 if image.dtype == np.uint16 else 255.0)
    h, w = image.shape[:2]
    factor = max(height / h, width / w)
    size = (max(width, round(w * factor)), max(height, round(h * factor)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    crop = np.clip(image[top : top + height, left : left + width], 0.0, 1.0)
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None])


def measure(
    targets: Sequence[Target],
    sizes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    image: str | os.PathLike[str],
    *,
    scale: int = 4,
    warmup: int = 2,
    repeats: int = 20,
    min_repeats: int = 3,
    max_seconds: float = math.inf,
    progress: bool = True,
) -> list[Row]:
    """Measure every target at every size and batch; the first target must be the reference.

    A target whose single run took longer than ``max_seconds`` is skipped at larger inputs (with the
    reason), so a slow path (e.g. BF16 on a CPU without BF16 instructions) cannot take the whole budget;
    the reference always runs.
    """
    from tqdm import tqdm

    from lightbsr.metrics import psnr

    if not targets or targets[0].name != REFERENCE or targets[0].prepare is None:
        raise ConfigError(f"the first target must be the runnable reference {REFERENCE}")
    rows: list[Row] = []
    runners: dict[str, Runner] = {}
    too_slow: dict[str, tuple[int, float]] = {}  # target → (pixels, seconds) of a case slower than max_seconds
    skipped: dict[str, str] = {t.name: t.skip_reason for t in targets if t.skip_reason}
    jobs = [(size, batch, t) for size in sizes for batch in batches for t in targets]
    active = [j for j in jobs if j[2].name not in skipped]
    bar = tqdm(total=len(active), desc="bench", unit="case", disable=not progress, leave=False)
    for (height, width), batch, target in jobs:
        row = Row(target.name, target.backend, target.precision, target.device, height, width, batch)
        row.model_file = target.model_file
        if target.name in skipped:
            row.status, row.reason = "skipped", skipped[target.name]
            rows.append(row)
            continue
        if target.name in too_slow and batch * height * width > too_slow[target.name][0]:
            row.status = "skipped"
            row.reason = f"one run at a smaller input took {too_slow[target.name][1]:.0f} s (> max_seconds)"
            rows.append(row)
            continue
        bar.set_postfix_str(f"{target.name} {height}×{width} b{batch}")
        try:
            if target.name not in runners:
                assert target.prepare is not None
                runners[target.name] = target.prepare()
            runner = runners[target.name]
            lr = np.repeat(image_crop(image, height, width), batch, axis=0)
            memory = PeakMemory(target.device, target.torch_target)
            memory.reset()
            first = time.perf_counter()
            out = runner(lr)  # also checks that it runs before timing (and warms up)
            first = time.perf_counter() - first
            raw = target.to_numpy(out)  # an output of the wrong size or not finite fails the row, with why
            check_sr(target.name, lr.shape, raw.shape, scale, bool(np.isfinite(raw).all()))
            if batch == 1:
                sr = np.clip(raw, 0.0, 1.0)
                if target.name == REFERENCE:
                    reference_sr = sr
                    row.psnr_vs_reference_db = "inf"
                else:
                    import torch

                    value = psnr(torch.from_numpy(sr), torch.from_numpy(reference_sr))
                    row.psnr_vs_reference_db = "inf" if math.isinf(value) else round(value, 2)
            timing = time_runs(
                functools.partial(runner, lr),
                warmup=max(0, warmup - 1),
                repeats=repeats,
                min_repeats=min_repeats,
                max_seconds=max_seconds,
                cuda=target.device.startswith("cuda") and target.torch_target,
            )
        except Exception as err:  # a backend that fails is reported, not fatal (except the reference)
            row.status, row.reason = "failed", first_line(err)
            if target.name == REFERENCE:
                raise
            rows.append(row)
            bar.update(1)
            continue
        if min(first, timing.median) > max_seconds and target.name != REFERENCE:
            too_slow[target.name] = (batch * height * width, timing.median)
        peak = memory.peak_bytes()
        row.peak_memory_mb = None if peak is None else round(peak / 2**20, 1)
        row.memory_method = memory.method
        row.runs = len(timing.times)
        row.median_ms = round(timing.median * 1e3, 3)
        row.p90_ms = round(timing.percentile(90) * 1e3, 3)
        row.p99_ms = round(timing.percentile(99) * 1e3, 3)
        row.output_mp_per_s = round(batch * height * width * scale * scale / 1e6 / timing.median, 4)
        rows.append(row)
        bar.update(1)
    bar.close()
    _speedups(rows)
    return rows


def add_roofline(rows: Sequence[Row], flops: dict[tuple[int, int], int], peaks: Sequence[dict[str, Any]]) -> None:
    """Fill each measured row's GFLOP/s and share of the GEMM peak (``flops``: per (H, W) at batch 1)."""
    from .roofline import peak_of

    fp32_peak = peak_of(list(peaks), "fp32")
    for row in rows:
        work = flops.get((row.height, row.width))
        if not row.median_ms or work is None:
            continue
        row.gflop_per_s = round(row.batch * work / (row.median_ms / 1e3) / 1e9, 2)
        peak = peak_of(list(peaks), "int8" if row.precision == "int8" else "fp32")
        if peak:
            row.pct_of_peak = round(100 * row.gflop_per_s / peak, 1)
        if fp32_peak:
            row.pct_of_fp32_peak = round(100 * row.gflop_per_s / fp32_peak, 1)


def _speedups(rows: list[Row]) -> None:
    """Speed-up of each row vs the reference at the same size and batch (ratio of medians)."""
    reference = {(r.height, r.width, r.batch): r.median_ms for r in rows if r.target == REFERENCE and r.median_ms}
    for row in rows:
        base = reference.get((row.height, row.width, row.batch))
        if row.median_ms and base:
            row.speedup = round(base / row.median_ms, 3)


def environment(threads: int, device: str) -> dict[str, Any]:
    """The machine and library versions a report was measured with."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": available_cpus(),
        "threads": threads,
        "omp_wait_policy": wait_policy(),
        "ort_intra_op_spinning": ORT_SPINNING,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    from lightbsr.tensorrt.loader import import_tensorrt  # the one probe (tensorrt-stubs alone is not TensorRT)

    found = import_tensorrt()
    if found is not None:
        info["tensorrt"] = found.version if found.name == "tensorrt" else f"{found.name} {found.version}"
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    from lightbsr._version import __version__

    info["lightbsr"] = __version__
    return info
