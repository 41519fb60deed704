"""Self-describing checkpoint directories.

    DIR/config.json          backbone config + task config (+ label names) + the preprocessor's record ("inputs")
    DIR/model.safetensors    weights, keys ``backbone.*`` and ``heads.<name>.*``; never pickle
    DIR/tokenizer.json       text: the tokenizer the weights were trained with (an image preprocessor has no file)
    DIR/trainer_state/       only for resumable training: state.json, optimizer.pt (tensors only), rng.safetensors
    DIR/complete.json        written last: every file's size, so a partial copy is caught (see ``check_complete``)

A directory is written under a temporary name, fsynced and renamed when complete, so a directory named like a
checkpoint is always a whole checkpoint; ``complete.json`` is the marker that says so, checked by every loader.
Nothing in a checkpoint is executed: weights are safetensors, configs JSON, and ``optimizer.pt`` is read with
``torch.load(weights_only=True)``, which refuses any pickled object other than tensors and plain containers.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..fsutil import atomic_dir, read_json, remove_tree, write_json

FORMAT = "transferlab/1"
STEP_DIR = re.compile(r"^step-(\d+)$")
MARKER = "complete.json"


def save_checkpoint(directory: str | Path, module, inputs=None, trainer_state: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, extra: dict | None = None, *,
                    weights: dict | None = None, optimizer_state: dict | None = None) -> Path:
    """Write ``module`` (and, with ``trainer_state``, what resuming needs) as a checkpoint directory, with the
    preprocessor ``inputs`` (``inputs/``: a tokenizer, an image preprocessor) it reads its data through.

    ``weights`` / ``optimizer_state``: full state dicts gathered by the caller (an FSDP-sharded module), used
    instead of ``module.state_dict()`` / ``optimizer.state_dict()``.
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        config = {"format": FORMAT, "backbone": module.backbone.config.to_dict(), "task": module.task_config()}
        if inputs is not None:
            config.update(inputs.record())
            inputs.save(tmp)
        config.update(extra or {})
        write_json(tmp / "config.json", config)
        state = {k: v.detach().contiguous().cpu() for k, v in (weights or module.state_dict()).items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        if trainer_state is not None:
            ts = tmp / "trainer_state"
            ts.mkdir()
            rng = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state()
            save_file(rng, str(ts / "rng.safetensors"))
            if optimizer is not None:
                torch.save(optimizer_state or optimizer.state_dict(), ts / "optimizer.pt")
            if scheduler is not None:
                trainer_state = dict(trainer_state, scheduler=scheduler.state_dict())
            write_json(ts / "state.json", trainer_state)
        _write_marker(tmp)
    return directory


def _write_marker(directory: Path) -> None:
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            full = Path(root) / name
            files[full.relative_to(directory).as_posix()] = full.stat().st_size
    write_json(directory / MARKER, {"format": FORMAT, "files": dict(sorted(files.items()))})


def check_complete(directory: str | Path) -> str | None:
    """Why ``directory`` is not a whole checkpoint, or None when it is.

    A checkpoint written by this version carries ``complete.json`` listing every file with its size; each must
    be present with exactly that size. Older checkpoints have no marker; they were renamed into place only when
    whole, so for them ``config.json`` and ``model.safetensors`` being present is taken as the evidence.
    """
    directory = Path(directory)
    marker = directory / MARKER
    if not marker.is_file():
        missing = [n for n in ("config.json", "model.safetensors") if not (directory / n).is_file()]
        return f"{missing[0]} is missing" if missing else None
    try:
        files = read_json(marker)["files"]
        for name, size in files.items():
            path = directory / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {size} were written"
    except (UserError, KeyError, TypeError, AttributeError):
        return f"{MARKER} is unreadable"
    return None


def check_weights(expected: dict, weights: dict, directory, what: str = "its config.json") -> None:
    """Refuse weights whose keys, shapes or dtypes differ from ``expected`` (a state dict), naming the keys."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    common = sorted(set(expected) & set(weights))
    wrong = [k for k in common if expected[k].shape != weights[k].shape]
    dtypes = [k for k in common if k not in wrong and expected[k].dtype != weights[k].dtype]
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if unexpected:
        parts.append(f"unexpected {unexpected[:5]}" + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5
                                                        else ""))
    if wrong:
        parts.append("shape mismatch " + ", ".join(
            f"{k} {tuple(weights[k].shape)} vs expected {tuple(expected[k].shape)}" for k in wrong[:5]))
    if dtypes:
        parts.append("dtype mismatch " + ", ".join(
            f"{k} {weights[k].dtype} vs expected {expected[k].dtype}" for k in dtypes[:5]))
    if parts:
        raise UserError(f"weights in '{directory}' do not match {what}: {'; '.join(parts)}. The checkpoint is "
                        f"corrupted, or its files come from different runs or models.")


_UNMARKED_SEEN: set[str] = set()


def load_config(directory: str | Path) -> dict:
    """A checkpoint's config.json, after checking that the directory is a whole checkpoint (its completeness
    marker) and that the config's fields have the types they must have."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"checkpoint directory '{directory}' does not exist. Pass a directory written by "
                        f"`transferlab pretrain` or `finetune` (e.g. RUN/final).")
    if not (directory / "config.json").is_file() and _is_run_dir(directory):
        steps = sorted(p.name for p in directory.iterdir() if STEP_DIR.match(p.name))
        found = ", ".join(n for n in ["final" if (directory / "final").is_dir() else "", *steps[-2:]] if n)
        raise UserError(f"'{directory}' is a run directory, not a checkpoint; use {directory}/final (the finished "
                        f"model) or {directory}/step-N (a step checkpoint)" + (f". It holds: {found}." if found
                                                                                else "; it holds neither yet."))
    reason = check_complete(directory)
    if reason is not None:
        raise UserError(f"checkpoint '{directory}' is incomplete: {reason}. It was cut short while being written "
                        f"or copied; copy it again, or use another checkpoint.")
    if not (directory / MARKER).is_file() and str(directory.resolve()) not in _UNMARKED_SEEN:
        # Trusted, since old versions renamed a checkpoint into place only when whole, but not silently.
        _UNMARKED_SEEN.add(str(directory.resolve()))
        print(f"warning: checkpoint '{directory}' has no {MARKER}, so a truncated file in it cannot be detected "
              f"(written by a transferlab from before the marker, or copied without it). If it was copied, copy "
              f"it whole again.", file=sys.stderr)
    config = read_json(directory / "config.json")
    if config.get("format") != FORMAT:
        raise UserError(f"'{directory / 'config.json'}' is not a transferlab checkpoint (format "
                        f"{config.get('format')!r}); convert Hugging Face checkpoints with `transferlab convert`.")
    check_config_types(config, directory / "config.json")
    return config


