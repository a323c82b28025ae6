"""The video report: a synthetic clip from benchmark images, ``lightbsr upscale`` on it, and what came out.

Run by ``benchmarks/scripts/video_report.sh``; two steps, with ``lightbsr upscale`` between them::

    python -m lightbsr.benchmarks.video clip --datasets DIR --out WORK
    lightbsr upscale -i WORK/clip.mkv -o WORK/NAME.mkv -m MODEL --idr ... --report WORK/NAME.json
    python -m lightbsr.benchmarks.video report --clip WORK/clip.json --run NAME WORK/NAME.mkv WORK/NAME.json ...

``clip``: one scene per ``--scene IMAGE:SIGMA`` (default: two Set14 images and one BSD68 image):
a camera pans diagonally over the HR image (``--step`` HR pixels a frame; 4 = one LR pixel), and
every HR frame is degraded with setting 1 (isotropic Gaussian blur σ, MATLAB bicubic ↓4, 8 bits:
:func:`lightbsr.degradation.degrade`), so the clip has two cuts and one degradation per scene.
LR frames go to ``clip.mkv`` (FFV1, lossless RGB, with an AAC tone as audio), HR frames to
``hr.mkv``, the layout to ``clip.json``.

``report``, for each run (an upscaled video and its ``--report`` JSON): throughput (frames per
second of wall time) and the busy seconds of each stage (decode, estimate, restore, encode;
the stages overlap, so their shares are of the summed busy time), the Y-PSNR against the HR
frames (the papers' protocol: Y of BT.601 without offset, 4 pixels shaved; mean over frames),
temporal stability — the mean absolute difference (0–255, RGB) between consecutive frames of a
scene, for the output and for the HR frames, and the same after undoing the known pan (the HR
frames then differ by exactly 0: what remains is flicker) — and whether the scene cuts were
found where they are; and how far each run's frames are from the first run's (mean absolute
difference: how much the estimate mode changes the output). Bicubic upscaling of the LR frames
is measured alongside as a baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lightbsr.errors import BackendUnavailableError, ConfigError, LightBSRError

SCALE = 4
DEFAULT_SCENES = ("Set14/baboon.png:1.2", "BSD68/101085.png:2.4", "Set14/barbara.png:3.6")
DEFAULT_FRAMES = 16
DEFAULT_SIZE = (256, 192)  # HR width, height: 64 × 48 LR
DEFAULT_STEP = 4  # HR pixels a frame, right and down: one LR pixel
DEFAULT_FPS = 24
SHAVE = SCALE
SHIFT_MARGIN = 16
"""HR pixels left out at the borders when comparing frames after undoing the pan (padding effects of the blur)."""
SCHEMA = "lightbsr.video-report/1"


def _av() -> Any:
    try:
        import av
    except ImportError as err:
        raise BackendUnavailableError("the video report needs PyAV: pip install 'lightbsr[video]'") from err
    return av


# --------------------------------------------------------------------------- the clip


def write_video(path: Path, frames: list[np.ndarray], fps: int, audio_seconds: float | None = None) -> None:
    """RGB uint8 frames as lossless FFV1 (bgr0) in Matroska, with an optional AAC tone."""
    av = _av()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        sound = out.add_stream("aac", rate=48000) if audio_seconds else None
        if sound is not None:
            sound.layout = "mono"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="bgr0")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None and audio_seconds:
            total, done = round(48000 * audio_seconds), 0
            while done < total:
                n = min(1024, total - done)
                t = (np.arange(done, done + n, dtype=np.float32) / 48000)[None]
                chunk = av.AudioFrame.from_ndarray(0.2 * np.sin(2 * np.pi * 440 * t), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, done
                out.mux(sound.encode(chunk))
                done += n
            out.mux(sound.encode(None))


def read_video(path: Path) -> list[np.ndarray]:
    """Every frame of a video's first video stream as RGB uint8."""
    av = _av()
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


