"""Frames/s of the web page's live camera against stylize.py's webcam path, on the same frames,
model and machine, in one run.

    python benchmarks/web_live_speed.py --model trained_models/mosaic_fast.pth.tar \\
        --video ../shared/media/video/bikes.mp4 --seconds 20

The page: `python app.py` serving, headless Chromium (Debian's chromium package, driven by
Playwright) with its fake camera playing the clip at 640x360 and 30 frames/s, the Live camera
tab running the model; the rate is stylised frames drawn on the page per second, counted after
a warm-up, with the processor time the server and Chromium used meanwhile (Linux's /proc). The
server alone: the same app.py sent the clip's frames as JPEG over its WebSocket by a Python
client, as many in flight as the page keeps, no browser (what the server can serve).
stylize.py's webcam path: benchmarks/stylize_speed.live_rate (stylize_live and the Processor
stylize.py builds for a camera, fed the same frames at 30 frames/s, no window).

Eager on all three paths (app.py gets an empty compile cache) unless --compile_cache DIR: then
stylize.py's webcam path runs as with `--compile True` (its package for the camera's frame size
built into DIR first if missing, measured first), and app.py is started with that cache, from
which the page's camera loads the same package (as it does after such a run).

With --target_fps N, all three paths aim for N frames/s as `stylize.py --target_fps N` does
(the page's "Aim for" menu): each stylises a smaller picture to keep up, and the size each
ended at is printed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
from benchmarks.stylize_speed import live_rate  # noqa: E402
from common.devices import keep_freed_memory  # noqa: E402
from common.model_files import model_stem  # noqa: E402
from stylization.content_source.video import VideoSource  # noqa: E402
from stylization.sink import find_ffmpeg  # noqa: E402

FPS = 30
IN_FLIGHT = config.WEB_LIVE_FRAMES_AT_ONCE + 1  # frames the page keeps in flight


def camera_clip(video: Path, folder: Path, seconds: float) -> tuple[Path, Path]:
    """The clip at 640x360 and FPS frames/s: as MP4 for live_rate, as Y4M for Chromium."""
    mp4, y4m = folder / "camera.mp4", folder / "camera.y4m"
    scale = ["-vf", f"scale=640:360,fps={FPS}", "-t", str(seconds)]
    subprocess.run([find_ffmpeg(), "-v", "error", "-stream_loop", "-1", "-i", str(video), *scale,
                    "-c:v", "libx264", "-an", str(mp4)], check=True)
    subprocess.run([find_ffmpeg(), "-v", "error", "-i", str(mp4), "-pix_fmt", "yuv420p", str(y4m)], check=True)
    return mp4, y4m


@contextlib.contextmanager
def app_server(model: Path, compile_cache: Path | None):
    """`python app.py` serving a models folder that holds only model, with compile_cache as its
    Inductor cache (None: an empty one); yields its port and process id."""
    with tempfile.TemporaryDirectory() as models, tempfile.TemporaryDirectory() as empty, \
            socket.socket() as probe:
        shutil.copy(model, Path(models) / model.name)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--models_dir",
                                   models, "--open_browser", "False"], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(compile_cache or empty)})
        server.stdout.readline()
        try:
            yield port, server.pid
        finally:
            server.terminate()
            server.wait()


def client_rate(model: Path, mp4: Path, seconds: float, warmup: float, compile_cache: Path | None,
                target_fps: float | None = None) -> tuple[float, str | None]:
    """Frames/s app.py's live socket answers to a Python client (JPEG frames of mp4's first ten
    seconds, quality 85 as the page sends them, as many in flight as the page keeps), counted
    after the first warmup x FPS answers, and the last size the server said it ran at."""
    import websockets
    from PIL import Image

    frames = []
    with VideoSource(mp4) as source:
        for _, frame in itertools.islice(source.frames(), FPS * 10):
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, "JPEG", quality=85)
            frames.append(buffer.getvalue())

    async def exchange(port: int) -> float:
        for _ in range(100):
            with contextlib.suppress(OSError):
                socket_ = await websockets.connect(f"ws://127.0.0.1:{port}/api/live", max_size=None)
                break
            await asyncio.sleep(0.2)
        await socket_.send(json.dumps({"style": model_stem(model), "target_fps": target_fps or 0}))
        sent, answered, start, size = IN_FLIGHT, 0, None, None
        for frame in frames[:IN_FLIGHT]:
            await socket_.send(frame)
        while start is None or time.perf_counter() - start < seconds:
            answer = await socket_.recv()
            if isinstance(answer, str):  # the state that changed; the size a frames/s target runs at
                size = json.loads(answer).get("live_size", size)
                continue
            answered += 1
            if start is None and answered >= warmup * FPS:
                start, counted_from = time.perf_counter(), answered
            await socket_.send(frames[sent % len(frames)])
            sent += 1
        rate = (answered - counted_from) / (time.perf_counter() - start)
        await socket_.close()
        return rate, size

    with app_server(model, compile_cache) as (port, _):
        return asyncio.run(exchange(port))


def cpu_seconds(pids: list[int]) -> float:
    """Processor seconds (user and system) the processes have used so far, from Linux's /proc."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def browser_pids() -> list[int]:
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if "chrom" in comm.read_text():
                pids.append(int(comm.parent.name))
    return pids


