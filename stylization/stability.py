"""Temporal stability as a number: the warping error E_warp of Lai et al. 2018 ("Learning
Blind Video Temporal Consistency").

For each pair of consecutive frames t, t+1 the stylised frame t+1 is warped back to t with
the optical flow of the *input* frames, pixels that are occluded or on motion boundaries are
masked out (flow.valid_flow_mask), and the squared RGB distance (images in [0, 1], summed
over the three channels as in the paper's ||.||^2) is averaged over the remaining pixels.
E_warp is the mean over pairs. Pairs across a hard scene cut are skipped. The input video's
own E_warp (the same with the input frames in place of the stylised ones) is the floor a
stylisation can be compared with: flow errors and lighting changes put it above 0.
"""
from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from itertools import chain, repeat, zip_longest
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

import config
from common.cli import run_cli
from common.errors import fail
from common.files import list_files
from common.images import image_to_tensor, load_image
from flow import flow_to_tensor, is_scene_cut, optical_flow, read_flo, valid_flow_mask, warp


def pair_warp_error(first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor,
                    valid: torch.Tensor) -> float | None:
    """E_warp of one pair: first, second 3 x H x W in [0, 1]; flow 2 x H x W from first to
    second; valid 1 x H x W (1 = scored). None when no pixel is valid."""
    count = float(valid.sum())
    if count == 0:
        return None
    warped = warp(second.unsqueeze(0), flow.unsqueeze(0))[0]
    squared = (first.float() - warped).pow(2).sum(0, keepdim=True)
    return float((squared * valid).sum()) / count


@dataclass(frozen=True)
class StabilityResult:
    stylised: float  # E_warp of the stylised frames (nan if no pair could be scored)
    input: float  # E_warp of the input frames, the reference
    pairs: int  # pairs scored
    cuts: int  # pairs skipped at scene cuts

    def line(self, label: str = "") -> str:
        """The report line; it begins with 'E_warp:'."""
        suffix = f" [{label}]" if label else ""
        return (f"E_warp: {self.stylised:.6f} stylised, {self.input:.6f} input "
                f"({self.pairs} frame pairs, {self.cuts} skipped at scene cuts){suffix}")


class WarpErrorMeter:
    """Scores a video frame by frame as it is stylised: add() each input frame with its
    stylised frame, in order; only the previous pair is kept in memory."""

    def __init__(self, method: str | None = None):
        method = config.FLOW_METHOD if method is None else method
        self.method = method
        self._previous: tuple[np.ndarray, torch.Tensor, torch.Tensor] | None = None
        self._sums = {"stylised": 0.0, "input": 0.0}
        self.frames = 0
        self.pairs = 0
        self.cuts = 0

    def add(self, frame: np.ndarray, stylised: np.ndarray,
            flows: tuple[np.ndarray, np.ndarray | None] | None = None) -> None:
        """frame, stylised: RGB uint8 H x W x 3 of the same size. flows: optionally the
        ground-truth (forward, backward) flow between the previous input frame and this one
        (backward None: computed with OpenCV); by default both come from OpenCV."""
        if frame.shape != stylised.shape:
            raise ValueError(f"input frame {frame.shape} and stylised frame {stylised.shape} differ in size")
        current = (frame, image_to_tensor(frame), image_to_tensor(stylised))
        if self._previous is not None:
            self._score(self._previous, current, flows)
        self._previous = current
        self.frames += 1

    def _score(self, previous: tuple, current: tuple,
               flows: tuple[np.ndarray, np.ndarray | None] | None) -> None:
        (frame_a, input_a, stylised_a), (frame_b, input_b, stylised_b) = previous, current
        if is_scene_cut(frame_a, frame_b):
            self.cuts += 1
            return
        forward, backward = flows if flows is not None else (None, None)
        if forward is None:
            forward = optical_flow(frame_a, frame_b, self.method)
        if backward is None:
            backward = optical_flow(frame_b, frame_a, self.method)
        forward, backward = flow_to_tensor(forward), flow_to_tensor(backward)
        if forward.shape[1:] != input_a.shape[1:]:
            fail(f"a flow of size {tuple(forward.shape[1:])} does not fit frames of size "
                 f"{tuple(input_a.shape[1:])}: give the flow of these frames")
        valid = valid_flow_mask(forward.unsqueeze(0), backward.unsqueeze(0))[0]
        errors = (pair_warp_error(stylised_a, stylised_b, forward, valid),
                  pair_warp_error(input_a, input_b, forward, valid))
        if errors[0] is None:
            return
        self._sums["stylised"] += errors[0]
        self._sums["input"] += errors[1]
        self.pairs += 1

    def result(self) -> StabilityResult:
        mean = {k: v / self.pairs if self.pairs else float("nan") for k, v in self._sums.items()}
        return StabilityResult(mean["stylised"], mean["input"], self.pairs, self.cuts)


