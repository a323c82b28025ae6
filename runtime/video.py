"""Videos for ``lightbsr upscale``: decode, upscale and encode with PyAV, pipelined (no torch).

PyAV (``pip install 'lightbsr[video]'``: the ``av`` wheel, which bundles FFmpeg) reads any
container and codec its FFmpeg decodes. :func:`upscale_video` upscales the first video stream
and writes OUT's container (from its extension) with ``codec``:

* kept: every frame's timestamp and duration in the source's time base (variable frame rate
  included), the frame rate, the rotation (display matrix), the sample aspect ratio, the colour
  range, matrix, primaries and transfer; 8-bit sources are upscaled in 8 bits, deeper ones in 16;
* copied without re-encoding: the audio and subtitle streams (other kinds, such as data tracks,
  are left out with a warning). A container that cannot hold the codec or a copied stream is
  refused before any work;
* codecs: ``libx264`` (default), ``libx265``, ``ffv1`` (lossless) or any video encoder of the
  bundled FFmpeg; ``crf`` (:data:`DEFAULT_CRF` by default) for libx264/libx265; the pixel format
  is the source's when the encoder takes it, else 4:2:0 of the source's depth (``pix_fmt``
  overrides). A source without a colour matrix tag is read, like players do, as BT.709 from
  720 lines up and BT.601 below, and the output is tagged with the matrix used.

The degradation estimate follows ``options.idr`` (:mod:`lightbsr.runtime.scenes`): one per
scene by default, scenes cut where the thumbnail histogram jumps.

Three stages run at once with bounded queues (:data:`QUEUE_FRAMES` frames each): a thread
demuxes, decodes, converts to RGB and detects cuts; the calling thread estimates and
restores; a thread converts back, encodes and muxes (the copied packets travel with the
frames, in order). A failure in any stage stops the others. The output is written atomically
(:func:`lightbsr.files.atomic_output`): an error or Ctrl-C leaves nothing, unless
``keep_partial``, which ends the file cleanly after the frames done so far and keeps it.

Bad input is an :class:`~lightbsr.errors.InputVideoError`: a file FFmpeg cannot open (corrupt
or truncated header), no video stream, a codec with no decoder here, no decodable frame, or
fewer frames or seconds than the file declares (truncated). A packet that fails to decode
in the middle is skipped with a warning (``on_corrupt="skip"``) or stops the run (``"stop"``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lightbsr.errors import BackendUnavailableError, ConfigError, InputVideoError, LightBSRWarning
from lightbsr.files import atomic_output
from lightbsr.hardware import available_cpus
from lightbsr.runtime.scenes import DEFAULT_SCENE_THRESHOLD, IDR_MODES, CutDetector, SceneIDR

__all__ = [
    "CODECS",
    "DEFAULT_CODEC",
    "DEFAULT_CRF",
    "ON_CORRUPT",
    "QUEUE_FRAMES",
    "VIDEO_SUFFIXES",
    "VideoHeader",
    "VideoOptions",
    "check_video_output",
    "is_video_path",
    "probe_video",
    "upscale_video",
]

VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg",
    ".flv", ".wmv", ".ogv", ".3gp", ".nut", ".y4m",
)  # fmt: skip
"""File name endings taken as videos (in folders, and for OUT); a single IN file is a video unless it is an image."""

CODECS = ("libx264", "libx265", "ffv1")
"""The encoders documented (any video encoder of the bundled FFmpeg is accepted)."""

DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 18
"""Constant rate factor for libx264/libx265 (FFmpeg's default is 23; 18 is about visually lossless)."""

CRF_CODECS = ("libx264", "libx265")
ON_CORRUPT = ("skip", "stop")
QUEUE_FRAMES = 4
"""Frames each queue between two stages holds."""

_YUV_420 = {8: "yuv420p", 10: "yuv420p10le"}
_MATRICES = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}  # AVColorSpace tag → swscale's SWS_CS_* matrix
_BT709, _BT601 = 1, 6  # AVColorSpace tags for the guessed matrix
_RGB_COLORSPACE = 0
_COPIED_KINDS = ("audio", "subtitle")
_STORED_DURATION = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")  # FFmpeg's names of containers that store it


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s extension is one of :data:`VIDEO_SUFFIXES`."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av() -> Any:
    try:
        import av
    except ImportError as err:
        raise BackendUnavailableError(
            "videos need PyAV, which is not installed: pip install 'lightbsr[video]'"
        ) from err
    return av


