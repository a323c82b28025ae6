"""INT8 that keeps quality: leave the layers INT8 hurts most in float until the drop is within a bound.

A Q/DQ graph from ``onnxruntime.quantization`` keeps the FP32 graph's node names and tensor
names; only the inputs of the quantized nodes are rewired through ``QuantizeLinear`` →
``DequantizeLinear`` pairs. :func:`float_nodes` undoes that for chosen nodes (their inputs
become the FP32 graph's again, weights included), so any mix of INT8 and float layers is
cut from one calibration, with no re-calibration.

:func:`search` is the greedy search of ``lightbsr quantize --int8 --max-drop``:

1. measure the drop of the fully quantized graph; done if it is within the bound;
2. per-layer sensitivity: for every quantized node, the output noise when *only that node*
   is quantized (the rest in float), on a few small crops;
3. greedy: leave the most sensitive nodes in float, in order, in growing batches (1, 2, 4, …)
   until the drop is within the bound, then bisect the last batch for the fewest nodes;
4. give up (:class:`~lightbsr.errors.ConfigError`) when more than ``max_float`` nodes would be
   needed — at that point the model is no longer an INT8 model.

The drop and noise measures are the caller's (:mod:`lightbsr.export.precision` measures the
protocol Y-PSNR drop on calibration-held-out crops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx
from tqdm import tqdm

from lightbsr.errors import ConfigError

__all__ = ["SearchResult", "float_nodes", "quantized_nodes", "search"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
LAYER_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
"""The "layers" of the search: compute ops. Other ops that read a dequantized tensor (a residual Add,
a Concat) follow the quantization of the tensors they read and are not candidates themselves."""


def quantized_nodes(qdq: onnx.ModelProto, ops: Sequence[str] = LAYER_OPS) -> list[str]:
    """Names of the ``ops`` nodes (in graph order) that read at least one input through a DequantizeLinear."""
    dequantized = {out for node in qdq.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [
        node.name for node in qdq.graph.node if node.op_type in ops and any(name in dequantized for name in node.input)
    ]


def float_nodes(qdq: onnx.ModelProto, fp32: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``qdq`` in which the nodes ``names`` read the FP32 graph's inputs (no Q/DQ before them).

    ``qdq`` must come from quantizing ``fp32`` with node names kept. Q/DQ nodes and initializers
    that no longer feed anything are dropped; the FP32 weights the float nodes need are added.
    """
    chosen = set(names)
    reference = {node.name: node for node in fp32.graph.node}
    missing = sorted(chosen - reference.keys())
    if missing:
        raise ConfigError(f"nodes not in the FP32 graph: {missing[:3]}")
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    for node in graph.node:
        if node.name in chosen:
            del node.input[:]
            node.input.extend(reference[node.name].input)
    # prune Q/DQ nodes that feed nothing any more (a DQ feeding a Q feeding nothing, …)
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in QDQ_OPS and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    # a name that a node still produces (an INT32 bias's DequantizeLinear keeps the bias name) is not re-added
    present = {init.name for init in kept} | {out for node in graph.node for out in node.output}
    kept += [init for init in fp32.graph.initializer if init.name in used and init.name not in present]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


@dataclass
class SearchResult:
    """The outcome of :func:`search`: the nodes left in float, the measured drops, how it got there."""

    float_nodes: list[str]
    drop: float
    full_int8_drop: float
    candidates: int
    steps: list[dict[str, float | int]] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)

    def top_sensitivity(self, count: int = 10) -> list[tuple[str, float]]:
        return sorted(self.sensitivity.items(), key=lambda item: -item[1])[:count]


def search(
    qdq: onnx.ModelProto,
    fp32: onnx.ModelProto,
    drop: Callable[[onnx.ModelProto], float],
    noise: Callable[[onnx.ModelProto], float],
    max_drop: float,
    *,
    max_float: int | None = None,
    progress: bool = False,
) -> SearchResult:
    """Leave the fewest most-sensitive nodes of ``qdq`` in float so that ``drop(model) <= max_drop``.

    Args:
        qdq, fp32: the fully quantized graph and the FP32 graph it was made from.
        drop: the quality drop of a candidate graph against FP32 (dB, smaller is better).
        noise: the output noise of a graph against FP32, the per-layer sensitivity measure.
        max_drop: the bound on ``drop``.
        max_float: the most nodes that may be left in float (default: half of the quantized ones).

    Raises:
        ConfigError: the bound cannot be met within ``max_float`` float nodes.
    """
    if not max_drop >= 0:
        raise ConfigError(f"--max-drop must be >= 0 dB, got {max_drop}")
    candidates = quantized_nodes(qdq)
    limit = len(candidates) // 2 if max_float is None else max_float
    full = drop(qdq)
    result = SearchResult([], full, full, len(candidates))
    result.steps.append({"float_nodes": 0, "drop": full})
    if full <= max_drop:
        return result
    if limit < 1:
        raise ConfigError(f"INT8 drops {full:.3f} dB (bound {max_drop} dB) and no layer may stay in float")

    for name in tqdm(candidates, desc="int8 layer sensitivity", unit="layer", disable=not progress):
        others = [c for c in candidates if c != name]
        result.sensitivity[name] = noise(float_nodes(qdq, fp32, others))
    ranked = sorted(candidates, key=lambda n: -result.sensitivity[n])

    def measure(count: int) -> float:
        value = drop(float_nodes(qdq, fp32, ranked[:count]))
        result.steps.append({"float_nodes": count, "drop": value})
        return value

    low, high, batch = 0, 0, 1  # drop(low) > bound; find the smallest count within it
    with tqdm(desc="int8 greedy search", unit="step", disable=not progress) as bar:
        while True:
            high = min(low + batch, limit)
            value = measure(high)
            bar.update(1)
            if value <= max_drop:
                break
            if high == limit:
                raise ConfigError(
                    f"INT8 cannot stay within {max_drop} dB: {value:.3f} dB with the {limit} most sensitive "
                    f"of {len(candidates)} layers in float (full INT8: {full:.3f} dB); nothing written"
                )
            low, batch = high, batch * 2
        best = (high, value)
        while high - low > 1:  # bisect: drop(low) > bound >= drop(high)
            middle = (low + high) // 2
            value = measure(middle)
            bar.update(1)
            if value <= max_drop:
                high, best = middle, (middle, value)
            else:
                low = middle
    count, value = best
    result.float_nodes = ranked[:count]
    result.drop = value
    return result
