"""The GPU one-shot: train the default model on a lent GPU, evaluate it, time it, and bring it all back.

A lent GPU comes for minutes, once (docs/gpu.md). One call of
``benchmarks/scripts/gpu_session.sh`` runs this module, which, inside a total ``--budget``:

1. trains the setting-1 LightBSR teacher, then the student, each under a time budget
   (``lightbsr train --time-budget``: bf16 autocast, channels-last, a large batch);
2. writes the student's float16 weights and evaluates them on every ``--eval`` folder at
   σ = 1.2 / 2.4 / 3.6, beside bicubic, and writes the model card
   (:mod:`lightbsr.training.release`);
3. times PyTorch eager FP32/BF16/FP16 and ``torch.compile`` (CUDA graphs) with ``lightbsr
   bench`` at the ``--sizes`` and ``--batches`` (a subprocess with what time is left), and the
   tiled path (:class:`lightbsr.runtime.Upscaler`) on one ``--tiled-size``² LR image.

Every phase checks the time left and is reported as done, skipped (and why) or failed in
``summary.json``; a failing phase does not stop the others. ``--out`` receives at most
:data:`MAX_FILES` files below 16 MiB each (what the GPU machine can send back):
:data:`OUT_FILES`; the shell script adds ``logs.tar.gz`` (run logs, this summary, the console).

It runs on the CPU too (``--device cpu`` with tiny budgets and images): that is its test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MAX_FILES", "OUT_FILES", "main"]

MAX_FILES = 8
WEIGHTS = "lightbsr_student_x4_setting1.safetensors"
TEACHER = "lightbsr_teacher_x4_setting1.safetensors"
OUT_FILES = (WEIGHTS, TEACHER, "MODEL_CARD.md", "eval.json", "latency.json", "latency.md", "latency.png")
"""What this module writes to ``--out`` (the shell script adds ``logs.tar.gz``: eight in all)."""
SIGMAS = (1.2, 2.4, 3.6)


class _Session:
    """The clock and the record of one call: phases run while time is left, each reported in ``summary.json``."""

    def __init__(self, budget: float, work: Path) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.work = work
        self.summary: dict[str, Any] = {"budget_s": budget, "phases": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def phase(self, name: str, needs: float, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` if at least ``needs`` seconds are left; record how it went (never raises)."""
        record: dict[str, Any] = {"started_s": round(time.monotonic() - self.start, 1)}
        self.summary["phases"][name] = record
        if self.left() < needs:
            record.update(status="skipped", reason=f"{self.left():.0f} s left, {needs:.0f} s needed")
            print(f"[gpu-session] {name}: skipped ({record['reason']})", flush=True)
            self.save()
            return None
        print(f"[gpu-session] {name}: start ({self.left():.0f} s left)", flush=True)
        began = time.monotonic()
        try:
            result = fn()
        except BaseException as err:  # report and go on: a failed phase must not lose the others' results
            if isinstance(err, KeyboardInterrupt):
                raise
            record.update(status="failed", reason=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
            print(f"[gpu-session] {name}: FAILED: {record['reason']}", flush=True)
            result = None
        else:
            record["status"] = "done"
        record["seconds"] = round(time.monotonic() - began, 1)
        self.save()
        return result

    def save(self) -> None:
        (self.work / "summary.json").write_text(json.dumps(self.summary, indent=1, default=str))


def _train(role: str, args: argparse.Namespace, out: Path, budget: float, **extra: Any) -> dict[str, Any]:
    from lightbsr.training.trainer import TrainConfig, train

    config = TrainConfig(
        role=role,
        arch="lightbsr",
        setting=1,
        data=args.data,
        out=str(out),
        time_budget=budget,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        amp=args.amp,
        device=args.device,
        workers=args.workers,
        threads=args.threads,
        val_data=args.val,
        val_every=args.val_every,
        val_patch=args.val_patch,
        save_every=args.val_every,
        log_every=args.log_every,
        progress=False,
        **extra,
    )
    result = train(config)
    return {"iterations": result.iteration, "seconds": result.elapsed, "finished": result.finished}


def _evaluate(weights: Path, datasets: Sequence[str], device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from lightbsr.training.eval_models import evaluate_model, load_eval_model, summary

    results = {}
    for spec in (str(weights), "bicubic"):
        model = load_eval_model(spec, 4, 1, torch.device(device))
        scores = [evaluate_model(model, d, 4, SIGMAS, 1, torch.device(device), progress=False) for d in datasets]
        results[spec] = summary(spec, model, scores, list(datasets))
    return results[str(weights)], results["bicubic"]


def _bench(args: argparse.Namespace, weights: Path, out: Path, timeout: float) -> None:
    command = [
        sys.executable, "-m", "lightbsr", "bench", str(weights), "--latency", "--device", args.device,
        "--size", *args.sizes, "--batch", *map(str, args.batches), "--targets", *args.targets,
        "--repeats", str(args.repeats), "--max-seconds", str(args.max_seconds), "--no-progress",
        "--note", "Made by the GPU one-shot: bash benchmarks/scripts/gpu_session.sh (docs/gpu.md).",
        "--note", "TensorRT and onnxruntime-gpu are not installed on the lent machine: not measured.",
        "--json", str(out / "latency.json"), "--markdown", str(out / "latency.md"),
    ]  # fmt: skip
    try:
        import matplotlib  # noqa: F401

        command += ["--plot", str(out / "latency.png")]
    except ImportError:
        pass
    subprocess.run(command, check=True, timeout=timeout, stdout=subprocess.DEVNULL)


def _tiled(args: argparse.Namespace, weights: Path, image: str) -> dict[str, Any]:
    """Seconds to upscale one ``--tiled-size``² LR image through the tiled path, after one warm-up run."""
    import numpy as np

    from lightbsr.evaluation import read_image_rgb8
    from lightbsr.runtime import Upscaler

    side = args.tiled_size
    tile = min(args.tile, side)
    crop = read_image_rgb8(image)
    reps = (-(-side // crop.shape[0]), -(-side // crop.shape[1]), 1)
    lr = np.ascontiguousarray(np.tile(crop, reps)[:side, :side])
    upscaler = Upscaler(str(weights), backend="torch", device=args.device, tile=tile, precision=args.tiled_precision)
    upscaler.upscale(lr[:tile, :tile])  # warm-up (kernels, allocator)
    began = time.perf_counter()
    out = upscaler.upscale(lr)
    seconds = time.perf_counter() - began
    return {
        "lr": [side, side],
        "sr": list(out.shape[:2]),
        "tile": tile,
        "precision": args.tiled_precision,
        "seconds": round(seconds, 3),
        "output_mp_per_s": round(out.shape[0] * out.shape[1] / 1e6 / seconds, 2),
        "upscaler": upscaler.describe(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lightbsr.benchmarks.gpu_session",
        description="Train, evaluate and time the default model in one call on a lent GPU (docs/gpu.md).",
    )
    p.add_argument("--out", required=True, help="folder for the files that come back (at most 8)")
    p.add_argument("--work", help="folder for run folders and logs (default: OUT/../gpu-work)")
    p.add_argument("--data", required=True, help="HR training images")
    p.add_argument("--val", help="HR images for the validation curve (a few centre crops)")
    p.add_argument("--eval", nargs="+", default=[], help="benchmark folders (Set5, Set14, BSD68)")
    p.add_argument("--budget", type=float, default=510.0, help="seconds for the whole call")
    p.add_argument("--teacher-share", type=float, default=0.42, help="share of the budget for the teacher")
    p.add_argument("--student-share", type=float, default=0.25, help="share of the budget for the student")
    p.add_argument("--init-teacher", help="continue the teacher from these weights (a checkpoint or a run folder)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (the test)")
    p.add_argument("--amp", default="auto", help="bf16 on CUDA (auto), off on the CPU")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: all usable)")
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--val-patch", type=int, default=256)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--sizes", nargs="+", default=["256", "512"], help="LR sizes for the latency report")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument(
        "--targets",
        nargs="+",
        default=["torch-fp32", "torch-bf16", "torch-fp16", "torch-compile-bf16", "torch-compile-fp16"],
    )
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--max-seconds", type=float, default=5.0, help="per timed run: slower targets skip larger sizes")
    p.add_argument("--tiled-size", type=int, default=2048, help="side of the LR image of the tiled timing")
    p.add_argument("--tile", type=int, default=512, help="tile side (LR pixels) of the tiled timing")
    p.add_argument("--tiled-precision", default="fp16", help="precision of the tiled timing (torch backend)")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out.parent / "gpu-work"
    work.mkdir(parents=True, exist_ok=True)
    session = _Session(args.budget, work)
    from lightbsr.hardware import describe_machine

    session.summary["machine"] = describe_machine(args.device)
    session.summary["args"] = vars(args)
    teacher_run, student_run = work / "teacher", work / "student"
    weights = out / WEIGHTS

    teacher_budget, student_budget = args.budget * args.teacher_share, args.budget * args.student_share
    init = {"init": args.init_teacher, "stage1_share": 0.0} if args.init_teacher else {}
    session.summary["teacher"] = session.phase(
        "teacher", teacher_budget, lambda: _train("teacher", args, teacher_run, teacher_budget, **init)
    )
    session.summary["student"] = session.phase(
        "student",
        student_budget,
        lambda: _train("student", args, student_run, student_budget, teacher=str(teacher_run), stage1_share=0.2),
    )
    if not (student_run / "config.json").is_file():
        print("[gpu-session] no student was trained: nothing to release", flush=True)
        return 1

    def release() -> dict[str, Any]:
        from lightbsr.training.release import write_weights

        info = write_weights(student_run, weights)
        teacher_file = teacher_run / "model.safetensors"
        if teacher_file.is_file():
            shutil.copyfile(teacher_file, out / TEACHER)
        return info

    session.phase("weights", 5, release)
    evaluation = session.phase("eval", 10, lambda: _evaluate(weights, args.eval, args.device)) if args.eval else None
    if evaluation:
        (out / "eval.json").write_text(json.dumps({"model": evaluation[0], "bicubic": evaluation[1]}, indent=1))

        def card() -> None:
            from lightbsr.training.release import model_card, summarize_run

            text = model_card(
                name="lightbsr_student_x4_setting1 (GPU one-shot)",
                teacher=summarize_run(teacher_run),
                student=summarize_run(student_run),
                evaluation=evaluation[0],
                bicubic=evaluation[1],
                commands=[f"bash benchmarks/scripts/gpu_session.sh  # {' '.join(argv or sys.argv[1:])}"],
                validation=f"The validation curve: centre crops of {args.val}, setting 1, σ = 2.4.",
            )
            (out / "MODEL_CARD.md").write_text(text)

        session.phase("card", 1, card)
    reserve = 20.0  # for the tiled timing and the logs
    session.phase("latency", 15, lambda: _bench(args, weights, out, timeout=max(10.0, session.left() - reserve)))
    image = (args.eval or [args.data])[0]
    first_image = next(p for p in sorted(Path(image).iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    session.summary["tiled"] = session.phase("tiled", 5, lambda: _tiled(args, weights, str(first_image)))
    if session.summary["tiled"] and (out / "latency.json").is_file():
        document = json.loads((out / "latency.json").read_text())
        document["tiled"] = session.summary["tiled"]
        (out / "latency.json").write_text(json.dumps(document, indent=1))
    session.summary["seconds"] = round(time.monotonic() - session.start, 1)
    session.save()
    written = sorted(f.name for f in out.iterdir())
    print(f"[gpu-session] done in {session.summary['seconds']} s; wrote {', '.join(written)}", flush=True)
    failed = [n for n, r in session.summary["phases"].items() if r.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
