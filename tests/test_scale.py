"""Huge frames on tiles, out-of-memory retries, several models and torchrun sharding of
stylize.py, end to end on models and images the tests make."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, run_script, tiny_checkpoint, write_image
from network import examples_network, original_network
from network.formats import RangeAdapter, load_model
from network.tiling import TiledNetwork, plan_axis, receptive_radius
from stylization.jobs import ModelSwitch
from stylization.processor import Processor, RunOptions

QUIET = {"OMP_NUM_THREADS": "1"}


def stylize(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_script("stylize.py", "--real_time", "False", *args, env={**QUIET, **(env or {})},
                      timeout=timeout)


def read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.float64)


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- tiles
@pytest.mark.parametrize("length, window", [(333, 112), (251, 112), (1000, 300), (90, 112), (203, 64)])
def test_tiles_own_the_axis_once_and_windows_reach_past_the_cuts(length, window):
    radius, align = 24, 4
    spans = plan_axis(length, window, radius, align)
    assert [s.cut_lo for s in spans[1:]] == [s.cut_hi for s in spans[:-1]]
    assert spans[0].cut_lo == 0 and spans[-1].cut_hi == length
    for span in spans:
        assert span.start % align == 0 and span.cut_lo % align == 0
        assert 0 <= span.start <= span.cut_lo < span.cut_hi <= span.stop <= length
        # Each window holds the receptive radius of context around its own part, or the edge.
        assert span.start == 0 or span.cut_lo - span.start >= radius
        assert span.stop == length or span.stop - span.cut_hi >= radius
    sizes = [s.stop - s.start for s in spans]
    assert max(sizes) - min(sizes) < align  # about one window size: memory the allocator reuses


@pytest.mark.parametrize("staged", [True, False])
def test_tiles_with_measured_statistics_equal_the_whole_frame(tmp_path, staged):
    """Both ways of measuring the norms' statistics over tiles (this project's network in stages
    with coarse maps kept, or one pass per norm as other layouts are run) give the whole frame's
    output, and the progress callback counts every tile of every pass."""
    model = load_model(tiny_checkpoint(tmp_path / "t.pth.tar"))
    processor = Processor(model, "cpu")
    frame = np.random.default_rng(3).integers(0, 256, (150, 203, 3), dtype=np.uint8)
    frame = cv2.GaussianBlur(frame, (0, 0), 3)  # some structure for the norms to measure
    whole = processor([frame])[0].astype(np.int16)
    tiler = TiledNetwork(processor.model, model, torch.device("cpu"), staged=staged)
    assert tiler.staged is staged
    calls = []
    tiled = tiler(frame, 8000, lambda done, total: calls.append((done, total))).astype(np.int16)
    assert tiler.plan(150, 203, 8000).count > 4
    assert np.abs(tiled - whole).max() <= 1  # float rounding at most
    assert calls[-1][0] == calls[-1][1] == len(calls)


def run_tiler_model(tiler: TiledNetwork, frame: np.ndarray) -> torch.Tensor:
    """The tiler's network (its norms standing in) on a whole frame."""
    return tiler.model(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)


def test_receptive_radius_bounds_the_influence_of_a_pixel(tmp_path):
    """With stored statistics the network is local: a change of one input pixel moves no output
    pixel further than the radius, and does move some at the radius' order of distance."""
    model = load_model(tiny_checkpoint(tmp_path / "t.pth.tar"))
    tiler = TiledNetwork(model, model, torch.device("cpu"))
    radius, stride = receptive_radius(model)
    assert stride == 4 and 10 < radius < 40
    frame = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    changed = frame.copy()
    changed[48, 48] = 255 - changed[48, 48]
    with torch.inference_mode():
        tiler._set_mode("record")
        run_tiler_model(tiler, frame)
        tiler._set_mode("apply")
        difference = (run_tiler_model(tiler, changed) - run_tiler_model(tiler, frame)).abs().amax(1)[0]
    ys, xs = np.nonzero(difference.numpy() > 0)
    reach = max(np.abs(ys - 48).max(), np.abs(xs - 48).max())
    assert radius // 2 <= reach <= radius


