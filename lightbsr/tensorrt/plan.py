"""The build decision: TensorRT version × ``lightbsr build`` flags × ONNX precision → network and builder flags.

Pure and unit-tested; the TensorRT calls that carry the plan out live in
:mod:`.builder`, the trtexec spelling of it in :mod:`.trtexec`.

TensorRT 10 builds a *weakly typed* network (precision picked by the builder from
what ``BuilderFlag.FP16``/``INT8`` allow) or a *strongly typed* one
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: every tensor keeps the type the
ONNX gives it). TensorRT 11 removed weak typing and the precision builder flags:
networks are always strongly typed, so the precision must already be in the ONNX
(``lightbsr quantize``). A flag the installed version cannot honour is an error,
never silently dropped; a flag that asks for what the ONNX already carries is
ignored with a note.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightbsr.errors import ConfigError
from lightbsr.tensorrt.engine import ENGINE_PRECISIONS, BuildSettings, parse_version

# HardwareCompatibilityLevel members by --hardware-compatibility value, and trtexec's names for them
HARDWARE_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
SAME_CC_SINCE = (10, 9)  # SAME_COMPUTE_CAPABILITY first appears in TensorRT 10.9


@dataclass(frozen=True)
class BuildPlan:
    """How to build: flag names as the ``tensorrt`` module spells them, and what to record in the sidecar."""

    trt_major: int
    strongly_typed: bool
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members to set
    builder_flags: tuple[str, ...]  # BuilderFlag members to set
    hardware_level: str  # HardwareCompatibilityLevel member
    precision: str  # fp32 | fp16 | int8: the lowest precision the engine may use
    notes: tuple[str, ...] = ()  # flags ignored, and why


def _supports_same_cc(version: tuple[int, ...]) -> bool:
    # a bare major version ("10") means its oldest release: JetPack 6's trtexec is 10.3
    major, minor = SAME_CC_SINCE
    return version[0] > major or (version[0] == major and len(version) > 1 and version[1] >= minor)


def plan_build(
    tensorrt_version: str, settings: BuildSettings, onnx_precision: str, uint8_qdq: bool = False
) -> BuildPlan:
    """Decide the network and builder flags, or raise ConfigError with a one-line reason.

    ``onnx_precision`` is what the graph carries: ``int8`` (Q/DQ nodes), ``fp16``
    (float16 tensors) or ``fp32``.
    """
    version = parse_version(tensorrt_version)
    major = version[0]
    if major < 10:
        raise ConfigError(f"TensorRT {tensorrt_version} is not supported: lightbsr builds with TensorRT 10 or 11")
    if onnx_precision not in ENGINE_PRECISIONS:
        raise ConfigError(f"unknown ONNX precision {onnx_precision!r}")
    if uint8_qdq:
        raise ConfigError(
            "the ONNX quantizes to uint8 with zero points; TensorRT runs symmetric int8 Q/DQ only: "
            "quantize again with `lightbsr quantize --int8 --target tensorrt` (cpu is for ONNX Runtime)"
        )
    if settings.hardware_compatibility == "same-cc" and not _supports_same_cc(version):
        if len(version) < 2:
            raise ConfigError(
                f"--hardware-compatibility same-cc needs TensorRT 10.9 or newer, and TensorRT {tensorrt_version} may "
                "be older (JetPack 6 ships 10.3): give the exact version with --trt-version, or use ampere+ or none"
            )
        raise ConfigError(
            f"--hardware-compatibility same-cc needs TensorRT 10.9 or newer (this is {tensorrt_version}); "
            "use ampere+ or none"
        )
    if settings.int8 and onnx_precision != "int8":
        raise ConfigError(
            "--int8 needs a Q/DQ ONNX (TensorRT calibration is not supported): run `lightbsr quantize --int8` first"
        )
    notes: list[str] = []
    common = ("VERSION_COMPATIBLE",) if settings.version_compatible else ()
    level = HARDWARE_LEVELS[settings.hardware_compatibility]

    if major >= 11:
        if settings.strongly_typed is False:
            raise ConfigError(
                f"TensorRT {tensorrt_version} builds strongly typed networks only: drop --no-strongly-typed"
            )
        if settings.fp16 and onnx_precision == "fp32":
            raise ConfigError(
                f"--fp16 cannot be honoured by TensorRT {tensorrt_version} (strongly typed only, precision comes from "
                "the ONNX): run `lightbsr quantize --fp16` first and build the converted ONNX"
            )
        if settings.fp16 and onnx_precision == "int8":
            raise ConfigError(
                f"--fp16 cannot be honoured by TensorRT {tensorrt_version} on a Q/DQ ONNX: the ONNX fixes the "
                "precision; quantize with FP16 for the layers left unquantized instead"
            )
        notes += _ignored(settings, onnx_precision)
        # STRONGLY_TYPED is deprecated and ignored in 11 (always on): set no network flags
        return BuildPlan(major, True, (), common, level, onnx_precision, tuple(notes))

    strongly_typed = settings.strongly_typed
    if strongly_typed is None:  # auto: keep the precision the ONNX carries, unless a flag asks for more
        strongly_typed = onnx_precision != "fp32" and not (settings.fp16 and onnx_precision == "int8")
    if strongly_typed:
        if settings.fp16 and onnx_precision != "fp16":
            raise ConfigError(
                f"--fp16 cannot be honoured on a strongly typed network from a {onnx_precision} ONNX: "
                "run `lightbsr quantize --fp16` first, or drop --strongly-typed"
            )
        notes += _ignored(settings, onnx_precision)
        return BuildPlan(major, True, ("STRONGLY_TYPED",), common, level, onnx_precision, tuple(notes))

    # weakly typed (TensorRT 10): the builder may pick any enabled precision
    flags: list[str] = []
    if settings.fp16 or onnx_precision == "fp16":
        flags.append("FP16")
        if not settings.fp16:
            notes.append("the ONNX has float16 tensors: FP16 enabled for the weakly typed build")
    if onnx_precision == "int8":
        flags.append("INT8")
        if not settings.int8:
            notes.append("the ONNX has Q/DQ nodes: INT8 enabled for the weakly typed build")
    precision = "int8" if "INT8" in flags else "fp16" if "FP16" in flags else "fp32"
    return BuildPlan(major, False, (), (*flags, *common), level, precision, tuple(notes))


def _ignored(settings: BuildSettings, onnx_precision: str) -> list[str]:
    kind = {"int8": "Q/DQ", "fp16": "FP16"}.get(onnx_precision, onnx_precision)
    return [
        f"{flag} ignored: the network is strongly typed and the {kind} ONNX already sets its precision"
        for flag, on in (("--fp16", settings.fp16), ("--int8", settings.int8))
        if on
    ]
