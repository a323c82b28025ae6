"""How much tiling and the backend change the output: tiled vs whole-image, torch vs onnxruntime.

For every HR image of a dataset folder, the LR image is synthesised with the papers'
protocol (:func:`lightbsr.degradation.benchmark_pair`, isotropic Gaussian kernel of
width σ, ×4, setting 1) and upscaled

* whole, on the torch backend: the reference ``U``;
* exact tiles (``--tile``; LightBSR only: stage-wise, see :class:`lightbsr.runtime.Upscaler`);
* blended tiles (``--tile``/``--tile-overlap``) with the degradation estimate shared by all tiles;
* blended tiles with a per-tile estimate (what sharing buys);
* whole and blended-tiled (shared estimate) on onnxruntime, when ``--onnx`` is given; the
  tiled onnxruntime output is compared with the blended torch output.

Each is compared with ``U`` by PSNR over all pixels and channels on outputs clamped to
[0, 1] (what users get) and on raw outputs (the network's unclamped values, with the
same peak of 1, so the figure is not flattered by clamping). Run::

    python tests/helpers/runtime_models.py runs/runtime-ref        # reference-weight checkpoint + ONNX
    python -m lightbsr.benchmarks.consistency \\
        --checkpoint runs/runtime-ref/lightbsr_student_x4_ref.safetensors \\
        --onnx runs/runtime-ref/lightbsr_student_x4_ref.onnx \\
        --dataset path/to/Set14 --sigma 2.4 --tile 64 --tile-overlap 16 \\
        --json runs/runtime-ref/consistency.json

It prints a per-image table and the means, and saves them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightbsr.degradation import benchmark_pair, isotropic_kernel
from lightbsr.evaluation import list_images, read_image_rgb8
from lightbsr.files import atomic_output
from lightbsr.runtime.upscaler import Upscaler

SCALE = 4
COLUMNS = ("tiled_exact", "tiled_shared", "tiled_per_tile", "ort_whole", "ort_tiled_vs_torch_tiled")


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR (dB) of two float arrays over all elements; ``inf`` when equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def _pair(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    return {
        "clamped": psnr(np.clip(reference, 0, 1), np.clip(other, 0, 1)),
        "raw": psnr(reference, other),
    }


def lr_image(path: Path, sigma: float) -> np.ndarray:
    """The benchmark LR image of an HR file: float32 ``(3, h, w)`` in [0, 1]."""
    hr = torch.from_numpy(read_image_rgb8(path)).permute(2, 0, 1)[None].float()
    _, lr = benchmark_pair(hr, isotropic_kernel(sigma), SCALE)
    return (lr[0] / 255.0).numpy().astype(np.float32)


def measure(
    checkpoint: Path,
    dataset: Path,
    *,
    onnx: Path | None = None,
    sigma: float = 2.4,
    tile: int = 64,
    overlap: int = 16,
    limit: int | None = None,
    per_tile_idr: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Per-image PSNRs of tiled and onnxruntime outputs against whole-image torch output."""
    whole = Upscaler(checkpoint, backend="torch", device="cpu", tile=0)
    exact = Upscaler(whole.backend, tile=tile, tiling="exact") if whole.backend.can_restore_in_tiles else None
    shared = Upscaler(whole.backend, tile=tile, tile_overlap=overlap, tiling="blend")
    per_tile = Upscaler(whole.backend, tile=tile, tile_overlap=overlap, shared_idr=False, tiling="blend")
    ort_whole = ort_tiled = None
    if onnx is not None:
        ort_whole = Upscaler(onnx, backend="onnxruntime", device="cpu", tile=0)
        ort_tiled = Upscaler(ort_whole.backend, tile=tile, tile_overlap=overlap, tiling="blend")
    rows = []
    for path in list_images(dataset)[:limit]:
        start = time.perf_counter()
        lr = lr_image(path, sigma)
        reference = whole.upscale_lr(lr)
        row: dict[str, Any] = {"image": path.stem, "lr_size": [lr.shape[2], lr.shape[1]]}
        row["range"] = [float(reference.min()), float(reference.max())]
        if exact is not None:
            row["tiled_exact"] = _pair(reference, exact.upscale_lr(lr))
        tiled = shared.upscale_lr(lr)
        row["tiled_shared"] = _pair(reference, tiled)
        row["tiles"] = shared.last_run.tiles
        if per_tile_idr:
            row["tiled_per_tile"] = _pair(reference, per_tile.upscale_lr(lr))
        if ort_whole is not None and ort_tiled is not None:
            row["ort_whole"] = _pair(reference, ort_whole.upscale_lr(lr))
            row["ort_tiled_vs_torch_tiled"] = _pair(tiled, ort_tiled.upscale_lr(lr))
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        if log:
            log(format_row(row))
    return {
        "checkpoint": str(checkpoint),
        "onnx": str(onnx) if onnx else None,
        "dataset": str(dataset),
        "sigma": sigma,
        "tile": tile,
        "tile_overlap": overlap,
        "family": whole.family,
        "images": rows,
        "mean": _means(rows),
    }


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    keys = [k for k in COLUMNS if k in rows[0]]
    return [(key, kind) for key in keys for kind in ("clamped", "raw")]


