"""train.py's command line: flags -> TrainSettings -> train.loop.train.

Everything a run does lives in the train package (README, Layout); this module only reads and
checks the flags.
"""
from __future__ import annotations

import argparse
from dataclasses import fields

import config
from common.cli import str2bool
from train.loop import train
from train.settings import TrainSettings, check


def build_parser() -> argparse.ArgumentParser:
    d = config.TRAIN_DEFAULTS
    p = argparse.ArgumentParser(
        description="Train a feed-forward network for one style (perceptual losses over a frozen VGG).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default=d["device"],
                   help="cuda, cpu, or auto (CUDA when present); cuda without a GPU falls back to the CPU")
    p.add_argument("--num_workers", type=int, default=d["num_workers"],
                   help="worker processes that decode and crop training images")
    p.add_argument("--precision", default=d["precision"], choices=config.PRECISION_CHOICES,
                   help="autocast precision: auto is fp16 on CUDA, bf16 on CPUs with native bf16, "
                        "else fp32; Gram matrices and losses stay float32")
    p.add_argument("--compile", type=str2bool, default=d["compile"],
                   help="torch.compile the networks: faster steps after a compile of a minute or more")
    p.add_argument("--network", choices=list(config.NETWORK_SIZES), default=None,
                   help="size of the stylizing network (config.NETWORK_SIZES): default, fast for "
                        "real-time video on a CPU, tiny for real time without native bf16, coarse for "
                        "larger shapes; recorded in the checkpoint, so stylize.py needs no "
                        "flag (default: default, or the resumed checkpoint's)")
    p.add_argument("--batch_size", type=int, default=d["batch_size"], help="images per training step")
    p.add_argument("--img_size", type=int, default=d["img_size"],
                   help="training images are centre-cropped and resized to img_size x img_size")
    p.add_argument("--content_dir", required=True,
                   help="folder of content images (searched recursively), e.g. extracted video frames")
    p.add_argument("--style_path", required=True, help="the style image")
    p.add_argument("--style_size", type=int, default=d["style_size"],
                   help="the style image's longer side is scaled to this many pixels (0: as it is)")
    p.add_argument("--model_dir", default=d["model_dir"], help="folder for checkpoints")
    p.add_argument("--model_name", required=True,
                   help="checkpoint file name in model_dir, e.g. mosaic.pth.tar")
    p.add_argument("--load_model", type=str2bool, default=d["load_model"],
                   help="resume from the newest checkpoint of model_name (model, optimizer, epoch, "
                        "step; the learning rate comes from --lr); starts fresh if there is none")
    p.add_argument("--save_model", type=str2bool, default=d["save_model"],
                   help="write checkpoints (every save_freq batches and at each epoch's end)")
    p.add_argument("--save_freq", type=int, default=d["save_freq"],
                   help="every this many batches: a checkpoint and sample images")
    p.add_argument("--train_output_dir", default=d["train_output_dir"],
                   help="folder for sample images and the loss log and plot")
    p.add_argument("--loss_net_choice", default=d["loss_net_choice"], choices=sorted(config.LOSS_LAYERS),
                   help="loss network architecture")
    p.add_argument("--loss_net_path", required=True,
                   help="VGG weight file (Caffe features-only or torchvision layout; see README)")
    p.add_argument("--loss_net_preprocess", default=d["loss_net_preprocess"],
                   choices=["auto", *config.PREPROCESSING],
                   help="input preprocessing of the loss network; auto picks it from the file's layout")
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help="epochs to train in this run; resuming an interrupted run finishes that run instead")
    p.add_argument("--minutes", type=float, default=None,
                   help="train for this many minutes instead of --epochs: the run measures its pace, plans "
                        "its steps and learning-rate schedule to end in time, and writes model_name at the "
                        "end; resuming an interrupted one continues its plan")
    p.add_argument("--init_model", default=None, metavar="PATH",
                   help="a fresh run starts from this model's weights (any model this toolkit trained, e.g. "
                        "trained_models/mosaic.pth.tar) and takes its network size; optimizer and position "
                        "start anew")
    p.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate")
    p.add_argument("--lambda_content", type=float, default=d["lambda_content"], help="weight of the content loss")
    p.add_argument("--lambda_style", type=float, default=d["lambda_style"], help="weight of the style loss")
    p.add_argument("--style_layer_weights", type=float, nargs="+", default=d["style_layer_weights"],
                   metavar="W", help="one weight per style layer (config.LOSS_LAYERS), shallow to deep; "
                   "default: 1 each")
    p.add_argument("--content_layers", nargs="+", default=d["content_layers"], metavar="LAYER",
                   help="loss-network layers the content loss compares (relu<block>_<conv>); default: "
                   + ", ".join(f"{k} {' '.join(v['content'])}" for k, v in config.LOSS_LAYERS.items()))
    p.add_argument("--loss_downscale", type=int, default=d["loss_downscale"], metavar="N",
                   help="the loss network judges the output, the input and the style image averaged "
                   "over N x N blocks: train at N times the size the picture is judged at, as a photo "
                   "larger than the training crops is (docs/shipped_models.md, the recipe)")
    p.add_argument("--lambda_regu", type=float, default=d["lambda_regu"],
                   help="weight of the total-variation regulariser")
    p.add_argument("--lambda_noise", type=float, default=d["lambda_noise"],
                   help="weight of the noise (temporal stability) loss; 0 turns it off")
    p.add_argument("--noise_per_img", type=int, default=d["noise_per_img"],
                   help="number of random pixels that get noise in the noisy copy of each frame")
    p.add_argument("--noise_range", type=int, default=d["noise_range"],
                   help="noise is uniform in +-noise_range (0-255 scale), then the pixel is clipped")
    p.add_argument("--lambda_flow", type=float, default=d["lambda_flow"],
                   help="weight of the optical-flow temporal loss between consecutive frames of a "
                        "video; 0 turns it off (it costs a second frame per sample, see README)")
    p.add_argument("--flow_cache_dir", default=None,
                   help="folder for the optical flow of training pairs, computed once "
                        f"(default: $XDG_CACHE_HOME or ~/.cache, then {config.FLOW_CACHE_SUBDIR})")
    p.add_argument("--seed", type=int, default=d["seed"],
                   help="seed of the initial weights, data order and noise pattern")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def main(argv: list[str] | None = None) -> None:
    args = vars(build_parser().parse_args(argv))
    settings = TrainSettings(**{f.name: args[f.name] for f in fields(TrainSettings)})
    check(settings)
    train(settings)