@pytest.mark.parametrize("layout", ["original", "examples"])
def test_other_layouts_run_in_stages_on_tiles_as_on_the_whole_frame(layout):
    """The other projects' layouts are cut into stages too (pytorch/examples' blocks add their
    input back, the original's do not): tiled, with their norms swapped as the Processor swaps
    them, they give the whole frame's output."""
    torch.manual_seed(0)
    module = {"original": original_network, "examples": examples_network}[layout]
    net = {"original": original_network.OriginalNetwork,
           "examples": examples_network.ExamplesNetwork}[layout]()
    if layout == "examples":  # its output is 0-255 with no activation: bring random weights into range
        with torch.no_grad():
            net.deconv3.conv2d.weight.mul_(100)
            net.deconv3.conv2d.bias.fill_(127.5)
    model = RangeAdapter(net, module.VALUE_RANGE, module.MIN_SIDE).eval()
    processor = Processor(model, "cpu")
    # Their receptive radius is about 60 pixels: windows need room for a part of their own.
    frame = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (270, 330, 3), dtype=np.uint8), (0, 0), 3)
    whole = processor([frame])[0].astype(np.int16)
    assert whole.std() > 20  # random weights that draw something, not a clamped flat frame
    tiler = TiledNetwork(processor.model, model, torch.device("cpu"))
    # a pass per norm, one per residual block's sum, the output pass
    assert tiler.staged and tiler.passes() == {"original": 16 + 0 + 1, "examples": 15 + 5 + 1}[layout]
    assert tiler.plan(270, 330, 200_000).count >= 4
    tiled = tiler(frame, 200_000).astype(np.int16)
    assert np.abs(tiled - whole).max() <= 1  # float rounding at most
    assert receptive_radius(model)[1] == 4


def tile_borders(height: int, width: int, model: Path, budget: float) -> np.ndarray:
    net = load_model(model)
    plan = TiledNetwork(net, net, torch.device("cpu")).plan(height, width, budget * 1e6)
    assert plan.count > 4
    mask = np.zeros((height, width), bool)
    for row in plan.rows[1:]:
        mask[row.cut_lo - 8:row.cut_lo + 8] = True
    for column in plan.columns[1:]:
        mask[:, column.cut_lo - 8:column.cut_lo + 8] = True
    return mask


def test_tiled_stylize_equals_untiled_without_seams(tmp_path, tiny_model, sample_image):
    out = tmp_path / "out"
    untiled = stylize("--content_type", "image", "--source", str(sample_image), "--model_path",
                      str(tiny_model), "--output_dir", str(out), "--output_name", "whole.png")
    assert untiled.returncode == 0, untiled.stderr
    assert "tiles" not in untiled.stderr  # 333x251 is far below the default budget
    tiled = stylize("--content_type", "image", "--source", str(sample_image), "--model_path",
                    str(tiny_model), "--output_dir", str(out), "--output_name", "tiled.png",
                    "--tile_budget", "0.04")
    assert tiled.returncode == 0, tiled.stderr
    assert "overlapping tiles" in tiled.stderr
    assert "warning" not in tiled.stderr.lower()  # e.g. PyTorch's on a read-only picture's tiles
    whole, pieces = read(out / "whole.png"), read(out / "tiled.png")
    difference = np.abs(whole - pieces).mean(-1)
    assert difference.mean() <= 1.5
    borders = tile_borders(251, 333, tiny_model, 0.04)
    assert difference[borders].mean() <= difference[~borders].mean() + 0.05


def test_negative_tile_budget_is_a_user_error(tmp_path, tiny_model, sample_image):
    result = stylize("--content_type", "image", "--source", str(sample_image), "--model_path",
                     str(tiny_model), "--output_dir", str(tmp_path / "out"), "--tile_budget", "-1")
    assert result.returncode == 2 and result.stderr.startswith("error: --tile_budget")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- out of memory
class RunsOutOfMemory(torch.nn.Module):
    """The tiny network, failing as an allocator does above `pixels` per call."""

    def __init__(self, net: torch.nn.Module, pixels: int, error: type[BaseException], message: str):
        super().__init__()
        self.net, self.pixels, self.error, self.message = net, pixels, error, message
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.pixels:
            raise self.error(self.message)
        return self.net(x)


@pytest.mark.parametrize("error, message", [
    (RuntimeError, "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes."),
    (torch.OutOfMemoryError, "CUDA out of memory. Tried to allocate 2.00 GiB")])
def test_out_of_memory_halves_the_batch_then_tiles(tmp_path, tiny_model, capsys, error, message):
    net = load_model(tiny_model)
    frames = [np.random.default_rng(i).integers(0, 256, (64, 80, 3), dtype=np.uint8) for i in range(4)]
    expected = Processor(net, "cpu")(frames)
    fake = RunsOutOfMemory(net, 2 * 64 * 80, error, message)
    processor = Processor(fake, "cpu", RunOptions(batch_size=4))
    fake = processor.model  # the Processor runs a copy (its instance norms in faster kernels)
    results = processor(frames)
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(results, expected))
    assert [shape[0] for shape in fake.calls[:3]] == [4, 2, 2]
    assert "continuing with batches of 2" in capsys.readouterr().err
    before = len(fake.calls)
    processor(frames[:3])
    assert [shape[0] for shape in fake.calls[before:]] == [2, 1]  # the smaller batch is kept

    big = [np.random.default_rng(i).integers(0, 256, (240, 320, 3), dtype=np.uint8) for i in range(2)]
    expected = Processor(net, "cpu")(big)
    small = RunsOutOfMemory(net, 48000, error, message)  # not even one frame fits
    tiled = Processor(small, "cpu", RunOptions(batch_size=2))(big)
    err = capsys.readouterr().err
    assert "continuing with batches of 1" in err and "stylising such frames in tiles" in err
    assert len(err.strip().splitlines()) >= 3  # a line for each step
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() <= 1.5 for a, b in zip(tiled, expected))


