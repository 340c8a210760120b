"""Faults of real machines, through the real command line: stylize.py ended by SIGTERM or
SIGHUP (also with its terminal gone), a full disk under videos, images, checkpoints and loss
logs, and unreadable images in a training set."""
from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import config
import common.errors
import common.files
from common.model_files import read_checkpoint
from conftest import (QUIET, ROOT, files_in, read_video, run_script, stylize_quietly, train_args,
                      write_image, write_video)
from stylization.sink import VideoSink, find_ffmpeg
from test_pipeline import decode_audio
from train.dataset import UnreadableImages, allowed_unreadable

FFMPEG = find_ffmpeg()
LONG_FRAMES = 3000  # the tiny model at 64x48 takes seconds for them: a signal lands mid-run


# ----------------------------------------------------------------------------- signals
def long_clip(folder: Path, with_sound: bool) -> Path:
    """A 64x48 clip of LONG_FRAMES frames at 25 fps, with a tone throughout when with_sound."""
    if not with_sound:
        return write_video(folder / "long.mp4", frames=LONG_FRAMES, width=64, height=48)
    path = folder / "long.mp4"
    seconds = LONG_FRAMES / 25
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=25:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=22050:duration={seconds}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
                   check=True)
    return path


class Output:
    """What a process writes to a pipe or terminal, read as it comes (so it never blocks)."""

    def __init__(self, fd: int):
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self._thread.start()

    def _read(self, fd: int) -> None:
        try:
            while chunk := os.read(fd, 4096):
                self.text += chunk.decode(errors="replace")
        except OSError:
            pass  # the terminal was closed

    def frames_done(self) -> int:
        counts = re.findall(rf"(\d+)/{LONG_FRAMES} ", self.text)  # the progress bar
        return int(counts[-1]) if counts else 0

    def join(self) -> str:
        self._thread.join(timeout=60)
        return self.text


def start_stylizing(clip: Path, out: Path, model: Path, progress_fd: int, **popen) -> subprocess.Popen:
    """stylize.py on clip, with its stderr (the progress bar) on progress_fd."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "stylize.py"), "--content_type", "video", "--source", str(clip),
         "--model_path", str(model), "--output_dir", str(out), "--real_time", "False"],
        cwd=ROOT, env={**os.environ, **QUIET, "PYTHONUNBUFFERED": "1"}, stderr=progress_fd, **popen)


def wait_for_frames(process: subprocess.Popen, output: Output, at_least: int = 20) -> None:
    """Until the progress bar shows at_least frames stylised (the run still going)."""
    deadline = time.monotonic() + 120
    while output.frames_done() < at_least and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, output.text


def check_partial_video(out: Path, with_sound: bool) -> None:
    assert files_in(out) == {"long_tiny.mp4"}  # under its name, no temporary file left
    frames, fps = read_video(out / "long_tiny.mp4")
    assert 0 < len(frames) < LONG_FRAMES
    if with_sound:
        audio = decode_audio(out / "long_tiny.mp4", 22050)
        assert abs(len(audio) / 22050 - len(frames) / fps) < 0.2  # sound as long as the pictures
        assert np.abs(audio).max() > 0.1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_keep_a_partial_video_with_its_sound(tmp_path, tiny_model, signum):
    with_sound = FFMPEG is not None
    clip, out = long_clip(tmp_path, with_sound), tmp_path / "out"
    read_end, write_end = os.pipe()
    process = start_stylizing(clip, out, tiny_model, write_end, stdout=subprocess.PIPE, text=True)
    os.close(write_end)
    stderr = Output(read_end)
    wait_for_frames(process, stderr)
    process.send_signal(signum)
    stdout, _ = process.communicate(timeout=120)
    stderr = stderr.join()
    os.close(read_end)
    assert process.returncode == 128 + signum, stderr
    assert f"partial video (interrupted) saved to {out / 'long_tiny.mp4'}" in stdout
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr
    check_partial_video(out, with_sound)


def test_a_closed_terminal_still_leaves_the_partial_video(tmp_path, tiny_model):
    """A closed terminal: writes to it fail (EIO) from then on, and SIGHUP arrives."""
    out = tmp_path / "out"
    clip = write_video(tmp_path / "long.mp4", frames=LONG_FRAMES, width=64, height=48)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real one has a size
    terminal = Output(master)  # reads what it is sent, as a real terminal would
    process = start_stylizing(clip, out, tiny_model, slave, stdout=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    wait_for_frames(process, terminal)
    os.close(master)  # hangs the terminal up: from now on the process's writes to it fail
    time.sleep(0.2)
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=120) == 128 + signal.SIGHUP
    check_partial_video(out, with_sound=False)


# ----------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A mounted tmpfs of 1 MiB (tests run as root in CI), or None where mounting is not
    allowed: those tests then inject the full disk instead."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path, leave_bytes: int) -> None:
    """Fill the disk until about leave_bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "ballast").write_bytes(b"\0" * max(0, free - leave_bytes))


