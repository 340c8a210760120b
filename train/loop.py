"""The training loop: train(settings) runs one training run for every device, start to end.

prepare() checks every input before anything is written and builds the run (networks, data,
objective, where it starts); the loop then takes steps (train/step.py) epoch after epoch, or
until a --minutes budget's plan ends (train/budget.py), writing checkpoints, samples and the
loss log as it goes (train/checkpoints.py, train/report.py). Ctrl-C or SIGTERM stops it after
the current step with a checkpoint to resume from.
"""
from __future__ import annotations

import itertools
import math
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.utils import make_grid
from tqdm import tqdm

import config
from network.loss_network import LossNetwork, build_loss_network
from network.style_network import StylizingNetwork
from train import distributed
from train import loss as L
from train.budget import Budget
from train.checkpoints import (Position, Resumed, choose_start, initial_weights, network_config,
                               save_rolling)
from train.dataset import (ContentDataset, EpochSampler, FramePairDataset, SkipUnreadable, UnreadableImages,
                           collate_skipping, default_flow_cache_dir, load_style_image)
from common.devices import keep_freed_memory, resolve_device
from common.errors import fail, warn_if_short_of_space
from common.images import save_image, tensor_to_array
from common.model_files import expected_checkpoint_bytes, model_stem, save_checkpoint
from common.precision import precision_name, resolve_precision
from train.report import LossLog
from train.settings import TrainSettings
from train.step import LOSS_TERMS, Objective, Updater, loss_layers, make_scaler, optimization_step, style_targets

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Ctrl-C or SIGTERM asks the loop to stop after the current step, so the checkpoint
    written on the way out is never half an optimizer update.

    In a single process a second signal aborts the step at once. Under torchrun it does not:
    the agent passes each signal it gets on to the workers, so one Ctrl-C in a terminal reaches
    them twice (the agent's SIGKILL, 30 s after its own signal, is the hard stop there)."""

    def __init__(self, abort_on_repeat: bool = True):
        self.raised = False
        self.abort_on_repeat = abort_on_repeat

    def __call__(self, signum, frame):
        if self.raised and self.abort_on_repeat:
            raise KeyboardInterrupt
        self.raised = True

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self)

    def hold(self) -> None:
        """Ignore further stop signals: the save on the way out must not be cut short (the
        atomic write would delete its file and leave nothing to resume)."""
        ignore_stop_signals()


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """Ignore Ctrl-C and SIGTERM in this process. Also each DataLoader worker's init
    (worker_id), leaving the stop to the main process: both signals often reach every process
    of the group (a terminal's Ctrl-C; Slurm, systemd and `kill -- -PGID` stop whole groups),
    and a worker killed by SIGTERM made the main process fail with a traceback at its next batch
    instead of finishing the step and saving."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@dataclass
class Run:
    """What the loop works with, built by prepare()."""
    settings: TrainSettings
    cluster: distributed.Cluster
    model: StylizingNetwork
    net_cfg: config.NetworkConfig
    loss_net: LossNetwork
    updater: Updater
    objective: Objective
    dataset: ContentDataset
    position: Position
    end_epoch: int | None  # None: a --minutes run, which ends with its budget's plan
    budget: Budget | None
    log: LossLog
    init_model: str | None  # the file a fresh run took its first weights from
    stop: StopFlag | None = None
    unreadable: UnreadableImages | None = None
    last_shown: dict[str, torch.Tensor] | None = None  # the last step's images, for the samples

    @property
    def model_dir(self) -> Path:
        return Path(self.settings.model_dir)

    @property
    def out_dir(self) -> Path:
        return Path(self.settings.train_output_dir)

    def checkpoint(self) -> dict:
        s, position = self.settings, self.position
        return {
            "format_version": config.CHECKPOINT_FORMAT_VERSION,
            "state_dict": self.model.state_dict(), "optimizer": self.updater.optimizer.state_dict(),
            "scaler": self.updater.scaler.state_dict() if self.updater.scaler.is_enabled() else {},
            "precision": precision_name(self.updater.dtype),
            "network": self.net_cfg.to_dict(), "network_size": config.network_name(self.net_cfg),
            "loss_net_choice": s.loss_net_choice, "loss_net_preprocess": self.loss_net.preprocess,
            "loss_weights": self.objective.weights, "style_layer_weights": s.style_layer_weights,
            "content_layers": list(self.objective.layers["content"]), "loss_downscale": s.loss_downscale,
            "style_image": Path(s.style_path).name, "init_model": self.init_model,
            "img_size": s.img_size, "batch_size": s.batch_size, "seed": s.seed,
            "world_size": self.cluster.world_size,
            "epoch": position.epoch, "batch": position.batch, "step": position.step,
            "end_epoch": self.end_epoch or 0,
            "budget": self.budget.to_dict() if self.budget else None,
        }


def train(s: TrainSettings) -> Path:
    """Run the training s describes; returns the path of the model file it finished."""
    started = time.monotonic()  # a --minutes budget counts from here
    cluster = distributed.join(resolve_device(s.device))
    keep_freed_memory()
    # Steps repeat one shape (img_size crops; only an epoch's last batch may be smaller), so
    # cuDNN may time its convolution algorithms once per shape and keep the fastest.
    torch.backends.cudnn.benchmark = True
    run = prepare(s, cluster, started)
    step_model, step_loss_net = cluster.wrap(run.model), run.loss_net
    # Compiled wrappers share the modules' parameters; checkpoints save the modules themselves,
    # so their keys never get the wrappers' "_orig_mod." prefix.
    if s.compile:
        step_model, step_loss_net = torch.compile(step_model), torch.compile(run.loss_net)
    run.stop = StopFlag(abort_on_repeat=cluster.world_size == 1)
    run.stop.install()
    run.unreadable = UnreadableImages(len(run.dataset), s.content_dir, report=cluster.is_main)
    bar = budget_bar(run)
    first_epoch = run.position.epoch
    epochs = itertools.count(first_epoch) if run.end_epoch is None else range(first_epoch, run.end_epoch)
    for epoch in epochs:
        skip = run.position.batch * s.batch_size * cluster.world_size if epoch == first_epoch else 0
        if train_epoch(run, (step_model, step_loss_net), epoch, skip, bar):
            break
        end_of_epoch(run, epoch)
    if bar is not None:
        bar.close()
    if run.budget and cluster.is_main:
        return finish_budget(run)
    print(f"training finished after {run.position.step} steps; losses in {run.log.csv_path}")
    return run.model_dir / s.model_name


def prepare(s: TrainSettings, cluster: distributed.Cluster, started: float) -> Run:
    """Everything the loop needs, every input checked before anything is written."""
    device = cluster.device
    model_dir, out_dir = Path(s.model_dir), Path(s.train_output_dir)
    # The first process reads the checkpoints and the others get what it read: machines that
    # do not share --model_dir still resume alike (see Cluster.decide).
    resumed = cluster.decide(lambda: choose_start(model_dir, s.model_name, s.load_model, s.save_model))
    init = None
    if resumed is None and s.init_model:
        init = cluster.decide(lambda: initial_weights(s.init_model, s.network))
    elif resumed and s.init_model:
        print(f"notice: resuming {resumed[0]}; --init_model is used only when a run starts")
    dataset = (FramePairDataset(s.content_dir, s.img_size, s.flow_cache_dir or default_flow_cache_dir())
               if s.lambda_flow > 0 else ContentDataset(s.content_dir, s.img_size))
    style_image = load_style_image(s.style_path, s.style_size, s.loss_downscale).to(device)
    layers = loss_layers(s.loss_net_choice, s.content_layers)
    loss_net = build_loss_network(s.loss_net_path, s.loss_net_choice, s.loss_net_preprocess, device,
                                  layers["content"])
    for folder, flag in ((model_dir, "--model_dir"), (out_dir, "--train_output_dir")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            fail(f"cannot create {flag} {folder} ({err.strerror}): choose a writable folder")

    torch.manual_seed(s.seed)
    net_cfg = init[0] if init else network_config(s.network, resumed[1] if resumed else None)
    model = StylizingNetwork(net_cfg).to(device).train()
    if init:
        model.load_state_dict(init[1])
    dtype = resolve_precision(s.precision, device)
    updater = Updater(torch.optim.Adam(model.parameters(), lr=s.lr), make_scaler(device, dtype), dtype)
    position = resume(updater, model, resumed, s, cluster.world_size) if resumed else Position()
    end_epoch, budget = plan_length(s, position, resumed, started)
    objective = Objective(style_targets(loss_net, style_image, layers), layers,
                          {t: getattr(s, f"lambda_{t}") for t in LOSS_TERMS}, s.style_layer_weights,
                          noise_pattern(s, device), s.loss_downscale)
    run = Run(s, cluster, model, net_cfg, loss_net, updater, objective, dataset, position, end_epoch,
              budget, LossLog(out_dir, model_stem(s.model_name)),
              Path(s.init_model).name if init else (resumed[1].get("init_model") if resumed else None))
    if s.save_model and cluster.is_main:  # the rolling ones, one per epoch, and model_name
        epochs_left = (end_epoch - position.epoch) if end_epoch else 1
        warn_if_short_of_space(model_dir, expected_checkpoint_bytes(model) * (
            config.KEEP_TEMP_CHECKPOINTS + 1 + epochs_left), "the checkpoints of this run")
    if isinstance(dataset, FramePairDataset):
        cluster.once_per_machine(dataset.prepare)  # the others would compute the same files
    style_copy = out_dir / f"style_{Path(s.style_path).stem}.jpg"
    if cluster.is_main and not style_copy.exists():
        save_image(tensor_to_array(style_image), style_copy)
    announce(run)
    return run


def resume(updater: Updater, model: StylizingNetwork, resumed: Resumed, s: TrainSettings,
           world_size: int) -> Position:
    """Load the resumed checkpoint's weights and optimizer; where it stood."""
    path, checkpoint = resumed
    model.load_state_dict(checkpoint["state_dict"])
    updater.optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("scaler") and updater.scaler.is_enabled():
        updater.scaler.load_state_dict(checkpoint["scaler"])
    for group in updater.optimizer.param_groups:
        group["lr"] = s.lr  # the recipes change the learning rate between runs
    position = Position(checkpoint["epoch"], checkpoint["batch"], checkpoint["step"])
    earlier_batch = checkpoint.get("batch_size", s.batch_size) * checkpoint.get("world_size", 1)
    if earlier_batch != s.batch_size * world_size and position.batch:
        warnings.warn("--batch_size x processes differs from the interrupted run's; the rest of "
                      "that epoch will not visit exactly the images it would have", stacklevel=1)
    print(f"resuming {path} at epoch {position.epoch + 1}, batch {position.batch}, step {position.step}")
    return position