def _ffmpeg_message(err: BaseException) -> str:
    """FFmpeg's error without PyAV's ``[Errno N]`` prefix and file name suffix."""
    text = getattr(err, "strerror", None) or str(err)
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(text).strip())
    return " ".join(text.split()) or type(err).__name__


@dataclass(frozen=True)
class VideoOptions:
    """How :func:`upscale_video` encodes and estimates (see the module docstring)."""

    codec: str = DEFAULT_CODEC
    crf: int | None = None
    """None: :data:`DEFAULT_CRF` for libx264/libx265, the encoder's default otherwise."""
    pix_fmt: str | None = None
    """None: the source's format when the encoder takes it, else 4:2:0 of the source's depth."""
    idr: str = "per-scene"
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    on_corrupt: str = "skip"
    keep_partial: bool = False
    max_pixels: int | None = None
    """Refuse frames with more pixels than this (None: no limit)."""

    def __post_init__(self) -> None:
        if self.idr not in IDR_MODES:
            raise ConfigError(f"unknown --idr {self.idr!r}; choose from {', '.join(IDR_MODES)}")
        if self.on_corrupt not in ON_CORRUPT:
            raise ConfigError(f"unknown --on-corrupt {self.on_corrupt!r}; choose from {', '.join(ON_CORRUPT)}")
        if not 0.0 < self.scene_threshold <= 1.0:
            raise ConfigError(f"--scene-threshold is a histogram distance in (0, 1], got {self.scene_threshold}")
        if self.crf is not None:
            if self.codec not in CRF_CODECS:
                raise ConfigError(f"--crf is for {' and '.join(CRF_CODECS)}, not {self.codec}")
            if not 0 <= self.crf <= 51:
                raise ConfigError(f"--crf must be in 0–51, got {self.crf}")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class VideoHeader:
    """What a video file declares about its first video stream."""

    width: int
    height: int
    codec: str
    pix_fmt: str
    bit_depth: int
    frames: int | None
    """Declared frame count, or None when the container does not say."""
    duration: float | None
    """Seconds, or None."""
    rate: Fraction | None


