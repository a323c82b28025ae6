"""`lightbsr upscale`: a corpus of good and bad inputs, wrong model files, folders, the real process's exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cli_errors import one_error_line
from PIL import Image
from reference import reference_state_dict
from runtime_models import save_reference_checkpoint
from safetensors.torch import save_file
from test_runtime_imageio import png_header_only, random_image, save_with_orientation

from lightbsr.checkpoint import load_checkpoint
from lightbsr.cli import main
from lightbsr.imageio import DEFAULT_MAX_PIXELS, read_image, write_image
from lightbsr.runtime import cli as runtime_cli
from lightbsr.runtime.upscaler import DEFAULT_OVERLAP

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_reference_checkpoint(tmp_path_factory.mktemp("model") / "student.safetensors")


def upscale(*args: str | Path) -> int:
    return main(["upscale", *map(str, args)])


# --------------------------------------------------------------------------- the corpus

GOOD: dict[str, tuple[Callable[[Path], object], tuple[int, ...], type]] = {
    "rgb.png": (lambda p: write_image(p, random_image((6, 5, 3))), (24, 20, 3), np.uint8),
    "one_pixel.png": (lambda p: write_image(p, random_image((1, 1, 3))), (4, 4, 3), np.uint8),
    "deep.png": (lambda p: write_image(p, random_image((5, 4, 3), np.uint16)), (20, 16, 3), np.uint16),
    "gray.png": (lambda p: write_image(p, random_image((5, 6))), (20, 24), np.uint8),
    "gray16.tif": (lambda p: write_image(p, random_image((3, 4), np.uint16)), (12, 16), np.uint16),
    "rgba.png": (lambda p: write_image(p, random_image((4, 5, 4))), (16, 20, 4), np.uint8),
    "photo.jpg": (lambda p: write_image(p, random_image((6, 6, 3))), (24, 24, 3), np.uint8),
    "photo.webp": (lambda p: write_image(p, random_image((6, 6, 3))), (24, 24, 3), np.uint8),
    # stored 4 × 8, EXIF says rotate 90°: the image is 8 × 4 upright, so the output is 32 × 16
    "rotated.jpg": (lambda p: save_with_orientation(p, random_image((4, 8, 3)), 6), (32, 16, 3), np.uint8),
}

BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated.png": (
        lambda p: p.write_bytes(cv2.imencode(".png", random_image((32, 32, 3)))[1].tobytes()[:200]),
        "truncated",
    ),
    "empty.png": (lambda p: p.write_bytes(b""), "empty file"),
    "text.png": (lambda p: p.write_text("not an image\n"), "not an image file"),
    "zero.png": (lambda p: png_header_only(p, 0, 16), "no pixels"),
    "bomb.png": (lambda p: png_header_only(p, 100000, 100000), "over the limit"),
    "anim.gif": (lambda p: Image.fromarray(random_image((4, 4, 3))).save(p), "unsupported image format GIF"),
    "missing.png": (lambda p: None, "no such file"),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_inputs_are_upscaled(name: str, tmp_path: Path, checkpoint: Path) -> None:
    make, shape, dtype = GOOD[name]
    source = tmp_path / name
    make(source)
    target = tmp_path / f"out{source.suffix}"
    assert upscale("-i", source, "-o", target, "-m", checkpoint, "--tile", 0) == 0
    out = read_image(target)
    assert out.shape == shape and out.dtype == dtype
    # the pixels are the model's: run here with torch directly (gray as RGB then BT.601 luma, alpha aside)
    image = read_image(source)
    peak = float(np.iinfo(image.dtype).max)
    color = image if image.ndim == 2 else image[..., 0] if image.shape[2] == 2 else image[..., :3]
    rgb = np.repeat(color[..., None], 3, axis=2) if color.ndim == 2 else color
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        sr = model(torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32) / peak))[0].clamp(0, 1).numpy()
    expected = np.tensordot([0.299, 0.587, 0.114], sr, axes=1) if color.ndim == 2 else sr.transpose(1, 2, 0)
    if target.suffix in (".jpg", ".webp"):  # lossy: the expected pixels go through the same encoder
        write_image(tmp_path / f"expected{target.suffix}", np.round(expected * peak).astype(image.dtype))
        expected = read_image(tmp_path / f"expected{target.suffix}") / peak
    got = (out if out.ndim == 2 else out[..., : expected.shape[-1] if expected.ndim == 3 else 1]).astype(float)
    error = np.abs(got.reshape(expected.shape) / peak - expected)
    assert error.mean() < 1e-3 and error.max() <= 2 / peak, name
    assert got.std() > 0.01 * peak  # not a blank image


def test_alpha_is_resized_not_generated(tmp_path: Path, checkpoint: Path) -> None:
    rgba = random_image((4, 5, 4))
    write_image(tmp_path / "in.png", rgba)
    assert upscale("-i", tmp_path / "in.png", "-o", tmp_path / "out.png", "-m", checkpoint, "--tile", 0) == 0
    expected = cv2.resize(rgba[:, :, 3], (20, 16), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(read_image(tmp_path / "out.png")[:, :, 3], expected)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_exit_2_with_one_line_and_no_output(
    name: str, tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD[name]
    source = tmp_path / name
    make(source)
    assert upscale("-i", source, "-o", tmp_path / "out.png", "-m", checkpoint) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if source.exists() else [])


# --------------------------------------------------------------------------- model files of the wrong kind


def _text(p: Path) -> Path:
    p.write_text("just some text\n")
    return p


MODELS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "text.safetensors": (_text, "not a readable safetensors file"),
    "text.onnx": (_text, "not a loadable ONNX model"),
    "reference_layout.safetensors": (
        lambda p: save_file(reference_state_dict("lightbsr_student_x4"), str(p)) or p,
        "lightbsr convert",
    ),
    "model.pth": (_text, "unknown model file type"),
    "absent.onnx": (lambda p: p, "no such model file"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_wrong_model_files_exit_2(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, message = MODELS[name]
    model = make(tmp_path / name)
    write_image(tmp_path / "in.png", random_image((4, 4, 3)))
    assert upscale("-i", tmp_path / "in.png", "-o", tmp_path / "out.png", "-m", model) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists()


def test_without_a_model_the_bundled_default_upscales(tmp_path: Path) -> None:
    write_image(tmp_path / "in.png", random_image((6, 5, 3)))
    assert upscale("-i", tmp_path / "in.png", "-o", tmp_path / "out.png") == 0
    assert read_image(tmp_path / "out.png").shape == (24, 20, 3)


def test_a_build_without_the_bundled_weights_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightbsr.weights

    monkeypatch.setattr(lightbsr.weights, "WEIGHTS_DIR", tmp_path / "no-weights")
    write_image(tmp_path / "in.png", random_image((4, 4, 3)))
    assert upscale("-i", tmp_path / "in.png", "-o", tmp_path / "out.png") == 2
    assert "no bundled" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists()


# --------------------------------------------------------------------------- options and outputs


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tile", "8", "--tile-overlap", "8"], "smaller than the tile"),
        (["--tile-batch", "0"], "--tile-batch"),
        (["--tile", "-3"], "--tile"),
        (["--backend", "onnxruntime"], "onnxruntime backend does not run .safetensors"),
        (["--backend", "tensorrt"], "tensorrt backend does not run"),
        (["--providers", "CPUExecutionProvider"], "--providers is for the onnxruntime backend"),
        (["--fp16", "--device", "cuda"], "CUDA"),
    ],
)
def test_bad_options_exit_2(
    extra: list[str], message: str, tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "in.png", random_image((4, 4, 3)))
    assert upscale("-i", tmp_path / "in.png", "-o", tmp_path / "out.png", "-m", checkpoint, *extra) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.png").exists()


def test_unsupported_output_extension_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "in.png", random_image((4, 4, 3)))
    # no model given: the output check comes first, so the model is never looked at
    assert upscale("-i", tmp_path / "in.png", "-o", tmp_path / "out.gif") == 2
    assert "cannot write .gif" in one_error_line(capsys.readouterr().err)


def test_existing_output_needs_overwrite(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image(tmp_path / "in.png", random_image((4, 4, 3)))
    write_image(tmp_path / "out.png", random_image((1, 1, 3)))
    assert upscale("-i", tmp_path / "in.png", "-o", tmp_path / "out.png", "-m", checkpoint) == 2
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert read_image(tmp_path / "out.png").shape == (1, 1, 3)
    assert upscale("-i", tmp_path / "in.png", "-o", tmp_path / "out.png", "-m", checkpoint, "--overwrite") == 0
    assert read_image(tmp_path / "out.png").shape == (16, 16, 3)


def test_output_folder_and_json_report(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image(tmp_path / "in.png", random_image((12, 10, 3)))
    (tmp_path / "out").mkdir()
    args = ["-i", tmp_path / "in.png", "-o", tmp_path / "out", "-m", checkpoint, "--tile", "8", "--tile-overlap", "4"]
    assert upscale(*args, "--tile-batch", "2", "--tiling", "blend", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "torch" and report["shared_idr"] is True and report["ok"] == 1
    (image,) = report["images"]
    assert image["tiles"] == 4 and image["tile_overlap"] == 4 and image["output_size"] == [40, 48]
    assert image["tiling"] == "blend" and image["output"].endswith("out/in.png")
    assert read_image(tmp_path / "out" / "in.png").shape == (48, 40, 3)
    assert upscale(*args, "--overwrite", "--json") == 0  # auto: exact for LightBSR on torch
    (image,) = json.loads(capsys.readouterr().out)["images"]
    assert image["tiling"] == "exact" and image["tiles"] == 4 and image["tile_overlap"] == 0


def test_folder_skips_bad_files_and_exits_2_at_the_end(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    write_image(source / "a.png", random_image((4, 4, 3)))
    write_image(source / "b.jpg", random_image((3, 5)))
    (source / "c.png").write_text("broken")
    (source / "notes.txt").write_text("not an image, not counted")
    assert upscale("-i", source, "-o", tmp_path / "out", "-m", checkpoint, "--format", "png", "--tile", 0) == 2
    captured = capsys.readouterr()
    assert "skipped c.png" in captured.err and "1 of 3 images failed" in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert read_image(tmp_path / "out" / "b.png").shape == (12, 20)
    # a second run skips what exists and has only the broken file left to fail
    assert upscale("-i", source, "-o", tmp_path / "out", "-m", checkpoint, "--format", "png", "--json") == 2
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["skipped"], report["failed"]) == (0, 2, 1)


def test_folder_into_itself_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image(tmp_path / "a.png", random_image((4, 4, 3)))
    assert upscale("-i", tmp_path, "-o", tmp_path) == 2
    assert "must differ" in one_error_line(capsys.readouterr().err)


def test_help_explains_itself_and_defaults_match(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    text = capsys.readouterr().out
    for flag in ("--tile-overlap", "--tile-batch", "--no-shared-idr", "--max-pixels", "--fp16", "--bf16", "--json"):
        assert flag in text
    assert runtime_cli.DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS
    assert f"(default: {DEFAULT_OVERLAP}, at most half the tile)" in " ".join(text.split())


# --------------------------------------------------------------------------- the real process


def test_real_process_exit_codes_and_stderr(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bad = subprocess.run(
        [sys.executable, "-m", "lightbsr", "upscale", "-i", tmp_path / "bad.png", "-o", tmp_path / "o.png"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert "bad.png" in one_error_line(bad.stderr)
    write_image(tmp_path / "good.png", random_image((5, 5, 3)))
    command = [sys.executable, "-m", "lightbsr", "upscale", "-i", tmp_path / "good.png", "-o", tmp_path / "o.png"]
    good = subprocess.run(
        [*command, "-m", str(checkpoint), "--tile", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("wrote ") and read_image(tmp_path / "o.png").shape == (20, 20, 3)
    assert list(tmp_path.glob("*.partial*")) == []
