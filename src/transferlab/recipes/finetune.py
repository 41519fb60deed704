"""Fine-tuning from files: the function behind `transferlab finetune` (the facade does the work)."""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path

from ..data.labeled import FILES_PER_CLASS, find_split, label_warnings, read_labeled
from ..errors import UserError
from ..fsutil import ProvisionalDir, read_json, write_json
from ..inputs import check_data_modality
from ..options import changed_settings
from ..tasks.factory import checkpoint_modality, image_adaptation
from ..training.distributed import barrier, is_main
from ..training.loop import RESUME_HINT
from ..training.optim import default_lr_line
from ..training.settings import BEFORE_OPTIMIZER
from ..transfer import from_pretrained
from ..transfer.methods import check_distributed
from .settings import FinetuneConfig

__all__ = ["FinetuneConfig", "finetune"]

# Settings that may differ when a run is resumed: they change how it is watched and where it runs, not what it learns.
RESUMABLE_CHANGES = {"progress", "device", "out", "save_every", "keep_checkpoints", "log_every", "precision",
                     "on_nan", "max_nan_skips", "distributed"}


def _say(text: str) -> None:
    if is_main():
        print(text, file=sys.stderr)


def _read(path: str, split: str, cfg: FinetuneConfig, modality: str, task: str | None, label_names):
    """A split of the task's data, read the way the checkpoint's modality reads it."""
    option = "--train" if split == "train" else f"--{split}"
    if cfg.format != FILES_PER_CLASS:
        check_data_modality(path, modality, option)
    text_only = [flag for flag, given in (("--text-cols", cfg.text_cols), ("--no-header", not cfg.header),
                                          ("--format", cfg.format != "auto"), ("--encoding", cfg.encoding != "utf-8"),
                                          ("--coarse-labels", cfg.coarse_labels)) if given]
    if modality == "audio":
        from ..data.audio import read_audio
        from ..inputs import load_inputs
        from ..training.checkpoint import load_config

        given = text_only + [flag for flag, on in (("--augment", cfg.augment), ("--image-size", cfg.image_size))
                             if on]
        if given:
            raise UserError(f"{', '.join(given)} apply to text and image models; this checkpoint reads audio (its "
                            f"mel settings come with it; a CSV's clip column is found by name, or named with "
                            f"--path-col).")
        source = cfg.like if cfg.init == "scratch" else cfg.init
        settings = load_inputs(source, load_config(source)).settings
        return read_audio(path, split, settings=settings, label_names=label_names, label_col=cfg.label_col,
                          path_col=cfg.path_col, progress=cfg.progress)
    if modality == "image":
        from ..data.images import read_images

        if text_only:
            raise UserError(f"{', '.join(text_only)} apply to text files; an image model reads image files (a CSV's "
                            f"image column is found by name, or named with --path-col).")
        return read_images(path, split, label_names=label_names, resize=cfg.image_size, label_col=cfg.label_col,
                           path_col=cfg.path_col)
    image_only = [flag for flag, given in (("--augment", cfg.augment), ("--image-size", cfg.image_size),
                                           ("--path-col", cfg.path_col)) if given]
    if image_only:
        raise UserError(f"{', '.join(image_only)} apply to image models; this checkpoint reads text.")
    data = read_labeled(path if cfg.format == FILES_PER_CLASS else find_split(path, split), task=task,
                        label_names=label_names, **cfg.text_options())
    for line in [data.skipped_summary(), *data.notes]:
        if line:
            _say(f"note: {line}")
    return data


