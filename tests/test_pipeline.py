"""The video pipeline and the live loop: same frames as the naive loop, bounded memory,
the source's audio kept, no backlog on a fast stream. Correctness only; speed is shown by
benchmarks/stylize_speed.py."""
from __future__ import annotations

import subprocess
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

import config
from common.images import image_to_tensor, tensor_to_array
from common.precision import has_native_bf16_cpu
from conftest import read_video, stylize_quietly, write_video
from network.formats import load_model
from stylization import sink as sink_module
from stylization.content_source.factory import create_source
from stylization.enum_class import ContentType
from stylization.pipeline import LatestFrame, stylize_live, stylize_stream
from stylization.processor import Processor, RunOptions, stylize_precision
from stylization.sink import VideoSink, find_ffmpeg

FFMPEG = find_ffmpeg()
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="imageio-ffmpeg is not installed")


def naive_loop(model_path: Path, clip: Path) -> list[np.ndarray]:
    """What the original did: one frame at a time, float32, in decoding order."""
    model = load_model(model_path)
    with create_source(ContentType.VIDEO, clip) as source, torch.no_grad():
        return [tensor_to_array(model(image_to_tensor(frame)[None])) for _, frame in source.frames()]


def pipeline(model_path: Path, clip: Path, batch_size: int) -> list[np.ndarray]:
    processor = Processor(load_model(model_path), "cpu", RunOptions(batch_size=batch_size))
    written: list[np.ndarray] = []
    with create_source(ContentType.VIDEO, clip) as source:
        assert stylize_stream(source.frames(), processor, batch_size, write=written.append)
    return written


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_pipeline_gives_the_naive_loops_frames_for_any_batch_size(tmp_path, tiny_model, batch_size):
    clip = write_video(tmp_path / "clip.mp4", frames=13, width=96, height=64)  # 13: a short last batch
    expected = naive_loop(tiny_model, clip)
    got = pipeline(tiny_model, clip, batch_size)
    assert len(got) == len(expected) == 13
    for ours, theirs in zip(got, expected):
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    # the frames differ from each other, so equal lists also mean the same order
    assert np.abs(expected[0].astype(int) - expected[-1].astype(int)).mean() > 1


def ffmpeg_info(path: Path) -> str:
    """FFmpeg's description of a file's streams."""
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True).stderr


def decode_audio(path: Path, rate: int) -> np.ndarray:
    """The first audio track as mono float samples in [-1, 1]."""
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
                          "-ar", str(rate), "-f", "s16le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float64) / 32768


@needs_ffmpeg
def test_video_keeps_its_audio_in_sync_as_h264_mp4(tmp_path, tiny_model):
    # 2 s of moving pictures; the sound is silent until a tone starts at 0.8 s.
    rate, onset = 22050, 0.8
    source = tmp_path / "talk.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2",
                    "-f", "lavfi", "-i", f"aevalsrc='if(gte(t,{onset}),0.5*sin(2*PI*440*t),0)':s={rate}:d=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(source)],
                   check=True)
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "video", "--source", str(source),
                             "--batch_size", "4")
    assert result.returncode == 0, result.stderr
    info = ffmpeg_info(out / "talk_tiny.mp4")
    assert "Video: h264" in info and "Audio: aac" in info, info
    frames, fps = read_video(out / "talk_tiny.mp4")
    assert len(frames) == 50 and fps == pytest.approx(25.0)
    audio = decode_audio(out / "talk_tiny.mp4", rate)
    assert abs(len(audio) / rate - len(frames) / fps) < 0.1  # as long as the video
    started = np.flatnonzero(np.abs(audio) > 0.1)[0] / rate
    assert abs(started - onset) < 0.05  # and where it was in the source


