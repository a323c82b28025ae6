"""The tensorrt backend without TensorRT: a stand-in ``tensorrt`` module whose "engines" run on ONNX Runtime.

What is checked here is lightbsr's side: which engines are built or reused and when,
sidecar checks, shape profiles and the tiles that fit them, batches split beyond a
profile, float16 I/O conversion, device buffers by address, split vs full engines, and
the one-line errors where TensorRT, a GPU or a fitting engine is missing. Whether real
TensorRT accepts the calls is test_runtime_tensorrt_gpu.py's job, on a GPU machine.

The stand-in's engine file is JSON: the ONNX bytes, the I/O type and the profiles a
build gave it; its execution context reads inputs from, and writes outputs to, the fake
device memory at the addresses the backend bound, so a wrong address, shape or dtype
shows up as a wrong image.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from cli_errors import one_error_line
from runtime_tensorrt_graphs import expected_sr, write_toy_model

from lightbsr import contract
from lightbsr.benchmarks.consistency import psnr
from lightbsr.cli import main
from lightbsr.errors import BackendUnavailableError, ConfigError, EngineMismatchError, ModelFileError
from lightbsr.files import sha256_file
from lightbsr.runtime import Upscaler, device_buffers
from lightbsr.runtime import tensorrt_backend as trtb
from lightbsr.runtime.tiling import balanced_tile
from lightbsr.tensorrt import autobuild, loader
from lightbsr.tensorrt.engine import (
    BuildSettings,
    EngineCache,
    EngineSidecar,
    GpuInfo,
    ShapeRange,
    derive_profile,
    profile_from_json,
    profile_to_json,
    sidecar_path,
    write_sidecar,
)
from lightbsr.tensorrt.onnx_info import read_onnx_info
from lightbsr.tensorrt.plan import plan_build

ROOT = Path(__file__).resolve().parent.parent
H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
TRT10 = "10.13.0.35"


# --------------------------------------------------------------------------- the stand-ins


class FakeMemory(device_buffers.DeviceBuffers):
    """Device memory as numpy byte arrays keyed by made-up addresses."""

    kind = "fake"

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[int, np.ndarray] = {}
        self._next = 0x10000
        self.allocations = 0

    @property
    def stream(self) -> int:
        return 7

    def allocate(self, nbytes: int) -> int:
        pointer, self._next = self._next, self._next + nbytes + 4096
        self.blocks[pointer] = np.zeros(nbytes, np.uint8)
        self.allocations += 1
        return pointer

    def free(self, pointer: int) -> None:
        del self.blocks[pointer]

    def upload(self, pointer: int, array: np.ndarray) -> None:
        self.blocks[pointer][: array.nbytes] = array.reshape(-1).view(np.uint8)

    def download(self, pointer: int, out: np.ndarray) -> None:
        out.reshape(-1).view(np.uint8)[:] = self.blocks[pointer][: out.nbytes]

    def synchronize(self) -> None:
        pass

    def read(self, pointer: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        size = int(np.prod(shape)) * dtype.itemsize
        return self.blocks[pointer][:size].view(dtype).reshape(shape).copy()

    def write(self, pointer: int, array: np.ndarray) -> None:
        self.blocks[pointer][: array.nbytes] = array.reshape(-1).view(np.uint8)


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


_TYPES = {"FLOAT": np.dtype(np.float32), "HALF": np.dtype(np.float16), "INT8": np.dtype(np.int8)}


class FakeEngine:
    def __init__(self, spec: dict[str, Any], fake: FakeTensorRT) -> None:
        self.fake = fake
        self.session = ort.InferenceSession(base64.b64decode(spec["onnx"]), providers=["CPUExecutionProvider"])
        self.io_type = spec["io"]
        self.profiles = [profile_from_json(p) for p in spec["profiles"]]
        self.inputs = {i.name: i.shape for i in self.session.get_inputs()}
        self.outputs = {o.name: o.shape for o in self.session.get_outputs()}
        self.names = [*self.inputs, *self.outputs]
        self.num_io_tensors = len(self.names)
        self.num_optimization_profiles = len(self.profiles)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_dtype(self, name: str) -> Named:
        return Named(self.io_type)

    def get_tensor_format(self, name: str) -> Named:
        return Named("LINEAR")

    def get_tensor_mode(self, name: str) -> Named:
        return Named("INPUT" if name in self.inputs else "OUTPUT")

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        dims = {**self.inputs, **self.outputs}[name]
        return tuple(d if isinstance(d, int) else -1 for d in dims)

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return list(self.profiles[index][name])

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.profile = 0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        if self.engine.fake.profile_error:  # as the bindings do: log the reason, then raise (never return False)
            self.engine.fake.logger.log(self.engine.fake.ILogger.Severity.ERROR, self.engine.fake.profile_error)
            raise RuntimeError("Error Code 3: API Usage Error (set_optimization_profile_async)")
        self.profile = index
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.profiles[self.profile][name]
        if not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)):
            self.engine.fake.logger.log(self.engine.fake.ILogger.Severity.ERROR, f"{name}: shape out of profile")
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, pointer: int) -> bool:
        self.addresses[name] = pointer
        return True

    def _compute(self, memory: FakeMemory | None) -> dict[str, np.ndarray]:
        dtype = _TYPES[self.engine.io_type]
        if memory is None:  # shapes only
            feeds = {n: np.zeros(s, np.float32) for n, s in self.shapes.items()}
        else:
            feeds = {n: memory.read(self.addresses[n], s, dtype).astype(np.float32) for n, s in self.shapes.items()}
        return dict(zip(self.engine.outputs, self.engine.session.run(None, feeds), strict=True))

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._compute(None)[name].shape)

    def execute_async_v3(self, stream: int) -> bool:
        assert stream == 7
        memory = self.engine.fake.memory
        self.engine.fake.runs.append((self.engine.session.get_modelmeta().graph_name, dict(self.shapes)))
        for name, value in self._compute(memory).items():
            memory.write(self.addresses[name], value.astype(_TYPES[self.engine.io_type]))
        return True


class FakeTensorRT(types.ModuleType):
    """Enough of ``tensorrt`` for the backend: Runtime, ILogger, engines and contexts (see the module docstring)."""

    def __init__(self, version: str = TRT10, name: str = "tensorrt") -> None:
        super().__init__(name)
        self.__version__ = version
        self.memory: FakeMemory | None = None
        self.runs: list[tuple[str, dict[str, tuple[int, ...]]]] = []
        self.logger: Any = None
        self.profile_error = ""  # set: switching optimization profiles fails with this reason
        fake = self

        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3

        class ILogger:
            def __init__(self) -> None:
                pass

        ILogger.Severity = Severity  # type: ignore[attr-defined]
        self.ILogger = ILogger

        class Runtime:
            def __init__(self, logger: Any) -> None:
                fake.logger = logger
                self.engine_host_code_allowed = False

            def deserialize_cuda_engine(self, data: bytes) -> FakeEngine | None:
                try:
                    return FakeEngine(json.loads(data), fake)
                except ValueError:
                    fake.logger.log(Severity.ERROR, "Serialization assertion failed: magic tag mismatch")
                    return None

        self.Runtime = Runtime
        if name == "tensorrt":
            self.Builder = object  # the full module builds (the builder itself is a BuildFunction in these tests)


def write_fake_engine(
    onnx_path: Path, engine: Path, settings: BuildSettings, *, version: str = TRT10, gpu: GpuInfo = H100, io: str = ""
) -> EngineSidecar:
    """What ``lightbsr build`` would write (engine + sidecar), as the stand-in's JSON engine."""
    info = read_onnx_info(onnx_path)
    plan = plan_build(version, settings, info.precision, info.uint8_qdq)
    profiles = tuple(derive_profile(lr, info.inputs, info.scale) for lr in settings.profiles)
    io = io or ("HALF" if plan.precision == "fp16" else "FLOAT")
    spec = {"onnx": base64.b64encode(onnx_path.read_bytes()).decode(), "io": io}
    engine.parent.mkdir(parents=True, exist_ok=True)  # as atomic_output does for the real builder
    engine.write_text(json.dumps({**spec, "profiles": [profile_to_json(p) for p in profiles]}))
    sidecar = EngineSidecar(
        tensorrt_version=version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=plan.precision,
        profiles=profiles,
        onnx_sha256=info.sha256,
        engine_sha256=sha256_file(engine),
        onnx_metadata=info.metadata,
    )
    write_sidecar(engine, sidecar)
    return sidecar