# Runs an entry point with os.fsync failing as on a full disk (ENOSPC) for files whose name
# holds `name`: where no disk can be mounted, this is how a full disk reaches the writers of
# images, checkpoints and logs (they all write through common.files.atomic_write, which syncs).
INJECT_FULL_DISK = """
import errno, os, runpy, sys
sys.path.insert(0, {root!r})
real_fsync = os.fsync
def fsync(fd):
    if {name!r} in os.readlink(f"/proc/self/fd/{{fd}}"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real_fsync(fd)
os.fsync = fsync
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def run_on_full_disk(name: str, script: str, *args: str) -> subprocess.CompletedProcess:
    code = INJECT_FULL_DISK.format(root=str(ROOT), script=str(ROOT / script), name=name)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **QUIET}, timeout=300)


def assert_one_line_disk_full(result: subprocess.CompletedProcess, path: Path) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and f"cannot write {path}: the disk is full" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "ffmpeg" not in result.stderr.lower() and "muxing" not in result.stderr  # no FFmpeg noise


def fake_full_disk_ffmpeg(folder: Path) -> Path:
    """An FFmpeg that takes some frames and then fails as FFmpeg does on a full disk."""
    script = folder / "ffmpeg_full_disk"
    script.write_text(f"""#!{sys.executable}
import os, sys
if "-encoders" in sys.argv:
    os.execv({FFMPEG!r}, [{FFMPEG!r}, *sys.argv[1:]])
sys.stdin.buffer.read(64 * 48 * 3 * 20)
sys.stderr.write("[out#0/mp4] Error muxing a packet\\n"
                 "Error writing trailer: No space left on device\\n")
