"""The web page (python app.py) in a real browser: Debian's Chromium driven by Playwright, as
a user drives it. Skipped where either is missing; .ci/run installs both."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, write_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt install chromium)")
MODELS = ("mosaic_fast.pth.tar", "candy_fast.pth.tar")


def ffmpeg() -> str:
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A photo, a short clip with sound, a camera feed for Chromium's fake camera, a bad file."""
    folder = tmp_path_factory.mktemp("media")
    write_image(folder / "photo.png", 300, 200, seed=1)
    subprocess.run([ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x96:rate=10:duration=1",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-shortest", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", str(folder / "clip.mp4")], check=True)
    subprocess.run([ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=15:duration=2",
                    "-pix_fmt", "yuv420p", str(folder / "camera.y4m")], check=True)
    (folder / "notes.jpg").write_text("this is not a picture")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    models = tmp_path_factory.mktemp("models")
    for name in MODELS:
        shutil.copy(ROOT / "trained_models" / name, models / name)
    port = free_port()
    # Its compiled packages (the live camera's Speed up) in a folder of its own.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path_factory.mktemp("inductor"))}
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--models_dir",
                                str(models), "--open_browser", "False"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    assert "the page is at" in process.stdout.readline()
    address = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    yield address
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(media):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={media / 'camera.y4m'}", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(server)
    page.wait_for_selector(".style img")
    yield page
    context.close()


def test_a_photo_comes_back_stylised_at_its_size_and_a_bad_upload_says_why(page, media):
    page.set_input_files("#photo-file", str(media / "notes.jpg"))
    page.click("#photo-go")
    page.wait_for_selector("#photo-message.error")
    assert "not an image" in page.text_content("#photo-message")

    page.set_input_files("#photo-file", str(media / "photo.png"))
    page.select_option("#photo-size", "0")
    page.click("#photo-go")
    page.wait_for_function("document.querySelector('img.result') && document.querySelector('img.result').naturalWidth > 0")
    size = page.evaluate("[document.querySelector('img.result').naturalWidth, document.querySelector('img.result').naturalHeight]")
    assert size == [300, 200]
    with page.expect_download() as download:
        page.click("#photo-results a[download]")
    saved = Image.open(download.value.path())
    assert saved.size == (300, 200)
    photo = np.asarray(Image.open(media / "photo.png").convert("RGB"), dtype=np.float32)
    assert np.abs(np.asarray(saved.convert("RGB"), dtype=np.float32) - photo).mean() > 10  # stylised


def test_several_styles_make_a_contact_sheet(page, media):
    assert page.locator(".style.selected").count() == 1  # the first style, to start with
    page.click(".style:not(.selected)")
    page.set_input_files("#photo-file", str(media / "photo.png"))
    page.click("#photo-go")
    page.wait_for_selector("figcaption:has-text('contact sheet')")
    assert page.locator("img.result").count() == 3  # the sheet and both styles


def test_a_clip_comes_back_playable_with_its_sound(page, media):
    page.click("button.tab[data-tab='video']")
    page.set_input_files("#video-file", str(media / "broken.mp4"))
    page.click("#video-go")
    page.wait_for_selector("#video-message.error", timeout=60000)
    assert "video" in page.text_content("#video-message")

    page.set_input_files("#video-file", str(media / "clip.mp4"))
    page.click("#video-go")
    page.wait_for_selector("#video-out", timeout=120000)
    page.wait_for_function("document.getElementById('video-out').readyState >= 2", timeout=30000)
    assert page.evaluate("document.getElementById('video-out').duration") == pytest.approx(1.0, abs=0.15)
    page.evaluate("document.getElementById('video-out').play()")
    page.wait_for_function("document.getElementById('video-out').currentTime > 0.2", timeout=30000)
    with page.expect_download() as download:
        page.click("#video-result a[download]")
    streams = subprocess.run([ffmpeg(), "-hide_banner", "-i", download.value.path()],
                             capture_output=True, text=True).stderr
    assert "Video: h264" in streams and "Audio: aac" in streams


def test_the_live_camera_is_stylised_and_takes_style_and_look_while_it_runs(page):
    page.click("button.tab[data-tab='live']")
    page.click("#live-start")
    page.wait_for_function("Number(document.getElementById('live-out').dataset.frames || 0) >= 5", timeout=60000)
    page.click(".style:not(.selected)")
    page.fill("#live-strength", "0.5")
    page.dispatch_event("#live-strength", "input")
    page.check("#live-colors")
    page.fill("#live-smooth", "0.4")
    page.dispatch_event("#live-smooth", "input")
    page.select_option("#live-target", "10")
    seen = int(page.evaluate("document.getElementById('live-out').dataset.frames"))
    page.wait_for_function(f"Number(document.getElementById('live-out').dataset.frames) >= {seen + 5}", timeout=60000)
    assert "frames/s, stylised at" in page.text_content("#live-fps")  # the size the target runs at
    assert page.evaluate("document.getElementById('live-out').width") == 320
    mean = page.evaluate("""(() => { const c = document.getElementById('live-out');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let sum = 0; for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
        return sum / (d.length / 4); })()""")
    assert mean > 30  # a picture was drawn, not an empty (black) canvas
    page.click("#live-stop")


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="compiling on the CPU builds C++ kernels: no C++ compiler here")
def test_speed_up_compiles_the_live_style_and_the_camera_goes_on_compiled(page):
    page.click("button.tab[data-tab='live']")
    page.click("#live-start")
    page.wait_for_function("Number(document.getElementById('live-out').dataset.frames || 0) >= 3", timeout=60000)
    assert "compiled" not in page.text_content("#live-fps")
    page.click("#live-speed-up")
    page.wait_for_selector("#live-message:has-text('Compiling this style'), #live-message:has-text('Compiled:')",
                           timeout=30000)
    # A real build: a minute or two on 2 cores, the camera going on meanwhile.
    page.wait_for_function("document.getElementById('live-fps').textContent.includes('compiled')", timeout=400000)
    assert page.is_hidden("#live-speed-up")
    seen = int(page.evaluate("document.getElementById('live-out').dataset.frames"))
    page.wait_for_function(f"Number(document.getElementById('live-out').dataset.frames) >= {seen + 5}", timeout=60000)
    page.click("#live-stop")
    page.click("#live-start")  # a new connection loads the package at its first frame
    page.wait_for_function("document.getElementById('live-fps').textContent.includes('compiled')", timeout=60000)
    page.click("#live-stop")


@pytest.fixture(scope="module")
def training_server(tmp_path_factory) -> str:
    """A server that can train: a random VGG file and, as the model new styles start from, a
    tiny network (so that a step takes a moment)."""
    from conftest import random_vgg_file, tiny_checkpoint
    import config

    folder = tmp_path_factory.mktemp("training")
    (folder / "models").mkdir()
    tiny_checkpoint(folder / "models" / config.NEW_STYLE["init_model"])
    vgg = random_vgg_file(folder / "vgg16.pth", "VGG16", "caffe")
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--models_dir",
                                str(folder / "models"), "--vgg", str(vgg), "--open_browser", "False"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert "the page is at" in process.stdout.readline()
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


def wait_for(client, url: str, states: set[str], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(url).json()
        if status["state"] in states:
            return status
        time.sleep(0.5)
    raise AssertionError(f"{url} stayed {status}")


def test_a_new_style_trains_stops_resumes_and_joins_the_styles(training_server, media):
    import httpx

    with httpx.Client(base_url=training_server, timeout=60) as client:
        for _ in range(50):
            try:
                client.get("/api/models")
                break
            except httpx.ConnectError:
                time.sleep(0.2)
        assert client.get("/api/models").json()["training"]["ok"]
        photos = [("photos", (f"p{i}.png", (media / "photo.png").read_bytes(), "image/png")) for i in range(3)]
        files = [("painting", ("paint.png", (media / "photo.png").read_bytes(), "image/png")), *photos]
        refused = client.post("/api/train", data={"name": "../evil", "minutes": "0.3"}, files=files)
        assert refused.status_code == 400 and "letters, digits" in refused.json()["detail"]

        job = client.post("/api/train", data={"name": "mine", "minutes": "0.4"}, files=files).json()["job"]
        status = wait_for(client, f"/api/train/{job}", {"running"})
        deadline = time.monotonic() + 120
        while status["seconds_left"] is None and time.monotonic() < deadline:  # it has taken steps
            time.sleep(0.5)
            status = client.get(f"/api/train/{job}").json()
        assert client.post(f"/api/train/{job}/stop").json()["state"] == "stopped"
        assert client.post(f"/api/train/{job}/resume").json()["state"] == "running"
        status = wait_for(client, f"/api/train/{job}", {"done", "failed"})
        assert status["state"] == "done", status
        assert "mine" in [m["id"] for m in client.get("/api/models").json()["models"]]
        assert client.get(f"/api/train/{job}/losses").headers["content-type"] == "image/png"
        assert client.get(f"/api/train/{job}/sample").headers["content-type"] == "image/jpeg"
        taken = client.post("/api/train", data={"name": "mine", "minutes": "0.3"}, files=files)
        assert taken.status_code == 400 and "exists already" in taken.json()["detail"]


def test_a_second_tab_works_beside_the_first_and_huge_uploads_are_refused(browser, server, media):
    import httpx

    first, second = browser.new_page(), browser.new_page()
    for page in (first, second):
        page.goto(server)
        page.wait_for_selector(".style img")
    first.click("button.tab[data-tab='video']")
    first.set_input_files("#video-file", str(media / "clip.mp4"))
    first.click("#video-go")
    second.set_input_files("#photo-file", str(media / "photo.png"))
    second.click("#photo-go")
    second.wait_for_selector("img.result")
    first.wait_for_selector("#video-out", timeout=120000)
    for page in (first, second):
        page.close()
    import config
    huge = bytes(int(config.WEB_LIMITS["photo_mb"] * 1e6) + 1)
    answer = httpx.post(f"{server}api/photo", data={"styles": "mosaic_fast"},
                        files={"file": ("huge.jpg", huge, "image/jpeg")}, timeout=120)
    assert answer.status_code == 413 and "larger than this page takes" in answer.json()["detail"]


def test_a_stopped_runs_exit_does_not_mark_its_resumed_run_failed(tmp_path):
    """Stop, then Resume at once: the stopped run's watcher may see its run's end only after
    the resumed run has started, and that exit status (an interrupted run's) must not become
    the job's. Here that order is made certain: the resumed run is running when the watcher of
    the first, which exited with status 1, looks."""
    from webapp.training import TrainingBoard, TrainJob

    board = TrainingBoard(tmp_path, tmp_path, None, None)
    job = board.jobs["j"] = TrainJob("mine", tmp_path, ["sh", "-c", "sleep 5"], 1.0)
    stopped = subprocess.Popen(["sh", "-c", "exit 1"], stdout=subprocess.PIPE)
    board._launch(job, [])  # the resumed run
    board._watch(job, stopped)
    assert job.state == "running" and job.error is None
    board.stop("j")
    assert job.state == "stopped"