class Builds:
    """A BuildFunction that records what it built."""

    def __init__(self) -> None:
        self.built: list[tuple[str, BuildSettings]] = []

    def __call__(self, onnx_path: Path, engine: Path, settings: BuildSettings, device: int = 0) -> EngineSidecar:
        self.built.append((onnx_path.name, settings))
        return write_fake_engine(onnx_path, engine, settings)


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    """The stand-in installed as ``tensorrt``, an H100 as the GPU and fake device memory as the buffers."""
    fake = FakeTensorRT()
    fake.memory = FakeMemory()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(loader, "detect_gpu", lambda index=0: H100)
    monkeypatch.setattr(trtb, "open_buffers", lambda buffers, index: fake.memory)
    return fake


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    return write_toy_model(tmp_path / "toy.onnx")


@pytest.fixture
def lr() -> np.ndarray:
    return np.random.default_rng(0).random((3, 40, 28)).astype(np.float32)


def _prebuilt(
    onnx_model: Path, folder: Path, lr_range: ShapeRange, estimator_range: ShapeRange | None = None, **options: Any
) -> Path:
    """``folder/toy.engine`` and its split engines, as ``lightbsr build`` writes them."""
    folder.mkdir(exist_ok=True)
    graphs = contract.resolve_graphs(onnx_model)
    full, estimator, restorer = graphs.full, graphs.estimator, graphs.restorer
    target = folder / "toy.engine"
    est_engine, res_engine = contract.split_paths(target)
    for source, engine, shapes in (
        (full, target, lr_range),
        (estimator, est_engine, estimator_range or lr_range),
        (restorer, res_engine, lr_range),
    ):
        if source.is_file():
            write_fake_engine(source, engine, BuildSettings(profiles=(shapes,)), **options)
    return target


