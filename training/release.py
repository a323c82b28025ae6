"""Release a trained student: float16 weights and a model card, from its teacher and student run folders.

Used for the bundled default model (``lightbsr/weights/``) and by the GPU one-shot
(:mod:`lightbsr.benchmarks.gpu_session`)::

    python -m lightbsr.training.release --teacher-run T --student-run S --eval eval.json \\
        --bicubic bicubic.json --weights OUT.safetensors --card OUT.md --command "lightbsr train ..." ...

The card is written from what the runs recorded (``config.json``, ``log.csv``, ``val.csv``,
the resume manifest) and from ``lightbsr eval --json`` documents, so every figure in it can
be traced to a file; nothing is typed in by hand but the commands and notes passed in.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PAPER_TABLE3", "RunSummary", "chain_curve", "model_card", "summarize_run", "write_weights"]

PAPER_TABLE3: dict[str, tuple[str, tuple[float, float, float], tuple[float, float, float]]] = {
    # dataset → (the paper's name for it, Bicubic row, LightBSR row) at σ = 1.2 / 2.4 / 3.6, setting 1, ×4
    "Set5": ("Set5", (27.69, 25.99, 24.45), (32.47, 32.17, 31.06)),
    "Set14": ("Set14", (25.60, 24.39, 23.25), (28.82, 28.65, 27.79)),
    "BSD68": ("B100", (25.58, 24.67, 23.80), (27.77, 27.69, 27.04)),
}
"""LightBSR paper, Table 3. BSD68 is the 68-image subset of B100: its row is B100's, for orientation only."""
SIGMAS = (1.2, 2.4, 3.6)


@dataclass
class RunSummary:
    """What a training run folder recorded about itself."""

    path: Path
    config: dict[str, Any]
    iterations: int
    elapsed_s: float | None
    images: int | None
    teacher: str | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    log: list[dict[str, str]] = field(default_factory=list)
    val: list[tuple[int, float]] = field(default_factory=list)

    @property
    def role(self) -> str:
        return str(self.config.get("role"))

    def stage_iterations(self) -> dict[int, int]:
        """Iterations per stage, counted from the log rows."""
        counts: dict[int, int] = {}
        previous = 0
        for row in self.log:
            iteration, stage = int(row["iteration"]), int(row["stage"])
            counts[stage] = counts.get(stage, 0) + iteration - previous
            previous = iteration
        return counts

    def mean_speed(self) -> float | None:
        """Images per second over the run (log rows' ``img_per_s``, weighted by their iterations)."""
        total, weight, previous = 0.0, 0, 0
        for row in self.log:
            iteration = int(row["iteration"])
            if row.get("img_per_s"):
                total += float(row["img_per_s"]) * (iteration - previous)
                weight += iteration - previous
            previous = iteration
        return total / weight if weight else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def summarize_run(run: str | os.PathLike[str]) -> RunSummary:
    """Read a run folder's config, logs and latest manifest."""
    from .state import latest_state_dir, read_manifest

    path = Path(run)
    config = json.loads((path / "config.json").read_text())
    log = _read_csv(path / "log.csv")
    val = [(int(r["iteration"]), float(r["psnr"])) for r in _read_csv(path / "val.csv")]
    folder = latest_state_dir(path)
    manifest = read_manifest(folder) if folder is not None else {}
    iterations = max(int(manifest.get("iteration", 0)), int(log[-1]["iteration"]) if log else 0)
    elapsed = manifest.get("elapsed")
    if elapsed is None and log and log[-1].get("elapsed_s"):
        elapsed = float(log[-1]["elapsed_s"])
    images = len(manifest["data"]["images"]) if manifest.get("data") else None
    sessions_file = path / "sessions.json"
    sessions = json.loads(sessions_file.read_text()) if sessions_file.is_file() else []
    teacher = (manifest.get("teacher") or {}).get("source")
    return RunSummary(path, config, iterations, elapsed, images, teacher, sessions, log, val)


def write_weights(
    student_run: str | os.PathLike[str], out: str | os.PathLike[str], *, role: str = "student"
) -> dict[str, Any]:
    """The run's final weights (its latest state, else ``model.safetensors``) as a float16 checkpoint.

    ``role="teacher"`` writes a teacher run's (with its MoCo key encoder, queue and PCA basis), from which
    training can continue (``--init``) without the run folder.
    """
    import torch

    from lightbsr.checkpoint import save_checkpoint
    from lightbsr.models import build_model
    from lightbsr.models.convert import load_strict

    from .trainer import read_run_weights

    weights, config, source = read_run_weights(str(student_run))
    if config.role != role:
        raise SystemExit(f"{student_run} holds a {config.arch}, not a {role}")
    model = build_model(config)
    load_strict(model, weights)
    info = {"source": source, "iteration": summarize_run(student_run).iterations}
    save_checkpoint(out, model, config, dtype=torch.float16, metadata={"lightbsr.release": json.dumps(info)})
    return info


def _duration(seconds: float | None) -> str:
    from .schedule import format_duration

    return format_duration(seconds) if seconds else "?"


