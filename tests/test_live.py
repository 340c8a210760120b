"""The page's live camera without a browser: webapp/live.py's settings and frames, and the
socket that carries them (FastAPI's TestClient). The page itself: tests/test_web_page.py."""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image

import config
from conftest import ROOT, write_image
from stylization import pacing
from stylization.blend import Look
from stylization.stylizer import Stylizer
from webapp import live
from webapp.live import LiveCamera, LiveSettings, parse_live_settings


def jpeg_of(frame: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def answered_by(camera: LiveCamera, jpeg: bytes) -> bytes:
    """One frame through both halves, as the socket takes it."""
    return camera.finish(*camera.stylise(jpeg))


def picture_of(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)


@pytest.fixture
def frames(tmp_path) -> list[np.ndarray]:
    """Two camera frames as the server sees them (after the page's JPEG): a picture, then the
    same a little darker (not a scene cut, so the smoother blends)."""
    first = np.asarray(Image.open(write_image(tmp_path / "frame.png", 64, 48, seed=1)).convert("RGB"))
    pictures = [first, (first * 0.85).astype(np.uint8)]
    return [np.asarray(Image.open(io.BytesIO(jpeg_of(p)))) for p in pictures]


@pytest.fixture
def place(tmp_path):
    """The page's server's folders, with mosaic_tiny as its one style."""
    from webapp import server

    shutil.copy(ROOT / "trained_models" / "mosaic_tiny.pth.tar", tmp_path / "mosaic_tiny.pth.tar")
    write_image(tmp_path / "sample.png", 64, 48, seed=3)
    return server.Place(models_dir=tmp_path, work_dir=tmp_path / "work", sample_photo=tmp_path / "sample.png")


@pytest.fixture
def camera(tiny_model) -> LiveCamera:
    def model_file(style: str):
        if style != "tiny":
            raise HTTPException(404, f"no style named {style!r}")
        return tiny_model
    connection = LiveCamera(model_file)
    connection.update(json.dumps({"style": "tiny"}))
    return connection


def test_live_settings_take_what_the_controls_send_and_ignore_the_rest():
    sent = {"style": "mosaic_tiny", "strength": 0.5, "preserve_color": True, "smooth": 0.6, "target_fps": 15}
    assert parse_live_settings(json.dumps(sent)) == {**sent, "target_fps": 15.0}
    wrong = {"strength": 1.5, "preserve_color": "yes", "smooth": 1.0, "target_fps": -1, "path": "/etc"}
    assert parse_live_settings(json.dumps(wrong)) == {}
    assert parse_live_settings(json.dumps({"strength": True, "target_fps": 1000})) == {}
    assert parse_live_settings("[1, 2]") == {} and parse_live_settings("not json") == {}


def test_live_threads_run_pytorch_on_one_cpu_thread_each_and_leave_the_others_their_count():
    import threading

    import torch
    from webapp.server import live_threads

    before = torch.get_num_threads()
    pool = live_threads(2)
    try:
        counts = [pool.submit(torch.get_num_threads).result() for _ in range(4)]
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
    finally:
        pool.shutdown()
    assert counts == [1] * 4 and torch.get_num_threads() == before and later == [before]


@pytest.mark.filterwarnings("ignore:Using `httpx`")  # starlette's TestClient on httpx 0.x
def test_frames_sent_without_waiting_are_stylised_side_by_side_and_answered_in_their_order(
        place, frames, monkeypatch):
    import threading
    import time

    from fastapi.testclient import TestClient
    from webapp import server

    model = server.Stylizer(place.models_dir / "mosaic_tiny.pth.tar")
    pictures = [frames[0], frames[1], frames[0][::-1].copy()]
    expected = [model.image(np.asarray(Image.open(io.BytesIO(jpeg_of(p))))) for p in pictures]
    running, most = [0], [0]
    count = threading.Lock()
    stylise = LiveCamera.stylise

    def slow_stylise(camera, jpeg):  # the first frame slowest, so a later one is out first
        with count:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.4 if jpeg == sent[0] else 0.1)
        try:
            return stylise(camera, jpeg)
        finally:
            with count:
                running[0] -= 1

    monkeypatch.setattr(LiveCamera, "stylise", slow_stylise)
    sent = [jpeg_of(p) for p in pictures]
    with TestClient(server.create_app(place)) as client, client.websocket_connect("/api/live") as socket:
        socket.send_text(json.dumps({"style": "mosaic_tiny"}))
        for jpeg in sent:
            socket.send_bytes(jpeg)
        answers = [picture_of(socket.receive_bytes()) for _ in sent]
    assert most[0] == config.WEB_LIVE_FRAMES_AT_ONCE
    for answer, want in zip(answers, expected):
        assert np.abs(answer - want).mean() < 8