def _means(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and minimum of each figure over the images (∞, outputs equal bit for bit, is left out)."""
    means: dict[str, dict[str, float]] = {}
    for key, kind in _columns(rows) if rows else []:
        values = [r[key][kind] for r in rows if math.isfinite(r[key][kind])]
        means.setdefault(key, {})[kind] = float(np.mean(values)) if values else math.inf
        means[key][f"{kind}_min"] = float(np.min(values)) if values else math.inf
    return means


def format_row(row: dict[str, Any]) -> str:
    cells = [f"{row['image']:<11}", "{:>3}×{:<3}".format(*row["lr_size"])]
    for key in COLUMNS:
        if key in row:
            cells.append(f"{row[key]['clamped']:7.2f} {row[key]['raw']:7.2f}")
    return "  ".join(cells)


def format_table(result: dict[str, Any]) -> str:
    rows = result["images"]
    titles = {
        "tiled_exact": "exact tiles",
        "tiled_shared": "blend, shared",
        "tiled_per_tile": "blend, per-tile",
        "ort_whole": "ORT whole",
        "ort_tiled_vs_torch_tiled": "ORT blend",
    }
    header = ["image      ", "LR size", *(f"{titles[k]:<15}" for k in COLUMNS if k in result["mean"])]
    lines = [
        f"PSNR (dB) against whole-image torch output (ORT blend: against torch blend); tile {result['tile']}, "
        f"blend overlap {result['tile_overlap']}, σ = {result['sigma']}; each cell: clamped raw",
        "  ".join(header),
        *(format_row(r) for r in rows),
    ]
    mean = result["mean"]
    cells = ["mean       ", "       "]
    mins = ["min        ", "       "]
    for key in COLUMNS:
        if key in mean:
            cells.append(f"{mean[key]['clamped']:7.2f} {mean[key]['raw']:7.2f}")
            mins.append(f"{mean[key]['clamped_min']:7.2f} {mean[key]['raw_min']:7.2f}")
    footer = "(means and minima leave out ∞: outputs equal bit for bit, e.g. an image that fits in one tile)"
    return "\n".join([*lines, "  ".join(cells), "  ".join(mins), footer])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightbsr.benchmarks.consistency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="lightbsr checkpoint (.safetensors)")
    parser.add_argument("--onnx", type=Path, help="the same model exported to ONNX (split graphs beside it)")
    parser.add_argument("--dataset", type=Path, required=True, help="folder of HR images")
    parser.add_argument("--sigma", type=float, default=2.4, help="isotropic blur kernel width")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--tile-overlap", type=int, default=16)
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--no-per-tile", action="store_true", help="skip the per-tile estimate comparison")
    parser.add_argument("--json", type=Path, help="save the figures here")
    args = parser.parse_args(argv)
    result = measure(
        args.checkpoint,
        args.dataset,
        onnx=args.onnx,
        sigma=args.sigma,
        tile=args.tile,
        overlap=args.tile_overlap,
        limit=args.limit,
        per_tile_idr=not args.no_per_tile,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(format_table(result))
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
