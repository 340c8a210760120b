"""train.py under torchrun: two CPU processes (gloo) hold the same weights, only the first
writes, the shards add up to the single-process run's batches, resuming works where the
processes see different checkpoint folders, a stop survives further signals during its save,
and the flow cache is computed once."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from common.model_files import read_checkpoint
from conftest import ROOT, run_script, train_args, write_image
from train.dataset import EpochSampler

WORKER = ROOT / "tests" / "distributed_worker.py"


def torchrun_command(out: Path, args: list[str], processes: int = 2,
                     env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WORKER_OUT": str(out),
           **(env or {})}
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", str(WORKER), *args], env


def torchrun(out: Path, args: list[str], processes: int = 2,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The worker under torchrun; the timeout turns a hang into a failure."""
    command, env = torchrun_command(out, args, processes, env)
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def exits(out: Path) -> list[int]:
    return [int((out / f"rank{r}.exit").read_text()) for r in range(2)]


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
    # Loss weights fixed here: the tolerances below were measured with them (at content 10 /
    # style 10 against regu 1e-2 the same rounding noise moves the median weight 3.4e-6).
    weights = ("--lambda_content", "4", "--lambda_style", "4")
    args = one_per_process(train_args(ws, "--epochs", "1", "--precision", "fp32", *weights))
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
    # steps of the full learning rate in either direction (measured: median 2e-7, 99.9th
    # percentile 1.1e-5, largest 1.3e-4).
    single = train_args(ws, "--epochs", "1", "--precision", "fp32", *weights, "--model_dir", str(ws / "single"))
    assert run_script("train.py", *single).returncode == 0
    alone = read_checkpoint(ws / "single" / "m.pth.tar")["state_dict"]
    differences = torch.cat([(value - rank0[key]).abs().flatten() for key, value in alone.items()
                             if value.dim() == 4])
    # A few weights whose gradient is itself near zero may still take a rounding-driven step.
    assert differences.median() < 1e-6 and differences.quantile(0.999) < 1e-4

    # Resuming under torchrun continues the run: the next epoch's three steps. The second
    # process sees an empty folder, as on a machine of its own: it still resumes what the
    # first process found, with the same optimizer state, so the weights stay identical.
    private = ws / "models_of_rank1"
    result = torchrun(ws / "ranks", [*args, "--load_model", "True"],
                      env={"WORKER_PRIVATE_MODEL_DIR": str(private)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("resuming") == 1 and "no checkpoint" not in result.stdout
    resumed = read_checkpoint(ws / "models" / "m.pth.tar")
    assert (resumed["epoch"], resumed["step"]) == (2, 6)
    rank0, rank1 = (torch.load(ws / "ranks" / f"rank{r}.pt", weights_only=True) for r in range(2))
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
    assert not any(private.iterdir())


def test_the_first_process_decides_a_refusal_for_all(workspace):  # noqa: F811
    # Only the first process's folder holds the model: every process stops with the error
    # (exit 2) instead of setting up a run the first one has refused.
    (workspace / "models").mkdir()
    (workspace / "models" / "m.pth.tar").write_bytes(b"precious")
    result = torchrun(workspace / "ranks", one_per_process(train_args(workspace)),
                      env={"WORKER_PRIVATE_MODEL_DIR": str(workspace / "models_of_rank1")})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds checkpoints" in errors[0], result.stderr[-3000:]
    assert exits(workspace / "ranks") == [2, 2]
    assert (workspace / "models" / "m.pth.tar").read_bytes() == b"precious"


def wait_for(condition, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_a_stop_survives_further_signals_during_its_save(workspace):  # noqa: F811
    ws = workspace
    for i in range(6, 24):  # 12 steps of 2 images
        write_image(ws / "frames" / f"g{i}.png", 40, 40, seed=i)
    args = one_per_process(train_args(ws, "--epochs", "1", "--precision", "fp32"))
    out = ws / "ranks"
    command, env = torchrun_command(out, args, env={"WORKER_SLOW_SAVE": "3"})
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        wait_for(lambda: (ws / "models" / "m_step0000002.pth.tar").exists())
        pids = [int((out / f"pid{r}").read_text()) for r in range(2)]
        for pid in pids:  # as a scheduler stopping the job does
            os.kill(pid, signal.SIGTERM)
        # While the first process saves, torchrun (when another process has left) and the
        # user send more.
        wait_for(lambda: (out / "saving0").exists(), 120)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            time.sleep(0.3)
            with contextlib.suppress(ProcessLookupError):  # it may have died of them
                os.kill(pids[0], sig)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # the test failed: leave no processes behind
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.kill()
    assert process.returncode != 0
    assert "interrupted: saved" in err and exits(out) == [130, 130], err[-3000:]
    saved = read_checkpoint(ws / "models" / "m.pth.tar")
    assert 2 <= saved["step"] < 12

    result = run_script("train.py", *train_args(ws, "--epochs", "1", "--load_model", "True"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"step {saved['step']}" in result.stdout
    assert read_checkpoint(ws / "models" / "m.pth.tar")["step"] == 12


def test_the_flow_cache_is_computed_by_one_process_per_machine(workspace):  # noqa: F811
    frames = workspace / "clip"
    for i in range(4):
        write_image(frames / f"clip_{i:06d}.png", 40, 32, seed=i)
    args = one_per_process(train_args(workspace, "--lambda_flow", "1", "--save_model", "False",
                                      "--flow_cache_dir", str(workspace / "flows")))
    args[args.index("--content_dir") + 1] = str(frames)
    result = torchrun(workspace / "ranks", args)
    assert result.returncode == 0, result.stderr[-3000:]
    computed = [int((workspace / "ranks" / f"rank{r}.flows").read_text()) for r in range(2)]
    assert computed == [3, 0]
    assert len(list((workspace / "flows").glob("*.npz"))) == 3


def test_bad_input_under_torchrun_is_one_error_line(workspace):  # noqa: F811
    args = one_per_process(train_args(workspace))
    args[args.index("--content_dir") + 1] = str(workspace / "nope")
    result = torchrun(workspace / "ranks", args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not exist" in errors[0], result.stderr[-3000:]
    assert not (workspace / "models").exists()
