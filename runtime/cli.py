"""``lightbsr upscale``: images, videos or folders of them, on any backend (argparse only at import)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MAX_PIXELS = 1 << 28  # = lightbsr.imageio.DEFAULT_MAX_PIXELS (not imported here: this module stays light)

DESCRIPTION = """\
Upscale images and videos ×4 with a blind super-resolution model (LightBSR or KDSR student).

IN and OUT are image files, or folders: every image in IN (PNG, JPEG, WebP, TIFF, BMP;
not recursive) is upscaled into OUT under the same name; unreadable files are skipped
with a warning and the command exits with status 2 at the end, saying how many failed.
The output format follows OUT's extension (or --format for folders); 8/16-bit depth,
grayscale and alpha are kept (alpha is resized with bicubic, not by the network) and
EXIF orientation is applied. Animated or multi-page images are refused (as GIFs are).
Outputs are written atomically: a failed or interrupted (Ctrl-C, SIGTERM) run leaves no
partial file. Before any inference, the run is refused when two inputs would write one
output, an output would replace an input, or an output is larger than its format stores
(WebP: 16383 pixels a side, JPEG: 65500).

Large images are cut into tiles. The degradation is estimated once per image and
shared by all tiles (--no-shared-idr: per tile). --tiling exact (LightBSR on the torch
backend; what auto picks there) runs the network stage by stage and tiles only each
stage's local work, so the output equals the untiled one; --tiling blend (every backend)
restores overlapping tiles on their own and blends them with a smooth window, which
approximates it. Without --tile, the tile size follows the device's free memory (the whole
image when it fits); out of memory, the tile is halved and the image retried.

Models: a lightbsr checkpoint (.safetensors → torch backend), an ONNX export
(.onnx → onnxruntime, with its split graphs MODEL.estimator.onnx/MODEL.restorer.onnx
beside it), or a TensorRT engine (.engine/.plan → tensorrt, with MODEL.estimator.engine/
MODEL.restorer.engine beside it; its MODEL.engine.json sidecar is checked first). Without
-m, the model bundled with lightbsr is used. --backend openvino runs an ONNX export on
OpenVINO's CPU plugin in FP32 (--bf16: BF16, on CPUs with AVX512-BF16 or AMX; INT8 exports run
its integer kernels): the fastest CPU path on such CPUs (benchmarks/README.md).

