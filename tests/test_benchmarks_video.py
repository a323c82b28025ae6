"""The video report's clip and measures (benchmarks/video.py), end to end on a tiny clip through `lightbsr upscale`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="needs PyAV: pip install 'lightbsr[video]' (the [dev] extra has it)")

from lightbsr.benchmarks import video as report
from lightbsr.cli import main
from lightbsr.errors import ConfigError

TRAIN = Path(__file__).parent / "data" / "train"


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    """Two 96×96 training crops laid out as a benchmark folder."""
    for name in ("abbey", "islet"):
        (tmp_path / "sets" / "A").mkdir(parents=True, exist_ok=True)
        shutil.copy(TRAIN / f"{name}_crop.png", tmp_path / "sets" / "A" / f"{name}.png")
    return tmp_path / "sets"


def test_the_clip_pans_whole_lr_pixels_with_one_degradation_per_scene(datasets: Path, tmp_path: Path) -> None:
    doc = report.make_clip(datasets, tmp_path / "w", ["A/abbey.png:1.2", "A/islet.png:3.6"], 4, (64, 48), 4, 24)
    assert [(s["start"], s["frames"], s["sigma"]) for s in doc["scenes"]] == [(0, 4, 1.2), (4, 4, 3.6)]
    lr, hr = report.read_video(tmp_path / "w" / "clip.mkv"), report.read_video(tmp_path / "w" / "hr.mkv")
    assert len(lr) == len(hr) == 8 and lr[0].shape == (12, 16, 3) and hr[0].shape == (48, 64, 3)
    # 4 HR pixels a frame = 1 LR pixel: away from the borders the LR frames are exact shifts (lossless FFV1)
    np.testing.assert_array_equal(lr[1][5:-6, 5:-6], lr[0][6:-5, 6:-5])
    np.testing.assert_array_equal(hr[1][:-4, :-4], hr[0][4:, 4:])
    with pytest.raises(ConfigError, match="too small"):
        report.make_clip(datasets, tmp_path / "x", ["A/abbey.png:1.2"], 20, (64, 48), 4, 24)
    with pytest.raises(ConfigError, match="multiples of 4"):
        report.make_clip(datasets, tmp_path / "x", ["A/abbey.png:1.2"], 2, (62, 48), 4, 24)


def test_report_of_runs_made_by_lightbsr_upscale(datasets: Path, tmp_path: Path, tiny_kdsr_onnx: Path) -> None:
    work = tmp_path / "w"
    report.make_clip(datasets, work, ["A/abbey.png:1.2", "A/islet.png:3.6"], 3, (80, 64), 4, 24)
    runs = []
    for idr in ("per-frame", "fixed"):
        out, rep = work / f"{idr}.mkv", work / f"{idr}.json"
        args = ["-i", work / "clip.mkv", "-o", out, "-m", tiny_kdsr_onnx, "--idr", idr, "--report", rep]
        assert main(["upscale", *map(str, args), "--codec", "ffv1", "--pix-fmt", "bgr0"]) == 0
        runs.append((idr, out, rep))
    document = report.report(work / "clip.json", runs, ["a note"])
    assert json.loads(json.dumps(document, allow_nan=False)) == document  # JSON, unchanged by a round trip
    bicubic, per_frame, fixed = document["rows"]
    assert document["true_cuts"] == [3] and per_frame["cuts_found"] == fixed["cuts_found"] == [3]
    assert (
        per_frame["cuts_right"] and per_frame["frames"] == 6 and per_frame["estimates"] == 6 and fixed["estimates"] == 1
    )
    assert bicubic["shifted_mad_hr"] == 0.0 and bicubic["shifted_mad"] < 0.01  # bicubic is local: no flicker
    assert per_frame["consecutive_mad_hr"] > 0 and per_frame["mad_vs_first_run"] == 0.0
    assert fixed["mad_vs_first_run"] > 0  # the second scene restored with the first one's estimate
    assert 0 < bicubic["psnr_y"] < 100 and len(fixed["psnr_y_per_scene"]) == 2
    text = report.markdown(document)
    assert "| fixed | fixed | ffv1 bgr0 |" in text and "[3] (right)" in text and "a note" in text
