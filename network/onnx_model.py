"""An exported ONNX stylizing network run by ONNX Runtime, called like the PyTorch network:
RGB in [0, 1], N x 3 x H x W tensors in and out, on the caller's device."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.errors import fail, first_line
from common.files import existing_file


class OnnxModel(nn.Module):
    """An nn.Module only so that code written for the PyTorch network (`.to`, `.eval`, calls)
    runs it unchanged; it has no parameters."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        super().__init__()
        path = existing_file(path, "a model file (.onnx)", "check --model_path")
        device = torch.device(device)
        try:
            import onnxruntime
        except ImportError:
            fail("running an .onnx model needs ONNX Runtime: pip install -r requirements.txt")
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            else:
                warnings.warn("this ONNX Runtime has no CUDA support (pip uninstall -y onnxruntime && "
                              "pip install onnxruntime-gpu); running the ONNX model on the CPU",
                              stacklevel=2)
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as err:  # ONNX Runtime raises its own exception types for bad files
            fail(f"{path} is not a loadable ONNX model ({first_line(err)[:200]}): export one with "
                 "python -m network.export")
        asked_cuda = len(providers) > 1
        if asked_cuda and "CUDAExecutionProvider" not in self.session.get_providers():
            # ONNX Runtime builds a CPU session without a word when its CUDA provider fails to
            # load (e.g. CUDA or cuDNN libraries of other versions than it was built for).
            warnings.warn("ONNX Runtime could not start its CUDA provider (its messages above say "
                          "why: onnxruntime-gpu needs the CUDA and cuDNN versions it was built for); "
                          "running the ONNX model on the CPU", stacklevel=2)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
            fail(f"{path} is not an image-to-image ONNX model (it should take one N x 3 x H x W "
                 "input): export one with python -m network.export")
        outputs = self.session.get_outputs()
        if len(outputs) != 1 or len(outputs[0].shape) != 4:
            fail(f"{path} is not an image-to-image ONNX model (it should give one N x 3 x H x W "
                 "output): export one with python -m network.export")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.on_cuda = "CUDAExecutionProvider" in self.session.get_providers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The stylised batch, in a tensor of the input's shape on the input's device.

        ONNX Runtime reads the input and writes the output in place through an I/O binding
        (the tensors' own memory), so frames on a GPU stay there when the session runs on CUDA;
        otherwise they make one trip through host memory. The project's networks give an
        output of the input's size (network/style_network.py pads and crops)."""
        device = x.device if self.on_cuda and x.device.type == "cuda" else torch.device("cpu")
        x_in = x.detach().to(device, torch.float32).contiguous()
        out = torch.empty_like(x_in)
        binding = self.session.io_binding()
        where = (device.type, device.index or 0, np.float32, tuple(x_in.shape))
        binding.bind_input(self.input_name, *where, x_in.data_ptr())
        binding.bind_output(self.output_name, *where, out.data_ptr())
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()  # x_in is written before ORT reads it
        self.session.run_with_iobinding(binding)
        return out.to(x.device)
