"""Training images: every image under --content_dir, centre-cropped to img_size squares,
and for the flow loss each frame with its successor and the optical flow between them."""
from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler, default_collate
from tqdm import tqdm

import config
from common.errors import fail, UserError
from common.files import atomic_write, list_files
from common.images import center_crop_resize, decode_image, IMAGE_READ_ERRORS, image_to_tensor, load_image, tensor_to_array
from flow import flow_to_tensor, is_scene_cut, optical_flow, valid_flow_mask


class UnreadableImage(UserError):
    """A training image that cannot be decoded: `path`, and why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} is not a readable image ({reason})")
        self.path, self.reason = path, reason


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
        """The image at index; UnreadableImage where it cannot be read (SkipUnreadable then
        takes another)."""
        path = self.files[index]
        try:
            image = decode_image(path)
        except IMAGE_READ_ERRORS as err:
            raise UnreadableImage(path, str(err) or type(err).__name__) from None
        return image_to_tensor(center_crop_resize(image, self.img_size))


def allowed_unreadable(total: int) -> int:
    """How many unreadable images a data set of `total` may hold before training stops."""
    return max(1, int(config.MAX_UNREADABLE_SHARE * total))


Skipped = list[tuple[str, str]]  # (path, reason) of each unreadable image met


class SkipUnreadable(Dataset):
    """dataset's samples, each as (sample, Skipped): an unreadable image is replaced by the
    next readable one in the folder's order (a neighbouring frame, and the same one on every
    run, so a resumed run sees what the interrupted one would have).

    The unreadable files travel back with the samples because DataLoader workers are other
    processes: what they noted in their own copy of the data set would never reach the main
    process, which warns and counts (UnreadableImages). After allowed_unreadable + 1 failures
    in a row the data set is over the limit anyway: the sample is then None, and the main
    process stops before it would be used.
    """

    def __init__(self, dataset: ContentDataset):
        self.dataset = dataset
        self.attempts = min(len(dataset), allowed_unreadable(len(dataset)) + 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[object, Skipped]:
        skipped: Skipped = []
        for offset in range(self.attempts):
            try:
                return self.dataset[(index + offset) % len(self.dataset)], skipped
            except UnreadableImage as err:
                skipped.append((str(err.path), err.reason))
        return None, skipped


def collate_skipping(samples: list[tuple[object, Skipped]]) -> tuple[object, Skipped]:
    """DataLoader's collate_fn for SkipUnreadable: (the batch as default_collate makes it, or
    None if a sample had no readable stand-in; every unreadable file met)."""
    skipped = [entry for _, noted in samples for entry in noted]
    items = [item for item, _ in samples]
    return (None if any(item is None for item in items) else default_collate(items)), skipped


class UnreadableImages:
    """The main process's account of unreadable training images: a warning the first time
    each is met, a count per epoch, and a one-line error once more than allowed_unreadable
    of the data set's `total` images have been met."""

    def __init__(self, total: int, root: str | Path, report: bool = True):
        self.total, self.root, self.report = total, Path(root), report
        self.seen: dict[str, str] = {}
        self.this_epoch: set[str] = set()

    def add(self, skipped: Skipped) -> None:
        for path, reason in skipped:
            self.this_epoch.add(path)
            if path not in self.seen:
                self.seen[path] = reason
                if self.report:
                    tqdm.write(f"warning: skipping unreadable training image {path} ({reason}); "
                               "another image takes its place", file=sys.stderr)
        # (a sample without a readable stand-in, None, always ends here: SkipUnreadable gives up
        # only after more failures than allowed, or after trying every image)
        if len(self.seen) > allowed_unreadable(self.total) or len(self.seen) >= self.total:
            fail(f"{len(self.seen)} of the {self.total} training images in {self.root} cannot be "
                 f"read, more than the {config.MAX_UNREADABLE_SHARE:.0%} allowed "
                 f"(config.MAX_UNREADABLE_SHARE), e.g. {next(iter(self.seen))}: re-extract or "
                 "remove the broken files")

    def end_epoch(self, epoch: int) -> int:
        """Print the epoch's count (if any) and start the next; returns the count."""
        count, self.this_epoch = len(self.this_epoch), set()
        if count and self.report:
            print(f"epoch {epoch}: {count} unreadable image(s) skipped, each replaced by another "
                  "(see the warnings)")
        return count


