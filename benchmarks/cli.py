"""``lightbsr bench``: complexity, latency/accuracy against the PyTorch reference, and quality tables, as reports.

Only argparse and the standard library at import time; torch, onnx and onnxruntime load when it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lightbsr.argparsing import add_command, float_range, int_range

DEFAULT_IMAGE = Path(__file__).resolve().parent.parent / "examples" / "Set5" / "baby.png"
CPU_SIZES = ["64", "128"]
CUDA_SIZES = ["64", "128", "256", "512", "720p"]

DESCRIPTION = f"""\
How big, how fast, how accurate: one command, one report (--json, --markdown, --plot).

MODEL is an architecture name (e.g. lightbsr_student_x4, kdsr_student_m_x4; random weights, seed
--seed), a lightbsr checkpoint (.safetensors) or an ONNX file (complexity only). Students only.

--complexity: parameters and multiply-accumulates of the full forward (estimate + restore) at each
  --size and at 256×256, counted with torch's FlopCounterMode on the meta device; each --onnx file
  is counted at 256×256 from its graph (Conv/ConvTranspose/Gemm/MatMul, shapes from shape
  inference). MACs are the papers' "GFLOPs" (at 256×256 LR); FLOPs = 2 × MACs, labelled.
--latency: every target at every --size and --batch: warm-up, then timed runs (CUDA events on a
  GPU, perf_counter on the CPU): median/p90/p99 ms, output MP/s, peak memory, speed-up vs the
  PyTorch FP32 eager reference measured in the same run, and PSNR of each target's output vs the
  reference's on a real image crop (--image). Targets: torch-fp32 (reference), torch-bf16,
  torch-fp16, torch-compile-fp32/-bf16/-fp16 (CUDA graphs on a GPU; CPU: FP16 and torch.compile only when named
  in --targets), and for each --onnx file (precision from its metadata: fp32/fp16/int8 from
  `lightbsr export` / `lightbsr quantize`) ort-cpu, ort-cuda and ort-trt (ONNX Runtime's TensorRT
  execution provider). Targets that cannot run here are listed as skipped with the reason.
Neither flag: both (latency only for a checkpoint or an architecture).
  More targets, named in --targets: torch-channels-last-fp32; ONNX Runtime CPU session options
  on each FP32 --onnx file: ort-cpu-spin (idle threads spin), ort-cpu-extended (no NCHWc layout
  transform), ort-cpu-basic, ort-cpu-no-arena; openvino-cpu (OpenVINO's CPU plugin, pip install
  openvino; pinned to FP32 on FP32 files, and on INT8 files its integer kernels) and openvino-cpu-bf16
  (BF16 for what is not INT8, where the CPU has BF16 instructions). An INT8 file's target name ends
  with its INT8 target: ort-cpu-int8-cpu, ort-cpu-int8-tensorrt, openvino-cpu-bf16-int8-tensorrt.

