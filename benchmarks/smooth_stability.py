"""What stylize.py --smooth buys and costs: E_warp, style and content distances, frames/s.

    python benchmarks/smooth_stability.py \\
        --model mosaic=trained_models/mosaic.pth.tar --model examples=random-examples \\
        --video ../shared/media/video/bikes.mp4 --start_frame 200 --end_frame 250 --max_size 360 \\
        --smooth 0.5 0.6 0.7 --style_path ../shared/media/style/mosaic.jpg --style_size 384 \\
        --loss_net_path ../shared/weights/vgg16_hed_features.pth

Each model stylises the held-out frames once (bikes.mp4 from frame 187 on is never trained
on; see benchmarks/temporal_evidence.sh), then the stylised frames go through
stylization.blend.TemporalSmoother at --smooth 0 (off) and at each weight given. For each
weight it prints, with ratios to --smooth 0:
- E_warp of the output (stylization.stability.WarpErrorMeter, OpenCV flow of the input frames;
  lower is steadier) and the input's own E_warp, the floor;
- the style distance of the output frames: the sum over VGG16 relu1_2, relu2_2, relu3_3 and
  relu4_3 of the relative squared Gram error against the style image (train/loss.py
  style_errors, the quality benchmark's measure), averaged over the frames;
- the content distance: the relative relu3_3 error of each output frame against its own
  input frame (train/loss.py content_loss), averaged over the frames;
- frames/s of the network alone and of the network plus smoothing, timed one after the other in
  this run (a ratio; on a busy machine the absolute figures mean little).
`--model NAME=random-examples` stands for a pytorch/examples-layout file with random weights
(written to a temporary folder and read back with load_model like any .pth), for want of a
trained one that may be shipped.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402
from network.examples_network import ExamplesNetwork  # noqa: E402
from network.formats import load_model  # noqa: E402
from network.loss_network import build_loss_network  # noqa: E402
from stylization.blend import TemporalSmoother  # noqa: E402
from stylization.processor import Processor  # noqa: E402
from stylization.stability import WarpErrorMeter  # noqa: E402
from temporal_stability import held_out_frames  # noqa: E402  (benchmarks/, beside this file)
from common.images import frames_to_batch  # noqa: E402
from train import loss as L  # noqa: E402
from train.dataset import load_style_image  # noqa: E402
from train.step import style_targets  # noqa: E402

RANDOM_EXAMPLES = "random-examples"
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu3_3"
LOSS_BATCH = 8  # frames per loss-network call
# Random weights of the last convolution give outputs near 0 on the 0-255 scale (all black
# after clamping); scaled like this they span it, as a trained model's do.
RANDOM_HEAD_GAIN = 120.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                   help=f"a model to score, by name; repeat; PATH {RANDOM_EXAMPLES} builds a "
                        "pytorch/examples-layout file with random weights")
    p.add_argument("--video", default="../shared/media/video/bikes.mp4", help="the held-out video")
    p.add_argument("--start_frame", type=int, default=200)
    p.add_argument("--end_frame", type=int, default=250, help="frame after the last one scored")
    p.add_argument("--max_size", type=int, default=360, help="longer side of the frames")
    p.add_argument("--smooth", type=float, nargs="+", default=[0.5, 0.6, 0.7],
                   help="smoothing weights compared with 0 (off)")
    p.add_argument("--style_path", default="../shared/media/style/mosaic.jpg")
    p.add_argument("--style_size", type=int, default=384)
    p.add_argument("--loss_net_path", default="../shared/weights/vgg16_hed_features.pth")
    p.add_argument("--seed", type=int, default=0, help="of the random pytorch/examples weights")
    return p.parse_args(argv)


def random_examples_file(path: Path, seed: int) -> Path:
    """A bare state dict of pytorch/examples' layout with random weights."""
    torch.manual_seed(seed)
    net = ExamplesNetwork()
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(RANDOM_HEAD_GAIN)
        net.deconv3.conv2d.bias.fill_(127.5)
    torch.save(net.state_dict(), path)
    return path


