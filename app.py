"""python app.py: the toolkit in a web page on this machine (photos, videos, the live camera,
training a new style). Flags only; the page and its server live in webapp/."""
from __future__ import annotations

import argparse
import sys
import threading
import webbrowser
from pathlib import Path

from common.cli import run_cli, str2bool
from common.errors import fail

ROOT = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Open the style-transfer toolkit as a page in your browser.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default: 127.0.0.1, this machine only); 0.0.0.0 lets "
                        "anyone on your network use this machine's processor, GPU and disk")
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default: %(default)s)")
    p.add_argument("--models_dir", default=str(ROOT / "trained_models"),
                   help="folder of the models the page offers; trained styles are saved there too")
    p.add_argument("--vgg", default=None,
                   help="VGG16 weight file for training new styles (default: the first .pth in "
                        "pretrained_models/)")
    p.add_argument("--photos_dir", default=None,
                   help="a folder of photos the page may train on when the user uploads none")
    p.add_argument("--open_browser", type=str2bool, default=True,
                   help="open the page in the default browser (default: %(default)s)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def default_vgg() -> Path | None:
    found = sorted((ROOT / "pretrained_models").glob("*.pth"))
    return found[0] if found else None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    models_dir = Path(args.models_dir)
    if not models_dir.is_dir():
        fail(f"--models_dir {models_dir} is not a folder: give the folder holding your .pth.tar models")
    if args.photos_dir and not Path(args.photos_dir).is_dir():
        fail(f"--photos_dir {args.photos_dir} is not a folder")
    if not 0 < args.port < 65536:
        fail(f"--port must be between 1 and 65535 (got {args.port})")
    import uvicorn  # the web stack is loaded only for the page

    from webapp.server import Place, create_app, temporary_work_dir

    place = Place(models_dir, temporary_work_dir(), ROOT / "docs" / "grace_hopper.jpg",
                  Path(args.vgg) if args.vgg else default_vgg(),
                  Path(args.photos_dir) if args.photos_dir else None)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: anyone who can reach this machine on port {args.port} "
              "can use its processor, GPU and disk through the page", file=sys.stderr)
    address = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/"
    print(f"the page is at {address} (Ctrl-C stops the server)", flush=True)
    if args.open_browser:
        threading.Timer(1.0, lambda: webbrowser.open(address)).start()
    uvicorn.run(create_app(place), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_cli(main)
