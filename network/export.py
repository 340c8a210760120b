"""A stylizing network exported for deployment, each file checked against PyTorch before it is kept.

- ONNX (for ONNX Runtime and other ONNX engines): batch, height and width are dynamic; written
  by torch.onnx's torch.export-based exporter, which needs the onnxscript package.
- TorchScript (for LibTorch in C++ and older serving stacks): compiled with torch.jit.script,
  so the graph keeps the code's shape arithmetic and any size works.

The exported files take and return what the PyTorch network does: RGB in [0, 1], N x 3 x H x W,
float32, the output at the input's size.

Run `python -m network.export --help` for the command line.
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

import config
from common.cli import run_cli, str2bool
from common.errors import UserError, fail, first_line
from common.files import atomic_write
from common.model_files import model_stem
from network.formats import load_network

INPUT_NAME, OUTPUT_NAME = "image", "stylized"


def export_onnx(model: nn.Module, path: str | Path) -> None:
    example = torch.rand(1, 3, *config.EXPORT_EXAMPLE_SIZE)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=config.ONNX_OPSET,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=(dims,),
                      external_data=False, verbose=False)  # one file, renamed as a whole


def run_onnx(path: str | Path, x: torch.Tensor) -> torch.Tensor:
    from network.onnx_model import OnnxModel

    return OnnxModel(path)(x)


def export_torchscript(model: nn.Module, path: str | Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        torch.jit.save(torch.jit.script(model), str(path))


def run_torchscript(path: str | Path, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(x)


EXPORTERS: dict[str, tuple[Callable[[nn.Module, str], None], Callable[[str, torch.Tensor], torch.Tensor]]] = {
    "onnx": (export_onnx, run_onnx),
    "torchscript": (export_torchscript, run_torchscript),
}


def check_input() -> torch.Tensor:
    """The sample the exports are checked on: fixed, and of another shape than the traced one."""
    return torch.rand(config.EXPORT_CHECK_SHAPE, generator=torch.Generator().manual_seed(0))


def export_model(src: str | Path, output_dir: str | Path | None = None,
                 formats: Iterable[str] = tuple(config.EXPORT_FORMATS), overwrite: bool = False,
                 progress: bool = True) -> list[tuple[Path, float]]:
    """Export the model in src (any file load_model reads but ONNX) to each format in
    output_dir (default: src's folder) as <model name><format's ending>. Each file is written
    only if its output on check_input() is within config.EXPORT_TOLERANCE of PyTorch's.
    Returns each written path with that largest difference."""
    src = Path(src)
    if src.suffix.lower() == ".onnx":
        fail(f"{src} is already an ONNX model: export the checkpoint it was made from")
    formats = list(dict.fromkeys(formats))
    unknown = [fmt for fmt in formats if fmt not in EXPORTERS]
    if unknown or not formats:
        fail(f"unknown export format(s) {unknown}: use {', '.join(EXPORTERS)}")
    model, _ = load_network(src)
    output_dir = Path(output_dir) if output_dir is not None else src.parent
    targets = {fmt: output_dir / f"{model_stem(src)}{config.EXPORT_FORMATS[fmt]}" for fmt in formats}
    for path in targets.values():
        if path.exists() and not overwrite:
            fail(f"{path} already exists: pass --overwrite True to replace it, or choose another "
                 "--output_dir")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"cannot create --output_dir {output_dir} ({err.strerror}): choose a writable folder")

    sample = check_input()
    with torch.no_grad():
        expected = model(sample)
    written = []
    for fmt in tqdm(formats, desc="exporting", unit="format", disable=not progress):
        export, run = EXPORTERS[fmt]
        differences = []

        def write_and_check(tmp: str) -> None:
            try:
                export(model, tmp)
                result = run(tmp, sample)
            except UserError:
                raise
            except Exception as err:  # exporters raise many types; the message is what helps
                fail(f"exporting to {fmt} failed ({first_line(err)[:200]}); --debug shows the traceback")
            same_shape = result.shape == expected.shape
            difference = (result - expected).abs().max().item() if same_shape else float("inf")
            if not difference <= config.EXPORT_TOLERANCE:  # also catches NaN
                fail(f"the {fmt} export differs from PyTorch by {difference:.3g} (more than "
                     f"{config.EXPORT_TOLERANCE}) on a {'x'.join(map(str, sample.shape))} sample: "
                     "nothing written")
            differences.append(difference)

        written.append((atomic_write(targets[fmt], write_and_check), differences[0]))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m network.export",
        description="Export a model to ONNX and TorchScript for deployment, checked against PyTorch.")
    parser.add_argument("model", help="a model stylize.py runs: a train.py checkpoint, the original "
                                      "project's .pth.tar or a pytorch/examples .pth file")
    parser.add_argument("--output_dir", default=None,
                        help="folder for <model>.onnx and <model>.torchscript.pt (default: the model's folder)")
    parser.add_argument("--formats", nargs="+", choices=list(config.EXPORT_FORMATS),
                        default=list(config.EXPORT_FORMATS), help="what to export (default: all)")
    parser.add_argument("--overwrite", type=str2bool, default=False,
                        help="replace earlier exports of the same name (default False)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    for path, difference in export_model(args.model, args.output_dir, args.formats, args.overwrite):
        print(f"wrote {path} (largest difference from PyTorch on the check input: {difference:.2g})")


if __name__ == "__main__":
    run_cli(main)
