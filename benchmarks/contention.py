"""An upscale beside another process that uses every core, against the same upscale on the idle machine.

Each *case* (backend, threads, how idle threads wait) runs in a fresh Python process, because
OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads it: ``python -m
lightbsr.benchmarks.contention case ...`` times ``Upscaler.upscale_lr`` on a crop of a real image
(whole image, no tiling) and prints JSON. :func:`measure` runs every case twice: alone, and beside
a *load*: another plain PyTorch process (lightbsr not imported, OpenMP's default wait policy)
running convolutions on as many threads as there are usable CPUs, started before the timed runs
and ended after them. The slowdown is the loaded median over the idle median.

Wait policies: torch ``passive`` (``OMP_WAIT_POLICY=PASSIVE``, lightbsr's default), ``default``
(what torch does without lightbsr: libgomp spins for a while before it sleeps) and ``active``;
ONNX Runtime ``sleep`` (lightbsr's default) or ``spin`` (``session.intra_op.allow_spinning``,
ONNX Runtime's default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lightbsr.errors import ConfigError

__all__ = ["LOAD_CODE", "Case", "default_cases", "measure", "run_case"]

LOAD_CODE = """\
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
conv = torch.nn.Conv2d(64, 64, 3, padding=1)
x = torch.rand(1, 64, 128, 128)
print("ready", flush=True)
with torch.inference_mode():
    while True:
        conv(x)
"""
"""The load: a plain PyTorch process (no lightbsr, OpenMP's default wait policy) convolving on N threads."""

TORCH_POLICIES = {"passive": "PASSIVE", "active": "ACTIVE", "default": ""}
"""Wait policy → ``OMP_WAIT_POLICY`` (empty: unset as far as OpenMP goes, and lightbsr does not set it)."""
ORT_POLICIES = ("sleep", "spin")


@dataclass(frozen=True)
class Case:
    """One configuration of the upscale: backend, threads, wait policy (see the module docstring)."""

    backend: str  # torch | onnxruntime
    threads: int
    policy: str

    @property
    def name(self) -> str:
        return f"{self.backend} {self.threads} thread{'s' if self.threads > 1 else ''}, {self.policy}"


def default_cases(threads: int, onnx: bool) -> list[Case]:
    """The cases of the report: both policies per backend with ``threads`` threads, and torch with 1 thread."""
    cases = [Case("torch", threads, "default"), Case("torch", threads, "passive")]
    if threads > 1:
        cases.append(Case("torch", 1, "passive"))
    if onnx:
        cases += [Case("onnxruntime", threads, "spin"), Case("onnxruntime", threads, "sleep")]
    return cases


def _case_env(case: Case) -> dict[str, str]:
    env = dict(os.environ)
    if case.backend == "torch":
        if case.policy not in TORCH_POLICIES:
            raise ConfigError(f"unknown torch wait policy {case.policy!r}; choose from {', '.join(TORCH_POLICIES)}")
        env["OMP_WAIT_POLICY"] = TORCH_POLICIES[case.policy]
    elif case.policy not in ORT_POLICIES:
        raise ConfigError(f"unknown onnxruntime wait policy {case.policy!r}; choose from {', '.join(ORT_POLICIES)}")
    return env


def run_case(
    case: Case, model: str, image: str, size: int, repeats: int, max_seconds: float, timeout: float
) -> dict[str, Any]:
    """Time one case in a fresh process; its JSON result (``median_s``, ``runs``), or ``error``."""
    command = [
        sys.executable, "-m", "lightbsr.benchmarks.contention", "case", "--backend", case.backend,
        "--model", model, "--image", image, "--size", str(size), "--threads", str(case.threads),
        "--policy", case.policy, "--repeats", str(repeats), "--max-seconds", str(max_seconds),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, env=_case_env(case), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


class _Load:
    """The load process (see :data:`LOAD_CODE`), started and ended by us."""

    def __init__(self, threads: int) -> None:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOAD_CODE, str(threads)], env=env, stdout=subprocess.PIPE, text=True
        )

    def __enter__(self) -> _Load:
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "ready": torch is loaded and the loop starts
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class ContentionRow:
    """One case, idle and loaded."""

    case: str
    backend: str
    threads: int
    policy: str
    idle_ms: float | None = None
    loaded_ms: float | None = None
    slowdown: float | None = None
    idle_runs: int = 0
    loaded_runs: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    cases: Sequence[Case],
    models: dict[str, str],
    image: str,
    *,
    size: int = 64,
    load_threads: int,
    repeats: int = 5,
    max_seconds: float = 20.0,
    progress: bool = True,
) -> list[ContentionRow]:
    """Each case alone and beside the load; ``models`` maps a backend to its model file."""
    from tqdm import tqdm

    rows = []
    timeout = 10 * max_seconds + 120
    for case in tqdm(cases, desc="contention", unit="case", disable=not progress, leave=False):
        row = ContentionRow(case.name, case.backend, case.threads, case.policy)
        rows.append(row)
        model = models.get(case.backend)
        if model is None:
            row.error = f"no {case.backend} model given"
            continue
        idle = run_case(case, model, image, size, repeats, max_seconds, timeout)
        with _Load(load_threads):
            loaded = run_case(case, model, image, size, repeats, max_seconds, timeout)
        row.error = idle.get("error") or loaded.get("error") or ""
        if row.error:
            continue
        row.idle_ms, row.idle_runs = round(idle["median_s"] * 1e3, 1), idle["runs"]
        row.loaded_ms, row.loaded_runs = round(loaded["median_s"] * 1e3, 1), loaded["runs"]
        row.slowdown = round(loaded["median_s"] / idle["median_s"], 2)
    return rows


def _case_main(args: argparse.Namespace) -> int:
    if args.policy == "default" and os.environ.get("OMP_WAIT_POLICY"):
        raise ConfigError("the default policy runs with OMP_WAIT_POLICY empty")
    from lightbsr.runtime import Upscaler  # `-m lightbsr...` imported lightbsr, which set the policy, before torch

    from .latency import image_crop, time_runs

    options: dict[str, Any] = {"threads": args.threads}
    if args.backend == "onnxruntime":
        options["session_options"] = {"spinning": args.policy == "spin"}
    upscaler = Upscaler(args.model, backend=args.backend, device="cpu", tile=0, **options)
    lr = image_crop(args.image, args.size, args.size)[0]
    timing = time_runs(
        lambda: upscaler.upscale_lr(lr), warmup=1, repeats=args.repeats, min_repeats=2, max_seconds=args.max_seconds
    )
    print(json.dumps({"median_s": timing.median, "runs": len(timing.times), "times_s": list(timing.times)}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightbsr.benchmarks.contention", description=__doc__)
    sub = parser.add_subparsers(required=True)
    case = sub.add_parser("case", help="time one case in this process and print JSON")
    case.add_argument("--backend", choices=("torch", "onnxruntime"), required=True)
    case.add_argument("--model", required=True, help="checkpoint (torch) or ONNX file (onnxruntime)")
    case.add_argument("--image", required=True, help="image cropped to --size")
    case.add_argument("--size", type=int, default=64, help="LR size")
    case.add_argument("--threads", type=int, required=True)
    case.add_argument("--policy", required=True, help="torch: passive, active, default; onnxruntime: sleep, spin")
    case.add_argument("--repeats", type=int, default=5)
    case.add_argument("--max-seconds", type=float, default=20.0)
    case.set_defaults(func=_case_main)
    args = parser.parse_args(argv)
    from lightbsr.errors import LightBSRError, one_line

    try:
        return int(args.func(args))
    except LightBSRError as err:
        print(f"lightbsr: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
