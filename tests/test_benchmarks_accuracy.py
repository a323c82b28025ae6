"""Drops between deployments from `lightbsr eval --json` documents (benchmarks/accuracy.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightbsr.benchmarks.accuracy import drops, main


def _doc(values: dict[str, list[float]]) -> dict:
    sigmas = [1.2, 2.4, 3.6]
    return {
        "sigmas": sigmas,
        "datasets": [
            {"name": name, "mean": {repr(s): {"psnr": v, "ssim": 0.9} for s, v in zip(sigmas, vs, strict=True)}}
            for name, vs in values.items()
        ],
    }


def test_drops_are_reference_minus_candidate_per_dataset_and_sigma() -> None:
    table = drops(_doc({"Set5": [30.0, 29.0, 28.0]}), {"int8": _doc({"Set5": [29.9, 29.05, 27.5], "X": [1, 1, 1]})})
    cells = table["candidates"]["int8"]["Set5"]
    assert [cells[s]["drop"] for s in ("1.2", "2.4", "3.6")] == pytest.approx([0.1, -0.05, 0.5])
    assert "X" not in table["candidates"]["int8"]  # only datasets the reference has


def test_cli_writes_markdown_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_doc({"Set5": [30.0, 29.0, 28.0]})))
    (tmp_path / "b.json").write_text(json.dumps(_doc({"Set5": [29.8, 29.0, 28.0]})))
    args = ["--reference", f"FP32={tmp_path / 'a.json'}", "--candidate", f"INT8={tmp_path / 'b.json'}"]
    assert main([*args, "--json", str(tmp_path / "d.json"), "--markdown", str(tmp_path / "d.md")]) == 0
    text = capsys.readouterr().out
    assert "| INT8 | Set5 | +0.200 | +0.000 | +0.000 |" in text and (tmp_path / "d.md").read_text() == text
    assert json.loads((tmp_path / "d.json").read_text())["candidates"]["INT8"]["Set5"]["1.2"]["drop"] == 0.2
