"""The one training loop. Pretraining and fine-tuning both run through ``train``.

The loop knows nothing about objectives: it asks ``data.batch(i)`` for the i-th micro-batch, calls
``module(batch)["loss"]``, and handles everything around that: accumulation, clipping, schedule, precision,
periodic evaluation, checkpoints, resume, progress bar and metrics log.
"""

from __future__ import annotations

import dataclasses
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
from .budget import TimeBudget
from .callbacks import Callback, MetricsLog
from .distributed import grad_sync, is_main, mean_over_ranks, token_weight, unwrap, world
from .fsdp import full_state, load_model_state, load_optimizer_state, shard
from .optim import build_optimizer, build_scheduler, refit_scheduler
from .precision import autocast, configure_cpu, resolve_precision
from .settings import TrainSettings


# The loop's settings are the one training-settings dataclass (settings.py); TrainConfig is its old name.
TrainConfig = TrainSettings


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


def plan_steps(cfg: TrainSettings, micro_per_epoch: int | None) -> tuple[int, int | None]:
    """Total optimizer steps and steps per epoch (None for infinite streams) of a run over data with
    ``micro_per_epoch`` micro-batches per epoch: what the loop runs, and what a scheduler built outside it needs."""
    per_epoch = max(1, micro_per_epoch // cfg.grad_accum) if micro_per_epoch else None
    if cfg.steps is not None:
        return cfg.steps, per_epoch
    if cfg.epochs is None or per_epoch is None:
        raise UserError("give the number of steps (--steps) for a streaming corpus, or epochs for a finite dataset.")
    return max(1, math.ceil(cfg.epochs * per_epoch)), per_epoch


RESUME_HINT = "run the same command with --resume auto (from Python: the same call with resume=True)"


def train(module: torch.nn.Module, data, cfg: TrainSettings, *,
          evaluate: Callable[[torch.nn.Module], dict] | None = None, run_dir: str | Path | None = None, inputs=None,
          extra_config: dict | None = None, callbacks: list[Callback] = (), optimizer=None, scheduler=None,
          resume: bool = False, resume_hint: str = RESUME_HINT, started: Callable[[], None] | None = None,
          budget: TimeBudget | None = None) -> TrainState:
    """Train ``module`` on ``data`` (an object with ``batch(i) -> dict`` and ``steps_per_epoch``).

    ``module`` is a task module: ``module(batch)`` returns a dict with ``loss``, and ``module.count(batch)`` says
    how many units of input (``module.unit``: tokens, images, frames) a batch holds, for the throughput log.
    ``inputs`` is the preprocessor saved with every checkpoint.

    ``evaluate(module) -> {"loss": ..., ...}`` is called every ``eval_every`` steps and at the end. With
    ``run_dir``, metrics go to RUN/metrics.jsonl, step checkpoints to RUN/step-N/, the final model to RUN/final/;
    ``resume=True`` continues from the newest complete step checkpoint, and an interrupted run saves one and says
    how to continue (``resume_hint``: the command that does it). ``started()`` is called once, after the first
    optimizer step of this call: from then on the run has done work worth keeping. A callback with a
    ``state_key`` and ``state_dict()`` / ``load_state_dict()`` has its state saved in step checkpoints.

    ``budget`` (a ``TimeBudget``) sets the run's length from its own speed instead of ``cfg.steps`` / ``epochs``,
    and fits the loop's schedule to it (so no ``scheduler`` may be passed with it).
    """
    if cfg.device == "cpu":
        configure_cpu()
    device = torch.device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    _, world_size = world()
    # Sharded before .to(device) (fully_shard moves each rank's shards there: the full model need not fit the
    # device) and before the optimizer is built (it must hold the shards).
    if world_size > 1 and cfg.distributed == "fsdp":
        if optimizer is None and cfg.optimizer == "muon":
            raise UserError("--optimizer muon orthogonalises whole weight matrices, which FSDP splits across the "
                            "processes; use --distributed ddp with it, or --optimizer adamw with fsdp.")
        shard(module, device, optimizer)
    module.to(device)
    if budget is None:
        max_steps, per_epoch = plan_steps(cfg, getattr(data, "steps_per_epoch", None))
    else:
        if scheduler is not None:
            raise ValueError("a time budget fits the loop's own schedule to the run's length; pass no scheduler")
        per_epoch = plan_steps(dataclasses.replace(cfg, steps=1), getattr(data, "steps_per_epoch", None))[1]
        max_steps = budget.total or 100 * budget.calibrate  # provisional until the first estimate
    optimizer = optimizer or build_optimizer(module, cfg.lr, cfg.weight_decay, name=cfg.optimizer)
    scheduler = scheduler or build_scheduler(optimizer, cfg.schedule, max_steps, cfg.warmup, cfg.cooldown)
    run_dir = Path(run_dir) if run_dir is not None else None
    state = TrainState(module, optimizer, scheduler, max_steps, per_epoch, inputs, run_dir)
    rate_key = f"{module.unit}_per_s"  # tokens_per_s, images_per_s, ...
    eval_every = cfg.eval_every or per_epoch or max(1, max_steps // 10)  # a budget's estimates update it
    log_every = cfg.log_every or (max(1, per_epoch // 4) if per_epoch else 10)
    # A module with state besides its trained weights (BYOL's moving-average target) supplies the callbacks that
    # update it, so the loop never needs to know which objective it runs.
    callbacks = [*getattr(unwrap(module), "callbacks", list)(), *callbacks, *([budget] if budget else [])]
    log = None
    if run_dir is not None and is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(run_dir)
        callbacks.insert(0, log)
    say = (lambda text: print(text, file=sys.stderr)) if is_main() else (lambda text: None)

    if resume and run_dir is not None and is_main():
        remove_debris(run_dir)  # temporary names left by a write or delete that a crash cut short
    resumed_from = None
    if resume and run_dir is not None and (found := ckpt.step_checkpoints(run_dir, report=is_main())):
        resumed_from = found[-1]
        weights = ckpt.load_weights(resumed_from)
        ckpt.check_weights(unwrap(module).state_dict(), weights, resumed_from, "the model being trained")
        load_model_state(unwrap(module), weights)
        saved = ckpt.load_trainer_state(resumed_from, optimizer, scheduler,
                                        load_optimizer=lambda sd: load_optimizer_state(unwrap(module), optimizer, sd))
        if saved.get("step") != int(ckpt.STEP_DIR.match(resumed_from.name).group(1)):
            raise UserError(f"'{resumed_from}' records step {saved.get('step')!r} in trainer_state/state.json, but "
                            f"its name says step {int(resumed_from.name[5:])}: the checkpoint was renamed or its files "
                            f"mixed with another's. Delete it to resume from an earlier one.")
        state.step, state.history = saved["step"], saved.get("history", [])
        state.skipped_batches = saved.get("skipped_batches", 0)
        for cb in callbacks:
            if getattr(cb, "state_key", None) in saved.get("callbacks", {}):
                cb.load_state_dict(saved["callbacks"][cb.state_key])
        if log is not None:
            log.truncate_after(state.step)
        say(f"resumed from {resumed_from} at step {state.step}")
        if budget is not None and budget.total:
            refit_scheduler(scheduler, cfg.schedule, budget.total, cfg.warmup, cfg.cooldown)
            state.max_steps = budget.total
    elif resume and run_dir is not None:
        say(f"--resume auto: '{run_dir}' holds no complete step checkpoint (the run stopped before its first one), "
            f"so training starts over from step 0")
        if log is not None:
            log.truncate_after(0)
    no_saves = not cfg.save_every or (budget is None and cfg.save_every >= max_steps)
    if run_dir is not None and cfg.progress and no_saves:
        length = f"{max_steps} steps" if budget is None else "a time budget"
        say(f"no step checkpoints will be written (--save-every {cfg.save_every or 'not set'}, {length}): "
            f"Ctrl-C or SIGTERM still saves one to resume from, but a crash or kill -9 loses the run")
    first_step = state.step

    model = module
    if world_size > 1 and cfg.distributed == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(module)

    def save(directory: Path, with_state: bool) -> None:
        # sharded (FSDP): every rank takes part in gathering the full state; rank 0 writes it in the usual format
        weights, optimizer_state = full_state(unwrap(module), optimizer if with_state else None)
        if not is_main():
            return
        trainer_state = None
        if with_state:
            trainer_state = {"step": state.step, "history": state.history, "skipped_batches": state.skipped_batches}
            kept = {cb.state_key: cb.state_dict() for cb in callbacks if getattr(cb, "state_key", None)}
            if kept:
                trainer_state["callbacks"] = kept
        try:
            ckpt.save_checkpoint(directory, unwrap(module), inputs, trainer_state,
                                 optimizer if with_state else None, scheduler if with_state else None, extra_config,
                                 weights=weights, optimizer_state=optimizer_state)
        except UserError as e:  # disk full, read-only: say which checkpoint is still good
            found = ckpt.step_checkpoints(run_dir)
            last = (f" The last complete checkpoint is {found[-1]}; after fixing this, {resume_hint} to continue "
                    f"from it." if found else "")
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

    def follow_budget(eval_every: int) -> int:
        """Set the run's length to what fits in the time budget at its speed so far (until the budget fixes it),
        with the schedule, the progress bar and the default evaluation interval; returns the interval."""
        was_estimated = budget.total is not None
        if (total := budget.estimate(state.step)) is None:
            return eval_every
        if world_size > 1:  # every rank must run the same number of steps
            total = round(mean_over_ranks(float(total), device))
        budget.set_total(total, state.step)
        refit_scheduler(scheduler, cfg.schedule, total, cfg.warmup, cfg.cooldown)
        state.max_steps = bar.total = total
        bar.refresh()
        if is_main() and cfg.progress and (not was_estimated or budget.frozen):
            tqdm.write(budget.describe(), file=sys.stderr)
        return eval_every if cfg.eval_every or per_epoch else max(1, total // 10)

    for cb in callbacks:
        cb.on_fit_start(state)
    # A bar redraws itself with carriage returns: in a log file that is one unreadable line. Without a terminal the
    # loop prints one plain line per log interval instead.
    terminal = sys.stderr.isatty()
    bar = tqdm(total=None if budget is not None and not budget.total else state.max_steps, initial=state.step,
               disable=not (cfg.progress and is_main() and terminal),
               dynamic_ncols=True, unit="step", desc="train", file=sys.stderr)
    lines = cfg.progress and is_main() and not terminal
    run_start = time.perf_counter()
    module.train()
    window_loss, window_units, window_start = 0.0, 0, time.perf_counter()
    window_steps = 0
    bad_in_a_row = 0
    try:
        while state.step < state.max_steps and not state.should_stop:
            step_start = budget.now() if budget else 0.0
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
                    raise UserError(_nan_message(state.step + 1, run_dir, fault, bad_in_a_row, cfg, resume_hint))
                # Skip: no update and no scheduler step, but the step (and so the data position) advances.
                optimizer.zero_grad(set_to_none=True)
                state.skipped_batches += 1
                if is_main():
                    tqdm.write(f"step {state.step + 1}: {fault}; batch skipped ({state.skipped_batches} so far)",
                               file=sys.stderr)
            state.step += 1
            if state.step == first_step + 1 and started is not None:
                started()
            if budget is not None:
                budget.add(budget.now() - step_start)
                if budget.steps_timed == budget.calibrate or state.step % log_every == 0:
                    eval_every = follow_budget(eval_every)
            if fault is None:
                state.last_loss = step_loss
                window_loss += step_loss
                window_steps += 1
            bar.update(1)
            logs = {"skipped_batches": state.skipped_batches, "fault": fault} if fault else {}
            if state.step % log_every == 0 or state.step == state.max_steps:
                elapsed = time.perf_counter() - window_start
                logs = {"loss": window_loss / window_steps if window_steps else float("nan"),
                        "lr": scheduler.get_last_lr()[0], rate_key: window_units / max(elapsed, 1e-9),
                        **({"skipped_batches": state.skipped_batches} if state.skipped_batches else {}),
                        **({"fault": fault} if fault else {})}
                bar.set_postfix({"loss": f"{logs['loss']:.4f}", "lr": f"{logs['lr']:.2e}",
                                 f"{module.unit}/s": f"{logs[rate_key]:,.0f}", **state.postfix})
                if lines:
                    print(_log_line(state, logs, rate_key, module.unit, time.perf_counter() - run_start, first_step),
                          file=sys.stderr, flush=True)
                window_loss, window_units, window_steps, window_start = 0.0, 0, 0, time.perf_counter()
            for cb in callbacks:
                cb.on_step_end(state, logs)
            paused = time.perf_counter()  # evaluation and checkpoints do not count against training throughput
            if state.step % eval_every == 0 and state.step != state.max_steps:
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
        if run_dir is not None and state.step > first_step:
            where = run_dir / f"step-{state.step:07d}"
            if where not in ckpt.step_checkpoints(run_dir):  # not already saved at this very step
                save(where, with_state=True)
            say(f"\ninterrupted at step {state.step}; checkpoint saved to {where}. To continue, {resume_hint}.")
        elif resumed_from is not None:
            say(f"\ninterrupted before step {state.step + 1}; {resumed_from} is still the newest checkpoint. To "
                f"continue, {resume_hint}.")
        raise
    bar.close()
    for cb in callbacks:
        cb.on_fit_end(state)
    if run_dir is not None:
        save(run_dir / "final", with_state=False)
    return state


def _log_line(state: TrainState, logs: dict, rate_key: str, unit: str, elapsed: float, first_step: int) -> str:
    """One plain progress line (for logs written to a file): step, loss, lr, throughput, time left."""
    done = state.step - first_step
    left = elapsed / done * (state.max_steps - state.step) if done else 0.0
    line = (f"step {state.step}/{state.max_steps} loss {logs['loss']:.4f} lr {logs['lr']:.2e} "
            f"{unit}/s {logs[rate_key]:,.0f} elapsed {_clock(elapsed)} left {_clock(left)}")
    if state.steps_per_epoch:
        line = f"epoch {state.epoch:.2f} " + line
    return line


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _nan_message(step: int, run_dir: Path | None, fault: str, in_a_row: int, cfg: TrainSettings,
                 resume_hint: str = RESUME_HINT) -> str:
    where = ""
    if run_dir is not None and (found := ckpt.step_checkpoints(run_dir)):
        where = f" The last good checkpoint is {found[-1]} (to resume from it, {resume_hint})."
    what = (f"{in_a_row} batches in a row gave a NaN or infinite loss/gradient (more than max_nan_skips="
            f"{cfg.max_nan_skips}), the last at step {step} ({fault})" if cfg.on_nan == "skip"
            else f"the {fault.split()[0]} became NaN or infinite at step {step} ({fault})")
    skip = " or pass --on-nan skip to skip such batches" if cfg.on_nan != "skip" else ""
    return (f"{what}.{where} Lower the learning rate (--lr), keep gradient clipping on, use --precision fp32{skip}.")
