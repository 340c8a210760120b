"""train.py for tests run under torchrun: trains exactly as train.py does, then saves this
process's final weights and the checkpoint paths it wrote to $WORKER_OUT/rank<N>.*, so a test
can compare the processes. Not a test module itself (pytest collects test_*.py only).

Also written: pid<N> (the process id, at start, for tests that signal the processes),
rank<N>.exit (the exit status), rank<N>.flows (optical-flow pairs this process computed).
Set by the test: WORKER_PRIVATE_MODEL_DIR, a --model_dir for ranks other than 0 (as if each
machine had its own disk); WORKER_SLOW_SAVE, seconds that a save of --model_name takes longer,
with the file saving<N> written when it begins."""
from __future__ import annotations

import json
import os
import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import train.checkpoints as train_checkpoints  # noqa: E402
from train.dataset import FramePairDataset  # noqa: E402
import train.loop as train_loop  # noqa: E402

out, rank = Path(os.environ["WORKER_OUT"]), os.environ["RANK"]
(out / f"pid{rank}").write_text(str(os.getpid()))
saved: list[str] = []
networks: list[torch.nn.Module] = []
flows: list[int] = []
save_checkpoint, network, compute = (train_loop.save_checkpoint, train_loop.StylizingNetwork,
                                     FramePairDataset._compute)
argv = sys.argv[1:]
if os.environ.get("WORKER_PRIVATE_MODEL_DIR") and rank != "0":
    argv[argv.index("--model_dir") + 1] = os.environ["WORKER_PRIVATE_MODEL_DIR"]
model_name = argv[argv.index("--model_name") + 1]


def recording_save(checkpoint: dict, path: Path) -> Path:
    saved.append(Path(path).name)
    if os.environ.get("WORKER_SLOW_SAVE") and Path(path).name == model_name:
        (out / f"saving{rank}").write_text("")
        time.sleep(float(os.environ["WORKER_SLOW_SAVE"]))
    return save_checkpoint(checkpoint, path)


def kept_network(*args, **kwargs) -> torch.nn.Module:
    networks.append(network(*args, **kwargs))
    return networks[-1]


def counted_compute(self, index: int, path: Path) -> None:
    flows.append(index)
    compute(self, index, path)


train_loop.save_checkpoint, train_loop.StylizingNetwork = recording_save, kept_network
train_checkpoints.save_checkpoint = recording_save
FramePairDataset._compute = counted_compute
status = 0
try:
    sys.argv = [str(ROOT / "train.py"), *argv]
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")  # the command itself, patched above
except SystemExit as stop:
    status = stop.code if isinstance(stop.code, int) else 1
    raise
finally:
    (out / f"rank{rank}.exit").write_text(str(status))
    (out / f"rank{rank}.flows").write_text(str(len(flows)))
    if networks:
        torch.save(networks[0].state_dict(), out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps(saved))
