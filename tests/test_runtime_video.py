"""`lightbsr upscale` on videos: what is kept, codecs, per-scene estimates, the pipeline, Ctrl-C and bad input.

Clips are tiny (32×32 or smaller, a few frames) and made here with PyAV; the model is the reference-weight
LightBSR cut to one block (tests/export_fixtures.py: ``tiny_reference_onnx``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av", reason="needs PyAV: pip install 'lightbsr[video]' (the [dev] extra has it)")

from cli_errors import one_error_line  # noqa: E402

from lightbsr.cli import main  # noqa: E402
from lightbsr.errors import BackendUnavailableError, ConfigError, InputVideoError  # noqa: E402
from lightbsr.runtime import (  # noqa: E402
    Upscaler,
    scenes,
    video,
)
from lightbsr.runtime import cli as runtime_cli  # noqa: E402
from lightbsr.runtime.scenes import merge_idr  # noqa: E402

TRAIN = Path(__file__).parent / "data" / "train"
TB = Fraction(1, 1000)


# --------------------------------------------------------------------------- clips


def crop_pan(name: str, frames: int, size: int = 32, step: int = 2) -> list[np.ndarray]:
    image = np.ascontiguousarray(cv2.imread(str(TRAIN / f"{name}_crop.png"))[:, :, ::-1])
    return [np.ascontiguousarray(image[i * step : i * step + size, i * step : i * step + size]) for i in range(frames)]


def make_clip(
    path: Path,
    frames: list[np.ndarray],
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: list[int] | None = None,
    audio: bool = False,
    subtitle: str | None = None,
    rotation: int | None = None,
    color_range: int | None = None,
    corrupt: tuple[int, ...] = (),
    options: dict[str, str] | None = None,
    gop: int | None = None,
) -> Path:
    """Encode RGB ``frames`` (uint8, or uint16 for 16-bit RGB input) with timestamps ``pts`` in ms."""
    pts = pts if pts is not None else [40 * i for i in range(len(frames))]
    out = av.open(str(path), "w", options=options or {})
    stream = out.add_stream(codec, rate=25)
    stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
    stream.pix_fmt = pix_fmt
    stream.time_base = stream.codec_context.time_base = TB
    if gop is not None:
        stream.codec_context.gop_size = gop
    if color_range is not None:
        stream.codec_context.color_range = color_range
    if rotation is not None:
        stream.set_display_rotation(rotation)
    sound = out.add_stream("aac", rate=8000) if audio else None
    if sound is not None:
        sound.layout = "mono"
    text = out.add_mux_stream(subtitle) if subtitle else None
    if text is not None:
        text.time_base = TB
    packets = []
    for frame_pts, rgb in zip(pts, frames, strict=True):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24" if rgb.dtype == np.uint8 else "rgb48le")
        frame = frame.reformat(format=pix_fmt, dst_color_range=color_range)
        frame.pts, frame.time_base, frame.duration = frame_pts, TB, 40
        packets += stream.encode(frame)
    packets += stream.encode(None)
    for index, packet in enumerate(packets):
        if index in corrupt:
            bad = av.Packet(bytes(np.random.default_rng(index).integers(0, 255, packet.size, dtype=np.uint8)))
            bad.pts, bad.dts, bad.time_base, bad.stream = packet.pts, packet.dts, packet.time_base, stream
            packet = bad
        out.mux(packet)
    if sound is not None:
        samples = 0
        for i in range(4 * len(frames)):  # 4 × 1024 samples at 8 kHz ≈ 0.5 s per frame... more than the video
            chunk = av.AudioFrame.from_ndarray(
                np.sin(np.arange(1024, dtype=np.float32)[None] * (0.05 + 0.01 * i)), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 8000, samples
            samples += 1024
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    if text is not None:
        packet = av.Packet(b"a subtitle")
        packet.pts, packet.dts, packet.duration, packet.time_base, packet.stream = 0, 0, 80, TB, text
        out.mux(packet)
    out.close()
    return path


def decode(path: Path) -> dict[str, Any]:
    """What a player would see: frames (RGB) with times and durations, rotation, and the other streams' packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        info = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.format.name,
            "size": (stream.codec_context.width, stream.codec_context.height),
            "rgb": [f.to_ndarray(format="rgb24" if "10" not in f.format.name else "rgb48le") for f in frames],
            "times": [f.pts * f.time_base for f in frames],
            "durations": [f.duration * f.time_base for f in frames],
            "rotation": frames[0].rotation,
            "color_range": int(frames[0].color_range),
            "kinds": [s.type for s in container.streams],
        }
    for kind in ("audio", "subtitle"):
        with av.open(str(path)) as container:
            streams = [s for s in container.streams if s.type == kind]
            if streams:
                info[kind] = [(p.pts * p.time_base, bytes(p)) for p in container.demux(streams[0]) if p.size]
    return info