def plan_length(s: TrainSettings, position: Position, resumed: Resumed | None,
                started: float) -> tuple[int | None, Budget | None]:
    """(end epoch, None) for a run of --epochs, (None, budget) for a --minutes one.

    An interrupted run is finished as it was started, so that repeating its command with
    --load_model True gives what the uninterrupted run would have: the same end epoch, or the
    rest of the same budget. A finished one trains --epochs (or --minutes) more (the recipes'
    one-epoch-per-run workflow)."""
    recorded = resumed[1] if resumed else {}
    plan = recorded.get("budget")
    if plan and plan["planned_step"] is not None and position.step < plan["planned_step"]:
        print(f"continuing the interrupted {plan['seconds'] / 60:g}-minute run: "
              f"{max(0.0, plan['seconds'] - plan['spent']) / 60:.1f} minutes left")
        return None, Budget.resume(plan, started)
    if s.minutes:
        return None, Budget.new(s.minutes, position.step, started)
    if position.epoch < recorded.get("end_epoch", 0):
        print(f"finishing the interrupted run: epochs {position.epoch + 1} to {recorded['end_epoch']}")
        return recorded["end_epoch"], None
    return position.epoch + s.epochs, None


def noise_pattern(s: TrainSettings, device: torch.device) -> torch.Tensor | None:
    """The noise loss's fixed pattern (None when that loss is off), the same for every run of
    one seed."""
    if s.lambda_noise <= 0 or s.noise_per_img <= 0:
        return None
    generator = torch.Generator().manual_seed(s.seed)
    return L.make_noise_pattern(s.img_size, s.img_size, s.noise_per_img, s.noise_range,
                                generator).to(device)


