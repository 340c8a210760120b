"""`python -m network.export`: ONNX and TorchScript files that match PyTorch at any size, and
stylize.py running the ONNX file with ONNX Runtime."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import UserError
from conftest import run_script, tiny_checkpoint, write_image
from network import export as E
from network.formats import load_model

pytest.importorskip("onnxruntime")
QUIET = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint and its exports, made once through the command line."""
    folder = tmp_path_factory.mktemp("export")
    model = tiny_checkpoint(folder / "tiny.pth.tar", seed=3)
    result = run_script("-m network.export", str(model), "--output_dir", str(folder / "out"), env=QUIET)
    assert result.returncode == 0, result.stderr
    return folder, result


def test_export_writes_both_formats_and_reports_the_check(exported):
    folder, result = exported
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["tiny.onnx", "tiny.torchscript.pt"]
    assert result.stdout.count("largest difference from PyTorch") == 2


@pytest.mark.parametrize("shape", [(1, 3, 50, 77), (3, 3, 17, 9)])
def test_exports_match_pytorch_at_other_sizes(exported, shape):
    folder, _ = exported
    x = torch.rand(shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = load_model(folder / "tiny.pth.tar")(x)
    onnx = load_model(folder / "out" / "tiny.onnx")(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(folder / "out" / "tiny.torchscript.pt"))
    with torch.no_grad():
        torchscript = scripted(x)
    assert onnx.shape == torchscript.shape == shape
    torch.testing.assert_close(onnx, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(torchscript, expected, atol=1e-5, rtol=0)


def test_onnx_input_and_output_are_dynamic(exported):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported[0] / "out" / "tiny.onnx"),
                                           providers=["CPUExecutionProvider"])
    (image,), (stylized,) = session.get_inputs(), session.get_outputs()
    assert (image.name, stylized.name) == ("image", "stylized")
    assert image.shape[1] == 3 and all(isinstance(d, str) for d in (image.shape[0], *image.shape[2:]))


def test_stylize_runs_the_onnx_model_like_the_checkpoint(exported, tmp_path):
    folder, _ = exported
    image = write_image(tmp_path / "photo.png", 83, 61)
    outputs = {}
    for model in ("tiny.pth.tar", "out/tiny.onnx"):
        result = run_script("stylize.py", "--content_type", "image", "--source", str(image),
                            "--model_path", str(folder / model), "--output_dir", str(tmp_path / model),
                            "--real_time", "False", "--device", "cpu",
                            "--precision", "fp32",  # ONNX runs float32; auto may not
                            env=QUIET)
        assert result.returncode == 0, result.stderr
        outputs[model] = np.asarray(Image.open(tmp_path / model / "photo_tiny.png")).astype(int)
    assert outputs["out/tiny.onnx"].shape == (61, 83, 3)
    assert np.abs(outputs["out/tiny.onnx"] - outputs["tiny.pth.tar"]).max() <= 1


def test_export_never_overwrites_unless_asked(exported, tmp_path):
    folder, _ = exported
    before = (folder / "out" / "tiny.onnx").read_bytes()
    result = run_script("-m network.export", str(folder / "tiny.pth.tar"), "--output_dir",
                        str(folder / "out"), "--formats", "onnx", env=QUIET)
    assert result.returncode == 2 and "--overwrite True" in result.stderr
    assert "Traceback" not in result.stderr
    assert (folder / "out" / "tiny.onnx").read_bytes() == before


def test_an_export_that_differs_from_pytorch_is_not_kept(tmp_path, monkeypatch):
    model = tiny_checkpoint(tmp_path / "tiny.pth.tar")
    real_export = E.EXPORTERS["torchscript"][0]

    def export_another_network(net, path):
        other = load_model(tiny_checkpoint(tmp_path / "other.pth.tar", seed=9))
        real_export(other, path)

    monkeypatch.setitem(E.EXPORTERS, "torchscript", (export_another_network, E.EXPORTERS["torchscript"][1]))
    with pytest.raises(UserError, match="differs from PyTorch"):
        E.export_model(model, tmp_path / "out", ["torchscript"], progress=False)
    assert list((tmp_path / "out").iterdir()) == []  # nor a temporary file


def test_foreign_models_export_too(tmp_path):
    from test_model_formats import examples_state

    torch.save(examples_state(), tmp_path / "candy.pth")
    [(path, difference)] = E.export_model(tmp_path / "candy.pth", tmp_path, ["torchscript"], progress=False)
    assert path.name == "candy.torchscript.pt" and difference <= 1e-5


def test_bad_onnx_files_are_one_line_errors(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        load_model(tmp_path / "junk.onnx")
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="already an ONNX model"):
        E.export_model(tmp_path / "junk.onnx")