class _Source:
    """An opened input: its first video stream decoding to RGB arrays, and the streams to copy."""

    def __init__(self, path: Path, max_pixels: int | None = None) -> None:
        av = _av()
        self.path = path
        if not path.exists():
            raise InputVideoError(f"{path}: no such file")
        if not path.is_file():
            raise InputVideoError(f"{path}: not a file")
        if path.stat().st_size == 0:
            raise InputVideoError(f"{path}: empty file (0 bytes)")
        try:
            self.container = av.open(str(path), metadata_errors="replace")
        except av.FFmpegError as err:
            raise InputVideoError(
                f"{path}: not a video FFmpeg can read, or corrupt or truncated ({_ffmpeg_message(err)})"
            ) from err
        try:
            self._setup(path, max_pixels)
        except BaseException:
            self.container.close()
            raise

    def _setup(self, path: Path, max_pixels: int | None) -> None:
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams}) or ["none"]
            raise InputVideoError(f"{path}: no video stream (streams: {', '.join(kinds)})")
        self.stream = stream = self.container.streams.video[0]
        context = stream.codec_context
        if context is None:
            raise InputVideoError(
                f"{path}: no decoder for its video codec in this FFmpeg build (PyAV {_av().__version__})"
            )
        context.thread_type = "SLICE"  # frame threads would report a corrupt packet's error on a later one
        context.thread_count = available_cpus()
        self.width, self.height = int(context.width), int(context.height)
        if self.width <= 0 or self.height <= 0:
            raise InputVideoError(f"{path}: the video stream declares no frame size")
        if max_pixels is not None and self.width * self.height > max_pixels:
            raise InputVideoError(
                f"{path}: {self.width}×{self.height} frames are over the limit of {max_pixels} pixels (--max-pixels)"
            )
        self.pix_fmt = context.format.name if context.format is not None else "yuv420p"
        self.bit_depth = max(c.bits for c in context.format.components) if context.format is not None else 8
        self.rgb_format = "rgb24" if self.bit_depth <= 8 else "rgb48le"
        self.rate: Fraction | None = stream.average_rate or stream.guessed_rate or None
        self.time_base: Fraction = stream.time_base or Fraction(1, 90000)
        self.frames = int(stream.frames) or None
        self.duration = self._declared_duration()
        self.rgb_source = self.pix_fmt.startswith(("gbr", "rgb", "bgr"))
        self.colorspace = int(context.colorspace)
        self.matrix_tag = (
            self.colorspace if self.colorspace in _MATRICES else (_BT709 if self.height >= 720 else _BT601)
        )
        self.color_range = int(context.color_range)
        self.copied = [s for s in self.container.streams if s.type in _COPIED_KINDS]
        self.left_out = [s for s in self.container.streams if s is not stream and s.type not in _COPIED_KINDS]

    def _declared_duration(self) -> float | None:
        """The video stream's duration where the container stores it (MP4/MOV, Matroska), not where FFmpeg guesses."""
        stream = self.stream
        if self.container.format.name not in _STORED_DURATION:
            return None
        if stream.duration:
            return float(stream.duration * stream.time_base)
        tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska's per-track tag
        match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag.strip()) if tag else None
        if match:
            hours, minutes, seconds = match.groups()
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        return None

    @property
    def header(self) -> VideoHeader:
        return VideoHeader(
            self.width, self.height, self.stream.codec_context.name, self.pix_fmt, self.bit_depth,
            self.frames, self.duration, self.rate,
        )  # fmt: skip

    def to_rgb(self, frame: Any) -> np.ndarray:
        """A decoded frame as ``(H, W, 3)`` RGB, uint8 (8-bit sources) or uint16, in the stream's colour matrix."""
        kwargs: dict[str, Any] = {"format": self.rgb_format}
        if not self.rgb_source:
            kwargs |= {"src_colorspace": _MATRICES[self.matrix_tag], "src_color_range": int(frame.color_range)}
        return np.ascontiguousarray(frame.reformat(**kwargs).to_ndarray())

    def packets(self) -> Iterator[Any]:
        """The packets of the video stream and of the copied streams, in file order."""
        av = _av()
        try:
            yield from self.container.demux(self.stream, *self.copied)
        except av.FFmpegError as err:
            raise InputVideoError(f"{self.path}: corrupt or truncated ({_ffmpeg_message(err)})") from err

    def close(self) -> None:
        self.container.close()


def probe_video(path: str | os.PathLike[str], max_pixels: int | None = None) -> VideoHeader:
    """Open a video file and return what it declares; every problem is an :class:`InputVideoError`."""
    source = _Source(Path(path), max_pixels)
    try:
        return source.header
    finally:
        source.close()


# --------------------------------------------------------------------------- writing


