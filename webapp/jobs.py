"""Video jobs of the web page: each clip is stylised on a thread of its own, so the page (and
a second tab) stays usable, with its progress, time left, cancel and result kept here."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException

from common.errors import UserError
from stylization.stylizer import StyleOptions, Stylizer


@dataclass
class VideoJob:
    name: str  # the download's file name
    output: Path
    state: str = "running"  # running, done, cancelled, failed
    done: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict:
        elapsed = time.monotonic() - self.started
        left = None
        if self.state == "running" and self.done and self.total:
            left = elapsed / self.done * max(0, self.total - self.done)
        return {"state": self.state, "done": self.done, "total": self.total, "seconds_left": left,
                "error": self.error}


class JobBoard:
    """The video jobs of one server, by id."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.jobs: dict[str, VideoJob] = {}

    def start(self, model: Path, clip: Path, stem: str, options: StyleOptions) -> str:
        job_id = uuid.uuid4().hex
        self.folder.mkdir(parents=True, exist_ok=True)
        job = VideoJob(f"{stem}_{model.name.split('.')[0]}.mp4", self.folder / f"{job_id}.mp4")
        self.jobs[job_id] = job
        threading.Thread(target=self._run, args=(job, model, clip, options), daemon=True).start()
        return job_id

    def _run(self, job: VideoJob, model: Path, clip: Path, options: StyleOptions) -> None:
        def progress(done: int, total: int | None) -> None:
            job.done, job.total = done, total
        try:
            Stylizer(model, options).video(clip, job.output, progress, cancelled=job.cancel.is_set)
            job.state = "cancelled" if job.cancel.is_set() else "done"
        except UserError as err:
            job.state, job.error = "failed", str(err)
        except Exception as err:  # noqa: BLE001 - the page shows it; the server keeps serving
            job.state, job.error = "failed", f"the clip could not be stylised ({type(err).__name__}: {err})"
        finally:
            clip.unlink(missing_ok=True)

    def get(self, job_id: str) -> VideoJob:
        if job_id not in self.jobs:
            raise HTTPException(404, "no such video job")
        return self.jobs[job_id]

    def status(self, job_id: str) -> dict:
        return self.get(job_id).status()

    def cancel(self, job_id: str) -> None:
        self.get(job_id).cancel.set()

    def cancel_all(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()

    def result(self, job_id: str) -> tuple[Path, str]:
        job = self.get(job_id)
        if job.state != "done" or not job.output.exists():
            raise HTTPException(409, "the video is not ready")
        return job.output, job.name
