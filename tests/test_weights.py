"""The bundled default model: it is there, stored in float16 within the size the card promises, and trained —
it beats bicubic on images it never saw (tiny crops, the papers' protocol), which random weights cannot."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lightbsr.checkpoint import load_checkpoint
from lightbsr.evaluation import bicubic_upscale, evaluate
from lightbsr.weights import default_checkpoint

IMAGES = Path(__file__).parent / "data" / "images"


def test_the_default_model_is_bundled_in_float16_with_its_card() -> None:
    path = default_checkpoint(1)
    assert path.stat().st_size < 8_000_000
    with safe_open(str(path), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes <= {"F16", "I64"} and "F16" in dtypes
    model, config = load_checkpoint(path)
    assert config.arch == "lightbsr_student_x4" and config.setting == 1
    assert next(model.parameters()).dtype == torch.float32
    card = path.with_suffix(".md")
    assert card.is_file() and "## Evaluation" in card.read_text()


@pytest.mark.slow
def test_the_default_model_beats_bicubic_on_unseen_crops() -> None:
    torch.set_num_threads(1)
    model, _ = load_checkpoint(default_checkpoint(1))
    sigmas = (1.2, 2.4)
    with torch.inference_mode():
        ours = evaluate(model, IMAGES, sigmas=sigmas, progress=False)
    bicubic = evaluate(bicubic_upscale(4), IMAGES, sigmas=sigmas, progress=False)
    for sigma in sigmas:
        assert ours.mean_psnr(sigma) > bicubic.mean_psnr(sigma) + 0.5, (sigma, ours.mean_psnr(sigma))