Videos (.mp4, .mkv, .mov, .webm, .avi, ...; any container and codec PyAV's FFmpeg reads;
pip install 'lightbsr[video]'): IN and OUT are video files (or folders mixing images and
videos; a video keeps its extension). Frames are decoded, upscaled and encoded at the same
time, with a progress bar in frames/s. Timestamps (variable frame rate too), frame rate,
rotation, colour range and matrix are kept; audio and subtitles are copied as they are.
--codec libx264 (default), libx265 or ffv1 (lossless), --crf, --pix-fmt (default: the
source's, else 4:2:0 of its bit depth; 10-bit sources stay 10-bit). The degradation is
estimated once per scene (--idr per-scene; scenes cut where the colour histogram of a
thumbnail jumps by more than --scene-threshold) and shared by every frame and tile of the
scene, so it does not change from frame to frame (LightBSR's per-pixel map is still taken
per frame). --report FILE saves the scenes and timings as JSON. Ctrl-C removes the partial
output, or with --keep-partial ends it cleanly as a shorter, playable file. A corrupt
frame is skipped with a warning (--on-corrupt stop: an error); a corrupt or truncated
file, one without a video stream or with a codec FFmpeg cannot decode, and a container
that cannot hold the codec are errors, and leave no output.

TensorRT from ONNX: --backend tensorrt -m MODEL.onnx builds engines for the split graphs
(else the full graph) on first use, with shape profiles fitted to the input images and
tiling options (opt = max = the tile, 512 without --tile, batch up to --tile-batch; the
estimator takes the whole image, its longest side rounded up to a power of two), and reuses
them from the engine cache (--engine-cache) while the ONNX, TensorRT, GPU, settings and
lightbsr version are the same. --fp16 builds FP16 engines on TensorRT 10; TensorRT 11 takes
the precision from the ONNX (convert it with `lightbsr quantize --fp16`). See docs/tensorrt.md.

examples:
  lightbsr upscale -i photo.jpg -o photo_x4.png -m lightbsr_x4.safetensors
  lightbsr upscale -i clip.mp4 -o clip_x4.mp4 -m lightbsr_x4.onnx --crf 16 --report clip_x4.json
  lightbsr upscale -i photos/ -o photos_x4/ -m lightbsr_x4.onnx --tile 256 --tile-batch 4 --json
  lightbsr upscale -i photo.jpg -o photo_x4.png -m lightbsr_x4.onnx --backend tensorrt --tile 256"""


# Options whose default is said in their help text: argparse leaves them unset (SUPPRESS, so the
# help shows no "(default: None)") and run_upscale fills these in.
_UNSHOWN_DEFAULTS: dict[str, Any] = {
    "model": None,
    "tile": None,
    "tile_overlap": None,
    "format": None,
    "providers": None,
    "engine_cache": None,
    "fp16": False,
    "bf16": False,
    "shared_idr": True,
    "overwrite": False,
    "json": False,
    "crf": None,
    "pix_fmt": None,
    "report": None,
    "keep_partial": False,
    "threads": None,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightbsr.argparsing import add_command, int_range
    from lightbsr.runtime.backend import BACKENDS

    p = add_command(subparsers, "upscale", "upscale images ×4 (files or folders)", DESCRIPTION)
    p.argument_default = argparse.SUPPRESS
    p.add_argument("-i", "--input", required=True, metavar="IN", help="image file or folder of images")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output image file, or folder")
    p.add_argument("-m", "--model", help="model file: .safetensors, .onnx or .engine (default: the bundled model)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", *BACKENDS),
        help="inference backend (auto: by the model file; openvino: ONNX on OpenVINO's CPU plugin, "
        "pip install 'lightbsr[openvino]')",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _add_tile_arguments(p)
    p.add_argument(
        "--tile-batch", type=int_range(1), default=1, metavar="N", help="tiles per backend call (blend tiling)"
    )
    p.add_argument(
        "--tiling",
        default="auto",
        choices=("auto", "exact", "blend"),
        help="exact: equal to untiled (torch, LightBSR); blend: overlapping tiles; auto: exact where possible",
    )
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="compute in float16")
    precision.add_argument(
        "--bf16", action="store_true", help="compute in bfloat16 (torch and openvino backends; a CPU with BF16)"
    )
    p.add_argument(
        "--no-shared-idr",
        dest="shared_idr",
        action="store_false",
        help="estimate the degradation per tile instead of once per image (for comparison)",
    )
    p.add_argument(
        "--max-pixels",
        type=int_range(1),
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse inputs whose header declares more pixels than this (decompression bombs)",
    )
    p.add_argument(
        "--format", metavar="EXT", help="output extension of images in folders, e.g. png (default: the input's)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (else: error; folders: skip)")
    p.add_argument("--providers", metavar="LIST", help="onnxruntime execution providers, comma-separated")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads of the torch, onnxruntime and openvino backends (default: the CPUs this process may use: "
        "affinity and cgroup quota); idle threads sleep rather than spin (OMP_WAIT_POLICY=PASSIVE unless set)",
    )
    p.add_argument(
        "--engine-cache",
        metavar="DIR",
        help="where --backend tensorrt keeps the engines it builds from an ONNX model "
        "(default: $LIGHTBSR_CACHE, else ~/.cache/lightbsr/engines)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report on stdout")
    _add_video_arguments(p)
    p.set_defaults(func=run_upscale)
    _register_serve(subparsers)


SERVE_DESCRIPTION = """\
Serve a model on a real Triton Inference Server (the one the nvidia-pytriton wheel ships; install
it with pip install 'lightbsr[serve]', in an environment of its own: it pins numpy<2).

The model runs in Triton's python backend as `lightbsr upscale` runs it: 8-bit images of any size in
and out (input `image`, uint8 (N, H, W, C), C = 1, 2, 3 or 4; output `upscaled`), tiled where needed
with one degradation estimate per image, on ONNX Runtime (a .onnx with its split graphs), TensorRT (an
.engine) or torch (a .safetensors checkpoint). Requests may set the parameters tile, tile_overlap and
precision. Triton adds dynamic batching, --instances model instances (processes), health endpoints
(/v2/health/live, /v2/health/ready) and Prometheus metrics (/metrics).

The repository is written to a temporary folder and removed at exit. The server listens on --address
only (default: loopback); it runs until SIGINT (Ctrl-C) or SIGTERM, then finishes the requests in
flight (up to --exit-timeout seconds) and exits with status 0. To serve from the NGC Triton container
instead, write the repository with `lightbsr export CKPT --triton DIR` (docs/deploy.md).

example (two terminals):
  lightbsr serve -m model.onnx
  python examples/triton_client.py examples/baby_lr.png baby_x4.png"""


def _register_serve(subparsers: argparse._SubParsersAction) -> None:
    from lightbsr.argparsing import add_command, float_range, int_range
    from lightbsr.runtime.backend import BACKENDS

    p = add_command(subparsers, "serve", "serve a model on a local Triton Inference Server", SERVE_DESCRIPTION)
    p.add_argument(
        "-m",
        "--model",
        required=True,
        default=argparse.SUPPRESS,
        help="model file: .onnx (split graphs beside it), .engine, .safetensors",
    )
    p.add_argument("--name", default="lightbsr", help="the model's name on the server")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--http-port", type=int_range(1, 65535), default=8000, metavar="PORT", help="HTTP/REST port")
    p.add_argument("--grpc-port", type=int_range(1, 65535), default=8001, metavar="PORT", help="gRPC port")
    p.add_argument(
        "--metrics-port", type=int_range(1, 65535), default=8002, metavar="PORT", help="Prometheus metrics port"
    )
    p.add_argument(
        "--instances", type=int_range(1), default=1, metavar="N", help="model instances (processes) per device"
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "gpu"),
        help="instance kind: gpu (one group per GPU), cpu, or auto (gpu where Triton sees GPUs)",
    )
    p.add_argument(
        "--max-batch", type=int_range(0), default=4, metavar="N", help="max_batch_size (0: no dynamic batching)"
    )
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS), help="backend")
    _add_tile_arguments(p, default=argparse.SUPPRESS)
    p.add_argument(
        "--max-pixels",
        type=int_range(1),
        default=argparse.SUPPRESS,
        metavar="N",
        help="refuse images of more LR pixels than this (default: 2048×2048; the memory bound of one request)",
    )
    p.add_argument(
        "--threads",
        type=int_range(1),
        default=argparse.SUPPRESS,
        metavar="N",
        help="threads per CPU instance (default: the CPUs shared out)",
    )
    p.add_argument(
        "--exit-timeout", type=int_range(0), default=30, metavar="S", help="seconds to finish requests when stopped"
    )
    p.add_argument(
        "--startup-timeout",
        type=float_range(0, low_open=True),
        default=300,
        metavar="S",
        help="seconds to wait for the server",
    )
    p.add_argument(
        "--log",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="write the server's log to FILE (default: a temporary file)",
    )
    p.add_argument("--json", action="store_true", help="print the endpoints as one JSON line on stdout when ready")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from lightbsr.runtime.serve import ServerOptions, serve
    from lightbsr.runtime.triton_model import ServeSettings

    for name in ("tile", "tile_overlap", "threads", "max_pixels", "log"):  # unset: their default is in their help
        if not hasattr(args, name):
            setattr(args, name, None)
    settings = ServeSettings(
        model=args.model,
        backend=args.backend,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        threads=args.threads,
        **({} if args.max_pixels is None else {"max_pixels": args.max_pixels}),
    )

    def ready(endpoints: dict[str, str]) -> None:
        if args.json:
            print(json.dumps({"model": args.name, **endpoints}), flush=True)
        print(
            f"lightbsr: serving {args.model} as model {args.name!r}: HTTP {endpoints['http']}, "
            f"gRPC {endpoints['grpc']}, metrics {endpoints['metrics']} (Ctrl-C or SIGTERM stops)",
            file=sys.stderr,
            flush=True,
        )

    def starting() -> None:  # after the checks: a refused command prints its one error line only
        print(f"lightbsr: starting the Triton server for {args.model} …", file=sys.stderr, flush=True)

    options = ServerOptions(args.address, args.http_port, args.grpc_port, args.metrics_port, args.exit_timeout)
    code = serve(  # its warnings (an instance died) are lightbsr's own: main() prints them as one line each
        args.model,
        name=args.name,
        options=options,
        instances=args.instances,
        device=args.device,
        max_batch_size=args.max_batch,
        settings=settings.to_parameters(),
        startup_timeout=args.startup_timeout,
        log=Path(args.log) if args.log else None,
        on_ready=ready,
        on_start=starting,
    )
    print("lightbsr: the server finished its requests and stopped", file=sys.stderr)
    return code


def _add_tile_arguments(p: argparse.ArgumentParser, **default: Any) -> None:
    """--tile and --tile-overlap, as upscale and serve both take them (``default``: argparse's, if given)."""
    from lightbsr.argparsing import int_range

    p.add_argument(
        "--tile",
        type=int_range(0),
        metavar="N",
        help="tile size in LR pixels; 0: never tile (default: from free memory)",
        **default,
    )
    p.add_argument(
        "--tile-overlap",
        type=int_range(0),
        metavar="N",
        help="overlap of neighbouring tiles in LR pixels, blend tiling (default: 24, at most half the tile)",
        **default,
    )


def _add_video_arguments(p: argparse.ArgumentParser) -> None:
    from lightbsr.argparsing import float_range, int_range

    video = p.add_argument_group("videos")
    video.add_argument("--codec", default="libx264", help="video encoder: libx264, libx265, ffv1 (lossless), ...")
    video.add_argument(
        "--crf",
        type=int_range(0, 51),
        metavar="N",
        help="quality for libx264/libx265, 0–51, lower is better (default: 18)",
    )
    video.add_argument(
        "--pix-fmt", metavar="FMT", help="encoded pixel format (default: the source's, else yuv420p or yuv420p10le)"
    )
    video.add_argument(
        "--idr",
        default="per-scene",
        choices=("per-frame", "per-scene", "fixed"),
        help="degradation estimate: on every frame, once per scene, or once for the whole video",
    )
    video.add_argument(
        "--scene-threshold",
        type=float_range(0.0, 1.0),
        default=0.2,  # = lightbsr.runtime.scenes.DEFAULT_SCENE_THRESHOLD (not imported: this module stays light)
        metavar="T",
        help="histogram distance (0–1) between consecutive frames that starts a new scene",
    )
    video.add_argument(
        "--on-corrupt", default="skip", choices=("skip", "stop"), help="a frame that fails to decode: skip it, or stop"
    )
    video.add_argument(
        "--keep-partial", action="store_true", help="on Ctrl-C, end the output cleanly and keep it (else: removed)"
    )
    video.add_argument("--report", metavar="FILE", help="write the JSON report (scenes, timings) to FILE as well")


def run_upscale(args: argparse.Namespace) -> int:
    for name, value in _UNSHOWN_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)

    import cv2

    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)  # a corrupt file is reported once, by us, not by OpenCV's decoders
    try:
        return _run(args)  # warnings are shown by lightbsr.cli.main, one line each
    finally:
        log.setLogLevel(level)


