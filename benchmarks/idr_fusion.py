"""Experiment: does fusing the IDR modulation make ONNX Runtime (CPU, FP32) faster?

    python -m benchmarks.idr_fusion                      # bundled model, 64 and 128 LR, 2 threads
    python -m benchmarks.idr_fusion --sizes 128 --repeats 7 --json out.json

Each adaptation block's spatial branch starts with a 1×1 conv over ``cat([spatial_idr, x1])``
(8 + 16 → 16 channels). The spatial IDR is the same for the 8 blocks of a group, so its part of
those convs can be hoisted: one 1×1 conv per group (8 → 8 × 16 channels) computed once, and per
block a 16 → 16 conv on ``x1`` plus a slice of the hoisted one — no per-block concat, the same
multiply-accumulates. The channel modulation ``x2 * gate`` is left as it is: a GELU follows it,
so it cannot be folded into the next convolution.

Both graphs are traced the same way (TorchScript exporter, opset 17, dynamic H/W, constant
folding) from the same weights, checked against each other, then timed alternately (A, B, A,
B, …) in the project's ONNX Runtime session (all optimisations, intra-op threads = --threads),
so that drifting machine load hits both alike. The result is printed as a table (and --json).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.latency import environment
from benchmarks.report import machine_title
from lightbsr.checkpoint import load_checkpoint
from lightbsr.models.lightbsr import AdaptationBlock, AdaptationGroup, LightBSR
from lightbsr.runtime.onnxruntime_backend import session
from lightbsr.weights import default_checkpoint


class _FusedRestorer(nn.Module):
    """LightBSR's ``forward`` with each group's spatial-IDR projections hoisted out of its 8 blocks."""

    def __init__(self, model: LightBSR) -> None:
        super().__init__()
        self.model = model
        self.hoisted = nn.ModuleList()
        for group in self._groups():
            blocks = [cast(AdaptationBlock, block) for block in group.blocks]
            weights = [block.spatial_attn1.weight for block in blocks]  # (16, 8 + 16, 1, 1) each
            sidr = weights[0].shape[1] - blocks[0].split
            conv = nn.Conv2d(sidr, sum(w.shape[0] for w in weights), 1, bias=False)
            conv.weight.data.copy_(torch.cat([w[:, :sidr] for w in weights]))
            self.hoisted.append(conv)
        self.x1_weights = [
            [
                cast(AdaptationBlock, block)
                .spatial_attn1.weight[:, -cast(AdaptationBlock, block).split :]
                .detach()
                .clone()
                for block in group.blocks
            ]
            for group in self._groups()
        ]

    def _groups(self) -> list[AdaptationGroup]:
        return [cast(AdaptationGroup, group) for group in self.model.groups]

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        m = self.model
        channel_idr, spatial_idr = m.estimate(lr)
        x = m.head(m.sub_mean(lr))
        res = x
        for g, group in enumerate(self._groups()):
            channel_idr, spatial_idr = group.correction(channel_idr, spatial_idr)
            projected = cast(nn.Conv2d, self.hoisted[g])(spatial_idr)
            y = res
            for b, block in enumerate(cast(AdaptationBlock, block) for block in group.blocks):
                gate = block.channel_weight(y, channel_idr)
                x1, x2 = y[:, : block.split], y[:, block.split :]
                part = projected[:, b * block.split : (b + 1) * block.split]
                attn = block.spatial_attn2(F.gelu(F.conv2d(x1, self.x1_weights[g][b]) + part))
                x1 = block.spatial_fuse(x1 * torch.sigmoid(attn))
                x2 = x2 * gate[:, :, None, None]
                y = y + block.mix(F.gelu(torch.cat([x1, x2], dim=1)))
            res = group.tail(y, res)
        res = m.body_conv(res) + x
        return m.add_mean(m.tail(m.upsampler(res)))


class _Plain(nn.Module):
    def __init__(self, model: LightBSR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model(lr)


def _export(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.rand(1, 3, 32, 32),),
            buffer,  # type: ignore[arg-type]  # the exporter writes to file-like objects too
            dynamo=False,
            opset_version=17,
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes={"lr": {2: "h", 3: "w"}, "sr": {2: "H", 3: "W"}},
            do_constant_folding=True,
        )
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="LR sizes (square)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each graph per size (after one warm-up)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    model, _ = load_checkpoint(default_checkpoint())
    assert isinstance(model, LightBSR)
    model.eval()
    env = environment(args.threads, "cpu")
    plain, fused = _export(_Plain(model)), _export(_FusedRestorer(model))
    graphs = {"plain": plain, "fused": fused}
    nodes = {name: len(onnx.load_from_string(data).graph.node) for name, data in graphs.items()}
    sessions = {name: session(data, threads=args.threads, name=name) for name, data in graphs.items()}
    rng = np.random.default_rng(0)
    rows = []
    for size in args.sizes:
        lr = rng.random((1, 3, size, size), dtype=np.float32)
        outputs = {name: s.run(None, {"lr": lr})[0] for name, s in sessions.items()}  # also the warm-up
        diff = float(np.abs(outputs["plain"] - outputs["fused"]).max())
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.repeats):
            for name, s in sessions.items():
                start = time.perf_counter()
                s.run(None, {"lr": lr})
                times[name].append((time.perf_counter() - start) * 1000)
        medians = {name: statistics.median(t) for name, t in times.items()}
        rows.append({"size": size, "max_abs_diff": diff, "median_ms": medians, "runs": args.repeats})

    print(f"# IDR fusion experiment: ONNX Runtime CPU FP32, {args.threads} threads, {machine_title(env)}")
    print(f"graph nodes: plain {nodes['plain']}, fused {nodes['fused']}")
    print("| LR size | plain ms | fused ms | fused / plain | max |Δ| |")
    print("|---|---|---|---|---|")
    for row in rows:
        m = row["median_ms"]
        print(
            f"| {row['size']}×{row['size']} | {m['plain']:.1f} | {m['fused']:.1f} | "
            f"{m['fused'] / m['plain']:.3f} | {row['max_abs_diff']:.1e} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"environment": env, "nodes": nodes, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
