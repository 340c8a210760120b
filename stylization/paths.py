"""Which files a run reads and which names it writes, decided before any work starts.

Outputs never replace an input, and never replace an existing file unless asked to.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import config
from stylization.content_source.webcam import stream_label
from stylization.enum_class import ContentType
from utils import fail, list_files, model_stem

DEFAULT_SUFFIX = {ContentType.IMAGE: ".png", ContentType.VIDEO: ".mp4", ContentType.WEBCAM: ".mp4"}
INPUT_EXTENSIONS = {ContentType.IMAGE: config.IMAGE_EXTENSIONS,
                    ContentType.VIDEO: config.VIDEO_EXTENSIONS}


@dataclass(frozen=True)
class Inputs:
    """The sources of one run. `batch` when --source was a folder or a glob pattern;
    `root` is that folder, whose layout the outputs then mirror."""

    sources: list[str]
    batch: bool = False
    root: Path | None = None


@dataclass(frozen=True)
class Job:
    source: str
    output: Path | None  # None when nothing is saved


def _outside(paths: list[str], folder: Path | None) -> list[str]:
    """paths not under folder: an --output_dir inside the input folder holds earlier
    outputs, which are not inputs."""
    if folder is None:
        return paths
    folder = folder.resolve()
    return [p for p in paths if not Path(p).resolve().is_relative_to(folder)]


def find_inputs(content_type: ContentType, source: str, output_dir: Path | None = None) -> Inputs:
    """Expand --source into files (a file, a folder, or a glob pattern) or one stream.

    Files under output_dir are left out of folders and patterns.
    """
    if content_type is ContentType.WEBCAM:
        return Inputs([source])
    extensions = INPUT_EXTENSIONS[content_type]
    kind = content_type.value
    path = Path(source)
    if path.is_file():
        return Inputs([source])
    if path.is_dir():
        matching = _outside([str(p) for p in list_files(path, extensions)[0]], output_dir)
        if not matching:
            fail(f"no {kind} files in {path} (looked for {', '.join(extensions)})")
        return Inputs(matching, batch=True, root=path)
    if glob.has_magic(source):
        matching = _outside(sorted(p for p in glob.glob(source, recursive=True)
                                   if Path(p).is_file() and Path(p).suffix.lower() in extensions),
                            output_dir)
        if not matching:
            fail(f"no {kind} files match {source} (looked for {', '.join(extensions)})")
        return Inputs(matching, batch=True)
    fail(f"{source} does not exist: check --source")
    raise AssertionError("unreachable")


def _planned_name(inputs: Inputs, source: str, content_type: ContentType,
                  output_name: str | None, model_path: str) -> Path:
    """The output path relative to --output_dir, before collisions are resolved."""
    suffix = DEFAULT_SUFFIX[content_type]
    if inputs.batch and output_name is None:
        relative = Path(source).relative_to(inputs.root) if inputs.root else Path(Path(source).name)
        # Images keep their format; videos are re-encoded, so they become .mp4.
        return relative if content_type is ContentType.IMAGE else relative.with_suffix(suffix)
    if output_name is not None:
        name = Path(output_name)
        return name if name.suffix else name.with_suffix(suffix)
    label = stream_label(source) if content_type is ContentType.WEBCAM else Path(source).stem
    return Path(f"{label}_{model_stem(model_path)}{suffix}")


def _free_path(path: Path, taken: set[Path], keep_existing: bool) -> Path:
    """path, or name_1.ext, name_2.ext ... whichever is not taken by this run and, when
    keep_existing, does not exist yet."""
    candidate, counter = path, 0
    while candidate.resolve() in taken or (keep_existing and candidate.exists()):
        counter += 1
        candidate = path.with_name(f"{path.stem}_{counter}{path.suffix}")
    return candidate


def check_output_dir(output_dir: Path) -> None:
    """Fail early if output_dir cannot be created or written; creates nothing."""
    existing = output_dir.absolute()
    while not existing.exists():
        existing = existing.parent
    if existing != output_dir.absolute() and not existing.is_dir():
        fail(f"cannot create --output_dir {output_dir}: {existing} is a file")
    if not existing.is_dir():
        fail(f"--output_dir {output_dir} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"--output_dir {output_dir} is not writable: choose another folder")


def plan_jobs(inputs: Inputs, content_type: ContentType, output_dir: Path | None,
              output_name: str | None, model_path: str, overwrite: bool) -> tuple[list[Job], list[str]]:
    """One job per source with its output path (None: not saving), plus notes for the user.

    Output names that already exist get a free variant (name_1.png) unless overwrite.
    """
    if output_dir is None:
        return [Job(source, None) for source in inputs.sources], []
    if output_name is not None and len(inputs.sources) > 1:
        fail(f"--output_name names one file, but --source matched {len(inputs.sources)}: "
             "leave --output_name out to keep each file's own name")
    if output_name is not None and Path(output_name).name != output_name:
        fail(f"--output_name {output_name} must be a file name; put folders in --output_dir")
    check_output_dir(output_dir)
    # A webcam --source may be a stream file too, which must not be overwritten either.
    input_paths = {Path(s).resolve(): s for s in inputs.sources if Path(s).exists()}
    jobs, notes, taken = [], [], set()
    for source in inputs.sources:
        wanted = output_dir / _planned_name(inputs, source, content_type, output_name, model_path)
        if content_type is ContentType.IMAGE and wanted.suffix.lower() not in config.IMAGE_EXTENSIONS:
            fail(f"cannot save an image as {wanted.name}: use one of {', '.join(config.IMAGE_EXTENSIONS)}")
        if wanted.resolve() in input_paths:
            fail(f"the output {wanted} would overwrite the input {input_paths[wanted.resolve()]}: "
                 "choose another --output_dir or --output_name")
        output = _free_path(wanted, taken, keep_existing=not overwrite)
        if output != wanted:
            reason = "exists" if wanted.exists() else "is another input's output"
            notes.append(f"{wanted} {reason}; writing {output.name} instead"
                         + (" (--overwrite True replaces it)" if reason == "exists" else ""))
        if output.resolve() in input_paths:
            fail(f"the output {output} would overwrite the input {input_paths[output.resolve()]}")
        taken.add(output.resolve())
        jobs.append(Job(source, output))
    return jobs, notes

