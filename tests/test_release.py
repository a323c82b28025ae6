"""Releasing a run: float16 weights of a student or teacher run, and the model card's teacher figures (the teacher's
validation curve over a chain of runs, its true-kernel row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightbsr.checkpoint import read_checkpoint, save_checkpoint
from lightbsr.models import ModelConfig, build_model
from lightbsr.training.release import chain_curve, model_card, summarize_run, write_weights


def _run(root: Path, name: str, *, init: str | None, iterations: int, val: dict[int, float], role: str) -> Path:
    run = root / name
    run.mkdir()
    config = {"role": role, "data": "train", "init": init, "batch_size": 8, "patch_size": 48, "lr": 1e-4}
    (run / "config.json").write_text(json.dumps(config | {"min_lr": 1e-6, "crops": 1, "amp": "off"}))
    rows = ["iteration,stage,lr,loss,it_per_s,img_per_s,elapsed_s"]
    rows += [f"{i},2,0.0001,1.0,0.1,0.8,{i * 10}" for i in range(10, iterations + 1, 10)]
    (run / "log.csv").write_text("\n".join(rows) + "\n")
    lines = ["iteration,psnr,best", *(f"{i},{p},1" for i, p in val.items())]
    (run / "val.csv").write_text("\n".join(lines) + "\n")
    return run


def _eval(values: dict[str, list[float]]) -> dict[str, object]:
    return {
        "datasets": [
            {"name": name, "mean": {repr(s): {"psnr": v} for s, v in zip((1.2, 2.4, 3.6), row, strict=True)}}
            for name, row in values.items()
        ]
    }


def test_the_chain_counts_iterations_across_runs(tmp_path: Path) -> None:
    # a: 200 iterations; a-copy resumes a (no --init: same count, its copied points kept once) to 220;
    # b starts from a-copy's weights (--init): its iteration 100 is 320 on the chain's axis.
    a = _run(tmp_path, "a", init=None, iterations=200, val={100: 20.0, 200: 25.0}, role="teacher")
    a_copy = _run(tmp_path, "a-copy", init=None, iterations=220, val={100: 20.0, 200: 25.0}, role="teacher")
    b = _run(tmp_path, "b", init="a-copy", iterations=150, val={100: 26.0, 150: 26.5}, role="teacher")
    curve = chain_curve([summarize_run(r) for r in (a, a_copy, b)])
    assert curve == [(100, 20.0, "a"), (200, 25.0, "a"), (320, 26.0, "b"), (370, 26.5, "b")]


def test_the_card_shows_the_teacher_bound_and_curve(tmp_path: Path) -> None:
    a = _run(tmp_path, "t-a", init=None, iterations=100, val={100: 28.0}, role="teacher")
    b = _run(tmp_path, "t-b", init="t-a", iterations=50, val={50: 29.0}, role="teacher")
    s = _run(tmp_path, "s", init=None, iterations=30, val={}, role="student")

    def card(**teacher_figures: object) -> str:
        return model_card(
            name="m",
            teacher=summarize_run(b),
            student=summarize_run(s),
            evaluation=_eval({"Set5": [28.5, 28.0, 27.0]}),
            bicubic=None,
            commands=["x"],
            **teacher_figures,  # type: ignore[arg-type]
        )

    full = card(teacher_evaluation=_eval({"Set5": [29.25, 29.0, 27.75]}), teacher_chain=[summarize_run(a)])
    assert "| Set5, this model | **28.50** | **28.00** | **27.00** |" in full
    assert "| Set5, its teacher given the true kernel | 29.25 | 29.00 | 27.75 |" in full
    assert "(`t-a` → `t-b`, each continuing from the one before; 150 iterations in all)" in full
    assert "| 100 | `t-a` | 28.00 |" in full and "| 150 | `t-b` | 29.00 |" in full
    # without them, the card is as before: no teacher row, no chain table
    plain = card()
    assert "true kernel |" not in plain and "whole chain" not in plain


def test_a_teacher_run_is_written_in_float16_only_when_asked_for(tmp_path: Path) -> None:
    run = tmp_path / "t"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"role": "teacher"}))
    torch.manual_seed(0)
    teacher = build_model(ModelConfig("lightbsr", "teacher", 4, 1))
    save_checkpoint(run / "model.safetensors", teacher, ModelConfig("lightbsr", "teacher", 4, 1))
    with pytest.raises(SystemExit, match="not a student"):
        write_weights(run, tmp_path / "s.safetensors")
    assert not (tmp_path / "s.safetensors").exists()
    write_weights(run, tmp_path / "t.safetensors", role="teacher")
    weights, config, _ = read_checkpoint(tmp_path / "t.safetensors")
    assert config.role == "teacher"
    original = teacher.state_dict()
    assert weights.keys() == original.keys()  # the whole teacher: key encoder, queue and all
    for name, value in weights.items():
        if value.is_floating_point():
            assert value.dtype == torch.float16
            assert torch.allclose(value.float(), original[name].float().half().float())