@pytest.fixture(scope="module")
def model(tiny_reference_onnx: Path) -> Path:
    return tiny_reference_onnx


@pytest.fixture(scope="module")
def upscaler(model: Path) -> Upscaler:
    return Upscaler(model, device="cpu", tile=0)


def upscale(*args: str | Path) -> int:
    return main(["upscale", *map(str, args)])


# --------------------------------------------------------------------------- what is kept


def test_the_bundled_ffmpeg_has_the_documented_encoders() -> None:
    for codec in video.CODECS:
        assert av.codec.Codec(codec, "w").type == "video", codec


def test_mp4_with_audio_plays_at_4x_with_the_same_timing(tmp_path: Path, model: Path) -> None:
    """The issue's acceptance: size, frame count, (variable) timestamps, duration, rotation, range, audio intact."""
    frames = crop_pan("abbey", 6)
    source = make_clip(
        tmp_path / "clip.mp4", frames, pts=[0, 40, 80, 200, 240, 300], audio=True, rotation=90, color_range=2
    )
    target = tmp_path / "clip_x4.mp4"
    assert upscale("-i", source, "-o", target, "-m", model) == 0
    before, after = decode(source), decode(target)
    assert after["size"] == (128, 128) and after["codec"] == "h264"
    assert len(after["rgb"]) == 6 and after["rgb"][0].shape == (128, 128, 3)
    assert after["times"] == before["times"] == [Fraction(t, 1000) for t in (0, 40, 80, 200, 240, 300)]
    assert after["durations"] == before["durations"]
    assert after["rotation"] == before["rotation"] == 90
    assert after["color_range"] == before["color_range"] == 2
    assert after["kinds"] == ["video", "audio"]
    assert after["audio"] == before["audio"] and len(before["audio"]) > 10  # the same packets, not re-encoded
    with av.open(str(source)) as a, av.open(str(target)) as b:
        duration = [c.streams.video[0].duration * c.streams.video[0].time_base for c in (a, b)]
        assert duration[0] == duration[1] > Fraction(300, 1000)
        assert a.streams.video[0].time_base == b.streams.video[0].time_base
        assert a.streams.video[0].average_rate == b.streams.video[0].average_rate
        assert a.duration == b.duration


@pytest.mark.parametrize(("source_suffix", "target_suffix"), [(".mkv", ".mp4"), (".mp4", ".mkv"), (".mp4", ".mov")])
def test_timestamps_survive_a_change_of_container(
    source_suffix: str, target_suffix: str, tmp_path: Path, upscaler: Upscaler
) -> None:
    """Containers keep time in different units (Matroska 1/1000 s, MP4 its own): the times stay the same.

    One exception, FFmpeg's: an MP4's AAC starts before 0 (its priming samples) and Matroska stores no negative
    time, so every stream is shifted by the same amount; audio and video stay in sync.
    """
    pts = [0, 42, 83, 125, 250]
    source = make_clip(tmp_path / f"in{source_suffix}", crop_pan("islet", 5, size=16), pts=pts, audio=True)
    target = tmp_path / f"out{target_suffix}"
    video.upscale_video(upscaler, source, target, progress=False)
    before, after = decode(source), decode(target)
    assert before["times"] == [Fraction(t, 1000) for t in pts]
    shift = after["audio"][0][0] - before["audio"][0][0]
    assert shift == (Fraction(1024, 8000) if target_suffix == ".mkv" else 0)
    assert after["times"] == [t + shift for t in before["times"]]
    assert [p for _, p in after["audio"]] == [p for _, p in before["audio"]]
    assert [t for t, _ in after["audio"]] == [t + shift for t, _ in before["audio"]]


