"""Fine-tuning from files: the function behind `transferlab finetune` (the facade does the work)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

from ..data.labeled import find_split, read_labeled
from ..errors import UserError
from ..fsutil import check_output_dir, clear_output_dir, write_json
from ..inputs import check_data_modality
from ..tasks.factory import checkpoint_modality, image_adaptation
from ..training.distributed import barrier, is_main
from ..transfer import from_pretrained
from ..transfer.methods import check_distributed


@dataclass
class FinetuneConfig:
    init: str  # a checkpoint directory, or "scratch" (then `like` names the architecture to copy)
    train: str
    out: str
    dev: str | None = None
    test: str | None = None  # a labeled test split: evaluated once, with the final model, after training
    like: str | None = None
    task: str | None = None  # classification | regression; None: inferred from the labels
    text_cols: list[str] | None = None
    label_col: str | None = None
    label_names: list[str] | None = None
    num_labels: int | None = None
    metrics: list[str] | None = None
    epochs: float = 3
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    schedule: str = "linear"
    max_len: int = 128
    seed: int = 0
    precision: str = "auto"
    skip_bad_rows: bool = False
    progress: bool = True
    method: str = "finetune"  # finetune | linear-probe | gradual-unfreeze | lora (transfer.methods)
    lora_rank: int = 8
    pooling: str | None = None  # mean | cls | last; None: the backbone's default (ModelConfig.default_pooling)
    device: str = "cpu"  # under torchrun, "cuda" is each rank's own GPU
    distributed: str = "ddp"  # under torchrun: "ddp" or "fsdp" (sharded, for models that do not fit one device)
    augment: str | None = None  # images: an augmentation recipe with overrides (data.augment); None: none
    image_size: tuple[int, int] | None = None  # images: resize every image to (H, W) when reading


def _read(path: str, split: str, cfg: FinetuneConfig, modality: str, task: str | None, label_names):
    """A split of the task's data, read the way the checkpoint's modality reads it."""
    check_data_modality(path, modality, "--train" if split == "train" else f"--{split}")
    if modality == "audio":
        from ..data.audio import read_audio
        from ..inputs import load_inputs
        from ..training.checkpoint import load_config

        if cfg.text_cols or cfg.augment or cfg.image_size:
            raise UserError("--text-cols, --augment and --image-size apply to text and image models; this "
                            "checkpoint reads audio (its mel settings come with it).")
        source = cfg.like if cfg.init == "scratch" else cfg.init
        settings = load_inputs(source, load_config(source)).settings
        return read_audio(path, split, settings=settings, label_names=label_names, label_col=cfg.label_col,
                          progress=cfg.progress)
    if modality == "image":
        from ..data.images import read_images

        if cfg.text_cols:
            raise UserError("--text-cols names text columns; an image model reads image files (a CSV's image path "
                            "column is found by name, or named with --label-col's sibling in Python: path_col).")
        return read_images(path, split, label_names=label_names, resize=cfg.image_size, label_col=cfg.label_col)
    if cfg.augment or cfg.image_size:
        raise UserError("--augment and --image-size apply to image models; this checkpoint reads text.")
    data = read_labeled(find_split(path, split), text_cols=cfg.text_cols, label_col=cfg.label_col, task=task,
                        label_names=label_names, skip_bad_rows=cfg.skip_bad_rows)
    if data.skipped:
        print(data.skipped_summary(), file=sys.stderr)
    return data


def finetune(cfg: FinetuneConfig, overwrite: bool = False):
    """Fine-tune and write RUN/{metrics.jsonl, final/, results.json}. Returns (History, results dict)."""
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
    if cfg.num_labels is not None and train.task == "classification" and cfg.num_labels < train.num_labels:
        raise UserError(f"--num-labels {cfg.num_labels} but {cfg.train} has {train.num_labels} labels "
                        f"{train.label_names}; raise --num-labels or fix the data.")
    model = from_pretrained(source, task=train.task, num_labels=cfg.num_labels or train.num_labels,
                            label_names=train.label_names, init=init, pooling=cfg.pooling, seed=cfg.seed,
                            max_len=cfg.max_len, verbose=cfg.progress and is_main(),
                            **image_adaptation(source, train))
    model.compile(lr=cfg.lr, metrics=cfg.metrics, weight_decay=cfg.weight_decay, warmup=cfg.warmup,
                  schedule=cfg.schedule, precision=cfg.precision, method=cfg.method,
                  method_options={"lora_rank": cfg.lora_rank} if cfg.method == "lora" else None)
    # Only now, with data and model validated, may --overwrite remove an earlier run.
    out = check_output_dir(cfg.out, overwrite, "fine-tuning output")
    barrier()  # under torchrun: every rank has checked before rank 0 clears and writes
    if is_main():
        clear_output_dir(cfg.out, overwrite, "fine-tuning output")
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "run.json", asdict(cfg))
    history = model.fit(train, validation_data=dev, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                        run_dir=out, verbose=cfg.progress, device=cfg.device,
                        distributed=cfg.distributed, augment=cfg.augment)
    results = {"init": init, "source": source, "method": cfg.method, "train_examples": len(train),
               "history": history.history}
    if dev is not None:
        metric = f"val_{model.compiled['metrics'][0]}"
        best_epoch, best = history.best(metric)
        results.update(final={k[4:]: v[-1] for k, v in history.history.items() if k.startswith("val_")},
                       best_epoch=best_epoch + 1, best={metric[4:]: best}, dev_examples=len(dev))
    if test is not None:
        results.update(test=model.evaluate(test), test_examples=len(test))
    if is_main():
        write_json(out / "results.json", results)
    return history, results
