"""Shared pieces: image reading in every mode, atomic writes, safe checkpoints, model files."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import common.devices
from common.errors import UserError
import common.files
import common.images
import common.model_files
from conftest import ROOT, run_script, tiny_checkpoint
from network.formats import load_model


def gradient(width: int = 6, height: int = 4) -> np.ndarray:
    xx = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    return np.stack([xx, xx[::-1, ::-1], np.full_like(xx, 90)], -1)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_load_image_gives_rgb_for_every_mode(tmp_path, mode):
    rgb = Image.fromarray(gradient())
    if mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
        path = tmp_path / "deep.png"
    else:
        image = rgb.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    loaded = common.images.load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (6, 4)
    if mode == "I;16":  # 16-bit scaled to 8 bits, not clipped to white
        assert np.abs(np.asarray(loaded)[..., 0].astype(int) - np.asarray(rgb.convert("L"))).max() <= 1


def test_load_image_applies_exif_rotation(tmp_path):
    image = Image.fromarray(gradient(6, 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert common.images.load_image(tmp_path / "rot.jpg").size == (4, 6)


def test_load_image_errors(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    good = tmp_path / "good.jpg"
    Image.fromarray(gradient(64, 64)).save(good)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    for path, message in [(tmp_path / "none.png", "does not exist"), (tmp_path, "is a directory"),
                          (tmp_path / "text.png", "not a readable image"),
                          (tmp_path / "cut.jpg", "not a readable image")]:
        with pytest.raises(UserError, match=message):
            common.images.load_image(path)


def test_fit_within_scales_down_only():
    assert common.images.fit_within(1000, 500, 100) == (100, 50)
    assert common.images.fit_within(50, 20, 100) == (50, 20)
    assert common.images.fit_within(333, 251, None) == (333, 251)


def test_tensor_conversions_round_trip():
    array = gradient(5, 3)
    assert np.array_equal(common.images.tensor_to_array(common.images.image_to_tensor(array)), array)


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        common.files.atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary file left behind
    common.files.atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_killed_writer_never_leaves_a_broken_file(tmp_path):
    target = tmp_path / "model.pth.tar"
    common.model_files.save_checkpoint({"step": 1}, target)
    code = ("import sys, os, signal; sys.path.insert(0, %r); import common.files\n"
            "def write(tmp):\n    open(tmp, 'wb').write(b'partial'); os.kill(os.getpid(), signal.SIGKILL)\n"
            "common.files.atomic_write(%r, write)\n") % (str(ROOT), str(target))
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    assert common.model_files.read_checkpoint(target) == {"step": 1}


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Exploit(marker)}, handle)
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        common.model_files.read_checkpoint(path)
    assert not marker.exists()
    result = run_script("stylize.py", "--content_type", "image", "--source", str(path),
                        "--model_path", str(path), "--real_time", "False",
                        "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not marker.exists()


def test_finalized_model_is_smaller_and_stylises_the_same(tmp_path):
    full = tiny_checkpoint(tmp_path / "full.pth.tar")
    data = common.model_files.read_checkpoint(full)
    data["optimizer"] = {"state": {}, "param_groups": []}
    common.model_files.save_checkpoint(data, full)
    result = run_script("utils.py", "finalize-model", str(full), str(tmp_path / "slim.pth.tar"))
    assert result.returncode == 0, result.stderr
    slim = common.model_files.read_checkpoint(tmp_path / "slim.pth.tar")
    assert "optimizer" not in slim
    assert all(v.dtype == torch.float16 for v in slim["state_dict"].values() if v.is_floating_point())
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        a, b = load_model(full)(x), load_model(tmp_path / "slim.pth.tar")(x)
    assert (a - b).abs().max() < 0.01
    result = run_script("utils.py", "finalize-model", str(full), str(full))
    assert result.returncode == 2 and "give another destination" in result.stderr


FAULTS_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
import common.devices
import common.files
import common.images
import common.model_files
if sys.argv[1] == "keep":
    common.devices.keep_freed_memory()
for _ in range(12):  # while the heap grows to its working size, pages are new either way
    torch.empty(16 << 20).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.empty(16 << 20).fill_(1)  # 64 MB, freed at once, as a frame's activations are
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_stops_the_page_faults_of_every_new_frame():
    def faults(mode: str) -> int:
        script = FAULTS_SCRIPT.format(root=str(ROOT))
        result = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
        return int(result.stdout.split()[-1])
    default, kept = faults("default"), faults("keep")
    assert default > 8 * 16384 // 2  # glibc's default returns the 64 MB every time (4 KB pages)
    assert kept < default / 20


def test_compile_without_a_compiler_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(common.devices.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="needs a C.. compiler"):
        common.devices.check_compiler()