def _run_dir(cfg: FinetuneConfig, recorded: dict, overwrite: bool, resume: bool) -> bool:
    """Whether to resume; refuses to clobber a run, or to resume one started with other settings."""
    out = Path(cfg.out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if resume:
            _say(f"--resume auto: '{out}' holds no run yet, so a new one starts")
        return False
    if not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a directory for the fine-tuning run.")
    if resume:
        if (out / "run.json").is_file():
            diffs = changed_settings(recorded, read_json(out / "run.json"), BEFORE_OPTIMIZER, RESUMABLE_CHANGES)
            if diffs:
                raise UserError(f"--resume: '{out}' was started with different settings ({', '.join(diffs)}). Use "
                                f"the same options, or a new --out.")
        return True
    if not overwrite:
        raise UserError(f"fine-tuning output directory '{out}' already exists and is not empty. Pass --resume auto "
                        f"to continue the run in it, --overwrite to replace it, or choose another --out.")
    return False


def finetune(cfg: FinetuneConfig, overwrite: bool = False, resume: bool = False, resume_hint: str = RESUME_HINT):
    """Fine-tune and write RUN/{run.json, metrics.jsonl, final/, results.json}. Returns (History, results dict).

    ``resume``: continue the run in ``cfg.out`` from its newest step checkpoint (saved every ``save_every`` steps,
    and when the run is interrupted); ``resume_hint``: what an interrupted run tells the user to do."""
    check_distributed(cfg.method, cfg.distributed)
    if cfg.init == "scratch":
        if not cfg.like:
            raise UserError("--init scratch needs --like DIR: the checkpoint whose architecture and tokenizer the "
                            "from-scratch twin copies (its weights are not used).")
        source, init = cfg.like, "scratch"
    else:
        source, init = cfg.init, "pretrained"
    modality = checkpoint_modality(source)
    train = _read(cfg.train, "train", cfg, modality, cfg.task, cfg.label_names)
    dev = _read(cfg.dev, "dev", cfg, modality, train.task, train.label_names) if cfg.dev else None
    test = _read(cfg.test, "test", cfg, modality, train.task, train.label_names) if cfg.test else None
    suspicious = label_warnings(train, dev)
    if suspicious and cfg.strict_labels:
        raise UserError(" ".join(f"{w}." for w in suspicious) + " (--strict-labels refuses such data.)")
    for warning in suspicious:
        _say(f"warning: {warning} (--strict-labels refuses such data).")
    if cfg.num_labels is not None and train.task == "classification" and cfg.num_labels < train.num_labels:
        raise UserError(f"--num-labels {cfg.num_labels} but {cfg.train} has {train.num_labels} labels "
                        f"{train.label_names}; raise --num-labels or fix the data.")
    model = from_pretrained(source, task=train.task, num_labels=cfg.num_labels or train.num_labels,
                            label_names=train.label_names, init=init, pooling=cfg.pooling, seed=cfg.seed,
                            max_len=cfg.max_len, verbose=cfg.progress and is_main(),
                            **image_adaptation(source, train))
    recorded = cfg
    if modality == "text" and model.max_len != cfg.max_len:
        # The settings a run records are the ones it ran with.
        _say(f"note: {model.max_len_note}; run.json records max_len={model.max_len}.")
        recorded = replace(cfg, max_len=model.max_len)
    model.compile(settings=cfg, metrics=cfg.metrics, method=cfg.method,
                  method_options={"lora_rank": cfg.lora_rank} if cfg.method == "lora" else None)
    if cfg.lr is None:  # chosen from the model: said even with --quiet, and recorded as the lr the run used
        lr = model.compiled.settings.lr
        _say(default_lr_line(lr, model.inputs.modality, getattr(model.module.config, "d_model", None)))
        recorded = replace(recorded, lr=lr)
    # Only now, with data and model validated, is the output directory looked at.
    resuming = _run_dir(cfg, asdict(recorded), overwrite, resume)
    out = Path(cfg.out)
    barrier()  # under torchrun: every rank has checked before rank 0 writes
    # Until the first step, a failure leaves the directory as it was (a replaced run comes back).
    with ProvisionalDir(out, replace=overwrite and not resuming, active=is_main()) as guard:
        if is_main() and not resuming:
            write_json(out / "run.json", asdict(recorded))
        history = model.fit(train, validation_data=dev, run_dir=out, resume=resuming, resume_hint=resume_hint,
                            started=guard.commit, augment=cfg.augment)
        results = {"init": init, "source": source, "method": cfg.method, "train_examples": len(train),
                   "history": history.history}
        if dev is not None:
            metric = f"val_{model.compiled.metrics[0]}"
            best, value = history.best(metric)
            epoch = history.eval_epochs[best] if best < len(history.eval_epochs) else best + 1
            results.update(final={k[4:]: v[-1] for k, v in history.history.items() if k.startswith("val_")},
                           best_epoch=int(epoch) if float(epoch).is_integer() else epoch, best={metric[4:]: value},
                           dev_examples=len(dev))
        if test is not None:
            results.update(test=model.evaluate(test), test_examples=len(test))
        if is_main():
            write_json(out / "results.json", results)
    return history, results