def announce(run: Run) -> None:
    s, cluster = run.settings, run.cluster
    effective = s.batch_size * cluster.world_size
    processes = f" ({cluster.world_size} processes x --batch_size {s.batch_size})" if cluster.world_size > 1 else ""
    length = (f"for {run.budget.left() / 60:.1f} minutes" if run.budget
              else f"{batches_per_epoch(run)} batches per epoch")
    start = f", starting from {run.init_model}" if run.init_model and not run.position.step else ""
    print(f"{len(run.dataset)} images, {length}, effective batch size {effective}{processes}, on "
          f"{cluster.device} in {precision_name(run.updater.dtype)}" + (", compiled" if s.compile else "")
          + start)


def images_per_epoch(run: Run) -> int:
    world = run.cluster.world_size
    return math.ceil(len(run.dataset) / world) * world  # see EpochSampler


def batches_per_epoch(run: Run) -> int:
    return math.ceil(images_per_epoch(run) / (run.settings.batch_size * run.cluster.world_size))


def budget_bar(run: Run) -> tqdm | None:
    """A --minutes run's one bar, in seconds of its budget: it reads as time spent and time left."""
    if run.budget is None:
        return None
    return tqdm(desc="training", total=round(run.budget.seconds), initial=round(run.budget.elapsed()),
                unit="s", dynamic_ncols=True, disable=not run.cluster.is_main,
                bar_format="{desc}: {percentage:3.0f}%|{bar}|{postfix}")


