"""lightbsr.imageio: header checks before decoding, orientation, bit depth, gray/alpha, atomic writes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from lightbsr.errors import ConfigError, InputImageError
from lightbsr.imageio import (
    apply_orientation,
    check_output_path,
    check_output_size,
    probe_image,
    read_image,
    write_image,
)

RNG = np.random.default_rng(7)


def random_image(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A well-formed PNG declaring ``width × height`` RGB whose pixel data is a few bytes (a bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("suffix", "shape", "dtype"),
    [
        (".png", (5, 7, 3), np.uint8),
        (".png", (5, 7, 3), np.uint16),
        (".png", (5, 7), np.uint16),
        (".png", (5, 7, 4), np.uint16),
        (".tif", (5, 7, 3), np.uint16),
        (".tiff", (5, 7), np.uint8),
        (".bmp", (5, 7, 3), np.uint8),
        (".webp", (5, 7, 4), np.uint8),
    ],
)
def test_round_trip_keeps_pixels_depth_and_channels(
    tmp_path: Path, suffix: str, shape: tuple[int, ...], dtype: type
) -> None:
    image = random_image(shape, dtype)
    path = write_image(tmp_path / f"x{suffix}", image)
    back = read_image(path)
    assert back.dtype == dtype and back.shape == shape
    if suffix == ".webp":  # lossy colour, lossless alpha
        np.testing.assert_array_equal(back[..., 3], image[..., 3])
    else:
        np.testing.assert_array_equal(back, image)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left beside it


def test_gray_with_alpha_is_read_as_two_channels_and_written_as_rgba(tmp_path: Path) -> None:
    gray_alpha = random_image((6, 5, 2))
    Image.fromarray(gray_alpha, mode="LA").save(tmp_path / "la.png")
    back = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(back, gray_alpha)
    write_image(tmp_path / "out.png", back)
    rgba = read_image(tmp_path / "out.png")
    assert rgba.shape == (6, 5, 4)
    np.testing.assert_array_equal(rgba[:, :, 3], gray_alpha[:, :, 1])
    np.testing.assert_array_equal(rgba[:, :, 0], gray_alpha[:, :, 0])


def test_formats_without_16_bits_or_alpha_warn_and_convert(tmp_path: Path) -> None:
    image = random_image((4, 4, 4), np.uint16)
    with pytest.warns(UserWarning) as record:
        write_image(tmp_path / "x.jpg", image)
    messages = " ".join(str(w.message) for w in record)
    assert "8 bits" in messages and "alpha" in messages
    back = read_image(tmp_path / "x.jpg")
    assert back.shape == (4, 4, 3) and back.dtype == np.uint8


def save_with_orientation(path: Path, array: np.ndarray, orientation: int, **options: object) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes(), **options)
    return path


ORIENTED_FORMATS = {  # every readable format that carries EXIF, stored losslessly where it can be
    ".png": {},
    ".webp": {"lossless": True},
    ".tif": {},
    ".jpg": {"quality": 100, "subsampling": 0},
}


@pytest.mark.parametrize("suffix", ORIENTED_FORMATS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_once_in_every_format(tmp_path: Path, suffix: str, orientation: int) -> None:
    stored = np.zeros((4, 6, 3), dtype=np.uint8)
    stored[0, 0], stored[0, 5], stored[3, 0] = (255, 0, 0), (0, 255, 0), (0, 0, 255)  # three marked corners
    stored[1:3, 1:5] = 128
    path = save_with_orientation(tmp_path / f"o{suffix}", stored, orientation, **ORIENTED_FORMATS[suffix])
    assert probe_image(path).orientation == orientation
    expected = apply_orientation(stored, orientation)
    np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(Image.open(path))).shape, expected.shape)
    got = read_image(path)
    assert got.shape == expected.shape  # rotated twice would swap the sides back (orientations 5-8)
    tolerance = 40 if suffix == ".jpg" else 0  # JPEG blurs the marked pixels a little
    assert int(np.abs(got.astype(int) - expected.astype(int)).max()) <= tolerance


def test_cmyk_is_read_as_rgb_without_an_alpha(tmp_path: Path) -> None:
    cmyk = np.zeros((4, 5, 4), dtype=np.uint8)
    cmyk[..., 1] = 255  # magenta ink only
    for suffix in (".tif", ".jpg"):
        Image.fromarray(cmyk, "CMYK").save(tmp_path / f"c{suffix}")
        rgb = read_image(tmp_path / f"c{suffix}")
        assert rgb.shape == (4, 5, 3), suffix
        assert int(np.abs(rgb.astype(int) - [255, 0, 255]).max()) <= 2, suffix


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
def test_images_with_several_frames_are_refused(tmp_path: Path, suffix: str) -> None:
    frames = [Image.fromarray(random_image((8, 8, 3))) for _ in range(3)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(InputImageError, match="with 3 frames") as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_native_decoder_noise_stays_off_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data = bytearray(cv2.imencode(".png", random_image((32, 32, 3)))[1].tobytes())
    at = data.find(b"IDAT")
    data[at + 12 : at + 24] = b"\0" * 12  # libpng reports a CRC error on stderr by itself
    (tmp_path / "crc.png").write_bytes(bytes(data))
    with pytest.raises(InputImageError, match="corrupt or truncated"):
        read_image(tmp_path / "crc.png")
    assert capfd.readouterr().err == ""


def test_opencv_errors_and_memory_errors_become_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.png"
    write_image(path, random_image((4, 4, 3)))

    def fails(*args: object, **kwargs: object) -> None:
        raise cv2.error("OpenCV(5.0.0) /src/loadsave.cpp:1: error: (-215:Assertion failed) size check in function 'x'")

    monkeypatch.setattr(cv2, "imdecode", fails)
    with pytest.raises(InputImageError, match="OpenCV cannot decode") as info:
        read_image(path)
    assert "\n" not in str(info.value)

    def no_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError()

    monkeypatch.setattr(cv2, "imdecode", no_memory)
    with pytest.raises(InputImageError, match="not enough memory"):
        read_image(path)
    monkeypatch.setattr(cv2, "imencode", fails)
    with pytest.raises(ConfigError, match="cannot encode"):
        write_image(tmp_path / "y.png", random_image((4, 4, 3)))
    assert not (tmp_path / "y.png").exists()


@pytest.mark.parametrize(("suffix", "side"), [(".webp", 16383), (".jpg", 65500)])
def test_output_too_large_for_its_format_is_refused_before_encoding(suffix: str, side: int) -> None:
    check_output_size(f"out{suffix}", side, 10)
    with pytest.raises(ConfigError, match=f"{side} pixels a side"):
        check_output_size(f"out{suffix}", side + 1, 10)
    check_output_size("out.png", side + 1, 10)


def test_rotated_jpeg_is_read_upright(tmp_path: Path) -> None:
    stored = np.zeros((16, 32, 3), dtype=np.uint8)
    stored[:, :8] = 255  # a white band on the left of the stored pixels
    path = save_with_orientation(tmp_path / "r.jpg", stored, 6)  # display: rotate 90° clockwise
    upright = read_image(path)
    assert upright.shape == (32, 16, 3)
    assert upright[:8].mean() > 200 and upright[-8:].mean() < 50  # the band is now at the top


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
        (lambda p: p.write_text("hello, I am text"), "not an image file"),
        (lambda p: png_header_only(p, 100000, 100000), r"100000×100000 = 10000000000 pixels is over the limit"),
        (lambda p: png_header_only(p, 0, 10), "no pixels|unreadable image header"),
        (lambda p: p.write_bytes(cv2.imencode(".png", random_image((40, 40, 3)))[1].tobytes()[:300]), "truncated"),
        (lambda p: Image.fromarray(random_image((4, 4, 3))).save(p, format="GIF"), "unsupported image format GIF"),
        (lambda p: png_header_only(p, 64, 64), "truncated"),
    ],
)
def test_bad_files_are_refused_with_one_line(tmp_path: Path, make, match: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(InputImageError, match=match) as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_size_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = write_image(tmp_path / "x.png", random_image((10, 10, 3)))
    assert read_image(path, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(InputImageError, match="over the limit of 99"):
        read_image(path, max_pixels=99)


def test_a_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(InputImageError, match="not a file"):
        read_image(tmp_path)


def test_output_extension_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot write \.gif"):
        check_output_path(tmp_path / "x.gif")
    with pytest.raises(ConfigError, match="without an extension"):
        write_image(tmp_path / "x", random_image((2, 2, 3)))
    assert check_output_path(tmp_path / "X.PNG").name == "PNG"


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"

    def broken_write(self: Path, data: bytes) -> int:
        with self.open("wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", broken_write)
    with pytest.raises(OSError, match="No space"):
        write_image(target, random_image((8, 8, 3)))
    assert list(tmp_path.iterdir()) == []
