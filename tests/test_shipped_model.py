"""The model that ships in trained_models/ works out of the box, as the quickstart promises."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import utils
from network.formats import load_model
from conftest import ROOT, run_script, write_image

SHIPPED = ROOT / "trained_models" / "mosaic.pth.tar"


def test_shipped_model_stylises_a_small_input(tmp_path):
    model = load_model(SHIPPED)
    image = utils.image_to_tensor(Image.open(write_image(tmp_path / "in.png", 64, 64))).unsqueeze(0)
    with torch.no_grad():
        out = model(image)
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    assert (out - image).abs().mean() > 0.05  # it changes the picture...
    assert out.std() > 0.05  # ...into something with structure, not a flat colour


def test_quickstart_command(tmp_path):
    result = run_script("stylize.py", "--content_type", "image", "--source", "docs/grace_hopper.jpg",
                        "--model_path", "trained_models/mosaic.pth.tar", "--real_time", "False",
                        "--output_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = Image.open(tmp_path / "grace_hopper_mosaic.png")
    assert out.size == Image.open(ROOT / "docs" / "grace_hopper.jpg").size
    assert np.asarray(out).std() > 10