Roofline (with --latency, unless --no-roofline): the machine's achievable peak, measured in the
same run with the same threads: FP32 GEMMs (torch.mm, ONNX Runtime MatMul) and INT8 GEMMs (ONNX
Runtime MatMulInteger, uint8×int8 and int8×int8), --gemm-size cubed. Every latency row gets its
GFLOP/s (2 × the model's MACs / median) and its percentage of the peak of its precision. The
report's title names the CPU and its ISA flags (AVX2, AVX-512, VNNI, BF16, AMX).
--tiling: throughput of exact and blend tiling against the untiled image, --tiling-size LR, each
  of --tiles, torch on MODEL and ONNX Runtime on the first FP32 --onnx file (its split graphs).
--contention: a --contention-size upscale (torch on MODEL, ONNX Runtime on the first FP32 --onnx
  file) alone and beside another PyTorch process using every usable CPU, per wait policy
  (python -m lightbsr.benchmarks.contention; each case in a fresh process).
--ort-profile: ONNX Runtime's kernel time by operator type, each --onnx file at the largest --size.
Threads: --threads, else the CPUs this process may use (affinity, cgroup quota). Idle threads
sleep (OMP_WAIT_POLICY=PASSIVE unless set; ONNX Runtime without spinning); the report says so.

--eval-json adds `lightbsr eval MODEL --dataset DIR ... --json` documents as quality tables; with
no MODEL, `lightbsr bench --eval-json a.json b.json --markdown q.md` only renders those.

Defaults: sizes {" ".join(CPU_SIZES)} on the CPU, {" ".join(CUDA_SIZES)} on CUDA; batch 1 on the CPU,
1 and 8 on CUDA. Example (the committed CPU report): benchmarks/README.md.
  lightbsr bench lightbsr_student_x4 --complexity --size 256 --json
  lightbsr bench model.safetensors --onnx model.onnx model.int8.onnx --json out.json --markdown out.md --plot out.png"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "bench", "complexity, latency and accuracy reports", DESCRIPTION)
    p.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        default=argparse.SUPPRESS,
        help="architecture name, checkpoint or ONNX file",
    )
    what = p.add_argument_group("what to measure")
    what.add_argument("--complexity", action="store_true", help="count parameters and MACs")
    what.add_argument("--latency", action="store_true", help="measure latency, memory and accuracy")
    what.add_argument(
        "--size",
        nargs="+",
        metavar="SIZE",
        default=argparse.SUPPRESS,
        help="LR sizes: N, HxW, 720p or 1080p (default: by device)",
    )
    what.add_argument(
        "--batch",
        nargs="+",
        type=int_range(1),
        metavar="N",
        default=argparse.SUPPRESS,
        help="batch sizes (default: 1 CPU, 1 8 CUDA)",
    )
    what.add_argument("--onnx", nargs="+", default=[], metavar="FILE", help="ONNX files to run with ONNX Runtime")
    what.add_argument(
        "--targets", nargs="+", metavar="NAME", default=argparse.SUPPRESS, help="only these targets (default: all)"
    )
    what.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: cuda if available")
    what.add_argument("--image", default=str(DEFAULT_IMAGE), help="real image cropped to each size for accuracy")
    what.add_argument("--eval-json", nargs="+", default=[], metavar="FILE", help="`lightbsr eval --json` outputs")
    what.add_argument("--seed", type=int_range(0), default=0, help="seed of the random weights of an architecture name")
    what.add_argument("--no-roofline", dest="roofline", action="store_false", help="skip the GEMM peaks")
    what.add_argument("--gemm-size", type=int_range(16), default=2048, metavar="N", help="side of the roofline GEMMs")
    what.add_argument("--tiling", action="store_true", help="measure tiling throughput (see above)")
    what.add_argument(
        "--tiling-size", type=int_range(16), default=512, metavar="N", help="LR size of the tiling measures"
    )
    what.add_argument(
        "--tiles", nargs="+", type=int_range(8), default=[128, 256], metavar="N", help="tile sizes for --tiling"
    )
    what.add_argument("--tiling-repeats", type=int_range(1), default=2, metavar="N", help="timed runs per tiling case")
    what.add_argument("--contention", action="store_true", help="measure an upscale beside a busy process")
    what.add_argument("--contention-size", type=int_range(8), default=64, metavar="N", help="LR size for --contention")
    what.add_argument("--ort-profile", action="store_true", help="ONNX Runtime kernel time by operator type")
    timing = p.add_argument_group("timing")
    timing.add_argument(
        "--threads", type=int_range(0), default=0, help="CPU threads for torch and ONNX Runtime (0: the usable CPUs)"
    )
    timing.add_argument(
        "--warmup", type=int_range(0), default=2, help="untimed runs before timing (the accuracy run is one)"
    )
    timing.add_argument("--repeats", type=int_range(1), default=20, help="timed runs (at most)")
    timing.add_argument(
        "--min-repeats", type=int_range(1), default=3, help="timed runs at least, even past --max-seconds"
    )
    timing.add_argument(
        "--max-seconds",
        type=float_range(0.0, low_open=True),
        default=30.0,
        help="stop timing a case after this many seconds; a target slower than this per run is skipped at larger "
        "inputs (the reference always runs)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write the JSON report (no FILE: stdout)")
    out.add_argument("--markdown", metavar="FILE", help="write the report as Markdown tables")
    out.add_argument("--plot", metavar="FILE", help="write a PNG figure (needs pip install 'lightbsr[bench]')")
    out.add_argument(
        "--note", action="append", default=argparse.SUPPRESS, help="a line of text for the report (repeatable)"
    )
    out.add_argument(
        "--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS, help="no progress bar"
    )
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from lightbsr.errors import ConfigError
    from lightbsr.files import check_outputs

    from .report import SCHEMA, load_eval_json, markdown, plot, write_json, write_markdown

    outputs = [path for path in (args.json, args.markdown, args.plot) if path and path != "-"]
    check_outputs([p for p in (getattr(args, "model", None), *args.onnx, *args.eval_json, args.image) if p], outputs)
    if args.plot:  # fail before measuring, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            from lightbsr.errors import BackendUnavailableError

            raise BackendUnavailableError("--plot needs matplotlib: pip install 'lightbsr[bench]'") from err
    quality = [load_eval_json(path) for path in args.eval_json]
    args.model = getattr(args, "model", None)
    document: dict = {"schema": SCHEMA, "model": args.model or "", "notes": list(getattr(args, "note", []))}
    if args.model:
        document.update(_measure(args))
    elif not quality:
        raise ConfigError("nothing to do: give a MODEL and/or --eval-json files")
    document["quality"] = quality
    if args.json:
        if args.json == "-":
            print(json.dumps(document, indent=1))
        else:
            write_json(document, args.json)
    if args.markdown:
        write_markdown(document, args.markdown)
    if args.plot:
        plot(document, args.plot)
    if not args.json or args.json != "-":
        print(markdown(document), end="")
    return 0


