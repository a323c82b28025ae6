"""What a training run logs: the loss window between log rows, the CSV logs and TensorBoard.

Split out of :mod:`lightbsr.training.trainer`, which writes ``log.csv`` and ``val.csv`` (and
TensorBoard events when ``tensorboard`` is installed) through these.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lightbsr.files import atomic_output

__all__ = ["CsvLog", "LossWindow", "open_tensorboard", "truncate_csv"]


class LossWindow:
    """Running sums of the losses since the last log row (kept on the device: no sync per step)."""

    def __init__(self, names: list[str], device: torch.device) -> None:
        self.names = names
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = {n: torch.zeros((), device=self.device) for n in self.names}
        self.counts = dict.fromkeys(self.names, 0)
        self.session_iterations = 0
        self.started = time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            self.sums[name] += value.detach().float()
            self.counts[name] += 1
        self.session_iterations += 1

    def means(self, world: int = 1) -> dict[str, float]:
        """Mean of each loss over the window; under DDP (``world`` > 1) also over the ranks (a collective)."""
        names = [n for n in self.names if self.counts[n]]
        if not names:
            return {}
        sums = torch.stack([self.sums[n] for n in names])
        if world > 1:
            dist.all_reduce(sums)
            sums = sums / world
        return {n: value / self.counts[n] for n, value in zip(names, sums.tolist(), strict=True)}

    def to_dict(self) -> dict[str, Any]:
        return {"sums": {n: self.sums[n].item() for n in self.names}, "counts": self.counts}

    def load(self, data: dict[str, Any]) -> None:
        self.reset()
        for name in self.names:
            self.sums[name] = torch.tensor(float(data["sums"][name]), device=self.device)
            self.counts[name] = int(data["counts"][name])


def truncate_csv(path: Path, iteration: int) -> None:
    """Keep the header and the rows of iterations ≤ ``iteration`` (drop those of a lost, unsaved tail)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]]
    for row in rows[1:]:
        try:
            if len(row) == len(rows[0]) and int(row[0]) <= iteration:
                kept.append(row)
        except ValueError:
            continue
    with atomic_output(path) as tmp, tmp.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


class CsvLog:
    """Append-only CSV with a fixed header, flushed after every row.

    Appending to a file written by an older version keeps that file's header (columns it
    lacks are not written), so a resumed run's log stays one readable table.
    """

    def __init__(self, path: Path, header: list[str]) -> None:
        existing: list[str] = []
        if path.is_file():
            with path.open(newline="") as handle:
                existing = next(csv.reader(handle), [])
        self.handle = path.open("a", newline="")
        self.writer = csv.writer(self.handle)
        self.header = existing or header
        if not existing:
            self.writer.writerow(header)
            self.handle.flush()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow([_csv_value(row.get(name)) for name in self.header])
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def open_tensorboard(folder: Path, purge_step: int) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional (the [train] extra)
        return None
    return SummaryWriter(str(folder), purge_step=purge_step)