def progress_note(run: Run) -> dict[str, str]:
    """The bar's postfix: the step (of the plan, for a --minutes run), time left, the losses."""
    budget, step = run.budget, run.position.step
    if budget is None:
        return {"step": str(step), **run.log.latest()}
    left = round(budget.left())
    planned = f"/{budget.planned_step}" if budget.planned_step else ""
    return {"left": f"{left // 60}:{left % 60:02d}", "step": f"{step}{planned}", **run.log.latest()}


def train_epoch(run: Run, nets: tuple, epoch: int, skip: int, budget_progress: tqdm | None) -> bool:
    """The steps of one epoch from `skip` images in; True when the run's budget is used up.
    nets: the model and loss network as the step calls them; budget_progress: budget_bar's."""
    s, cluster, position = run.settings, run.cluster, run.position
    loader = DataLoader(SkipUnreadable(run.dataset), batch_size=s.batch_size,
                        sampler=EpochSampler(len(run.dataset), s.seed, epoch, skip, cluster.rank,
                                             cluster.world_size),
                        num_workers=s.num_workers, pin_memory=cluster.device.type == "cuda",
                        collate_fn=collate_skipping, worker_init_fn=ignore_stop_signals)
    # Counted in images, so the rate reads images/s whatever the batch size.
    bar = budget_progress or tqdm(desc=f"epoch {epoch + 1}", total=images_per_epoch(run), initial=skip,
                                  unit="img", dynamic_ncols=True, disable=not cluster.is_main)
    for batch, skipped in loader:
        run.unreadable.add(skipped)  # warns about new ones; stops past config.MAX_UNREADABLE_SHARE
        shown, stopping = one_step(run, nets, batch)
        if budget_progress is not None:
            bar.update(min(bar.total, round(run.budget.elapsed())) - bar.n)
        else:
            bar.update(len(shown["input"]) * cluster.world_size)
        if position.step % 10 == 0 or position.batch == 1:
            bar.set_postfix(progress_note(run), refresh=False)
        if position.step % s.save_freq == 0 and cluster.is_main:
            save_samples(shown, run.out_dir / f"{model_stem(s.model_name)}_e{epoch + 1}_s{position.step:07d}.jpg")
            run.log.write()
            if s.save_model:
                save_rolling(run.checkpoint(), run.model_dir, s.model_name, position.step)
        if stopping:
            bar.close()
            interrupted(run)
        if run.budget and run.budget.finished(position.step):
            run.last_shown = shown
            return True
    if budget_progress is None:
        bar.close()
    return False


