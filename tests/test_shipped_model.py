"""The models that ship in trained_models/ work out of the box, as the quickstart promises."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import common.images
from conftest import ROOT, run_script, write_image
from network.formats import load_model

SHIPPED = sorted((ROOT / "trained_models").glob("*.pth.tar"))
MAX_BYTES = 1 << 20  # a shipped model stays at most 1 MB: the repository is cloned by every user


def test_the_quickstart_model_ships():
    assert ROOT / "trained_models" / "mosaic_coarse.pth.tar" in SHIPPED


def test_each_style_has_a_model_named_after_it_and_each_model_is_documented():
    """One model per style image of the seven, named after it (rain-princess.jpg:
    rain_princess.pth.tar), and a row for every shipped model in docs/shipped_models.md."""
    styles = ["mosaic", "candy", "udnie", "rain_princess", "the_scream", "shipwreck", "woman_with_hat"]
    assert [s for s in styles if ROOT / "trained_models" / f"{s}.pth.tar" not in SHIPPED] == []
    table = (ROOT / "docs" / "shipped_models.md").read_text()
    assert [p.name for p in SHIPPED if f"| `{p.name}`" not in table] == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_stylises_a_small_input(tmp_path, path):
    assert path.stat().st_size <= MAX_BYTES
    model = load_model(path)
    image = common.images.image_to_tensor(Image.open(write_image(tmp_path / "in.png", 64, 64))).unsqueeze(0)
    with torch.no_grad():
        out = model(image)
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert (out - image).abs().mean() > 0.05  # it changes the picture...
    assert out.std() > 0.05  # ...into something with structure, not a flat colour


def test_quickstart_command(tmp_path):
    result = run_script("stylize.py", "--content_type", "image", "--source", "docs/grace_hopper.jpg",
                        "--model_path", "trained_models/mosaic_coarse.pth.tar", "--real_time", "False",
                        "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = Image.open(tmp_path / "grace_hopper_mosaic_coarse.png")
    assert out.size == Image.open(ROOT / "docs" / "grace_hopper.jpg").size
    assert np.asarray(out).std() > 10


def test_style_distance_benchmark_runs_on_tiny_inputs(tmp_path):
    """benchmarks/style_distance.py prints a row per output, with the photo itself at ratio 1."""
    from conftest import random_vgg_file, tiny_checkpoint

    vgg = random_vgg_file(tmp_path / "vgg16.pth", "VGG16", "caffe")
    photo, style = write_image(tmp_path / "photo.png", 40, 30), write_image(tmp_path / "style.png", 32, 32, seed=1)
    model = tiny_checkpoint(tmp_path / "tiny.pth.tar")
    result = run_script("benchmarks/style_distance.py", "--style_path", str(style), "--loss_net_path", str(vgg),
                        "--content", str(photo), "--model", f"tiny={model}", "--output", f"itself={photo}",
                        "--size", "32", "--pixel_steps", "2")
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): [float(c) for c in line.split("|")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("| ") and "--:" not in line
            and not line.startswith("| output")}
    assert set(rows) == {"photo itself", "tiny", "itself", "pixel-optimised (2 steps)"}
    assert rows["photo itself"][:2] == [1.0, 0.0]
    assert rows["itself"][:2] == pytest.approx([1.0, 0.0], abs=1e-3)  # the photo given as an output
    assert rows["tiny"][1] > 0.01  # a random network changes the picture
    assert all(len(cells) == 2 + 4 for cells in rows.values())


def test_style_distance_adds_the_style_predictor_s_opinion(tmp_path):
    """--style_predictor adds a column: 1 for the photo (and the photo given as an output), another
    value for a model's output. A stand-in predictor of Magenta's shape: 1 x 256 x 256 x 3 in,
    1 x 1 x 1 x 100 out."""
    from conftest import random_vgg_file, tiny_checkpoint

    class Predictor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 100, 5, stride=4)

        def forward(self, x):
            return self.conv(x.permute(0, 3, 1, 2)).mean((2, 3), keepdim=True).permute(0, 2, 3, 1)

    torch.manual_seed(0)
    predictor = tmp_path / "predict.onnx"
    torch.onnx.export(Predictor().eval(), (torch.rand(1, 256, 256, 3),), str(predictor))
    vgg = random_vgg_file(tmp_path / "vgg16.pth", "VGG16", "caffe")
    photo, style = write_image(tmp_path / "photo.png", 40, 30), write_image(tmp_path / "style.png", 32, 32, seed=1)
    model = tiny_checkpoint(tmp_path / "tiny.pth.tar")
    result = run_script("benchmarks/style_distance.py", "--style_path", str(style), "--loss_net_path", str(vgg),
                        "--content", str(photo), "--model", f"tiny={model}", "--output", f"itself={photo}",
                        "--size", "32", "--style_predictor", str(predictor))
    assert result.returncode == 0, result.stderr
    assert "| predictor ratio |" in result.stdout
    rows = {line.split("|")[1].strip(): [float(c) for c in line.split("|")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("| ") and "--:" not in line
            and not line.startswith("| output")}
    assert rows["photo itself"][-1] == 1.0 and rows["itself"][-1] == pytest.approx(1.0, abs=1e-3)
    assert abs(rows["tiny"][-1] - 1.0) > 1e-3


def test_style_distance_benchmark_averages_over_photos(tmp_path):
    """With several photos, a last table gives each model's mean over them, and the pixel-optimised
    ceiling's."""
    from conftest import random_vgg_file, tiny_checkpoint

    vgg = random_vgg_file(tmp_path / "vgg16.pth", "VGG16", "caffe")
    photos = [write_image(tmp_path / f"photo{i}.png", 40, 30, seed=i) for i in (2, 3)]
    style = write_image(tmp_path / "style.png", 32, 32, seed=1)
    model = tiny_checkpoint(tmp_path / "tiny.pth.tar")
    result = run_script("benchmarks/style_distance.py", "--style_path", str(style), "--loss_net_path", str(vgg),
                        "--content", *map(str, photos), "--model", f"tiny={model}", "--size", "32",
                        "--pixel_steps", "2")
    assert result.returncode == 0, result.stderr
    tables = result.stdout.split("\n\n")
    titles = [t.strip() for t in tables[::2]]
    assert titles == ["photo2.png (measured at 32 px, style style.png)",
                      "photo3.png (measured at 32 px, style style.png)", "mean over the 2 photos"]
    tiny = [[float(c) for c in line.split("|")[2:-1]]
            for table in tables[1::2] for line in table.splitlines() if line.startswith("| tiny |")]
    assert len(tiny) == 3 and tiny[0] != tiny[1]
    assert tiny[2] == pytest.approx([(a + b) / 2 for a, b in zip(tiny[0], tiny[1])], abs=1.5e-3)
    ceiling = [[float(c) for c in line.split("|")[2:-1]]
               for table in tables[1::2] for line in table.splitlines() if line.startswith("| pixel-optimised")]
    assert len(ceiling) == 3
    assert ceiling[2] == pytest.approx([(a + b) / 2 for a, b in zip(ceiling[0], ceiling[1])], abs=1.5e-3)
