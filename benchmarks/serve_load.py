"""A bounded load test of a ``lightbsr serve`` server, with the local Upscaler on the same images as the reference.

For each LR size: the server gets ``--requests`` images over gRPC at each ``--concurrency`` (that many
clients, each sending its next request when the last one is answered), and the local
:class:`~lightbsr.runtime.Upscaler` (same model file, same thread count as the server's CPU instance)
upscales the same images one after the other before the first server run and after each, so that every
server run is compared with the local runs just before and after it (the machine's load drifts). A request
counts as an error unless its answer equals the local output (PSNR ≥ 60 dB); a request that got no answer
before the end is lost.
Requests/s are requests over the wall time of the whole batch; p50/p99 are per-request latencies.

The load goes to loopback addresses only (127.0.0.0/8, ::1): any other host is refused. The count of
requests is fixed, every request has a timeout, and the run stops by itself. The server is started and
stopped by ``benchmarks/scripts/serve_load.sh``, which writes the committed report::

    python -m lightbsr.benchmarks.serve_load --model M.onnx --grpc 127.0.0.1:8001 --json r.json --markdown r.md
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightbsr import contract
from lightbsr.errors import ConfigError
from lightbsr.files import atomic_output

__all__ = ["LoadRow", "check_loopback", "load_images", "main", "run_load"]

MATCH_DB = 60.0
"""An answer is correct when its PSNR against the local output is at least this."""


@dataclass
class LoadRow:
    """One measured batch: the local reference or the server at one concurrency."""

    size: int
    mode: str
    """``"local"`` (the Upscaler, sequential) or ``"server"``."""
    concurrency: int
    requests: int
    ok: int = 0
    errors: int = 0
    lost: int = 0
    seconds: float = 0.0
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    vs_local: float | None = None
    """Requests/s over the local Upscaler's (the mean of its runs just before and just after this one)."""
    error_messages: list[str] = field(default_factory=list)


def check_loopback(target: str) -> None:
    """Refuse any gRPC target that is not a loopback address (this test never sends traffic elsewhere)."""
    host = target.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"{target}: the load test sends requests to loopback addresses only (127.0.0.1, ::1)")


