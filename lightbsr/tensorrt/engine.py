"""TensorRT engine metadata shared by the builder (export) and the runtime: pure Python, no tensorrt or torch.

An engine ``model.engine`` always travels with a JSON sidecar ``model.engine.json``
(:class:`EngineSidecar`) saying what it was built from and for: TensorRT version,
GPU, precision, shape profiles, ONNX hash and build flags. Before deserializing an
engine, :func:`check_engine` compares the sidecar with the machine and explains a
mismatch in one line (:class:`~lightbsr.errors.EngineMismatchError`) instead of
letting TensorRT fail with a serialization error.

Shapes: the user gives the ``lr`` range of each optimization profile
(:class:`ShapeRange`); :func:`derive_profile` gives every other dynamic input its
shape from the contract (IDR tensors of the restorer graph, ``drp``/``hr`` of teachers).

:class:`EngineCache` keeps engines in a directory keyed by everything that makes an
engine differ (:func:`cache_key`); it builds through a callable it is given, so this
module never needs TensorRT.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from lightbsr._version import __version__
from lightbsr.contract import IDR_CHANNEL, IDR_SPATIAL, IDR_VECTOR, INPUT_LR
from lightbsr.cuda import import_cudart
from lightbsr.errors import ConfigError, EngineMismatchError
from lightbsr.files import atomic_output, sha256_file

SIDECAR_SCHEMA = "lightbsr.engine/1"
SIDECAR_SUFFIX = ".json"
CACHE_ENV = "LIGHTBSR_CACHE"

# Teacher inputs (not part of the student contract): the degradation prior and the HR image.
INPUT_DRP = "drp"
INPUT_HR = "hr"

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
"""What an engine computes in (its sidecar's precision): the lowest precision its kernels may use."""
HARDWARE_COMPATIBILITY = ("none", "ampere+", "same-cc")

Shape = tuple[int, ...]
Dims = Sequence[int | None]  # an ONNX input's dims; None where dynamic (dim_param or unknown)


class ShapeRange(NamedTuple):
    """min/opt/max shapes of one input in one optimization profile."""

    min: Shape
    opt: Shape
    max: Shape


ShapeProfile = Mapping[str, ShapeRange]  # input name → range: one TensorRT optimization profile

DEFAULT_LR_RANGE = ShapeRange((1, 3, 32, 32), (1, 3, 256, 256), (4, 3, 512, 512))


# --------------------------------------------------------------------------- shapes


def format_shape(shape: Sequence[int]) -> str:
    """``(1, 3, 64, 64)`` → ``"1x3x64x64"`` (trtexec's spelling)."""
    return "x".join(str(int(d)) for d in shape)


def parse_shape(text: str, default_name: str = INPUT_LR) -> tuple[str, Shape]:
    """``"1x3x64x64"`` or trtexec's ``"lr:1x3x64x64"`` → (name, shape); raises ConfigError."""
    name, sep, dims = text.strip().rpartition(":")
    name = name.strip("'") if sep else default_name
    if not name or not re.fullmatch(r"\d+(x\d+)*", dims):
        raise ConfigError(f"bad shape {text!r}: expected NxCxHxW such as 1x3x64x64 (optionally prefixed by lr:)")
    shape = tuple(int(d) for d in dims.split("x"))
    if any(d < 1 for d in shape):
        raise ConfigError(f"bad shape {text!r}: every dimension must be at least 1")
    return name, shape


def check_range(name: str, shapes: ShapeRange) -> ShapeRange:
    """Same rank everywhere and min ≤ opt ≤ max per dimension, or ConfigError."""
    lo, opt, hi = (tuple(int(d) for d in s) for s in shapes)
    if not len(lo) == len(opt) == len(hi):
        raise ConfigError(f"{name}: min/opt/max shapes have different ranks ({lo}, {opt}, {hi})")
    if any(d < 1 for d in lo) or not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
        raise ConfigError(
            f"{name}: shapes must satisfy 1 ≤ min ≤ opt ≤ max in every dimension, got "
            f"{format_shape(lo)} / {format_shape(opt)} / {format_shape(hi)}"
        )
    return ShapeRange(lo, opt, hi)


# ranks of the inputs the contract knows (IDR tensors; drp is a vector or its spatially constant map)
_CONTRACT_RANKS = {
    INPUT_LR: (4,),
    IDR_CHANNEL: (2,),
    IDR_SPATIAL: (4,),
    IDR_VECTOR: (2,),
    INPUT_DRP: (2, 4),
    INPUT_HR: (4,),
}


def derive_input_shape(name: str, dims: Dims, lr_shape: Shape, scale: int | None = None) -> Shape:
    """The shape of graph input ``name`` (ONNX ``dims``) that goes with an ``lr`` of ``lr_shape``.

    From the contract: batch follows ``lr``; 4-D inputs (``idr_spatial``, a spatial
    ``drp``) have ``lr``'s height and width, ``hr`` ``scale`` times them; every other
    dimension (channels) must be static in the ONNX. Raises ConfigError when the
    shape cannot be derived or contradicts a static dimension.
    """
    if len(lr_shape) != 4:
        raise ConfigError(f"lr shapes are NCHW (4 dims), got {format_shape(lr_shape)}")
    ranks = _CONTRACT_RANKS.get(name)
    if ranks is not None and len(dims) not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ConfigError(f"input {name} has {len(dims)} dims in the ONNX, the contract says {expected}")
    if name == INPUT_LR:
        wanted: list[int | None] = list(lr_shape)
    elif ranks is not None:
        factor = 1
        if name == INPUT_HR:
            if scale is None:
                raise ConfigError("the ONNX has an hr input but no lightbsr.scale metadata to size it")
            factor = scale
        batch, _, height, width = lr_shape
        wanted = [batch] + [None] * (len(dims) - 1)
        if len(dims) == 4:
            wanted[2:] = [height * factor, width * factor]
    else:
        wanted = [None] * len(dims)
    shape = []
    for axis, (have, want) in enumerate(zip(dims, wanted, strict=True)):
        if want is None:
            if have is None:
                raise ConfigError(
                    f"input {name}: dimension {axis} is dynamic in the ONNX and the contract does not size it"
                )
            want = have
        elif have is not None and have != want:
            raise ConfigError(
                f"input {name}: dimension {axis} is fixed to {have} in the ONNX but the lr shape "
                f"{format_shape(lr_shape)} needs {want}"
            )
        shape.append(want)
    return tuple(shape)


def derive_profile(lr: ShapeRange, inputs: Mapping[str, Dims], scale: int | None = None) -> dict[str, ShapeRange]:
    """One optimization profile: the ``lr`` range and the derived range of every other dynamic input.

    Inputs with only static dimensions need no profile entry and are left out.
    """
    if INPUT_LR not in inputs:
        raise ConfigError(f"the ONNX has no {INPUT_LR!r} input (inputs: {', '.join(inputs) or 'none'})")
    lr = check_range(INPUT_LR, lr)
    profile = {}
    for name, dims in inputs.items():
        ranges = check_range(name, ShapeRange(*(derive_input_shape(name, dims, shape, scale) for shape in lr)))
        if name == INPUT_LR or any(d is None for d in dims):
            profile[name] = ranges
    return profile


def profile_to_json(profile: ShapeProfile) -> dict[str, dict[str, list[int]]]:
    return {name: {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)} for name, r in profile.items()}


