"""train.py for tests run under torchrun: trains exactly as train.py does, then saves this
process's final weights and the checkpoint paths it wrote to $WORKER_OUT/rank<N>.*, so a test
can compare the processes. Not a test module itself (pytest collects test_*.py only)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import train.main as train_main  # noqa: E402
import utils  # noqa: E402

out, rank = Path(os.environ["WORKER_OUT"]), os.environ["RANK"]
saved: list[str] = []
networks: list[torch.nn.Module] = []
save_checkpoint, network = train_main.save_checkpoint, train_main.StylizingNetwork


def recording_save(checkpoint: dict, path: Path) -> Path:
    saved.append(Path(path).name)
    return save_checkpoint(checkpoint, path)


def kept_network(*args, **kwargs) -> torch.nn.Module:
    networks.append(network(*args, **kwargs))
    return networks[-1]


train_main.save_checkpoint, train_main.StylizingNetwork = recording_save, kept_network
utils.run_cli(train_main.main)
torch.save(networks[0].state_dict(), out / f"rank{rank}.pt")
(out / f"rank{rank}.json").write_text(json.dumps(saved))