def test_other_errors_are_not_retried(tiny_model):
    processor = Processor(RunsOutOfMemory(load_model(tiny_model), 0, ValueError, "not memory"), "cpu")
    with pytest.raises(ValueError):
        processor([np.zeros((32, 32, 3), np.uint8)])
    assert len(processor.model.calls) == 1


# ----------------------------------------------------------------------------- several models
def test_several_models_write_every_output_and_a_contact_sheet(tmp_path):
    models = tmp_path / "models"
    for seed, name in enumerate(("candy", "mosaic")):
        tiny_checkpoint(models / f"{name}.pth.tar", seed=seed)
    (models / "notes.pth").write_text("not a model")  # skipped with a warning
    single = tiny_checkpoint(tmp_path / "udnie.pth", seed=5)
    photos = tmp_path / "photos"
    write_image(photos / "a.png", 64, 48, seed=1)
    write_image(photos / "b.jpg", 50, 40, seed=2)
    out = tmp_path / "out"
    result = stylize("--content_type", "image", "--source", str(photos), "--model_path",
                     str(models), str(single), "--output_dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "warning: skipped model" in result.stderr and "notes.pth" in result.stderr
    expected = {f"{m}/{f}" for m in ("candy", "mosaic", "udnie") for f in ("a.png", "b.jpg")}
    assert files_in(out) == expected | {"contact_sheets/a.png", "contact_sheets/b.png"}
    outputs = [read(out / name) for name in sorted(expected) if name.endswith("a.png")]
    assert all(np.abs(x - y).mean() > 1 for i, x in enumerate(outputs) for y in outputs[i + 1:])
    sheet = read(out / "contact_sheets" / "a.png")
    assert sheet.shape[1] == 2 * 480 and sheet.shape[0] == 2 * (480 + 28)  # 2 x 2: input + 3

    one = stylize("--content_type", "image", "--source", str(photos / "a.png"), "--model_path",
                  str(models), "--output_dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert files_in(tmp_path / "one") == {"a_candy.png", "a_mosaic.png", "a_contact_sheet.png"}


def test_one_model_path_keeps_todays_names(tmp_path, tiny_model, sample_image):
    result = stylize("--content_type", "image", "--source", str(sample_image), "--model_path",
                     str(tiny_model), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path / "out") == {"photo_tiny.png"}


def test_folder_without_loadable_model_is_one_line_error(tmp_path, sample_image):
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.pth.tar").write_bytes(b"not a checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (models, empty):
        result = stylize("--content_type", "image", "--source", str(sample_image), "--model_path",
                         str(folder), "--output_dir", str(tmp_path / "out"))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no ")
        assert str(folder) in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_keys_n_and_p_switch_models_and_one_model_gets_a_note(capsys):
    calls = []
    processors = [lambda batch, i=i: calls.append(i) or batch for i in range(3)]
    switch = ModelSwitch(processors, ["candy", "mosaic", "udnie"])
    frame = [np.zeros((4, 4, 3), np.uint8)]
    for key in (None, ord("n"), ord("n"), ord("n"), ord("p"), ord("x")):
        switch.key(key)
        switch(frame)
    assert calls == [0, 1, 2, 0, 2, 2]
    assert switch.label == "udnie (3/3, n/p)"
    lone = ModelSwitch(processors[:1], ["candy"])
    lone.key(ord("n"))
    lone.key(ord("p"))
    assert lone.label is None and lone.index == 0
    assert capsys.readouterr().err.count("note: n and p switch between models") == 1


# ----------------------------------------------------------------------------- torchrun
def test_torchrun_shares_the_files_each_done_once(tmp_path, tiny_model):
    photos = tmp_path / "photos"
    for i in range(3):
        write_image(photos / f"p{i}.png", 40 + i, 32, seed=i)
    second = tiny_checkpoint(tmp_path / "second.pth.tar", seed=3)
    out = tmp_path / "out"
    env = {**os.environ, **QUIET, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2", str(ROOT / "stylize.py"), "--content_type",
                             "image", "--source", str(photos), "--model_path", str(tiny_model),
                             str(second), "--output_dir", str(out), "--real_time", "False",
                             "--device", "cpu"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    names = {f"{m}/p{i}.png" for m in ("tiny", "second") for i in range(3)}
    assert files_in(out) == names | {f"contact_sheets/p{i}.png" for i in range(3)}
    saved = [line for line in result.stdout.splitlines() if line.startswith("saved ")]
    assert len(saved) == 9 and len(set(saved)) == 9  # one summary of both processes' files
    assert "2 processes share the 3 files" in result.stdout