sys.exit(228)
""")
    script.chmod(0o755)
    return script


@pytest.mark.skipif(FFMPEG is None, reason="imageio-ffmpeg is not installed")
def test_video_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_model, small_disk):
    clip = write_video(tmp_path / "long.mp4", frames=LONG_FRAMES, width=64, height=48)
    before = clip.read_bytes()
    if small_disk is not None:
        out, env = small_disk, {}
        fill(out, 64 << 10)
    else:
        out, env = tmp_path / "out", {"IMAGEIO_FFMPEG_EXE": str(fake_full_disk_ffmpeg(tmp_path))}
    # AVI of MJPEG: large enough to outgrow what is left
    result = stylize_quietly(tiny_model, out, "--content_type", "video", "--source", str(clip),
                             "--output_name", "long.avi", env=env)
    assert_one_line_disk_full(result, out / "long.avi")
    assert files_in(out) <= {"ballast"}  # neither the video nor its temporary file
    assert clip.read_bytes() == before


def test_opencv_video_writer_on_a_full_disk(tmp_path, small_disk, monkeypatch):
    """The fallback without FFmpeg: OpenCV only returns False, so the free space tells."""

    import stylization.sink as sink_module
    monkeypatch.setattr(sink_module, "find_ffmpeg", lambda: None)
    folder = small_disk if small_disk is not None else tmp_path
    if small_disk is None:  # OpenCV's writer as it behaves on a full disk
        monkeypatch.setattr(sink_module.cv2, "VideoWriter", _FullDiskWriter)
        monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(free=0))
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="no FFmpeg"), pytest.raises(common.errors.DiskFull, match="disk is full"):
        with VideoSink(folder / "noise.avi", 25.0, (128, 96)) as sink:
            for _ in range(400):  # 400 frames of noise in MJPEG: several MiB
                sink.write(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    assert files_in(folder) == set()


class _FullDiskWriter:
    def __init__(self, *args):
        self.frames = 0

    def isOpened(self) -> bool:
        return True

    def write(self, frame) -> bool:
        self.frames += 1
        return self.frames < 10

    def release(self) -> None:
        pass


def test_image_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, tiny_model, small_disk):
    source = write_image(tmp_path / "photo.png", 333, 251)
    out = small_disk if small_disk is not None else tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "photo_tiny.png").write_bytes(b"an earlier result")
    args = ("--model_path", str(tiny_model), "--output_dir", str(out), "--real_time", "False",
            "--content_type", "image", "--source", str(source), "--overwrite", "True")
    if small_disk is not None:
        fill(out, 8 << 10)
        result = run_script("stylize.py", *args, env=QUIET)
    else:
        result = run_on_full_disk(".photo_tiny.", "stylize.py", *args)
    assert_one_line_disk_full(result, out / "photo_tiny.png")
    assert (out / "photo_tiny.png").read_bytes() == b"an earlier result"
    assert files_in(out) <= {"photo_tiny.png", "ballast"}


def test_checkpoint_on_a_full_disk_keeps_the_earlier_one(workspace, tmp_path, small_disk):  # noqa: F811
    """The first rolling checkpoint (step 2) fits, the next (end of epoch 1) does not."""
    models = small_disk if small_disk is not None else workspace / "models"
    args = train_args(workspace, "--epochs", "1", "--model_dir", str(models), "--lambda_noise", "0")
    if small_disk is not None:
        subprocess.run(["mount", "-o", "remount,size=6m", str(small_disk)], check=True)
        result = run_script("train.py", *args)
        assert "the disk may fill up" in result.stderr  # said before the first step
    else:
        result = run_on_full_disk(".m_epoch1.", "train.py", *args)
    failed = models / "m_epoch1.pth.tar"
    assert_one_line_disk_full(result, failed)
    assert read_checkpoint(models / "m_step0000002.pth.tar")["step"] == 2  # the earlier one
    assert not failed.exists() and not any(p.name.startswith(".") for p in models.iterdir())


def test_loss_log_on_a_full_disk(workspace):  # noqa: F811
    result = run_on_full_disk(".m_losses.", "train.py", *train_args(workspace, "--epochs", "1",
                                                                    "--lambda_noise", "0"))
    assert_one_line_disk_full(result, workspace / "out" / "m_losses.csv")
    assert not (workspace / "models").exists() or not any((workspace / "models").iterdir())


def test_extracted_frames_on_a_full_disk_leave_no_empty_jpeg(tmp_path, small_disk):
    if small_disk is None:
        pytest.skip("needs a small disk to mount (OpenCV's writer cannot be made to fail otherwise)")
    write_video(tmp_path / "videos" / "clip.mp4", frames=30, width=160, height=120)
    fill(small_disk, 16 << 10)
    result = run_script("utils.py", "extract-frames", "--video_dir", str(tmp_path / "videos"),
                        "--frames_dir", str(small_disk))
    assert result.returncode == 2 and "the disk is full" in result.stderr, result.stderr
    kept = [p for p in small_disk.iterdir() if p.name != "ballast"]
    assert kept and all(p.stat().st_size > 0 and p.suffix == ".jpg" for p in kept)  # whole frames only


def test_atomic_write_on_a_full_disk_raises_disk_full_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "m_losses.csv"
    target.write_text("old")

    def full(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    with pytest.raises(common.errors.DiskFull, match=f"cannot write {target}: the disk is full .Disk quota"):
        common.files.atomic_write(target, full)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["m_losses.csv"]
    with pytest.raises(PermissionError):  # other errors stay what they are
        common.files.atomic_write(target, lambda tmp: (_ for _ in ()).throw(PermissionError("no")))


def test_short_free_space_is_told_before_writing(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with pytest.warns(UserWarning, match="the disk may fill up"):
        assert common.errors.warn_if_short_of_space(tmp_path, free * 2 + (1 << 30), "the checkpoints")
    assert not common.errors.warn_if_short_of_space(tmp_path, 1, "the checkpoints")


# ----------------------------------------------------------------------------- training set
def truncated_jpeg(path: Path) -> Path:
    write_image(path.with_suffix(".png"), 80, 60)
    with Image.open(path.with_suffix(".png")) as image:
        image.save(path, quality=95)
    path.with_suffix(".png").unlink()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_a_truncated_image_is_skipped_with_one_warning_in_workers(workspace):  # noqa: F811
    broken = truncated_jpeg(workspace / "frames" / "f2_broken.jpg")  # 7 images in all
    result = run_script("train.py", *train_args(workspace, "--epochs", "2", "--num_workers", "2",
                                                "--lambda_noise", "0", "--save_freq", "100"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "unreadable training image" in line]
    assert len(warnings) == 1 and str(broken) in warnings[0]  # once, though met in both epochs
    for epoch in (1, 2):
        assert f"epoch {epoch}: 1 unreadable image(s) skipped" in result.stdout
    # every batch stayed full: 4 steps of 2 images per epoch, the broken one's place taken
    assert read_checkpoint(workspace / "models" / "m.pth.tar")["step"] == 8


def test_too_many_unreadable_images_stop_with_one_line(workspace):  # noqa: F811
    for i in range(3):
        truncated_jpeg(workspace / "frames" / f"broken{i}.jpg")
    result = run_script("train.py", *train_args(workspace, "--epochs", "1", "--lambda_noise", "0"))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "of the 9 training images" in last and "cannot be read" in last
    assert "Traceback" not in result.stderr
    assert not (workspace / "models" / "m.pth.tar").exists()


def test_unreadable_account_warns_once_counts_per_epoch_and_stops_past_the_share(tmp_path, capsys):
    assert allowed_unreadable(10) == 1 and allowed_unreadable(100) == 5
    assert allowed_unreadable(1000) == int(config.MAX_UNREADABLE_SHARE * 1000)
    account = UnreadableImages(100, tmp_path)
    account.add([("a.jpg", "truncated")])
    account.add([("a.jpg", "truncated"), ("b.jpg", "empty")])
    assert account.end_epoch(1) == 2
    account.add([("a.jpg", "truncated")])
    assert account.end_epoch(2) == 1
    err = capsys.readouterr().err
    assert err.count("a.jpg") == 1 and err.count("b.jpg") == 1
    account.add([(f"{name}.jpg", "bad") for name in "cde"])  # 5 of 100: still allowed
    with pytest.raises(common.errors.UserError, match="6 of the 100 training images"):
        account.add([("f.jpg", "bad")])