def make_clip(
    datasets: Path,
    out: Path,
    scenes: list[str],
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    step: int = DEFAULT_STEP,
    fps: int = DEFAULT_FPS,
) -> dict[str, Any]:
    """Write ``clip.mkv``, ``hr.mkv`` and ``clip.json`` into ``out`` (see the module docstring)."""
    import torch

    from lightbsr.degradation import degrade, isotropic_kernel
    from lightbsr.evaluation import read_image_rgb8

    width, height = size
    if width % SCALE or height % SCALE or step % SCALE:
        raise ConfigError(f"--size and --step must be multiples of {SCALE} (whole LR pixels)")
    travel = step * (frames - 1)
    hr_frames: list[np.ndarray] = []
    lr_frames: list[np.ndarray] = []
    layout = []
    for spec in scenes:
        name, _, sigma_text = spec.rpartition(":")
        try:
            sigma = float(sigma_text)
        except ValueError as err:
            raise ConfigError(f"--scene {spec!r}: expected IMAGE:SIGMA") from err
        image = read_image_rgb8(datasets / name)
        room_y, room_x = image.shape[0] - height - travel, image.shape[1] - width - travel
        if room_x < 0 or room_y < 0:
            raise ConfigError(f"{name}: {image.shape[1]}×{image.shape[0]} is too small for the pan")
        y0, x0 = room_y // 2, room_x // 2
        hr = np.stack(
            [
                image[y0 + i * step : y0 + i * step + height, x0 + i * step : x0 + i * step + width]
                for i in range(frames)
            ]
        )
        with torch.no_grad():
            lr = degrade(torch.from_numpy(hr).permute(0, 3, 1, 2).float(), isotropic_kernel(sigma), SCALE)
        layout.append({"image": name, "sigma": sigma, "start": len(hr_frames), "frames": frames, "origin": [x0, y0]})
        hr_frames += list(hr)
        lr_frames += list(lr.permute(0, 2, 3, 1).numpy().astype(np.uint8))
    out.mkdir(parents=True, exist_ok=True)
    write_video(out / "clip.mkv", lr_frames, fps, audio_seconds=len(lr_frames) / fps)
    write_video(out / "hr.mkv", hr_frames, fps)
    document = {
        "lr": "clip.mkv",
        "hr": "hr.mkv",
        "fps": fps,
        "scale": SCALE,
        "size": [width, height],
        "step": step,
        "scenes": layout,
        "degradation": "setting 1: isotropic Gaussian blur (21×21, σ per scene), MATLAB bicubic ↓4, 8-bit LR",
    }
    (out / "clip.json").write_text(json.dumps(document, indent=1) + "\n")
    return document


# --------------------------------------------------------------------------- the measures


def _psnr_y(frames: list[np.ndarray], hr: list[np.ndarray]) -> float:
    import torch

    from lightbsr.metrics import psnr_y_per_image

    def tensor(batch: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).double() / 255.0

    return float(psnr_y_per_image(tensor(frames), tensor(hr), shave=SHAVE).mean())


def _consecutive(frames: list[np.ndarray], scenes: list[dict[str, Any]], shift: int) -> float:
    """Mean absolute difference (0–255) of consecutive frames in a scene; ``shift``: undo a pan of that many pixels."""
    diffs = []
    for scene in scenes:
        for i in range(scene["start"] + 1, scene["start"] + scene["frames"]):
            now, before = frames[i].astype(np.float64), frames[i - 1].astype(np.float64)
            if shift:
                m = SHIFT_MARGIN
                now, before = now[m : -shift - m, m : -shift - m], before[shift + m : -m, shift + m : -m]
            diffs.append(float(np.abs(now - before).mean()))
    return float(np.mean(diffs))


