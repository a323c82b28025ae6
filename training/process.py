"""The training process: its device, its place in a ``torchrun`` group (DDP), seeds, and stop requests.

Split out of :mod:`lightbsr.training.trainer`, which uses it; nothing here knows about models or losses.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lightbsr.errors import BackendUnavailableError, ConfigError

__all__ = ["Process", "StopRequest", "iteration_seed", "seed_everything", "setup_process"]


@dataclass(frozen=True)
class Process:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_process(device_name: str | None) -> Process:
    """Pick the device; under ``torchrun`` (WORLD_SIZE > 1) join the process group, one GPU per rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = device_name == "cuda" or (device_name is None and torch.cuda.is_available())
    if device_name not in (None, "cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {device_name!r}")
    if wants_cuda and not torch.cuda.is_available():
        raise BackendUnavailableError("--device cuda: no CUDA device is available to PyTorch")
    if world <= 1:
        return Process(0, 1, torch.device("cuda" if wants_cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if wants_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    device = torch.device("cuda", local) if wants_cuda else torch.device("cpu")
    return Process(dist.get_rank(), dist.get_world_size(), device)


def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, 2, iteration, rank]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves and stops after the current iteration."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[signal.Signals, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        number = signal.Signals(signum)
        signal.signal(number, self._previous.get(number, signal.SIG_DFL))  # a second signal acts at once

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handler)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