def page_rate(model: Path, y4m: Path, seconds: float, warmup: float, compile_cache: Path | None,
              target_fps: float | None = None) -> tuple[float, float, float, str]:
    """Frames/s drawn on the page, the cores the server and Chromium used meanwhile, and what
    the page said last (frames/s, and the size under a target)."""
    from playwright.sync_api import sync_playwright

    with app_server(model, compile_cache) as (port, server):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={y4m}"])
            page = browser.new_page()
            for _ in range(100):
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except Exception:  # noqa: BLE001 - the server is still starting
                    time.sleep(0.2)
            page.wait_for_selector(".style img")
            page.click("button.tab[data-tab='live']")
            if target_fps:
                page.select_option("#live-target", f"{target_fps:g}")
            page.click("#live-start")
            count = "Number(document.getElementById('live-out').dataset.frames || 0)"
            page.wait_for_function(f"{count} > 0", timeout=60000)
            time.sleep(warmup)
            browser_processes = browser_pids()
            used = cpu_seconds([server]), cpu_seconds(browser_processes)
            first, start = page.evaluate(count), time.perf_counter()
            time.sleep(seconds)
            frames, elapsed = page.evaluate(count) - first, time.perf_counter() - start
            server_cores = (cpu_seconds([server]) - used[0]) / elapsed
            browser_cores = (cpu_seconds(browser_processes) - used[1]) / elapsed
            said = page.text_content("#live-fps")
            browser.close()
    return frames / elapsed, server_cores, browser_cores, said


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "trained_models" / "mosaic_fast.pth.tar"))
    p.add_argument("--video", required=True, help="a clip to play as the camera")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each is measured")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds left out first on the page")
    p.add_argument("--compile_cache", metavar="DIR", help="compiled on every path, from this cache")
    p.add_argument("--target_fps", type=float, choices=(10, 15, 24, 30),
                   help="aim every path at this rate (the page's 'Aim for' menu, stylize.py --target_fps)")
    args = p.parse_args()
    cache = Path(args.compile_cache).resolve() if args.compile_cache else None
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    with tempfile.TemporaryDirectory() as folder:
        mp4, y4m = camera_clip(Path(args.video), Path(folder), args.seconds + args.warmup + 10)
        import torch
        keep_freed_memory()  # as stylize.py does, for live_rate in this process
        # First: with a cache, it leaves the package there for the page.
        shown, _ = live_rate(mp4, Path(args.model), torch.device("cpu"), FPS, args.seconds, cache, args.target_fps)
        web, server_cores, browser_cores, said = page_rate(Path(args.model), y4m, args.seconds, args.warmup, cache,
                                                           args.target_fps)
        served, served_size = client_rate(Path(args.model), mp4, args.seconds, args.warmup, cache, args.target_fps)
    how = "compiled (--compile_cache)" if cache else "eager"
    if args.target_fps:
        how += f", aiming at {args.target_fps:g} frames/s"
    print(f"\n{cpu}, 640x360 camera at {FPS} frames/s, {Path(args.model).name}, {how}, {args.seconds:g} s each\n")
    print("| path | frames/s shown |")
    print("| :-- | --: |")
    print(f"| stylize.py --content_type webcam (stylize_live) | {shown:.1f} |")
    print(f"| app.py's live socket alone (a Python client, no browser) | {served:.1f} |")
    print(f"| the page's Live camera (app.py, headless Chromium) | {web:.1f} |")
    if args.target_fps:
        print(f"\nsizes at the end: the socket alone {served_size}; the page said '{said}'")
    print(f"\nserver alone / stylize.py: {served / shown:.2f}; page / stylize.py: {web / shown:.2f}")
    print(f"while the page ran: the server used {server_cores:.2f} cores, Chromium {browser_cores:.2f}, "
          f"of the {os.cpu_count()} this machine has")


if __name__ == "__main__":
    main()
