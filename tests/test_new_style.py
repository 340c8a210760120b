"""Training a new style quickly: --minutes budgets, --init_model starts, and style images as
people have them."""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from PIL import Image

import config
from common.errors import UserError
from common.model_files import read_checkpoint
from conftest import TINY_NETWORK, run_script, tiny_checkpoint, train_args
from test_model_formats import examples_state
from train import budget as budget_module
from train.budget import Budget, lr_factor, planned_end
from train.checkpoints import Position, initial_weights
from train.dataset import load_style_image
from train.loop import plan_length
from train.settings import train_settings


def test_the_schedule_warms_up_then_falls_to_its_final_share():
    warmup, final = config.BUDGET["warmup_steps"], config.BUDGET["final_lr_share"]
    factors = [lr_factor(step, 100, 400) for step in range(100, 401)]
    assert factors[0] == pytest.approx(1 / warmup)
    assert max(factors) <= 1.0 and factors[warmup - 1] > 0.99
    after = factors[warmup:]
    assert all(a >= b for a, b in zip(after, after[1:]))  # never rises again
    assert factors[-1] == pytest.approx(final)
    assert lr_factor(250, 100, 400) == pytest.approx(final + (1 - final) * 0.5)  # half way


def test_the_plan_counts_the_steps_that_fit():
    assert planned_end(10, 100.0, 3.0) == 43
    assert planned_end(10, 2.0, 3.0) == 10
    assert planned_end(10, -5.0, 3.0) == 10


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_plans_from_its_measured_pace_and_ends_in_time(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    budget = Budget.new(minutes=2, step=0, started=clock())
    clock.now += 20  # start-up: networks and photos
    step = 0
    while not budget.finished(step):
        clock.now += 2.0 if step < 30 else 3.0  # the machine slows down a third of the way in
        step += 1
        budget.after_step(step)
        assert step < 200
    reserve = min(config.BUDGET["reserve_seconds"], config.BUDGET["reserve_share"] * 120)
    assert budget.elapsed() <= 120 - reserve + 3 * config.BUDGET["replan_every"]
    assert budget.elapsed() >= 120 - reserve - 3 * config.BUDGET["replan_every"]
    assert step == budget.planned_step
    recorded = budget.to_dict()
    assert recorded["spent"] == pytest.approx(budget.elapsed())
    assert Budget.resume(recorded, clock()).left() == pytest.approx(budget.left())


def test_a_budget_shorter_than_start_up_and_a_few_steps_is_refused(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    budget = Budget.new(minutes=0.5, step=0, started=clock())
    clock.now += 25
    with pytest.raises(UserError, match=r"--minutes 0.5 is too short: .* give at least \d+ minutes"):
        for step in range(1, config.BUDGET["settle_steps"] + 2):
            clock.now += 4.0
            budget.after_step(step)


def test_a_run_stopped_near_its_budget_s_end_and_resumed_ends_as_a_complete_run(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget_module.time, "monotonic", clock)
    # Stopped before its first step ended, with 5 of its 30 seconds left (as the page's Stop can).
    budget = Budget.resume({"seconds": 30.0, "first_step": 0, "planned_step": None, "spent": 25.0}, clock())
    step = 0
    clock.now += 4  # start-up again
    while not budget.finished(step):
        clock.now += 4.0
        step += 1
        budget.after_step(step)
        assert step < 10
    assert budget.planned_step == step and budget.left() == 0


def test_an_interrupted_budget_continues_its_plan_and_a_finished_one_starts_anew():
    s = train_settings(content_dir="c", style_path="s", model_name="m", loss_net_path="v", minutes=5)
    plan = {"seconds": 600.0, "first_step": 0, "planned_step": 300, "spent": 200.0}
    end, budget = plan_length(s, Position(1, 5, 120), ("m", {"budget": plan}), started=0.0)
    assert end is None and (budget.seconds, budget.planned_step, budget.spent) == (600, 300, 200)
    end, budget = plan_length(s, Position(2, 5, 300), ("m", {"budget": plan}), started=0.0)
    assert (budget.seconds, budget.first_step, budget.planned_step) == (300, 300, None)
    s.minutes = None
    assert plan_length(s, Position(2, 5, 300), ("m", {"budget": plan, "end_epoch": 0}), 0.0) == (2 + s.epochs, None)


def test_init_model_takes_a_models_sizes_and_weights(tmp_path):
    path = tiny_checkpoint(tmp_path / "mine.pth.tar", seed=3)
    sizes, state = initial_weights(path, None)
    assert sizes == TINY_NETWORK
    saved = read_checkpoint(path)["state_dict"]
    assert set(state) == set(saved) and all(v.dtype == torch.float32 for v in state.values())
    assert all(torch.equal(state[k], saved[k].float()) for k in saved)


@pytest.mark.parametrize("case, message", [
    ("missing", "is not a file: give a model of this toolkit"),
    ("onnx", "is an ONNX export, which cannot be trained"),
    ("damaged", "is not a loadable checkpoint"),
    ("examples", "holds pytorch/examples fast_neural_style TransformerNet, whose layout train.py cannot continue"),
    ("fast_asked", "holds the fast network, but --network asks for default"),
])
def test_init_model_refuses_what_it_cannot_train(tmp_path, case, message):
    path = tmp_path / "model.pth.tar"
    if case == "onnx":
        path = tmp_path / "model.onnx"
        path.write_bytes(b"onnx")
    elif case == "damaged":
        path.write_bytes(b"\x80\x02not a checkpoint")
    elif case == "examples":
        torch.save(examples_state(), path)
    elif case == "fast_asked":
        tiny_checkpoint(path, cfg=config.NETWORK_SIZES["fast"])
    with pytest.raises(UserError, match=message):
        initial_weights(path, "default" if case == "fast_asked" else None)


def test_a_budgeted_run_from_another_model_ends_as_a_complete_run(workspace):
    ws = workspace
    start = tiny_checkpoint(ws / "start.pth.tar", seed=5)
    result = run_script("train.py", *train_args(ws, "--init_model", str(start), "--minutes", "0.3",
                                                "--lr", "1e-12", "--save_freq", "1000"),
                        env={"OMP_NUM_THREADS": "1"})  # tiny steps: threads only spin on a busy machine
    assert result.returncode == 0, result.stderr
    assert "starting from start.pth.tar" in result.stdout
    assert "training finished after" in result.stdout and "of 0.3 minutes" in result.stdout
    checkpoint = read_checkpoint(ws / "models" / "m.pth.tar")
    assert config.NetworkConfig.from_dict(checkpoint["network"]) == TINY_NETWORK
    assert checkpoint["init_model"] == "start.pth.tar"
    assert checkpoint["budget"]["planned_step"] == checkpoint["step"] > config.BUDGET["settle_steps"]
    # the final writes have their reserve; a few seconds more only on a machine busy elsewhere
    assert checkpoint["budget"]["spent"] <= 18 + 3
    initial = read_checkpoint(start)["state_dict"]
    # a learning rate of 1e-12 leaves the weights where --init_model put them
    assert all(torch.allclose(v.float(), initial[k].float(), atol=1e-5) for k, v in checkpoint["state_dict"].items())
    assert list((ws / "out").glob("m_final_s*.jpg")) and (ws / "out" / "m_losses.png").stat().st_size > 0


@pytest.mark.parametrize("mode, size, style_size, expect", [
    ("L", (60, 40), 64, (3, 43, 64)),  # grey trains as RGB
    ("RGBA", (64, 64), 0, (3, 64, 64)),  # transparency on white
    ("RGB", (12, 12), 0, "at least 16 are needed on each side"),
    ("RGB", (3000, 1500), 0, (3, 1024, 2048)),  # huge: scaled to config's most, with a warning
])
def test_style_images_as_people_have_them(tmp_path, mode, size, style_size, expect):
    path = tmp_path / "style.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], len(mode)), np.uint8).squeeze(),
                    mode).save(path)
    if isinstance(expect, str):
        with pytest.raises(UserError, match=expect):
            load_style_image(path, style_size)
        return
    with pytest.warns(UserWarning, match="2048 pixels") if max(size) > 2048 else nullcontext():
        image = load_style_image(path, style_size)
    assert tuple(image.shape[1:]) == expect and math.isclose(float(image.max()), 1.0, abs_tol=0.02)

