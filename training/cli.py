"""``lightbsr train`` and ``lightbsr eval``. Only argparse and the standard library are imported here;
torch and the trainer are imported when a command runs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lightbsr.argparsing import add_command, float_range, int_range

TRAIN_DESCRIPTION = """\
Train a teacher, then distil it into a student (the LightBSR / KDSR protocol of docs/models.md).

  lightbsr train teacher --arch lightbsr --setting 1 --data DF2K/ --out runs/t1 --val-data Set5/
  lightbsr train student --arch lightbsr --setting 1 --data DF2K/ --out runs/s1 --teacher runs/t1 --val-data Set5/

The schedule is counted in iterations of one global batch: --iterations (default: the papers' 700
"epochs" of ~1000 iterations) splits into stage 1 (--stage1-iterations, default iterations//7:
estimator pre-training / distillation only) and stage 2 (whole network, linear warm-up over
--warmup-iterations, default 5/600 of stage 2, then cosine 2e-4 → 1e-6). The KDSR teacher trains
in one stage. Degradations are synthesised on the training device for every batch. That is
LightBSR's recipe; KDSR trains with its own by default (--recipe kdsr: Adam β2 0.999, 500 epochs,
1e-4 halved every 125 epochs, stage 1 only for the setting-2 student, one degradation per batch;
--recipe lightbsr for the above; both in training/README.md).

Under a deadline, --time-budget 2h30m replaces the iteration counts: stage 1 takes --stage1-share
of the time, the warm-up 5/600 of stage 2's time, and the cosine ends when the time does (the
rate follows the training clock, which a resumed run continues). --init RUN_OR_CKPT starts a new
run from other weights (continue a teacher, fine-tune) with a fresh optimizer and schedule.

RUN (--out) receives model.safetensors (latest weights, a lightbsr checkpoint for `lightbsr
export`), best.safetensors (best validation PSNR, with --val-data), log.csv, val.csv,
config.json, TensorBoard events (if tensorboard is installed) and state/ (the resume state:
safetensors shards and JSON, every file below 16 MiB). Rerun the same command with --resume to
continue exactly; SIGINT/SIGTERM save a state before stopping. Several GPUs:
  torchrun --nproc-per-node 8 -m lightbsr train teacher ... (--batch-size is the global batch)"""

EVAL_DESCRIPTION = """\
Benchmark a model with the papers' protocol (LightBSR Table 3): HR cropped to a multiple of the
scale, blurred with a 21×21 isotropic Gaussian of each --sigma, MATLAB-bicubic ×1/scale, LR
rounded to 8 bits; SR clamped and rounded to 8 bits; Y-PSNR (and SSIM) with a `scale`-pixel
shave, averaged over the images of each dataset folder.

