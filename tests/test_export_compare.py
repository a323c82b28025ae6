"""lightbsr compare: an ONNX export against its checkpoint (and against itself) on real images."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from export_fixtures import Exported

from lightbsr.cli import main
from lightbsr.export import compare

IMAGES = Path(__file__).parent / "data" / "images"


def test_onnx_against_its_checkpoint_on_degraded_images(exported: dict[str, Exported]) -> None:
    item = exported["lightbsr_student_x4"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["compare", str(item.checkpoint), str(item.onnx), "--images", str(IMAGES), "--degrade-sigma=2.4"])
    assert code == 0
    report = json.loads(_json_compare(item, "--degrade-sigma", "2.4"))
    assert report["lr_input"] == "degraded HR, sigma 2.4"
    assert [d["name"] for d in report["images"]] == sorted(p.name for p in IMAGES.iterdir())
    assert [tuple(d["lr_shape"]) for d in report["images"]] == [(24, 24), (12, 16), (22, 17)]
    overall = report["overall"]
    assert overall["raw_max_abs"] < 1e-3 and overall["raw_psnr"] > 80 and overall["psnr_y"] > 80
    assert "overall" in out.getvalue() and "Y-PSNR" in out.getvalue()


def _json_compare(item: Exported, *extra: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["compare", str(item.checkpoint), str(item.onnx), "--images", str(IMAGES), "--json", *extra]) == 0
    return out.getvalue()


def test_identical_models_give_infinite_psnr(exported: dict[str, Exported]) -> None:
    item = exported["kdsr_student_m_x4"]
    result = compare(item.onnx, item.onnx, IMAGES, degrade_sigma=1.2, limit=1)
    assert result.overall["raw_max_abs"] == 0.0 and result.overall["psnr"] == float("inf")
    assert result.to_dict()["overall"]["psnr"] == "inf"  # JSON has no infinity


def test_lr_images_are_used_as_is_by_default(exported: dict[str, Exported]) -> None:
    item = exported["lightbsr_student_x4"]
    result = compare(item.onnx, item.onnx, IMAGES, limit=1)
    assert result.images[0].lr_shape == (96, 96) and result.degrade_sigma is None


@pytest.mark.parametrize("pair", ["wrong_arch", "teacher"])
def test_cli_compare_bad_pairs_are_one_line_exit_2(
    exported: dict[str, Exported], pair: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a = exported["lightbsr_student_x4"].onnx
    b = exported["kdsr_student_m_x4"].checkpoint if pair == "wrong_arch" else exported["kdsr_teacher_m_x4"].onnx
    assert main(["compare", str(a), str(b), "--images", str(IMAGES)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lightbsr: error:"), err
    assert ("kdsr_student_m_x4" in err) if pair == "wrong_arch" else ("full student graph" in err)
