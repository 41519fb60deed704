"""Self-describing checkpoint directories.

    DIR/config.json          backbone config + task config (+ label names) + tokenizer hash
    DIR/model.safetensors    weights, keys ``backbone.*`` and ``heads.<name>.*``; never pickle
    DIR/tokenizer.json       the tokenizer the weights were trained with
    DIR/trainer_state/       only for resumable training: state.json, optimizer.pt (tensors only), rng.safetensors

A directory is written under a temporary name and renamed when complete, so a directory named like a checkpoint
is always a whole checkpoint.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..fsutil import atomic_dir, read_json, write_json

FORMAT = "transferlab/1"
STEP_DIR = re.compile(r"^step-(\d+)$")


def save_checkpoint(directory: str | Path, module, tokenizer=None, trainer_state: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, extra: dict | None = None) -> Path:
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        config = {"format": FORMAT, "backbone": module.backbone.config.to_dict(), "task": module.task_config()}
        if tokenizer is not None:
            config["tokenizer_sha256"] = tokenizer.sha256
            tokenizer.save(tmp)
        config.update(extra or {})
        write_json(tmp / "config.json", config)
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        if trainer_state is not None:
            ts = tmp / "trainer_state"
            ts.mkdir()
            rng = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state()
            save_file(rng, str(ts / "rng.safetensors"))
            if optimizer is not None:
                torch.save(optimizer.state_dict(), ts / "optimizer.pt")
            if scheduler is not None:
                trainer_state = dict(trainer_state, scheduler=scheduler.state_dict())
            write_json(ts / "state.json", trainer_state)
    return directory


def load_config(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"checkpoint directory '{directory}' does not exist. Pass a directory written by "
                        f"`transferlab pretrain` or `finetune` (e.g. RUN/final).")
    config = read_json(directory / "config.json")
    if config.get("format") != FORMAT:
        raise UserError(f"'{directory / 'config.json'}' is not a transferlab checkpoint (format "
                        f"{config.get('format')!r}); convert Hugging Face checkpoints with `transferlab convert`.")
    return config


def load_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise UserError(f"'{path}' is missing; the checkpoint is incomplete.")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"cannot read weights '{path}': {e}. The file is corrupted or not safetensors.") from None


def load_trainer_state(directory: str | Path, optimizer=None, scheduler=None) -> dict:
    """Restore optimizer, scheduler and RNG; return state.json (step, samples seen, ...)."""
    ts = Path(directory) / "trainer_state"
    state = read_json(ts / "state.json")
    if optimizer is not None and (ts / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(ts / "optimizer.pt", weights_only=True, map_location="cpu"))
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    rng = load_file(str(ts / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return state


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / "trainer_state" / "state.json").is_file()]


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    for old in step_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
