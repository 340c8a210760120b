"""Tiled stylisation (network/tiling.py): peak memory on a huge photo, and how close the tiled
output is to the untiled one.

    python benchmarks/tiling.py [--model_path trained_models/mosaic.pth.tar]
        [--photo ../shared/media/content/tubingen.jpg] [--megapixels 48] [--side 1600]
        [--budget 0.6] [--methods staged per_norm] [--skip_memory]

1. Time and peak memory: a --megapixels photo (the --photo scaled up to 4:3, saved as a JPEG
   of quality 95, as a phone's camera writes one)
   stylised by stylize.py on the CPU without --max_size, default --tile_budget, in a
   subprocess; seconds of the whole process, and the peak, the child's maximum resident set
   size (getrusage).
2. Tiled against untiled: a --side x 3/4 --side copy of the photo, which fits both ways,
   stylised whole and with --tile_budget --budget; the mean absolute difference (0-255), and
   the same on the tile borders (8 pixels either side of a cut) and inside the tiles: a seam
   would make the borders differ more than the insides. Per method: "staged" (what stylize.py
   does: coarse maps kept between passes) and "per_norm" (every norm measured from the frame,
   as before), with the time tiled / untiled.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import config  # noqa: E402
from network.formats import load_model  # noqa: E402
from network.tiling import TiledNetwork  # noqa: E402
from stylization.processor import Processor  # noqa: E402

BORDER = 8  # pixels either side of a cut that count as the tile border

def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        sys.exit(f"error: cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def peak_memory(model: str, photo: np.ndarray, megapixels: float) -> tuple[float, float, str]:
    """(peak GB, seconds, stylize.py's notes) for a photo of `megapixels` stylised untouched."""
    width = int(math.sqrt(megapixels * 1e6 * 4 / 3))
    height = width * 3 // 4
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "huge.jpg"
        big = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(source), big[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        del big
        log = Path(folder) / "log.txt"
        start = time.perf_counter()
        with open(log, "w") as handle:
            child = subprocess.Popen([sys.executable, "stylize.py", "--content_type", "image",
                                      "--source", str(source), "--model_path", model, "--device", "cpu",
                                      "--output_dir", str(Path(folder) / "out"), "--real_time", "False"],
                                     stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
            # wait4: this child's own peak (ru_maxrss, kilobytes on Linux), not the largest so far.
            _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        output = log.read_text().strip()
        if status != 0:
            sys.exit(f"error: stylize.py failed: {output[-500:]}")
    return usage.ru_maxrss / 1e6, seconds, output.splitlines()[0]


def border_mask(tiler: TiledNetwork, height: int, width: int, budget: float) -> tuple[np.ndarray, int]:
    plan = tiler.plan(height, width, budget)
    mask = np.zeros((height, width), bool)
    for row in plan.rows[1:]:
        mask[max(0, row.cut_lo - BORDER):row.cut_lo + BORDER] = True
    for column in plan.columns[1:]:
        mask[:, max(0, column.cut_lo - BORDER):column.cut_lo + BORDER] = True
    return mask, plan.count


def compare(model_path: str, photo: np.ndarray, side: int, budget_mp: float,
            method: str) -> dict[str, float]:
    image = cv2.resize(photo, (side, side * 3 // 4), interpolation=cv2.INTER_AREA)
    model = load_model(model_path)
    processor = Processor(model, "cpu")
    start = time.perf_counter()
    whole = processor([image])[0].astype(np.float64)
    whole_s = time.perf_counter() - start
    # The tiler a Processor runs frames above its tile budget on, staged or not.
    tiler = TiledNetwork(processor.model, model, processor.device, staged=method == "staged")
    start = time.perf_counter()
    tiled = tiler(image, budget_mp * 1e6).astype(np.float64)
    tiled_s = time.perf_counter() - start
    difference = np.abs(tiled - whole).mean(-1)
    mask, count = border_mask(tiler, *image.shape[:2], budget_mp * 1e6)
    return {"tiles": count, "mad": difference.mean(), "border": difference[mask].mean(),
            "inside": difference[~mask].mean(), "p99": np.percentile(difference, 99),
            "time_ratio": tiled_s / whole_s, "radius": tiler.radius}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_path", default=str(ROOT / "trained_models" / "mosaic.pth.tar"))
    p.add_argument("--photo", default=str(ROOT.parent / "shared" / "media" / "content" / "tubingen.jpg"))
    p.add_argument("--megapixels", type=float, default=48.0)
    p.add_argument("--side", type=int, default=1600, help="width of the photo compared both ways")
    p.add_argument("--budget", type=float, default=0.6, help="--tile_budget of the comparison")
    p.add_argument("--methods", nargs="+", default=["staged", "per_norm"], choices=["staged", "per_norm"])
    p.add_argument("--skip_memory", action="store_true")
    args = p.parse_args()
    photo = read_rgb(Path(args.photo))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, default --tile_budget "
          f"{config.STYLIZE_DEFAULTS['tile_budget']} megapixels, model {Path(args.model_path).name}")
    if not args.skip_memory:
        print(f"\n{args.megapixels:g}-megapixel photo, stylize.py on the CPU, no --max_size")
        peak, seconds, note = peak_memory(args.model_path, photo, args.megapixels)
        print("| peak memory (GB) | seconds | note |\n|---|---|---|")
        print(f"| {peak:.2f} | {seconds:.0f} | {note} |", flush=True)
    height = args.side * 3 // 4
    print(f"\ntiled (--tile_budget {args.budget}) against untiled, {args.side}x{height} photo, "
          "0-255 units")
    print("| method | tiles | radius | mean abs diff | on tile borders | inside tiles | 99th pct "
          "| time tiled / untiled |\n|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        r = compare(args.model_path, photo, args.side, args.budget, method)
        print(f"| {method} | {r['tiles']} | {r['radius']} | {r['mad']:.4f} | {r['border']:.4f} | "
              f"{r['inside']:.4f} | {r['p99']:.2f} | {r['time_ratio']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
