"""Tables the code reads: network sizes, VGG layers, weight-file layouts, defaults.

Kept as data so that an experiment changes a number here, not a literal inside a module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the stylizing network (see network/style_network.py).

    `channels` are the widths after the stem and after each stride-2 downsampling; the
    upsampling path mirrors them back. The default is small enough for real-time video on a
    CPU (about 0.3 M parameters, ~1.3 MB in float32) while its 9x9 outer kernels still give
    brush strokes a receptive field larger than 3x3-only networks.
    """

    channels: tuple[int, ...] = (32, 48, 64)
    stem_kernel: int = 9
    kernel: int = 3
    res_blocks: int = 5
    final_kernel: int = 9
    upsample: str = "nearest"  # "nearest" or "bilinear": resize + conv, never transposed convs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "channels" in known:
            known["channels"] = tuple(known["channels"])
        return cls(**known)


# VGG layer names as the loss network names them (relu<block>_<conv>). Users of the original
# rely on these choices (ORIGINAL_NOTES.md).
LOSS_LAYERS = {
    "VGG16": {"style": ("relu1_2", "relu2_2", "relu3_3", "relu4_3"), "content": ("relu2_2",)},
    "VGG19": {"style": ("relu1_2", "relu2_2", "relu3_2", "relu4_2"), "content": ("relu4_2",)},
}

# How each weight-file layout wants its input. The stylizing network works in RGB [0, 1];
# the loss network maps that to what its weights were trained on: x * scale, minus mean,
# divided by std (per RGB channel).
PREPROCESSING = {
    # Caffe conversion (vgg16_features-amdegroot-88682ab5.pth): RGB 0-255 minus mean, std 1.
    "caffe": {"scale": 255.0, "mean": (123.0, 117.0, 104.0), "std": (1.0, 1.0, 1.0)},
    # torchvision's ImageNet files (vgg16-397923af.pth, vgg19-dcbb9e9d.pth).
    "torchvision": {"scale": 1.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
}

# The loss network's weights and activations in channels-last (NHWC) memory: oneDNN's
# convolutions then skip a layout conversion per layer (measured in README, Training speed).
# The stylizing network stays NCHW: its instance norms and reflection pads were slower in NHWC.
LOSS_NET_CHANNELS_LAST = True

# Extensions read as images (training frames, image stylisation) and as videos.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

MODEL_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar")  # stripped to name outputs after a model

# --precision (training; stylisation will take the same flag): the autocast dtype by name.
# "auto" picks per device in utils.resolve_precision; "fp32" turns autocast off.
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PRECISION_CHOICES = ("auto", *PRECISIONS)

CHECKPOINT_FORMAT_VERSION = 1
KEEP_TEMP_CHECKPOINTS = 3  # rolling checkpoints written every --save_freq batches

# Defaults of train.py, as in the original README's table (except load_model: see train/main.py).
TRAIN_DEFAULTS = {
    "device": "auto",
    "num_workers": 0,
    "batch_size": 1,
    "img_size": 256,
    "style_size": 512,
    "model_dir": "training_models",
    "load_model": False,
    "save_model": True,
    "save_freq": 300,
    "train_output_dir": "training_output",
    "loss_net_choice": "VGG16",
    "loss_net_preprocess": "auto",
    "epochs": 1,
    "lr": 2.5e-4,
    "lambda_content": 10.0,
    "lambda_style": 100.0,
    "lambda_regu": 1e-2,
    "lambda_noise": 1e-5,
    "noise_per_img": 20000,
    "noise_range": 200,
    "lambda_flow": 0.0,  # off: the flow loss needs video frames and costs a second frame per sample
    "seed": 0,
    "precision": "auto",
    "compile": False,  # measured not to pay for itself in a short CPU run (README, Training speed)
}

STYLIZE_DEFAULTS = {
    "device": "auto",
    "max_size": None,
    "output_dir": "stylized_output",
    "real_time": True,
    "save_output": True,
}

# Optical flow and occlusion (utils.optical_flow, utils.valid_flow_mask), shared by the
# warping-error metric and the flow loss. The thresholds are those of Ruder et al. 2016 that
# Lai et al. 2018 use for E_warp: a pixel is occluded where |w + w'|^2 > ratio(|w|^2 + |w'|^2)
# + offset (forward-backward check), or on a motion boundary where |grad u|^2 + |grad v|^2 >
# ratio |w|^2 + offset.
FLOW_METHODS = ("dis", "farneback")  # OpenCV's DIS (medium preset) or Farneback
FLOW_METHOD = "dis"
OCCLUSION = {"consistency_ratio": 0.01, "consistency_offset": 0.5,
             "boundary_ratio": 0.01, "boundary_offset": 0.002}
# A pair of frames is a hard scene cut when the correlation of their 32x32 greyscale
# thumbnails is below this. On the bikes clip of shared/media its five cuts scored 0.21 or
# less and every pair within a shot 0.55 or more (a fast pan). Such pairs are not scored and
# give no flow loss.
SCENE_CUT_THUMBNAIL = 32
SCENE_CUT_CORRELATION = 0.4
# Flows and masks of training pairs are computed once and kept in this folder of the user's
# cache ($XDG_CACHE_HOME, else ~/.cache): one small .npz per pair and img_size, outside the
# user's data folder. --flow_cache_dir overrides it.
FLOW_CACHE_SUBDIR = "video-style-transfer/flow"
