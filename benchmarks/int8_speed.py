"""int8 against float32 for the network alone on a CPU: speed, and the difference of the
output from float32's that decides whether --precision auto could take it.

    pip install torchao   # this benchmark's only; the toolkit does not use it
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/int8_speed.py \
        --video bikes.mp4 --model_path trained_models/mosaic_fast.pth.tar

Rows, each on the same frames of --video scaled to --size, batches of 2 as the pipeline runs
them (stylization.processor.FramesToFrames, uint8 in and out): float32 eager (what
`--precision auto` runs on a CPU without bf16), float32 compiled by Inductor, and int8 by
PyTorch's PT2E static quantisation with the x86 Inductor quantiser (torchao), calibrated on
--calibration frames from the clip's start, then compiled. int8 rows keep the layers named by
--keep_float (a prefix of module names, e.g. model.stem) in float32; one row per --keep_float
set (comma-separated names; "none" quantises every convolution).

The difference is measured on frames from the middle of the clip (never calibrated on): the
mean and 99th percentile of the absolute difference from float32 eager, 0-255 units, every
pixel of every channel. config.AUTO_PRECISION_MAX_MEAN_DIFF (1.5) is the guard's limit.

ONNX Runtime's int8 kernels are chosen by the CPU's own instruction set, not by the variables
above, so on a CPU with AVX-512 VNNI they would not show a laptop's speed; PyTorch's go through
oneDNN, which ONEDNN_MAX_CPU_ISA holds to AVX2.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.devices import keep_freed_memory  # noqa: E402
from network.fast_inference import for_inference  # noqa: E402
from network.formats import load_model  # noqa: E402
from stylization.content_source.video import VideoSource  # noqa: E402
from stylization.processor import FramesToFrames  # noqa: E402


def clip_frames(video: str, size: tuple[int, int], count: int) -> torch.Tensor:
    """The clip's first `count` frames (looped if shorter), RGB uint8, scaled to size."""
    frames: list[np.ndarray] = []
    while len(frames) < count:
        with VideoSource(video) as source:
            frames += [frame for _, frame in itertools.islice(source.frames(), count - len(frames))]
    return torch.from_numpy(np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]))


def quantised(step: torch.nn.Module, calibration: torch.Tensor, keep_float: list[str]) -> torch.nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    for name in keep_float:
        quantizer.set_module_name_qconfig(name, None)
    graph = torch.export.export(step, (calibration[:2],)).module()
    prepared = prepare_pt2e(graph, quantizer)
    for i in range(0, len(calibration), 2):
        prepared(calibration[i:i + 2])
    return convert_pt2e(prepared)


def frames_per_second(step: torch.nn.Module, frames: torch.Tensor, seconds: float) -> float:
    batch = frames[:2]
    for _ in range(3):
        step(batch)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(batch)
        count += 2
    return count / (time.perf_counter() - start)


def difference(reference: torch.nn.Module, step: torch.nn.Module,
               frames: torch.Tensor) -> tuple[float, float]:
    """Mean and 99th percentile of the absolute difference of step's output from reference's."""
    gaps = [(reference(frames[i:i + 2]).short() - step(frames[i:i + 2]).short()).abs().flatten()
            for i in range(0, len(frames), 2)]
    gap = torch.cat(gaps).float()
    return gap.mean().item(), float(np.percentile(gap.numpy(), 99))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", required=True)
    p.add_argument("--model_path", default=str(ROOT / "trained_models" / "mosaic_fast.pth.tar"))
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    p.add_argument("--calibration", type=int, default=10, help="frames from the clip's start")
    p.add_argument("--keep_float", nargs="+", default=["none", "model.stem"],
                   help="per int8 row, comma-separated module names left in float32")
    p.add_argument("--seconds", type=float, default=6.0, help="timing per row")
    args = p.parse_args()
    import torch._inductor.config as inductor
    inductor.freezing = True  # weights folded into the graph: what int8 needs, and fp32 gets too
    keep_freed_memory()
    size = tuple(int(v) for v in args.size.split("x"))
    frames = clip_frames(args.video, size, 120)
    calibration, test = frames[:args.calibration], frames[60:120:6]
    model = load_model(args.model_path).eval()
    reference = FramesToFrames(for_inference(model).eval(), torch.float32, torch.contiguous_format)
    plain = FramesToFrames(model, torch.float32, torch.contiguous_format).eval()
    print(f"{Path(args.model_path).name}, {args.size}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| run | frames/s | vs fp32 eager | mean diff | 99th pct |\n|---|---|---|---|---|")
    with torch.no_grad():
        base = frames_per_second(reference, frames, args.seconds)
        print(f"| fp32 eager (--precision auto here) | {base:.2f} | 1.00x | 0 | 0 |", flush=True)
        compiled = torch.compile(FramesToFrames(for_inference(model, compiled=True).eval(), torch.float32,
                                                torch.contiguous_format))
        rate = frames_per_second(compiled, frames, args.seconds)
        mean, p99 = difference(reference, compiled, test)
        print(f"| fp32 compiled | {rate:.2f} | {rate / base:.2f}x | {mean:.3f} | {p99:.0f} |", flush=True)
        for keep in args.keep_float:
            names = [] if keep == "none" else keep.split(",")
            step = torch.compile(quantised(plain, calibration, names))
            rate = frames_per_second(step, frames, args.seconds)
            mean, p99 = difference(reference, step, test)
            label = "int8, every convolution" if not names else f"int8, float32 kept in {keep}"
            print(f"| {label} | {rate:.2f} | {rate / base:.2f}x | {mean:.3f} | {p99:.0f} |", flush=True)


if __name__ == "__main__":
    main()