# --------------------------------------------------------------------------- TensorRT and the GPU missing


def test_import_tensorrt_needs_a_real_module(monkeypatch: pytest.MonkeyPatch) -> None:
    stub_namespace = types.ModuleType("tensorrt")  # what tensorrt-stubs alone leaves importable
    monkeypatch.setitem(sys.modules, "tensorrt", stub_namespace)
    for name in ("tensorrt_lean", "tensorrt_dispatch"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: ImportError
    assert loader.import_tensorrt() is None
    lean = FakeTensorRT(name="tensorrt_lean")
    monkeypatch.setitem(sys.modules, "tensorrt_lean", lean)
    found = loader.import_tensorrt()
    assert found is not None and found.name == "tensorrt_lean" and found.lean and found.module is lean
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    found = loader.import_tensorrt()
    assert found is not None and found.name == "tensorrt" and not found.lean and found.version == TRT10


def test_missing_tensorrt_or_gpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, toy: Path) -> None:
    for name in loader.RUNTIME_MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailableError, match="needs TensorRT and an NVIDIA GPU; found: no tensorrt module"):
        trtb.load(toy)
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT())
    monkeypatch.setattr(loader, "detect_gpu", lambda index=0: None)
    with pytest.raises(BackendUnavailableError, match=f"found: tensorrt {TRT10} but no CUDA device 1"):
        trtb.load(toy, device="cuda:1")
    with pytest.raises(ConfigError, match="NVIDIA GPUs only"):
        trtb.load(toy, device="cpu")
    with pytest.raises(ConfigError, match="bf16"):
        trtb.load(toy, precision="bf16")
    with pytest.raises(ConfigError, match="unknown tensorrt backend option"):
        trtb.load(toy, providers=["CPUExecutionProvider"])


def test_buffers_need_torch_cuda_or_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_buffers, "_cuda_torch", lambda: None)
    monkeypatch.setattr(device_buffers, "import_cudart", lambda: None)
    with pytest.raises(BackendUnavailableError, match="torch with CUDA or cuda-python"):
        device_buffers.open_buffers("auto", 0)
    with pytest.raises(BackendUnavailableError, match="buffers='torch' needs torch built with CUDA"):
        device_buffers.open_buffers("torch", 0)
    with pytest.raises(ConfigError, match="unknown buffers"):
        device_buffers.open_buffers("pinned", 0)
    memory = FakeMemory()
    assert device_buffers.open_buffers(memory, 0) is memory


def test_buffer_slots_grow_and_are_reused() -> None:
    memory = FakeMemory()
    first = memory.slot("restorer:lr", 100)
    assert memory.slot("restorer:lr", 60) == first and memory.allocations == 1
    bigger = memory.slot("restorer:lr", 200)
    assert memory.allocations == 2 and first not in memory.blocks and bigger in memory.blocks
    memory.release()
    assert not memory.blocks


