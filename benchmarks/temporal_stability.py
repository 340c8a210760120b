"""Temporal stability of trained models: E_warp on a held-out clip, the style and content
losses on its frames, and one picture of a shippable photo stylised by each model.

    python benchmarks/temporal_stability.py \\
        --model plain=/tmp/ev/models/plain.pth.tar --model noise=/tmp/ev/models/noise.pth.tar \\
        --video ../shared/media/video/bikes.mp4 --start_frame 187 --max_size 360 \\
        --style_path ../shared/media/style/mosaic.jpg --style_size 384 \\
        --loss_net_path ../shared/weights/vgg16_hed_features.pth \\
        --picture docs/grace_hopper.jpg --picture_out docs/temporal_models.jpg

Prints a markdown table, one row per model, with ratios to the first model:
- E_warp (stylization.stability, OpenCV DIS flow of the input frames) of the clip's frames
  from --start_frame to --end_frame, stylised at --max_size; the input's own E_warp is
  printed as the floor;
- the unweighted style and content losses (train/loss.py, float32) of the same frames,
  centre-cropped to --img_size as train.py crops them, averaged over the frames.
The picture is --picture stylised by each model in the order given, side by side after the
photo itself, scaled to --picture_height pixels high.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402
from common.images import center_crop_resize, image_to_tensor, load_image, save_image  # noqa: E402
from network.formats import load_model  # noqa: E402
from network.loss_network import build_loss_network  # noqa: E402
from stylization.content_source.factory import create_source  # noqa: E402
from stylization.enum_class import ContentType  # noqa: E402
from stylization.processor import Processor  # noqa: E402
from stylization.stability import WarpErrorMeter  # noqa: E402
from train import loss as L  # noqa: E402
from train.dataset import load_style_image  # noqa: E402
from train.step import style_targets  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                   help="a model to score, by name; repeat; the first is the reference of the ratios")
    p.add_argument("--video", required=True, help="the held-out video")
    p.add_argument("--start_frame", type=int, default=0, help="first frame of the held-out part")
    p.add_argument("--end_frame", type=int, default=None, help="frame after the held-out part (default: end)")
    p.add_argument("--max_size", type=int, default=360, help="longer side of the frames stylised")
    p.add_argument("--style_path", required=True)
    p.add_argument("--style_size", type=int, default=384)
    p.add_argument("--loss_net_path", required=True)
    p.add_argument("--loss_net_choice", default="VGG16", choices=sorted(config.LOSS_LAYERS))
    p.add_argument("--img_size", type=int, default=128, help="crop size for the losses, as in training")
    p.add_argument("--picture", default=None, help="a photo the project may ship, stylised by each model")
    p.add_argument("--picture_out", default=None, help="where the side-by-side picture is written")
    p.add_argument("--picture_height", type=int, default=160)
    return p.parse_args(argv)


def held_out_frames(video: str, start: int, end: int | None, max_size: int) -> list[np.ndarray]:
    with create_source(ContentType.VIDEO, video, max_size) as source:
        return [frame for index, frame in source.frames()
                if index >= start and (end is None or index < end)]


def score_model(model: torch.nn.Module, frames: list[np.ndarray], crops: torch.Tensor,
                loss_net: torch.nn.Module, grams: list[torch.Tensor],
                layers: dict[str, tuple[str, ...]]) -> dict[str, float]:
    processor = Processor(model, "cpu")
    meter = WarpErrorMeter()
    for frame in frames:
        meter.add(frame, processor([frame])[0])
    result = meter.result()
    with torch.inference_mode():
        stylised = model(crops)
        targets = loss_net(crops, layers["content"])
        features = loss_net(stylised)
        content = sum(L.content_loss(features[n], targets[n]) for n in layers["content"])
        style = sum(L.style_errors([features[n] for n in layers["style"]], grams))
    return {"E_warp": result.stylised, "input E_warp": result.input, "pairs": result.pairs,
            "cuts": result.cuts, "style": float(style), "content": float(content)}


def picture(models: dict[str, torch.nn.Module], photo_path: str, height: int) -> np.ndarray:
    photo = load_image(photo_path)
    photo = photo.resize((round(photo.width * height / photo.height), height), Image.Resampling.LANCZOS)
    array = np.asarray(photo)
    panels = [array] + [Processor(model, "cpu")([array])[0] for model in models.values()]
    return np.concatenate(panels, axis=1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    models = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = load_model(path, "cpu")
    frames = held_out_frames(args.video, args.start_frame, args.end_frame, args.max_size)
    crops = torch.stack([image_to_tensor(center_crop_resize(Image.fromarray(f), args.img_size))
                         for f in frames])
    loss_net = build_loss_network(args.loss_net_path, args.loss_net_choice, "auto", torch.device("cpu"))
    layers = config.LOSS_LAYERS[args.loss_net_choice]
    grams = style_targets(loss_net, load_style_image(args.style_path, args.style_size), layers)
    scores = {name: score_model(model, frames, crops, loss_net, grams, layers)
              for name, model in tqdm(models.items(), desc="models", unit="model")}
    first = next(iter(scores.values()))
    print(f"\n{len(frames)} held-out frames of {Path(args.video).name} from frame {args.start_frame}, "
          f"{first['pairs']} pairs scored, {first['cuts']} skipped at scene cuts; "
          f"input E_warp {first['input E_warp']:.5f}\n")
    print("| model | E_warp | vs first | style loss | vs first | content loss | vs first |")
    print("| :-- | --: | --: | --: | --: | --: | --: |")
    for name, s in scores.items():
        print(f"| {name} | {s['E_warp']:.5f} | {s['E_warp'] / first['E_warp']:.2f}x "
              f"| {s['style']:.4g} | {s['style'] / first['style']:.2f}x "
              f"| {s['content']:.4g} | {s['content'] / first['content']:.2f}x |")
    if args.picture and args.picture_out:
        save_image(picture(models, args.picture, args.picture_height), args.picture_out)
        print(f"\nwrote {args.picture_out}: {args.picture} then, left to right, {', '.join(models)}")


if __name__ == "__main__":
    main()