MODEL is a lightbsr checkpoint (.safetensors, run in PyTorch; a LightBSR teacher is given the
true degradation prior), an ONNX file (input 'lr', output 'sr', run with ONNX Runtime on the
CPU), 'bicubic' (MATLAB-style bicubic upsampling, the papers' Bicubic row) or 'default' (the
bundled model). --backend openvino runs a lightbsr ONNX export on OpenVINO's CPU plugin instead
(FP32; --bf16: BF16), to measure what that precision costs."""


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)


# --------------------------------------------------------------------------- train


def _duration(text: str) -> float:
    from lightbsr.errors import ConfigError

    from .schedule import parse_duration

    try:
        return parse_duration(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "train", "train a teacher or distil a student", TRAIN_DESCRIPTION)
    p.add_argument("role", choices=("teacher", "student"), help="what to train")
    p.add_argument("--arch", choices=("lightbsr", "kdsr"), default="lightbsr", help="model family")
    p.add_argument("--setting", type=int, choices=(1, 2), required=True, help="degradation setting")
    p.add_argument("--data", required=True, help="folder of HR training images (searched recursively)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder for checkpoints, logs and resume state")
    p.add_argument(
        "--teacher",
        default=argparse.SUPPRESS,
        metavar="RUN_OR_CKPT",
        help="student only: the teacher run folder (its latest full-precision state) or a teacher checkpoint",
    )
    p.add_argument(
        "--init",
        default=argparse.SUPPRESS,
        metavar="RUN_OR_CKPT",
        help="start from these weights (a run folder's latest state, or a checkpoint of the same model) instead of "
        "a fresh initialisation; the optimizer and the schedule start anew",
    )
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=4, help="upscaling factor")

    s = p.add_argument_group("schedule")
    s.add_argument("--iterations", type=int_range(1), default=700_000, help="total iterations, both stages")
    s.add_argument(
        "--stage1-iterations",
        type=int_range(0),
        default=argparse.SUPPRESS,
        help="iterations of stage 1 (default: iterations//7, the papers' 100:600 epochs; 0 for the KDSR teacher)",
    )
    s.add_argument(
        "--warmup-iterations",
        type=int_range(0),
        default=argparse.SUPPRESS,
        help="linear warm-up at the start of stage 2 (default: 5/600 of stage 2, the papers' 5 epochs)",
    )
    s.add_argument("--batch-size", type=int_range(1), default=64, help="global batch (images per iteration, all GPUs)")
    s.add_argument("--patch-size", type=int_range(4), default=64, help="LR patch side (the HR patch is scale× larger)")
    s.add_argument(
        "--crops",
        type=int_range(1),
        default=argparse.SUPPRESS,
        help="positive crops per image sharing a degradation (default: 4 for the LightBSR teacher, else 1)",
    )
    s.add_argument(
        "--lr", type=float_range(0.0, low_open=True), default=2e-4, help="learning rate (stage 1, and the stage-2 peak)"
    )
    s.add_argument("--min-lr", type=float_range(0.0, low_open=True), default=1e-6, help="end of the stage-2 cosine")
    s.add_argument(
        "--recipe",
        choices=("kdsr", "lightbsr"),
        default=argparse.SUPPRESS,
        help="the authors' training recipe (default: the family's own). kdsr: Adam β2 0.999, 1e-4 halved every "
        "125 epochs (150 for the setting-1 student), stage 1 only for the setting-2 student, one degradation per "
        "batch, a student's estimator not copied from the teacher (see training/README.md); lightbsr: this "
        "command's stage 1, warm-up and cosine",
    )
    s.add_argument(
        "--kd-l1-weight",
        type=float_range(0.0),
        default=argparse.SUPPRESS,
        help="weight of the L1 term of distillation (default: 0.1 for LightBSR's channel IDR, 0 for KDSR)",
    )
    s.add_argument(
        "--time-budget",
        type=_duration,
        default=argparse.SUPPRESS,
        metavar="DURATION",
        help="train for this long (2h30m, 90m, 45s): the stages, warm-up and cosine follow the clock and end when the "
        "time does, instead of --iterations/--stage1-iterations/--warmup-iterations",
    )
    s.add_argument(
        "--budget-clock",
        choices=("wall", "cpu"),
        default=argparse.SUPPRESS,
        help="what --time-budget counts: wall time (default), or this process's CPU time divided by its threads, "
        "which a machine shared with other work stretches in wall time instead of cutting the iterations",
    )
    s.add_argument(
        "--stage1-share",
        type=float_range(0.0, 1.0),
        default=argparse.SUPPRESS,
        help="with --time-budget: the share of the time spent in stage 1 (default: 1/7, the papers' 100:600; "
        "0 for the KDSR teacher)",
    )
    s.add_argument(
        "--seed", type=int_range(0), default=0, help="seed of initialisation, data order, crops, degradations"
    )
    s.add_argument("--stop-at", type=int_range(1), default=argparse.SUPPRESS, help="save and stop after this iteration")

    r = p.add_argument_group("runtime")
    r.add_argument(
        "--amp",
        choices=("auto", "bf16", "fp16", "off"),
        default="auto",
        help="mixed precision: bf16 autocast, fp16 with a GradScaler, or off (auto: bf16 on CUDA, off on CPU)",
    )
    r.add_argument("--device", choices=("cpu", "cuda"), default=argparse.SUPPRESS, help="default: cuda if available")
    r.add_argument(
        "--workers",
        type=int_range(0),
        default=argparse.SUPPRESS,
        help="DataLoader workers (default: 0 on CPU, 8 on CUDA)",
    )
    r.add_argument(
        "--threads",
        type=int_range(1),
        default=argparse.SUPPRESS,
        help="CPU threads for PyTorch (default on the CPU: the CPUs this process may use, affinity and cgroup quota)",
    )
    r.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        default=argparse.SUPPRESS,
        help="keep NCHW tensors (default: channels-last, faster for these convolutions on CPU and GPU)",
    )
    r.add_argument(
        "--cache-mb", type=int_range(0), default=4096, help="decoded training images kept in RAM (per process)"
    )
    r.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower on CUDA)")
    r.add_argument("--resume", action="store_true", help="continue RUN from its latest state (start if it has none)")
    r.add_argument(
        "--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS, help="no progress bar"
    )

    o = p.add_argument_group("logging, validation and checkpoints")
    o.add_argument(
        "--log-every", type=int_range(1), default=100, help="iterations per log.csv row (mean losses, speed)"
    )
    o.add_argument("--val-data", default=argparse.SUPPRESS, metavar="DIR", help="benchmark HR images to validate on")
    o.add_argument("--val-every", type=int_range(0), default=5000, help="iterations between validations (0: never)")
    o.add_argument(
        "--val-images", type=int_range(1), default=5, help="validation images (the first ones of --val-data)"
    )
    o.add_argument("--val-patch", type=int_range(16), default=256, help="centre crop side of validation HR images")
    o.add_argument(
        "--save-every", type=int_range(0), default=5000, help="iterations between saved states (and at the end)"
    )
    o.add_argument(
        "--save-dtype",
        choices=("auto", "fp32", "fp16"),
        default="auto",
        help="precision of model.safetensors/best.safetensors (auto: fp32 unless that exceeds the 16 MiB file limit)",
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .schedule import format_duration
    from .trainer import TrainConfig, train

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    result = train(config)
    if os.environ.get("RANK", "0") != "0":
        return 130 if result.interrupted else 0
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.last_losses.items())
    state = "finished" if result.finished else ("interrupted" if result.interrupted else "stopped")
    if result.time_budget is not None:
        spent = f"{format_duration(result.elapsed)} of {format_duration(result.time_budget)}"
        where = f"at iteration {result.iteration} ({spent})"
    else:
        where = f"at iteration {result.iteration}/{result.iterations}"
    print(f"{state} {where}" + (f": {losses}" if losses else ""))
    if result.best_psnr is not None:
        print(f"best validation Y-PSNR {result.best_psnr:.3f} dB ({result.run / 'best.safetensors'})")
    print(f"checkpoint: {result.checkpoint}")
    if not result.finished:
        print("continue with the same command and --resume")
    return 130 if result.interrupted else 0


# --------------------------------------------------------------------------- eval


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "eval", "benchmark a model with the papers' protocol", EVAL_DESCRIPTION)
    p.add_argument("model", metavar="MODEL", help="checkpoint (.safetensors), ONNX file, 'bicubic' or 'default'")
    p.add_argument("--dataset", nargs="+", action="extend", required=True, metavar="DIR", help="folder(s) of HR images")
    p.add_argument("--setting", type=int, choices=(1, 2), default=1, help="degradation setting of the protocol")
    p.add_argument(
        "--sigma",
        type=float_range(0.0, low_open=True),
        nargs="+",
        default=[1.2, 2.4, 3.6],
        help="isotropic kernel widths",
    )
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=4, help="upscaling factor")
    p.add_argument("--ssim", action="store_true", help="show SSIM beside PSNR in the table")
    p.add_argument("--json", action="store_true", help="print mean PSNR/SSIM per σ and dataset as JSON")
    p.add_argument("--device", choices=("cpu", "cuda"), default=argparse.SUPPRESS, help="default: cuda if available")
    p.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="what runs an ONNX MODEL (openvino: a lightbsr export, pip install 'lightbsr[openvino]')",
    )
    p.add_argument("--bf16", action="store_true", help="--backend openvino: compute in BF16 (a CPU with BF16)")
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS, help="no progress bar"
    )
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    import torch

    from lightbsr.errors import BackendUnavailableError
    from lightbsr.evaluation import format_table

    from .eval_models import evaluate_model, load_eval_model, summary

    name = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("--device cuda: no CUDA device is available to PyTorch")
    device = torch.device(name)
    precision = "bf16" if args.bf16 else None
    model = load_eval_model(args.model, args.scale, args.setting, device, backend=args.backend, precision=precision)
    results = [
        evaluate_model(model, d, args.scale, args.sigma, args.setting, device, getattr(args, "progress", True))
        for d in args.dataset
    ]
    if args.json:
        print(json.dumps(summary(args.model, model, results, args.dataset), indent=2, allow_nan=False))
    else:
        print(format_table(results, ssim=args.ssim))
    sys.stdout.flush()
    return 0