@needs_ffmpeg
def test_audio_shorter_than_the_video_costs_no_frames(tmp_path, tiny_model):
    source = tmp_path / "short_sound.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050:duration=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(source)], check=True)
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "video", "--source", str(source))
    assert result.returncode == 0, result.stderr
    frames, fps = read_video(out / "short_sound_tiny.mp4")
    assert len(frames) == 50
    audio = decode_audio(out / "short_sound_tiny.mp4", 22050)
    assert abs(len(audio) / 22050 - 2.0) < 0.1  # padded with silence to the video's length
    assert np.abs(audio[: 22050 // 2]).max() > 0.1 and np.abs(audio[-22050 // 2:]).max() < 0.01


@needs_ffmpeg
def test_video_without_audio_and_stream_recordings_have_none(tmp_path, tiny_model, sample_video):
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "video", "--source", str(sample_video))
    assert result.returncode == 0, result.stderr
    info = ffmpeg_info(out / "clip_tiny.mp4")
    assert "Video: h264" in info and "Audio:" not in info


def test_without_ffmpeg_it_warns_and_writes_video_without_sound(tmp_path, monkeypatch):
    monkeypatch.setattr(sink_module, "find_ffmpeg", lambda: None)
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="no FFmpeg found"):
        sink = VideoSink(tmp_path / "silent.mp4", 25.0, (64, 48), audio_from=tmp_path / "any.mp4")
    with sink:
        for _ in range(5):
            sink.write(frame)
    assert not sink.with_audio
    frames, fps = read_video(tmp_path / "silent.mp4")
    assert len(frames) == 5 and fps == pytest.approx(25.0)


def counted_frames(count: int, alive: list, pause_s: float = 0.0, size: int = 16):
    """A source of `count` frames (frame i is filled with i % 256) whose frames are
    watched through weak references, to count how many are still held."""
    for index in range(count):
        frame = np.full((size, size, 3), index % 256, np.uint8)
        alive.append(weakref.ref(frame))
        yield index, frame
        if pause_s:
            time.sleep(pause_s)


def held(refs: list) -> int:
    return sum(ref() is not None for ref in refs)


def test_video_pipeline_holds_a_bounded_number_of_frames(tmp_path):
    inputs: list = []
    outputs: list = []
    peaks = {"inputs": 0, "outputs": 0}
    batch_size = 3

    def process(frames):
        peaks["inputs"] = max(peaks["inputs"], held(inputs))
        results = [frame + 1 for frame in frames]
        outputs.extend(weakref.ref(r) for r in results)
        return results

    def slow_write(frame):
        peaks["outputs"] = max(peaks["outputs"], held(outputs))
        time.sleep(0.001)  # the encoder is the slow stage here: frames must not pile up

    assert stylize_stream(counted_frames(300, inputs), process, batch_size, write=slow_write)
    assert len(outputs) == 300
    # queued batches, the one being decoded and the one in the network
    assert peaks["inputs"] <= (config.DECODE_QUEUE_BATCHES + 2) * batch_size
    assert peaks["outputs"] <= config.ENCODE_QUEUE_FRAMES + batch_size + 2


def test_live_mode_on_a_fast_stream_holds_only_the_newest_frames(tmp_path):
    frames: list = []
    shown: list[int] = []
    peak = 0

    def slow_network(batch):
        nonlocal peak
        peak = max(peak, held(frames))
        time.sleep(0.01)  # ten times slower than the stream
        shown.append(int(batch[0][0, 0, 0]))
        return [batch[0].copy()]

    recorded: list[np.ndarray] = []
    assert stylize_live(counted_frames(200, frames, pause_s=0.001), slow_network, write=recorded.append)
    assert peak <= 3  # the frame in the network, the newest one waiting, the one being captured
    assert len(shown) < 100  # frames were skipped, not queued
    assert shown == sorted(shown) and shown[-1] == 199  # newest first, and the last one shown
    # the recording is what was shown, in real time: one frame per source frame
    values = [int(frame[0, 0, 0]) for frame in recorded]
    assert len(values) == 200 and values == sorted(values)
    assert set(values) == set(shown)
    # never ahead of time, except the slots before the first stylised frame, which it fills
    assert all(value <= max(index, shown[0]) for index, value in enumerate(values))


