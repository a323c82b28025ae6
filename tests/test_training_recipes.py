"""KDSR's own training recipe (the KDSR default) and LightBSR's, as training/recipes.py and the README state them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightbsr.errors import ConfigError
from lightbsr.models import build_model
from lightbsr.training import trainer as T
from lightbsr.training.objectives import init_student_from_teacher
from lightbsr.training.recipes import KDSRClockSchedule, KDSRSchedule, kdsr_plan, share_degradation
from lightbsr.training.trainer import TrainConfig, _merge_resumed

TRAIN = Path(__file__).parent / "data" / "train"
CPU = torch.device("cpu")


def _config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"role": "teacher", "arch": "kdsr", "setting": 2, "data": str(TRAIN), "out": "o"}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


# Learning rates by epoch, written out from the KDSR code's recipe (not computed by the code under test).
@pytest.mark.parametrize(
    ("role", "setting", "epochs"),
    [
        ("student", 2, {0: (1, 2e-4), 59: (1, 2e-4), 60: (1, 2e-5), 99: (1, 2e-5), 100: (2, 1e-4), 224: (2, 1e-4),
                        225: (2, 5e-5), 350: (2, 2.5e-5), 475: (2, 1.25e-5), 499: (2, 1.25e-5)}),
        ("student", 1, {0: (2, 1e-4), 149: (2, 1e-4), 150: (2, 5e-5), 300: (2, 2.5e-5), 450: (2, 1.25e-5)}),
        ("teacher", 2, {0: (2, 1e-4), 124: (2, 1e-4), 125: (2, 5e-5), 250: (2, 2.5e-5), 375: (2, 1.25e-5)}),
    ],
)  # fmt: skip
def test_kdsr_rates_by_epoch(role: str, setting: int, epochs: dict[int, tuple[int, float]]) -> None:
    schedule = KDSRSchedule(500_000, kdsr_plan(role, setting))
    for epoch, (stage, lr) in epochs.items():
        got_stage, got_lr = schedule.at(epoch * 1000, 0.0)
        assert got_stage == stage and got_lr == pytest.approx(lr), epoch
    assert not schedule.done(499_999, 0.0) and schedule.done(500_000, 0.0)
    clock = KDSRClockSchedule(500.0, kdsr_plan(role, setting).stage1, 1e-4, 1e-5, step_plan=kdsr_plan(role, setting))
    for epoch, (stage, lr) in epochs.items():  # over a time budget, the same plan by the clock
        assert clock.at(0, float(epoch)) == (stage, pytest.approx(lr)), epoch


def test_kdsr_recipe_is_the_kdsr_default_and_lightbsr_keeps_its_own() -> None:
    student = _config(role="student", teacher="t").resolved(CPU)
    assert (student.recipe, student.iterations, student.stage1_iterations, student.warmup_iterations) == (
        "kdsr",
        500_000,
        100_000,
        0,
    )
    assert student.training_recipe.adam_betas == (0.9, 0.999)
    assert _config(role="student", setting=1, teacher="t").resolved(CPU).stage1_iterations == 0  # no stage 1
    ours = _config(role="student", teacher="t", recipe="lightbsr").resolved(CPU)
    assert (ours.iterations, ours.stage1_iterations, ours.lr) == (700_000, 100_000, 2e-4)
    assert ours.training_recipe.adam_betas == (0.9, 0.99)
    lightbsr = _config(arch="lightbsr", setting=1).resolved(CPU)
    assert lightbsr.recipe == "lightbsr" and not lightbsr.training_recipe.per_batch_degradation


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": 1e-3},
        {"min_lr": 1e-7},
        {"role": "student", "teacher": "t", "stage1_iterations": 5},
        {"role": "student", "teacher": "t", "time_budget": 60.0, "stage1_share": 0.5},
        {"arch": "lightbsr", "recipe": "kdsr"},
        {"recipe": "dasr"},
    ],
)
def test_kdsr_recipe_refuses_the_options_it_sets(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        _config(**bad).resolved(CPU)


def test_a_resumed_run_keeps_its_recipe() -> None:
    kdsr = _config(role="student", teacher="t").resolved(CPU)
    assert _merge_resumed(_config(role="student", teacher="t"), kdsr.to_dict()).resolved(CPU) == kdsr
    saved = {k: v for k, v in _config(recipe="lightbsr").resolved(CPU).to_dict().items() if k != "recipe"}
    resumed = _merge_resumed(_config(), saved).resolved(CPU)  # a run saved before recipes: LightBSR's
    assert resumed.recipe == "lightbsr" and resumed.iterations == 700_000


def test_kdsr_student_estimator_keeps_its_initialisation() -> None:
    teacher, student = build_model("kdsr_teacher_m_x4"), build_model("kdsr_student_m_x4")
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    kept = init_student_from_teacher(student, teacher, estimator=False)
    assert kept and all(k.startswith("estimator.") for k in kept)
    t, s = teacher.state_dict(), student.state_dict()
    for key, value in s.items():
        expected = initial[key] if key.startswith("estimator.") else t[key]
        assert torch.equal(value, expected), key
    assert not torch.equal(s["estimator.fc1.weight"], t["estimator.fc1.weight"])


def test_one_degradation_per_batch() -> None:
    params = torch.tensor([[1.0, 2.0, 0.5, 5.0], [3.0, 0.7, 1.5, 20.0], [0.4, 3.9, 2.0, 0.0]])
    shared = share_degradation(params)
    assert torch.equal(shared, params[:1].repeat(3, 1))


def test_trainer_applies_the_kdsr_recipe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _config(out=str(tmp_path / "run"), batch_size=3, patch_size=16, iterations=4, progress=False, threads=1)
    trainer = T.Trainer(config)
    trainer.build()
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    seen: list[torch.Tensor] = []

    def capture(crops: torch.Tensor, params: torch.Tensor, *args: object) -> None:
        seen.append(params)
        raise StopIteration

    monkeypatch.setattr(T, "synthesize", capture)
    crops, params = next(iter(trainer._loader()))
    assert not torch.equal(params[0], params[1])  # drawn per sample...
    trainer._enter_stage(2)
    with pytest.raises(StopIteration):
        trainer._step(crops, params, 1e-4)
    assert torch.equal(seen[0], params[:1].repeat(3, 1))  # ...and shared by the batch


def test_cli_recipe_option() -> None:
    command = [sys.executable, "-m", "lightbsr", "train", "teacher", "--arch", "lightbsr", "--recipe", "kdsr"]
    command += ["--setting", "1", "--data", str(TRAIN), "--out", "unused", "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "kdsr recipe is KDSR's own" in result.stderr and not Path("unused").exists()
