"""Pictures in and out: any image file as RGB, tensors and arrays, sizes, saving."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

from common.errors import fail
from common.files import atomic_write, existing_file


# What decoding a damaged, truncated or vanished image file raises (PIL and the file system).
IMAGE_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_image(path: str | Path | BinaryIO) -> Image.Image:
    """Any image file (or an open binary file of one) as 8-bit RGB, with its EXIF rotation
    applied; raises one of IMAGE_READ_ERRORS where it cannot be read (load_image turns that
    into a user error)."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale: scale to 8 bits rather than clipping at 255.
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(arr / 257.0, 0, 255).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Open any image file as 8-bit RGB, with its EXIF rotation applied."""
    path = existing_file(path, "an image file", "check the path")
    try:
        return decode_image(path)
    except IMAGE_READ_ERRORS as err:
        fail(f"{path} is not a readable image ({err}): give a JPEG, PNG or other image file")
    raise AssertionError("unreachable")


def frames_to_batch(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RGB uint8 frames N x H x W x 3 -> N x 3 x H x W in [0, 1] of dtype.

    A permuted view, so the result keeps the frames' channels-last memory order."""
    return frames.permute(0, 3, 1, 2).to(dtype).div(255.0)


def batch_to_frames(batch: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W in [0, 1] (any float dtype) -> RGB uint8 frames N x H x W x 3, rounded."""
    return batch.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def image_to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB uint8 (PIL or HxWx3 array) -> float tensor 3xHxW in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return frames_to_batch(torch.from_numpy(array.copy())[None])[0]


def tensor_to_array(tensor: torch.Tensor) -> np.ndarray:
    """Float tensor 3xHxW (or 1x3xHxW) in [0, 1] -> RGB uint8 HxWx3, rounded."""
    if tensor.dim() == 3:
        tensor = tensor[None]
    return batch_to_frames(tensor[:1].detach())[0].cpu().numpy()


def fit_within(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Size with the longer side scaled down to max_size (never up), aspect kept."""
    if not max_size or max(width, height) <= max_size:
        return width, height
    scale = max_size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    """Square centre crop of the shorter side, resized to size x size."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC)


def save_image(array: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 array atomically; the format comes from the extension."""
    image = Image.fromarray(array)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        fail(f"cannot tell the image format of {path}: use a name ending in .png or .jpg")
    if fmt == "JPEG":
        return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, quality=95))
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))
