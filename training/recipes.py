"""The two training recipes: LightBSR's (both families until now) and KDSR's own, the KDSR default.

A recipe is what the authors' code does beyond the losses: the optimizer's betas, the learning
rate over the run, how degradations are drawn, and how a student starts. LightBSR's recipe is
the trainer's own (:mod:`lightbsr.training.schedule`); KDSR's code (built on DASR's trainer) differs:

==================  ===============================================  ==========================================
                    ``lightbsr``                                     ``kdsr`` (KDSR default)
==================  ===============================================  ==========================================
Adam betas          (0.9, 0.99)                                      (0.9, 0.999)
stage 1             iterations // 7 at 2e-4 (none: KDSR teacher)     anisotropic student (setting 2): 100 of 500
                                                                     epochs at 2e-4, × 0.1 from epoch 60; none
                                                                     for the isotropic student and the teacher
stage 2 rate        warm-up 5/600, then cosine 2e-4 → 1e-6           1e-4, halved every 125 epochs (150 for the
                                                                     isotropic student), from stage 2's start
degradation         one kernel (and noise level) per sample          one kernel and noise level per batch
student start       teacher's weights but the estimator's first      teacher's restorer only: the estimator
                    convolution                                      keeps its initialisation (the KDSR code's
                                                                     ``strict=False`` load of the teacher)
length              700 epochs (``--iterations 700000``)             500 epochs (``--iterations 500000``)
==================  ===============================================  ==========================================

An "epoch" is 1000 iterations (both codes' ``test_every``); a shorter ``--iterations`` or a
``--time-budget`` keeps the proportions. The KDSR code states the anisotropic student's
500 epochs; its other runs use the same length here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from lightbsr.errors import ConfigError

from .schedule import ClockSchedule, format_duration

__all__ = [
    "RECIPES",
    "KDSRClockSchedule",
    "KDSRSchedule",
    "Recipe",
    "StepPlan",
    "apply_recipe",
    "default_recipe",
    "kdsr_plan",
    "kdsr_values",
    "recipe",
    "share_degradation",
]

RECIPES = ("lightbsr", "kdsr")
KDSR_EPOCHS = 500
KDSR_ITERATIONS = KDSR_EPOCHS * 1000


@dataclass(frozen=True)
class Recipe:
    """What a recipe sets besides the learning-rate schedule."""

    name: str
    adam_betas: tuple[float, float]
    per_batch_degradation: bool
    """One kernel and noise level for the whole batch (KDSR), or one per sample (LightBSR)."""
    student_estimator_from_teacher: bool
    """Whether a student's estimator starts from the teacher's (LightBSR) or from its own initialisation (KDSR)."""


_RECIPES = {
    "lightbsr": Recipe("lightbsr", (0.9, 0.99), per_batch_degradation=False, student_estimator_from_teacher=True),
    "kdsr": Recipe("kdsr", (0.9, 0.999), per_batch_degradation=True, student_estimator_from_teacher=False),
}


def default_recipe(arch: str) -> str:
    """Each family's authors' recipe: ``kdsr`` for KDSR, ``lightbsr`` for LightBSR."""
    return "kdsr" if arch == "kdsr" else "lightbsr"


def recipe(name: str, arch: str) -> Recipe:
    """The recipe ``name`` for a model of ``arch``; KDSR's recipe is for KDSR models only."""
    if name not in _RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    if name == "kdsr" and arch != "kdsr":
        raise ConfigError("the kdsr recipe is KDSR's own; LightBSR trains with the lightbsr recipe")
    return _RECIPES[name]


@dataclass(frozen=True)
class StepPlan:
    """The KDSR code's learning rate over a run, in shares of the run (0 → 1): step decays, no warm-up."""

    stage1: float
    """Share of the run in stage 1 (0: no stage 1)."""
    stage1_lr: float
    stage1_drop: float
    """Share of the run after which stage 1's rate is × 0.1."""
    lr: float
    """Stage 2's first rate."""
    halve_every: float
    """Share of the run between two halvings of stage 2's rate, counted from stage 2's start."""

    def at(self, progress: float) -> tuple[int, float]:
        """(stage, learning rate) at ``progress`` (0 → 1) through the run."""
        if progress < self.stage1:
            return 1, self.stage1_lr * (0.1 if progress >= self.stage1_drop else 1.0)
        halvings = int((progress - self.stage1) / self.halve_every + 1e-9)
        return 2, self.lr * 0.5**halvings


