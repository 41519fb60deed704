"""Pretraining: data + objective + preset -> a run directory with step checkpoints and final/.

Text objectives (masked LM, causal LM, ...) read a prepared token corpus (``corpus``); image objectives (supervised
pretraining on a big labeled source) read a labeled image set (``data``); audio objectives (masked frames, APC) read
a folder of clips (``data``, set up in ``recipes/audio.py``). All then run the one training loop with the same run
directory, resume and checkpoint rules.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from ..data.batches import BlockBatches
from ..data.blocks import PackedBlocks, TokenCorpus
from ..errors import UserError
from ..evaluation.predict import evaluate_lm
from ..fsutil import ProvisionalDir, read_json, write_json
from ..inputs.text import Tokenizer
from ..models import ModelConfig, build_backbone, preset
from ..objectives import IMAGE_OBJECTIVES, OBJECTIVES, objective_modality
from ..training.checkpoint import check_weights, load_config, load_weights
from ..training.distributed import barrier, is_main, world
from ..options import changed_settings
from ..training.callbacks import ShowOnProgressBar
from ..training.budget import TimeBudget
from ..training.loop import RESUME_HINT, train
from ..training.optim import default_lr_line, default_pretrain_lr
from .settings import DEFAULT_PRESET, PretrainConfig  # noqa: F401  (PretrainConfig is imported from here too)


# Fields that may change when a run is resumed (they do not change what is being trained). out: a run directory may
# be moved or copied, then resumed.
RESUMABLE_CHANGES = {"steps", "epochs", "eval_every", "save_every", "keep_checkpoints", "log_every", "progress",
                     "eval_batches", "device", "precision", "out", "on_nan", "max_nan_skips", "distributed"}


# Settings whose default changed when they became options: a run.json without them was trained this way.
FIELDS_BEFORE_THEY_EXISTED = {"position": "learned"}


def _check_run_dir(cfg: PretrainConfig, resume: bool, overwrite: bool) -> bool:
    """Decide whether to resume. Refuse to mix runs or clobber one (``--overwrite`` replaces a run only once the new
    one has taken its first step: see ``pretrain``)."""
    out = Path(cfg.out)
    if not out.exists() or not any(out.iterdir()):
        if resume and is_main():
            print(f"--resume auto: '{out}' holds no run yet, so a new one starts", file=sys.stderr)
        return False
    if overwrite and not resume:
        return False
    if not resume:
        raise UserError(f"output directory '{out}' already holds a run. Pass --resume auto to continue it, "
                        f"--overwrite to replace it, or choose another --out.")
    saved_path = out / "run.json"
    if saved_path.is_file():
        # a field added since the run started: the run had the behaviour from before the field existed
        defaults = {**asdict(PretrainConfig(objective=cfg.objective)), **FIELDS_BEFORE_THEY_EXISTED}
        diffs = changed_settings(asdict(cfg), read_json(saved_path), defaults, RESUMABLE_CHANGES)
        if diffs:
            raise UserError(f"--resume: '{out}' was started with different settings ({', '.join(diffs)}). Use the "
                            f"same options, or a new --out.")
    return True


def _check_family(cfg: PretrainConfig, family: str) -> None:
    """Refuse settings that do not fit the backbone family the objective trains."""
    if cfg.family is not None and cfg.family != family:
        raise UserError(f"--objective {cfg.objective} trains a '{family}' backbone, but --family {cfg.family} was "
                        f"given. Drop --family, or pick an objective for a '{cfg.family}' (mlm: encoder, clm: "
                        f"decoder, bart and mass: encoder_decoder).")
    if cfg.decoder_layers is not None and (family != "encoder_decoder" or cfg.decoder_layers < 1):
        raise UserError(f"--decoder-layers {cfg.decoder_layers}: only encoder-decoder objectives (bart, mass) have "
                        f"decoder layers, and they need at least one.")
    if cfg.noise and family != "encoder_decoder":
        raise UserError(f"--noise sets the corruption of bart and mass; --objective {cfg.objective} does not take "
                        f"it (masked LM takes --mask-prob).")


def run_length(cfg: PretrainConfig) -> str:
    """"1000 steps", or "a 30-minute budget of steps", for the line that says what a run will do."""
    return f"a {cfg.time_budget:g}-minute budget of steps" if cfg.time_budget else f"{cfg.steps} steps"


@dataclass
class PretrainSetup:
    """What a modality's set-up gives the common part of ``pretrain``: the module, its preprocessor, how to make
    the training batches of this rank, how to evaluate, a line for the log, and what config.json records."""

    module: torch.nn.Module
    inputs: object
    batches: Callable  # (micro batch, rank, world size) -> a batch source for the loop
    evaluate: Callable | None
    summary: str
    record: dict
    shown: dict = field(default_factory=dict)  # evaluation metrics to show on the progress bar: key -> short name


def pretrain(cfg: PretrainConfig, resume: bool = False, overwrite: bool = False, callbacks=(),
             resume_hint: str = RESUME_HINT) -> Path:
    """Pretrain and return the final checkpoint directory (RUN/final); ``callbacks`` go to the training loop,
    ``resume_hint`` is what an interrupted run tells the user to do (the CLI passes the command that resumes)."""
    if not cfg.out:
        raise UserError("pretraining needs an output directory (--out RUN).")
    rank, world_size = world()
    if cfg.batch_size % (world_size * cfg.grad_accum):
        raise UserError(f"--batch-size {cfg.batch_size} must be divisible by world size x --grad-accum "
                        f"({world_size} x {cfg.grad_accum}).")
    # Everything is read, built and checked before the run directory is touched: a bad setting must not leave a
    # run.json behind.
    kind = objective_modality(cfg.objective)
    if cfg.mel and kind != "audio":
        raise UserError(f"--mel sets how audio becomes log-mel features; --objective {cfg.objective} reads {kind}.")
    if kind == "audio":
        from .audio import audio_setup

        setup = audio_setup(cfg)
    else:
        setup = text_setup(cfg) if kind == "text" else image_setup(cfg)
    if cfg.lr is None:  # a transformer's: from the width of the model just built (an --init checkpoint's too)
        d_model = setup.module.config.d_model
        cfg = replace(cfg, lr=default_pretrain_lr(d_model))
        if is_main():
            print(default_lr_line(cfg.lr, "text", d_model), file=sys.stderr)
    resuming = _check_run_dir(cfg, resume, overwrite)
    barrier()  # every rank has looked at the run directory before rank 0 writes to it
    out = Path(cfg.out)
    # Until the first step, a failure (NaN at step 1, Ctrl-C during start-up) leaves the directory as it was.
    with ProvisionalDir(out, replace=overwrite and not resuming, active=is_main()) as guard:
        if is_main() and not resuming:
            write_json(out / "run.json", asdict(cfg))
        micro = cfg.batch_size // cfg.grad_accum
        data = setup.batches(micro, rank, world_size)
        n_params = sum(p.numel() for p in setup.module.backbone.parameters())
        if is_main():
            what = f"{cfg.init} (continued)" if cfg.init else cfg.model
            print(f"pretraining {what} {setup.module.config.family} ({n_params / 1e6:.2f}M backbone parameters) "
                  f"with {cfg.objective} on {setup.summary}", file=sys.stderr)
        record = {"objective": cfg.objective, "preset": None if cfg.init else cfg.model,
                  **({"time_budget_minutes": cfg.time_budget} if cfg.time_budget else {"steps": cfg.steps}),
                  **setup.record, **({"init": str(cfg.init)} if cfg.init else {})}
        shown = [ShowOnProgressBar(setup.shown)] if setup.shown else []
        budget = TimeBudget(cfg.time_budget, cfg.budget_clock) if cfg.time_budget else None
        state = train(setup.module, data, cfg, evaluate=setup.evaluate, run_dir=out, inputs=setup.inputs,
                      extra_config={"pretraining": record}, resume=resuming, callbacks=[*shown, *callbacks],
                      resume_hint=resume_hint, started=guard.commit, budget=budget)
        if budget is not None and is_main():
            print(budget.outcome(state.step), file=sys.stderr)
    return out / "final"


def text_setup(cfg: PretrainConfig) -> PretrainSetup:
    """The module, tokenizer, batches and held-out evaluation ``pretrain`` builds for a text objective. Public so that
    a benchmark can train another implementation on exactly these batches and score it the same way
    (benchmarks/time_to_quality.py)."""
    family, module_cls, corruption_factory = OBJECTIVES[cfg.objective]
    _check_family(cfg, family)
    if cfg.data or cfg.augment or cfg.image_size:
        raise UserError(f"--data, --augment and --image-size are for image objectives "
                        f"({', '.join(IMAGE_OBJECTIVES)}); --objective {cfg.objective} reads a prepared text corpus "
                        f"(--corpus).")
    if not cfg.corpus:
        raise UserError(f"--objective {cfg.objective} reads a prepared text corpus: pass --corpus DIR (made by "
                        f"`transferlab corpus prepare`).")
    corpus = TokenCorpus(cfg.corpus)
    tokenizer = Tokenizer.load(Path(cfg.corpus) / "tokenizer.json")
    corpus.check_tokenizer(tokenizer)
    init_weights = None
    if cfg.init:
        model_cfg, init_weights = _init_config(cfg, family, corpus)
    else:
        model_cfg = preset(cfg.model, family, tokenizer.vocab_size, max_len=max(512, cfg.seq_len),
                           dropout=cfg.dropout, pad_id=tokenizer.pad_id, lm_head=cfg.lm_head,
                           n_dec_layer=cfg.decoder_layers or 0, norm=cfg.norm, position=cfg.position)
    if cfg.seq_len < 8 or cfg.seq_len > model_cfg.max_len:
        raise UserError(f"--seq-len {cfg.seq_len} must be between 8 and {model_cfg.max_len}.")
    corruption = corruption_factory(tokenizer, mask_prob=cfg.mask_prob, seq_len=cfg.seq_len, noise=cfg.noise,
                                    decoder_start=model_cfg.decoder_start_id)  # a converted BART's, when --init
    block_len = corruption.block_len(cfg.seq_len)
    torch.manual_seed(cfg.seed)
    module = module_cls(build_backbone(model_cfg))
    if init_weights is not None:  # checked here, before the run directory is touched; when resuming, the loop then
        _load_init(module, init_weights, cfg.init)  # loads the newer step checkpoint over these weights
    heldout_blocks = PackedBlocks(corpus, "heldout", block_len)

    def batches(micro: int, rank: int, world_size: int):
        return BlockBatches(PackedBlocks(corpus, "train", block_len), corruption, global_batch=micro, seed=cfg.seed,
                            rank=rank, world_size=world_size)

    def evaluate(module):
        micro = cfg.batch_size // cfg.grad_accum
        heldout = BlockBatches(heldout_blocks, corruption, global_batch=micro, seed=12345)
        return evaluate_lm(module, heldout, min(cfg.eval_batches, max(1, len(heldout_blocks) // micro)))

    summary = (f"{corpus.meta['splits']['train']['tokens']:,} tokens; {run_length(cfg)} of "
               f"{cfg.batch_size}x{cfg.seq_len}")
    return PretrainSetup(module, tokenizer, batches, evaluate, summary, {"seq_len": cfg.seq_len, "corpus": str(cfg.corpus)})


# Held-out split of an image pretraining set, in order of preference (MNIST has test, MedMNIST val and test).
EVAL_SPLITS = ("val", "test")
# The self-supervised monitor's kNN bank: labeled training images, evenly spaced, at most this many (MNIST's 60k
# would cost a minute per evaluation on one core; 10k keep it to seconds).
MONITOR_BANK = 10_000
MONITOR_SEED = 12345  # the views and masks of the held-out loss: the same at every evaluation
OPTION_FLAGS = {"temperature": "--temperature", "momentum": "--momentum", "mask_ratio": "--mask-ratio",
                "decoder_layers": "--decoder-layers"}


def image_setup(cfg: PretrainConfig) -> PretrainSetup:
    from ..data.augment import Augment, augment_config
    from ..data.batches import ExampleBatches
    from ..data.images import has_split, read_images
    from ..evaluation.metrics import default_image_metrics
    from ..evaluation.predict import evaluate_classifier
    from ..inputs.image import ImageInputs
    from ..models import image_preset

    objective = IMAGE_OBJECTIVES[cfg.objective]
    text_only = {"corpus": cfg.corpus, "mask_prob": cfg.mask_prob, "noise": cfg.noise, "family": cfg.family,
                 "decoder_layers": cfg.decoder_layers if "decoder_layers" not in objective.options else None}
    given = [f"--{k.replace('_', '-')}" for k, v in text_only.items() if v]
    if given:
        raise UserError(f"{', '.join(given)} apply to text objectives; --objective {cfg.objective} reads a labeled "
                        f"image set (--data).")
    _check_image_options(cfg, objective)
    if not cfg.data:
        raise UserError(f"--objective {cfg.objective} reads images: pass --data PATH (an MNIST idx directory, a "
                        f"MedMNIST .npz, a folder with a sub-folder per class, or a CSV of path,label).")
    if cfg.init:
        raise UserError("--init (continued pretraining) is for text objectives so far; start image pretraining "
                        "from a preset (--model).")
    augment = Augment(augment_config(cfg.augment if cfg.augment is not None else objective.augment))
    train_set = read_images(cfg.data, "train", require_labels=objective.needs_labels, resize=cfg.image_size)
    split = next((s for s in EVAL_SPLITS if has_split(cfg.data, s)), None)
    heldout = None if split is None else read_images(cfg.data, split, label_names=train_set.label_names,
                                                     require_labels=objective.needs_labels, resize=cfg.image_size)
    inputs = ImageInputs.fit(train_set)
    model_cfg = image_preset(cfg.model, in_channels=train_set.channels, image_size=train_set.size,
                             dropout=cfg.dropout)
    if model_cfg.family not in objective.families:
        raise UserError(f"--objective {cfg.objective} trains {' or '.join(objective.families)} backbones, but "
                        f"--model {cfg.model} is a {model_cfg.family}. "
                        + ("MAE masks patches of a Vision Transformer and encodes only the visible ones; a "
                           "convolutional backbone has no patches to leave out. Use --model vit-tiny, vit-mini or "
                           "vit-small, or --objective simclr / byol for a ResNet." if cfg.objective == "mae" else
                           f"Choose a {objective.families[0]} preset."))
    torch.manual_seed(cfg.seed)
    options = {name: getattr(cfg, name) for name in objective.options}
    module = objective.build(build_backbone(model_cfg), train_set, **options)
    views = getattr(module, "views", 0)
    if views and not augment.cfg.enabled:
        raise UserError(f"--augment {cfg.augment}: {cfg.objective} learns by matching two augmented views of each "
                        f"image, and with every augmentation off the two views are identical, so there is nothing "
                        f"to learn. Use the objective's recipe (leave --augment out: '{objective.augment}') or "
                        f"turn some augmentation on, e.g. --augment {objective.augment},blur=0.")
    _check_min_batch(cfg, module)
    corruption = module.corruption() if hasattr(module, "corruption") else None
    examples = replace(inputs.examples(train_set, augment=augment), views=views, corruption=corruption)
    evaluate, shown = None, {}
    held_set = None if heldout is None else heldout.subset(range(min(len(heldout),
                                                                     cfg.eval_batches * cfg.batch_size)))
    if objective.module is not None:
        evaluate = _ssl_monitor(cfg, inputs, train_set, held_set, augment, views, corruption)
        shown = {"knn_accuracy": "knn", "embedding_std": "std"}
    elif held_set is not None:
        held = inputs.examples(held_set)
        metrics = default_image_metrics(train_set.num_labels)

        def evaluate(module):
            return evaluate_classifier(module, held, metrics, batch_size=max(64, cfg.batch_size))

    def batches(micro: int, rank: int, world_size: int):
        return ExampleBatches(examples, micro * world_size, cfg.seed, rank, world_size)

    classes = f"{train_set.num_labels} classes" if train_set.labels is not None else "unlabeled"
    if objective.module is not None and train_set.labels is not None:
        classes += ", labels used only by the monitor"
    summary = (f"{len(train_set):,} images of {train_set.size[0]}x{train_set.size[1]}x{train_set.channels} "
               f"({classes}) from {cfg.data}; {run_length(cfg)} of {cfg.batch_size}"
               + (f" x {views} views" if views else "")
               + f"; augmentation {augment.cfg.to_dict() if augment.cfg.enabled else 'off'}"
               + (f"; evaluated on {heldout.source} ({min(len(heldout), cfg.eval_batches * cfg.batch_size)} images)"
                  if heldout is not None else "; no held-out split found (val or test)"
                  + ("" if objective.module is not None else ", so no evaluation")))
    record = {"data": str(cfg.data), "augment": augment.cfg.to_dict(), "image_size": list(train_set.size)}
    return PretrainSetup(module, inputs, batches, evaluate, summary, record, shown)


def _check_image_options(cfg: PretrainConfig, objective) -> None:
    """Refuse a self-supervised setting the objective does not take (it would be silently ignored)."""
    wrong = [flag for name, flag in OPTION_FLAGS.items()
             if name != "decoder_layers" and getattr(cfg, name) is not None and name not in objective.options]
    if wrong:
        takes = {o: [n for n, ob in IMAGE_OBJECTIVES.items() if o in ob.options] for o in OPTION_FLAGS}
        which = "; ".join(f"{OPTION_FLAGS[o]}: {', '.join(takes[o])}" for o in OPTION_FLAGS
                          if OPTION_FLAGS[o] in wrong)
        raise UserError(f"{', '.join(wrong)} do(es) not apply to --objective {cfg.objective} ({which}). Leave "
                        f"{'it' if len(wrong) == 1 else 'them'} out.")


def _check_min_batch(cfg: PretrainConfig, module) -> None:
    """A batch too small for the objective's loss to mean anything (SimCLR's negatives) is a UserError."""
    least = getattr(module, "min_batch", 1)
    micro = cfg.batch_size // (cfg.grad_accum * world()[1])  # what one forward pass sees
    if micro < least:
        raise UserError(f"--batch-size {cfg.batch_size} gives {micro} images per forward pass (batch size / "
                        f"--grad-accum / processes), too few for {cfg.objective}: "
                        + ("its loss contrasts each view with the other views of the batch, 2(B - 1) negatives, "
                           "and SimCLR's features get steadily worse as the batch shrinks (Chen et al. 2020). "
                           if cfg.objective == "simclr" else "its BatchNorms need more than one image. ")
                        + f"Use at least {least} images per pass (--batch-size {least * cfg.grad_accum * world()[1]} "
                          f"or more; 256 or more is better).")


def _ssl_monitor(cfg: PretrainConfig, inputs, train_set, held_set, augment, views: int, corruption) -> Callable:
    """The self-supervised pretraining monitor: ``evaluate(module) -> metrics`` with

    - ``loss``: the objective's loss on held-out images, their views or masks drawn from a fixed seed (the same at
      every evaluation, so the curve moves only with the weights);
    - ``knn_accuracy``: weighted kNN (k = 20, T = 0.07, cosine, as solo-learn and lightly) of the frozen, pooled
      backbone features, with the labeled training images (unaugmented, at most MONITOR_BANK, evenly spaced) as
      the bank and the held-out split as queries; leave-one-out within whichever of the two has labels when only
      one has; left out when neither has;
    - ``embedding_std``: the spread of the normalised held-out features (collapse shows as ~0).

    Without a held-out split, the loss and the spread come from the first training images.
    """
    from ..evaluation.protocols import embedding_std, extract_features, knn_evaluate

    bank = None
    if train_set.labels is not None:
        bank = train_set.subset(range(0, len(train_set), max(1, -(-len(train_set) // MONITOR_BANK))))
    first = train_set.subset(range(min(len(train_set), cfg.eval_batches * cfg.batch_size)))
    spread_set = held_set if held_set is not None else first
    losses = replace(inputs.examples(spread_set, augment=augment), views=views, corruption=corruption)
    batch_size = max(64, cfg.batch_size)

    def evaluate(module):
        device = next(module.parameters()).device
        total, count = 0.0, 0
        for i, start in enumerate(range(0, len(losses), cfg.batch_size)):
            idx = range(start, min(start + cfg.batch_size, len(losses)))
            if len(idx) < getattr(module, "min_batch", 1):
                break  # a short last batch would pose another (easier) contrastive task
            batch = {k: v.to(device) for k, v in losses.collate(idx, seed=MONITOR_SEED + i).items()}
            total, count = total + float(module(batch)["loss"]) * len(idx), count + len(idx)
        metrics = {"loss": total / count} if count else {}
        spread = extract_features(module, inputs.examples(spread_set), batch_size)
        labeled = spread_set is held_set and held_set.labels is not None
        if bank is not None:
            bank_features = extract_features(module, inputs.examples(bank), batch_size)
            if labeled:
                knn = knn_evaluate(bank_features, bank.labels, spread, held_set.labels, train_set.num_labels)
            else:
                knn = knn_evaluate(bank_features, bank.labels, bank_features, bank.labels, train_set.num_labels,
                                   exclude_self=True)
            metrics["knn_accuracy"] = knn["accuracy"]
        elif labeled:
            metrics["knn_accuracy"] = knn_evaluate(spread, held_set.labels, spread, held_set.labels,
                                                   len(held_set.label_names), exclude_self=True)["accuracy"]
        metrics["embedding_std"] = embedding_std(spread)
        return metrics

    return evaluate


def _init_config(cfg: PretrainConfig, family: str, corpus: TokenCorpus) -> tuple[ModelConfig, dict]:
    """The architecture and weights of the checkpoint a continued run starts from, after checking that its family
    and tokenizer fit the objective and the corpus (the weights are checked against the model by _load_init)."""
    config = load_config(cfg.init)
    backbone = config["backbone"]
    if backbone["family"] != family:
        raise UserError(f"--init '{cfg.init}' holds a '{backbone['family']}' backbone, but --objective "
                        f"{cfg.objective} trains a '{family}' one. Start from a checkpoint of that family, or pick an "
                        f"objective that trains a '{backbone['family']}'.")
    if config.get("tokenizer_sha256") != corpus.tokenizer_sha256:
        raise UserError(f"--init '{cfg.init}' was trained with a different tokenizer than corpus '{cfg.corpus}', so "
                        f"the same ids would mean different words. Prepare the corpus with the checkpoint's "
                        f"tokenizer: `transferlab corpus prepare --tokenizer {cfg.init} ...`.")
    if cfg.decoder_layers is not None:
        raise UserError("--decoder-layers cannot change the architecture of an --init checkpoint; leave it out.")
    return ModelConfig.from_dict({**backbone, "dropout": cfg.dropout}), load_weights(cfg.init)


def _load_init(module: torch.nn.Module, weights: dict, source: str) -> None:
    """The backbone weights of the --init checkpoint (all checked), and its heads where the objective has the
    same ones (an MLM checkpoint continued with MLM keeps its LM head; ELECTRA gets fresh ones)."""
    own = module.state_dict()
    check_weights({k: v for k, v in own.items() if k.startswith("backbone.")},
                  {k: v for k, v in weights.items() if k.startswith("backbone.")}, source)
    kept = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(kept, strict=False)
    fresh = sorted({k.split(".")[1] for k in own if k.startswith("heads.") and k not in kept})
    if is_main():
        n_heads = sum(k.startswith("heads.") for k in kept)
        print(f"starting from {source}: {len(kept) - n_heads} backbone tensors, {n_heads} head tensors kept"
              + (f"; fresh heads: {', '.join(fresh)}" if fresh else ""), file=sys.stderr)
