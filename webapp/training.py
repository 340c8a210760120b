"""Training a new style from the web page: train.py's twenty-minute recipe in a process of its
own (so Stop is the Ctrl-C of the command line, and Resume its --load_model True), watched
through what it writes: its progress line, samples and loss plot. A finished run is finalised
into the models folder, where it joins the styles."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException

import config
from common.model_files import finalize_model

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
LEFT = re.compile(r"left=(\d+):(\d\d)")


@dataclass
class TrainJob:
    name: str
    folder: Path
    command: list[str]
    minutes: float
    state: str = "running"  # running, stopped, done, failed
    seconds_left: float | None = None
    error: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"

    @property
    def losses(self) -> Path:
        return self.out_dir / f"{self.name}_losses.png"

    def latest_sample(self) -> Path | None:
        """The newest sample picture the run wrote (train.py names them <name>_..._s<step>.jpg)."""
        samples = sorted(self.out_dir.glob(f"{self.name}_*_s*.jpg"), key=lambda p: p.stat().st_mtime)
        return samples[-1] if samples else None

    def status(self) -> dict:
        return {"state": self.state, "name": self.name, "seconds_left": self.seconds_left,
                "error": self.error, "minutes": self.minutes,
                "has_sample": self.latest_sample() is not None, "has_losses": self.losses.exists()}


class TrainingBoard:
    """The training jobs of one server. vgg_path: the loss network's weights (without them the
    page says how to get them); photos_dir: a folder of photos offered when none are uploaded."""

    def __init__(self, folder: Path, models_dir: Path, vgg_path: Path | None, photos_dir: Path | None):
        self.folder, self.models_dir = folder, models_dir
        self.vgg_path, self.photos_dir = vgg_path, photos_dir
        self.jobs: dict[str, TrainJob] = {}

    def ready(self) -> dict:
        """Whether the page can train, and if not, what to do."""
        start = self.models_dir / config.NEW_STYLE["init_model"]
        if self.vgg_path is None or not self.vgg_path.is_file():
            return {"ok": False, "why": "training needs a VGG16 weight file: download it as the README's "
                                        "Training section says and start app.py with --vgg PATH"}
        if not start.is_file():
            return {"ok": False, "why": f"training starts from {start.name}, which is not in the models folder"}
        return {"ok": True, "photos_dir": self.photos_dir is not None}

    def start(self, name: str, painting: Path, photos: list[Path], minutes: float) -> str:
        ready = self.ready()
        if not ready["ok"]:
            raise HTTPException(400, ready["why"])
        if not NAME.match(name):
            raise HTTPException(400, "name the style with letters, digits, - and _ (up to 40)")
        if (self.models_dir / f"{name}.pth.tar").exists() or any(j.name == name for j in self.jobs.values()):
            raise HTTPException(400, f"a style named {name} exists already: choose another name")
        if not 0 < minutes <= 24 * 60:
            raise HTTPException(400, "give the training between a few minutes and 24 hours (1440 minutes)")
        job_id = uuid.uuid4().hex
        folder = self.folder / job_id
        photos_dir = self._photos(folder, photos)
        command = [sys.executable, "-u", str(ROOT / "train.py"), "--content_dir", str(photos_dir),
                   "--style_path", str(painting), "--model_name", f"{name}.pth.tar",
                   "--model_dir", str(folder / "models"), "--train_output_dir", str(folder / "out"),
                   "--loss_net_path", str(self.vgg_path), "--minutes", f"{minutes:g}",
                   "--init_model", str(self.models_dir / config.NEW_STYLE["init_model"]),
                   "--save_freq", str(config.NEW_STYLE["web_save_freq"])]
        self.jobs[job_id] = TrainJob(name, folder, command, minutes)
        self._launch(self.jobs[job_id], [])
        return job_id

    def _photos(self, folder: Path, photos: list[Path]) -> Path:
        if not photos:
            if self.photos_dir is None:
                raise HTTPException(400, "add some photos to learn from (a folder of them)")
            return self.photos_dir
        target = folder / "photos"
        target.mkdir(parents=True)
        for photo in photos:
            shutil.move(photo, target / photo.name)
        return target

    def _launch(self, job: TrainJob, extra: list[str]) -> None:
        job.state, job.error = "running", None
        job.process = subprocess.Popen(job.command + extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       cwd=ROOT, bufsize=0)
        threading.Thread(target=self._watch, args=(job, job.process), daemon=True).start()

    def _watch(self, job: TrainJob, process: subprocess.Popen) -> None:
        """Read one run's output for its time left and its errors; finalise the job when it
        ends. A run that was stopped, or that a resumed run has replaced, leaves the job alone:
        its exit status (that of an interrupted run) is not the job's."""
        tail = ""
        while chunk := process.stdout.read(4096):
            tail = (tail + chunk.decode(errors="replace"))[-4096:]
            if found := LEFT.findall(tail):
                minutes, seconds = found[-1]
                job.seconds_left = int(minutes) * 60 + int(seconds)
        code = process.wait()
        if job.state == "stopped" or job.process is not process:
            return
        if code != 0:
            errors = [line for line in re.split(r"[\r\n]", tail) if line.startswith("error:")]
            job.state, job.error = "failed", errors[-1][7:] if errors else f"training ended with status {code}"
            return
        finalize_model(job.folder / "models" / f"{job.name}.pth.tar", self.models_dir / f"{job.name}.pth.tar")
        job.state, job.seconds_left = "done", 0

    def get(self, job_id: str) -> TrainJob:
        if job_id not in self.jobs:
            raise HTTPException(404, "no such training job")
        return self.jobs[job_id]

    def status(self, job_id: str) -> dict:
        return self.get(job_id).status()

    def stop(self, job_id: str) -> None:
        """As Ctrl-C: the run saves a checkpoint to resume from."""
        job = self.get(job_id)
        if job.state == "running" and job.process is not None:
            job.state = "stopped"
            job.process.terminate()
            job.process.wait()

    def resume(self, job_id: str) -> None:
        job = self.get(job_id)
        if job.state != "stopped":
            raise HTTPException(409, "only a stopped training can be resumed")
        self._launch(job, ["--load_model", "True"])

    def stop_all(self) -> None:
        for job_id in self.jobs:
            self.stop(job_id)

    def picture(self, job_id: str, which: str) -> Path:
        job = self.get(job_id)
        if which == "losses":
            path = job.losses
        elif which == "sample":
            path = job.latest_sample() or job.out_dir / "none"
        else:
            raise HTTPException(404, "no such picture")
        if not path.exists():
            raise HTTPException(404, "not written yet")
        return path
