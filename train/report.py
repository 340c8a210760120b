"""The loss history of a training run: a CSV row per step and a PNG plot of the curves."""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from common.files import atomic_write


class LossLog:
    """Collects weighted loss terms per step; write() refreshes <stem>_losses.csv and .png.

    Values arrive as device tensors and are copied to the host in bulk, so logging does not
    force a GPU synchronisation every step.
    """

    def __init__(self, out_dir: Path, stem: str):
        self.csv_path = out_dir / f"{stem}_losses.csv"
        self.plot_path = out_dir / f"{stem}_losses.png"
        self.rows: list[dict[str, float]] = self._read_existing()
        self._pending: list[tuple[int, dict[str, torch.Tensor]]] = []

    def _read_existing(self) -> list[dict[str, float]]:
        """A resumed run continues the curves of the run it resumes."""
        if not self.csv_path.exists():
            return []
        with open(self.csv_path, newline="") as handle:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]

    def add(self, step: int, values: dict[str, torch.Tensor]) -> None:
        self._pending.append((step, {k: v.detach().float() for k, v in values.items()}))

    def _flush(self) -> None:
        if not self._pending:
            return
        names = list(self._pending[0][1])
        table = torch.stack([torch.stack([v[n] for n in names]) for _, v in self._pending]).cpu().tolist()
        steps = [s for s, _ in self._pending]
        # A resumed run overwrites the steps it repeats.
        self.rows = [r for r in self.rows if r["step"] < steps[0]]
        self.rows += [{"step": float(s), **dict(zip(names, vals))} for s, vals in zip(steps, table)]
        self._pending.clear()

    def latest(self) -> dict[str, str]:
        self._flush()
        return {k: f"{v:.3g}" for k, v in self.rows[-1].items() if k != "step"} if self.rows else {}

    def write(self) -> None:
        self._flush()
        if not self.rows:
            return
        fields = list(self.rows[-1])

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in r.items()}
                                 for r in self.rows)

        atomic_write(self.csv_path, write_csv)
        atomic_write(self.plot_path, self._plot)

    def _plot(self, tmp: str) -> None:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in self.rows]
        window = max(1, len(steps) // 50)  # light smoothing: per-step losses are noisy
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for name in (k for k in self.rows[-1] if k != "step"):
            values = torch.tensor([r[name] for r in self.rows])
            if not values.abs().sum():
                continue
            smooth = values.unfold(0, window, 1).mean(1) if len(values) >= window else values
            ax.plot(steps[len(steps) - len(smooth):], smooth.tolist(), label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("weighted loss")
        ax.set_title("training losses" + (f" (moving average of {window})" if window > 1 else ""))
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(tmp, format="png")
        plt.close(fig)
