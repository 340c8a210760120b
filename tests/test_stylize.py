"""stylize.py end to end on images, videos and streams the tests make, plus its parts."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import config
from common.images import image_to_tensor, tensor_to_array
from conftest import (QUIET, ROOT, files_in, random_vgg_file, read_video, snapshot, stylize,
                      stylize_quietly, write_image, write_video)
from network.formats import load_model
from stylization.content_source.factory import create_source
from stylization.enum_class import ContentType
from stylization.processor import Processor
from stylization.sink import VideoSink

def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ----------------------------------------------------------------------------- images
def test_image_keeps_its_odd_size_and_saves_png_by_default(tmp_path, tiny_model, sample_image):
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "image", "--source", str(sample_image))
    assert result.returncode == 0, result.stderr
    saved = out / "photo_tiny.png"
    assert str(saved) in result.stdout
    with Image.open(saved) as img:
        assert img.format == "PNG" and img.size == (333, 251)
    assert files_in(out) == {"photo_tiny.png"}  # no temporary files left behind


def test_output_name_picks_the_format(tmp_path, tiny_model, sample_image):
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "image", "--source", str(sample_image),
                             "--output_name", "x.jpg")
    assert result.returncode == 0, result.stderr
    with Image.open(out / "x.jpg") as img:
        assert img.format == "JPEG" and img.size == (333, 251)


@pytest.mark.parametrize("max_size, expected", [(100, (100, 75)), (1000, (333, 251))])
def test_max_size_scales_down_never_up(tmp_path, tiny_model, sample_image, max_size, expected):
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "image", "--source", str(sample_image),
                             "--max_size", str(max_size))
    assert result.returncode == 0, result.stderr
    with Image.open(out / "photo_tiny.png") as img:
        assert img.size == expected


def test_never_overwrites_the_input(tmp_path, tiny_model, sample_image):
    before = sample_image.read_bytes()
    for overwrite in ("False", "True"):
        result = stylize_quietly(tiny_model, sample_image.parent, "--content_type", "image",
                                 "--source", str(sample_image), "--output_name", sample_image.name,
                                 "--overwrite", overwrite)
        assert result.returncode == 2
        assert "would overwrite the input" in result.stderr
    assert sample_image.read_bytes() == before


def test_existing_output_gets_a_free_name_unless_overwrite(tmp_path, tiny_model, sample_image):
    out = tmp_path / "out"
    args = ("--content_type", "image", "--source", str(sample_image))
    assert stylize_quietly(tiny_model, out, *args).returncode == 0
    second = stylize_quietly(tiny_model, out, *args)
    assert second.returncode == 0, second.stderr
    assert "photo_tiny_1.png" in second.stdout
    third = stylize_quietly(tiny_model, out, *args, "--overwrite", "True")
    assert third.returncode == 0, third.stderr
    assert files_in(out) == {"photo_tiny.png", "photo_tiny_1.png"}


def test_folder_and_glob_give_one_output_per_image_under_its_own_name(tmp_path, tiny_model):
    photos = tmp_path / "photos"
    write_image(photos / "a.png", 40, 30, seed=1)
    write_image(photos / "b.jpg", 31, 45, seed=2)
    write_image(photos / "nested" / "c.png", 36, 36, seed=3)
    (photos / "notes.txt").write_text("not an image")

    result = stylize_quietly(tiny_model, tmp_path / "from_folder", "--content_type", "image",
                             "--source", str(photos))
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path / "from_folder") == {"a.png", "b.jpg", str(Path("nested") / "c.png")}
    with Image.open(tmp_path / "from_folder" / "b.jpg") as img:
        assert img.format == "JPEG" and img.size == (31, 45)

    result = stylize_quietly(tiny_model, tmp_path / "from_glob", "--content_type", "image",
                             "--source", str(photos / "*.png"))
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path / "from_glob") == {"a.png"}


# ----------------------------------------------------------------------------- videos
def test_video_keeps_frames_fps_size_and_stylises_the_first_frame(tmp_path, tiny_model):
    # 98x66 is not a multiple of 4, and 29.97 fps must not become 29.
    clip = write_video(tmp_path / "clip.mp4", frames=10, width=98, height=66, fps=30000 / 1001)
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "video", "--source", str(clip))
    assert result.returncode == 0, result.stderr
    inputs, _ = read_video(clip)
    outputs, fps = read_video(out / "clip_tiny.mp4")
    assert len(outputs) == len(inputs) == 10
    assert abs(fps - 29.97) < 0.01
    assert outputs[0].shape == (66, 98, 3)
    assert files_in(out) == {"clip_tiny.mp4"}

    processor = Processor(load_model(tiny_model), "cpu")
    first, last = processor([inputs[0]])[0], processor([inputs[-1]])[0]
    assert mean_abs_diff(first, last) > 5  # the frames differ enough to tell them apart
    assert mean_abs_diff(outputs[0], first) < mean_abs_diff(outputs[0], last) / 3


def test_odd_sized_video_keeps_every_frame_and_says_it_drops_the_odd_row(tmp_path, capsys):
    # Network outputs keep odd sizes; 4:2:0 video cannot, so the sink trims one row/column.
    frame = np.asarray(Image.open(write_image(tmp_path / "odd.png", 97, 65)))
    with VideoSink(tmp_path / "odd.mp4", 25.0, (97, 65)) as sink:
        for _ in range(4):
            sink.write(frame)
    assert "writing 96x64" in capsys.readouterr().err
    outputs, _ = read_video(tmp_path / "odd.mp4")
    assert len(outputs) == 4 and outputs[0].shape == (64, 96, 3)
    assert mean_abs_diff(outputs[0], frame[:64, :96]) < 8


def test_video_damaged_midway_is_stylised_up_to_the_damage(tmp_path, tiny_model):
    writer = cv2.VideoWriter(str(tmp_path / "full.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 64))
    for i in range(40):
        writer.write(np.random.default_rng(i).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])  # the index says 40 frames
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "video", "--source", str(tmp_path / "cut.avi"))
    assert result.returncode == 0, result.stderr
    decoded = len(read_video(out / "cut_tiny.mp4")[0])
    assert 5 < decoded < 40
    assert f"warning: cut: decoding stopped at frame {decoded} of the 40" in result.stderr


def test_video_max_size_and_folder_of_videos(tmp_path, tiny_model):
    videos = tmp_path / "videos"
    write_video(videos / "a.mp4", frames=3, width=96, height=64)
    write_video(videos / "b.avi", frames=2, width=64, height=64)
    out = tmp_path / "out"
    result = stylize_quietly(tiny_model, out, "--content_type", "video", "--source", str(videos),
                             "--max_size", "48")
    assert result.returncode == 0, result.stderr
    assert files_in(out) == {"a.mp4", "b.mp4"}
    frames, _ = read_video(out / "a.mp4")
    assert len(frames) == 3 and frames[0].shape == (32, 48, 3)


def test_ctrl_c_keeps_a_partial_video(tmp_path, tiny_model):
    # Long enough that the signal lands mid-run on a fast idle machine too: 600 frames were
    # all done within the 0.5 s this test once waited.
    clip = write_video(tmp_path / "long.mp4", frames=3000, width=64, height=48)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "stylize.py"), "--content_type", "video", "--source", str(clip),
         "--model_path", str(tiny_model), "--output_dir", str(out), "--real_time", "False"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **QUIET})
    deadline = time.monotonic() + 60
    # FFmpeg writes the temporary video's first bytes once the first stylised frame reaches it:
    # from then on there is a partial video to keep, however busy the machine is.
    while time.monotonic() < deadline and not any(
            p.stat().st_size > 0 for p in out.glob(".long_tiny.*") if p.exists()):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "partial" in stdout and "Traceback" not in stderr
    frames, _ = read_video(out / "long_tiny.mp4")
    assert 0 < len(frames) < 3000
    assert files_in(out) == {"long_tiny.mp4"}


# ----------------------------------------------------------------------------- the look
def ycbcr(frame: np.ndarray) -> np.ndarray:
    """Y, Cb, Cr planes in 0-255, as OpenCV computes them."""
    y, cr, cb = np.moveaxis(cv2.cvtColor(frame, cv2.COLOR_RGB2YCrCb).astype(np.float64), -1, 0)
    return np.stack([y, cb, cr])


def photo_like(path: Path) -> tuple[Path, np.ndarray]:
    """A test image with a photo's muted colours rather than a test chart's pure ones."""
    chart = np.asarray(Image.open(write_image(path, 90, 70)))
    image = (chart.astype(np.float32) * 0.6 + 50).astype(np.uint8)
    Image.fromarray(image).save(path)
    return path, image


def test_strength_zero_returns_the_input_and_a_half_is_halfway(tmp_path, tiny_model):
    source, image = photo_like(tmp_path / "photo.png")
    stylised = Processor(load_model(tiny_model), "cpu")([image])[0].astype(np.float64)
    out = tmp_path / "out"
    for strength in ("0", "0.5"):
        result = stylize_quietly(tiny_model, out, "--content_type", "image", "--source", str(source),
                                 "--strength", strength, "--output_name", f"s{strength}.png",
                                 "--precision", "fp32")  # as the Processor above
        assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(out / "s0.png")), image)
    half = np.asarray(Image.open(out / "s0.5.png")).astype(np.float64)
    assert mean_abs_diff(stylised, image) > 20  # the two ends are far apart
    assert np.abs(half - (stylised + image) / 2).max() <= 1.5


def test_preserve_color_keeps_the_inputs_chroma_and_the_stylised_luminance(tmp_path, tiny_model):
    source, image = photo_like(tmp_path / "photo.png")
    stylised = ycbcr(Processor(load_model(tiny_model), "cpu")([image])[0])
    result = stylize_quietly(tiny_model, tmp_path / "out", "--content_type", "image", "--source",
                             str(source), "--preserve_color", "True", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    out, original = ycbcr(np.asarray(Image.open(tmp_path / "out" / "photo_tiny.png"))), ycbcr(image)
    assert np.abs(stylised[1:] - original[1:]).mean() > 5  # the network changed the colours
    assert np.abs(out[1:] - original[1:]).mean(axis=(1, 2)).max() <= 2.0  # Cb and Cr each
    assert np.abs(out[0] - stylised[0]).mean() <= 1.0


def e_warp(result: subprocess.CompletedProcess) -> float:
    line = next(line for line in result.stdout.splitlines() if line.startswith("E_warp:"))
    return float(line.split()[1])


def test_smooth_steadies_video_files_and_streams(tmp_path, tiny_model, sample_video):
    out = tmp_path / "out"
    runs = {}
    for weight in ("0", "0.6"):
        runs[weight] = stylize_quietly(tiny_model, out, "--content_type", "video", "--source",
                                       str(sample_video), "--smooth", weight, "--report_stability",
                                       "True", "--batch_size", "3", "--output_name", f"w{weight}.avi")
        assert runs[weight].returncode == 0, runs[weight].stderr
    assert e_warp(runs["0.6"]) < 0.7 * e_warp(runs["0"])
    # Motion JPEG codes each frame alone, so equal frames come out equal
    plain, smoothed = read_video(out / "w0.avi")[0], read_video(out / "w0.6.avi")[0]
    assert len(plain) == len(smoothed) == 12
    assert mean_abs_diff(plain[0], smoothed[0]) < 0.5  # nothing to blend the first frame with
    assert mean_abs_diff(plain[-1], smoothed[-1]) > 2
    live = stylize_quietly(tiny_model, out, "--content_type", "webcam", "--source", str(sample_video),
                           "--smooth", "0.6", "--output_name", "live.mp4")
    assert live.returncode == 0, live.stderr
    assert len(read_video(out / "live.mp4")[0]) == 12


# ----------------------------------------------------------------------------- processor
def test_processor_feeds_rgb_and_batches_like_single_frames(tiny_model):
    model = load_model(tiny_model)
    processor = Processor(model, "cpu")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (30, 42, 3), dtype=np.uint8) for _ in range(2)]

    with torch.inference_mode():
        direct = tensor_to_array(model(image_to_tensor(frames[0])[None]))
    np.testing.assert_array_equal(processor([frames[0]])[0], direct)

    batch = processor(frames)
    for frame, result in zip(frames, batch):
        np.testing.assert_array_equal(result, processor([frame])[0])

    red = np.zeros((32, 32, 3), np.uint8)
    red[:, :16, 0] = 255  # structure, since instance norm erases a flat colour
    assert mean_abs_diff(processor([red])[0], processor([red[..., ::-1].copy()])[0]) > 0


def test_video_source_yields_rgb_from_the_first_frame(tmp_path):
    clip = write_video(tmp_path / "clip.mp4", frames=4, width=64, height=48)
    with create_source(ContentType.VIDEO, clip, max_size=32) as source:
        frames = list(source.frames())
        assert source.size == (32, 24) and source.fps == pytest.approx(25.0)
    assert [index for index, _ in frames] == [0, 1, 2, 3]
    # write_video paints a yellow square (BGR 255, 255, 0 = cyan in RGB): check channel order
    expected, _ = read_video(clip)
    assert frames[0][1].shape == (24, 32, 3)
    big = cv2.resize(frames[0][1], (64, 48), interpolation=cv2.INTER_LINEAR)
    assert mean_abs_diff(big, expected[0]) < mean_abs_diff(big, expected[0][..., ::-1])


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("case", ["missing source", "missing model", "model is a folder",
                                  "text as image", "garbage video", "empty video",
                                  "empty folder", "small max_size", "nothing to do",
                                  "unsupported checkpoint", "truncated jpeg", "truncated mp4",
                                  "output dir is a file", "output name is the source",
                                  "strength above 1", "negative strength", "smooth of 1",
                                  "negative smooth", "smooth on an image"])
def test_user_errors_are_one_line_and_create_nothing(tmp_path, tiny_model, sample_image, case):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 50)
    empty = write_video(tmp_path / "empty.mp4", frames=0, width=64, height=48)
    (tmp_path / "nothing").mkdir()
    vgg = random_vgg_file(tmp_path / "vgg16.pth", "VGG16", "caffe")
    cut_jpeg = tmp_path / "cut.jpg"
    Image.open(sample_image).convert("RGB").save(cut_jpeg)
    cut_jpeg.write_bytes(cut_jpeg.read_bytes()[:300])
    clip = write_video(tmp_path / "clip.mp4", frames=5, width=64, height=48)
    cut_mp4 = tmp_path / "cut.mp4"
    cut_mp4.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    content, source, model, extra = {
        "missing source": ("image", tmp_path / "nope.png", tiny_model, []),
        "missing model": ("image", sample_image, tmp_path / "nope.pth.tar", []),
        # A folder of models is fine (tests/test_scale.py); one without any is not.
        "model is a folder": ("image", sample_image, tmp_path / "nothing", []),
        "text as image": ("image", notes, tiny_model, []),
        "garbage video": ("video", garbage, tiny_model, []),
        "empty video": ("video", empty, tiny_model, []),
        "empty folder": ("image", tmp_path / "nothing", tiny_model, []),
        "small max_size": ("image", sample_image, tiny_model, ["--max_size", "8"]),
        "nothing to do": ("image", sample_image, tiny_model, ["--save_output", "False"]),
        "unsupported checkpoint": ("image", sample_image, vgg, []),
        "truncated jpeg": ("image", cut_jpeg, tiny_model, []),
        "truncated mp4": ("video", cut_mp4, tiny_model, []),
        "output dir is a file": ("image", sample_image, tiny_model, ["--output_dir", str(notes)]),
        "output name is the source": ("image", sample_image, tiny_model,
                                      ["--output_dir", str(sample_image.parent),
                                       "--output_name", sample_image.name]),
        "strength above 1": ("image", sample_image, tiny_model, ["--strength", "1.5"]),
        "negative strength": ("video", clip, tiny_model, ["--strength", "-0.2"]),
        "smooth of 1": ("video", clip, tiny_model, ["--smooth", "1"]),
        "negative smooth": ("video", clip, tiny_model, ["--smooth", "-0.5"]),
        "smooth on an image": ("image", sample_image, tiny_model, ["--smooth", "0.5"]),
    }[case]
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = stylize("--content_type", content, "--source", str(source), "--model_path", str(model),
                     "--output_dir", str(out), "--real_time", "False", *extra)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0])
    assert "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_missing_camera_is_a_user_error(tmp_path, tiny_model):
    result = stylize_quietly(tiny_model, tmp_path / "out", "--content_type", "webcam", "--source", "37")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: camera 37 could not be opened")
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- display, webcam
def headless_env(monkeypatch) -> None:
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)


def test_real_time_without_display_warns_and_still_saves(tmp_path, tiny_model, sample_video, monkeypatch):
    headless_env(monkeypatch)
    out = tmp_path / "out"
    result = stylize("--content_type", "video", "--source", str(sample_video), "--model_path",
                     str(tiny_model), "--output_dir", str(out), "--real_time", "True")
    assert result.returncode == 0, result.stderr  # not 134: no window was attempted
    assert "no display available" in result.stderr
    assert len(read_video(out / "clip_tiny.mp4")[0]) == 12


def test_webcam_mode_reads_a_stream_until_it_ends_and_records_it(tmp_path, tiny_model, sample_video,
                                                                 monkeypatch):
    headless_env(monkeypatch)
    out = tmp_path / "out"
    result = stylize("--content_type", "webcam", "--source", str(sample_video), "--model_path",
                     str(tiny_model), "--output_dir", str(out))
    assert result.returncode == 0, result.stderr
    frames, fps = read_video(out / "clip_tiny.mp4")
    assert len(frames) == 12 and abs(fps - 25.0) < 0.01


@pytest.fixture
def virtual_display():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    server = subprocess.Popen(["Xvfb", ":99", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    if server.poll() is not None:
        pytest.skip("Xvfb could not start on :99")
    yield ":99"
    server.terminate()
    server.wait(timeout=10)


def test_real_time_on_a_virtual_display(tmp_path, tiny_model, sample_video, virtual_display):
    out = tmp_path / "out"
    result = stylize("--content_type", "video", "--source", str(sample_video), "--model_path",
                     str(tiny_model), "--output_dir", str(out), "--real_time", "True",
                     env={"DISPLAY": virtual_display, "QT_QPA_PLATFORM": "xcb"})
    assert result.returncode == 0, result.stderr
    assert "no display available" not in result.stderr
    assert len(read_video(out / "clip_tiny.mp4")[0]) == 12


def test_a_webcam_without_native_bf16_names_the_tiny_model_unless_one_runs(monkeypatch):
    from network.style_network import StylizingNetwork
    from stylization import jobs as stylize_jobs

    fast, tiny = (StylizingNetwork(config.NETWORK_SIZES[name]) for name in ("fast", "tiny"))
    cpu, webcam = torch.device("cpu"), ContentType.WEBCAM
    monkeypatch.setattr(stylize_jobs, "has_native_bf16_cpu", lambda: False)
    assert "_tiny.pth.tar" in stylize_jobs.real_time_hint(webcam, cpu, [fast])
    assert stylize_jobs.real_time_hint(webcam, cpu, [fast, tiny]) is None  # n/p reaches the tiny one
    assert stylize_jobs.real_time_hint(ContentType.VIDEO, cpu, [fast]) is None  # no frame rate to keep
    assert stylize_jobs.real_time_hint(webcam, torch.device("cuda"), [fast]) is None
    monkeypatch.setattr(stylize_jobs, "has_native_bf16_cpu", lambda: True)
    assert stylize_jobs.real_time_hint(webcam, cpu, [fast]) is None


def test_compile_auto_compiles_only_videos_on_a_cpu_with_enough_pixels(tmp_path, monkeypatch):
    from stylization import jobs as stylize_jobs
    from stylization import processor as processor_module
    from stylization.paths import Job

    clip = write_video(tmp_path / "clip.mp4", frames=12, width=96, height=64)
    jobs = [Job(str(clip), None), Job(str(tmp_path / "missing.mp4"), None)]  # the bad one is skipped
    cpu, video = torch.device("cpu"), ContentType.VIDEO
    megapixels = 12 * 96 * 64 / 1e6
    monkeypatch.setattr(processor_module, "find_compiler", lambda: "/usr/bin/g++")
    monkeypatch.setattr(config, "COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES", megapixels * 0.9)
    assert stylize_jobs.compile_pays(video, jobs, None, cpu)
    assert not stylize_jobs.compile_pays(video, jobs, 48, cpu)  # --max_size shrinks the work
    assert not stylize_jobs.compile_pays(ContentType.IMAGE, jobs, None, cpu)
    assert not stylize_jobs.compile_pays(video, jobs, None, torch.device("cuda"))  # not measured
    monkeypatch.setattr(config, "COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES", megapixels * 1.1)
    assert not stylize_jobs.compile_pays(video, jobs, None, cpu)
    monkeypatch.setattr(config, "COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES", 0)
    monkeypatch.setattr(processor_module, "find_compiler", lambda: None)
    assert not stylize_jobs.compile_pays(video, jobs, None, cpu)


@pytest.mark.parametrize("compiler, content_type, cached_only", [
    ("/usr/bin/g++", "webcam", True), (None, "webcam", False), ("/usr/bin/g++", "image", False)])
def test_compile_auto_on_a_webcam_only_loads_cached_packages(tiny_model, monkeypatch, compiler,
                                                              content_type, cached_only):
    from stylization import jobs as stylize_jobs
    from stylization import processor as processor_module
    from stylization.settings import stylize_settings

    monkeypatch.setattr(processor_module, "find_compiler", lambda: compiler)
    args = stylize_settings(content_type=content_type, source="0", model_path=[str(tiny_model)],
                            compile="auto")
    (processor,) = stylize_jobs.build_processors(args, [load_model(tiny_model)], [], torch.device("cpu"), [])
    assert processor.cached_only is cached_only and processor.compiled is cached_only