def _eval_means(document: dict[str, Any]) -> dict[str, list[float]]:
    """dataset name → mean Y-PSNR at :data:`SIGMAS` from a ``lightbsr eval --json`` document."""
    table = {}
    for dataset in document["datasets"]:
        table[dataset["name"]] = [float(dataset["mean"][repr(s)]["psnr"]) for s in SIGMAS]
    return table


def _machines(*runs: RunSummary) -> list[str]:
    """One line per distinct machine the runs' sessions ran on (``sessions.json``)."""
    lines: list[str] = []
    for run in runs:
        for session in run.sessions:
            host = session.get("machine", {})
            where = host.get("gpu") or (
                f"{host.get('cpu')} ({host.get('cpus')} CPUs used; {' '.join(host.get('cpu_isa') or []) or 'no AVX2'})"
            )
            line = f"{where}, Python {host.get('python')}, torch {host.get('torch')}"
            if line not in lines:
                lines.append(line)
    return lines or ["not recorded (runs made before sessions.json existed)"]


def _run_lines(summary: RunSummary) -> list[str]:
    c = summary.config
    stages = summary.stage_iterations()
    speed = summary.mean_speed()
    lines = [
        f"- run folder `{summary.path.name}`: {summary.iterations} iterations "
        f"({', '.join(f'stage {k}: {v}' for k, v in sorted(stages.items()))}), "
        f"{_duration(summary.elapsed_s)} of training time"
        + (f" (time budget {_duration(c['time_budget'])})" if c.get("time_budget") else ""),
        f"- batch {c['batch_size']} images × {c.get('crops') or 1} crop(s), LR patch {c['patch_size']}, "
        f"lr {c['lr']}"
        + (f" → {c['min_lr']} (cosine)" if 2 in stages else " (stage 1: constant)")
        + f", amp {c.get('amp')}"
        + (f", {speed:.2f} img/s on average" if speed else ""),
    ]
    if c.get("init"):
        lines.append(f"- started from the weights of `{c['init']}` (`--init`)")
    if summary.teacher:
        lines.append(f"- teacher: `{summary.teacher}`")
    if summary.val:
        points = ", ".join(f"{i}: {p:.2f}" for i, p in summary.val)
        lines.append(f"- validation Y-PSNR by iteration (dB): {points}")
    return lines


def _chain_offsets(runs: Sequence[RunSummary]) -> tuple[list[int], int]:
    """Where each run of a chain starts on one iteration axis, and where the chain ends.

    A run started from the previous run's weights (``--init``) counts its iterations from where that
    run ended; a run without ``--init`` continues the previous run's count (it is a resumed copy of it).
    """
    offsets: list[int] = []
    offset = end = 0
    for index, run in enumerate(runs):
        if index and run.config.get("init"):
            offset = end
        offsets.append(offset)
        end = offset + run.iterations
    return offsets, end


def chain_curve(runs: Sequence[RunSummary]) -> list[tuple[int, float, str]]:
    """Validation points of a chain of runs (training order) on one axis: ``(iteration, Y-PSNR, run name)``.

    Points two runs both logged (a resumed copy keeps its original's log) are kept once.
    """
    points: dict[int, tuple[float, str]] = {}
    for run, offset in zip(runs, _chain_offsets(runs)[0], strict=True):
        for iteration, psnr in run.val:
            points.setdefault(offset + iteration, (psnr, run.path.name))
    return [(iteration, psnr, name) for iteration, (psnr, name) in sorted(points.items())]


def _chain_lines(runs: Sequence[RunSummary]) -> list[str]:
    curve = chain_curve(runs)
    if not curve:
        return []
    names = " → ".join(f"`{run.path.name}`" for run in runs)
    return [
        f"Teacher validation Y-PSNR (dB) over the whole chain of teacher runs ({names}, each continuing from the "
        f"one before; {_chain_offsets(runs)[1]} iterations in all), by iteration counted across them:",
        "",
        "| iteration | run | Y-PSNR |",
        "| --- | --- | --- |",
        *(f"| {iteration} | `{name}` | {psnr:.2f} |" for iteration, psnr, name in curve),
        "",
    ]


