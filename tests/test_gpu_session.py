"""The GPU one-shot (benchmarks/scripts/gpu_session.sh) on the CPU with a tiny budget, so that it cannot rot
before a GPU is lent: it installs, trains teacher and student, releases, evaluates, times and packs its files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from lightbsr.benchmarks.gpu_session import MAX_FILES, OUT_FILES
from lightbsr.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
MAX_BYTES = 16 * 2**20


@pytest.mark.slow
def test_gpu_one_shot_runs_on_the_cpu_and_returns_at_most_eight_small_files(tmp_path: Path) -> None:
    data = tmp_path / "gpu"
    shutil.copytree(DATA / "train", data / "train")
    shutil.copytree(DATA / "images", data / "benchmark" / "Set5")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "DATA": str(data), "BUDGET": "150", "PYTHON": sys.executable}
    options = ["--device", "cpu", "--threads", "1", "--teacher-share", "0.12", "--student-share", "0.12"]
    options += ["--batch-size", "2", "--patch-size", "8", "--val-every", "5", "--val-patch", "32", "--log-every", "2"]
    options += ["--sizes", "16", "--batches", "1", "--targets", "torch-fp32", "--repeats", "2"]
    options += ["--tiled-size", "40", "--tile", "16", "--tiled-precision", "fp32"]
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "scripts" / "gpu_session.sh"), *options],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= MAX_FILES and all((out / f).stat().st_size < MAX_BYTES for f in files)
    assert set(files) == {*OUT_FILES, "logs.tar.gz"} - ({"latency.png"} if "latency.png" not in files else set())

    model, config = load_checkpoint(out / "lightbsr_student_x4_setting1.safetensors")
    assert config.arch == "lightbsr_student_x4" and config.setting == 1
    assert next(model.parameters()).dtype == torch.float32  # stored in fp16, loaded in fp32
    evaluation = json.loads((out / "eval.json").read_text())
    assert [d["name"] for d in evaluation["model"]["datasets"]] == ["Set5"]
    assert evaluation["bicubic"]["method"] == "Bicubic"
    card = (out / "MODEL_CARD.md").read_text()
    assert "| Set5, this model |" in card and "| Set5, bicubic |" in card
    latency = json.loads((out / "latency.json").read_text())
    assert {r["target"] for r in latency["latency"]["rows"]} == {"torch-fp32"}
    assert latency["tiled"]["sr"] == [160, 160]
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
        summary = json.load(tar.extractfile(next(n for n in names if n.endswith("summary.json"))))  # type: ignore[arg-type]
    assert any(n.endswith("teacher/log.csv") for n in names) and any(n.endswith("console.log") for n in names)
    assert not any("state" in Path(n).parts or n.endswith(".safetensors") for n in names)
    assert {name: phase["status"] for name, phase in summary["phases"].items()} == dict.fromkeys(
        ["teacher", "student", "weights", "eval", "card", "latency", "tiled"], "done"
    )