# --------------------------------------------------------------------------- shapes and profiles


def test_engine_shapes_follow_images_and_tiling() -> None:
    shapes = trtb.engine_shapes([(300, 200), (90, 700)], tile=256, tile_batch=4)
    assert (shapes.image, shapes.tile, shapes.batch) == (1024, 256, 4)  # 700 → next power of two
    assert shapes.lr_range(contract.GRAPH_ESTIMATOR) == ShapeRange((1, 3, 8, 8), (1, 3, 1024, 1024), (1, 3, 1024, 1024))
    assert shapes.lr_range(contract.GRAPH_RESTORER) == ShapeRange((1, 3, 8, 8), (4, 3, 256, 256), (4, 3, 256, 256))
    assert shapes.lr_range(contract.GRAPH_FULL) == shapes.lr_range(contract.GRAPH_RESTORER)
    per_tile = trtb.engine_shapes([(30, 20)], tile=256, shared_idr=False)
    assert (per_tile.image, per_tile.tile) == (64, 64)  # the tile never exceeds the image
    assert per_tile.lr_range(contract.GRAPH_ESTIMATOR) == per_tile.lr_range(contract.GRAPH_RESTORER)
    whole = trtb.engine_shapes([(130, 20)], tile=0, tile_batch=8)
    assert (whole.image, whole.tile, whole.batch) == (256, 256, 1)
    assert trtb.engine_shapes([]).image == autobuild.DEFAULT_IMAGE_SIDE
    assert trtb.engine_shapes([(10, 10)], tile=None).tile == 64
    with pytest.raises(ConfigError, match="at least 1"):
        trtb.EngineShapes(batch=0)
    with pytest.raises(ConfigError, match="at least 8"):
        trtb.EngineShapes(tile=4)


def _profile(low: tuple[int, ...], high: tuple[int, ...], idr: int = 6) -> dict[str, ShapeRange]:
    return {
        contract.INPUT_LR: ShapeRange(low, high, high),
        contract.IDR_CHANNEL: ShapeRange((low[0], idr), (high[0], idr), (high[0], idr)),
    }


def test_choose_profile_picks_the_first_that_fits_and_names_the_ranges() -> None:
    profiles = [_profile((1, 3, 8, 8), (2, 3, 64, 64)), _profile((1, 3, 64, 64), (1, 3, 512, 512))]
    lr_small = {contract.INPUT_LR: (2, 3, 32, 40), contract.IDR_CHANNEL: (2, 6)}
    assert trtb.choose_profile(profiles, lr_small, "e") == 0
    assert trtb.choose_profile(profiles, {contract.INPUT_LR: (1, 3, 100, 64), contract.IDR_CHANNEL: (1, 6)}, "e") == 1
    with pytest.raises(ConfigError, match=r"lr of shape 1x3x600x64 is outside the engine's shape ranges 1x3x8x8"):
        trtb.choose_profile(profiles, {contract.INPUT_LR: (1, 3, 600, 64), contract.IDR_CHANNEL: (1, 6)}, "e")
    with pytest.raises(ConfigError, match=r"input idr_channel of shape 2x5 is outside"):
        trtb.choose_profile(profiles, {contract.INPUT_LR: (2, 3, 32, 40), contract.IDR_CHANNEL: (2, 5)}, "e")


# --------------------------------------------------------------------------- the engine cache


def _build(toy: Path, cache: Path, builds: Builds, shapes: trtb.EngineShapes, **options: Any) -> dict[str, Path]:
    found = loader.import_tensorrt()
    assert found is not None
    engines, _ = trtb.build_or_reuse(
        toy, shapes=shapes, fp16=False, cache=EngineCache(cache), tensorrt=found, gpu=H100, builder=builds, **options
    )
    return engines