def one_step(run: Run, nets: tuple, batch) -> tuple[dict[str, torch.Tensor], bool]:
    """One optimizer step on batch, logged; (the images for samples, whether to stop now)."""
    device, budget, position = run.cluster.device, run.budget, run.position
    images, *rest = batch if isinstance(batch, (list, tuple)) else (batch,)
    images = images.to(device, non_blocking=True)
    pair = tuple(t.to(device, non_blocking=True) for t in rest) if rest else None
    if budget:
        for group in run.updater.optimizer.param_groups:
            group["lr"] = run.settings.lr * budget.lr_factor(position.step)
    total, terms, shown = optimization_step(*nets, run.updater, images, run.objective, pair)
    position.batch += 1
    position.step += 1
    if budget:
        budget.after_step(position.step)
        # Every process must end after the same step and follow one schedule: the plan is
        # averaged over them with the losses.
        terms["plan"] = torch.tensor(float(budget.planned_step or 0), device=device)
    terms, stopping = run.cluster.agree({**terms, "total": total}, run.stop.raised)
    if budget and budget.planned_step is not None:
        budget.planned_step = math.floor(float(terms.pop("plan")))
    weights = run.objective.weights
    run.log.add(position.step, {**{t: weights[t] * terms[t] for t in LOSS_TERMS}, "total": terms["total"]})
    return shown, stopping


def end_of_epoch(run: Run, epoch: int) -> None:
    """The epoch's checkpoint and model_name (first process), the loss log, and where it stands."""
    run.unreadable.end_epoch(epoch + 1)
    run.position.epoch, run.position.batch = epoch + 1, 0
    if not run.cluster.is_main:
        return
    run.log.write()
    if run.settings.save_model:
        checkpoint = run.checkpoint()
        save_checkpoint(checkpoint, run.model_dir / f"{model_stem(run.settings.model_name)}_epoch{epoch + 1}.pth.tar")
        save_checkpoint(checkpoint, run.model_dir / run.settings.model_name)
        print(f"epoch {epoch + 1} done: saved {run.model_dir / run.settings.model_name}")


def finish_budget(run: Run) -> Path:
    """The end of a --minutes run: model_name, the last samples and the loss log and plot."""
    s, position = run.settings, run.position
    path = run.model_dir / s.model_name
    if run.last_shown is not None:
        save_samples(run.last_shown, run.out_dir / f"{model_stem(s.model_name)}_final_s{position.step:07d}.jpg")
    run.log.write()
    if s.save_model:
        save_checkpoint(run.checkpoint(), path)
    print(f"training finished after {position.step} steps in {run.budget.elapsed() / 60:.1f} of "
          f"{run.budget.seconds / 60:g} minutes: saved {path}; losses in {run.log.csv_path}")
    return path


def save_samples(shown: dict[str, torch.Tensor], path: Path) -> None:
    """First sample of the batch: output, noisy output, input, noisy input, side by side."""
    order = [k for k in ("output", "noisy_output", "input", "noisy_input") if k in shown]
    grid = make_grid(torch.stack([shown[k][0].detach().float().clamp(0, 1) for k in order]), nrow=len(order))
    save_image(tensor_to_array(grid), path)


def interrupted(run: Run) -> None:
    """Save where training stands and exit with the shell's status for Ctrl-C.

    Every process gets here after the same step (Cluster.agree). Further signals are ignored
    from now on, and the others wait until the first one has saved: were they to leave at
    once, torchrun would signal the first one in the middle of its save."""
    run.stop.hold()
    position = run.position
    try:
        if run.cluster.is_main:
            run.log.write()
            if run.settings.save_model:
                path = save_checkpoint(run.checkpoint(), run.model_dir / run.settings.model_name)
                print(f"\ninterrupted: saved {path} at epoch {position.epoch + 1}, batch {position.batch}; "
                      "resume with the same command and --load_model True", file=sys.stderr)
            else:
                print("\ninterrupted (--save_model False: nothing saved)", file=sys.stderr)
    finally:
        run.cluster.barrier()
    sys.exit(130)
