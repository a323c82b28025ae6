"""Where ONNX Runtime's CPU time goes: kernel time by operator type, from ONNX Runtime's own profiler.

:func:`profile_by_op` runs a graph (as optimised for this machine, so the operators are the kernels
that run: ``Conv`` in NCHWc blocks, ``QLinearConv``, ``ReorderInput``...) a few times with profiling
on, and sums the kernel time of each operator type. The profiler's per-node timing adds overhead,
so the shares matter, not the totals. It tells how much of a run a faster GEMM (INT8, a better
kernel) can save at all, and how much element-wise work, layout changes and Q/DQ conversions take.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["profile_by_op"]


def profile_by_op(
    path: str | os.PathLike[str], height: int, width: int, *, threads: int | None = None, runs: int = 2, top: int = 12
) -> dict[str, Any]:
    """``{"ops": [{op, ms_per_run, share_pct, nodes}], "total_ms_per_run", ...}`` for one graph at one size."""
    import onnxruntime as ort

    from lightbsr import contract
    from lightbsr.runtime.onnxruntime_backend import run, session

    with tempfile.TemporaryDirectory(prefix="lightbsr-profile-") as tmp:
        sess = session(path, threads=threads, profile_prefix=str(Path(tmp) / "ort"))
        lr = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
        for _ in range(runs):
            run(sess, {contract.INPUT_LR: lr})
        events = json.loads(Path(sess.end_profiling()).read_text())
    time_us: dict[str, float] = {}
    nodes: dict[str, int] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        time_us[op] = time_us.get(op, 0.0) + float(event["dur"])
        nodes[op] = nodes.get(op, 0) + 1
    total = sum(time_us.values()) or 1.0
    ranked = sorted(time_us.items(), key=lambda item: -item[1])
    ops = [
        {
            "op": op,
            "ms_per_run": round(us / runs / 1e3, 1),
            "share_pct": round(100 * us / total, 1),
            "nodes": nodes[op] // runs,
        }
        for op, us in ranked[:top]
    ]
    rest = sum(us for _, us in ranked[top:])
    if rest:
        share = round(100 * rest / total, 1)
        ops.append({"op": "(others)", "ms_per_run": round(rest / runs / 1e3, 1), "share_pct": share, "nodes": 0})
    return {
        "model": str(path),
        "height": height,
        "width": width,
        "runs": runs,
        "onnxruntime": ort.__version__,
        "total_ms_per_run": round(total / runs / 1e3, 1),
        "ops": ops,
    }
