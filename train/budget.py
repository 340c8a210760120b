"""--minutes: a training run that ends within a time budget, as a complete run.

The run measures its own pace (seconds per step, everything in the loop included) and plans
how many steps fit in what is left of the budget; the learning rate warms up over the first
steps and then follows a cosine down to config.BUDGET["final_lr_share"] of --lr over the
planned steps, so a short run ends as settled as a long one. The plan is measured again every
few steps: a machine that slows down shortens it instead of overrunning. The budget counts
from the start of the process (loading the networks and the photos included); a resumed run
continues the plan with what the earlier processes left of the budget.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import config
from common.errors import fail


def lr_factor(step: int, first_step: int, planned_step: int) -> float:
    """The share of --lr for `step` of a plan that began at first_step and ends at planned_step:
    a linear warm-up over config.BUDGET["warmup_steps"], then a cosine to final_lr_share."""
    warmup, final = config.BUDGET["warmup_steps"], config.BUDGET["final_lr_share"]
    done = step - first_step
    ramp = min(1.0, (done + 1) / warmup) if warmup > 0 else 1.0
    progress = min(1.0, max(0.0, done / max(1, planned_step - first_step)))
    return ramp * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))


def planned_end(step: int, seconds_left: float, seconds_per_step: float) -> int:
    """The last step that fits into seconds_left at seconds_per_step, counting from step."""
    return step + max(0, math.floor(seconds_left / seconds_per_step))


@dataclass
class Budget:
    """A run's time budget and plan; checkpoints record it (to_dict) so a resumed run goes on
    with it (from_dict). planned_step is None until this process has measured its pace."""
    seconds: float  # the whole budget
    first_step: int  # the step the plan's schedule starts from
    planned_step: int | None = None  # the step the run ends at, as last measured
    spent: float = 0.0  # seconds used by earlier processes of this run
    started: float = field(default_factory=time.monotonic)  # when this process started
    _loop: tuple[float, int] | None = None  # (time, step) when this process's first step ended
    _pace_from: tuple[float, int] | None = None  # where the pace is measured from

    @classmethod
    def new(cls, minutes: float, step: int, started: float) -> "Budget":
        return cls(seconds=minutes * 60, first_step=step, started=started)

    @classmethod
    def resume(cls, recorded: dict, started: float) -> "Budget":
        return cls(seconds=recorded["seconds"], first_step=recorded["first_step"],
                   planned_step=recorded["planned_step"], spent=recorded["spent"], started=started)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "first_step": self.first_step,
                "planned_step": self.planned_step, "spent": self.elapsed()}

    def elapsed(self) -> float:
        return self.spent + time.monotonic() - self.started

    def left(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def lr_factor(self, step: int) -> float:
        """The share of --lr for step (before the first plan: the warm-up alone)."""
        return lr_factor(step, self.first_step, self.planned_step or step + 10**9)

    def finished(self, step: int) -> bool:
        return self._pace_from is not None and step >= self.planned_step

    def after_step(self, step: int) -> None:
        """Measure the pace and plan again. A process's first step is slow (memory allocated,
        kernels chosen) and left out: the first plan comes config.BUDGET["settle_steps"] steps
        after it, from their pace, and the pace is measured again from there every
        replan_every steps."""
        settle, every = config.BUDGET["settle_steps"], config.BUDGET["replan_every"]
        now = time.monotonic()
        if self._loop is None:
            self._loop = (now, step)  # the end of this process's first step
            return
        if self._pace_from is None:
            loop_time, loop_step = self._loop
            if step - loop_step < settle:
                return
            self._pace_from = (now, step)
            self._plan(step, (now - loop_time) / (step - loop_step))
            return
        mark_time, mark_step = self._pace_from
        if (step - mark_step) % every == 0:
            self._plan(step, (now - mark_time) / (step - mark_step))

    def _plan(self, step: int, pace: float) -> None:
        fresh = self.planned_step is None
        reserve = min(config.BUDGET["reserve_seconds"], config.BUDGET["reserve_share"] * self.seconds)
        self.planned_step = planned_end(step, self.left() - reserve, pace)
        # A new budget (the first plan of the run's first process) that leaves no step after the
        # settling ones is refused rather than overrun. A resumed one whose time is up ends here,
        # a complete run of what it has: stopped near its end, it is finished, not too short.
        if fresh and self.spent == 0 and self.planned_step <= step:
            startup = self.elapsed() - (step - self.first_step) * pace
            fail(f"--minutes {self.seconds / 60:g} is too short: starting took {startup:.0f} s and a "
                 f"step takes {pace:.1f} s here; give at least "
                 f"{math.ceil((self.elapsed() + 30 * pace) / 60)} minutes")
