"""CLI of the export stage: ``lightbsr export``, ``lightbsr quantize``, ``lightbsr compare``.

Only argparse at import time; torch, onnx and onnxruntime are imported by the run functions.
"""

from __future__ import annotations

import argparse
import json
import sys

EXPORT_HELP = """\
Export a lightbsr checkpoint to ONNX (opset 17 by default) with dynamic batch, height and width:
any LR size works, including sizes that are not multiples of 4. Tensor names: input `lr` (teachers
also `drp` (N, 15|18) or `hr`), output `sr` (unclamped). The graph is simplified with onnxslim,
checked with onnx.checker (full check) and strict shape inference, carries its metadata (arch,
scale, setting, graph, precision, source checkpoint sha256, lightbsr version) and is self-contained.
Before writing, ONNX Runtime runs it at another batch and size than the trace and must match
PyTorch (1e-4 relative); split graphs composed must match the full graph (1e-5).

--split also writes MODEL.estimator.onnx (lr → idr_channel (N,48) + idr_spatial (N,8,H,W) for
LightBSR, idr (N,64) for KDSR) and MODEL.restorer.onnx (lr + IDR → sr): the runtime estimates the
IDR once per image and reuses it for every tile. Exporting without --split removes stale split
files of an earlier export to the same name. On any failure nothing is written.

--triton DIR writes a Triton Inference Server model repository (and implies --split):
DIR/NAME (python backend: 8-bit images (N, H, W, C) in and out, any size, tiled with one degradation
estimate per image by lightbsr's runtime, which must be installed in the server's Python; request
parameters tile, tile_overlap, precision), DIR/NAME_onnx (onnxruntime_onnx, 1/model.onnx, the full
graph) and DIR/NAME_trt (tensorrt_plan), each with a config.pbtxt (max_batch_size, instance_group,
dynamic_batching; the graph variants name the graph's inputs and outputs, batch dim left out, dynamic
dims -1). No TensorRT plan is written: it must be built on the serving GPU with
`lightbsr build DIR/NAME_onnx/1/model.onnx -o DIR/NAME_trt/1/model.plan` (DIR/NAME_trt/README.md).
`lightbsr serve` runs such a model on a local Triton server (docs/deploy.md)."""

QUANTIZE_HELP = """\
Convert an FP32 lightbsr ONNX model (from `lightbsr export`) to lower precision. Split graphs
beside it (MODEL.estimator.onnx, MODEL.restorer.onnx) are converted too, so the tiled path of the
runtime gets the same precision.

--fp16: mixed precision. Weights and most ops in FP16; LayerNormalization, ReduceMean /
  GlobalAveragePool (global pooling) and Sigmoid/Softmax stay FP32; inputs and outputs stay FP32
  unless --fp16-io. Backend: onnxruntime's float16 converter, or NVIDIA ModelOpt AutoCast
  (--fp16-backend modelopt, needs `pip install 'lightbsr[modelopt]'`).
--int8: explicit Q/DQ (QuantizeLinear/DequantizeLinear) around Conv/MatMul/Gemm, INT8 weights
  symmetric per output channel, made for --target:
    tensorrt (default): INT8 activations symmetric per tensor, Q/DQ on the op inputs, FP32 biases
      (TensorRT's explicit quantization);
    cpu: ONNX Runtime on x86 CPUs: uint8 activations, asymmetric (its fast U8S8 kernels; VNNI where
      the CPU has it), Q/DQ on op inputs and outputs with INT32 biases so that they fuse into
      QLinearConv/QLinearMatMul (the summary lists the integer kernels ONNX Runtime runs),
      depthwise convolutions FP32.
  The target is recorded in the metadata (lightbsr.int8_target); the runtime warns when a model
  made for one runs on the other. The first and last layers stay FP32 unless --quantize-first-last.
  Calibration: --calib-count
  LR crops of --calib-size pixels synthesised from the HR images in --calib DIR with the training
  degradation model of the model's setting (random blur kernels, noise in setting 2), seeded.
  Students only (a teacher also needs its DRP / HR input).
--int8 --max-drop DB: INT8 that keeps quality. Every fourth --calib image is held out (not used
  for calibration); the protocol Y-PSNR (SR rounded to 8 bits, Y, scale pixels shaved) of the INT8
  model on --eval-count held-out crops is compared with the FP32 model's. Beyond DB, each layer's
  sensitivity is measured (output noise with only that layer in INT8), and the most sensitive
  layers are left in float, greedily, until the drop is within DB. The kept layers and the final
  drop are printed and recorded in the ONNX metadata (lightbsr.int8). If more than
  --max-float-layers (default: half of the layers) would be needed, it says so, exits 2 and
  writes nothing.

TensorRT 11 builds these files as they are (strongly typed: the graph's types and Q/DQ nodes set
the precision); TensorRT 10 builds them with --fp16 / --int8 set (or --stronglyTyped)."""

