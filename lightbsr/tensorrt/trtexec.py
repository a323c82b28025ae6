"""The ``trtexec`` command line equivalent to a ``lightbsr build``, and its parser (for the round-trip test).

Jetson images ship ``trtexec`` (``/usr/src/tensorrt/bin/trtexec``) but often no
TensorRT Python bindings: ``lightbsr build --print-trtexec`` writes the line to run
there. Syntax follows trtexec's own help (TensorRT 10/11):

- shapes: ``--minShapes=lr:1x3x64x64,idr_spatial:1x8x64x64`` (comma-separated
  ``name:dims`` pairs); several optimization profiles: ``--profile=0`` followed
  directly by that profile's min/opt/max flags, then ``--profile=1`` ...;
- ``--memPoolSize=workspace:1024M`` (base-2 suffixes B/K/M/G; MiB without one);
- ``--hardwareCompatibilityLevel=none|ampere+|sameComputeCapability``;
- precision: ``--fp16``/``--int8`` (weakly typed, TensorRT 10 only, removed in 11)
  or ``--stronglyTyped`` (TensorRT 10; always on and not needed in 11).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lightbsr.errors import ConfigError
from lightbsr.tensorrt.engine import ShapeRange, format_shape, parse_shape

from .plan import BuildPlan

TRTEXEC_HARDWARE = {"none": "none", "ampere+": "ampere+", "same-cc": "sameComputeCapability"}
_UNITS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def trtexec_command(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    plan: BuildPlan,
    profiles: Sequence[Mapping[str, ShapeRange]],
    *,
    version_compatible: bool = False,
    hardware_compatibility: str = "none",
    workspace_mib: int | None = None,
    builder_optimization_level: int | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    trtexec: str = "trtexec",
) -> list[str]:
    """argv of the trtexec run that builds the engine ``plan`` describes (join with :func:`shlex.join`)."""
    argv = [trtexec, f"--onnx={os.fspath(onnx_path)}", f"--saveEngine={os.fspath(engine_path)}"]
    for index, profile in enumerate(profiles):
        if len(profiles) > 1:
            argv.append(f"--profile={index}")
        for flag, which in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            argv.append(f"{flag}=" + ",".join(f"{name}:{format_shape(r[which])}" for name, r in profile.items()))
    if plan.strongly_typed:
        if plan.trt_major < 11:
            argv.append("--stronglyTyped")
    else:
        argv += [f"--{flag.lower()}" for flag in plan.builder_flags if flag in ("FP16", "INT8")]
    if workspace_mib is not None:
        argv.append(f"--memPoolSize=workspace:{workspace_mib}M")
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={os.fspath(timing_cache)}")
    if builder_optimization_level is not None:
        argv.append(f"--builderOptimizationLevel={builder_optimization_level}")
    if version_compatible:
        argv.append("--versionCompatible")
    if hardware_compatibility != "none":
        argv.append(f"--hardwareCompatibilityLevel={TRTEXEC_HARDWARE[hardware_compatibility]}")
    argv.append("--skipInference")  # build only, like `lightbsr build`
    return argv


@dataclass
class TrtexecBuild:
    """The build settings a trtexec command line asks for."""

    onnx: str | None = None
    engine: str | None = None
    profiles: list[dict[str, ShapeRange]] = field(default_factory=list)
    fp16: bool = False
    int8: bool = False
    strongly_typed: bool = False
    workspace_mib: float | None = None
    timing_cache: str | None = None
    builder_optimization_level: int | None = None
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    skip_inference: bool = False


def _shapes(value: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for item in value.split(","):
        name, shape = parse_shape(item, default_name="")
        shapes[name] = shape
    return shapes


def _mebibytes(size: str) -> float:
    unit = size[-1].upper()
    if unit.isdigit():
        return float(size)
    if unit not in _UNITS:
        raise ConfigError(f"bad memory size {size!r}")
    return float(size[:-1]) * _UNITS[unit] / _UNITS["M"]


def parse_trtexec_command(command: str | Sequence[str]) -> TrtexecBuild:
    """Parse a trtexec build line (as :func:`trtexec_command` writes it) back; ConfigError on anything else."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    build = TrtexecBuild()
    pending: dict[str, dict[str, tuple[int, ...]]] = {}

    def close_profile() -> None:
        if not pending:
            return
        if set(pending) != {"min", "opt", "max"}:
            raise ConfigError(f"a profile needs --minShapes, --optShapes and --maxShapes, got {sorted(pending)}")
        names = pending["opt"]
        if not names.keys() == pending["min"].keys() == pending["max"].keys():
            raise ConfigError("--minShapes, --optShapes and --maxShapes name different inputs")
        build.profiles.append({n: ShapeRange(pending["min"][n], pending["opt"][n], pending["max"][n]) for n in names})
        pending.clear()

    for arg in argv[1:]:
        flag, _, value = arg.partition("=")
        if flag == "--onnx":
            build.onnx = value
        elif flag == "--saveEngine":
            build.engine = value
        elif flag == "--profile":
            close_profile()
            if int(value) != len(build.profiles):
                raise ConfigError(f"profile {value} out of order")
        elif flag in ("--minShapes", "--optShapes", "--maxShapes"):
            key = flag[2:5]
            if key in pending:
                close_profile()
            pending[key] = _shapes(value)
        elif flag in ("--fp16", "--int8"):
            setattr(build, flag[2:], True)
        elif flag == "--stronglyTyped":
            build.strongly_typed = True
        elif flag == "--memPoolSize":
            for pool in value.split(","):
                name, _, size = pool.partition(":")
                if name == "workspace":
                    build.workspace_mib = _mebibytes(size)
        elif flag == "--timingCacheFile":
            build.timing_cache = value
        elif flag == "--builderOptimizationLevel":
            build.builder_optimization_level = int(value)
        elif flag in ("--versionCompatible", "--vc"):
            build.version_compatible = True
        elif flag == "--hardwareCompatibilityLevel":
            levels = {v: k for k, v in TRTEXEC_HARDWARE.items()}
            if value not in levels:
                raise ConfigError(f"unknown hardware compatibility level {value!r}")
            build.hardware_compatibility = levels[value]
        elif flag == "--skipInference":
            build.skip_inference = True
        else:
            raise ConfigError(f"unexpected trtexec argument {arg!r}")
    close_profile()
    return build