def _check_options(args: argparse.Namespace) -> None:
    from lightbsr.errors import ConfigError
    from lightbsr.runtime.tiling import check_tile_options

    try:
        check_tile_options(args.tile, args.tile_overlap, args.tile_batch)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be ≥ 1, got {args.max_pixels}")


def _video_options(args: argparse.Namespace) -> Any:
    from lightbsr.errors import ConfigError
    from lightbsr.runtime.video import VideoOptions

    if not args.shared_idr:
        raise ConfigError("--no-shared-idr is for images; for videos choose the estimate with --idr")
    return VideoOptions(
        codec=args.codec,
        crf=args.crf,
        pix_fmt=args.pix_fmt,
        idr=args.idr,
        scene_threshold=args.scene_threshold,
        on_corrupt=args.on_corrupt,
        keep_partial=args.keep_partial,
        max_pixels=args.max_pixels,
    )


def _plan_jobs(args: argparse.Namespace) -> tuple[list[tuple[Path, Path]], bool]:
    """(input, output) pairs and whether IN is a folder; output formats are checked here, before any work."""
    from lightbsr.errors import ConfigError, InputImageError
    from lightbsr.files import check_outputs
    from lightbsr.imageio import WRITE_FORMATS, check_output_path
    from lightbsr.runtime.video import VIDEO_SUFFIXES, is_video_path

    source, target = Path(args.input), Path(args.output)
    suffix = None
    if args.format:
        suffix = "." + args.format.lower().lstrip(".")
        check_output_path(Path("out" + suffix))
    if not source.exists():
        raise InputImageError(f"{source}: no such file or folder")
    if suffix and not source.is_dir() and not target.is_dir() and target.suffix.lower() != suffix:
        raise ConfigError(f"{target}: --format {args.format} contradicts the output's own extension; give one of them")
    if source.is_dir():
        if target.exists() and not target.is_dir():
            raise ConfigError(f"{target}: IN is a folder, so OUT must be a folder")
        if target.resolve() == source.resolve():
            raise ConfigError(f"{target}: the output folder must differ from the input folder")
        inputs = sorted(
            p
            for p in source.iterdir()
            if p.is_file() and not p.name.startswith(".") and (p.suffix.lower() in WRITE_FORMATS or is_video_path(p))
        )
        if not inputs:
            raise InputImageError(f"{source}: no images ({', '.join(WRITE_FORMATS)}) or videos in the folder")
        jobs = [(p, target / (p.stem + (p.suffix if is_video_path(p) else suffix or p.suffix))) for p in inputs]
        check_outputs([p for p, _ in jobs], [t for _, t in jobs])  # a.png + a.jpg with --format png: refused
        return jobs, True
    if target.is_dir():
        target = target / (source.stem + (source.suffix if is_video_path(source) else suffix or source.suffix))
    if is_video_path(source):
        if not is_video_path(target):
            raise ConfigError(f"{target}: a video is upscaled into a video file ({', '.join(VIDEO_SUFFIXES)})")
    else:
        check_output_path(target)
    check_outputs([source], [target])
    if target.exists() and not args.overwrite:
        raise ConfigError(f"{target} exists; pass --overwrite to replace it")
    return [(source, target)], False