class _Sink:
    """An output container (opened lazily by PyAV: nothing is written before the first packet)."""

    def __init__(self, path: Path, source: _Source, options: VideoOptions, scale: int, name: str) -> None:
        av = _av()
        self.name = name  # of the output, in messages (``path`` may be a temporary beside it)
        try:
            self.container = av.open(str(path), "w")
        except ValueError as err:
            raise ConfigError(
                f"{name}: cannot tell the video container from the extension {path.suffix or '(none)'!r}; "
                f"use one of {', '.join(VIDEO_SUFFIXES)}"
            ) from err
        try:
            self._setup(source, options, scale)
        except BaseException:
            self.close()
            raise

    def _setup(self, source: _Source, options: VideoOptions, scale: int) -> None:
        av = _av()
        fmt = self.container.format.name
        try:
            encoder = av.codec.Codec(options.codec, "w")
        except av.codec.codec.UnknownCodecError as err:
            raise ConfigError(f"no {options.codec!r} encoder in this FFmpeg build; e.g. {', '.join(CODECS)}") from err
        if encoder.type != "video":
            raise ConfigError(f"{options.codec} is an {encoder.type} encoder, not a video one")
        formats = [f.name for f in encoder.video_formats or ()]
        pix_fmt = options.pix_fmt or _default_pix_fmt(source, formats)
        if formats and pix_fmt not in formats:
            raise ConfigError(f"{options.codec} does not take pixel format {pix_fmt}; it takes {', '.join(formats)}")
        rate = source.rate or Fraction(25)
        try:
            stream = self.container.add_stream(options.codec, rate=rate)
        except ValueError as err:
            raise ConfigError(
                f"{self.name}: the {fmt} container cannot hold {options.codec} video; "
                "choose another --codec or output extension (.mkv holds most)"
            ) from err
        self.stream = stream
        context = stream.codec_context
        stream.width, stream.height = source.width * scale, source.height * scale
        stream.pix_fmt = pix_fmt
        # The encoder works in the source's time base; the muxer may pick another for the stream when it
        # writes the header (MP4: 1/16000 and the like), and packets are rescaled to it.
        self.time_base = stream.time_base = context.time_base = source.time_base
        context.framerate = rate
        if source.stream.sample_aspect_ratio:
            context.sample_aspect_ratio = source.stream.sample_aspect_ratio
        self.rgb_output = pix_fmt.startswith(("gbr", "rgb", "bgr"))
        src = source.stream.codec_context
        context.color_primaries, context.color_trc = src.color_primaries, src.color_trc
        if self.rgb_output:
            context.colorspace = _RGB_COLORSPACE
        else:
            context.colorspace, context.color_range = source.matrix_tag, source.color_range
        self.matrix = _MATRICES.get(source.matrix_tag, 5)
        self.color_range = source.color_range
        context.thread_type = "AUTO"
        context.thread_count = available_cpus()
        codec_options = {}
        if options.codec in CRF_CODECS:
            codec_options["crf"] = str(options.crf if options.crf is not None else DEFAULT_CRF)
        if options.codec == "libx265":
            codec_options["x265-params"] = "log-level=error"
        context.options = codec_options
        self.pix_fmt, self.rgb_format = pix_fmt, source.rgb_format
        self.copies: dict[int, Any] = {}
        for template in source.copied:
            try:
                copy = self.container.add_stream_from_template(template)
            except (ValueError, av.FFmpegError) as err:
                name = template.codec_context.name if template.codec_context else "unknown"
                raise ConfigError(
                    f"{self.name}: the {fmt} container cannot hold the {template.type} stream "
                    f"#{template.index} ({name}); use another output extension (.mkv holds most)"
                ) from err
            copy.time_base = template.time_base
            self.copies[template.index] = copy
        self.frames = 0
        self._durations: dict[int, int] = {}  # pts → duration of the frames in the encoder
        self._pending: list[Any] | None = []  # copied packets that arrive before the first frame (see copy)

    def write(self, rgb: np.ndarray, pts: int, duration: int | None, display_matrix: list[int] | None) -> None:
        av = _av()
        if self.frames == 0 and display_matrix is not None:
            self.stream.set_display_matrix(display_matrix)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=self.rgb_format)
        if self.rgb_output:
            frame = frame.reformat(format=self.pix_fmt)
        else:
            frame = frame.reformat(
                format=self.pix_fmt, dst_colorspace=self.matrix, dst_color_range=self.color_range or None
            )
        frame.pts, frame.time_base = pts, self.time_base
        if duration:
            self._durations[pts] = duration
        self._mux(self.stream.encode(frame))
        self.frames += 1
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._mux(pending)

    def copy(self, packet: Any) -> None:
        if packet.dts is None and packet.pts is None:
            return  # a demuxer's end-of-stream marker
        packet.stream = self.copies[packet.stream_index]
        if self._pending is not None:  # the header, written with the first packet, must wait for the display matrix
            self._pending.append(packet)
        else:
            self._mux([packet])

    def finish(self) -> None:
        """Flush the encoder (the trailer is written by :meth:`close`)."""
        self._mux(self.stream.encode(None))
        if self._pending:
            raise InputVideoError("no video frame was encoded")

    def _mux(self, packets: list[Any]) -> None:
        av = _av()
        for packet in packets:
            if packet.stream is self.stream and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)  # encoders keep pts, not always durations
        try:
            self.container.mux(packets)
        except av.FFmpegError as err:
            raise ConfigError(
                f"{self.name}: the {self.container.format.name} muxer refused ({_ffmpeg_message(err)})"
            ) from err

    def close(self) -> None:
        self.container.close()