def profile_from_json(data: Mapping[str, Mapping[str, Sequence[int]]]) -> dict[str, ShapeRange]:
    return {name: ShapeRange(tuple(r["min"]), tuple(r["opt"]), tuple(r["max"])) for name, r in data.items()}


# --------------------------------------------------------------------------- versions and GPUs


def parse_version(text: str) -> tuple[int, ...]:
    """``"10.13.0.35"`` → (10, 13, 0, 35); ``"10"`` → (10,); raises ConfigError."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    if not match:
        raise ConfigError(f"bad TensorRT version {text!r}")
    return tuple(int(part) for part in match.group(1).split("."))


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as the engine checks see it."""

    name: str
    compute_capability: str  # "8.7"

    @property
    def cc(self) -> tuple[int, int]:
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)


def detect_gpu(device: int = 0) -> GpuInfo | None:
    """Name and compute capability of CUDA device ``device``, or None where there is none.

    Tries cuda-python (the [trt] extra), then torch, then ``nvidia-smi``; imports lazily.
    """
    cudart = import_cudart()
    if cudart is not None:
        with contextlib.suppress(Exception):
            err, props = cudart.cudaGetDeviceProperties(device)
            if int(err) == 0:
                name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
                return GpuInfo(name.rstrip("\x00"), f"{props.major}.{props.minor}")
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available() and device < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(device)
            return GpuInfo(torch.cuda.get_device_name(device), f"{major}.{minor}")
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["nvidia-smi", f"--id={device}", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
        name, _, cc = out.rpartition(",")
        if name and re.fullmatch(r"\d+\.\d+", cc.strip()):
            return GpuInfo(name.strip(), cc.strip())
    return None


# --------------------------------------------------------------------------- build settings


@dataclass(frozen=True)
class BuildSettings:
    """What the user asks of an engine build (``lightbsr build`` flags); see the export builder for their meaning.

    ``profiles`` holds the ``lr`` range of each optimization profile; the other inputs'
    ranges are derived from it. ``strongly_typed`` None means "decide from the ONNX".
    """

    profiles: tuple[ShapeRange, ...] = (DEFAULT_LR_RANGE,)
    fp16: bool = False
    int8: bool = False
    strongly_typed: bool | None = None
    workspace_mib: int | None = None
    builder_optimization_level: int | None = None
    version_compatible: bool = False
    hardware_compatibility: str = "none"

    def __post_init__(self) -> None:
        if not self.profiles:
            raise ConfigError("at least one shape profile is needed")
        for lr in self.profiles:
            check_range(INPUT_LR, lr)
            if len(lr.min) != 4:
                raise ConfigError(f"lr shapes are NCHW (4 dims), got {format_shape(lr.min)}")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise ConfigError(
                f"unknown hardware compatibility {self.hardware_compatibility!r} "
                f"(choose from {', '.join(HARDWARE_COMPATIBILITY)})"
            )
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise ConfigError(f"--workspace must be at least 1 MiB, got {self.workspace_mib}")
        if self.builder_optimization_level is not None and not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError(f"--builder-optimization-level must be 0 to 5, got {self.builder_optimization_level}")

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["profiles"] = [[list(s) for s in lr] for lr in self.profiles]
        return data


# --------------------------------------------------------------------------- sidecar


@dataclass(frozen=True)
class EngineSidecar:
    """The JSON written next to every engine (``model.engine.json``)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: tuple[dict[str, ShapeRange], ...]
    onnx_sha256: str
    engine_sha256: str
    onnx_metadata: dict[str, str] = field(default_factory=dict)  # lightbsr.* metadata_props of the ONNX
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    strongly_typed: bool = False
    builder_flags: tuple[str, ...] = ()
    lightbsr_version: str = __version__
    created_at: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    schema: str = SIDECAR_SCHEMA

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["profiles"] = [profile_to_json(p) for p in self.profiles]
        data["builder_flags"] = list(self.builder_flags)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EngineSidecar:
        """Parse a sidecar dict; raises ValueError/KeyError/TypeError on a malformed one."""
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != SIDECAR_SCHEMA:
            raise ValueError(f"unknown sidecar schema {data.get('schema')!r} (this lightbsr reads {SIDECAR_SCHEMA})")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["profiles"] = tuple(profile_from_json(p) for p in data["profiles"])
        values["builder_flags"] = tuple(data.get("builder_flags", ()))
        sidecar = cls(**values)
        for name in ("tensorrt_version", "gpu_name", "compute_capability", "precision", "onnx_sha256", "engine_sha256"):
            if not isinstance(getattr(sidecar, name), str):
                raise TypeError(f"{name} must be a string")
        return sidecar


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    path = Path(engine_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(engine_path: str | os.PathLike[str], sidecar: EngineSidecar) -> Path:
    path = sidecar_path(engine_path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(sidecar.to_json(), indent=2) + "\n")
    return path


def read_sidecar(engine_path: str | os.PathLike[str]) -> EngineSidecar:
    """The sidecar of ``engine_path``; EngineMismatchError (one line) when it is missing or corrupt."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(
            f"{engine_path}: no sidecar {path.name}, so it cannot be checked against this machine; "
            "rebuild it with `lightbsr build`"
        )
    try:
        return EngineSidecar.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise EngineMismatchError(
            f"{path}: corrupt engine sidecar ({err}); rebuild the engine with `lightbsr build`"
        ) from err