def _open_upscaler(args: argparse.Namespace, inputs: list[Path]) -> Any:
    from lightbsr.errors import ConfigError
    from lightbsr.runtime.backend import choose_backend
    from lightbsr.runtime.upscaler import Upscaler

    backend = choose_backend(args.backend, args.model) if args.model else args.backend  # decided once, passed down
    options: dict[str, Any] = {}
    if args.providers:
        if backend != "onnxruntime":
            raise ConfigError("--providers is for the onnxruntime backend")
        options["providers"] = [p.strip() for p in args.providers.split(",") if p.strip()]
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be ≥ 1, got {args.threads}")
        if backend == "tensorrt":
            raise ConfigError("--threads is for the torch, onnxruntime and openvino backends")
        options["threads"] = args.threads
    if args.engine_cache is not None:
        if backend != "tensorrt":
            raise ConfigError("--engine-cache is for the tensorrt backend")
        options["engine_cache"] = args.engine_cache
    return Upscaler(
        args.model,
        backend=backend,
        device=args.device,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        tile_batch=args.tile_batch,
        precision="fp16" if args.fp16 else "bf16" if args.bf16 else None,
        shared_idr=args.shared_idr,
        tiling=args.tiling,
        image_sizes=_image_sizes(inputs, args.max_pixels),
        **options,
    )


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lightbsr.errors import LightBSRError, one_line
    from lightbsr.imageio import read_image
    from lightbsr.runtime.video import check_video_output, is_video_path, upscale_video

    _check_options(args)
    jobs, folder = _plan_jobs(args)
    videos = any(is_video_path(source) for source, _ in jobs)
    video_options = _video_options(args) if videos else None
    first_image = None
    if not folder:  # a bad single input fails fast, before the model loads
        source, target = jobs[0]
        if video_options is not None:
            check_video_output(source, target, video_options)
        else:
            first_image = read_image(source, args.max_pixels)
    upscaler = _open_upscaler(args, [source for source, _ in jobs])
    _check_output_sizes(jobs, upscaler.scale, args.max_pixels)  # before any inference
    records: list[dict[str, Any]] = []
    bar = tqdm(jobs, desc="upscale", unit="img", file=sys.stderr, disable=None) if folder else jobs
    for source, target in bar:
        record: dict[str, Any] = {"input": str(source), "output": str(target)}
        records.append(record)
        if folder and target.exists() and not args.overwrite:
            record["status"] = "skipped"
            record["reason"] = "output exists (pass --overwrite to replace it)"
            continue
        try:
            if is_video_path(source):
                record |= upscale_video(upscaler, source, target, video_options)
            else:
                image = first_image if first_image is not None else read_image(source, args.max_pixels)
                record |= _upscale_one(upscaler, image, target, tile_bar=not folder)
            record["status"] = "ok"
        except (LightBSRError, OSError) as err:
            if not folder:
                raise
            message = one_line(err)
            record |= {"status": "failed", "error": message}
            tqdm.write(f"lightbsr: warning: skipped {source.name}: {message}", file=sys.stderr)
    failed = sum(r["status"] == "failed" for r in records)
    summary = {
        "model": args.model,
        **upscaler.describe(),
        "images": records,
        "ok": sum(r["status"] == "ok" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "failed": failed,
    }
    if args.report:
        from lightbsr.files import atomic_output

        with atomic_output(args.report) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for r in records:
            if r["status"] == "ok":
                size = "{}×{} → {}×{}".format(*r["input_size"], *r["output_size"])
                if r.get("kind") == "video":
                    scenes = len(r["scenes"])
                    size += (
                        f", {r['frames']} frames, {scenes} scene{'s' if scenes != 1 else ''}, {r['fps']:.2f} frames/s"
                    )
                print(f"wrote {r['output']} ({size}, {r['seconds']:.2f} s)")
            elif r["status"] == "skipped":
                print(f"skipped {r['output']}: {r['reason']}")
    if failed:
        print(f"lightbsr: error: {failed} of {len(records)} images failed", file=sys.stderr)
        return 2
    return 0


def _check_output_sizes(jobs: list[tuple[Path, Path]], scale: int, max_pixels: int) -> None:
    """ConfigError when an output image would be larger than its format stores (WebP, JPEG): before any inference."""
    from lightbsr.errors import LightBSRError
    from lightbsr.imageio import check_output_size, probe_image
    from lightbsr.runtime.video import is_video_path

    for source, target in jobs:
        if is_video_path(source):
            continue
        try:
            header = probe_image(source, max_pixels)
        except LightBSRError:
            continue  # reported when the file itself is read
        check_output_size(target, header.width * scale, header.height * scale)


def _image_sizes(paths: list[Path], max_pixels: int) -> list[tuple[int, int]]:
    """(height, width) of each readable input, from its header (for the TensorRT engines' shape profiles)."""
    from lightbsr.errors import LightBSRError
    from lightbsr.imageio import probe_image
    from lightbsr.runtime.video import is_video_path, probe_video

    sizes = []
    for path in paths:
        try:
            header = probe_video(path, max_pixels) if is_video_path(path) else probe_image(path, max_pixels)
        except LightBSRError:
            continue  # reported when the file itself is read
        sizes.append((header.height, header.width))
    return sizes


def _upscale_one(upscaler: Any, image: Any, target: Path, *, tile_bar: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from lightbsr.imageio import write_image

    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if total <= 1:
            return
        if bar is None:
            bar = tqdm(total=total, desc="tiles", unit="tile", file=sys.stderr, disable=None, leave=False)
        bar.update(done - bar.n)

    start = time.perf_counter()
    try:
        result = upscaler.upscale(image, progress=progress if tile_bar else None)
    finally:
        if bar is not None:
            bar.close()
    write_image(target, result)
    info = upscaler.last_run
    return {
        "input_size": [int(image.shape[1]), int(image.shape[0])],
        "output_size": [int(result.shape[1]), int(result.shape[0])],
        "channels": 1 if result.ndim == 2 else int(result.shape[2]),
        "bit_depth": 16 if result.dtype.itemsize == 2 else 8,
        "tile": info.tile,
        "tile_overlap": info.tile_overlap,
        "tiles": info.tiles,
        "tiling": info.tiling,
        "retries": info.retries,
        "seconds": round(time.perf_counter() - start, 3),
    }