# ----------------------------------------------------------------------------- files
def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of a video file or of a folder of images (sorted by name). The path
    is checked now, the frames are read as they are iterated."""
    from stylization.content_source.factory import create_source
    from stylization.enum_class import ContentType

    path = Path(path)
    if not path.exists():
        fail(f"{path} does not exist: give a video file or a folder of frames")
    if path.is_dir():
        files, _ = list_files(path, config.IMAGE_EXTENSIONS)
        if not files:
            fail(f"no images in {path}: give a video file or a folder of frames")
        return (np.asarray(load_image(file)) for file in files)
    source = create_source(ContentType.VIDEO, path)

    def frames() -> Iterator[np.ndarray]:
        with source:
            for _, frame in source.frames():
                yield frame
    return frames()


def read_flows(folder: str | Path | None) -> Iterator[np.ndarray | None]:
    """The .flo files of a folder in name order, then None for ever (None at once without
    a folder): pairs without a file get OpenCV's flow."""
    files = list_files(folder, (".flo",))[0] if folder is not None else []
    if folder is not None and not files:
        fail(f"no .flo files in {folder}: give the folder holding the flow of each frame pair")
    return chain((read_flo(file) for file in files), repeat(None))


def score_videos(input_path: str | Path, stylised_path: str | Path,
                 flow_dir: str | Path | None = None, backward_flow_dir: str | Path | None = None,
                 method: str | None = None, progress: bool = True) -> StabilityResult:
    """E_warp of a stylised video (file or frame folder) against its input.

    flow_dir: ground-truth flows (.flo), the k-th file (by name) from input frame k to k+1;
    backward_flow_dir: the same from k+1 to k for the occlusion check (else OpenCV's).
    A stylised video of another size (--max_size, or an odd side trimmed by the video codec)
    is compared with the input scaled to its size.
    """
    method = config.FLOW_METHOD if method is None else method
    import cv2
    from tqdm import tqdm

    meter = WarpErrorMeter(method)
    pairs: Iterable = zip_longest(read_frames(input_path), read_frames(stylised_path))
    forward_flows, backward_flows = read_flows(flow_dir), read_flows(backward_flow_dir)
    count = 0
    for frame, stylised in tqdm(pairs, unit="frame", desc="scoring", disable=not progress):
        if frame is None or stylised is None:
            warnings.warn(f"{input_path if frame is None else stylised_path} has fewer frames; "
                          f"scored the first {count}", stacklevel=2)
            break
        if frame.shape != stylised.shape:
            if flow_dir is not None:
                fail(f"the stylised frames ({stylised.shape[1]}x{stylised.shape[0]}) are not the size "
                     f"of the input ({frame.shape[1]}x{frame.shape[0]}) that the flow files describe")
            frame = cv2.resize(frame, (stylised.shape[1], stylised.shape[0]), interpolation=cv2.INTER_AREA)
        flows = None
        if count > 0:
            flows = (next(forward_flows), next(backward_flows))
        meter.add(frame, stylised, flows)
        count += 1
    return meter.result()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stylization.stability",
        description="E_warp (temporal stability) of a stylised video against its input.")
    parser.add_argument("--input", required=True, help="the input video file or folder of frames")
    parser.add_argument("--stylised", required=True, help="the stylised video file or folder of frames")
    parser.add_argument("--flow_dir", default=None,
                        help="ground-truth flows (.flo), the k-th by name from input frame k to k+1 "
                             "(default: OpenCV flow)")
    parser.add_argument("--backward_flow_dir", default=None,
                        help="ground-truth flows from frame k+1 to k, for the occlusion check "
                             "(default: OpenCV flow)")
    parser.add_argument("--flow_method", default=config.FLOW_METHOD, choices=config.FLOW_METHODS,
                        help="OpenCV optical flow used where no flow file is given")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    result = score_videos(args.input, args.stylised, args.flow_dir, args.backward_flow_dir,
                          args.flow_method)
    print(result.line())


if __name__ == "__main__":
    run_cli(main)
