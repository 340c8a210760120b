"""Which files a run reads and which names it writes, decided before any work starts.

Outputs never replace an input, and never replace an existing file unless asked to.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import config
from common.errors import fail
from common.files import list_files
from common.model_files import model_stem
from stylization.content_source.webcam import stream_label
from stylization.enum_class import ContentType

DEFAULT_SUFFIX = {ContentType.IMAGE: ".png", ContentType.VIDEO: ".mp4", ContentType.WEBCAM: ".mp4"}
INPUT_EXTENSIONS = {ContentType.IMAGE: config.IMAGE_EXTENSIONS,
                    ContentType.VIDEO: config.VIDEO_EXTENSIONS}
MODEL_EXTENSIONS = (*config.MODEL_SUFFIXES, ".onnx")  # what a folder of models is searched for
SHEET_FOLDER = "contact_sheets"  # of a folder or pattern of images with several models


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
    model: int = 0  # which of the run's models (index into its list)


@dataclass(frozen=True)
class Sheet:
    """A contact sheet of one image source: the input and each model's output, labelled."""

    source: str
    output: Path
    parts: list[Job] = field(default_factory=list)


def find_models(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """--model_path's files in order: files as given, and the model files of each folder
    (sorted, recursively). The second list holds the folders, whose unloadable files are
    skipped rather than fatal."""
    models, folders = [], []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = [str(p) for p in list_files(path, ())[1]
                     if p.name.lower().endswith(MODEL_EXTENSIONS)]
            if not found:
                fail(f"no model files in {path} (looked for {', '.join(MODEL_EXTENSIONS)}): "
                     "check --model_path")
            models += found
            folders.append(given)
        else:
            models.append(given)
    return models, folders


def model_labels(paths: Sequence[str]) -> list[str]:
    """Each model's name for output names: its file name without the suffix, made unique
    (mosaic, mosaic_2) when two folders hold a model of the same name."""
    labels: list[str] = []
    for path in paths:
        label, counter = model_stem(path), 1
        while label in labels:
            counter += 1
            label = f"{model_stem(path)}_{counter}"
        labels.append(label)
    return labels


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


def _relative(inputs: Inputs, source: str) -> Path:
    return Path(source).relative_to(inputs.root) if inputs.root else Path(Path(source).name)


def _planned_name(inputs: Inputs, source: str, content_type: ContentType,
                  output_name: str | None, model_path: str, several: str | None = None) -> Path:
    """The output path relative to --output_dir, before collisions are resolved.

    several: the model's label when the run has several models; batches then go in a folder
    per model, and other names get the label where one model's name would go.
    """
    suffix = DEFAULT_SUFFIX[content_type]
    if inputs.batch and output_name is None:
        relative = _relative(inputs, source)
        # Images keep their format; videos are re-encoded, so they become .mp4.
        relative = relative if content_type is ContentType.IMAGE else relative.with_suffix(suffix)
        return relative if several is None else Path(several) / relative
    if output_name is not None:
        name = Path(output_name)
        name = name if name.suffix else name.with_suffix(suffix)
        return name if several is None else name.with_name(f"{name.stem}_{several}{name.suffix}")
    label = stream_label(source) if content_type is ContentType.WEBCAM else Path(source).stem
    return Path(f"{label}_{several or model_stem(model_path)}{suffix}")


def _sheet_name(inputs: Inputs, source: str, output_name: str | None) -> Path:
    if inputs.batch:
        return Path(SHEET_FOLDER) / _relative(inputs, source).with_suffix(".png")
    stem = Path(output_name).stem if output_name is not None else Path(source).stem
    return Path(f"{stem}_contact_sheet.png")


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


def plan_outputs(inputs: Inputs, content_type: ContentType, output_dir: Path | None,
                 output_name: str | None, model_path: str | Sequence[str],
                 overwrite: bool) -> tuple[list[Job], list[str], list[Sheet]]:
    """Jobs, notes, and the contact sheets of image sources when there are several models.

    Every source is stylised with every model; a webcam with several models is one job,
    switched between models live. Output names that already exist get a free variant
    (name_1.png) unless overwrite.
    """
    models = [model_path] if isinstance(model_path, str) else list(model_path)
    labels = model_labels(models) if len(models) > 1 else [None]
    model_count = 1 if content_type is ContentType.WEBCAM else len(labels)
    if content_type is ContentType.WEBCAM and len(models) > 1:
        labels = [f"{len(models)}_models"]
    if output_dir is None:
        return [Job(source, None, i) for source in inputs.sources for i in range(model_count)], [], []
    if output_name is not None and len(inputs.sources) > 1:
        fail(f"--output_name names one file, but --source matched {len(inputs.sources)}: "
             "leave --output_name out to keep each file's own name")
    if output_name is not None and Path(output_name).name != output_name:
        fail(f"--output_name {output_name} must be a file name; put folders in --output_dir")
    check_output_dir(output_dir)
    # A webcam --source may be a stream file too, which must not be overwritten either.
    input_paths = {Path(s).resolve(): s for s in inputs.sources if Path(s).exists()}
    jobs, notes, sheets, taken = [], [], [], set()

    def claim(wanted: Path) -> Path:
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
        return output

    for source in inputs.sources:
        parts = []
        for index in range(model_count):
            wanted = output_dir / _planned_name(inputs, source, content_type, output_name,
                                                models[index], labels[index])
            if content_type is ContentType.IMAGE and wanted.suffix.lower() not in config.IMAGE_EXTENSIONS:
                fail(f"cannot save an image as {wanted.name}: use one of "
                     f"{', '.join(config.IMAGE_EXTENSIONS)}")
            parts.append(Job(source, claim(wanted), index))
        jobs += parts
        if content_type is ContentType.IMAGE and len(parts) > 1:
            sheets.append(Sheet(source, claim(output_dir / _sheet_name(inputs, source, output_name)),
                                parts))
    return jobs, notes, sheets