def kdsr_plan(role: str, setting: int) -> StepPlan:
    """The KDSR code's plan for a teacher, or a student of ``setting`` (1: isotropic, 2: anisotropic)."""
    epochs = KDSR_EPOCHS
    if role == "student" and setting == 2:
        return StepPlan(100 / epochs, 2e-4, 60 / epochs, 1e-4, 125 / epochs)
    if role == "student":
        return StepPlan(0.0, 0.0, 0.0, 1e-4, 150 / epochs)
    return StepPlan(0.0, 0.0, 0.0, 1e-4, 125 / epochs)


@dataclass(frozen=True)
class KDSRSchedule:
    """:class:`StepPlan` over ``total`` iterations (the interface of :class:`lightbsr.training.schedule.Schedule`)."""

    total: int
    plan: StepPlan

    def at(self, iteration: int, elapsed: float) -> tuple[int, float]:
        return self.plan.at(iteration / self.total)

    def done(self, iteration: int, elapsed: float) -> bool:
        return iteration >= self.total


@dataclass(frozen=True)
class KDSRClockSchedule(ClockSchedule):
    """:class:`StepPlan` over a time budget (``--time-budget``); ``stage1_share`` is the plan's stage 1."""

    step_plan: StepPlan | None = None

    def at(self, iteration: int, elapsed: float) -> tuple[int, float]:
        assert self.step_plan is not None
        return self.step_plan.at(min(elapsed / self.budget, 1.0))

    def plan(self, seconds_per_iteration: float, stage: int) -> str:
        seconds = self.stage1_seconds if stage == 1 else self.budget - self.stage1_seconds
        text = f"stage {stage}: {format_duration(seconds)} at {1 / seconds_per_iteration:.3g} it/s"
        return f"{text} ≈ {seconds / seconds_per_iteration:.0f} it (KDSR recipe: step decays)"


def share_degradation(params: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` per-sample degradation parameters → the first sample's for every sample (one per batch)."""
    return params[:1].expand_as(params).contiguous()


def apply_recipe(c: Any) -> bool:
    """Fill a :class:`~lightbsr.training.trainer.TrainConfig`'s ``recipe`` in; True for KDSR's recipe.

    For KDSR's recipe, refuse the options it sets itself (ConfigError) and default the run's length
    to its 500 epochs. ``c`` is changed in place (the trainer calls this on its own copy).
    """
    if c.recipe is None:
        c.recipe = default_recipe(c.arch)
    recipe(c.recipe, c.arch)  # validates the name and the family
    if c.recipe != "kdsr":
        return False
    defaults = {f.name: f.default for f in dataclasses.fields(c)}
    if c.iterations == defaults["iterations"] and c.time_budget is None:
        c.iterations = KDSR_ITERATIONS
    own = kdsr_values(c)
    given = [
        f"--{name.replace('_', '-')}"
        for name, value in own.items()
        if getattr(c, name) not in (defaults[name], value)  # a resumed run holds the recipe's own values
    ]
    if given:
        raise ConfigError(
            f"the KDSR recipe sets the learning rates and stages itself: drop {', '.join(given)} "
            "(or train with --recipe lightbsr)"
        )
    return True


def kdsr_values(c: Any) -> dict[str, Any]:
    """The schedule fields of a TrainConfig that KDSR's recipe sets (shown in config.json and the logs)."""
    plan = kdsr_plan(c.role, c.setting)
    values: dict[str, Any] = {
        "lr": max(plan.lr, plan.stage1_lr),
        "min_lr": plan.lr * 0.5 ** int((1 - plan.stage1) / plan.halve_every + 1e-9),
    }
    if c.time_budget is None:
        values |= {"stage1_iterations": round(plan.stage1 * c.iterations), "warmup_iterations": 0}
    else:
        values["stage1_share"] = plan.stage1
    return values
