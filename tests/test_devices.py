"""Which GPU and which precision a run gets, and whether ONNX Runtime really runs on CUDA:
the CUDA queries are replaced by fakes, so these run without a GPU."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from common.devices import resolve_device
from common.errors import UserError
from common.precision import resolve_precision


class FakeGpus:
    """torch.cuda as a machine with `count` GPUs, of which those in `bf16` have bf16 in
    hardware; records set_device and which GPU each bf16 query was about."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int, bf16: tuple[int, ...] = ()):
        self.current, self.made_current, self.bf16_asked = 0, [], []
        self.bf16 = bf16
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "device", self.device)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", self.is_bf16_supported)

    def set_device(self, device: torch.device | int) -> None:
        self.made_current.append(torch.device("cuda", device) if isinstance(device, int) else device)

    @contextlib.contextmanager
    def device(self, index: int):
        before, self.current = self.current, index
        yield
        self.current = before

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        self.bf16_asked.append((self.current, including_emulation))
        # Turing-like cards without bf16 in hardware emulate it: the default check says yes.
        return including_emulation or self.current in self.bf16


def test_a_gpu_that_is_not_there_is_one_line_up_front(monkeypatch):
    gpus = FakeGpus(monkeypatch, count=2)
    with pytest.raises(UserError, match=r"has 2 GPU\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")
    assert gpus.made_current == []
    for bad in ("cuda:x", "cuda:-1", "gpu"):
        with pytest.raises(UserError, match="unknown device"):
            resolve_device(bad)


def test_the_chosen_gpu_is_made_current(monkeypatch):
    gpus = FakeGpus(monkeypatch, count=2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("CUDA") == torch.device("cuda")  # the current one, whichever it is
    assert gpus.made_current == [torch.device("cuda", 1)]


def test_cuda_without_gpus_still_falls_back_to_the_cpu(monkeypatch):
    FakeGpus(monkeypatch, count=0)
    with pytest.warns(UserWarning, match="not available"):
        assert resolve_device("cuda:1") == torch.device("cpu")


def test_bf16_is_checked_in_hardware_on_the_gpu_asked_for(monkeypatch):
    gpus = FakeGpus(monkeypatch, count=2, bf16=(0,))  # e.g. an A100 beside a T4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", torch.device("cuda", 0)) == torch.bfloat16
    with pytest.warns(UserWarning, match="cuda:1 has no bf16 in hardware"):
        assert resolve_precision("bf16", torch.device("cuda", 1)) == torch.float16
    assert gpus.bf16_asked == [(0, False), (1, False)]
    assert gpus.current == 0  # the query left the current GPU as it was


def test_bf16_without_an_index_asks_the_current_gpu(monkeypatch):
    gpus = FakeGpus(monkeypatch, count=2, bf16=(1,))
    gpus.current = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", torch.device("cuda")) == torch.bfloat16
    assert gpus.bf16_asked == [(1, False)]


class FakeSession:
    """An ONNX Runtime session that was asked for `providers` and got `got`."""

    got: list[str] = ["CPUExecutionProvider"]

    def __init__(self, path: str, providers: list):
        self.asked = providers

    def get_providers(self) -> list[str]:
        return self.got

    def get_inputs(self) -> list:
        return [SimpleNamespace(name="input", shape=["N", 3, "H", "W"])]

    def get_outputs(self) -> list:
        return [SimpleNamespace(name="output", shape=["N", 3, "H", "W"])]


@pytest.fixture
def fake_onnxruntime(monkeypatch, tmp_path: Path):
    onnxruntime = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeSession)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"stands in for a model")
    return model


def test_an_onnx_session_that_fell_back_to_the_cpu_says_so(fake_onnxruntime, monkeypatch):
    from network.onnx_model import OnnxModel

    monkeypatch.setattr(FakeSession, "got", ["CPUExecutionProvider"])
    with pytest.warns(UserWarning, match="could not start its CUDA provider") as caught:
        model = OnnxModel(fake_onnxruntime, "cuda:1")
    assert len(caught) == 1
    assert model.session.asked[0] == ("CUDAExecutionProvider", {"device_id": 1})


def test_an_onnx_session_on_cuda_is_quiet(fake_onnxruntime, monkeypatch):
    from network.onnx_model import OnnxModel

    monkeypatch.setattr(FakeSession, "got", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxModel(fake_onnxruntime, "cuda")
        monkeypatch.setattr(FakeSession, "got", ["CPUExecutionProvider"])
        OnnxModel(fake_onnxruntime, "cpu")  # the CPU asked for, the CPU got: nothing to say