def test_split_engines_are_built_once_then_reused_with_a_stand_in(
    fake_trt: FakeTensorRT, toy: Path, tmp_path: Path
) -> None:
    builds, shapes, cache = Builds(), trtb.EngineShapes(image=64, tile=16, batch=2), tmp_path / "cache"
    messages: list[str] = []
    engines = _build(toy, cache, builds, shapes, report=messages.append)
    assert set(engines) == {contract.GRAPH_ESTIMATOR, contract.GRAPH_RESTORER}
    assert [name for name, _ in builds.built] == ["toy.estimator.onnx", "toy.restorer.onnx"]
    assert builds.built[1][1].profiles == (shapes.lr_range(contract.GRAPH_RESTORER),)
    assert len(messages) == 2 and "first use" in messages[0]
    assert all(path.parent == cache and sidecar_path(path).is_file() for path in engines.values())
    assert _build(toy, cache, builds, shapes) == engines and len(builds.built) == 2  # reused
    _build(toy, cache, builds, trtb.EngineShapes(image=64, tile=32, batch=2))  # another tile: another restorer
    assert len(builds.built) == 3 and builds.built[2][0] == "toy.restorer.onnx"
    engines[contract.GRAPH_RESTORER].write_text("{}")  # replaced behind the sidecar's back: rebuilt
    assert _build(toy, cache, builds, shapes) == engines and len(builds.built) == 4
    toy.with_name("toy.restorer.onnx").unlink()  # no split pair: the full graph
    assert set(_build(toy, cache, builds, shapes)) == {contract.GRAPH_FULL}
    for path in toy.parent.glob("toy*.onnx"):
        path.unlink()
    with pytest.raises(ModelFileError, match="no such model"):
        _build(toy, cache, builds, shapes)


def test_builds_refused_before_building_with_a_stand_in(fake_trt: FakeTensorRT, toy: Path, tmp_path: Path) -> None:
    builds = Builds()
    found = loader.import_tensorrt()
    assert found is not None
    lean = loader.TensorRTModule(found.module, "tensorrt_lean", TRT10)
    with pytest.raises(BackendUnavailableError, match="needs the full tensorrt package"):
        trtb.build_or_reuse(
            toy, shapes=trtb.EngineShapes(), fp16=False, cache=EngineCache(tmp_path), tensorrt=lean, gpu=H100
        )
    trt11 = loader.TensorRTModule(found.module, "tensorrt", "11.0.0.1")
    with pytest.raises(ConfigError, match="--fp16 cannot be honoured by TensorRT 11"):
        trtb.build_or_reuse(
            toy, shapes=trtb.EngineShapes(), fp16=True, cache=EngineCache(tmp_path), tensorrt=trt11, gpu=H100
        )
    with pytest.raises(ConfigError, match="build from an ONNX with --fp16"):
        _build(toy, tmp_path, builds, trtb.EngineShapes(), precision="fp16")  # builder left without --fp16
    assert builds.built == []


# --------------------------------------------------------------------------- running engines


@pytest.mark.parametrize("fp16", [False, True])
def test_stand_in_tensorrt_backend_reproduces_its_onnx_on_onnxruntime(
    fake_trt: FakeTensorRT, toy: Path, lr: np.ndarray, tmp_path: Path, fp16: bool
) -> None:
    builds = Builds()
    shapes = trtb.engine_shapes([lr.shape[1:]], tile=16, tile_batch=2)
    upscaler = Upscaler(
        toy,
        backend="tensorrt",
        tile=16,
        tile_overlap=4,
        tile_batch=3,  # more than the engines take: run in chunks of 2
        precision="fp16" if fp16 else None,
        engine_cache=tmp_path / "cache",
        engine_shapes=shapes,
        builder=builds,
    )
    backend = upscaler.backend
    assert backend.name == "tensorrt" and backend.can_split and backend.precision == ("fp16" if fp16 else "fp32")
    assert backend.max_input_size == (16, 16) and len(backend.built) == 2
    sr = upscaler.upscale_lr(lr)
    reference = Upscaler(toy, backend="onnxruntime", tile=16, tile_overlap=4).upscale_lr(lr)
    assert psnr(sr, expected_sr(lr)) >= 60 and psnr(reference, expected_sr(lr)) >= 60
    assert psnr(sr, reference) >= (40 if fp16 else 60)  # float16 I/O rounds the inputs
    graphs = [graph for graph, _ in fake_trt.runs]
    assert graphs[0] == "toy_estimator" and set(graphs[1:]) == {"toy_restorer"}
    assert fake_trt.runs[0][1][contract.INPUT_LR] == (1, 3, 40, 28)  # the shared estimate: the whole image
    batches = [shapes[contract.INPUT_LR][0] for _, shapes in fake_trt.runs[1:]]
    assert max(batches) == 2 and sum(batches) == upscaler.last_run.tiles
    info = upscaler.describe()
    assert info["engine_precisions"] == {"estimator": backend.precision, "restorer": backend.precision}
    assert info["buffers"] == "fake" and info["max_input_size"] == [16, 16]