def test_latest_frame_keeps_one_and_counts_the_skipped():
    mailbox = LatestFrame()
    for index in range(5):
        mailbox.put((index, np.zeros((2, 2, 3), np.uint8)))
    assert mailbox.take()[0] == 4 and mailbox.skipped == 4
    threading.Timer(0.05, mailbox.end).start()
    assert mailbox.take() is None  # waits for the end instead of returning stale frames


def test_auto_precision_follows_the_measured_table():
    cpu_kind = "cpu_native_bf16" if has_native_bf16_cpu() else "cpu"
    expected = {"fp32": None, "bf16": torch.bfloat16}[config.STYLIZE_AUTO_PRECISION[cpu_kind]]
    assert stylize_precision("auto", torch.device("cpu")) == expected
    cuda = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[config.STYLIZE_AUTO_PRECISION["cuda"]]
    assert stylize_precision("auto", torch.device("cuda")) == cuda
    assert stylize_precision("fp32", torch.device("cpu")) is None


def test_reduced_precision_stays_close_to_float32(tiny_model):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    reference = Processor(load_model(tiny_model), "cpu")(frames)
    reduced = Processor(load_model(tiny_model), "cpu", RunOptions(dtype=torch.bfloat16))(frames)
    diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(reference, reduced)]
    assert all(0 < d.mean() < 4 for d in diffs)  # it did run in bf16, and stayed close


def test_the_benchmarks_camera_stand_in_keeps_its_pace_and_loops_the_clip(tmp_path):
    from benchmarks.stylize_speed import camera_frames
    clip = write_video(tmp_path / "c.mp4", 5, 32, 24)
    start = time.perf_counter()
    frames = list(camera_frames(clip, fps=40, seconds=0.5))
    elapsed = time.perf_counter() - start
    assert [index for index, _ in frames] == list(range(20))  # 4 passes over 5 frames
    assert 0.45 <= elapsed < 1.5  # frame 19 is due at 0.475 s
    assert np.array_equal(frames[0][1], frames[5][1])


def test_the_benchmarks_webcam_row_shows_frames_at_most_at_the_sources_rate(tmp_path, tiny_model):
    from benchmarks.stylize_speed import live_rate
    clip = write_video(tmp_path / "c.mp4", 6, 32, 24)
    rate, source_frames = live_rate(clip, tiny_model, torch.device("cpu"), fps=20, seconds=1.0)
    assert source_frames == 20
    assert 0 < rate <= 20 * 1.2  # a shown frame waits for its source frame


@pytest.mark.parametrize("nvenc, listed, encoder", [(True, {"libx264", "h264_nvenc"}, "h264_nvenc"),
                                                    (False, {"libx264", "h264_nvenc"}, "libx264"),
                                                    (False, {"mpeg4"}, "mpeg4")])
def test_h264_goes_to_the_gpu_encoder_where_it_opens(monkeypatch, nvenc, listed, encoder):
    """MP4s are H.264 from NVIDIA's encoder where it opens, else from libx264, else MPEG-4;
    AVI stays MJPEG either way."""
    monkeypatch.setattr(sink_module, "nvenc_opens", lambda exe: nvenc)
    monkeypatch.setattr(sink_module, "ffmpeg_encoders", lambda exe: frozenset(listed))
    mp4 = sink_module.ffmpeg_command("ffmpeg", "out.mp4", 30.0, (64, 48), config.VIDEO_FORMATS[".mp4"], None)
    assert mp4[mp4.index("-c:v") + 1] == encoder
    avi = sink_module.ffmpeg_command("ffmpeg", "out.avi", 30.0, (64, 48), config.VIDEO_FORMATS[".avi"], None)
    assert avi[avi.index("-c:v") + 1] == "mjpeg"


def test_the_gpu_encoder_probe_is_false_without_an_nvidia_driver():
    exe = find_ffmpeg()
    if exe is None:
        pytest.skip("no FFmpeg")
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has an NVIDIA driver")
    assert sink_module.nvenc_opens(exe) is False
