"""``lightbsr build``: ONNX → TensorRT engine (+ JSON sidecar), or the equivalent trtexec line.

Imports only the standard library at module level (``lightbsr --help`` stays instant);
the builder, onnx and TensorRT load inside the run function.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightbsr.tensorrt.engine import BuildSettings

DESCRIPTION = """\
Build a TensorRT engine from a lightbsr ONNX model (full graph, or the estimator/restorer of a split
export) and write MODEL.engine.json beside it: TensorRT version, GPU, precision, shape profiles, ONNX
hash and build flags, checked whenever the engine is loaded.

Shapes are the NCHW of the `lr` input (1x3x64x64, or trtexec style lr:1x3x64x64); the other inputs
(IDR tensors of a restorer graph, drp/hr of a teacher) get shapes derived from it. Repeat the
--min-shape/--opt-shape/--max-shape triple for several optimization profiles. Default profile:
1x3x32x32 / 1x3x256x256 / 4x3x512x512.

Precision. TensorRT 10: an fp32 ONNX builds weakly typed (--fp16 lets TensorRT use FP16 kernels); an
ONNX converted to FP16 or quantized with Q/DQ nodes (`lightbsr quantize`) builds strongly typed, its
precision taken from the graph. TensorRT 11 builds strongly typed only: --fp16/--int8 must already be
in the ONNX (`lightbsr quantize --fp16` / `--int8`), and a flag TensorRT cannot honour is an error.

Without TensorRT Python bindings (typical on Jetson, which ships trtexec), --print-trtexec prints the
equivalent trtexec command instead of building."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightbsr.argparsing import add_command, int_range

    unset = argparse.SUPPRESS  # optional values without a default: absent from args, no "(default: None)" in --help
    p = add_command(subparsers, "build", "ONNX → TensorRT engine with a compatibility sidecar", DESCRIPTION)
    p.add_argument("onnx", type=Path, help="ONNX model (from `lightbsr export` or `lightbsr quantize`)")
    p.add_argument(
        "-o", "--output", type=Path, default=unset, help="engine file to write (default: the ONNX path with .engine)"
    )
    precision = p.add_argument_group("precision")
    precision.add_argument("--fp16", action="store_true", help="allow FP16 kernels (TensorRT 10, weakly typed)")
    precision.add_argument("--int8", action="store_true", help="INT8 from the Q/DQ nodes of a quantized ONNX")
    precision.add_argument(
        "--strongly-typed",
        action=argparse.BooleanOptionalAction,
        default=unset,
        help="strongly typed network, precision from the ONNX (default: yes for an FP16 or Q/DQ ONNX, always on "
        "TensorRT 11)",
    )
    shapes = p.add_argument_group("shape profiles (NCHW of lr; repeat the triple for several profiles)")
    for which, default in (("min", "1x3x32x32"), ("opt", "1x3x256x256"), ("max", "4x3x512x512")):
        shapes.add_argument(
            f"--{which}-shape",
            action="append",
            default=unset,
            metavar="[lr:]NxCxHxW",
            help=f"{which} lr shape (default profile: {default})",
        )
    builder = p.add_argument_group("builder")
    builder.add_argument(
        "--workspace",
        type=int_range(1),
        default=unset,
        metavar="MiB",
        help="workspace memory pool limit (default: TensorRT's)",
    )
    builder.add_argument(
        "--timing-cache",
        type=Path,
        default=unset,
        metavar="FILE",
        help="timing cache to read and update (default: none)",
    )
    builder.add_argument(
        "--builder-optimization-level",
        type=int,
        choices=range(6),
        default=unset,
        metavar="0-5",
        help="higher searches longer for faster kernels (default: TensorRT's, 3)",
    )
    builder.add_argument(
        "--device", type=int_range(0), default=0, metavar="N", help="CUDA device to build (and tune) the engine on"
    )
    builder.add_argument(
        "--version-compatible", action="store_true", help="engine runs on newer TensorRT (and lean/dispatch runtimes)"
    )
    builder.add_argument(
        "--hardware-compatibility",
        choices=("none", "ampere+", "same-cc"),
        default="none",
        help="also run on other GPUs: any Ampere or newer, or any of the same compute capability (TensorRT ≥ 10.9)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--print-trtexec", action="store_true", help="print the equivalent trtexec command, build nothing (no TensorRT)"
    )
    out.add_argument(
        "--trt-version",
        default=unset,
        metavar="VERSION",
        help="TensorRT version the trtexec line is for (default: the installed one, else 10)",
    )
    out.add_argument("--json", action="store_true", help="print the sidecar (or the trtexec argv) as JSON")
    p.set_defaults(func=run_build)