def test_prebuilt_split_engines_and_tile_cap_with_a_stand_in(fake_trt: FakeTensorRT, toy: Path, tmp_path: Path) -> None:
    restorer_range = ShapeRange((1, 3, 8, 8), (1, 3, 32, 32), (2, 3, 48, 32))
    whole = ShapeRange((1, 3, 8, 8), (1, 3, 64, 64), (1, 3, 64, 64))
    engine = _prebuilt(toy, tmp_path / "engines", restorer_range, estimator_range=whole)
    upscaler = Upscaler(engine, tile=64, tile_overlap=4)
    assert upscaler.backend.can_split and upscaler.backend.max_input_size == (48, 32)
    lr = np.random.default_rng(1).random((3, 40, 40)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="tile 64 is larger than the tensorrt backend takes .32×48 at most.; using"):
        sr = upscaler.upscale_lr(lr)  # wider than the restorer takes: the explicit tile is capped to 32
    # capped to 32, then balanced: two tiles a side, each as small as covers 40 px with the overlap
    assert upscaler.last_run.tile == balanced_tile(40, 40, 32, 4) == 22 and upscaler.last_run.tiles == 4
    assert psnr(sr, expected_sr(lr)) >= 60
    assert fake_trt.runs[0][1][contract.INPUT_LR] == (1, 3, 40, 40)  # the whole image to the estimator
    assert all(s[contract.INPUT_LR][2] <= 32 and s[contract.INPUT_LR][3] <= 32 for _, s in fake_trt.runs[1:])
    small = lr[:, :30, :20]  # fits the restorer: one call, no tiles
    assert psnr(Upscaler(engine).upscale_lr(small), expected_sr(small)) >= 60
    split = Upscaler(contract.split_paths(engine)[1])  # a split engine's own path names the pair
    assert split.backend.can_split and psnr(split.upscale_lr(lr), expected_sr(lr)) >= 60
    with pytest.raises(ConfigError, match=r"lr of shape 1x3x40x40 is outside .*keep tiles within it"):
        Upscaler(engine, tile=0).upscale_lr(lr)  # never tile: the restorer cannot take it
    big = np.zeros((3, 70, 20), np.float32)  # the estimator's profile stops at 64 rows
    with pytest.raises(ConfigError, match=r"lr of shape 1x3x70x20 is outside the engine's shape range 1x3x8x8"):
        Upscaler(engine, tile=16).upscale_lr(big)


def test_full_engine_alone_runs_whole_images_and_per_tile_estimates_with_a_stand_in(
    fake_trt: FakeTensorRT, toy: Path, lr: np.ndarray, tmp_path: Path
) -> None:
    for split in contract.split_paths(toy):
        split.unlink()
    engine = _prebuilt(toy, tmp_path / "engines", ShapeRange((1, 3, 8, 8), (1, 3, 64, 64), (1, 3, 64, 64)))
    whole = Upscaler(engine, tile=0)
    assert not whole.backend.can_split
    assert psnr(whole.upscale_lr(lr), expected_sr(lr)) >= 60 and [g for g, _ in fake_trt.runs] == ["toy_full"]
    with pytest.raises(ModelFileError, match=r"no split engines beside it.*--no-shared-idr"):
        Upscaler(engine, tile=16).upscale_lr(lr)
    per_tile = Upscaler(engine, tile=16, tile_overlap=4, shared_idr=False).upscale_lr(lr)
    assert per_tile.shape == (3, 160, 112) and 20 < psnr(per_tile, expected_sr(lr)) < 60  # per-tile means differ