def _is_run_dir(directory: Path) -> bool:
    return (directory / "run.json").is_file() or (directory / "final").is_dir() or \
        any(STEP_DIR.match(p.name) for p in directory.iterdir())


# What config.json's top level and task entry must hold: field -> (types, what to write there).
_CONFIG_TYPES = {"backbone": (dict, "a mapping"), "task": (dict, "a mapping"), "max_len": (int, "a whole number"),
                 "label_names": ((list, type(None)), "a list of names"),
                 "tokenizer_sha256": (str, "text (a hex digest)"), "inputs": (dict, "a mapping"),
                 "pairs": (bool, "true or false")}
_TASK_TYPES = {"kind": (str, "text"), "num_labels": (int, "a whole number"),
               "label_names": ((list, type(None)), "a list of names"), "pooling": ((str, type(None)), "text")}


def check_config_types(config: dict, where) -> None:
    """Refuse a config.json whose fields have the wrong types (a hand edit, another tool), naming the field."""
    def bad(name: str, value, what: str) -> UserError:
        return UserError(f"'{where}': field {name} must be {what}, got {json.dumps(value)[:60]} "
                         f"({type(value).__name__}). The file was edited by hand or written by another tool; fix "
                         f"that field, or write the checkpoint again.")

    for name, (types, what) in _CONFIG_TYPES.items():
        value = config.get(name)
        if name in config and (not isinstance(value, types) or isinstance(value, bool) and types is int):
            raise bad(name, value, what)
    for name in ("backbone", "task"):
        if name not in config:
            raise UserError(f"'{where}' has no {name} entry; it is not a whole transferlab config.json. Write the "
                            f"checkpoint again.")
    task = config["task"]
    for name, (types, what) in _TASK_TYPES.items():
        value = task.get(name)
        if name in task and (not isinstance(value, types) or isinstance(value, bool) and types is int):
            raise bad(f"task.{name}", value, what)
    for names_at in ("label_names",):
        for owner, prefix in ((config, ""), (task, "task.")):
            names = owner.get(names_at)
            if isinstance(names, list) and not all(isinstance(n, (str, int)) for n in names):
                raise bad(prefix + names_at, names, "a list of names")
    names, n = task.get("label_names"), task.get("num_labels")
    if isinstance(names, list) and isinstance(n, int) and names and len(names) != n:
        raise UserError(f"'{where}': task.label_names lists {len(names)} labels but task.num_labels is {n}; the "
                        f"head has {n} outputs. Fix one of them, or write the checkpoint again.")