# --------------------------------------------------------------------------- compatibility


def version_compatible_runtime(built: str, runtime: str) -> bool:
    """Whether a version-compatible engine built with TensorRT ``built`` runs on ``runtime``.

    Newer runtimes of the same major version, plus the documented cross-major pairs
    (8 → 10, 10 → 11); never older runtimes.
    """
    b, r = parse_version(built), parse_version(runtime)
    return r >= b and (r[0] == b[0] or (b[0], r[0]) in {(8, 10), (10, 11)})


def check_compatibility(
    sidecar: EngineSidecar,
    *,
    tensorrt_version: str,
    gpu: GpuInfo,
    onnx_sha256: str | None = None,
    engine: str = "engine",
) -> list[str]:
    """Raise EngineMismatchError if the engine cannot run here; return warnings for what merely may be slower."""
    built, here = parse_version(sidecar.tensorrt_version), parse_version(tensorrt_version)
    if built[:3] != here[:3]:
        if not sidecar.version_compatible:
            raise EngineMismatchError(
                f"{engine} was built with TensorRT {sidecar.tensorrt_version} but TensorRT {tensorrt_version} is "
                "installed; rebuild it here (or build with --version-compatible)"
            )
        if not version_compatible_runtime(sidecar.tensorrt_version, tensorrt_version):
            raise EngineMismatchError(
                f"{engine} is version-compatible from TensorRT {sidecar.tensorrt_version}, which does not extend to "
                f"the installed TensorRT {tensorrt_version}; rebuild it here"
            )
    built_cc = GpuInfo(sidecar.gpu_name, sidecar.compute_capability).cc
    where = f"{sidecar.gpu_name} (compute capability {sidecar.compute_capability})"
    here_gpu = f"{gpu.name} (compute capability {gpu.compute_capability})"
    level = sidecar.hardware_compatibility
    if level == "ampere+":
        if gpu.cc < (8, 0):
            raise EngineMismatchError(f"{engine} is built for Ampere and newer GPUs; {here_gpu} is older")
    elif built_cc != gpu.cc:
        hint = "" if level == "same-cc" else " (or build with --hardware-compatibility ampere+)"
        raise EngineMismatchError(f"{engine} was built for {where}, this GPU is {here_gpu}; rebuild it here{hint}")
    if onnx_sha256 is not None and onnx_sha256 != sidecar.onnx_sha256:
        raise EngineMismatchError(
            f"{engine} was built from another ONNX (sha256 {sidecar.onnx_sha256[:12]}…, this one is "
            f"{onnx_sha256[:12]}…); rebuild it"
        )
    warnings = []
    if level == "none" and gpu.name != sidecar.gpu_name:
        warnings.append(f"{engine} was built on {sidecar.gpu_name}, running on {gpu.name}: it may be slower")
    return warnings