def test_engine_mismatch_is_one_line_before_deserializing_with_a_stand_in(
    fake_trt: FakeTensorRT, toy: Path, tmp_path: Path
) -> None:
    lr_range = ShapeRange((1, 3, 8, 8), (1, 3, 32, 32), (1, 3, 64, 64))
    other_gpu = _prebuilt(toy, tmp_path / "a100", lr_range, gpu=GpuInfo("NVIDIA A100-SXM4-80GB", "8.0"))
    with pytest.raises(EngineMismatchError, match=r"built for NVIDIA A100-SXM4-80GB \(compute capability 8.0\), this"):
        trtb.load(other_gpu)
    other_trt = _prebuilt(toy, tmp_path / "trt", lr_range, version="10.8.0.43")
    with pytest.raises(EngineMismatchError, match=f"built with TensorRT 10.8.0.43 but TensorRT {TRT10} is installed"):
        trtb.load(other_trt)
    assert fake_trt.logger is None  # no TensorRT runtime was created for either
    good = _prebuilt(toy, tmp_path / "good", lr_range)
    with pytest.raises(ConfigError, match="the engine cache, engine shapes and builder apply to ONNX models"):
        trtb.load(good, engine_cache=tmp_path)
    with pytest.raises(ConfigError, match=r"\(fp32 engine\) is fp32; .*for fp16: build from an ONNX with --fp16"):
        trtb.load(good, precision="fp16")
    sidecar_path(contract.split_paths(good)[1]).unlink()
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        trtb.load(good)


def test_foreign_engines_are_refused_with_a_stand_in(fake_trt: FakeTensorRT, toy: Path, tmp_path: Path) -> None:
    lr_range = ShapeRange((1, 3, 8, 8), (1, 3, 32, 32), (1, 3, 64, 64))
    int8_io = _prebuilt(toy, tmp_path / "int8", lr_range, io="INT8")
    with pytest.raises(ModelFileError, match="tensor lr is INT8; lightbsr engines take float32 or float16"):
        trtb.load(int8_io)
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "int8", mixed)
    engine = _prebuilt(toy, mixed, lr_range)
    data = json.loads(sidecar_path(contract.split_paths(engine)[0]).read_text())
    data["onnx_metadata"][contract.META_SOURCE_SHA256] = "another model"
    sidecar_path(contract.split_paths(engine)[0]).write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="were not built from the same model"):
        trtb.load(engine)
    data["onnx_metadata"][contract.META_GRAPH] = contract.GRAPH_RESTORER
    sidecar_path(contract.split_paths(engine)[0]).write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="a lightbsr restorer engine, not the estimator engine"):
        trtb.load(engine)
    corrupt = _prebuilt(toy, tmp_path / "corrupt", lr_range)
    corrupt.write_text("not an engine")
    data = json.loads(sidecar_path(corrupt).read_text())
    data["engine_sha256"] = sha256_file(corrupt)
    sidecar_path(corrupt).write_text(json.dumps(data))
    for path in contract.split_paths(corrupt):
        path.unlink()
    with pytest.raises(EngineMismatchError, match="TensorRT could not load it: Serialization assertion failed"):
        trtb.load(corrupt)