def _default_pix_fmt(source: _Source, formats: list[str]) -> str:
    own = source.pix_fmt
    if (not formats or own in formats) and not own.startswith("yuvj"):  # yuvj*: deprecated, the range is a tag
        return own
    depth = 8 if source.bit_depth <= 8 else 10
    wanted = own.replace("yuvj", "yuv") if own.startswith("yuvj") else _YUV_420[depth]
    for candidate in (wanted, _YUV_420[depth], _YUV_420[8]):
        if not formats or candidate in formats:
            return candidate
    return formats[0]


def check_video_output(
    source: str | os.PathLike[str], target: str | os.PathLike[str], options: VideoOptions, scale: int = 4
) -> VideoHeader:
    """Check a video job before any work: the source opens and decodes, OUT's container takes the codec and streams.

    Writes nothing (PyAV creates the file on the first packet). Returns the source's header.
    """
    src = _Source(Path(source), options.max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _Sink(Path(target), src, options, scale, str(target)).close()
        return src.header
    finally:
        src.close()


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _Frame:
    index: int
    rgb: np.ndarray
    pts: int
    duration: int | None
    seconds: float
    cut: bool
    distance: float
    display_matrix: list[int] | None = None


@dataclass
class _Failure:
    error: BaseException


_END = object()


@dataclass
class _Clock:
    """Busy seconds per stage (each stage runs in one thread, so no lock is needed)."""

    decode: float = 0.0
    estimate: float = 0.0
    restore: float = 0.0
    encode: float = 0.0

    @contextlib.contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, stage, getattr(self, stage) + time.perf_counter() - start)


@dataclass
class _Stats:
    frames: int = 0
    skipped: list[float] = field(default_factory=list)
    """Times (s) of the frames skipped as corrupt."""
    last_end: float | None = None
    within: float = 0.0
    """The largest histogram distance between consecutive frames that did not start a scene."""


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _END


def _decode(
    source: _Source, options: VideoOptions, out: queue.Queue[Any], stop: threading.Event, clock: _Clock, stats: _Stats
) -> None:
    """The decoding thread: frames (with their cut decision) and packets to copy, in order, then :data:`_END`."""
    av = _av()
    detector = CutDetector(options.scene_threshold)
    start_time = source.stream.start_time or 0
    tb = source.time_base
    last_pts: int | None = None
    step = max(1, round(1 / (source.rate * tb))) if source.rate else 1  # one frame, for frames without a timestamp
    try:
        for packet in source.packets():
            if stop.is_set():
                return
            if packet.stream_index != source.stream.index:
                if not _put(out, packet, stop):
                    return
                continue
            with clock.timing("decode"):
                try:
                    frames = packet.decode()
                except av.FFmpegError as err:
                    where = float((packet.pts or 0) * tb) if packet.pts is not None else None
                    message = f"a corrupt video packet at {where:.3f} s" if where is not None else "a corrupt packet"
                    if options.on_corrupt == "stop":
                        raise InputVideoError(
                            f"{source.path}: {message} ({_ffmpeg_message(err)}); --on-corrupt skip passes over it"
                        ) from err
                    stats.skipped.append(where if where is not None else -1.0)
                    warnings.warn(
                        f"{source.path.name}: skipped {message} ({_ffmpeg_message(err)})", LightBSRWarning, stacklevel=1
                    )
                    continue
                items = []
                for frame in frames:
                    pts = frame.pts if frame.pts is not None else (last_pts + step if last_pts is not None else 0)
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # encoders need increasing timestamps; a broken file may repeat one
                    last_pts = pts
                    duration = int(frame.duration) if frame.duration else None
                    seconds = float((pts - start_time) * tb)
                    end = seconds + float(duration * tb) if duration else seconds
                    stats.last_end = end if stats.last_end is None else max(stats.last_end, end)
                    rgb = source.to_rgb(frame)
                    cut, distance = detector(rgb)
                    if not cut:
                        stats.within = max(stats.within, distance)
                    matrix = None
                    if stats.frames == 0:
                        side = frame.side_data.get("DISPLAYMATRIX")
                        matrix = np.frombuffer(bytes(side), dtype=np.int32).tolist() if side is not None else None
                    items.append(_Frame(stats.frames, rgb, pts, duration, seconds, cut, distance, matrix))
                    stats.frames += 1
            for item in items:
                if not _put(out, item, stop):
                    return
        _check_complete(source, stats)
        _put(out, _END, stop)
    except BaseException as err:  # handed to the calling thread, which raises it
        _put(out, _Failure(err), stop)