def test_subtitles_are_copied_and_a_container_that_cannot_hold_them_is_refused(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_clip(tmp_path / "subs.mkv", crop_pan("cliff", 3), codec="ffv1", subtitle="subrip")
    assert upscale("-i", source, "-o", tmp_path / "out.mkv", "-m", model) == 0
    assert decode(tmp_path / "out.mkv")["subtitle"] == decode(source)["subtitle"] == [(0, b"a subtitle")]
    assert upscale("-i", source, "-o", tmp_path / "out.mp4", "-m", model) == 2
    error = one_error_line(capsys.readouterr().err, allow_warnings=True)
    assert "the mp4 container cannot hold the subtitle stream #1" in error
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(("codec", "decoded_as"), [("libx264", "h264"), ("libx265", "hevc"), ("ffv1", "ffv1")])
def test_codecs(codec: str, decoded_as: str, tmp_path: Path, model: Path) -> None:
    source = make_clip(tmp_path / "in.mkv", crop_pan("islet", 3, size=16), codec="ffv1")
    target = tmp_path / "out.mkv"
    crf = ["--crf", "20"] if codec != "ffv1" else []
    assert upscale("-i", source, "-o", target, "-m", model, "--codec", codec, *crf) == 0
    out = decode(target)
    assert out["codec"] == decoded_as and out["size"] == (64, 64) and len(out["rgb"]) == 3


def test_ten_bit_sources_stay_ten_bit(tmp_path: Path, model: Path, upscaler: Upscaler) -> None:
    frames = [(f.astype(np.uint16) * 257) for f in crop_pan("street", 3, size=16)]
    source = make_clip(tmp_path / "deep.mkv", frames, codec="ffv1", pix_fmt="yuv420p10le")
    target = tmp_path / "deep_x4.mkv"
    record = video.upscale_video(upscaler, source, target, video.VideoOptions(), progress=False)
    assert record["bit_depth"] == 16 and record["pix_fmt"] == "yuv420p10le"
    out = decode(target)
    assert out["pix_fmt"] == "yuv420p10le" and out["codec"] == "h264"
    assert out["rgb"][0].dtype == np.uint16 and out["rgb"][0].shape == (64, 64, 3)


def test_lossless_output_is_the_upscalers_output(tmp_path: Path, upscaler: Upscaler) -> None:
    """RGB in and out (ffv1 bgr0): the frames written are exactly Upscaler.upscale of the frames read."""
    frames = crop_pan("abbey", 4, size=24)
    source = make_clip(tmp_path / "rgb.mkv", frames, codec="ffv1", pix_fmt="bgr0")
    options = video.VideoOptions(codec="ffv1", pix_fmt="bgr0", idr="per-frame")
    video.upscale_video(upscaler, source, tmp_path / "out.mkv", options, progress=False)
    out = decode(tmp_path / "out.mkv")
    assert len(out["rgb"]) == 4
    for frame, written in zip(frames, out["rgb"], strict=True):
        np.testing.assert_array_equal(written, upscaler.upscale(frame))


# --------------------------------------------------------------------------- one estimate per scene


def two_scene_clip(path: Path) -> tuple[Path, list[np.ndarray]]:
    frames = crop_pan("abbey", 4, size=24) + crop_pan("islet", 3, size=24)
    return make_clip(path, frames, codec="ffv1", pix_fmt="bgr0"), frames


@pytest.mark.parametrize("mode", ["per-scene", "fixed", "per-frame"])
@pytest.mark.parametrize("family", ["lightbsr", "kdsr"])
def test_each_frame_is_restored_with_its_scenes_estimate(
    mode: str, family: str, tmp_path: Path, upscaler: Upscaler, tiny_kdsr_onnx: Path
) -> None:
    """Every written frame is exactly the frame restored with its scene's IDR (and its own per-pixel map)."""
    up = upscaler if family == "lightbsr" else Upscaler(tiny_kdsr_onnx, device="cpu", tile=0)
    source, frames = two_scene_clip(tmp_path / "two.mkv")
    options = video.VideoOptions(codec="ffv1", pix_fmt="bgr0", idr=mode)
    record = video.upscale_video(up, source, tmp_path / "out.mkv", options, progress=False)
    assert [(s["start"], s["end"]) for s in record["scenes"]] == [(0, 3), (4, 6)]
    assert record["scenes"][1]["time"] == pytest.approx(0.16)
    keyframe = {"per-scene": [0, 0, 0, 0, 4, 4, 4], "fixed": [0] * 7, "per-frame": list(range(7))}[mode]
    # LightBSR's per-pixel IDR is estimated on every frame; KDSR's global one only on the frames it comes from
    assert record["estimates"] == (7 if family == "lightbsr" else len(set(keyframe)))
    written = decode(tmp_path / "out.mkv")["rgb"]
    for index, frame in enumerate(frames):
        idr = merge_idr(up.estimate_image(frames[keyframe[index]]), up.estimate_image(frame))
        np.testing.assert_array_equal(written[index], up.upscale(frame, idr=idr))
    if family == "kdsr" and mode != "per-frame":  # the shared estimate is not the frame's own, and that shows
        assert np.abs(written[5].astype(int) - up.upscale(frames[5])).mean() > 0.1


def test_report_sidecar_and_json(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, _ = two_scene_clip(tmp_path / "two.mkv")
    target = tmp_path / "out.mp4"
    assert upscale("-i", source, "-o", target, "-m", model, "--json", "--report", tmp_path / "r.json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "r.json").read_text()) == printed
    record = printed["images"][0]
    assert record["status"] == "ok" and record["frames"] == 7 and record["idr"] == "per-scene"
    assert [s["start"] for s in record["scenes"]] == [0, 4]
    assert set(record["busy_seconds"]) == {"decode", "estimate", "restore", "encode"}
    assert record["fps"] > 0 and record["pix_fmt"] == "yuv420p"  # bgr0 is not a libx264 format: 4:2:0 instead


def test_text_output_names_frames_and_scenes(tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, _ = two_scene_clip(tmp_path / "two.mkv")
    assert upscale("-i", source, "-o", tmp_path / "x4.mkv", "-m", model, "--scene-threshold", "1") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {tmp_path / 'x4.mkv'} (24×24 → 96×96, 7 frames, 1 scene, ") and "frames/s" in line


def test_a_folder_mixes_images_and_videos(tmp_path: Path, model: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "clip.mp4", crop_pan("cliff", 2, size=16))
    cv2.imwrite(str(folder / "still.png"), crop_pan("cliff", 1, size=12)[0])
    (folder / "notes.txt").write_text("not a video")
    assert upscale("-i", folder, "-o", tmp_path / "out", "-m", model) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4", "still.png"]
    assert decode(tmp_path / "out" / "clip.mp4")["size"] == (64, 64)
    assert cv2.imread(str(tmp_path / "out" / "still.png")).shape == (48, 48, 3)


# --------------------------------------------------------------------------- the pipeline: failures and Ctrl-C


def interrupt_at(index: int) -> Callable[[int], None]:
    def on_frame(done: int) -> None:
        if done == index:
            raise KeyboardInterrupt

    return on_frame


def test_ctrl_c_removes_the_partial_output(tmp_path: Path, upscaler: Upscaler) -> None:
    source = make_clip(tmp_path / "in.mp4", crop_pan("abbey", 6, size=16), audio=True)
    with pytest.raises(KeyboardInterrupt):
        video.upscale_video(upscaler, source, tmp_path / "out.mp4", progress=False, on_frame=interrupt_at(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_ctrl_c_with_keep_partial_ends_a_valid_shorter_file(tmp_path: Path, upscaler: Upscaler) -> None:
    source = make_clip(tmp_path / "in.mp4", crop_pan("abbey", 6, size=16), audio=True)
    options = video.VideoOptions(keep_partial=True)
    with pytest.warns(RuntimeWarning, match="kept the first 3 frames"), pytest.raises(KeyboardInterrupt):
        video.upscale_video(upscaler, source, tmp_path / "out.mp4", options, progress=False, on_frame=interrupt_at(3))
    out = decode(tmp_path / "out.mp4")
    assert len(out["rgb"]) == 3 and out["times"] == [0, Fraction(40, 1000), Fraction(80, 1000)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_ctrl_c_in_the_command_exits_130(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_clip(tmp_path / "in.mp4", crop_pan("abbey", 3, size=16))

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(Upscaler, "upscale", interrupted)
    assert upscale("-i", source, "-o", tmp_path / "out.mp4", "-m", model) == 130
    assert "lightbsr: interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_an_encoder_failure_stops_the_pipeline(
    tmp_path: Path, upscaler: Upscaler, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_clip(tmp_path / "in.mp4", crop_pan("abbey", 6, size=16))

    def broken(self: Any, *args: Any) -> None:
        raise ConfigError("the encoder broke")

    monkeypatch.setattr(video._Sink, "write", broken)
    with pytest.raises(ConfigError, match="the encoder broke"):
        video.upscale_video(upscaler, source, tmp_path / "out.mp4", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# --------------------------------------------------------------------------- bad input: one line, exit 2, no output


def _truncate(path: Path, share: float, **clip: Any) -> None:
    make_clip(path, crop_pan("abbey", 8, size=16), **clip)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])


def _audio_only(path: Path) -> None:
    out = av.open(str(path), "w")
    sound = out.add_stream("aac", rate=8000)
    chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    chunk.sample_rate, chunk.pts = 8000, 0
    out.mux(sound.encode(chunk))
    out.mux(sound.encode(None))
    out.close()


def _unknown_codec(path: Path) -> None:
    make_clip(path.with_suffix(".tmp.mkv"), crop_pan("abbey", 2, size=16), codec="ffv1")
    data = path.with_suffix(".tmp.mkv").read_bytes()
    path.with_suffix(".tmp.mkv").unlink()
    assert data.count(b"V_FFV1") == 1
    path.write_bytes(data.replace(b"V_FFV1", b"V_ZZZ1"))  # a Matroska codec id no FFmpeg knows


BAD_INPUTS: dict[str, tuple[Callable[[Path], object], str]] = {
    "text.mp4": (lambda p: p.write_text("not a video\n"), "not a video FFmpeg can read"),
    "empty.mkv": (lambda p: p.write_bytes(b""), "empty file"),
    "truncated.mp4": (lambda p: _truncate(p, 0.5), "not a video FFmpeg can read, or corrupt or truncated"),
    "truncated_faststart.mp4": (
        lambda p: _truncate(p, 0.7, options={"movflags": "+faststart"}),
        "corrupt or truncated",
    ),
    "truncated.mkv": (lambda p: _truncate(p, 0.6, codec="ffv1"), "corrupt or truncated"),
    "audio_only.mp4": (_audio_only, "no video stream (streams: audio)"),
    "unknown_codec.mkv": (_unknown_codec, "no decoder for its video codec"),
    "missing.mp4": (lambda p: None, "no such file"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_exit_2_with_one_line_and_no_output(
    name: str, tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = BAD_INPUTS[name]
    source = tmp_path / name
    make(source)
    assert upscale("-i", source, "-o", tmp_path / "out.mkv", "-m", model) == 2
    assert message in one_error_line(capsys.readouterr().err, allow_warnings=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if source.exists() else [])


BAD_OUTPUTS: dict[str, tuple[list[str], str]] = {
    "x264_in_webm": (["-o", "out.webm"], "the webm container cannot hold libx264 video"),
    "ffv1_in_mov": (["-o", "out.mov", "--codec", "ffv1"], "the mov container cannot hold ffv1 video"),
    "unknown_encoder": (["-o", "out.mkv", "--codec", "libnothing"], "no 'libnothing' encoder"),
    "audio_encoder": (["-o", "out.mkv", "--codec", "aac"], "aac is an audio encoder"),
    "image_output": (["-o", "out.png"], "a video is upscaled into a video file"),
    "no_container": (["-o", "out.mp9"], "a video is upscaled into a video file"),
    "pix_fmt": (["-o", "out.mkv", "--pix-fmt", "rgb24"], "libx264 does not take pixel format rgb24"),
    "crf_for_ffv1": (["-o", "out.mkv", "--codec", "ffv1", "--crf", "10"], "--crf is for libx264 and libx265"),
    "crf_range": (["-o", "out.mkv", "--crf", "60"], "argument --crf: must be in [0, 51], got 60"),
    "threshold": (["-o", "out.mkv", "--scene-threshold", "0"], "--scene-threshold is a histogram distance"),
    "per_tile_idr": (["-o", "out.mkv", "--no-shared-idr"], "--no-shared-idr is for images"),
    "unwritable": (["-o", "file.txt/out.mkv"], "file.txt"),
    "max_pixels": (["-o", "out.mkv", "--max-pixels", "100"], "over the limit of 100 pixels"),
}


@pytest.mark.parametrize("name", sorted(BAD_OUTPUTS))
def test_bad_outputs_and_options_exit_2_before_any_work(
    name: str, tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args, message = BAD_OUTPUTS[name]
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "in.mp4", crop_pan("abbey", 2, size=16))
    (tmp_path / "file.txt").write_text("a file, not a folder")
    monkeypatch.setattr(Upscaler, "upscale", lambda *a, **k: pytest.fail("upscaled before the checks"))
    assert upscale("-i", "in.mp4", *args, "-m", model) == 2
    assert message in one_error_line(capsys.readouterr().err, allow_warnings=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "in.mp4"]


@pytest.mark.parametrize(
    ("frames", "duration", "truncated"),
    [(10, 1.0, True), (10, None, True), (None, 1.0, True), (10, 0.5, False), (5, 1.0, False), (None, None, False)],
)
def test_truncated_means_short_of_everything_declared(
    frames: int | None, duration: float | None, truncated: bool
) -> None:
    """5 frames of 0.1 s read: short of 10 frames, of 1 s. An edit list may hide stored frames: one is not enough."""
    from types import SimpleNamespace

    source = SimpleNamespace(path=Path("clip.mp4"), frames=frames, duration=duration, rate=Fraction(10))
    stats = video._Stats(frames=5, last_end=0.5)
    if truncated:
        with pytest.raises(InputVideoError, match="corrupt or truncated"):
            video._check_complete(source, stats)  # type: ignore[arg-type]
    else:
        video._check_complete(source, stats)  # type: ignore[arg-type]


def test_a_corrupt_frame_is_skipped_with_a_warning_or_stops_the_run(
    tmp_path: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_clip(tmp_path / "in.mkv", crop_pan("cliff", 5, size=16), codec="ffv1", gop=1, corrupt=(2,))
    assert upscale("-i", source, "-o", tmp_path / "stop.mkv", "-m", model, "--on-corrupt", "stop") == 2
    assert "a corrupt video packet at 0.080 s" in one_error_line(capsys.readouterr().err, allow_warnings=True)
    assert not (tmp_path / "stop.mkv").exists()
    assert upscale("-i", source, "-o", tmp_path / "skip.mkv", "-m", model, "--json") == 0
    captured = capsys.readouterr()
    assert "lightbsr: warning: in.mkv: skipped a corrupt video packet at 0.080 s" in captured.err
    assert json.loads(captured.out)["images"][0]["skipped_frames"] == 1
    assert decode(tmp_path / "skip.mkv")["times"] == [Fraction(t, 1000) for t in (0, 40, 120, 160)]


def test_videos_without_pyav_say_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'lightbsr\[video\]'"):
        video.probe_video(tmp_path / "clip.mp4")


def test_probe_video(tmp_path: Path) -> None:
    header = video.probe_video(make_clip(tmp_path / "in.mp4", crop_pan("abbey", 3, size=16)))
    assert (header.width, header.height, header.codec, header.bit_depth, header.frames) == (16, 16, "h264", 8, 3)
    assert header.rate == 25 and header.duration == pytest.approx(0.12)
    with pytest.raises(InputVideoError, match="over the limit"):
        video.probe_video(tmp_path / "in.mp4", max_pixels=255)


def test_the_commands_defaults_are_the_modules(capsys: pytest.CaptureFixture[str]) -> None:
    """runtime/cli.py repeats a few defaults (it imports only argparse): they must agree with the modules."""
    import argparse

    parser = argparse.ArgumentParser()
    runtime_cli.register(parser.add_subparsers())
    args = parser.parse_args(["upscale", "-i", "a.mp4", "-o", "b.mp4"])
    defaults = video.VideoOptions()
    assert args.scene_threshold == defaults.scene_threshold == scenes.DEFAULT_SCENE_THRESHOLD
    assert args.codec == defaults.codec == video.DEFAULT_CODEC
    assert (args.idr, args.on_corrupt) == (defaults.idr, defaults.on_corrupt)
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    assert f"lower is better (default: {video.DEFAULT_CRF})" in " ".join(capsys.readouterr().out.split())