def _bicubic(lr: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    from lightbsr.evaluation import bicubic_upscale

    with torch.no_grad():
        batch = torch.from_numpy(np.stack(lr)).permute(0, 3, 1, 2).float() / 255.0
        sr = bicubic_upscale(SCALE)(batch).clamp(0, 1).mul(255).round().byte()
    return list(sr.permute(0, 2, 3, 1).numpy())


def measure(frames: list[np.ndarray], hr: list[np.ndarray], clip: dict[str, Any]) -> dict[str, Any]:
    if len(frames) != len(hr) or frames[0].shape != hr[0].shape:
        raise ConfigError(
            f"the upscaled video has {len(frames)} frames of {frames[0].shape[1]}×{frames[0].shape[0]}; "
            f"the clip has {len(hr)} of {hr[0].shape[1]}×{hr[0].shape[0]}"
        )
    scenes = clip["scenes"]
    return {
        "psnr_y": round(_psnr_y(frames, hr), 3),
        "psnr_y_per_scene": [
            round(_psnr_y(frames[s["start"] : s["start"] + s["frames"]], hr[s["start"] : s["start"] + s["frames"]]), 3)
            for s in scenes
        ],
        "consecutive_mad": round(_consecutive(frames, scenes, 0), 4),
        "consecutive_mad_hr": round(_consecutive(hr, scenes, 0), 4),
        "shifted_mad": round(_consecutive(frames, scenes, clip["step"]), 4),
        "shifted_mad_hr": round(_consecutive(hr, scenes, clip["step"]), 4),
    }


def report(clip_json: Path, runs: list[tuple[str, Path, Path]], notes: list[str]) -> dict[str, Any]:
    """The report document (``schema: lightbsr.video-report/1``)."""
    from lightbsr.benchmarks.latency import environment
    from lightbsr.hardware import available_cpus

    clip = json.loads(clip_json.read_text())
    hr = read_video(clip_json.parent / clip["hr"])
    lr = read_video(clip_json.parent / clip["lr"])
    true_cuts = [s["start"] for s in clip["scenes"][1:]]
    rows: list[dict[str, Any]] = [{"name": "bicubic", **measure(_bicubic(lr), hr, clip)}]
    model: dict[str, Any] | None = None
    first: list[np.ndarray] | None = None
    for name, video_path, report_path in runs:
        summary = json.loads(report_path.read_text())
        record = summary["images"][0]
        frames = read_video(video_path)
        first = frames if first is None else first
        found = [s["start"] for s in record["scenes"][1:]]
        rows.append(
            {
                "name": name,
                "idr": record["idr"],
                "codec": f"{record['codec']} {record['pix_fmt']}",
                "frames": record["frames"],
                "fps": record["fps"],
                "seconds": record["seconds"],
                "estimates": record["estimates"],
                "busy_seconds": record["busy_seconds"],
                "busy_share": record["busy_share"],
                "cuts_found": found,
                "cuts_right": found == true_cuts,
                "largest_distance_within_scenes": record["largest_distance_within_scenes"],
                **measure(frames, hr, clip),
                "mad_vs_first_run": round(
                    float(np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, first, strict=True)])),
                    5,
                ),
            }
        )
        model = {k: summary.get(k) for k in ("model", "backend", "family", "device", "precision", "providers")}
    av = _av()
    env = environment(available_cpus(), "cpu") | {"pyav": av.__version__, "ffmpeg": av.ffmpeg_version_info}
    return {
        "schema": SCHEMA,
        "clip": clip,
        "true_cuts": true_cuts,
        "model": model,
        "environment": env,
        "notes": notes,
        "rows": rows,
    }


