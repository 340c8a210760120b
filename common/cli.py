"""What every command line shares: running an entry point so that user errors read as one
line, the README's boolean flags, and settings filled from config's defaults."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import fields
from typing import Callable, TypeVar

from common.errors import UserError

T = TypeVar("T")


def run_cli(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run an entry point; user errors become one line on stderr and exit status 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if not debug:  # warnings read as one line each, like errors
        warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        main(argv)
    except UserError as err:
        if debug:
            raise
        # Under torchrun the processes of one machine read the same flags and files, so they
        # meet the same problems: its first process says it once.
        if os.environ.get("LOCAL_RANK", "0") == "0":
            _close_progress_bars()
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _close_progress_bars() -> None:
    """Close the progress bars an error left drawn (training's epoch bar), so that the error
    gets a line of its own rather than trailing the bar."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def str2bool(value: str | bool) -> bool:
    """argparse type for the README's boolean flags: True/False, yes/no, 1/0, on/off."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "y", "1", "on", "t"):
        return True
    if lowered in ("false", "no", "n", "0", "off", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def with_defaults(settings: type[T], defaults: dict, values: dict) -> T:
    """settings(**values), every field not in values taken from defaults (a table of config,
    read now, so that a changed default counts): how a script builds what a command line's
    flags would."""
    known = {f.name for f in fields(settings)}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"{settings.__name__} has no {', '.join(sorted(unknown))}")
    return settings(**{**{k: v for k, v in defaults.items() if k in known}, **values})