def _measure(args: argparse.Namespace) -> dict:
    import torch

    from lightbsr.errors import BackendUnavailableError, ConfigError

    from . import latency as lat
    from .complexity import PAPERS_LR_SIZE, count_onnx, count_torch

    model_path = Path(args.model)
    is_onnx = model_path.suffix.lower() == ".onnx"
    do_complexity = args.complexity or not args.latency
    do_latency = args.latency or (not args.complexity and not is_onnx)
    if not do_latency and getattr(args, "targets", None):
        raise ConfigError(
            "--targets names latency targets; this run measures only complexity (an ONNX MODEL or --complexity)"
        )
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("--device cuda: no CUDA device is available to PyTorch")
    from lightbsr.hardware import available_cpus, torch_threads

    if args.threads < 0:
        raise ConfigError(f"--threads must be ≥ 0, got {args.threads}")
    threads = torch_threads(args.threads or available_cpus())
    sizes = [
        lat.parse_size(s) for s in (getattr(args, "size", None) or (CUDA_SIZES if device == "cuda" else CPU_SIZES))
    ]
    batches = getattr(args, "batch", None) or ([1, 8] if device == "cuda" else [1])
    if min(batches) < 1:
        raise ConfigError("--batch must be ≥ 1")
    result: dict = {}
    model, arch, weights = None, "", ""
    if is_onnx:
        if do_latency:
            raise ConfigError(
                "latency is measured against the PyTorch reference: give the checkpoint as MODEL and the ONNX "
                "file with --onnx (an ONNX MODEL supports --complexity)"
            )
        weights = f"ONNX file {model_path}"
    elif model_path.suffix.lower() == ".safetensors":
        from lightbsr.checkpoint import load_checkpoint

        model, config = load_checkpoint(model_path)
        arch, weights = config.arch, f"checkpoint {model_path}"
    else:
        from lightbsr.models import ModelConfig, build_model

        config = ModelConfig.from_arch(args.model)
        torch.manual_seed(args.seed)
        model, arch = build_model(config).eval(), config.arch
        weights = f"random initialisation (seed {args.seed}): fine for complexity and speed, not for accuracy"
    if model is not None and "teacher" in arch:
        raise ConfigError(f"{arch}: bench measures students (a teacher also needs its DRP / HR input)")
    result.update({"arch": arch, "weights": weights})
    if do_complexity:
        counted = []
        papers = (PAPERS_LR_SIZE, PAPERS_LR_SIZE)
        for height, width in [*sizes, *([] if papers in sizes else [papers])]:
            c = count_onnx(model_path, height, width) if is_onnx else count_torch(model, height, width, name=arch)
            counted.append(c.to_dict())
        for path in getattr(args, "onnx", []):  # the deployed graphs, at the papers' size
            counted.append(count_onnx(path, PAPERS_LR_SIZE).to_dict())
        result["complexity"] = counted
        if is_onnx:
            result["arch"] = counted[0]["arch"]
    extras = args.tiling or args.contention or args.ort_profile
    if extras and (model_path.suffix.lower() != ".safetensors" or not do_latency):
        raise ConfigError("--tiling, --contention and --ort-profile go with a checkpoint MODEL and --latency")
    if do_latency:
        assert model is not None
        names = getattr(args, "targets", [])
        torch_names = [n for n in lat.TORCH_TARGETS if not names or n in names]
        if lat.REFERENCE not in torch_names:
            torch_names.insert(0, lat.REFERENCE)
        optional = [*lat.ORT_CPU_VARIANTS, *lat.OPENVINO_VARIANTS]  # only when named
        kinds = [k for k in lat.ORT_PROVIDERS if not names or k in names] + [k for k in optional if k in names]
        known = [*lat.TORCH_TARGETS, *lat.ORT_PROVIDERS, *optional]
        unknown = set(names) - set(known)
        if unknown:
            raise ConfigError(f"unknown --targets {sorted(unknown)}; known: {known}")
        for path in args.onnx:
            if not Path(path).is_file():
                raise ConfigError(f"{path}: no such ONNX file")
        if not Path(args.image).is_file():
            raise ConfigError(f"--image {args.image}: no such file")
        targets = lat.torch_targets(model, device, torch_names, force=names)
        targets += lat.onnx_targets(args.onnx, device, kinds, threads)
        rows = lat.measure(
            targets,
            sizes,
            batches,
            args.image,
            warmup=args.warmup,
            repeats=args.repeats,
            min_repeats=args.min_repeats,
            max_seconds=args.max_seconds,
            progress=getattr(args, "progress", True),
        )
        result["environment"] = lat.environment(threads, device)
        flops = {(h, w): count_torch(model, h, w).flops for h, w in sizes}
        if args.roofline and device == "cpu":
            from .roofline import measure_peaks, vnni

            peaks = [p.to_dict() for p in measure_peaks(threads, args.gemm_size)]
            result["roofline"] = {"vnni": vnni(), "gemm_size": args.gemm_size, "threads": threads, "peaks": peaks}
            lat.add_roofline(rows, flops, peaks)
        result["latency"] = {
            "reference": lat.REFERENCE,
            "settings": {
                "sizes": [f"{h}x{w}" for h, w in sizes],
                "batches": batches,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "min_repeats": args.min_repeats,
                "max_seconds": args.max_seconds,
                "timer": "CUDA events (PyTorch targets on CUDA), else time.perf_counter",
                "image": _display_path(args.image),
            },
            "rows": [r.to_dict() for r in rows],
        }
        fp32_onnx = next((p for p in args.onnx if lat.onnx_precision(p) == "fp32"), None)
        progress = getattr(args, "progress", True)
        if args.ort_profile:
            from .ort_profile import profile_by_op

            height, width = max(sizes, key=lambda s: s[0] * s[1])
            result["ort_profile"] = [profile_by_op(p, height, width, threads=threads) for p in args.onnx]
        if args.tiling:
            from .tiling_throughput import measure_tiling

            models = {"torch": str(model_path)} | ({"onnxruntime": fp32_onnx} if fp32_onnx else {})
            tiling_rows = measure_tiling(
                models,
                args.image,
                size=args.tiling_size,
                tiles=args.tiles,
                threads=threads,
                repeats=args.tiling_repeats,
                progress=progress,
            )
            result["tiling"] = {"size": args.tiling_size, "rows": [r.to_dict() for r in tiling_rows]}
        if args.contention:
            from . import contention

            cases = contention.default_cases(threads, onnx=fp32_onnx is not None)
            models = {"torch": str(model_path)} | ({"onnxruntime": fp32_onnx} if fp32_onnx else {})
            contention_rows = contention.measure(
                cases,
                models,
                args.image,
                size=args.contention_size,
                load_threads=available_cpus(),
                progress=progress,
            )
            result["contention"] = {
                "size": args.contention_size,
                "load": f"another PyTorch process convolving on {available_cpus()} threads (OpenMP default policy)",
                "rows": [r.to_dict() for r in contention_rows],
            }
    return result


def _display_path(path: str) -> str:
    """``path`` relative to the working directory where it lies below it (reports stay machine-independent)."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