def refusal_reason(e: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words. torch's own message advises loading it
    with ``weights_only=False`` or allow-listing the object, which would run whatever the file holds: never
    repeated here."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it holds a pickled object, {found.group(1)}, where only tensors belong"
    if "Weights only load failed" in text:
        return "it holds pickled objects other than tensors"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"unreadable: {first[:200]}"


def load_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    path = Path(directory) / "model.safetensors"
    if not path.is_file():
        raise UserError(f"'{path}' is missing; the checkpoint is incomplete.")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f"cannot read weights '{path}': {e}. The file is corrupted or not safetensors.") from None


def load_trainer_state(directory: str | Path, optimizer=None, scheduler=None, load_optimizer=None) -> dict:
    """Restore optimizer, scheduler and RNG; return state.json (step, samples seen, ...).

    ``load_optimizer(state_dict)``: how to put the saved optimizer state in place (default
    ``optimizer.load_state_dict``; an FSDP run shards it).
    """
    ts = Path(directory) / "trainer_state"
    state = read_json(ts / "state.json")
    if optimizer is not None and (ts / "optimizer.pt").is_file():
        try:
            # weights_only=True: an object other than tensors and plain containers is refused, never built.
            saved = torch.load(ts / "optimizer.pt", weights_only=True, map_location="cpu")
        except Exception as e:  # UnpicklingError for a foreign object; others for a corrupt file
            raise UserError(f"refusing '{ts / 'optimizer.pt'}': it is not a plain tensor file ({refusal_reason(e)}). "
                            f"Nothing in it was executed. Delete that checkpoint directory and resume from an earlier "
                            f"one, or start a new run.") from None
        try:
            (load_optimizer or optimizer.load_state_dict)(saved)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise UserError(f"'{ts / 'optimizer.pt'}' does not fit this model's optimizer ({e}). The checkpoint "
                            f"comes from a different model or optimizer; resume with the options it was made with.") \
                from None
        match_parameter_layout(optimizer)
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    try:
        rng = load_file(str(ts / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
    except Exception as e:  # safetensors' own errors, a missing key, a tensor of the wrong type
        raise UserError(f"cannot restore the random state from '{ts / 'rng.safetensors'}' ({e}); the checkpoint "
                        f"is corrupted. Resume from an earlier one.") from None
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return state


def match_parameter_layout(optimizer) -> None:
    """Give every optimizer state tensor its parameter's memory layout.

    A loaded state keeps the layout it was saved in, and the fused CPU AdamW walks a parameter and its moments as
    flat memory: moments saved contiguous (e.g. by a run from before the ResNet kept its weights channels-last)
    would silently update the wrong elements of a channels-last weight. Sharded (DTensor) state is left as it is.
    """
    for p, state in optimizer.state.items():
        if hasattr(p, "placements"):  # a DTensor shard: FSDP placed its state itself
            continue
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def step_checkpoints(run_dir: str | Path, report: bool = False) -> list[Path]:
    """Complete step checkpoints of a run, oldest first; with ``report``, say on stderr which were passed over."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    complete = []
    for _, p in sorted(found):
        reason = check_complete(p)
        if reason is None and not (p / "trainer_state" / "state.json").is_file():
            reason = "trainer_state/state.json is missing"
        if reason is None:
            complete.append(p)
        elif report:
            print(f"ignoring incomplete checkpoint {p}: {reason}", file=sys.stderr)
    return complete


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    # remove_tree renames before deleting: a delete cut short never leaves a partial step-N behind.
    for old in step_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        remove_tree(old)