@pytest.fixture
def quick_compiles(tmp_path, monkeypatch) -> list:
    """Compiling as on a machine with a C++ compiler, the build and load stood in for (a real
    one: tests/test_compile_cache.py): the package file is written, and its step runs the graph
    the build was given and records the frames' shapes. Returns [(graph, example shape)]."""
    from stylization import compile_cache, processor, stylizer

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(stylizer, "compiles_here", lambda device: True)
    monkeypatch.setattr(processor, "build_elsewhere", lambda build, *args: build(*args))  # here instead
    built = []

    def build(step, example, path):
        built.append((step, tuple(example.shape)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"a package")

    def load(path):
        graph = built[-1][0]
        return lambda frames: (built.append(("ran", tuple(frames.shape))), graph(frames))[1]
    monkeypatch.setattr(compile_cache, "_build", build)
    monkeypatch.setattr(compile_cache, "_load", load)
    return built


def test_speed_up_compiles_the_style_for_the_camera_s_size_and_its_frames_then_run_compiled(
        camera, frames, tiny_model, quick_compiles):
    import torch
    from network.fast_inference import ChannelGroupNorm
    from network.formats import load_model
    from stylization import compile_cache

    camera.speed_up()
    assert camera.speed_up_state == "failed: start the camera first"
    eager = answered_by(camera, jpeg_of(frames[1]))
    assert not camera.compiled and quick_compiles == []  # no package for 64x48: eager, nothing built
    assert camera.report() == {"live_size": None, "compiled": False, "speed_up": "failed: start the camera first"}
    camera.speed_up()
    assert camera.speed_up_state == "done" and camera.compiled and camera.report()["compiled"]
    (graph, shape), = quick_compiles
    # The graph stylize.py --compile True compiles (the compiler's norms), not the eager one's,
    # under the key such a run looks for.
    assert shape == (1, 48, 64, 3) and not any(isinstance(m, ChannelGroupNorm) for m in graph.modules())
    processor = camera.stylizers["tiny"].processor
    assert any(isinstance(m, ChannelGroupNorm) for m in processor.model.modules())
    key = compile_cache.compile_key(compile_cache.model_id(load_model(tiny_model)), processor.dtype,
                                    torch.device("cpu"), (48, 64), 1)
    assert compile_cache.is_warm(key)
    compiled = answered_by(camera, jpeg_of(frames[1]))
    assert quick_compiles[1:] == [("ran", (1, 48, 64, 3))]
    assert np.abs(picture_of(compiled) - picture_of(eager)).mean() < 2


def test_a_frame_that_fails_unexpectedly_ends_the_camera_with_its_message(camera):
    """Not frames that never come: the page is told, and the connection closed."""
    import asyncio

    from webapp.server import answer_frames

    class Socket:
        def __init__(self):
            self.sent, self.closed = [], False

        async def send_text(self, text):
            self.sent.append(json.loads(text))

        async def close(self):
            self.closed = True

    async def run(socket):
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(NameError("module is not installed as a submodule"))
        queue = asyncio.Queue()
        queue.put_nowait(failed)
        await asyncio.wait_for(answer_frames(socket, camera, queue), 5)

    socket = Socket()
    asyncio.run(run(socket))
    assert socket.closed and "NameError: module is not installed" in socket.sent[0]["error"]


def fail_with_the_process_id() -> None:
    raise ValueError(os.getpid())


def test_a_package_is_built_in_a_process_of_its_own_whose_failure_comes_back():
    """Tracing the network for the compiler swaps PyTorch's module calls process-wide: a build
    beside the camera's frames goes to another process."""
    from stylization.processor import build_elsewhere

    with pytest.raises(ValueError) as failure:
        build_elsewhere(fail_with_the_process_id)
    assert failure.value.args[0] != os.getpid()


def test_a_failed_speed_up_says_why_and_the_camera_goes_on(camera, frames, quick_compiles, monkeypatch):
    from stylization import compile_cache

    def fail(step, example, path):
        raise RuntimeError("C++ compile failed\nmany more lines")
    monkeypatch.setattr(compile_cache, "_build", fail)
    answered_by(camera, jpeg_of(frames[0]))
    camera.speed_up()
    assert camera.speed_up_state == "failed: C++ compile failed" and not camera.compiled
    assert picture_of(answered_by(camera, jpeg_of(frames[0]))).shape == frames[0].shape


@pytest.mark.filterwarnings("ignore:Using `httpx`")  # starlette's TestClient on httpx 0.x
def test_the_socket_speeds_up_on_request_and_tells_the_page_once_frames_run_compiled(place, frames, quick_compiles):
    from fastapi.testclient import TestClient
    from webapp import server

    told = []
    with TestClient(server.create_app(place)) as client, client.websocket_connect("/api/live") as socket:
        socket.send_text(json.dumps({"style": "mosaic_tiny"}))
        socket.send_bytes(jpeg_of(frames[0]))
        assert picture_of(socket.receive_bytes()).shape == frames[0].shape
        socket.send_text(json.dumps({"speed_up": True}))
        socket.send_bytes(jpeg_of(frames[0]))
        for _ in range(400):  # a frame at a time until the server says they run compiled
            message = socket.receive()
            if message.get("text"):
                told.append(json.loads(message["text"]))
            elif {"compiled": True} in told and {"speed_up": "done"} in told:
                break
            else:
                assert picture_of(message["bytes"]).shape == frames[0].shape
                socket.send_bytes(jpeg_of(frames[0]))
    assert {"compiled": True} in told and {"speed_up": "done"} in told


def as_answered(out: np.ndarray) -> np.ndarray:
    """A stylised frame as the socket answers it (its JPEG)."""
    return picture_of(jpeg_of(out, config.WEB_LIMITS["live_jpeg_quality"]))


def test_the_look_is_the_command_line_s_and_the_smoother_remembers_the_last_frame(camera, frames, tiny_model):
    sent = [jpeg_of(f) for f in frames]
    seen = [np.asarray(Image.open(io.BytesIO(jpeg))) for jpeg in sent]  # what the server decodes
    stylised = [Stylizer(tiny_model).processor([f])[0] for f in seen]
    camera.update(json.dumps({"strength": 0.7, "preserve_color": True, "smooth": 0.6}))
    answers = [picture_of(answered_by(camera, jpeg)) for jpeg in sent]
    finish = Look(strength=0.7, preserve_color=True, smooth=0.6).start()
    expected = [as_answered(finish(f, out)) for f, out in zip(seen, stylised)]
    unsmoothed = as_answered(Look(strength=0.7, preserve_color=True).start()(seen[1], stylised[1]))
    for answer, want in zip(answers, expected):
        assert answer.shape == want.shape and np.abs(answer - want).mean() < 1
    assert np.abs(unsmoothed - expected[1]).mean() > 3  # the second frame was blended with the first
    camera.update(json.dumps({"smooth": 0}))  # a new look starts afresh: no memory of frame 1
    assert np.abs(picture_of(answered_by(camera, sent[1])) - unsmoothed).mean() < 1


def test_a_frames_per_second_target_runs_the_network_smaller_and_answers_at_the_camera_s_size(
        camera, frames, monkeypatch):
    monkeypatch.setitem(pacing.config.TARGET_FPS, "window_s", 0.0)  # reconsider at every frame
    monkeypatch.setattr(pacing, "next_side", lambda side, rate, target, full_side: 32)  # as if too slow
    seen = []
    processor = camera.stylizers.setdefault("tiny", Stylizer(camera.model_file("tiny"), camera=True)).processor
    monkeypatch.setattr(camera.stylizers["tiny"], "processor",
                        lambda batch: seen.append(batch[0].shape) or processor(batch))
    for _ in range(2):
        assert picture_of(answered_by(camera, jpeg_of(frames[0]))).shape == frames[0].shape
    assert camera.paced_size is None  # no target yet: the camera's size
    camera.update(json.dumps({"target_fps": 24}))
    for _ in range(2):
        assert picture_of(answered_by(camera, jpeg_of(frames[0]))).shape == frames[0].shape
    assert camera.paced_size == (32, 24) and seen[-1] == (24, 32, 3)
    camera.update(json.dumps({"target_fps": 0}))
    answered_by(camera, jpeg_of(frames[0]))
    assert camera.paced_size is None and seen[-1] == frames[0].shape


def test_a_style_the_server_does_not_offer_and_a_frame_that_is_not_a_jpeg_are_refused(camera, frames):
    camera.update(json.dumps({"style": "../../etc/passwd"}))
    with pytest.raises(HTTPException, match="no style named"):
        answered_by(camera, jpeg_of(frames[0]))
    camera.update(json.dumps({"style": "tiny"}))
    with pytest.raises(HTTPException, match="not a JPEG"):
        answered_by(camera, b"\x00" * 1000)
    assert LiveSettings().look.is_identity


def test_the_page_s_camera_tab_names_the_tiny_model_on_a_cpu_without_native_bf16(monkeypatch):
    offered = ["mosaic_fast", "candy_tiny", "udnie_tiny"]
    monkeypatch.setattr(live.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(live, "has_native_bf16_cpu", lambda: False)
    note = live.live_note(offered)
    assert "candy_tiny, udnie_tiny" in note and "mosaic_fast" not in note  # only the tiny ones offered
    assert "aim for a frame rate" in note
    assert "--network tiny" in live.live_note(["mosaic_fast"])  # none offered: where to get one
    monkeypatch.setattr(live, "has_native_bf16_cpu", lambda: True)
    assert live.live_note(offered) is None
    monkeypatch.setattr(live, "has_native_bf16_cpu", lambda: False)
    monkeypatch.setattr(live.torch.cuda, "is_available", lambda: True)
    assert live.live_note(offered) is None


@pytest.mark.filterwarnings("ignore:Using `httpx`")  # starlette's TestClient on httpx 0.x
def test_the_live_socket_answers_frames_tells_the_paced_size_and_refuses_a_frame_that_is_not_a_jpeg(
        place, frames, monkeypatch):
    from fastapi.testclient import TestClient
    from webapp import server

    expected = server.Stylizer(place.models_dir / "mosaic_tiny.pth.tar").image(frames[0])
    monkeypatch.setitem(pacing.config.TARGET_FPS, "window_s", 0.0)
    monkeypatch.setattr(pacing, "next_side", lambda side, rate, target, full_side: 32)
    with TestClient(server.create_app(place)) as client, client.websocket_connect("/api/live") as socket:
        socket.send_text(json.dumps({"style": "mosaic_tiny"}))
        socket.send_bytes(jpeg_of(frames[0]))
        picture = picture_of(socket.receive_bytes())
        assert picture.shape == frames[0].shape and np.abs(picture - expected).mean() < 8
        socket.send_text(json.dumps({"target_fps": 10}))
        for size in ("64x48", "32x24"):  # the camera's size first, then the paced one
            socket.send_bytes(jpeg_of(frames[0]))
            assert picture_of(socket.receive_bytes()).shape == frames[0].shape
            assert json.loads(socket.receive_text()) == {"live_size": size}
        socket.send_bytes(b"\x00" * 1000)  # not a picture
        error = json.loads(socket.receive_text())["error"]
    assert "not a JPEG" in error and "reload the page" in error
