"""A hostile user's corpus, across every command and each kind of failure issue 19 names.

Every case builds its inputs in a fresh folder, runs one ``lightbsr`` command and checks what
a user sees: a refused input is exit status 2, exactly one ``lightbsr: error:`` line on stderr
saying what is wrong, no traceback, nothing on stdout, and the folder exactly as it was (no
output, no temporary); an input that is merely unusual gives the correct output. The kinds:

1. labels trusted instead of results (lying scales, NaN or integer weights, wrong output sizes);
2. library errors leaking (OpenCV/libpng noise, torch's advice, ONNX Runtime's banner);
3. guards present in one command only (header size checks, numeric options);
4. atomic writes that are not (signals, long names);
5. ambiguous outputs decided silently;
6. image orientation, channels and frames.

The models are tiny ONNX graphs written here (a ×F nearest-neighbour resize, optionally times
NaN, with whatever metadata a case needs) and checkpoints of the real architectures with
tampered tensors, so the whole corpus runs in about a minute on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from safetensors.torch import save_file

from lightbsr import contract
from lightbsr.checkpoint import CONFIG_KEY, read_checkpoint, save_checkpoint
from lightbsr.cli import main
from lightbsr.imageio import read_image, write_image
from lightbsr.models import ModelConfig, build_model

RNG = np.random.default_rng(19)
IMAGES = Path(__file__).parent / "data" / "images"


# --------------------------------------------------------------------------- inputs


def image(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid PNG header declaring ``width × height`` over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def crc_broken_png(path: Path) -> Path:
    data = bytearray(cv2.imencode(".png", image((32, 32, 3)))[1].tobytes())
    at = data.find(b"IDAT")
    data[at + 12 : at + 24] = b"\0" * 12  # libpng prints "libpng error: IDAT: CRC error" by itself
    path.write_bytes(bytes(data))
    return path


def truncated_tiff(path: Path) -> Path:
    path.write_bytes(cv2.imencode(".tif", image((64, 64, 3)))[1].tobytes()[:300])  # OpenCV logs [ERROR] lines
    return path


def frames(path: Path, count: int = 3) -> Path:
    pictures = [Image.fromarray(image((8, 8, 3))) for _ in range(count)]
    pictures[0].save(path, save_all=True, append_images=pictures[1:])
    return path


def oriented(path: Path, array: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes())
    return path


def toy_onnx(path: Path, factor: int = 4, scale: str = "4", nan: bool = False) -> Path:
    """A lightbsr full graph: lr → nearest ×``factor`` (× NaN with ``nan``), metadata saying ×``scale``."""
    nodes = [helper.make_node("Resize", ["lr", "", "scales"], ["up" if nan else "sr"], mode="nearest")]
    constants = [numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), "scales")]
    if nan:
        nodes.append(helper.make_node("Mul", ["up", "poison"], ["sr"]))
        constants.append(numpy_helper.from_array(np.array(np.nan, np.float32), "poison"))
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["n", 3, "sh", "sw"])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            contract.META_ARCH: "lightbsr_student_x4",
            contract.META_FAMILY: "lightbsr",
            contract.META_SCALE: scale,
            contract.META_GRAPH: contract.GRAPH_FULL,
            contract.META_PRECISION: "fp32",
            contract.META_SOURCE_SHA256: "toy",
            contract.META_VERSION: "test",
        },
    )
    onnx.save(model, str(path))
    return path


_STUDENT: dict[str, torch.Tensor] = {}


def student_state() -> dict[str, torch.Tensor]:
    if not _STUDENT:
        torch.manual_seed(0)
        _STUDENT.update(build_model("kdsr_student_m_x2").state_dict())
    return {k: v.clone() for k, v in _STUDENT.items()}


def checkpoint(path: Path, tamper: Callable[[dict], None] | None = None, config: dict | None = None) -> Path:
    """A kdsr_student_m_x2 checkpoint (the smallest student), its tensors or config tampered with."""
    state = student_state()
    if tamper is not None:
        tamper(state)
    header = {CONFIG_KEY: json.dumps(config or ModelConfig.from_arch("kdsr_student_m_x2").to_dict())}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=header)
    return path


def nan_weights(state: dict) -> None:
    state["head.weight"][0, 0, 0, 0] = float("nan")


def integer_weights(state: dict) -> None:
    state["head.weight"] = state["head.weight"].round().to(torch.int32)


def dataset(folder: Path, extra: Callable[[Path], object]) -> Path:
    folder.mkdir()
    write_image(folder / "a.png", image((40, 40, 3)))
    extra(folder)
    return folder


# --------------------------------------------------------------------------- the corpus


@dataclass
class Case:
    """``setup(folder)`` makes the inputs and returns the command's arguments (``{}`` is the folder)."""

    setup: Callable[[Path], list[str]]
    message: str | None = None
    """A part of the one error line; None: the input is merely unusual, and ``check`` judges the output."""
    check: Callable[[Path, str], None] | None = None
    created: tuple[str, ...] = field(default_factory=tuple)
    """Files the command writes when it succeeds (relative to the folder)."""


