"""Tables the code reads: network sizes, VGG layers, weight-file layouts, defaults.

Kept as data so that an experiment changes a number here, not a literal inside a module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the stylizing network (see network/style_network.py).

    `channels` are the widths after the stem and after each stride-2 downsampling; the
    upsampling path mirrors them back. The default has 0.47 M parameters (a 0.96 MB checkpoint,
    weights stored in half precision); its 9x9 outer kernels give brush strokes a receptive
    field larger than 3x3-only networks. "fast" below is the real-time size.
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


# Named sizes of the stylizing network: train.py --network picks one, the checkpoint records
# the sizes (its `network` entry), so stylize.py needs no flag. "fast" is the real-time size
# (about 3x the default's frames/s; benchmarks/network_sizes.py measures sizes for speed and,
# after the same training, for style and content losses). "coarse" has the default's 0.47 M
# parameters with one more downsampling (its residual blocks work at 1/8 of the picture): each
# output pixel sees 175 x 175 input pixels instead of 107 x 107, for styles whose shapes are
# larger than the default draws (docs/shipped_models.md). "tiny" halves the fast network's
# full- and half-resolution widths and adds the coarse network's extra downsampling: 2.6 times
# less arithmetic, about twice the fast network's frames/s, for real time on CPUs without native
# bf16 (docs/speed.md); each output pixel sees 139 x 139 input pixels instead of fast's 71 x 71.
NETWORK_SIZES = {
    "default": NetworkConfig(),
    "fast": NetworkConfig(channels=(16, 32, 32), res_blocks=3, stem_kernel=5, final_kernel=5),
    "coarse": NetworkConfig(channels=(32, 48, 64, 64), res_blocks=4),
    "tiny": NetworkConfig(channels=(8, 16, 32, 32), res_blocks=3, stem_kernel=5, final_kernel=5),
}


def network_name(sizes: NetworkConfig) -> str | None:
    """The NETWORK_SIZES name of these sizes, or None."""
    return next((name for name, cfg in NETWORK_SIZES.items() if cfg == sizes), None)


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

# --precision (training and stylisation): the autocast dtype by name.
# "auto" picks per device in common.precision.resolve_precision; "fp32" turns autocast off.
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PRECISION_CHOICES = ("auto", *PRECISIONS)

# `python -m network.export`: file name endings of each format, and the check against PyTorch.
EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_OPSET = 18  # ONNX Runtime runs opset 18 from version 1.14 on
EXPORT_EXAMPLE_SIZE = (64, 64)  # height, width the export traces at
# Checked on another batch size and odd sides, so a graph that froze the traced shape fails.
EXPORT_CHECK_SHAPE = (2, 3, 71, 97)
EXPORT_TOLERANCE = 1e-3  # largest difference allowed on the [0, 1] scale: a quarter of an 8-bit level

CHECKPOINT_FORMAT_VERSION = 1

# Training images that cannot be read (truncated, damaged, vanished) are skipped with a warning
# and replaced by their neighbour in the folder; the run stops only when more than this share
# of the data set is unreadable (a real set of tens of thousands of frames often holds a few
# broken files; many mean a broken extraction). One such image is always tolerated, so that a
# small set is not refused for a single file.
MAX_UNREADABLE_SHARE = 0.05
# The style image's sides in pixels as the loss network sees it: below min, its deepest style
# layer (1/8 of the size) would hold too little to compare; --style_size 0 keeps the image's own
# size up to max, past which its Gram matrices cost minutes and gigabytes for no more style.
STYLE_SIDE = {"min": 16, "max": 2048}
KEEP_TEMP_CHECKPOINTS = 3  # rolling checkpoints written every --save_freq batches

# train.py --minutes (train/budget.py): the learning rate rises linearly over warmup_steps,
# then falls along a cosine to final_lr_share of --lr at the planned end. The pace is first
# measured over settle_steps, then again every replan_every steps; reserve_share of the budget
# (at most reserve_seconds) is kept for the final save, samples and loss plot.
BUDGET = {"warmup_steps": 10, "final_lr_share": 0.05, "settle_steps": 3, "replan_every": 10,
          "reserve_share": 0.2, "reserve_seconds": 15.0}

# Defaults of train.py: the original README's, except load_model (a fresh run never overwrites
# a model) and the loss weights (below). With --init_model and --minutes they are also the
# new-style recipe (docs/new_style.md).
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
    # The loss weights the shipped models finished with (docs/shipped_models.md: content 1 lost
    # the photo, content 20 kept too little of the style at the photos' own size). The
    # original's defaults (content 10, style 100, noise 1e-5) belonged to its raw-sum losses;
    # with relative losses they would let the style wipe out the content, and noise 1e-5
    # would do nothing.
    "lambda_content": 10.0,
    "lambda_style": 10.0,
    "style_layer_weights": None,  # one per LOSS_LAYERS style layer; None: 1 each
    "loss_downscale": 1,
    "content_layers": None,  # loss-network layers of the content term; None: LOSS_LAYERS's
    "lambda_regu": 1e-2,
    "lambda_noise": 0.1,
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
    "batch_size": None,  # None: STYLIZE_BATCH_SIZE for the device
    "precision": "auto",  # see STYLIZE_AUTO_PRECISION
    "compile": "auto",  # see COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES
    "strength": 1.0,  # the network's output as it is
    "preserve_color": False,
    "smooth": 0.0,  # off (docs/smoothing.md)
    "tile_budget": 8.5,  # megapixels; see TILE_WINDOW_SHARE below
}

# Luminance of RGB for --preserve_color (stylization/blend.py): ITU-R BT.601, the Y of JPEG's
# full-range YCbCr. They sum to 1, which the colour transfer relies on.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# How --smooth moves the previous output along the flow (flow.warp's mode). The output is
# warped again every frame, so bilinear's blur piles up; bicubic keeps more of the style for
# about the same E_warp (benchmarks/smooth_stability.py measures both).
SMOOTH_WARP_MODE = "bicubic"
# --smooth then gives the blend's fine detail (the frame minus a Gaussian blur of sigma pixels)
# back `share` of the gain that would restore the stylised frame's energy, one gain per channel
# of at most max_gain (stylization/blend.keep_detail): none of it lets the blend lose the
# strokes' contrast, all of it brings back flicker and moves the content; half is between
# (benchmarks/smooth_stability.py measures the trade).
SMOOTH_DETAIL = {"sigma": 2.0, "share": 0.5, "max_gain": 2.0}

# --tile_budget: frames of more megapixels than this run on overlapping tiles of about this
# size (network/tiling.py), so that memory stays bounded however large the photo. The default
# keeps 4K UHD frames (8.3 megapixels) whole, and holds a 48-megapixel photo under 4 GB on the
# CPU in float32 (docs/tiling.md).
# A tile's window holds this share of --tile_budget's pixels: the frame, the maps kept between
# passes and the allocator's slack take the rest. A quarter was both faster and smaller than a
# half on a 48-megapixel photo (default network, 2 AVX2 cores, float32); the default's time and
# memory: docs/tiling.md.
TILE_WINDOW_SHARE = 0.25

# --compile auto compiles only for video files on a CPU holding at least this many megapixels
# in all (frames x width x height / 1e6). On the idle 2-core CPU (`python
# benchmarks/stylize_speed.py --compile_cache ...`, docs/stylization_speed.md) building the
# package of the default network cost a whole process of 120 640x360 frames 28-40 s more than
# eager, and a compiled batch saved about 0.02 s per frame: it breaks even after about 2000
# such frames, 460 megapixels. Images and GPUs (not measured) stay eager; a webcam loads a package
# an earlier --compile True run built for its frame size, and otherwise stays eager.
COMPILE_AUTO_MIN_MEGAPIXEL_FRAMES = 460
# Compiled packages (stylization/compile_cache.py), and Inductor's own caches, are kept in
# $TORCHINDUCTOR_CACHE_DIR when set, else in this folder under the user's cache
# ($XDG_CACHE_HOME, else ~/.cache).
COMPILE_CACHE_SUBDIR = "video-style-transfer/inductor"
# When an earlier run left the package of every video's shape (model, precision, frame size,
# batch), the compile is warm (the package is loaded, not built) and --compile auto compiles from
# this many megapixels on: about 110 frames at 640x360, where the same benchmark measured the
# warm compiled process 14.0-16.9 s and the eager one 15.7-19.5 s on 120 frames (default
# network, two runs; 18.7 and 19.3 s before warm starts stopped importing Inductor).
COMPILE_AUTO_WARM_MIN_MEGAPIXEL_FRAMES = 25

# Frames per network call for video when --batch_size is not given. On the 2-core CPU at
# 640x360, 2 frames per call made 5-15% more frames/s than 1 in eager fp32 and bf16 in two
# runs (no difference compiled; README, Stylization speed); GPUs need several frames per call to be
# kept busy (not measured here: no GPU).
STYLIZE_BATCH_SIZE = {"cpu": 2, "cuda": 8}

# What --precision auto means for stylisation, per kind of device. A reduced precision is
# taken only where its output stays within AUTO_PRECISION_MAX_MEAN_DIFF (0-255 units, mean
# absolute difference from float32 on the shipped trained model; benchmarks/stylize_speed.py
# prints it); weights and activations are then all in that precision (README, Stylization speed).
# A reduced precision is then checked per model: the first batch of a run goes through the
# network in float32 and in that precision, and when their mean absolute difference exceeds
# AUTO_PRECISION_MAX_MEAN_DIFF the run falls back to float32 with a note
# (stylization/precision_guard.py); a random-weight network of the original project's layout
# differed by 3.45 on a 640x360 clip. An explicit --precision is never second-guessed.
STYLIZE_AUTO_PRECISION = {"cuda": "fp16", "cpu_native_bf16": "bf16", "cpu": "fp32"}
AUTO_PRECISION_MAX_MEAN_DIFF = 1.5
# Batches flatter than this (standard deviation of the 8-bit pixels) are not judged: a uniform
# grey frame, as a browser camera sends first, made the fast mosaic's bf16 output differ from
# fp32 by 63/255 (its instance norms divide by almost nothing), where real frames stay within
# the limit.
PRECISION_GUARD_MIN_STD = 4.0

# glibc's allocator during stylisation (common.devices.keep_freed_memory): free memory at the top of
# the heap it keeps rather than returns to the kernel, and how much it adds when it grows.
MALLOC_KEEP_BYTES = 1 << 30
MALLOC_TOP_PAD_BYTES = 256 << 20

# Output phases per side of the stylizing network's head as stylisation runs it
# (network/fast_inference.py): 2 gives a stride-2 10x10 convolution with 12 outputs in place of
# a 9x9 one with 3, for 1.23x the multiply-adds; 4 (12x12, 48 outputs) would need 1.78x.
HEAD_PHASES = 2

# The stylizing network's input in channels-last memory: off, it was 7-8% slower on the CPU
# (README, Stylization speed; benchmarks/stylize_speed.py --other_layout).
STYLIZE_CHANNELS_LAST = False

# Bounded queues of the video pipeline (stylization/pipeline.py): decoded batches waiting for
# the network, and stylised frames waiting for the encoder. Enough to ride out a slow frame
# on either side; bounded so memory does not grow with the video's length.
DECODE_QUEUE_BATCHES = 2
ENCODE_QUEUE_FRAMES = 16

# Video files as the FFmpeg shipped by imageio-ffmpeg writes them, per container: H.264 (what
# players and browsers expect) and AAC for MP4/MOV. Audio is re-encoded rather than copied so
# that any source's audio fits the container. When no FFmpeg is found, OpenCV writes the
# fourcc in "opencv" without sound.
_H264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
_AAC = ["-c:a", "aac", "-b:a", "192k"]
_MP4 = ["-f", "mp4", "-movflags", "+faststart"]  # index first: playback starts before download ends
VIDEO_FORMATS = {
    ".mp4": {"video": _H264, "audio": _AAC, "container": _MP4, "opencv": "mp4v"},
    ".m4v": {"video": _H264, "audio": _AAC, "container": _MP4, "opencv": "mp4v"},
    ".mov": {"video": _H264, "audio": _AAC, "container": ["-f", "mov"], "opencv": "mp4v"},
    ".avi": {"video": ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"],
             "audio": ["-c:a", "pcm_s16le"], "container": ["-f", "avi"], "opencv": "MJPG"},
}
# Used instead of _H264 where FFmpeg's NVIDIA encoder opens (stylization/sink.nvenc_opens): the
# GPU encodes, the CPU is left to decoding and the network. p5 and a constant quality of 19 aim
# at _H264's look (not compared here: this machine has no NVIDIA GPU).
H264_NVENC = ["-c:v", "h264_nvenc", "-preset", "p5", "-rc", "vbr", "-cq", "19", "-b:v", "0",
              "-pix_fmt", "yuv420p"]
# Used instead of _H264 when the FFmpeg found has no libx264 (a build without GPL parts).
H264_FALLBACK = ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"]

# The web page (app.py, webapp/): upload limits in megabytes, the thumbnails' longer side, the
# JPEG quality of live camera frames both ways, the highest frames/s target the Live camera takes.
WEB_LIMITS = {"photo_mb": 60, "video_mb": 500, "thumbnail_px": 160, "live_jpeg_quality": 85,
              "live_max_target_fps": 60}
# A new style as the README's twenty-minute command trains it: the shipped model it starts
# from (--init_model) and, on the web page, how often the sample and loss plot refresh (steps).
NEW_STYLE = {"init_model": "mosaic.pth.tar", "web_save_freq": 20}

# Several models: the longer side of each picture of a contact sheet (input and each model's
# output, labelled), in pixels.
CONTACT_SHEET_CELL = 480

# stylize.py under torchrun (stylization/shard.py): how long the processes wait for each other
# at the end, that is for the slowest one's share of the files.
SHARD_TIMEOUT_HOURS = 72

# Webcam / stream mode: the window's frames/s is an average over this many shown frames.
LIVE_FPS_WINDOW = 10
# The page's live camera stylises this many frames at once, each on one PyTorch CPU thread, and
# the page keeps one more on its way: beside a browser, one frame on all the cores waits for
# each core the browser takes (docs/web_page.md, "Two frames at once").
WEB_LIVE_FRAMES_AT_ONCE = 2
# Frames one compiled package (stylization/compile_cache.py) may run at once, from as many threads:
# the page's live camera runs WEB_LIVE_FRAMES_AT_ONCE.
PACKAGE_RUNS_AT_ONCE = WEB_LIVE_FRAMES_AT_ONCE
# --target_fps (stylization/pacing.py): the size is reconsidered every window_s seconds, the
# longer side moves in steps of side_step pixels and never below min_side; margin (< 1) is the
# share of the measured rate planned on, so that the target holds through small variations.
TARGET_FPS = {"window_s": 1.0, "side_step": 16, "min_side": 128, "margin": 0.9}

# Optical flow and occlusion (flow.optical_flow, flow.valid_flow_mask), shared by the
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
# Under torchrun, how long the other processes wait for the first one of their machine to
# compute the flow cache. The collectives' default (10 minutes with NCCL) is too short for the
# flow of a large data set, so the wait has a group of its own with this timeout.
PREPARE_TIMEOUT_S = 12 * 3600
