"""Image files in and out for the upscaler: numpy + OpenCV (+ Pillow for headers), no torch.

Arrays are ``uint8`` or ``uint16`` (the file's bit depth), laid out as

* ``(H, W)``: grayscale; ``(H, W, 2)``: grayscale + alpha;
* ``(H, W, 3)``: RGB; ``(H, W, 4)``: RGBA (RGB order, not OpenCV's BGR).

Reading (:func:`read_image`) checks the header first — with Pillow, which parses it
lazily — and refuses a zero-byte file, an unknown or unsupported format, a 0-pixel
image, an animated or multi-frame PNG, WebP or TIFF (as GIFs are refused: which frame
is meant is not ours to guess), or one whose declared size exceeds ``max_pixels``
**before** decoding (decompression bombs). OpenCV then decodes the pixels unchanged
(16-bit, alpha; a CMYK file is converted to RGB, without the opaque alpha OpenCV adds).
The EXIF orientation (read by Pillow) is applied exactly once: by us where OpenCV's
decoder ignores it (PNG, JPEG and WebP with ``IMREAD_UNCHANGED``), not again where the
decoder already applied it (its TIFF decoder; found out once per format by decoding a
tiny rotated image, :func:`decoder_applies_orientation`, so another OpenCV version cannot
rotate twice). Every failure — OpenCV errors, running out of memory — is an
:class:`~lightbsr.errors.InputImageError` with one line saying what is wrong, and what
native decoders print on their own (``libpng error:``, OpenCV's ``[ERROR]`` log lines)
is kept off stderr (``LIGHTBSR_DEBUG=1`` shows it). :func:`read_image_rgb8` is the same
reader for the commands that work on 8-bit RGB (eval, compare, quantize, train).

Writing (:func:`write_image`) picks the format from the extension (:data:`WRITE_FORMATS`),
writes atomically (:func:`lightbsr.files.atomic_output`: nothing partial is ever left),
and keeps the bit depth where the format can: PNG and TIFF store 16 bits, JPEG, WebP
and BMP store 8 (16-bit data is rounded, ``v / 257``, with a warning). JPEG has no alpha
(dropped with a warning); grayscale + alpha is stored as RGBA (OpenCV cannot encode
two channels), and WebP stores grayscale as RGB. No metadata (EXIF) is written: the
pixels are already upright. A size the format cannot store (WebP: 16383 pixels a side,
JPEG: 65500) is refused before encoding (:func:`check_output_size`, which the upscale
command calls when it plans its outputs, before any inference).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lightbsr.errors import ConfigError, InputImageError, LightBSRWarning, first_line
from lightbsr.files import atomic_output

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "READ_FORMATS",
    "WRITE_FORMATS",
    "ImageHeader",
    "apply_orientation",
    "check_output_path",
    "check_output_size",
    "decoder_applies_orientation",
    "probe_image",
    "read_image",
    "read_image_rgb8",
    "resize_alpha",
    "write_image",
]

DEFAULT_MAX_PIXELS = 1 << 28
"""Largest declared width × height read by default (268 M pixels, e.g. 16384 × 16384)."""

READ_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "TIFF": "TIFF", "BMP": "BMP"}
"""Pillow format names accepted on input (an MPO is a JPEG with extra frames; the first is read)."""


@dataclass(frozen=True)
class _WriteFormat:
    name: str
    sixteen_bit: bool
    alpha: bool
    gray: bool
    params: tuple[int, ...] = ()
    max_side: int | None = None
    """Largest width or height the format stores (None: no limit below what memory allows)."""


WRITE_FORMATS: dict[str, _WriteFormat] = {
    ".png": _WriteFormat("PNG", True, True, True),
    ".tif": _WriteFormat("TIFF", True, True, True),
    ".tiff": _WriteFormat("TIFF", True, True, True),
    ".jpg": _WriteFormat("JPEG", False, False, True, (cv2.IMWRITE_JPEG_QUALITY, 95), 65500),
    ".jpeg": _WriteFormat("JPEG", False, False, True, (cv2.IMWRITE_JPEG_QUALITY, 95), 65500),
    ".webp": _WriteFormat("WebP", False, True, False, (cv2.IMWRITE_WEBP_QUALITY, 95), 16383),
    ".bmp": _WriteFormat("BMP", False, True, True),
}
"""Output extension (lower case) → what that format can store."""

_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ORIENTATION_TAG = 0x0112
_PIL_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares, read without decoding its pixels."""

    width: int
    height: int
    format: str
    mode: str
    orientation: int = 1
    """EXIF orientation (1–8; 1 = upright)."""
    frames: int = 1

    @property
    def grayscale(self) -> bool:
        return self.mode in _GRAY_MODES


