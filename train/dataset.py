"""Training images: every image under --content_dir, centre-cropped to img_size squares."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

import config
from utils import center_crop_resize, fail, image_to_tensor, list_files, load_image


class ContentDataset(Dataset):
    def __init__(self, root: str | Path, img_size: int):
        root = Path(root)
        if not root.exists():
            fail(f"content folder {root} does not exist: extract frames into it first "
                 "(python utils.py extract-frames ...)")
        if not root.is_dir():
            fail(f"--content_dir {root} is a file, but a folder of images is expected")
        self.files, others = list_files(root, config.IMAGE_EXTENSIONS)
        if not self.files:
            fail(f"no images in {root} (looked for {', '.join(config.IMAGE_EXTENSIONS)} files, "
                 "also in subfolders)")
        if others:
            warnings.warn(f"skipping {len(others)} non-image file(s) in {root}, "
                          f"e.g. {others[0].name}", stacklevel=2)
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return image_to_tensor(center_crop_resize(load_image(self.files[index]), self.img_size))


def load_style_image(path: str | Path, style_size: int | None) -> torch.Tensor:
    """The style image as 1 x 3 x H x W in [0, 1], its longer side scaled to style_size."""
    image = load_image(path)
    if style_size:
        scale = style_size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             resample=Image.Resampling.BICUBIC)
    return image_to_tensor(image).unsqueeze(0)


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch), starting `skip` samples in.

    Resuming mid-epoch therefore visits exactly the samples an uninterrupted run would.
    With several processes (train/distributed.py) process `rank` takes every world_size-th
    sample from its rank on, so each step of batch b covers the next b x world_size samples of
    the one shared order, and `skip` counts in that order as before.
    """

    def __init__(self, size: int, seed: int, epoch: int, skip: int = 0, rank: int = 0,
                 world_size: int = 1):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        # Every process must take as many steps as the others (each step waits for all), so
        # the order is topped up with its own start to a multiple of world_size.
        order += (order * (world_size // size + 1))[:-size % world_size]
        self.order = order[skip:][rank::world_size]

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        return iter(self.order)