def check_engine(
    engine_path: str | os.PathLike[str],
    *,
    tensorrt_version: str,
    gpu: GpuInfo,
    onnx_sha256: str | None = None,
) -> tuple[EngineSidecar, list[str]]:
    """Read and check the sidecar of ``engine_path`` (and that it describes these engine bytes) before loading it."""
    path = Path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(f"{path}: no such engine file")
    sidecar = read_sidecar(path)
    if sha256_file(path) != sidecar.engine_sha256:
        raise EngineMismatchError(f"{path}: the engine does not match its sidecar (replaced or corrupt); rebuild it")
    warnings = check_compatibility(
        sidecar, tensorrt_version=tensorrt_version, gpu=gpu, onnx_sha256=onnx_sha256, engine=str(path)
    )
    return sidecar, warnings


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$LIGHTBSR_CACHE`` or ``~/.cache/lightbsr/engines``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightbsr" / "engines"


def cache_key(
    onnx_sha256: str, tensorrt_version: str, gpu: GpuInfo, settings: BuildSettings, lightbsr_version: str = __version__
) -> str:
    """Hex digest of everything that makes one engine differ from another (a new lightbsr builds anew)."""
    fields_ = {
        "onnx_sha256": onnx_sha256,
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu.name,
        "compute_capability": gpu.compute_capability,
        "settings": settings.to_json(),
        "schema": SIDECAR_SCHEMA,
        "lightbsr_version": lightbsr_version,
    }
    return hashlib.sha256(json.dumps(fields_, sort_keys=True).encode()).hexdigest()[:32]


BuildFunction = Callable[[Path, Path, BuildSettings], EngineSidecar]


class EngineCache:
    """Engines in one directory, named by :func:`cache_key`, each with its sidecar."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.engine"

    def entries(self) -> Iterable[Path]:
        return sorted(self.directory.glob("*.engine")) if self.directory.is_dir() else []

    def get_or_build(
        self,
        onnx_path: str | os.PathLike[str],
        settings: BuildSettings,
        *,
        tensorrt_version: str,
        gpu: GpuInfo,
        build: BuildFunction,
    ) -> Path:
        """The cached engine for these inputs, built with ``build(onnx, engine, settings)`` when absent or stale."""
        onnx_sha256 = sha256_file(onnx_path)
        path = self.path_for(cache_key(onnx_sha256, tensorrt_version, gpu, settings))
        if path.is_file():
            with contextlib.suppress(EngineMismatchError):
                check_engine(path, tensorrt_version=tensorrt_version, gpu=gpu, onnx_sha256=onnx_sha256)
                return path
        build(Path(onnx_path), path, settings)
        check_engine(path, tensorrt_version=tensorrt_version, gpu=gpu, onnx_sha256=onnx_sha256)
        return path