def probe_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Read and check an image file's header (size, format, orientation) without decoding it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise InputImageError(f"{path}: no such file")
    if not path.is_file():
        raise InputImageError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputImageError(f"{path}: empty file (0 bytes)")
    with _PIL_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # we apply our own limit below
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as img:
                    width, height = img.size
                    fmt, mode = str(img.format), img.mode
                    orientation = _orientation(img)
                    frames = int(getattr(img, "n_frames", 1) or 1)
        except UnidentifiedImageError as err:
            size = _png_ihdr_size(path)
            if size is not None and 0 in size:
                raise InputImageError(f"{path}: image has no pixels ({size[0]}×{size[1]})") from err
            declared = _declared_format(path)
            if declared is not None:  # the magic of a format we read, a header Pillow cannot: say so, not "no image"
                raise InputImageError(
                    f"{path}: a {declared} file whose header cannot be read (corrupt, or a sample type or layout "
                    "lightbsr does not support: 8- and 16-bit gray, gray + alpha, RGB, RGBA, CMYK)"
                ) from err
            raise InputImageError(f"{path}: not an image file (or of an unknown format)") from err
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:
            raise InputImageError(f"{path}: unreadable image header ({first_line(err)})") from err
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    if fmt not in READ_FORMATS:
        raise InputImageError(f"{path}: unsupported image format {fmt}; supported: PNG, JPEG, WebP, TIFF, BMP")
    if frames > 1 and fmt != "MPO":  # an MPO's first frame is the photo; the others are previews or depth
        raise InputImageError(
            f"{path}: a {READ_FORMATS[fmt]} with {frames} frames (animated or multi-page); lightbsr upscales "
            "single images: save the frame you want as its own file"
        )
    if width <= 0 or height <= 0:
        raise InputImageError(f"{path}: image has no pixels ({width}×{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise InputImageError(
            f"{path}: {width}×{height} = {width * height} pixels is over the limit of {max_pixels} (--max-pixels)"
        )
    return ImageHeader(width, height, READ_FORMATS[fmt], mode, orientation, frames)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAGIC = (
    (_PNG_SIGNATURE, "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)


def _declared_format(path: Path) -> str | None:
    """The format (of those read here) that ``path``'s first bytes announce, or ``None``."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _png_ihdr_size(path: Path) -> tuple[int, int] | None:
    """(width, height) declared by a PNG's IHDR chunk, or ``None`` if ``path`` does not start like a PNG."""
    with path.open("rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _orientation(img: object) -> int:
    try:
        value = int(img.getexif().get(_ORIENTATION_TAG, 1))  # type: ignore[attr-defined]
    except Exception:  # a broken EXIF block only loses the orientation
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF ``orientation`` upright (as ``PIL.ImageOps.exif_transpose`` does)."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180°
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # stored rotated 90° counter-clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
        8: lambda a: np.rot90(a, 1),  # stored rotated 90° clockwise
    }
    return np.ascontiguousarray(transforms.get(orientation, transforms[1])(array))


def read_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file: ``uint8``/``uint16``, gray ``(H, W)``, ``(H, W, 2)``, RGB or RGBA, upright."""
    path = Path(path)
    header = probe_image(path, max_pixels)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise InputImageError(f"{path}: cannot read ({err.strerror or err})") from err
    except MemoryError as err:
        raise InputImageError(f"{path}: not enough memory to read the file") from err
    try:
        with quiet_native_stderr():
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise InputImageError(f"{path}: OpenCV cannot decode the {header.format} data ({_cv_reason(err)})") from err
    except MemoryError as err:
        raise InputImageError(
            f"{path}: not enough memory to decode a {header.width}×{header.height} image (--max-pixels lower)"
        ) from err
    if img is None:
        raise InputImageError(f"{path}: cannot decode the {header.format} data (corrupt or truncated file)")
    if img.dtype not in (np.uint8, np.uint16):
        raise InputImageError(f"{path}: unsupported sample type {img.dtype} (8- and 16-bit images are supported)")
    oriented = decoder_applies_orientation(header.format) and header.orientation != 1
    sizes = {(header.height, header.width)}
    if header.orientation >= 5:  # a quarter turn: some readers (Pillow's and OpenCV's TIFF) report it turned
        sizes.add((header.width, header.height))
    if img.shape[:2] not in sizes:
        raise InputImageError(f"{path}: decoded size {img.shape[1]}×{img.shape[0]} differs from the header's")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = img[:, :, 0]
        elif channels == 3:
            img = img[:, :, ::-1]
        elif channels == 4 and header.mode == "CMYK":  # OpenCV converts CMYK to BGR plus an opaque alpha
            img = img[:, :, 2::-1]
        elif channels == 4:
            img = img[:, :, [0, 3]] if header.grayscale else img[:, :, [2, 1, 0, 3]]
        elif channels != 2:
            raise InputImageError(f"{path}: unsupported number of channels ({channels})")
    return np.ascontiguousarray(img) if oriented else apply_orientation(img, header.orientation)


def read_image_rgb8(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`read_image` as ``(H, W, 3)`` uint8 RGB: gray repeated, alpha dropped, 16 bits rounded (``v / 257``).

    The reader of the commands that work on 8-bit RGB images (eval, compare, quantize, train), with
    every check of :func:`read_image` (header before decoding, size limit, orientation, frames).
    """
    img = read_image(path, max_pixels)
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float64) / 257.0).astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] in (1, 2):  # gray, gray + alpha
        img = np.repeat(img[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


@functools.cache
def decoder_applies_orientation(fmt: str) -> bool:
    """Whether OpenCV's decoder of ``fmt`` (``IMREAD_UNCHANGED``) already turns EXIF-oriented pixels upright.

    Found out by decoding a 2×1 image stored with orientation 6 (rotated a quarter turn): if the
    decoder returns it 1×2, it applied the orientation. Formats Pillow cannot write with EXIF count as no.
    """
    from PIL import Image

    pillow = {"PNG": "PNG", "JPEG": "JPEG", "WebP": "WEBP", "TIFF": "TIFF"}.get(fmt)
    if pillow is None:
        return False
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = 6
    buffer = io.BytesIO()
    options: dict[str, object] = {"lossless": True} if pillow == "WEBP" else {}
    try:
        Image.new("RGB", (2, 1)).save(buffer, pillow, exif=exif.tobytes(), **options)
        with quiet_native_stderr():
            probe = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    except Exception:  # a build without that codec: nothing decodes it, nothing to double
        return False
    return probe is not None and probe.shape[:2] == (2, 1)


_QUIET_LOCK = threading.Lock()
_quiet = {"depth": 0, "saved": -1}


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Keep what native libraries print on file descriptor 2 (``libpng error:``, OpenCV logs) off stderr.

    Their failures become one-line lightbsr errors; the raw lines would only repeat them.
    Reentrant and shared between threads (the first in redirects, the last out restores);
    ``LIGHTBSR_DEBUG=1`` leaves stderr alone.
    """
    if os.environ.get("LIGHTBSR_DEBUG"):
        yield
        return
    with _QUIET_LOCK:
        if _quiet["depth"] == 0:
            try:
                sys.stderr.flush()
                saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
                _quiet["saved"] = saved
            except (OSError, ValueError, AttributeError):
                _quiet["saved"] = -1
        _quiet["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _quiet["depth"] -= 1
            if _quiet["depth"] == 0 and _quiet["saved"] >= 0:
                os.dup2(_quiet["saved"], 2)
                os.close(_quiet["saved"])
                _quiet["saved"] = -1


def _cv_reason(err: BaseException) -> str:
    """The useful part of a ``cv2.error`` message (its last line, without OpenCV's source location)."""
    text = str(err).strip().splitlines()
    last = text[-1] if text else type(err).__name__
    return last.split(") ", 1)[-1].strip(" >") if last.startswith("OpenCV(") else last.strip()


def check_output_path(path: str | os.PathLike[str]) -> _WriteFormat:
    """The output format for ``path``'s extension; an unsupported extension is refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise ConfigError(
            f"{path}: cannot write {suffix or 'files without an extension'}; use one of {', '.join(WRITE_FORMATS)}"
        )
    return WRITE_FORMATS[suffix]


def check_output_size(path: str | os.PathLike[str], width: int, height: int) -> _WriteFormat:
    """:func:`check_output_path`, and a ConfigError when the format cannot store a ``width × height`` image."""
    fmt = check_output_path(path)
    if fmt.max_side is not None and max(width, height) > fmt.max_side:
        raise ConfigError(
            f"{path}: a {width}×{height} image is larger than {fmt.name} stores ({fmt.max_side} pixels a side); "
            "write PNG or TIFF (--format png)"
        )
    return fmt


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an array laid out as :func:`read_image` returns, atomically, in the format of the extension."""
    path = Path(path)
    img = np.asarray(image)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 2, 3, 4)) or 0 in img.shape[:2]:
        raise ConfigError(f"cannot write an image of shape {img.shape}")
    fmt = check_output_size(path, img.shape[1], img.shape[0])
    if img.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"cannot write {img.dtype} pixels; convert to uint8 or uint16")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype == np.uint16 and not fmt.sixteen_bit:
        warnings.warn(
            f"{path.name}: {fmt.name} stores 8 bits; the 16-bit result is rounded", LightBSRWarning, stacklevel=2
        )
        img = np.round(img / 257.0).astype(np.uint8)
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels in (2, 4) and not fmt.alpha:
        warnings.warn(
            f"{path.name}: {fmt.name} has no alpha channel; the alpha is dropped", LightBSRWarning, stacklevel=2
        )
        img = img[:, :, 0] if channels == 2 else img[:, :, :3]
        channels -= 1
    if channels == 2:  # OpenCV cannot encode gray + alpha: store it as RGBA
        img = np.dstack([img[:, :, 0]] * 3 + [img[:, :, 1]])
    elif channels == 1 and not fmt.gray:
        img = np.dstack([img] * 3)
    if img.ndim == 3:
        img = img[:, :, [2, 1, 0, 3]] if img.shape[2] == 4 else img[:, :, ::-1]  # RGB(A) → BGR(A)
    try:
        with quiet_native_stderr():
            ok, encoded = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(img), list(fmt.params))
    except cv2.error as err:
        raise ConfigError(f"{path}: OpenCV cannot encode the image as {fmt.name} ({_cv_reason(err)})") from err
    except MemoryError as err:
        raise InputImageError(f"{path}: not enough memory to encode the {fmt.name} image") from err
    if not ok:
        raise InputImageError(f"{path}: OpenCV could not encode the image as {fmt.name}")
    with atomic_output(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def resize_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Upscale an alpha plane ``(H, W)`` by ``scale`` with bicubic interpolation (same dtype, clamped)."""
    height, width = alpha.shape[:2]
    try:
        out = cv2.resize(alpha, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
    except (cv2.error, MemoryError) as err:
        raise InputImageError(f"cannot resize the {width}×{height} alpha plane ×{scale} ({_cv_reason(err)})") from err
    if np.issubdtype(out.dtype, np.floating):
        out = np.clip(out, 0.0, 1.0)  # integer types saturate in OpenCV already
    return out