def markdown(document: dict[str, Any]) -> str:
    clip, rows = document["clip"], document["rows"]
    width, height = clip["size"]
    scenes = ", ".join(f"{s['image']} (σ = {s['sigma']})" for s in clip["scenes"])
    lines = [
        "# lightbsr upscale on video: per-scene vs per-frame degradation estimates",
        "",
        f"Clip: {len(clip['scenes'])} scenes × {clip['scenes'][0]['frames']} frames at {clip['fps']} frames/s, "
        f"{width // clip['scale']}×{height // clip['scale']} LR → {width}×{height}; a diagonal pan of "
        f"{clip['step']} HR pixels a frame over {scenes}; {clip['degradation']}; cuts before frames "
        f"{', '.join(map(str, document['true_cuts']))}.",
        "",
    ]
    lines += [f"- {note}" for note in document["notes"]]
    model = document.get("model") or {}
    lines += [
        "",
        f"Model: {model.get('model')} on {model.get('backend')} ({model.get('device')}, {model.get('precision')})",
        "",
    ]
    lines += [
        "## Throughput",
        "",
        "Wall-clock frames/s; busy seconds of each stage (they run at once, so the shares are of their sum).",
        "",
        "| run | IDR | codec | frames/s | estimator runs | decode | estimate | restore | encode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows[1:]:
        busy, share = r["busy_seconds"], r["busy_share"]
        cells = [f"{busy[k]:.2f} s ({100 * share[k]:.1f} %)" for k in ("decode", "estimate", "restore", "encode")]
        lines.append(
            f"| {r['name']} | {r['idr']} | {r['codec']} | {r['fps']:.3f} | {r['estimates']} / {r['frames']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "## Quality and temporal stability",
        "",
        "Y-PSNR against the HR frames (4 pixels shaved; mean over frames, and per scene). Mean absolute difference "
        "(0–255) between consecutive frames of a scene, as they are and after undoing the pan (HR frames: exactly 0 "
        f"there; {SHIFT_MARGIN} HR pixels of border left out): what the output adds to the HR frames' difference "
        "is flicker.",
        "",
        "| run | Y-PSNR (dB) | per scene (dB) | consecutive MAD (HR) | after undoing the pan (HR) "
        f"| MAD vs {rows[1]['name'] if len(rows) > 1 else '—'} | cuts found |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cuts = "—" if "cuts_found" not in r else f"{r['cuts_found']} ({'right' if r['cuts_right'] else 'WRONG'})"
        per_scene = " / ".join(f"{v:.2f}" for v in r["psnr_y_per_scene"])
        vs_first = f"{r['mad_vs_first_run']:.5f}" if "mad_vs_first_run" in r else "—"
        lines.append(
            f"| {r['name']} | {r['psnr_y']:.2f} | {per_scene} "
            f"| {r['consecutive_mad']:.3f} ({r['consecutive_mad_hr']:.3f}) "
            f"| {r['shifted_mad']:.3f} ({r['shifted_mad_hr']:.3f}) | {vs_first} | {cuts} |"
        )
    env = document["environment"]
    lines += ["", "## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {', '.join(map(str, v)) if isinstance(v, list) else v} |" for k, v in env.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightbsr.benchmarks.video",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    clip = sub.add_parser("clip", help="make the synthetic clip")
    clip.add_argument("--datasets", type=Path, required=True, help="folder holding Set14/ and BSD68/")
    clip.add_argument("--out", type=Path, required=True, help="work folder")
    clip.add_argument("--scene", nargs="+", default=list(DEFAULT_SCENES), metavar="IMAGE:SIGMA")
    clip.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames per scene")
    clip.add_argument("--size", type=int, nargs=2, default=DEFAULT_SIZE, metavar=("W", "H"), help="HR frame size")
    clip.add_argument("--step", type=int, default=DEFAULT_STEP, help="pan, HR pixels a frame")
    clip.add_argument("--fps", type=int, default=DEFAULT_FPS)
    rep = sub.add_parser("report", help="measure upscaled versions of the clip")
    rep.add_argument("--clip", type=Path, required=True, help="clip.json")
    rep.add_argument("--run", nargs=3, action="append", default=[], metavar=("NAME", "VIDEO", "REPORT"))
    rep.add_argument("--note", action="append", default=[])
    rep.add_argument("--json", type=Path)
    rep.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except LightBSRError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from lightbsr.benchmarks.report import write_json
    from lightbsr.files import atomic_output

    if args.command == "clip":
        doc = make_clip(args.datasets, args.out, args.scene, args.frames, tuple(args.size), args.step, args.fps)
        print(f"wrote {args.out}/clip.mkv, hr.mkv, clip.json ({sum(s['frames'] for s in doc['scenes'])} frames)")
        return 0
    document = report(args.clip, [(n, Path(v), Path(r)) for n, v, r in args.run], args.note)
    if args.json:
        write_json(document, args.json)
    text = markdown(document)
    if args.markdown:
        with atomic_output(args.markdown) as tmp:
            tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