def _upscale(model: str, *extra: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        write_image(d / "in.png", image((6, 5, 3)))
        toy_onnx(d / "m.onnx")
        return ["upscale", "-i", str(d / "in.png"), "-o", str(d / "out.png"), "-m", str(d / model), *extra]

    return setup


def _upscale_with(model: Callable[[Path], Path], *extra: str, source: Callable[[Path], Path] | None = None):  # type: ignore[no-untyped-def]
    def setup(d: Path) -> list[str]:
        src = source(d) if source else write_image(d / "in.png", image((6, 5, 3)))
        return ["upscale", "-i", str(src), "-o", str(d / "out.png"), "-m", str(model(d)), *extra]

    return setup


def _upscale_input(make: Callable[[Path], Path], output: str = "out.png", *extra: str):  # type: ignore[no-untyped-def]
    def setup(d: Path) -> list[str]:
        source = make(d)
        toy_onnx(d / "m.onnx")
        return ["upscale", "-i", str(source), "-o", str(d / output), "-m", str(d / "m.onnx"), *extra]

    return setup


def _eval(model: Callable[[Path], Path | str], data: Callable[[Path], Path] | None = None, *extra: str):  # type: ignore[no-untyped-def]
    def setup(d: Path) -> list[str]:
        folder = data(d) if data else IMAGES
        spec = model(d)
        return ["eval", str(spec), "--dataset", str(folder), "--no-progress", "--sigma", "2.4", *extra]

    return setup


def _compare(data: Callable[[Path], Path] | None = None, b: Callable[[Path], Path] | None = None, *extra: str):  # type: ignore[no-untyped-def]
    def setup(d: Path) -> list[str]:
        folder = data(d) if data else IMAGES
        first = toy_onnx(d / "a.onnx")
        second = b(d) if b else toy_onnx(d / "b.onnx")
        return ["compare", str(first), str(second), "--images", str(folder), *extra]

    return setup


def _arguments(*argv: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        toy_onnx(d / "m.onnx")
        write_image(d / "in.png", image((6, 5, 3)))
        return [a.replace("{}", str(d)) for a in argv]

    return setup


def _orientation_check(shape: tuple[int, ...]) -> Callable[[Path, str], None]:
    def check(d: Path, out: str) -> None:
        assert read_image(d / "out.png").shape == shape

    return check


def _same_as_nearest(d: Path, out: str) -> None:
    source = read_image(d / "in.png")
    expected = source.repeat(4, axis=0).repeat(4, axis=1)
    np.testing.assert_array_equal(read_image(d / "out.png"), expected)


LONG = "x" * 246 + ".png"  # 250 bytes: legal, and longer than any temporary name derived from it can be


def _bomb_folder(d: Path) -> Path:
    return dataset(d / "data", lambda f: png_bomb(f / "bomb.png"))


CASES: dict[str, Case] = {
    # 1. labels trusted instead of results ---------------------------------------------------------
    "onnx says x4, returns x1": Case(_upscale_with(lambda d: toy_onnx(d / "m.onnx", factor=1)), "its metadata says ×4"),
    "onnx says x4, returns x1, tiled": Case(
        _upscale_with(
            lambda d: toy_onnx(d / "m.onnx", factor=1), "--tile", "4", "--tile-overlap", "1", "--no-shared-idr"
        ),
        "its metadata says ×4",
    ),
    "onnx says x2, returns x4": Case(
        _upscale_with(lambda d: toy_onnx(d / "m.onnx", scale="2")), "its metadata says ×2"
    ),
    "onnx scale 0": Case(_upscale_with(lambda d: toy_onnx(d / "m.onnx", scale="0")), "bad lightbsr.scale metadata"),
    "onnx scale 100000": Case(
        _upscale_with(lambda d: toy_onnx(d / "m.onnx", scale="100000")), "bad lightbsr.scale metadata"
    ),
    "onnx scale 4.0": Case(_upscale_with(lambda d: toy_onnx(d / "m.onnx", scale="4.0")), "bad lightbsr.scale"),
    "onnx scale -4": Case(_upscale_with(lambda d: toy_onnx(d / "m.onnx", scale="-4")), "bad lightbsr.scale"),
    "onnx NaN output": Case(_upscale_with(lambda d: toy_onnx(d / "m.onnx", nan=True)), "NaN or infinite"),
    "onnx NaN output, tiled": Case(
        _upscale_with(
            lambda d: toy_onnx(d / "m.onnx", nan=True), "--tile", "4", "--tile-overlap", "0", "--no-shared-idr"
        ),
        "NaN or infinite",
    ),
    "checkpoint scale 4.5": Case(
        _upscale_with(lambda d: checkpoint(d / "m.safetensors", config={"arch": "kdsr_student_m_x2", "scale": 4.5})),
        "scale 4.5",
    ),
    "checkpoint scale text": Case(
        _upscale_with(lambda d: checkpoint(d / "m.safetensors", config={"arch": "kdsr_student_m_x2", "scale": "x"})),
        "scale 'x'",
    ),
    "checkpoint setting true": Case(
        _upscale_with(lambda d: checkpoint(d / "m.safetensors", config={"arch": "kdsr_student_m_x2", "setting": True})),
        "setting",
    ),
    "checkpoint NaN weights": Case(_upscale_with(lambda d: checkpoint(d / "m.safetensors", nan_weights)), "NaN"),
    "checkpoint integer weights": Case(
        _upscale_with(lambda d: checkpoint(d / "m.safetensors", integer_weights)), "not floating point"
    ),
    "eval NaN checkpoint": Case(
        _eval(lambda d: checkpoint(d / "m.safetensors", nan_weights), None, "--scale", "2"), "NaN"
    ),
    "eval NaN onnx": Case(_eval(lambda d: toy_onnx(d / "m.onnx", nan=True)), "NaN or infinite"),
    "eval lying onnx": Case(_eval(lambda d: toy_onnx(d / "m.onnx", factor=1)), "its metadata says ×4"),
    "compare NaN onnx": Case(_compare(None, lambda d: toy_onnx(d / "b.onnx", nan=True), "--limit", "1"), "NaN"),
    # 2. library errors leaking --------------------------------------------------------------------
    "png CRC error": Case(_upscale_input(lambda d: crc_broken_png(d / "crc.png")), "corrupt or truncated"),
    "truncated tiff": Case(_upscale_input(lambda d: truncated_tiff(d / "t.tif")), "t.tif"),
    "float tiff": Case(
        _upscale_input(lambda d: (cv2.imwrite(str(d / "f.tif"), np.ones((6, 5, 3), np.float32)), d / "f.tif")[1]),
        "a TIFF file whose header cannot be read",
    ),
    "jpeg magic, no header": Case(
        _upscale_input(lambda d: (d / "j.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(50)) and d / "j.jpg"),
        "a JPEG file whose header cannot be read",
    ),
    "eval float tiff in dataset": Case(
        _eval(
            lambda d: "bicubic",
            lambda d: dataset(d / "data", lambda f: cv2.imwrite(str(f / "f.tif"), np.ones((6, 5, 3), np.float32))),
        ),
        "a TIFF file whose header cannot be read",
    ),
    "pickle with code": Case(
        lambda d: (
            torch.save({"state_dict": student_state(), "hook": print}, d / "evil.pt"),
            ["convert", str(d / "evil.pt"), "-o", str(d / "out.safetensors")],
        )[1],
        "holds more than tensors",
    ),
    "unknown provider": Case(_upscale("m.onnx", "--providers", "BogusExecutionProvider", "--json"), "not available"),
    "gpu provider on a cpu build": Case(
        _upscale("m.onnx", "--providers", "CUDAExecutionProvider"), "CUDAExecutionProvider is not available"
    ),
    "empty providers": Case(_upscale("m.onnx", "--providers", ","), "no onnxruntime execution provider"),
    # 3. guards in the one reader, and numeric options ---------------------------------------------
    "eval bomb in dataset": Case(_eval(lambda d: "bicubic", _bomb_folder), "over the limit"),
    "compare bomb in images": Case(_compare(_bomb_folder), "over the limit"),
    "quantize bomb in calib": Case(
        lambda d: [
            "quantize",
            str(toy_onnx(d / "m.onnx")),
            "--int8",
            "--calib",
            str(_bomb_folder(d)),
            "-o",
            str(d / "q.onnx"),
        ],
        "over the limit",
    ),
    "train bomb in data": Case(
        lambda d: [
            "train",
            "teacher",
            "--setting",
            "1",
            "--data",
            str(_bomb_folder(d)),
            "--out",
            str(d / "run"),
            "--no-progress",
            "--iterations",
            "1",
        ],
        "over the limit",
    ),
    "eval text as png": Case(
        _eval(lambda d: "bicubic", lambda d: dataset(d / "data", lambda f: (f / "b.png").write_text("hello"))),
        "not an image file",
    ),
    "eval multi-frame tiff": Case(
        _eval(lambda d: "bicubic", lambda d: dataset(d / "data", lambda f: frames(f / "pages.tif"))), "3 frames"
    ),
    "tile -1": Case(_arguments("upscale", "-i", "{}/in.png", "-o", "{}/out.png", "--tile", "-1"), "--tile"),
    "tile-batch 0": Case(_arguments("upscale", "-i", "{}/in.png", "-o", "{}/out.png", "--tile-batch", "0"), "≥ 1"),
    "max-pixels 0": Case(_arguments("upscale", "-i", "{}/in.png", "-o", "{}/out.png", "--max-pixels", "0"), "≥ 1"),
    "crf 99": Case(_arguments("upscale", "-i", "{}/in.png", "-o", "{}/out.mp4", "--crf", "99"), "in [0, 51]"),
    "scene-threshold nan": Case(
        _arguments("upscale", "-i", "{}/in.png", "-o", "{}/o.png", "--scene-threshold", "nan"), "finite"
    ),
    "train threads -2": Case(
        _arguments("train", "teacher", "--setting", "1", "--data", "{}", "--out", "{}/r", "--threads", "-2"), "≥ 1"
    ),
    "train lr inf": Case(
        _arguments("train", "teacher", "--setting", "1", "--data", "{}", "--out", "{}/r", "--lr", "inf"), "finite"
    ),
    "compare limit -1": Case(_arguments("compare", "{}/m.onnx", "{}/m.onnx", "--images", "{}", "--limit", "-1"), "≥ 1"),
    "eval sigma 1e-30": Case(_eval(lambda d: "bicubic", None), None),  # replaced below
    "eval sigma nan": Case(_arguments("eval", "bicubic", "--dataset", "{}", "--sigma", "nan"), "finite"),
    "eval sigma text": Case(_arguments("eval", "bicubic", "--dataset", "{}", "--sigma", "wide"), "not a number"),
    "bench repeats 0": Case(_arguments("bench", "{}/m.onnx", "--repeats", "0"), "≥ 1"),
    "bench max-seconds inf": Case(_arguments("bench", "{}/m.onnx", "--max-seconds", "inf"), "finite"),
    "quantize calib-count 0": Case(
        _arguments("quantize", "{}/m.onnx", "--int8", "--calib", "{}", "--calib-count", "0"), "≥ 1"
    ),
    "export triton-max-batch -1": Case(
        _arguments("export", "{}/m.safetensors", "--triton", "{}/t", "--triton-max-batch", "-1"), "≥ 0"
    ),
    "build workspace 0": Case(_arguments("build", "{}/m.onnx", "--workspace", "0"), "≥ 1"),
    "serve instances 0": Case(_arguments("serve", "-m", "{}/m.onnx", "--instances", "0"), "≥ 1"),
    "serve port 70000": Case(_arguments("serve", "-m", "{}/m.onnx", "--http-port", "70000"), "in [1, 65535]"),
    "serve startup-timeout nan": Case(_arguments("serve", "-m", "{}/m.onnx", "--startup-timeout", "nan"), "finite"),
    "serve one port twice": Case(
        _arguments("serve", "-m", "{}/m.onnx", "--http-port", "9000", "--grpc-port", "9000"), "must differ"
    ),
    "serve missing model": Case(_arguments("serve", "-m", "{}/none.onnx"), "no such model file"),
    # 4. atomic writes -------------------------------------------------------------------------------
    "250-byte output name": Case(
        _upscale_input(lambda d: write_image(d / "in.png", image((6, 5, 3))), LONG),
        None,
        lambda d, out: np.testing.assert_array_equal(
            read_image(d / LONG), read_image(d / "in.png").repeat(4, axis=0).repeat(4, axis=1)
        ),
        (LONG,),
    ),
    "output under a file": Case(
        _upscale_input(lambda d: write_image(d / "in.png", image((6, 5, 3))), "in.png/out.png"), "in.png"
    ),
    # 5. ambiguous outputs ---------------------------------------------------------------------------
    "two inputs, one output": Case(
        lambda d: (
            (d / "src").mkdir(),
            write_image(d / "src" / "a.png", image((4, 4, 3))),
            write_image(d / "src" / "a.jpg", image((4, 4, 3))),
            [
                "upscale",
                "-i",
                str(d / "src"),
                "-o",
                str(d / "dst"),
                "-m",
                str(toy_onnx(d / "m.onnx")),
                "--format",
                "png",
            ],
        )[-1],
        "would both be written to",
    ),
    "-o x.jpg --format png": Case(_upscale("m.onnx", "--format", "png"), None),  # replaced below
    "convert X -o X": Case(
        lambda d: ["convert", str(checkpoint(d / "m.safetensors")), "-o", str(d / "m.safetensors")],
        "would replace the input",
    ),
    "export onto its checkpoint": Case(
        lambda d: ["export", str(checkpoint(d / "m.safetensors")), "-o", str(d / "m.safetensors")],
        "would replace the input",
    ),
    "quantize onto its model": Case(
        lambda d: ["quantize", str(toy_onnx(d / "m.onnx")), "--fp16", "-o", str(d / "m.onnx")],
        "would replace the input",
    ),
    "output is a hard link to the input": Case(
        lambda d: (
            write_image(d / "in.png", image((4, 4, 3))),
            os.link(d / "in.png", d / "link.png"),
            [
                "upscale",
                "-i",
                str(d / "in.png"),
                "-o",
                str(d / "link.png"),
                "-m",
                str(toy_onnx(d / "m.onnx")),
                "--overwrite",
            ],
        )[-1],
        "would replace the input",
    ),
    "bench report onto its model": Case(_arguments("bench", "{}/m.onnx", "--json", "{}/m.onnx"), "would replace"),
    "webp too wide": Case(
        _upscale_input(lambda d: write_image(d / "wide.png", image((1, 4096, 3))), "out.webp"), "16383 pixels"
    ),
    "jpeg too large": Case(
        _upscale_input(lambda d: write_image(d / "long.png", image((16384, 1, 3))), "out.jpg"), "65500 pixels"
    ),
    # 6. orientation, channels and frames ------------------------------------------------------------
    "tiff rotated a quarter turn": Case(
        _upscale_input(lambda d: oriented(d / "in.tif", image((4, 6, 3)), 6)),
        None,
        _orientation_check((24, 16, 3)),
        ("out.png",),
    ),
    "jpeg transposed": Case(
        _upscale_input(lambda d: oriented(d / "in.jpg", image((4, 6, 3)), 5)),
        None,
        _orientation_check((24, 16, 3)),
        ("out.png",),
    ),
    "cmyk tiff": Case(
        _upscale_input(lambda d: (Image.fromarray(image((4, 4, 4)), "CMYK").save(d / "c.tif"), d / "c.tif")[1]),
        None,
        _orientation_check((16, 16, 3)),
        ("out.png",),
    ),
    "apng": Case(_upscale_input(lambda d: frames(d / "anim.png")), "with 3 frames"),
    "multi-page tiff": Case(_upscale_input(lambda d: frames(d / "pages.tif", 2)), "with 2 frames"),
    "animated webp": Case(_upscale_input(lambda d: frames(d / "anim.webp")), "with 3 frames"),
    "gif": Case(_upscale_input(lambda d: frames(d / "anim.gif")), "unsupported image format GIF"),
    "one pixel": Case(
        _upscale_input(lambda d: write_image(d / "in.png", image((1, 1, 3)))), None, _same_as_nearest, ("out.png",)
    ),
    # other commands' hostile inputs -----------------------------------------------------------------
    "teacher without --pca": Case(
        lambda d: (
            save_file({k: v.contiguous() for k, v in _authors_teacher().items()}, str(d / "t.safetensors")),
            ["convert", str(d / "t.safetensors"), "-o", str(d / "ours.safetensors")],
        )[1],
        "--pca PCA_matrix.mat",
    ),
    "--pca not a mat file": Case(
        lambda d: (
            save_file({k: v.contiguous() for k, v in _authors_teacher().items()}, str(d / "t.safetensors")),
            (d / "p.mat").write_bytes(b"MATLAB 7.3 MAT-file".ljust(128)),
            ["convert", str(d / "t.safetensors"), "-o", str(d / "ours.safetensors"), "--pca", str(d / "p.mat")],
        )[-1],
        "v7.3",
    ),
    "kdsr recipe for lightbsr": Case(
        _arguments("train", "teacher", "--setting", "1", "--data", "{}", "--out", "{}/r", "--recipe", "kdsr"),
        "kdsr recipe is KDSR's own",
    ),
    "model is a folder": Case(
        _upscale_with(lambda d: ((d / "x.onnx").mkdir(), d / "x.onnx")[-1]), "x.onnx: no such model"
    ),
    "zero-byte onnx": Case(_upscale_with(lambda d: ((d / "z.onnx").write_bytes(b""), d / "z.onnx")[-1]), "z.onnx"),
    "text as safetensors": Case(
        _upscale_with(lambda d: ((d / "t.safetensors").write_text("hello"), d / "t.safetensors")[-1]),
        "not a readable safetensors file",
    ),
    "empty input folder": Case(
        lambda d: ((d / "src").mkdir(), ["upscale", "-i", str(d / "src"), "-o", str(d / "dst"), "-m", "x.onnx"])[-1],
        "no images",
    ),
    "eval missing dataset": Case(_eval(lambda d: "bicubic", lambda d: d / "nowhere"), "does not exist"),
    "eval onnx with bad scale": Case(_eval(lambda d: toy_onnx(d / "m.onnx", scale="7")), "bad lightbsr.scale"),
}

CASES["eval sigma 1e-30"] = Case(_eval(lambda d: "bicubic", None, "--sigma", "1e-30"), "too small")
CASES["-o x.jpg --format png"] = Case(
    lambda d: [*_upscale("m.onnx")(d)[:4], str(d / "x.jpg"), "-m", str(d / "m.onnx"), "--format", "png"],
    "contradicts",
)
CASES["eval multi-frame tiff"] = Case(
    _eval(lambda d: "bicubic", lambda d: dataset(d / "data", lambda f: frames(f / "pages.tif"))), "with 3 frames"
)


def _authors_teacher() -> dict[str, torch.Tensor]:
    from reference import reference_state_dict

    return reference_state_dict("lightbsr_teacher_x4_setting1")


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_corpus(name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    folder = tmp_path / "case"
    folder.mkdir()
    argv = case.setup(folder)
    before = _files(folder)
    capfd.readouterr()
    code = main(argv)
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    if case.message is not None:
        lines = err.splitlines()
        assert code == 2, (code, err)
        assert len(lines) == 1 and lines[0].startswith("lightbsr: error: "), err
        assert case.message in lines[0], lines[0]
        assert "weights_only=False" not in err
        assert out == ""
        assert _files(folder) == before  # nothing written, no temporary left
    else:
        assert code == 0, err
        assert _files(folder) - before == {Path(p) for p in case.created}
        assert case.check is not None
        case.check(folder, out)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60


# --------------------------------------------------------------------------- processes: signals, pipes, locales


def _lightbsr(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-m", "lightbsr", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler installed (Linux: the SigCgt mask of /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines() if status.exists() else ():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def test_sigterm_during_export_leaves_nothing(tmp_path: Path) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to see when the command has installed its SIGTERM handler")
    model = build_model("lightbsr_student_x4")
    source = save_checkpoint(tmp_path / "m.safetensors", model, ModelConfig.from_arch("lightbsr_student_x4"))
    out = tmp_path / "out"
    process = _lightbsr("export", str(source), "-o", str(out / "m.onnx"), "--split")
    deadline = time.monotonic() + 120
    while not _catches_sigterm(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the export (it takes tens of seconds), as `docker stop` would come
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the export finished before the signal arrived (a very fast machine)")
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["lightbsr: terminated"], stderr
    assert not out.exists() or list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"] + (["out"] if out.exists() else [])


def test_signal_between_creating_the_temporary_and_its_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM right after the temporary is created (the gap seen once in seven SIGINTs) still removes it."""
    from lightbsr import cli, files
    from lightbsr.files import atomic_output

    real = os.open

    def create_then_signal(path: object, *args: object, **kwargs: object) -> int:
        fd = real(path, *args, **kwargs)  # type: ignore[arg-type]
        if ".partial" in str(path):
            os.kill(os.getpid(), signal.SIGTERM)  # lands as soon as the file exists
        return fd

    monkeypatch.setattr(files.os, "open", create_then_signal)
    with pytest.raises(cli.Terminated), cli._terminate_as_interrupt(), atomic_output(tmp_path / "out.png") as tmp:
        tmp.write_bytes(b"never")
    assert list(tmp_path.iterdir()) == []


def test_eval_json_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lightbsr",
            "eval",
            "bicubic",
            "--dataset",
            str(IMAGES),
            str(IMAGES),
            "--json",
            "--no-progress",
            "--sigma",
            "1.2",
            "2.4",
            "3.6",
        ],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdin is not None
    reader.stdin.close()
    _, stderr = process.communicate(timeout=300)
    reader.wait(timeout=60)
    assert stderr == "", stderr
    assert process.returncode in (0, 141)


def test_ascii_locale_prints_what_it_cannot_encode(tmp_path: Path) -> None:
    write_image(tmp_path / "in.png", image((6, 5, 3)))
    toy_onnx(tmp_path / "m.onnx")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    args = ["upscale", "-i", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "-m", str(tmp_path / "m.onnx")]
    result = subprocess.run([sys.executable, "-m", "lightbsr", *args], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "5\\xd76 \\u2192 20\\xd724" in result.stdout  # "5×6 → 20×24", escaped
    assert read_image(tmp_path / "out.png").shape == (24, 20, 3)


def test_write_errors_name_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from lightbsr.files import atomic_output

    target = tmp_path / "result.png"
    with pytest.raises(OSError, match=r"result\.png") as info, atomic_output(target) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert ".partial" not in str(info.value) and list(tmp_path.iterdir()) == []


def test_checkpoint_conversion_of_a_teacher_keeps_working_with_its_basis(tmp_path: Path) -> None:
    scipy_io = pytest.importorskip("scipy.io", reason="scipy (dev extra) writes the test's MATLAB files")
    save_file({k: v.contiguous() for k, v in _authors_teacher().items()}, str(tmp_path / "t.safetensors"))
    basis = np.linalg.qr(RNG.normal(size=(441, 15)))[0]
    scipy_io.savemat(tmp_path / "PCA_matrix.mat", {"p": basis})
    argv = ["convert", str(tmp_path / "t.safetensors"), "-o", str(tmp_path / "o.safetensors")]
    assert main([*argv, "--pca", str(tmp_path / "PCA_matrix.mat")]) == 0
    state, config, _ = read_checkpoint(tmp_path / "o.safetensors")
    assert config.arch == "lightbsr_teacher_x4_setting1"
    np.testing.assert_allclose(state["pca_basis"].numpy(), basis.T.astype(np.float32))
