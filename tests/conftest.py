"""Fixtures that make small models, images and videos, so the suite needs no downloads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
import common.model_files  # noqa: E402
from network.loss_network import expected_shapes  # noqa: E402
from network.style_network import StylizingNetwork  # noqa: E402

# Under pytest-xdist (the README's `-n 2`) each worker has a core of its own: a second thread
# would only wait for the other worker's, in this process and in the commands it starts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = ROOT.parent / "shared"
STAND_IN_VGG = SHARED / "weights" / "vgg16_hed_features.pth"
MEDIA = SHARED / "media"

TINY_NETWORK = config.NetworkConfig(channels=(8, 12, 16), stem_kernel=3, kernel=3,
                                    res_blocks=1, final_kernel=3)


def run_script(script: str, *args: str, env: dict | None = None, timeout: int = 300,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run one of the project's entry points as a user would, capturing its output: a script
    ("train.py") or a module ("-m network.export")."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    target = script.split() if script.startswith("-m ") else [str(ROOT / script)]
    return subprocess.run([sys.executable, *target, *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd or ROOT)


ENTRY_POINTS = {"train.py": "train.main", "stylize.py": "stylization.main", "utils.py": "utils"}


def run_entry(script: str, *args: str) -> subprocess.CompletedProcess:
    """One of the project's command lines run in this process, as run_script runs it in a new
    one: its exit status, stdout and stderr. It saves each test the interpreter's start and
    torch's import; run_script stays for tests that need a process of their own (signals,
    environment variables, the real start)."""
    import contextlib
    import importlib
    import io
    import signal
    import warnings

    from common.cli import run_cli

    main = importlib.import_module(ENTRY_POINTS[script]).main
    out, err = io.StringIO(), io.StringIO()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    formatwarning, threads, code = warnings.formatwarning, torch.get_num_threads(), 0
    torch.set_num_threads(1)  # tiny inputs gain nothing from threads
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("always")  # a subprocess would show every warning once
        # shown on stderr as the command shows them, not recorded by pytest
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        try:
            run_cli(main, list(args))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        finally:
            warnings.formatwarning = formatwarning
            torch.set_num_threads(threads)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A smooth, structured RGB image (gradients plus shapes), saved with OpenCV."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 / max(width - 1, 1), yy * 255 / max(height - 1, 1),
                      np.full_like(xx, rng.integers(0, 255))], axis=-1).astype(np.uint8)
    cv2.circle(image, (width // 2, height // 2), max(2, min(width, height) // 4),
               tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image[..., ::-1].copy())
    return path


def write_video(path: Path, frames: int, width: int, height: int, fps: float = 25.0) -> Path:
    """A short video of a square moving across a gradient (mp4v, readable by OpenCV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(frames):
        frame = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1),
                          np.full_like(xx, (i * 20) % 255)], axis=-1).astype(np.uint8)
        x0 = (i * 3) % max(width - 8, 1)
        frame[height // 3: height // 3 + 8, x0: x0 + 8] = (255, 255, 0)
        writer.write(frame)
    writer.release()
    return path


def tiny_checkpoint(path: Path, seed: int = 0, cfg: config.NetworkConfig = TINY_NETWORK) -> Path:
    """A checkpoint of this project's format holding a small random network."""
    torch.manual_seed(seed)
    model = StylizingNetwork(cfg)
    common.model_files.save_checkpoint({"format_version": config.CHECKPOINT_FORMAT_VERSION,
                           "state_dict": model.state_dict(), "network": cfg.to_dict(),
                           "loss_net_choice": "VGG16", "style_image": "test.png",
                           "epoch": 1, "batch": 0, "step": 1}, path)
    return path


def random_vgg_file(path: Path, arch: str, layout: str, seed: int = 0) -> Path:
    """A VGG weight file with the real key layout and shapes but small random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=gen) * (0.05 if key.endswith("weight") else 0.01)
             for key, shape in expected_shapes(arch).items()}
    if layout == "torchvision":
        state = {f"features.{k}": v for k, v in state.items()}
        state["classifier.0.weight"] = torch.zeros(4, 4)  # stands in for the real classifier
    torch.save(state, path)
    return path


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return tiny_checkpoint(tmp_path / "tiny.pth.tar")


@pytest.fixture
def sample_image(tmp_path: Path) -> Path:
    return write_image(tmp_path / "photo.png", 333, 251)


@pytest.fixture
def sample_video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.mp4", frames=12, width=96, height=64, fps=25.0)


# ----------------------------------------------------------------------------- the commands
# Tiny frames gain nothing from threads, and spinning threads crawl on a busy 2-core machine.
QUIET = {"OMP_NUM_THREADS": "1"}


def stylize(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """stylize.py in this process, or in one of its own where the test sets its environment."""
    if env is None:
        return run_entry("stylize.py", *args)
    return run_script("stylize.py", *args, env={**QUIET, **env})


def stylize_quietly(tiny_model: Path, out: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    """stylize.py with the test model, saving to out, and no window."""
    return stylize("--model_path", str(tiny_model), "--output_dir", str(out),
                   "--real_time", "False", *args, **kw)


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames of a video as RGB, and its fps."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames, fps


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A tiny training set (six images, two in a subfolder, and a file that is not one), a
    style image and a random VGG16 file: what train_args points train.py at."""
    frames = tmp_path / "frames"
    for i, (w, h) in enumerate([(80, 60), (64, 64), (50, 90), (70, 41), (64, 48), (90, 70)]):
        write_image(frames / ("sub" if i % 2 else "") / f"f{i}.png", w, h, seed=i)
    (frames / "README.txt").write_text("not an image")
    write_image(tmp_path / "style.png", 64, 64, seed=42)
    random_vgg_file(tmp_path / "vgg16.pth", "VGG16", "caffe")
    return tmp_path


def train_args(ws: Path, *extra: str) -> list[str]:
    return ["--content_dir", str(ws / "frames"), "--style_path", str(ws / "style.png"),
            "--loss_net_path", str(ws / "vgg16.pth"), "--model_dir", str(ws / "models"),
            "--train_output_dir", str(ws / "out"), "--model_name", "m.pth.tar",
            "--img_size", "32", "--style_size", "64", "--batch_size", "2", "--save_freq", "2",
            "--lambda_noise", "1e-2", "--noise_per_img", "50", "--device", "cpu", *extra]