def settings_from_args(args: argparse.Namespace) -> BuildSettings:
    """The flags of ``lightbsr build`` as :class:`~lightbsr.tensorrt.engine.BuildSettings` (or a ConfigError)."""
    from lightbsr.contract import INPUT_LR
    from lightbsr.errors import ConfigError
    from lightbsr.tensorrt.engine import DEFAULT_LR_RANGE, BuildSettings, ShapeRange, parse_shape

    def lr_shapes(values: list[str], flag: str) -> list[tuple[int, ...]]:
        shapes = []
        for value in values:
            name, shape = parse_shape(value)
            if name != INPUT_LR:
                raise ConfigError(f"{flag} {value}: give the lr shape; the other inputs are derived from it")
            shapes.append(shape)
        return shapes

    mins = lr_shapes(getattr(args, "min_shape", []), "--min-shape")
    opts = lr_shapes(getattr(args, "opt_shape", []), "--opt-shape")
    maxs = lr_shapes(getattr(args, "max_shape", []), "--max-shape")
    profiles: tuple[ShapeRange, ...]
    if not (mins or opts or maxs):
        profiles = (DEFAULT_LR_RANGE,)
    elif opts and not mins and not maxs:  # like trtexec: opt alone is a fixed shape
        profiles = tuple(ShapeRange(s, s, s) for s in opts)
    elif len(mins) == len(opts) == len(maxs):
        profiles = tuple(ShapeRange(*triple) for triple in zip(mins, opts, maxs, strict=True))
    else:
        raise ConfigError(
            f"give --min-shape, --opt-shape and --max-shape once per profile (got {len(mins)}, {len(opts)}, "
            f"{len(maxs)}), or only --opt-shape for fixed shapes"
        )
    return BuildSettings(
        profiles=profiles,
        fp16=args.fp16,
        int8=args.int8,
        strongly_typed=getattr(args, "strongly_typed", None),
        workspace_mib=getattr(args, "workspace", None),
        builder_optimization_level=getattr(args, "builder_optimization_level", None),
        version_compatible=args.version_compatible,
        hardware_compatibility=args.hardware_compatibility,
    )


def run_build(args: argparse.Namespace) -> int:
    from lightbsr.tensorrt.builder import NOT_INSTALLED, build_engine
    from lightbsr.tensorrt.engine import derive_profile
    from lightbsr.tensorrt.loader import installed_version, require_tensorrt
    from lightbsr.tensorrt.onnx_info import read_onnx_info
    from lightbsr.tensorrt.plan import plan_build
    from lightbsr.tensorrt.trtexec import trtexec_command

    settings = settings_from_args(args)
    output = getattr(args, "output", None) or args.onnx.with_suffix(".engine")
    timing_cache = getattr(args, "timing_cache", None)
    from lightbsr.files import check_outputs

    check_outputs([args.onnx], [output, output.with_name(output.name + ".json")])
    if not args.print_trtexec:
        require_tensorrt(full=True, missing=NOT_INSTALLED)  # before reading anything: the one-line hint is the answer
        sidecar = build_engine(args.onnx, output, settings, timing_cache=timing_cache, device=args.device)
        if args.json:
            print(json.dumps(sidecar.to_json(), indent=2))
        else:
            print(
                f"wrote {output} ({sidecar.precision}, TensorRT {sidecar.tensorrt_version}, {sidecar.gpu_name}, "
                f"compute capability {sidecar.compute_capability}) and {output.name}.json"
            )
        return 0

    version = getattr(args, "trt_version", None) or installed_version() or "10"
    info = read_onnx_info(args.onnx)
    plan = plan_build(version, settings, info.precision, info.uint8_qdq)
    for note in plan.notes:
        print(f"lightbsr: note: {note}", file=sys.stderr)
    argv = trtexec_command(
        args.onnx,
        output,
        plan,
        [derive_profile(lr, info.inputs, info.scale) for lr in settings.profiles],
        version_compatible=settings.version_compatible,
        hardware_compatibility=settings.hardware_compatibility,
        workspace_mib=settings.workspace_mib,
        builder_optimization_level=settings.builder_optimization_level,
        timing_cache=timing_cache,
    )
    if args.json:
        print(json.dumps({"tensorrt_version": version, "argv": argv, "notes": list(plan.notes)}, indent=2))
    else:
        import shlex

        print(shlex.join(argv))
    return 0
