"""Training speed: the straightforward step against the project's step, per precision.

    python benchmarks/train_speed.py --loss_net_path ../shared/weights/vgg16_hed_features.pth \\
        --content_dir /tmp/data/frames --style_path ../shared/media/style/mosaic.jpg --device cpu

In one run, on the same frames, style image, loss network and stylizing network, it prints a
markdown table of images/s for
- the straightforward step: float32, the style image's Grams recomputed every step, the loss
  network's weights requiring grad (their gradients are computed), content targets tracked
  by autograd, the clean and the noisy frames through the network in two separate calls;
- the project's step (train.step.optimization_step, as train.py runs it) per precision,
and, for each precision, the style and content losses its model reaches after --steps steps
(same seed, same data order), evaluated in float32 on the same frames, so that speed is
never bought with quality. With several --seeds (initial weights and data order) each
precision is trained once per seed and a second table compares the precisions' mean losses
with the spread between seeds of one precision: a gap smaller than that spread is the runs'
trajectories parting, not the precision. Step times exclude data loading (frames are decoded once up
front) and the first --warmup steps of each run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402
from network.loss_network import LossNetwork, build_loss_network  # noqa: E402
from network.style_network import StylizingNetwork  # noqa: E402
from train import loss as L  # noqa: E402
from train.dataset import ContentDataset, EpochSampler, load_style_image  # noqa: E402
from train.step import (LOSS_TERMS, Objective, Updater, loss_terms, make_scaler,  # noqa: E402
                        optimization_step, style_targets, training_step, weighted_total)
from common.devices import resolve_device  # noqa: E402
from common.precision import precision_name, resolve_precision  # noqa: E402

EVAL_BATCHES = 8  # batches of the first epoch on which every trained model is scored


@dataclass(frozen=True, eq=False)
class StraightforwardObjective:
    """What the straightforward step is asked to minimise: train.step.Objective's terms, but
    with the style image itself rather than its Grams, which the step recomputes every time."""
    style_image: torch.Tensor
    layers: dict[str, tuple[str, ...]]
    weights: dict[str, float]
    noise_pattern: torch.Tensor | None = None


def straightforward_step(model: StylizingNetwork, loss_net: LossNetwork, images: torch.Tensor,
                         objective: StraightforwardObjective,
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss as a first implementation computes it: the same value as training_step's
    in float32, with none of its savings (see the module docstring)."""
    layers, noise_pattern = objective.layers, objective.noise_pattern
    style_features = loss_net(objective.style_image, layers["style"])
    style_grams = [L.gram_matrix(style_features[n]) for n in layers["style"]]
    stylised = model(images)
    stylised_noisy = model(L.add_noise(images, noise_pattern)) if noise_pattern is not None else None
    targets = loss_net(images, layers["content"])
    features = loss_net(stylised)
    terms = loss_terms(features, targets, stylised, stylised_noisy,
                       Objective(style_grams, layers, objective.weights))
    return weighted_total(terms, objective.weights), terms


def unfrozen_loss_network(path: str, device: torch.device) -> LossNetwork:
    """The loss network as a naive loop has it: NCHW, weights requiring grad."""
    loss_net = build_loss_network(path, "VGG16", "auto", device)
    return loss_net.to(memory_format=torch.contiguous_format).requires_grad_(True)


def batch_order(size: int, batch_size: int, seed: int, count: int) -> list[list[int]]:
    """The first `count` batches of indices in train.py's order, epoch after epoch."""
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < count:
        order = EpochSampler(size, seed, epoch).order
        batches += [order[i:i + batch_size] for i in range(0, size, batch_size)]
        epoch += 1
    return batches[:count]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(times: list[tuple[float, int]], warmup: int) -> float:
    timed = times[warmup:]
    return sum(n for _, n in timed) / sum(t for t, _ in timed)