def _check_complete(source: _Source, stats: _Stats) -> None:
    """A file whose frames fall short of everything it declares (frame count, duration) is truncated.

    Short of one only is not enough: an MP4 edit list, for one, shows fewer frames than it stores.
    """
    if stats.frames == 0:
        raise InputVideoError(f"{source.path}: no decodable video frame (corrupt or truncated file)")
    seen = stats.frames + len(stats.skipped)
    interval = float(1 / source.rate) if source.rate else 0.04
    shortfalls = []
    if source.frames is not None:
        shortfalls.append((seen < source.frames, f"{seen} of the {source.frames} frames it declares could be read"))
    if source.duration is not None and stats.last_end is not None:
        short = stats.last_end < source.duration - 2 * interval - 1e-3
        shortfalls.append((short, f"its frames end at {stats.last_end:.3f} s of the {source.duration:.3f} s declared"))
    if shortfalls and all(short for short, _ in shortfalls):
        raise InputVideoError(f"{source.path}: corrupt or truncated: {'; '.join(text for _, text in shortfalls)}")


def _encode(
    sink: _Sink, inbox: queue.Queue[Any], stop: threading.Event, clock: _Clock, failure: list[BaseException]
) -> None:
    """The encoding thread: upscaled frames and copied packets into the output; flushes at :data:`_END`."""
    try:
        while True:
            item = _get(inbox, stop)
            if item is _END:
                if not stop.is_set():
                    with clock.timing("encode"):
                        sink.finish()
                return
            with clock.timing("encode"):
                if isinstance(item, _Frame):
                    sink.write(item.rgb, item.pts, item.duration, item.display_matrix)
                else:
                    sink.copy(item)
    except BaseException as err:
        failure.append(err)
        stop.set()


