"""The one training loop. Pretraining and fine-tuning both run through ``train``.

The loop knows nothing about objectives: it asks ``data.batch(i)`` for the i-th micro-batch, calls
``module(batch)["loss"]``, and handles everything around that: accumulation, clipping, schedule, precision,
periodic evaluation, checkpoints, resume, progress bar and metrics log.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..errors import UserError
from ..fsutil import remove_debris
from . import checkpoint as ckpt
from .callbacks import Callback, MetricsLog
from .distributed import grad_sync, is_main, mean_over_ranks, token_weight, unwrap, world
from .fsdp import check_strategy, full_state, load_model_state, load_optimizer_state, shard
from .optim import build_optimizer, build_scheduler
from .precision import autocast, configure_cpu, resolve_precision


@dataclass
class TrainConfig:
    steps: int | None = None  # optimizer steps; or give epochs
    epochs: float | None = None
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06  # < 1: fraction of all steps; >= 1: steps
    schedule: str = "linear"
    grad_accum: int = 1
    clip: float = 1.0
    precision: str = "auto"
    log_every: int = 10
    eval_every: int | None = None  # default: once per epoch, or 10 times per run for step-based runs
    save_every: int | None = None  # step checkpoints (with trainer state); None: only final/
    keep_checkpoints: int = 2
    seed: int = 0
    progress: bool = True
    device: str = "cpu"
    on_nan: str = "stop"  # a NaN/inf loss or gradient norm: "stop" with a message, or "skip" the batch
    max_nan_skips: int = 10  # with "skip": stop when more than this many batches in a row are bad
    distributed: str = "ddp"  # under torchrun with >1 ranks: "ddp" (replicated model) or "fsdp" (sharded, fsdp.py)

    def __post_init__(self):
        check_strategy(self.distributed)
        if self.on_nan not in ("stop", "skip"):
            raise UserError(f"--on-nan must be 'stop' or 'skip', got {self.on_nan!r}.")


@dataclass
class TrainState:
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    max_steps: int
    steps_per_epoch: int | None
    inputs: object = None  # the preprocessor (inputs/) saved with every checkpoint
    run_dir: Path | None = None
    step: int = 0
    should_stop: bool = False
    last_loss: float = float("nan")  # loss of the latest optimizer step
    skipped_batches: int = 0  # steps whose batch gave a NaN/inf and was skipped (on_nan="skip")
    history: list = field(default_factory=list)  # eval rows: {"step", "epoch", metrics...}
    postfix: dict = field(default_factory=dict)  # what callbacks add to the progress bar (a monitor's kNN accuracy)

    @property
    def epoch(self) -> float:
        return self.step / self.steps_per_epoch if self.steps_per_epoch else 0.0


def _plan(cfg: TrainConfig, data) -> tuple[int, int | None]:
    """Total optimizer steps and steps per epoch (None for infinite streams)."""
    micro_per_epoch = getattr(data, "steps_per_epoch", None)
    per_epoch = max(1, micro_per_epoch // cfg.grad_accum) if micro_per_epoch else None
    if cfg.steps is not None:
        return cfg.steps, per_epoch
    if cfg.epochs is None or per_epoch is None:
        raise UserError("give the number of steps (--steps) for a streaming corpus, or epochs for a finite dataset.")
    return max(1, math.ceil(cfg.epochs * per_epoch)), per_epoch


def train(module: torch.nn.Module, data, cfg: TrainConfig, *, evaluate: Callable[[torch.nn.Module], dict] | None = None,
          run_dir: str | Path | None = None, inputs=None, extra_config: dict | None = None,
          callbacks: list[Callback] = (), optimizer=None, scheduler=None, resume: bool = False) -> TrainState:
    """Train ``module`` on ``data`` (an object with ``batch(i) -> dict`` and ``steps_per_epoch``).

    ``module`` is a task module: ``module(batch)`` returns a dict with ``loss``, and ``module.count(batch)`` says
    how many units of input (``module.unit``: tokens, images, frames) a batch holds, for the throughput log.
    ``inputs`` is the preprocessor saved with every checkpoint.

    ``evaluate(module) -> {"loss": ..., ...}`` is called every ``eval_every`` steps and at the end. With
    ``run_dir``, metrics go to RUN/metrics.jsonl, step checkpoints to RUN/step-N/, the final model to RUN/final/;
    ``resume=True`` continues from the newest complete step checkpoint.
    """
    if cfg.device == "cpu":
        configure_cpu()
    device = torch.device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    _, world_size = world()
    # Sharded before .to(device) (fully_shard moves each rank's shards there: the full model need not fit the
    # device) and before the optimizer is built (it must hold the shards).
    if world_size > 1 and cfg.distributed == "fsdp":
        shard(module, device, optimizer)
    module.to(device)
    max_steps, per_epoch = _plan(cfg, data)
    optimizer = optimizer or build_optimizer(module, cfg.lr, cfg.weight_decay)
    scheduler = scheduler or build_scheduler(optimizer, cfg.schedule, max_steps, cfg.warmup)
    run_dir = Path(run_dir) if run_dir is not None else None
    state = TrainState(module, optimizer, scheduler, max_steps, per_epoch, inputs, run_dir)
    rate_key = f"{module.unit}_per_s"  # tokens_per_s, images_per_s, ...
    eval_every = cfg.eval_every or per_epoch or max(1, max_steps // 10)
    # A module with state besides its trained weights (BYOL's moving-average target) supplies the callbacks that
    # update it, so the loop never needs to know which objective it runs.
    callbacks = [*getattr(unwrap(module), "callbacks", list)(), *callbacks]
    log = None
    if run_dir is not None and is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(run_dir)
        callbacks.insert(0, log)

    if resume and run_dir is not None and is_main():
        remove_debris(run_dir)  # temporary names left by a write or delete that a crash cut short
    if resume and run_dir is not None and (found := ckpt.step_checkpoints(run_dir, report=is_main())):
        latest = found[-1]
        weights = ckpt.load_weights(latest)
        ckpt.check_weights(unwrap(module).state_dict(), weights, latest, "the model being trained")
        load_model_state(unwrap(module), weights)
        saved = ckpt.load_trainer_state(latest, optimizer, scheduler,
                                        load_optimizer=lambda sd: load_optimizer_state(unwrap(module), optimizer, sd))
        state.step, state.history = saved["step"], saved.get("history", [])
        state.skipped_batches = saved.get("skipped_batches", 0)
        if log is not None:
            log.truncate_after(state.step)
        print(f"resumed from {latest} at step {state.step}", file=sys.stderr)
    elif resume and log is not None:
        log.truncate_after(0)  # killed before the first checkpoint: start the log over with the run

    model = module
    if world_size > 1 and cfg.distributed == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(module)

    def save(directory: Path, with_state: bool) -> None:
        # sharded (FSDP): every rank takes part in gathering the full state; rank 0 writes it in the usual format
        weights, optimizer_state = full_state(unwrap(module), optimizer if with_state else None)
        if not is_main():
            return
        trainer_state = ({"step": state.step, "history": state.history, "skipped_batches": state.skipped_batches}
                         if with_state else None)
        try:
            ckpt.save_checkpoint(directory, unwrap(module), inputs, trainer_state,
                                 optimizer if with_state else None, scheduler if with_state else None, extra_config,
                                 weights=weights, optimizer_state=optimizer_state)
        except UserError as e:  # disk full, read-only: say which checkpoint is still good
            found = ckpt.step_checkpoints(run_dir)
            last = (f" The last complete checkpoint is {found[-1]}; after fixing this, run the same command with "
                    f"--resume auto to continue from it." if found else "")
            raise UserError(f"{e}{last}") from None

    def run_eval() -> None:
        if evaluate is None:
            return
        module.eval()
        with torch.no_grad(), autocast(precision, device):
            metrics = evaluate(unwrap(module))
        module.train()
        state.history.append({"step": state.step, "epoch": round(state.epoch, 4), **metrics})
        for cb in callbacks:
            cb.on_eval_end(state, metrics)

    for cb in callbacks:
        cb.on_fit_start(state)
    bar = tqdm(total=max_steps, initial=state.step, disable=not (cfg.progress and is_main()), dynamic_ncols=True,
               unit="step", desc="train", file=sys.stderr)
    module.train()
    window_loss, window_units, window_start = 0.0, 0, time.perf_counter()
    window_steps = 0
    bad_in_a_row = 0
    try:
        while state.step < max_steps and not state.should_stop:
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for k in range(cfg.grad_accum):
                batch = {key: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                         for key, v in data.batch(state.step * cfg.grad_accum + k).items()}
                sync = k == cfg.grad_accum - 1 or world_size == 1
                with grad_sync(model, sync), autocast(precision, device):
                    out = model(batch)
                    loss = out["loss"] / cfg.grad_accum
                    if world_size > 1 and "n_predictions" in out:  # weigh ranks by their predicted tokens
                        loss = loss * token_weight(int(out["n_predictions"]), world_size, device)
                loss.backward()
                step_loss += float(loss.detach())
                window_units += module.count(batch) * world_size
            if world_size > 1:  # log the loss of the global batch; every rank sees the same NaN check
                step_loss = mean_over_ranks(step_loss, device)
            fault = None if math.isfinite(step_loss) else f"loss {step_loss}"
            if fault is None and cfg.clip:
                norm = float(torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.clip))
                fault = None if math.isfinite(norm) else f"gradient norm {norm}"
            if fault is None:
                bad_in_a_row = 0
                optimizer.step()
                scheduler.step()
            else:
                bad_in_a_row += 1
                if cfg.on_nan != "skip" or bad_in_a_row > cfg.max_nan_skips:
                    raise UserError(_nan_message(state.step + 1, run_dir, fault, bad_in_a_row, cfg))
                # Skip: no update and no scheduler step, but the step (and so the data position) advances.
                optimizer.zero_grad(set_to_none=True)
                state.skipped_batches += 1
                if is_main():
                    tqdm.write(f"step {state.step + 1}: {fault}; batch skipped ({state.skipped_batches} so far)",
                               file=sys.stderr)
            state.step += 1
            if fault is None:
                state.last_loss = step_loss
                window_loss += step_loss
                window_steps += 1
            bar.update(1)
            logs = {"skipped_batches": state.skipped_batches, "fault": fault} if fault else {}
            if state.step % cfg.log_every == 0 or state.step == max_steps:
                elapsed = time.perf_counter() - window_start
                logs = {"loss": window_loss / window_steps if window_steps else float("nan"),
                        "lr": scheduler.get_last_lr()[0], rate_key: window_units / max(elapsed, 1e-9),
                        **({"skipped_batches": state.skipped_batches} if state.skipped_batches else {}),
                        **({"fault": fault} if fault else {})}
                bar.set_postfix({"loss": f"{logs['loss']:.4f}", "lr": f"{logs['lr']:.2e}",
                                 f"{module.unit}/s": f"{logs[rate_key]:,.0f}", **state.postfix})
                window_loss, window_units, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
            for cb in callbacks:
                cb.on_step_end(state, logs)
            paused = time.perf_counter()  # evaluation and checkpoints do not count against training throughput
            if state.step % eval_every == 0 and state.step != max_steps:
                run_eval()
            if run_dir is not None and cfg.save_every and state.step % cfg.save_every == 0:
                save(run_dir / f"step-{state.step:07d}", with_state=True)
                if is_main():
                    ckpt.prune_checkpoints(run_dir, cfg.keep_checkpoints)
            window_start += time.perf_counter() - paused
        if not state.history or state.history[-1]["step"] != state.step:
            run_eval()
    except KeyboardInterrupt:
        bar.close()
        if run_dir is not None:
            where = run_dir / f"step-{state.step:07d}"
            if where not in ckpt.step_checkpoints(run_dir):  # not already saved at this very step
                save(where, with_state=True)
            if is_main():
                print(f"\ninterrupted at step {state.step}; checkpoint saved to {where}. Continue with the same "
                      f"command and --resume auto.", file=sys.stderr)
        raise
    bar.close()
    for cb in callbacks:
        cb.on_fit_end(state)
    if run_dir is not None:
        save(run_dir / "final", with_state=False)
    return state


def _nan_message(step: int, run_dir: Path | None, fault: str, in_a_row: int, cfg: TrainConfig) -> str:
    where = ""
    if run_dir is not None and (found := ckpt.step_checkpoints(run_dir)):
        where = f" The last good checkpoint is {found[-1]} (resume from it with --resume auto)."
    what = (f"{in_a_row} batches in a row gave a NaN or infinite loss/gradient (more than max_nan_skips="
            f"{cfg.max_nan_skips}), the last at step {step} ({fault})" if cfg.on_nan == "skip"
            else f"the {fault.split()[0]} became NaN or infinite at step {step} ({fault})")
    skip = " or pass --on-nan skip to skip such batches" if cfg.on_nan != "skip" else ""
    return (f"{what}.{where} Lower the learning rate (--lr), keep gradient clipping on, use --precision fp32{skip}.")
