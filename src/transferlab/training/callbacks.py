"""Callbacks: four events, explicit state. ``EarlyStopping`` and ``ModelCheckpoint`` are the Keras ones."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ..errors import UserError


class Callback:
    """Override any of the four events. ``state`` is the loop's ``TrainState``."""

    def on_fit_start(self, state) -> None: ...
    def on_step_end(self, state, logs: dict) -> None: ...
    def on_eval_end(self, state, metrics: dict) -> None: ...
    def on_fit_end(self, state) -> None: ...


def _monitored(metrics: dict, monitor: str) -> float:
    key = monitor.removeprefix("val_")
    if key not in metrics:
        raise UserError(f"callback monitors '{monitor}' but evaluation reports only {sorted(metrics)}; "
                        f"set monitor= to one of those (optionally prefixed 'val_').")
    return float(metrics[key])


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "min" if monitor.removeprefix("val_") in ("loss", "ppl") else "max"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` evaluations; optionally restore the best weights."""

    def __init__(self, monitor: str = "val_loss", patience: int = 2, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = _mode(monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.best, self.wait, self.best_state, self.stopped_step = None, 0, None, None

    def on_eval_end(self, state, metrics):
        value = _monitored(metrics, self.monitor)
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_state = {k: v.detach().clone() for k, v in state.module.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                state.should_stop = True
                self.stopped_step = state.step

    def on_fit_end(self, state):
        if self.restore_best_weights and self.best_state is not None:
            state.module.load_state_dict(self.best_state)


class ModelCheckpoint(Callback):
    """Save a checkpoint directory after each evaluation (or only when ``monitor`` improves)."""

    def __init__(self, directory: str | Path, monitor: str = "val_loss", save_best_only: bool = True,
                 mode: str = "auto", inputs=None):
        self.directory = Path(directory)
        self.monitor, self.save_best_only = monitor, save_best_only
        self.mode = _mode(monitor, mode)
        self.inputs = inputs
        self.best = None

    def on_eval_end(self, state, metrics):
        from .checkpoint import save_checkpoint

        value = _monitored(metrics, self.monitor)
        if self.save_best_only and not _improved(value, self.best, self.mode, 0.0):
            return
        self.best = value
        save_checkpoint(self.directory, state.module, self.inputs or state.inputs,
                        extra={"saved_at_step": state.step, self.monitor: value})


class MetricsLog(Callback):
    """Append every train/eval row to RUN/metrics.jsonl (and TensorBoard when it is installed)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.start = time.time()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                pass

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so curves are not duplicated."""
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        self.path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")

    def write(self, state, split: str, values: dict) -> None:
        row = {"step": state.step, "split": split, "time": round(time.time() - self.start, 3),
               "epoch": round(state.epoch, 4)}
        # JSON has no NaN: a non-finite value is logged as null (the fault column says what happened).
        row.update({k: (float(v) if math.isfinite(v) else None) if isinstance(v, (int, float)) else v
                    for k, v in values.items()})
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{split}/{k}", v, state.step)

    def on_step_end(self, state, logs):
        if logs:
            self.write(state, "train", logs)

    def on_eval_end(self, state, metrics):
        self.write(state, "eval", metrics)

    def on_fit_end(self, state):
        if self.tb is not None:
            self.tb.close()
