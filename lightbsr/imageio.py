"""Image files in and out for the upscaler: numpy + OpenCV (+ Pillow for headers), no torch.

Arrays are ``uint8`` or ``uint16`` (the file's bit depth), laid out as

* ``(H, W)``: grayscale; ``(H, W, 2)``: grayscale + alpha;
* ``(H, W, 3)``: RGB; ``(H, W, 4)``: RGBA (RGB order, not OpenCV's BGR).

Reading (:func:`read_image`) checks the header first — with Pillow, which parses it
lazily — and refuses a zero-byte file, an unknown or unsupported format, a 0-pixel
image, or one whose declared size exceeds ``max_pixels`` **before** decoding
(decompression bombs). OpenCV then decodes the pixels unchanged (16-bit, alpha), and
the EXIF orientation is applied (``IMREAD_UNCHANGED`` ignores it; Pillow reads the
tag). Every failure is an :class:`~lightbsr.errors.InputImageError` with one line
saying what is wrong.

Writing (:func:`write_image`) picks the format from the extension (:data:`WRITE_FORMATS`),
writes atomically (:func:`lightbsr.files.atomic_output`: nothing partial is ever left),
and keeps the bit depth where the format can: PNG and TIFF store 16 bits, JPEG, WebP
and BMP store 8 (16-bit data is rounded, ``v / 257``, with a warning). JPEG has no alpha
(dropped with a warning); grayscale + alpha is stored as RGBA (OpenCV cannot encode
two channels), and WebP stores grayscale as RGB. No metadata (EXIF) is written: the
pixels are already upright.
"""

from __future__ import annotations

import os
import threading
import warnings
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
    "probe_image",
    "read_image",
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


WRITE_FORMATS: dict[str, _WriteFormat] = {
    ".png": _WriteFormat("PNG", True, True, True),
    ".tif": _WriteFormat("TIFF", True, True, True),
    ".tiff": _WriteFormat("TIFF", True, True, True),
    ".jpg": _WriteFormat("JPEG", False, False, True, (cv2.IMWRITE_JPEG_QUALITY, 95)),
    ".jpeg": _WriteFormat("JPEG", False, False, True, (cv2.IMWRITE_JPEG_QUALITY, 95)),
    ".webp": _WriteFormat("WebP", False, True, False, (cv2.IMWRITE_WEBP_QUALITY, 95)),
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
        except UnidentifiedImageError as err:
            size = _png_ihdr_size(path)
            if size is not None and 0 in size:
                raise InputImageError(f"{path}: image has no pixels ({size[0]}×{size[1]})") from err
            kind = "a PNG file with a corrupt header" if size is not None else "an image file (or of an unknown format)"
            raise InputImageError(f"{path}: not {kind}") from err
        except (OSError, ValueError, SyntaxError) as err:
            raise InputImageError(f"{path}: unreadable image header ({first_line(err)})") from err
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    if fmt not in READ_FORMATS:
        raise InputImageError(f"{path}: unsupported image format {fmt}; supported: PNG, JPEG, WebP, TIFF, BMP")
    if width <= 0 or height <= 0:
        raise InputImageError(f"{path}: image has no pixels ({width}×{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise InputImageError(
            f"{path}: {width}×{height} = {width * height} pixels is over the limit of {max_pixels} (--max-pixels)"
        )
    return ImageHeader(width, height, READ_FORMATS[fmt], mode, orientation)


def _png_ihdr_size(path: Path) -> tuple[int, int] | None:
    """(width, height) declared by a PNG's IHDR chunk, or ``None`` if ``path`` does not start like a PNG."""
    with path.open("rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
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
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputImageError(f"{path}: cannot decode the {header.format} data (corrupt or truncated file)")
    if img.dtype not in (np.uint8, np.uint16):
        raise InputImageError(f"{path}: unsupported sample type {img.dtype} (8- and 16-bit images are supported)")
    if img.shape[:2] != (header.height, header.width):
        raise InputImageError(f"{path}: decoded size {img.shape[1]}×{img.shape[0]} differs from the header's")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = img[:, :, 0]
        elif channels == 3:
            img = img[:, :, ::-1]
        elif channels == 4:
            img = img[:, :, [0, 3]] if header.grayscale else img[:, :, [2, 1, 0, 3]]
        elif channels != 2:
            raise InputImageError(f"{path}: unsupported number of channels ({channels})")
    return apply_orientation(img, header.orientation)


def check_output_path(path: str | os.PathLike[str]) -> _WriteFormat:
    """The output format for ``path``'s extension; an unsupported extension is refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise ConfigError(
            f"{path}: cannot write {suffix or 'files without an extension'}; use one of {', '.join(WRITE_FORMATS)}"
        )
    return WRITE_FORMATS[suffix]


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an array laid out as :func:`read_image` returns, atomically, in the format of the extension."""
    path = Path(path)
    fmt = check_output_path(path)
    img = np.asarray(image)
    if img.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"cannot write {img.dtype} pixels; convert to uint8 or uint16")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (2, 3, 4)) or 0 in img.shape[:2]:
        raise ConfigError(f"cannot write an image of shape {img.shape}")
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
    ok, encoded = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(img), list(fmt.params))
    if not ok:
        raise InputImageError(f"{path}: OpenCV could not encode the image as {fmt.name}")
    with atomic_output(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def resize_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Upscale an alpha plane ``(H, W)`` by ``scale`` with bicubic interpolation (same dtype, clamped)."""
    height, width = alpha.shape[:2]
    out = cv2.resize(alpha, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
    if np.issubdtype(out.dtype, np.floating):
        out = np.clip(out, 0.0, 1.0)  # integer types saturate in OpenCV already
    return out