def stylise(model: torch.nn.Module, frames: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """The stylised frames, one per network call as a webcam runs, and the seconds it took."""
    processor = Processor(model, "cpu")
    processor([frames[0]])  # the first call sets up oneDNN's kernels: not timed
    start = time.perf_counter()
    stylised = [processor([frame])[0] for frame in frames]
    return stylised, time.perf_counter() - start


def smooth(frames: list[np.ndarray], stylised: list[np.ndarray],
           weight: float) -> tuple[list[np.ndarray], float, int]:
    """The smoother's output, the seconds it took and how many frames it blended."""
    smoother = TemporalSmoother(weight)
    start = time.perf_counter()
    out = [smoother(frame, result) for frame, result in zip(frames, stylised)]
    return out, time.perf_counter() - start, smoother.blended


def as_batches(frames: list[np.ndarray]) -> list[torch.Tensor]:
    return [frames_to_batch(torch.from_numpy(np.stack(frames[i:i + LOSS_BATCH])))
            for i in range(0, len(frames), LOSS_BATCH)]


def distances(outputs: list[np.ndarray], content_features: list[torch.Tensor],
              loss_net: torch.nn.Module, grams: list[torch.Tensor]) -> tuple[float, float]:
    """Mean style distance and mean content distance of the output frames."""
    style = content = 0.0
    for batch, target in zip(as_batches(outputs), content_features):
        features = loss_net(batch, STYLE_LAYERS)
        style += float(sum(L.style_errors([features[n] for n in STYLE_LAYERS], grams))) * len(batch)
        content += float(L.content_loss(features[CONTENT_LAYER], target)) * len(batch)
    return style / len(outputs), content / len(outputs)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    frames = held_out_frames(args.video, args.start_frame, args.end_frame, args.max_size)
    loss_net = build_loss_network(args.loss_net_path, "VGG16", "auto", torch.device("cpu"))
    grams = style_targets(loss_net, load_style_image(args.style_path, args.style_size),
                          {"style": STYLE_LAYERS})
    content_features = [loss_net(batch, (CONTENT_LAYER,))[CONTENT_LAYER]
                        for batch in as_batches(frames)]
    weights = [0.0, *[w for w in args.smooth if w != 0]]
    height, width = frames[0].shape[:2]
    print(f"{len(frames)} frames of {Path(args.video).name} from frame {args.start_frame}, "
          f"{width}x{height}; flow {config.FLOW_METHOD}; timings on this machine, one after the other\n")
    print("| model | --smooth | E_warp | vs off | style distance | vs off | content distance | vs off "
          "| frames/s | vs off | blended frames |")
    print("| :-- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |")
    floor = None
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.model:
            name, _, path = spec.partition("=")
            if path == RANDOM_EXAMPLES:
                path = str(random_examples_file(Path(scratch) / f"{name}.pth", args.seed))
            stylised, net_s = stylise(load_model(path, "cpu"), frames)
            reference = None
            for weight in weights:
                outputs, smooth_s, blended = smooth(frames, stylised, weight)
                meter = WarpErrorMeter()
                for frame, output in zip(frames, outputs):
                    meter.add(frame, output)
                result = meter.result()
                floor = result
                style, content = distances(outputs, content_features, loss_net, grams)
                fps = len(frames) / (net_s + smooth_s)
                row = (result.stylised, style, content, fps)
                reference = reference or row
                cells = " | ".join(f"{v:.5g} | {v / r:.2f}x" for v, r in zip(row, reference))
                print(f"| {name} | {weight:g} | {cells} | {blended} of {len(frames) - 1} |", flush=True)
    print(f"\ninput E_warp {floor.input:.5f} ({floor.pairs} pairs scored, {floor.cuts} skipped at scene cuts)")


if __name__ == "__main__":
    main()