class Bench:
    """What every run shares: frames, style, loss network, noise pattern, loss weights."""

    def __init__(self, args: argparse.Namespace):
        d = config.TRAIN_DEFAULTS
        self.args = args
        self.device = resolve_device(args.device)
        dataset = ContentDataset(args.content_dir, args.img_size)
        self.frames = [dataset[i] for i in range(len(dataset))]  # decoded once: steps are timed alone
        self.orders: dict[int, list[list[int]]] = {}
        self.style_image = load_style_image(args.style_path, args.style_size).to(self.device)
        self.loss_net = build_loss_network(args.loss_net_path, "VGG16", "auto", self.device)
        self.layers = config.LOSS_LAYERS["VGG16"]
        self.grams = style_targets(self.loss_net, self.style_image, self.layers)
        generator = torch.Generator().manual_seed(d["seed"])
        self.noise = L.make_noise_pattern(args.img_size, args.img_size, d["noise_per_img"],
                                          d["noise_range"], generator).to(self.device)
        self.weights = {t: d[f"lambda_{t}"] for t in LOSS_TERMS}
        self.objective = Objective(self.grams, self.layers, self.weights, noise_pattern=self.noise)

    def batch(self, k: int, seed: int | None = None) -> torch.Tensor:
        seed = config.TRAIN_DEFAULTS["seed"] if seed is None else seed
        if seed not in self.orders:
            count = max(self.args.steps, self.args.baseline_steps + self.args.warmup, EVAL_BATCHES)
            self.orders[seed] = batch_order(len(self.frames), self.args.batch_size, seed, count)
        return torch.stack([self.frames[i] for i in self.orders[seed][k]]).to(self.device)

    def fresh_model(self, seed: int | None = None) -> tuple[StylizingNetwork, torch.optim.Adam]:
        seed = config.TRAIN_DEFAULTS["seed"] if seed is None else seed
        torch.manual_seed(seed)
        model = StylizingNetwork().to(self.device).train()
        return model, torch.optim.Adam(model.parameters(), lr=config.TRAIN_DEFAULTS["lr"])

    def straightforward(self) -> float:
        model, optimizer = self.fresh_model()
        loss_net = unfrozen_loss_network(self.args.loss_net_path, self.device)
        straightforward = StraightforwardObjective(self.style_image, self.layers, self.weights, self.noise)
        times = []
        for k in range(self.args.warmup + self.args.baseline_steps):
            images = self.batch(k)
            synchronize(self.device)
            start = time.perf_counter()
            total, _ = straightforward_step(model, loss_net, images, straightforward)
            optimizer.zero_grad()
            loss_net.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            synchronize(self.device)
            times.append((time.perf_counter() - start, len(images)))
        return images_per_second(times, self.args.warmup)

    def project(self, precision: str, compiled: bool, nchw: bool, seed: int,
                ) -> tuple[str, float, float, dict[str, float]]:
        """(precision used, images/s, first step's seconds, float32 losses after --steps).
        nchw: the loss network in NCHW memory instead of config.LOSS_NET_CHANNELS_LAST's;
        seed: initial weights and data order."""
        model, optimizer = self.fresh_model(seed)
        dtype = resolve_precision(precision, self.device)
        updater = Updater(optimizer, make_scaler(self.device, dtype), dtype)
        loss_net = self.loss_net
        if nchw:
            loss_net = build_loss_network(self.args.loss_net_path, "VGG16", "auto", self.device)
            loss_net = loss_net.to(memory_format=torch.contiguous_format)
        step_model, step_loss_net = ((torch.compile(model), torch.compile(loss_net)) if compiled
                                     else (model, loss_net))
        times = []
        for k in range(self.args.steps):
            images = self.batch(k, seed)
            synchronize(self.device)
            start = time.perf_counter()
            optimization_step(step_model, step_loss_net, updater, images, self.objective)
            synchronize(self.device)
            times.append((time.perf_counter() - start, len(images)))
            print(f"  {precision_name(dtype)}{' compiled' if compiled else ''}{' nchw' if nchw else ''} "
                  f"seed {seed}: step {k + 1}/"
                  f"{self.args.steps} {times[-1][0]:.2f} s", end="\r", file=sys.stderr, flush=True)
        losses = self.score(model)
        # Each run's result as soon as it is known: a long run stopped early keeps what it has.
        print(f"\n  -> {images_per_second(times, self.args.warmup):.2f} images/s, style {losses['style']:.4g}, "
              f"content {losses['content']:.4g}", file=sys.stderr)
        return precision_name(dtype), images_per_second(times, self.args.warmup), times[0][0], losses

    def score(self, model: StylizingNetwork) -> dict[str, float]:
        """Mean unweighted style and content losses in float32 on the first batches of the
        default seed's order: the same frames for every model."""
        sums = {"style": 0.0, "content": 0.0}
        with torch.no_grad():
            for k in range(EVAL_BATCHES):
                _, terms, _ = training_step(model, self.loss_net, self.batch(k), self.objective)
                for name in sums:
                    sums[name] += terms[name].item() / EVAL_BATCHES
        return sums


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--loss_net_path", required=True, help="VGG16 weight file")
    p.add_argument("--content_dir", required=True, help="folder of training frames")
    p.add_argument("--style_path", required=True, help="style image")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--img_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--style_size", type=int, default=config.TRAIN_DEFAULTS["style_size"],
                   help="the style image's longer side in pixels, as train.py's flag")
    p.add_argument("--steps", type=int, default=200,
                   help="steps of each project run (timed after --warmup; losses scored after all)")
    p.add_argument("--baseline_steps", type=int, default=10, help="timed steps of the straightforward step")
    p.add_argument("--warmup", type=int, default=3, help="first steps of each run left out of the timing")
    p.add_argument("--precisions", nargs="+", choices=config.PRECISIONS,
                   help="precisions of the project's step (default: fp32 and bf16 on a CPU, "
                        "fp32, fp16 and bf16 on CUDA)")
    p.add_argument("--seeds", nargs="+", type=int, default=[config.TRAIN_DEFAULTS["seed"]],
                   help="train each precision once per seed (initial weights and data order)")
    p.add_argument("--compile", action="store_true", help="also run each precision under torch.compile")
    p.add_argument("--nchw", action="store_true",
                   help="also run each precision with the loss network in NCHW memory (checks "
                        "config.LOSS_NET_CHANNELS_LAST)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.steps <= args.warmup:
        sys.exit("--steps must exceed --warmup")
    bench = Bench(args)
    precisions = args.precisions or (["fp32", "fp16", "bf16"] if bench.device.type == "cuda"
                                     else ["fp32", "bf16"])
    print(f"device {bench.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"img_size {args.img_size}, batch {args.batch_size}, {len(bench.frames)} frames", file=sys.stderr)
    baseline = bench.straightforward()
    first_seed = args.seeds[0]
    variants = [(p, False, False, seed) for seed in args.seeds for p in precisions]
    variants += [(p, False, True, first_seed) for p in precisions if args.nchw]
    variants += [(p, True, False, first_seed) for p in precisions if args.compile]
    runs = [(compiled, nchw, seed, *bench.project(p, compiled, nchw, seed))
            for p, compiled, nchw, seed in variants]
    reference = next((r[6] for r in runs if r[3] == "fp32" and not (r[0] or r[1]) and r[2] == first_seed),
                     None)

    def versus(losses: dict[str, float], name: str) -> str:
        return f"{100 * (losses[name] / reference[name] - 1):+.1f}%" if reference else "-"

    print(f"\n| step | precision | seed | images/s | vs straightforward | first step (s) | "
          f"style after {args.steps} | content after {args.steps} | style vs fp32 | content vs fp32 |")
    print("| :-- | :-- | --: | --: | --: | --: | --: | --: | --: | --: |")
    print(f"| straightforward | fp32 | {first_seed} | {baseline:.2f} | 1.00x | - | - | - | - | - |")
    for compiled, nchw, seed, name, rate, first, losses in runs:
        label = "project" + (" + compile" if compiled else "") + (", loss net NCHW" if nchw else "")
        print(f"| {label} | {name} | {seed} | {rate:.2f} | {rate / baseline:.2f}x | "
              f"{first:.1f} | {losses['style']:.4g} | {losses['content']:.4g} | "
              f"{versus(losses, 'style')} | {versus(losses, 'content')} |")
    if len(args.seeds) > 1:
        plain = [r for r in runs if not (r[0] or r[1])]
        print_seed_summary({p: [r[6] for r in plain if r[3] == p] for p in dict.fromkeys(r[3] for r in plain)},
                           args.steps)


def print_seed_summary(losses: dict[str, list[dict[str, float]]], steps: int) -> None:
    """Per precision: mean loss over seeds, the seeds' spread ((max - min) / mean) and the
    mean's difference from fp32's mean."""
    print(f"\n| precision | seeds | style after {steps}: mean | spread | vs fp32 | "
          f"content after {steps}: mean | spread | vs fp32 |")
    print("| :-- | --: | --: | --: | --: | --: | --: | --: |")
    means = {p: {t: statistics.fmean(r[t] for r in runs) for t in ("style", "content")}
             for p, runs in losses.items()}
    for precision, runs in losses.items():
        cells = []
        for term in ("style", "content"):
            values, mean = [r[term] for r in runs], means[precision][term]
            ref = means.get("fp32", {}).get(term)
            cells += [f"{mean:.4g}", f"{100 * (max(values) - min(values)) / mean:.1f}%",
                      f"{100 * (mean / ref - 1):+.1f}%" if ref else "-"]
        print(f"| {precision} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