def model_card(
    *,
    name: str,
    teacher: RunSummary,
    student: RunSummary,
    evaluation: dict[str, Any],
    bicubic: dict[str, Any] | None,
    commands: Sequence[str],
    notes: Sequence[str] = (),
    validation: str = "",
    teacher_evaluation: dict[str, Any] | None = None,
    teacher_chain: Sequence[RunSummary] = (),
) -> str:
    """The model card (Markdown) of a released student.

    ``teacher_evaluation`` (``lightbsr eval TEACHER --json``: the teacher given the true kernel)
    adds the bound the student inherits to the evaluation table; ``teacher_chain`` (earlier teacher
    runs, in order, ending before ``teacher``) adds the teacher's validation curve over all of them.
    """
    ours = _eval_means(evaluation)
    base = _eval_means(bicubic) if bicubic else {}
    oracle = _eval_means(teacher_evaluation) if teacher_evaluation else {}
    data = teacher.config.get("data")
    lines = [
        f"# {name}",
        "",
        "The bundled default model of `lightbsr upscale` and `lightbsr eval default`: a LightBSR student "
        "(ICCV 2025 architecture, 3,259,971 parameters), ×4, degradation setting 1 (isotropic Gaussian blur, "
        "σ ∈ [0.2, 4.0], no noise), distilled from a LightBSR teacher that saw the true blur kernel. "
        "Weights in float16 (they run in float32).",
        "",
        "## Training",
        "",
        f"- data: `{data}` ({teacher.images if teacher.images is not None else '?'} images), "
        "degradations synthesised per batch with the papers' setting-1 model",
        *(f"- machine: {line}" for line in _machines(teacher, student)),
        "",
        "Teacher:",
        "",
        *_run_lines(teacher),
        "",
        "Student:",
        "",
        *_run_lines(student),
        "",
    ]
    if validation:
        lines += [validation, ""]
    if teacher_chain:
        lines += _chain_lines([*teacher_chain, teacher])
    lines += ["Commands:", "", "```bash", *commands, "```", ""]
    lines += [
        "## Evaluation",
        "",
        "`lightbsr eval default --dataset Set5 Set14 BSD68 --sigma 1.2 2.4 3.6` (Y-PSNR in dB, the papers' protocol; "
        "the paper's rows are its Table 3, where the third set is B100, of which BSD68 is a 68-image subset):",
        "",
        "| dataset | σ = 1.2 | σ = 2.4 | σ = 3.6 |",
        "| --- | --- | --- | --- |",
    ]
    for dataset, values in ours.items():
        paper_name, paper_bicubic, paper_ours = PAPER_TABLE3.get(dataset, (dataset, None, None))
        lines.append(f"| {dataset}, this model | " + " | ".join(f"**{v:.2f}**" for v in values) + " |")
        if dataset in oracle:
            bound = " | ".join(f"{v:.2f}" for v in oracle[dataset])
            lines.append(f"| {dataset}, its teacher given the true kernel | {bound} |")
        bicubic_row = base.get(dataset) or (list(paper_bicubic) if paper_bicubic and paper_name == dataset else None)
        if bicubic_row:
            lines.append(f"| {dataset}, bicubic | " + " | ".join(f"{v:.2f}" for v in bicubic_row) + " |")
            gain = [a - b for a, b in zip(values, bicubic_row, strict=True)]
            lines.append(f"| {dataset}, gain over bicubic | " + " | ".join(f"{g:+.2f}" for g in gain) + " |")
        if paper_ours:
            lines.append(f"| {paper_name}, paper's LightBSR | " + " | ".join(f"{v:.2f}" for v in paper_ours) + " |")
    lines.append("")
    for note in notes:  # one paragraph each
        lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightbsr.training.release",
        description="Write a released student's float16 weights and model card from its run folders.",
    )
    parser.add_argument("--teacher-run", required=True)
    parser.add_argument("--student-run", required=True)
    parser.add_argument("--eval", required=True, help="`lightbsr eval --json` of the released weights")
    parser.add_argument("--bicubic", help="`lightbsr eval bicubic --json` on the same datasets")
    parser.add_argument("--weights", help="float16 checkpoint to write (skipped if not given)")
    parser.add_argument("--card", required=True, help="model card (Markdown) to write")
    parser.add_argument("--name", default="lightbsr_student_x4_setting1")
    parser.add_argument("--command", action="append", default=[], help="a command that made the model (repeat)")
    parser.add_argument("--note", action="append", default=[], help="a paragraph for the card (repeat)")
    parser.add_argument("--validation-note", default="", help="what the validation curve was measured on")
    parser.add_argument(
        "--teacher-eval",
        help="`lightbsr eval TEACHER --json` (the teacher given the true kernel: the bound the student inherits)",
    )
    parser.add_argument(
        "--teacher-chain",
        action="append",
        default=[],
        metavar="RUN",
        help="an earlier teacher run the teacher run continues, oldest first (repeat): the card's validation "
        "curve then spans them all",
    )
    args = parser.parse_args(argv)
    from lightbsr.files import atomic_output

    if args.weights:
        write_weights(args.student_run, args.weights)
    card = model_card(
        name=args.name,
        teacher=summarize_run(args.teacher_run),
        student=summarize_run(args.student_run),
        evaluation=json.loads(Path(args.eval).read_text()),
        bicubic=json.loads(Path(args.bicubic).read_text()) if args.bicubic else None,
        commands=args.command,
        notes=args.note,
        validation=args.validation_note,
        teacher_evaluation=json.loads(Path(args.teacher_eval).read_text()) if args.teacher_eval else None,
        teacher_chain=[summarize_run(run) for run in args.teacher_chain],
    )
    with atomic_output(args.card) as tmp:
        Path(tmp).write_text(card)
    print(f"wrote {args.card}" + (f" and {args.weights}" if args.weights else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