def load_images(path: str | os.PathLike[str], size: int, count: int) -> list[np.ndarray]:
    """``count`` RGB uint8 ``size``×``size`` crops of one image: different offsets, flips and rotations."""
    from lightbsr.imageio import read_image

    base = read_image(path)
    if base.ndim == 2:
        base = np.dstack([base] * 3)
    base = np.ascontiguousarray(base[:, :, :3])
    if base.dtype != np.uint8:
        raise ConfigError(f"{path}: the load test takes an 8-bit image")
    height, width = base.shape[:2]
    if height < size or width < size:
        raise ConfigError(f"{path} is {width}×{height}, smaller than the {size}×{size} test images")
    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        crop = np.rot90(base[top : top + size, left : left + size], k=i % 4)
        images.append(np.ascontiguousarray(crop[:, ::-1] if (i // 4) % 2 else crop))
    return images


def _summarise(row: LoadRow, latencies: list[float], wall: float) -> None:
    from lightbsr.benchmarks.latency import Timing

    row.seconds = round(wall, 3)
    row.requests_per_s = round(row.ok / wall, 4) if wall > 0 else 0.0
    if latencies:
        timing = Timing(tuple(latencies))
        row.p50_ms = round(timing.percentile(50) * 1e3, 1)
        row.p99_ms = round(timing.percentile(99) * 1e3, 1)


def run_local(upscaler: Any, images: list[np.ndarray], size: int) -> tuple[LoadRow, list[np.ndarray]]:
    """The local Upscaler on every image, one after the other; returns the row and the outputs."""
    row = LoadRow(size, "local", 1, len(images))
    upscaler.upscale(images[0])  # warm-up: the first run of a shape allocates
    latencies, outputs = [], []
    start = time.perf_counter()
    for picture in images:
        t = time.perf_counter()
        outputs.append(upscaler.upscale(picture))
        latencies.append(time.perf_counter() - t)
    row.ok = len(images)
    _summarise(row, latencies, time.perf_counter() - start)
    return row, outputs


def run_server(
    target: str,
    model: str,
    images: list[np.ndarray],
    expected: list[np.ndarray],
    size: int,
    concurrency: int,
    timeout: float,
) -> LoadRow:
    """``len(images)`` requests from ``concurrency`` gRPC clients; each answer checked against ``expected``."""
    import tritonclient.grpc

    from lightbsr.benchmarks.consistency import psnr

    row = LoadRow(size, "server", concurrency, len(images))
    lock = threading.Lock()
    cursor = iter(range(len(images)))
    latencies: list[float] = []
    answered: set[int] = set()

    def client() -> None:
        connection = tritonclient.grpc.InferenceServerClient(target)
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            request = tritonclient.grpc.InferInput(contract.TRITON_IMAGE_INPUT, [1, size, size, 3], "UINT8")
            request.set_data_from_numpy(images[index][None])
            t = time.perf_counter()
            try:
                result = connection.infer(model, [request], client_timeout=timeout)
                out = result.as_numpy(contract.TRITON_IMAGE_OUTPUT)[0]
                good = out.shape == expected[index].shape and psnr(out, expected[index], peak=255) >= MATCH_DB
                message = None if good else f"request {index}: the answer differs from the local output"
            except Exception as err:  # counted and reported, the run goes on
                message = f"request {index}: {' '.join(str(err).split())[:200]}"
            elapsed = time.perf_counter() - t
            with lock:
                answered.add(index)
                if message is None:
                    row.ok += 1
                    latencies.append(elapsed)
                else:
                    row.errors += 1
                    row.error_messages.append(message)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    deadline = start + timeout * (len(images) / concurrency + 1)
    for thread in threads:
        thread.join(max(0.0, deadline - time.perf_counter()))
    wall = time.perf_counter() - start
    with lock:
        row.lost = len(images) - len(answered)
        _summarise(row, latencies, wall)
    return row


def run_load(
    model: str | os.PathLike[str],
    target: str,
    *,
    name: str = "lightbsr",
    image: str | os.PathLike[str] = "examples/baby_lr.png",
    sizes: tuple[int, ...] = (64, 128),
    concurrency: tuple[int, ...] = (1, 4, 16),
    requests: tuple[int, ...] = (32,),
    threads: int | None = None,
    timeout: float = 600.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Measure the server at ``target`` and the local Upscaler; returns the report (see the module docstring)."""
    from lightbsr.benchmarks.latency import environment
    from lightbsr.hardware import available_cpus
    from lightbsr.runtime.upscaler import Upscaler

    check_loopback(target)
    if len(requests) == 1:
        requests = requests * len(sizes)
    if len(requests) != len(sizes):
        raise ConfigError(f"give one request count, or one per size ({len(sizes)}), not {len(requests)}")
    if min(*requests, *concurrency, *sizes) < 1:
        raise ConfigError("requests, concurrency and sizes must be ≥ 1")
    threads = threads or available_cpus()
    upscaler = Upscaler(model, device="cpu", threads=threads)
    rows: list[LoadRow] = []
    load = [os.getloadavg()[0]]
    for size, count in zip(sizes, requests, strict=True):
        images = load_images(image, size, count)
        before, expected = run_local(upscaler, images, size)
        _say(progress, before)
        rows.append(before)
        for c in concurrency:
            row = run_server(target, name, images, expected, size, c, timeout)
            _say(progress, row)
            after, _ = run_local(upscaler, images, size)
            _say(progress, after)
            local_rate = (before.requests_per_s + after.requests_per_s) / 2
            row.vs_local = round(row.requests_per_s / local_rate, 3) if local_rate else None
            rows += [row, after]
            before = after
        load.append(os.getloadavg()[0])
    no_errors = all(r.errors == 0 and r.lost == 0 for r in rows)
    at_4 = {r.size: r.vs_local for r in rows if r.mode == "server" and r.concurrency == 4}
    ratios = [v for v in at_4.values() if v is not None]
    met = no_errors and len(ratios) == len(sizes) and min(ratios, default=0.0) >= 0.9
    bar = {"no_errors": no_errors, "concurrency_4_vs_local": at_4, "met": met}
    return {
        "model": str(model),
        "server": {"grpc": target, "name": name},
        "requests": dict(zip(sizes, requests, strict=True)),
        "image": str(image),
        "environment": environment(threads, "cpu"),
        "load_average_1min": [round(v, 2) for v in load],
        "rows": [asdict(r) for r in rows],
        "bar": bar,
    }


def _say(progress: bool, row: LoadRow) -> None:
    if progress:
        where = "local Upscaler" if row.mode == "local" else f"server, concurrency {row.concurrency}"
        print(
            f"{row.size}×{row.size} {where}: {row.requests_per_s:.3f} req/s, p50 {row.p50_ms:.0f} ms, "
            f"p99 {row.p99_ms:.0f} ms, {row.errors} errors, {row.lost} lost",
            file=sys.stderr,
            flush=True,
        )


def markdown(report: dict[str, Any], notes: list[str]) -> str:
    env = report["environment"]
    lines = [
        "# `lightbsr serve` load test",
        "",
        f"Model `{Path(report['model']).name}` on a local Triton server (gRPC {report['server']['grpc']}, one CPU "
        f"instance); the reference is the local `Upscaler` on the same images, with the same {env['threads']} "
        f"threads, run before the first server run and after each; every server row is compared with the mean of "
        f"the local rows just before and after it. Requests per row: "
        f"{', '.join(f'{n} at {s}×{s}' for s, n in report['requests'].items())}. "
        f"CPU: {env['cpu']} ({env['cpu_count']} CPUs); 1-minute load average during the run: "
        f"{', '.join(map(str, report['load_average_1min']))}.",
        "",
        "| LR size | run | concurrency | requests | ok | errors | lost | req/s | p50 ms | p99 ms | vs local |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        ratio = "" if r["vs_local"] is None else f"{r['vs_local']:.2f}"
        run = "local Upscaler" if r["mode"] == "local" else "server"
        conc = "" if r["mode"] == "local" else str(r["concurrency"])
        lines.append(
            f"| {r['size']}×{r['size']} | {run} | {conc} | {r['requests']} | {r['ok']} | {r['errors']} | "
            f"{r['lost']} | {r['requests_per_s']:.3f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {ratio} |"
        )
    bar = report["bar"]
    ratios = ", ".join(f"{size}×{size}: {v:.2f}" for size, v in bar["concurrency_4_vs_local"].items())
    lines += [
        "",
        f"Acceptance bar (zero errors and zero lost requests at every concurrency; concurrency-4 throughput ≥ 0.90 "
        f"of the local Upscaler's): **{'met' if bar['met'] else 'NOT met'}** (errors/lost: "
        f"{'none' if bar['no_errors'] else 'some'}; concurrency 4 vs local: {ratios}).",
        "",
        *[f"- {note}" for note in notes],
    ]
    errors = [m for r in report["rows"] for m in r["error_messages"]]
    if errors:
        lines += ["", "Errors:", "", *[f"- {m}" for m in errors[:20]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightbsr.benchmarks.serve_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="the model file the server serves (for the local reference)")
    parser.add_argument("--grpc", required=True, metavar="HOST:PORT", help="the server's gRPC endpoint (loopback)")
    parser.add_argument("--name", default="lightbsr", help="the model's name on the server")
    parser.add_argument("--image", default="examples/baby_lr.png", help="image the test crops are cut from")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="LR sizes (square)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="client counts")
    parser.add_argument("--requests", type=int, nargs="+", default=[32], help="requests per row: one, or one per size")
    parser.add_argument("--threads", type=int, help="threads of the local Upscaler (default: the available CPUs)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one request may take")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the report as Markdown")
    parser.add_argument("--note", action="append", default=[], help="a line for the Markdown report")
    args = parser.parse_args(argv)
    report = run_load(
        args.model,
        args.grpc,
        name=args.name,
        image=args.image,
        sizes=tuple(args.sizes),
        concurrency=tuple(args.concurrency),
        requests=tuple(args.requests),
        threads=args.threads,
        timeout=args.timeout,
        progress=True,
    )
    report["notes"] = args.note
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        with atomic_output(args.markdown) as tmp:
            tmp.write_text(markdown(report, args.note))
    print(markdown(report, args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