def load_style_image(path: str | Path, style_size: int | None, downscale: int = 1) -> torch.Tensor:
    """The style image as 1 x 3 x H x W in [0, 1], its longer side scaled to style_size (0 or
    None: its own, at most config.STYLE_SIDE["max"]), then divided by downscale
    (--loss_downscale: the loss sees the style as it sees the pictures, so the strokes keep
    their size at the network's resolution). Grey and transparent images train as RGB (load_image);
    one too small for the loss network's deepest layer is refused."""
    image = load_image(path)
    longest = max(image.size)
    if not style_size and longest > config.STYLE_SIDE["max"]:
        warnings.warn(f"the style image {path} is {image.width}x{image.height}: using it at "
                      f"{config.STYLE_SIDE['max']} pixels on its longer side (--style_size sets this)",
                      stacklevel=2)
        style_size = config.STYLE_SIDE["max"]
    if style_size or downscale > 1:
        scale = round((style_size or longest) / downscale) / longest
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             resample=Image.Resampling.BICUBIC)
    if min(image.size) < config.STYLE_SIDE["min"]:
        fail(f"the style image {path} is {image.width}x{image.height} pixels as the loss sees it: at least "
             f"{config.STYLE_SIDE['min']} are needed on each side; give a larger image or --style_size")
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


FRAME_NAME = re.compile(r"^(?P<video>.+)_(?P<index>\d+)$")  # common.frames.extract_frames' naming


def successors(files: list[Path]) -> list[int | None]:
    """For each file, the index of the next extracted frame of the same video, or None.

    Frames are <video name>_<frame number>.<ext> (common.frames.extract_frames); the next one is the
    same video's file with the next larger number in the same folder. Photos and each
    video's last frame have none.
    """
    videos: dict[tuple[Path, str], list[tuple[int, int]]] = {}
    for position, path in enumerate(files):
        match = FRAME_NAME.match(path.stem)
        if match:
            videos.setdefault((path.parent, match["video"]), []).append((int(match["index"]), position))
    result: list[int | None] = [None] * len(files)
    for frames in videos.values():
        frames.sort()
        for (_, position), (_, following) in zip(frames, frames[1:]):
            result[position] = following
    return result


def default_flow_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / config.FLOW_CACHE_SUBDIR


class FramePairDataset(ContentDataset):
    """Content frames with what the flow loss needs: (frame t, frame t+1, flow from t+1 to t,
    valid mask of t+1), all at img_size.

    The flow is computed with OpenCV on the cropped frames, once per pair and img_size, and
    cached in cache_dir under a key of both files' paths, sizes and modification times.
    Frames without a successor (photos, a video's last frame) and pairs across a scene cut
    come with a zero mask: they still train the other losses but add no flow loss.
    """

    def __init__(self, root: str | Path, img_size: int, cache_dir: str | Path,
                 method: str | None = None):
        method = config.FLOW_METHOD if method is None else method
        super().__init__(root, img_size)
        self.next = successors(self.files)
        self.cache_dir = Path(cache_dir)
        self.method = method

    def _cache_path(self, index: int) -> Path:
        key = [str(self.img_size), self.method, repr(config.OCCLUSION), repr(config.SCENE_CUT_CORRELATION)]
        for path in (self.files[index], self.files[self.next[index]]):
            stat = path.stat()
            key += [str(path.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
        return self.cache_dir / f"{hashlib.sha256(chr(0).join(key).encode()).hexdigest()[:32]}.npz"

    def _frame(self, index: int) -> torch.Tensor:
        return super().__getitem__(index)

    def _compute(self, index: int, path: Path) -> None:
        frame, following = (tensor_to_array(self._frame(i)) for i in (index, self.next[index]))
        backward = flow_to_tensor(optical_flow(following, frame, self.method))
        if is_scene_cut(frame, following):
            valid = torch.zeros(1, *backward.shape[1:])
        else:
            forward = flow_to_tensor(optical_flow(frame, following, self.method))
            valid = valid_flow_mask(backward.unsqueeze(0), forward.unsqueeze(0))[0]
        atomic_write(path, lambda tmp: np.savez(tmp, flow=backward.numpy(),
                                                valid=valid.numpy().astype(np.uint8)))

    def prepare(self, progress: bool = True) -> int:
        """Compute the flows not cached yet (with a progress bar); returns how many."""
        missing = [(i, self._cache_path(i)) for i, j in enumerate(self.next) if j is not None]
        missing = [(i, path) for i, path in missing if not path.exists()]
        if missing:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                fail(f"cannot create the flow cache {self.cache_dir} ({err.strerror}): "
                     "choose a writable --flow_cache_dir")
        computed = 0
        for index, path in tqdm(missing, desc="optical flow", unit="pair", disable=not progress):
            try:
                self._compute(index, path)
                computed += 1
            except UnreadableImage:
                continue  # reported when training meets it (SkipUnreadable)
        return computed

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        frame = self._frame(index)
        if self.next[index] is None:
            size = frame.shape[1:]
            return frame, frame, torch.zeros(2, *size), torch.zeros(1, *size)
        path = self._cache_path(index)
        if not path.exists():  # a file changed since prepare(), or a worker raced it
            self._compute(index, path)
        with np.load(path) as cached:
            flow, valid = torch.from_numpy(cached["flow"]), torch.from_numpy(cached["valid"]).float()
        return frame, self._frame(self.next[index]), flow, valid