def test_lean_runtime_needs_version_compatible_engines_with_a_stand_in(
    fake_trt: FakeTensorRT, toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _prebuilt(toy, tmp_path / "engines", ShapeRange((1, 3, 8, 8), (1, 3, 32, 32), (1, 3, 64, 64)))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_lean", fake_trt)
    with pytest.raises(EngineMismatchError, match="tensorrt_lean runs version-compatible engines only"):
        trtb.load(engine)


def test_out_of_memory_is_recognised() -> None:
    backend = object.__new__(trtb.TensorRTBackend)
    assert backend.is_out_of_memory(MemoryError("cudaMalloc: CUDA out of memory"))
    assert backend.is_out_of_memory(
        RuntimeError(
            "TensorRT could not run it: Requested amount of GPU memory could not be allocated; failed to allocate"
        )
    )
    assert not backend.is_out_of_memory(RuntimeError("could not run it: shape mismatch"))


# --------------------------------------------------------------------------- the command line


def _write_png(path: Path, height: int = 20, width: int = 14) -> Path:
    import cv2

    image = (np.random.default_rng(5).random((height, width, 3)) * 255).astype(np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def test_cli_without_tensorrt_exits_2_with_one_line_and_no_torch(toy: Path, tmp_path: Path) -> None:
    image = _write_png(tmp_path / "in.png")
    code = (
        "import sys\n"
        "for name in ('torch', 'tensorrt', 'tensorrt_lean', 'tensorrt_dispatch'): sys.modules[name] = None\n"
        "from lightbsr.cli import main\n"
        f"code = main(['upscale', '-i', {str(image)!r}, '-o', {str(tmp_path / 'out.png')!r}, '-m', {str(toy)!r},"
        " '--backend', 'tensorrt'])\n"
        "assert sys.modules['torch'] is None\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "LIGHTBSR_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 2, result.stderr
    assert "needs TensorRT and an NVIDIA GPU" in one_error_line(result.stderr)
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "cache").exists()


def test_cli_engine_cache_option_is_for_tensorrt(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _write_png(tmp_path / "in.png")
    args = ["upscale", "-i", str(image), "-o", str(tmp_path / "out.png"), "-m", str(toy), "--engine-cache", "c"]
    assert main(args) == 2
    assert "--engine-cache is for the tensorrt backend" in one_error_line(capsys.readouterr().err)


def test_cli_builds_engines_on_first_use_then_reuses_them_with_a_stand_in(
    fake_trt: FakeTensorRT,
    toy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    builds = Builds()
    monkeypatch.setattr(autobuild, "_default_builder", builds)
    image = _write_png(tmp_path / "in.png", 20, 14)
    cache = tmp_path / "cache"

    def upscale(*extra: str) -> tuple[dict[str, Any], str]:
        out = tmp_path / "out.png"
        args = ["upscale", "-i", str(image), "-o", str(out), "-m", str(toy), "--backend", "tensorrt", "--overwrite"]
        assert main([*args, "--engine-cache", str(cache), "--tile", "16", "--json", *extra]) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out), captured.err

    report, err = upscale()
    assert len(builds.built) == 2 and err.count("building the TensorRT engine") == 2
    restorer_settings = builds.built[1][1]
    assert restorer_settings.profiles == (ShapeRange((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 16, 16)),)
    assert builds.built[0][1].profiles[0].max == (1, 3, 64, 64)  # the 20-pixel image side, rounded up
    assert len(list(cache.glob("*.engine"))) == 2 and (tmp_path / "out.png").is_file()
    assert report["backend"] == "tensorrt" and report["ok"] == 1 and len(report["built"]) == 2
    _, err = upscale()
    assert len(builds.built) == 2 and "building" not in err  # same image size, tile and TensorRT: reused
    upscale("--tile-batch", "4")
    assert len(builds.built) == 3  # the restorer's batch changed; the estimator engine is reused


def test_profile_switch_error_names_tensorrts_reason_with_a_stand_in(
    fake_trt: FakeTensorRT, toy: Path, tmp_path: Path
) -> None:
    """Stand-in TensorRT (no GPU here) whose set_optimization_profile_async raises, as the real bindings do."""
    small = ShapeRange((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 16, 16))
    large = ShapeRange((1, 3, 17, 17), (1, 3, 32, 32), (1, 3, 32, 32))
    for split in contract.split_paths(toy):
        split.unlink()
    engine = tmp_path / "toy.engine"
    write_fake_engine(toy, engine, BuildSettings(profiles=(small, large)))
    backend = trtb.load(engine)
    assert backend.forward(np.zeros((1, 3, 16, 16), np.float32)).shape == (1, 3, 64, 64)
    fake_trt.profile_error = "profile 1 is in use by another execution context"
    with pytest.raises(RuntimeError, match="cannot select profile 1: profile 1 is in use by another execution context"):
        backend.forward(np.zeros((1, 3, 24, 24), np.float32))


def test_engines_are_built_on_the_device_asked_for_with_a_stand_in(
    fake_trt: FakeTensorRT, toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-in TensorRT and CUDA (no GPU here): two GPUs; an engine is built and tuned on the current device."""
    from lightbsr import cuda

    gpus = {0: GpuInfo("NVIDIA A100-SXM4-80GB", "8.0"), 1: H100}
    current = {"device": 0}
    monkeypatch.setattr(loader, "detect_gpu", lambda index=0: gpus.get(index))
    monkeypatch.setattr(cuda, "select_device", lambda index: current.update(device=index))

    def build_here(onnx_path: Path, engine: Path, settings: BuildSettings) -> EngineSidecar:
        return write_fake_engine(onnx_path, engine, settings, gpu=gpus[current["device"]])

    backend = trtb.load(toy, device="cuda:1", engine_cache=tmp_path / "cache", builder=build_here)
    assert backend.gpu == H100 and backend.device == "cuda:1"
    assert {engine.sidecar.gpu_name for engine in backend.engines} == {H100.name}
