"""The README's picture: the sample LR input, bicubic ×4, the model's ×4 and the HR original, side by side.

    python benchmarks/scripts/readme_figure.py                     # docs/images/baby_x4.png, bundled model
    python benchmarks/scripts/readme_figure.py -m model.safetensors -o out.png --crop 176 112 208

Each panel shows the same region of the ×4 image (``--crop X Y SIZE`` in output pixels), magnified
``--zoom`` times with nearest-neighbour so that pixels stay visible; the LR input is shown
nearest-upscaled ×4 to the same grid. Bicubic is the papers' MATLAB-style bicubic; the PSNR under
each panel is the protocol's Y-PSNR of the whole ×4 image against the HR original (8-bit, 4-pixel shave).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def _panel(image: np.ndarray, crop: tuple[int, int, int], zoom: int, label: str) -> np.ndarray:
    x, y, size = crop
    region = image[y : y + size, x : x + size]
    big = cv2.resize(region, (size * zoom, size * zoom), interpolation=cv2.INTER_NEAREST)
    bar = np.full((34, big.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.62, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([big, bar])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", default=str(ROOT / "examples" / "baby_lr.png"), help="LR input")
    p.add_argument("--hr", default=str(ROOT / "examples" / "Set5" / "baby.png"), help="HR original (optional)")
    p.add_argument("-m", "--model", default=None, help="model file (default: the bundled model)")
    p.add_argument("-o", "--output", default=str(ROOT / "docs" / "images" / "baby_x4.png"))
    p.add_argument("--crop", type=int, nargs=3, default=(176, 112, 208), metavar=("X", "Y", "SIZE"))
    p.add_argument("--zoom", type=int, default=2)
    args = p.parse_args(argv)

    from lightbsr.degradation import crop_to_multiple
    from lightbsr.evaluation import bicubic_upscale, read_image_rgb8
    from lightbsr.imageio import write_image
    from lightbsr.metrics import psnr_y
    from lightbsr.runtime import Upscaler

    torch.set_num_threads(1)
    lr = read_image_rgb8(args.lr)
    upscaler = Upscaler(args.model, backend="torch", device="cpu", tile=0)
    scale = upscaler.scale
    ours = upscaler.upscale(lr)
    lr_t = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255.0
    bicubic_t = bicubic_upscale(scale)(lr_t).clamp(0, 1).mul(255).round()
    bicubic = bicubic_t[0].permute(1, 2, 0).byte().numpy()
    nearest = cv2.resize(lr, (lr.shape[1] * scale, lr.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    name = "bundled model" if args.model is None else Path(args.model).name
    panels = [(nearest, f"input {lr.shape[1]}x{lr.shape[0]} (shown x{scale})"), (bicubic, "bicubic x4")]
    panels.append((ours, f"lightbsr x4 ({name})"))
    if args.hr:
        hr = read_image_rgb8(args.hr)
        hr = crop_to_multiple(torch.from_numpy(hr).permute(2, 0, 1)[None], scale)[0].permute(1, 2, 0).numpy()

        def score(img: np.ndarray) -> float:
            a, b = (torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1)[None].float() / 255 for v in (img, hr))
            return psnr_y(a, b, shave=scale)

        panels[1] = (bicubic, f"bicubic x4: {score(bicubic):.2f} dB")
        panels[2] = (ours, f"{panels[2][1]}: {score(ours):.2f} dB")
        panels.append((hr, "original (HR)"))
    row = [_panel(img, tuple(args.crop), args.zoom, label) for img, label in panels]  # type: ignore[arg-type]
    gap = np.full((row[0].shape[0], 6, 3), 255, np.uint8)
    figure = np.hstack([part for panel in row for part in (panel, gap)][:-1])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_image(args.output, figure)
    print(f"wrote {args.output} ({figure.shape[1]}x{figure.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
