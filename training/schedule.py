"""Stage and learning rate of every step: counted in iterations, or fitted to a time budget.

Two schedules share one interface, ``at(iteration, elapsed) -> (stage, lr)`` and
``done(iteration, elapsed)``:

* :class:`Schedule` — the papers' protocol in iterations: stage 1 at a constant rate,
  then stage 2 with a linear warm-up and a cosine down to ``min_lr``. Deterministic: a
  resumed run replays the same rates.
* :class:`ClockSchedule` — the same shape laid over a wall-clock budget
  (``--time-budget 2h30m``): stage 1 takes ``stage1_share`` of the time, the warm-up
  ``WARMUP_SHARE`` of stage 2's time, and the cosine ends when the time does. The rate
  of a step follows the training time spent so far (saved with the resume state), so a
  machine that slows down under other load still ends its cosine on time instead of
  stopping half-way down it. The speed measured in the first iterations turns the plan
  into iterations for the log (:meth:`ClockSchedule.plan`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lightbsr.errors import ConfigError

__all__ = ["WARMUP_SHARE", "ClockSchedule", "Schedule", "format_duration", "parse_duration"]

WARMUP_SHARE = 5 / 600
"""The papers' 5 warm-up epochs of the 600 of stage 2."""


def _cosine(lr: float, min_lr: float, progress: float) -> float:
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


@dataclass(frozen=True)
class Schedule:
    """Stage and learning rate of every iteration (0-based)."""

    total: int
    stage1: int
    warmup: int
    lr: float
    min_lr: float

    def stage(self, iteration: int) -> int:
        return 1 if iteration < self.stage1 else 2

    def learning_rate(self, iteration: int) -> float:
        """Stage 1: constant; stage 2: linear warm-up to ``lr``, then cosine down to ``min_lr``."""
        if iteration < self.stage1:
            return self.lr
        t = iteration - self.stage1
        if t < self.warmup:
            return self.lr * (t + 1) / self.warmup
        span = max(1, self.total - self.stage1 - self.warmup)
        return _cosine(self.lr, self.min_lr, (t - self.warmup) / span)

    def at(self, iteration: int, elapsed: float) -> tuple[int, float]:
        return self.stage(iteration), self.learning_rate(iteration)

    def done(self, iteration: int, elapsed: float) -> bool:
        return iteration >= self.total


@dataclass(frozen=True)
class ClockSchedule:
    """The two-stage schedule over ``budget`` seconds of training time (see the module docstring)."""

    budget: float
    stage1_share: float
    lr: float
    min_lr: float
    warmup_share: float = WARMUP_SHARE

    def __post_init__(self) -> None:
        if not self.budget > 0:
            raise ConfigError(f"the time budget must be positive, got {self.budget} s")
        if not 0.0 <= self.stage1_share < 1.0:
            raise ConfigError(f"--stage1-share must be in [0, 1), got {self.stage1_share}")

    @property
    def stage1_seconds(self) -> float:
        return self.budget * self.stage1_share

    def at(self, iteration: int, elapsed: float) -> tuple[int, float]:
        if elapsed < self.stage1_seconds:
            return 1, self.lr
        stage2 = self.budget - self.stage1_seconds
        t = (elapsed - self.stage1_seconds) / stage2  # progress through stage 2, 0 → 1
        if t < self.warmup_share:
            return 2, self.lr * max(t / self.warmup_share, 1e-3)
        return 2, _cosine(self.lr, self.min_lr, (t - self.warmup_share) / (1.0 - self.warmup_share))

    def done(self, iteration: int, elapsed: float) -> bool:
        return elapsed >= self.budget

    def plan(self, seconds_per_iteration: float, stage: int) -> str:
        """What the budget buys at the measured speed of ``stage``: one line for the log."""
        seconds = self.stage1_seconds if stage == 1 else self.budget - self.stage1_seconds
        iterations = seconds / seconds_per_iteration
        speed = 1 / seconds_per_iteration
        text = f"stage {stage}: {format_duration(seconds)} at {speed:.3g} it/s ≈ {iterations:.0f} it"
        if stage == 2:
            text += f" (warm-up ≈ {iterations * self.warmup_share:.0f} it, then cosine to {self.min_lr:g})"
        return text


_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """``"2h30m"``, ``"90m"``, ``"1.5h"``, ``"45s"`` or plain seconds (``"600"``) → seconds.

    Raises:
        ConfigError: not a positive duration.
    """
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", value)
        if not parts or "".join(n + u for n, u in parts) != value or len({u for _, u in parts}) != len(parts):
            raise ConfigError(f"not a duration: {text!r} (examples: 2h30m, 90m, 1.5h, 45s, 600)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"the duration must be positive, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds → ``"2h30m"``, ``"4m05s"``, ``"12.3s"``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
