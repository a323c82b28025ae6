"""Quality drops between deployments of one model, from ``lightbsr eval --json`` documents.

    python -m lightbsr.benchmarks.accuracy --reference "ONNX FP32=fp32.json" \\
        --candidate "ONNX FP16=fp16.json" "ONNX INT8=int8.json" --markdown drops.md --json drops.json

For every candidate, dataset and kernel width: the reference's mean protocol Y-PSNR minus the
candidate's (dB; positive is a loss), and the candidate's own mean. Used by
``benchmarks/scripts/accuracy_report.sh`` for the README's precision figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["drops", "main", "markdown"]


def _means(document: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {d["name"]: {s: float(v["psnr"]) for s, v in d["mean"].items()} for d in document["datasets"]}


def drops(reference: dict[str, Any], candidates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"sigmas": [...], "reference": {dataset: {σ: dB}}, "candidates": {name: {dataset: {σ: {psnr, drop}}}}}``."""
    base = _means(reference)
    table: dict[str, Any] = {"sigmas": reference["sigmas"], "reference": base, "candidates": {}}
    for name, document in candidates.items():
        ours = _means(document)
        table["candidates"][name] = {
            dataset: {s: {"psnr": v, "drop": round(base[dataset][s] - v, 4)} for s, v in values.items()}
            for dataset, values in ours.items()
            if dataset in base
        }
    return table


def markdown(table: dict[str, Any], reference_name: str) -> str:
    sigmas = [repr(float(s)) for s in table["sigmas"]]
    lines = [
        f"Y-PSNR drop against {reference_name} (dB; positive = worse), the papers' protocol:",
        "",
        "| model | dataset | " + " | ".join(f"σ = {s}" for s in sigmas) + " |",
        "| --- | --- | " + " | ".join("---" for _ in sigmas) + " |",
    ]
    for dataset, values in table["reference"].items():
        lines.append(f"| {reference_name} | {dataset} | " + " | ".join(f"{values[s]:.2f} dB" for s in sigmas) + " |")
    for name, datasets in table["candidates"].items():
        for dataset, values in datasets.items():
            cells = [f"{values[s]['drop']:+.3f}" for s in sigmas]
            lines.append(f"| {name} | {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    return name, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lightbsr.benchmarks.accuracy", description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=_named, required=True, metavar="NAME=FILE")
    p.add_argument("--candidate", type=_named, nargs="+", required=True, metavar="NAME=FILE")
    p.add_argument("--json", type=Path, help="write the table as JSON")
    p.add_argument("--markdown", type=Path, help="write the table as Markdown")
    args = p.parse_args(argv)
    from lightbsr.files import atomic_output

    ref_name, ref_path = args.reference
    table = drops(
        json.loads(ref_path.read_text()), {name: json.loads(path.read_text()) for name, path in args.candidate}
    )
    text = markdown(table, ref_name)
    for path, content in ((args.json, json.dumps(table, indent=1)), (args.markdown, text)):
        if path:
            with atomic_output(path) as tmp:
                Path(tmp).write_text(content)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
