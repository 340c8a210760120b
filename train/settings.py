"""What a training run is asked to do: train.py's flags as one dataclass, and their checks.

train.py builds TrainSettings from its flags; a script builds it with train_settings(), which
fills what it leaves out from config.TRAIN_DEFAULTS, read when it is called.
"""
from __future__ import annotations

from dataclasses import dataclass

import config
from common.cli import with_defaults
from common.devices import check_compiler
from common.errors import fail
from network.loss_network import layer_names
from train.step import LOSS_TERMS


@dataclass
class TrainSettings:
    """One field per train.py flag, named as the flag (README, Training)."""
    content_dir: str
    style_path: str
    model_name: str
    loss_net_path: str
    device: str
    num_workers: int
    precision: str
    compile: bool
    batch_size: int
    img_size: int
    style_size: int
    model_dir: str
    load_model: bool
    save_model: bool
    save_freq: int
    train_output_dir: str
    loss_net_choice: str
    loss_net_preprocess: str
    epochs: int
    lr: float
    lambda_content: float
    lambda_style: float
    style_layer_weights: list[float] | None
    content_layers: list[str] | None
    loss_downscale: int
    lambda_regu: float
    lambda_noise: float
    noise_per_img: int
    noise_range: int
    lambda_flow: float
    seed: int
    network: str | None = None
    init_model: str | None = None
    minutes: float | None = None
    flow_cache_dir: str | None = None


def train_settings(**values) -> TrainSettings:
    """TrainSettings with config.TRAIN_DEFAULTS for every field not given."""
    return with_defaults(TrainSettings, config.TRAIN_DEFAULTS, values)


def check(s: TrainSettings) -> None:
    """A one-line error (UserError) for the first setting out of range."""
    checks = [
        (s.img_size >= 16, f"--img_size must be at least 16 (got {s.img_size})"),
        (s.batch_size >= 1, f"--batch_size must be at least 1 (got {s.batch_size})"),
        (s.num_workers >= 0, f"--num_workers must be 0 or more (got {s.num_workers})"),
        (s.save_freq >= 1, f"--save_freq must be at least 1 (got {s.save_freq})"),
        (s.epochs >= 1, f"--epochs must be at least 1 (got {s.epochs})"),
        (s.minutes is None or s.minutes > 0, f"--minutes must be more than 0 (got {s.minutes})"),
        (s.lr > 0, f"--lr must be positive (got {s.lr})"),
        (s.style_size >= 0, f"--style_size must be 0 or more (got {s.style_size})"),
        (s.loss_downscale >= 1 and s.img_size % s.loss_downscale == 0
         and s.img_size // s.loss_downscale >= 16,
         f"--loss_downscale must divide --img_size into at least 16 pixels (got {s.loss_downscale} "
         f"for --img_size {s.img_size})"),
        (0 <= s.noise_range <= 255, f"--noise_range must be within 0-255 (got {s.noise_range})"),
        (s.noise_per_img >= 0, f"--noise_per_img must be 0 or more (got {s.noise_per_img})"),
    ]
    checks += [(getattr(s, f"lambda_{t}") >= 0,
                f"--lambda_{t} must be 0 or more (got {getattr(s, f'lambda_{t}')})") for t in LOSS_TERMS]
    if s.style_layer_weights is not None:
        count = len(config.LOSS_LAYERS[s.loss_net_choice]["style"])
        checks += [(len(s.style_layer_weights) == count,
                    f"--style_layer_weights needs {count} weights, one per style layer of "
                    f"{s.loss_net_choice} (got {len(s.style_layer_weights)})"),
                   (min(s.style_layer_weights) >= 0,
                    f"--style_layer_weights must be 0 or more (got {s.style_layer_weights})")]
    relus = [n for n in layer_names(s.loss_net_choice) if n.startswith("relu")]
    checks += [(name in relus, f"--content_layers: {name} is not a layer of {s.loss_net_choice}; "
                               f"choose among {', '.join(relus)}") for name in s.content_layers or ()]
    for ok, message in checks:
        if not ok:
            fail(message)
    if s.compile:
        check_compiler()