COMPARE_HELP = """\
Run two models on real images and report, per image and overall, how far B's output is from A's:
max and mean absolute error and PSNR of the raw (unclamped) outputs, and of both clamped to [0, 1]
(RGB PSNR and Y-PSNR, the papers' luma, scale pixels shaved). Each of A and B is an ONNX file (run
with ONNX Runtime, CPU) or a lightbsr checkpoint (.safetensors, run in PyTorch); both must be
students of the same architecture.

By default DIR holds LR images, fed as they are. With --degrade-sigma S, DIR holds HR images and
the LR input is synthesised with the papers' benchmark protocol: HR cropped to a multiple of the
scale, 21×21 isotropic Gaussian blur of width S, MATLAB-style bicubic ×1/4, rounded to 8 bits.

Example: lightbsr compare model.onnx model.int8.onnx --images Set5/ --degrade-sigma 1.2"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightbsr.argparsing import add_command, float_range, int_range

    p = add_command(subparsers, "export", "lightbsr checkpoint → ONNX (dynamic shapes, split graphs)", EXPORT_HELP)
    p.add_argument("checkpoint", help="lightbsr checkpoint (.safetensors; convert authors' files with `convert`)")
    p.add_argument("-o", "--output", help="ONNX file to write (the full graph); needed unless --triton is given")
    p.add_argument("--split", action="store_true", help="also write the estimator and restorer graphs")
    triton = p.add_argument_group("Triton model repository (see above)")
    triton.add_argument("--triton", metavar="DIR", help="write a Triton model repository into DIR")
    triton.add_argument(
        "--triton-name", default="lightbsr", metavar="NAME", help="model names: NAME, NAME_onnx and NAME_trt"
    )
    triton.add_argument(
        "--triton-max-batch", type=int_range(0), default=4, metavar="N", help="max_batch_size (0: no batching)"
    )
    triton.add_argument("--triton-instances", type=int_range(1), default=1, metavar="N", help="instance_group count")
    triton.add_argument(
        "--triton-cpu", action="store_true", help="run the ONNX Runtime and python variants on CPU (KIND_CPU)"
    )
    p.add_argument(
        "--opset",
        type=int,
        default=17,
        choices=(17, 18, 19, 20),
        help="ONNX opset; 17–19 write GELU with Erf, 20 the Gelu op (check your TensorRT parser supports it)",
    )
    p.add_argument("--no-simplify", dest="simplify", action="store_false", help="skip onnxslim")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the ONNX Runtime check")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=_run_export)

    p = add_command(subparsers, "quantize", "ONNX → mixed-precision FP16 or INT8 Q/DQ ONNX", QUANTIZE_HELP)
    p.add_argument("model", help="FP32 ONNX model from `lightbsr export`")
    p.add_argument("-o", "--output", help="ONNX file to write (default: MODEL.fp16.onnx / MODEL.int8.onnx)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fp16", action="store_true", help="mixed-precision FP16")
    mode.add_argument("--int8", action="store_true", help="INT8 Q/DQ (needs --calib)")
    p.add_argument("--fp16-backend", choices=("ort", "modelopt"), default="ort", help="FP16 converter")
    p.add_argument("--fp16-io", action="store_true", help="FP16 inputs and outputs (default: FP32 I/O)")
    p.add_argument("--calib", metavar="DIR", help="folder of HR images for INT8 calibration")
    p.add_argument("--calib-count", type=int_range(1), default=32, help="number of LR calibration crops")
    p.add_argument("--calib-size", type=int_range(8), default=64, help="side of the LR calibration crops (pixels)")
    p.add_argument(
        "--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax", help="calibration method"
    )
    p.add_argument("--setting", type=int, choices=(1, 2), help="degradation setting (default: the model's, else 1)")
    p.add_argument("--seed", type=int_range(0), default=0, help="seed of the calibration crops")
    p.add_argument("--quantize-first-last", action="store_true", help="quantize the first and last layers too")
    p.add_argument(
        "--target",
        choices=("tensorrt", "cpu"),
        default=argparse.SUPPRESS,
        help="--int8 for TensorRT (symmetric int8 activations; the default) or ONNX Runtime on the CPU (uint8)",
    )
    quality = p.add_argument_group("INT8 quality bound (see above)")
    quality.add_argument(
        "--max-drop",
        type=float_range(0.0),
        metavar="DB",
        help="largest Y-PSNR drop against FP32 on held-out crops (dB)",
    )
    quality.add_argument(
        "--max-float-layers", type=int_range(0), metavar="N", help="most layers left in float (default: half of them)"
    )
    quality.add_argument("--eval-count", type=int_range(1), default=16, help="held-out LR crops that measure the drop")
    quality.add_argument("--eval-size", type=int_range(8), default=48, help="side of the held-out LR crops (pixels)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=_run_quantize)

    p = add_command(subparsers, "compare", "parity / accuracy of two models on real images", COMPARE_HELP)
    p.add_argument("a", help="reference: ONNX file or lightbsr checkpoint")
    p.add_argument("b", help="compared: ONNX file or lightbsr checkpoint")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images (LR, or HR with --degrade-sigma)")
    p.add_argument(
        "--degrade-sigma",
        type=float_range(0.0, low_open=True),
        metavar="S",
        help="synthesise LR from HR with blur width S",
    )
    p.add_argument("--limit", type=int_range(1), help="use only the first N images")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_compare)


def _run_export(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from lightbsr.errors import ConfigError
    from lightbsr.export.onnx_export import export_onnx

    if args.output is None and args.triton is None:
        raise ConfigError("give -o/--output MODEL.onnx, --triton DIR, or both")
    if args.output is not None:
        from lightbsr.contract import split_paths
        from lightbsr.files import check_outputs

        check_outputs([args.checkpoint], [args.output, *(split_paths(args.output) if args.split else ())])
    if args.triton is not None:  # before the export: a name clash must not cost an export
        from lightbsr.triton import check_target

        check_target(
            args.triton,
            name=args.triton_name,
            max_batch_size=args.triton_max_batch,
            instances=args.triton_instances,
        )
    with tempfile.TemporaryDirectory(prefix="lightbsr-export-") as scratch:
        output = args.output or str(Path(scratch) / "model.onnx")
        result = export_onnx(
            args.checkpoint,
            output,
            split=args.split or args.triton is not None,  # the python-backend model shares one estimate per image
            opset=args.opset,
            simplify=args.simplify,
            verify=args.verify,
            progress=sys.stderr.isatty(),
        )
        summary = result.to_dict()
        if args.triton is not None:
            from lightbsr.triton import write_triton_repository

            repository = write_triton_repository(
                result.path,
                args.triton,
                name=args.triton_name,
                max_batch_size=args.triton_max_batch,
                instances=args.triton_instances,
                onnx_on_cpu=args.triton_cpu,
            )
            summary["triton"] = repository.to_dict()
        if args.output is None:
            del summary["files"]  # only the scratch copy, already removed
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if args.output is not None:
        for f in result.files.values():
            print(f"wrote {f.path} ({f.graph}: {', '.join(f.inputs)} → {', '.join(f.outputs)}, {f.nodes} nodes)")
    if result.verification:
        checks = ", ".join(f"{k} {v:.1e}" for k, v in result.verification.items())
        print(f"verified with ONNX Runtime (relative error): {checks}")
    if args.triton is not None:
        models = ", ".join(str(path) for path in repository.models.values())
        print(f"wrote the Triton model repository {args.triton} ({models})")
        print(f"TensorRT plan, on the serving GPU: lightbsr build {repository.onnx_path} -o {repository.plan_path}")
    return 0


def _run_quantize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lightbsr.contract import resolve_graphs, split_paths
    from lightbsr.errors import ConfigError
    from lightbsr.export.precision import quantize_fp16, quantize_int8
    from lightbsr.files import check_outputs

    precision = "fp16" if args.fp16 else "int8"
    output = args.output or str(Path(args.model).with_suffix(f".{precision}.onnx"))
    graphs = resolve_graphs(args.model)
    check_outputs([args.model, graphs.full, graphs.estimator, graphs.restorer], [output, *split_paths(output)])
    progress = sys.stderr.isatty()
    target = getattr(args, "target", None)
    if args.fp16 and (args.max_drop is not None or args.max_float_layers is not None or target is not None):
        raise ConfigError("--max-drop, --max-float-layers and --target are for --int8")
    if args.fp16:
        result = quantize_fp16(
            args.model, output, keep_io_types=not args.fp16_io, backend=args.fp16_backend, progress=progress
        )
    else:
        if not args.calib:
            raise ConfigError("--int8 needs calibration images: --calib DIR (HR images)")
        if args.max_drop is None and args.max_float_layers is not None:
            raise ConfigError("--max-float-layers goes with --max-drop")
        result = quantize_int8(
            args.model,
            output,
            args.calib,
            count=args.calib_count,
            size=args.calib_size,
            setting=args.setting,
            method=args.calib_method,
            seed=args.seed,
            quantize_first_last=args.quantize_first_last,
            max_drop=args.max_drop,
            max_float_layers=args.max_float_layers,
            eval_count=args.eval_count,
            eval_size=args.eval_size,
            target=target or "tensorrt",
            progress=progress,
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        quality = result.details.get("quality")
        if quality:
            kept = quality["float_layers"]
            print(
                f"INT8 Y-PSNR drop on {quality['held_out']['crops']} held-out crops: {quality['drop_db']:.3f} dB "
                f"(bound {quality['max_drop_db']} dB; all layers INT8: {quality['full_int8_drop_db']:.3f} dB); "
                f"{len(kept)} layer(s) left in float" + (": " + ", ".join(kept) if kept else "")
            )
        for f in result.files.values():
            print(f"wrote {f.path} ({precision} {f.graph}, {f.nodes} nodes, {f.bytes / 1e6:.1f} MB)")
        kernels = result.details.get("onnxruntime_cpu_kernels")
        if kernels:
            text = ", ".join(f"{op} {n}" for op, n in kernels.items())
            print(f"INT8 for {result.details['target']}; ONNX Runtime CPU runs: {text}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from lightbsr.export.parity import compare

    result = compare(
        args.a,
        args.b,
        args.images,
        degrade_sigma=args.degrade_sigma,
        limit=args.limit,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0
