"""Stylisation speed of a model in PyTorch against its ONNX export in ONNX Runtime, on the CPU.

    python benchmarks/export_speed.py --model_path trained_models/mosaic.pth.tar --size 640x360

Exports the model to ONNX in a temporary folder (network.export, with its check against
PyTorch), then times both engines on the same random frames, batch 1, float32, each at its
default thread count: PyTorch as stylize.py runs it (network.formats.load_model, inference mode) and
ONNX Runtime as stylize.py runs an .onnx file (network.onnx_model.OnnxModel). The rounds of
the two alternate, so that load from other processes falls on both alike; it prints a
markdown table of the median time per frame over the rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from network.export import export_model  # noqa: E402
from network.onnx_model import OnnxModel  # noqa: E402
from network.formats import load_model  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def time_frames(model: torch.nn.Module, frames: list[torch.Tensor]) -> float:
    """Seconds per frame over frames, one at a time."""
    start = time.perf_counter()
    with torch.inference_mode():
        for frame in frames:
            model(frame)
    return (time.perf_counter() - start) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", default="trained_models/mosaic.pth.tar")
    parser.add_argument("--size", type=parse_size, default=(640, 360), help="frame WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=10, help="frames per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    width, height = args.size
    generator = torch.Generator().manual_seed(0)
    frames = [torch.rand(1, 3, height, width, generator=generator) for _ in range(args.frames)]
    with tempfile.TemporaryDirectory() as folder:
        [(onnx_path, difference)] = export_model(args.model_path, folder, ["onnx"], progress=False)
        engines = {"PyTorch (eager)": load_model(args.model_path), "ONNX Runtime": OnnxModel(onnx_path)}
        for model in engines.values():
            time_frames(model, frames[:2])  # warm-up: allocations, kernel selection
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, model in engines.items():
                times[name].append(time_frames(model, frames))

    print(f"{args.model_path}, {width}x{height}, batch 1, float32, {args.rounds} rounds of "
          f"{args.frames} frames, torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
          f"ONNX export's largest difference from PyTorch {difference:.2g}\n")
    print("| engine | ms/frame (median) | frames/s | vs PyTorch |")
    print("| :-- | --: | --: | --: |")
    base = statistics.median(times["PyTorch (eager)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.1f} | {1 / median:.2f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
