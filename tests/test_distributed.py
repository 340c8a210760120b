"""train.py under torchrun: two CPU processes (gloo) hold the same weights, only the first
writes, the shards add up to the single-process run's batches, and resuming works."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import ROOT, run_script
from test_train import train_args, workspace  # noqa: F401 (workspace is a fixture)
from train.dataset import EpochSampler
from utils import read_checkpoint

WORKER = ROOT / "tests" / "distributed_worker.py"


def torchrun(out: Path, args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WORKER_OUT": str(out)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={processes}", str(WORKER), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def one_per_process(args: list[str]) -> list[str]:
    """The flags with --batch_size 1: two processes then make the step of --batch_size 2."""
    args = list(args)
    args[args.index("--batch_size") + 1] = "1"
    return args


def test_shards_cover_the_single_process_order_step_by_step():
    for size, skip in ((7, 0), (6, 2), (9, 4)):
        single = EpochSampler(size, 3, 1, 0).order
        shards = [EpochSampler(size, 3, 1, skip, rank, 2).order for rank in range(2)]
        assert len(shards[0]) == len(shards[1])  # every process takes as many steps
        merged = [index for pair in zip(*shards) for index in pair]  # step by step, batch 1
        assert merged[: size - skip] == single[skip:]
        assert set(merged) <= set(single)  # topped up with the order's own start


def test_two_processes_train_identically_and_only_the_first_writes(workspace):  # noqa: F811
    ws = workspace
    args = one_per_process(train_args(ws, "--epochs", "1", "--precision", "fp32"))
    result = torchrun(ws / "ranks", args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("effective batch size 2 (2 processes x --batch_size 1)") == 1
    assert "Traceback" not in result.stderr

    rank0, rank1 = (torch.load(ws / "ranks" / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
    # 6 images, 3 steps of 2: a rolling checkpoint at step 2, the epoch's and the model's.
    written = [json.loads((ws / "ranks" / f"rank{r}.json").read_text()) for r in range(2)]
    assert written == [["m_step0000002.pth.tar", "m_epoch1.pth.tar", "m.pth.tar"], []]
    assert sorted(p.name for p in (ws / "models").iterdir()) == sorted(written[0])
    checkpoint = read_checkpoint(ws / "models" / "m.pth.tar")
    assert (checkpoint["step"], checkpoint["world_size"], checkpoint["batch_size"]) == (3, 2, 1)
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(value, rank0[key]), key

    # Two processes of batch 1 take the steps one process of batch 2 takes: the same images
    # and the averaged gradient, up to rounding. Adam moves each weight by about the learning
    # rate (2.5e-4) per step, so other images would move most convolution weights apart by
    # that much. Only convolution weights are compared: the other parameters feed instance
    # norms that cancel them, so their gradients are rounding noise, which Adam turns into
    # steps of the full learning rate in either direction.
    single = train_args(ws, "--epochs", "1", "--precision", "fp32", "--model_dir", str(ws / "single"))
    assert run_script("train.py", *single).returncode == 0
    alone = read_checkpoint(ws / "single" / "m.pth.tar")["state_dict"]
    differences = torch.cat([(value - rank0[key]).abs().flatten() for key, value in alone.items()
                             if value.dim() == 4])
    assert differences.max() < 1e-4

    # Resuming under torchrun continues the run: the next epoch's three steps.
    result = torchrun(ws / "ranks", [*args, "--load_model", "True"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout
    resumed = read_checkpoint(ws / "models" / "m.pth.tar")
    assert (resumed["epoch"], resumed["step"]) == (2, 6)


def test_bad_input_under_torchrun_is_one_error_line(workspace):  # noqa: F811
    args = one_per_process(train_args(workspace))
    args[args.index("--content_dir") + 1] = str(workspace / "nope")
    result = torchrun(workspace / "ranks", args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0], result.stderr[-3000:]
    assert not (workspace / "models").exists()