def upscale_video(
    upscaler: Any,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    options: VideoOptions | None = None,
    *,
    progress: bool = True,
    on_frame: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Upscale the video ``source`` into ``target`` with ``upscaler`` (a :class:`~lightbsr.runtime.Upscaler`).

    Returns a record for ``--json`` / ``--report``: sizes, frames, scenes, busy seconds per stage.
    ``on_frame`` is called with each frame's index once it is restored (progress hooks, tests).
    Raises KeyboardInterrupt after keeping the partial output when ``options.keep_partial``.
    """
    from tqdm import tqdm

    options = options or VideoOptions()
    source_path, target_path = Path(source), Path(target)
    src = _Source(source_path, options.max_pixels)
    try:
        for stream in src.left_out:
            warnings.warn(
                f"{source_path.name}: the {stream.type} stream #{stream.index} is not copied",
                LightBSRWarning,
                stacklevel=2,
            )
        policy = SceneIDR(options.idr, upscaler.estimate_image if upscaler.backend.can_split else None)
        start = time.perf_counter()
        total = src.frames or (round(src.duration * src.rate) if src.duration and src.rate else None)
        bar = tqdm(
            total=total,
            desc=source_path.name,
            unit="frame",
            file=sys.stderr,
            disable=None if progress else True,
            leave=False,
        )
        try:
            with atomic_output(target_path) as tmp:
                job = _Job(upscaler, src, _Sink(tmp, src, options, upscaler.scale, str(target_path)), options, policy)
                try:
                    interrupted = _run(job, bar, on_frame)
                except BaseException:
                    with contextlib.suppress(Exception):  # the error that stopped the run is the one to tell
                        job.sink.close()
                    raise
                job.sink.close()  # writes the trailer
        finally:
            bar.close()
        record = _record(job, time.perf_counter() - start)
        if interrupted:
            record["interrupted"] = True
            warnings.warn(
                f"interrupted: kept the first {job.sink.frames} frames in {target_path} (--keep-partial)",
                LightBSRWarning,
                stacklevel=2,
            )
            raise KeyboardInterrupt
        return record
    finally:
        src.close()


@dataclass
class _Job:
    """One video being upscaled: what runs it, and what it measures."""

    upscaler: Any
    src: _Source
    sink: _Sink
    options: VideoOptions
    policy: SceneIDR
    clock: _Clock = field(default_factory=_Clock)
    stats: _Stats = field(default_factory=_Stats)


def _run(job: _Job, bar: Any, on_frame: Callable[[int], None] | None) -> bool:
    """Run the three stages; whether it was interrupted with ``keep_partial`` (the output then ends cleanly)."""
    upscaler, src, sink, options, policy, clock, stats = (
        job.upscaler, job.src, job.sink, job.options, job.policy, job.clock, job.stats
    )  # fmt: skip
    decoded: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)
    restored: queue.Queue[Any] = queue.Queue(QUEUE_FRAMES)
    stop_decode, stop_encode = threading.Event(), threading.Event()
    failure: list[BaseException] = []
    decoder = threading.Thread(
        target=_decode, args=(src, options, decoded, stop_decode, clock, stats), name="lightbsr-decode", daemon=True
    )
    encoder = threading.Thread(
        target=_encode, args=(sink, restored, stop_encode, clock, failure), name="lightbsr-encode", daemon=True
    )
    decoder.start()
    encoder.start()
    finished = False
    try:
        while True:
            item = _get(decoded, stop_encode)
            if failure:
                raise failure[0]
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.error
            if isinstance(item, _Frame):
                item.rgb = _restore(upscaler, policy, item, clock)
                if on_frame is not None:
                    on_frame(item.index)
                bar.update(1)
            if not _put(restored, item, stop_encode):
                raise failure[0] if failure else RuntimeError("the encoding thread stopped")
        _put(restored, _END, stop_encode)
        encoder.join()
        if failure:
            raise failure[0]
        finished = True
        return False
    except KeyboardInterrupt:
        if not options.keep_partial:
            raise
        stop_decode.set()
        _put(restored, _END, stop_encode)  # encode what was restored, then flush
        encoder.join()
        if failure:
            raise failure[0] from None
        finished = True
        return True
    finally:
        stop_decode.set()
        if not finished:
            stop_encode.set()
        decoder.join(timeout=10)
        encoder.join(timeout=10)


def _restore(upscaler: Any, policy: SceneIDR, frame: _Frame, clock: _Clock) -> np.ndarray:
    """Estimate (as the policy says) and restore one frame; with a full graph only, restoring includes estimating."""
    with clock.timing("estimate"):
        idr = policy.next(frame.rgb, frame.index, frame.seconds, frame.cut, frame.distance)
    with clock.timing("restore"):
        return upscaler.upscale(frame.rgb, idr=idr)


def _record(job: _Job, seconds: float) -> dict[str, Any]:
    src, sink, options, policy, clock, stats = job.src, job.sink, job.options, job.policy, job.clock, job.stats
    busy = {"decode": clock.decode, "estimate": clock.estimate, "restore": clock.restore, "encode": clock.encode}
    total_busy = sum(busy.values()) or 1.0
    scenes = [
        {"start": s.start, "end": s.end, "time": round(s.time, 6), "cut_distance": round(s.cut_distance, 4)}
        for s in policy.scenes
    ]
    return {
        "kind": "video",
        "input_size": [src.width, src.height],
        "output_size": [sink.stream.width, sink.stream.height],
        "codec": sink.stream.codec_context.name,
        "pix_fmt": sink.pix_fmt,
        "bit_depth": 16 if src.rgb_format == "rgb48le" else 8,
        "frames": sink.frames,
        "skipped_frames": len(stats.skipped),
        "copied_streams": [f"{s.type}:{s.codec_context.name if s.codec_context else '?'}" for s in src.copied],
        "idr": options.idr,
        "scene_threshold": options.scene_threshold,
        "scenes": scenes,
        "estimates": policy.estimates if policy.estimate is not None else sink.frames,
        "largest_distance_within_scenes": round(stats.within, 4),
        "seconds": round(seconds, 3),
        "fps": round(sink.frames / seconds, 3) if seconds > 0 else None,
        "busy_seconds": {k: round(v, 3) for k, v in busy.items()},
        "busy_share": {k: round(v / total_busy, 4) for k, v in busy.items()},
    }
