"""Pretraining: data + objective + preset -> a run directory with step checkpoints and final/.

Text objectives (masked LM, causal LM, ...) read a prepared token corpus (``corpus``); image objectives (supervised
pretraining on a big labeled source) read a labeled image set (``data``); audio objectives (masked frames, APC) read
a folder of clips (``data``, set up in ``recipes/audio.py``). All then run the one training loop with the same run
directory, resume and checkpoint rules.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data.batches import BlockBatches
from ..data.blocks import PackedBlocks, TokenCorpus
from ..errors import UserError
from ..evaluation.predict import evaluate_lm
from ..fsutil import read_json, write_json
from ..inputs.text import Tokenizer
from ..models import ModelConfig, build_backbone, preset
from ..objectives import IMAGE_OBJECTIVES, OBJECTIVES, objective_modality
from ..training.checkpoint import check_weights, load_config, load_weights
from ..training.distributed import barrier, is_main, world
from ..training.fsdp import check_strategy
from ..training.loop import TrainConfig, train


@dataclass
class PretrainConfig:
    corpus: str | None = None  # text objectives: a prepared corpus (`transferlab corpus prepare`)
    out: str | None = None
    objective: str = "mlm"
    model: str | None = None  # a preset; None: "tiny" for text, "resnet-small" for images
    data: str | None = None  # image objectives: a labeled image set (idx directory, .npz, class folders, CSV)
    augment: str | None = None  # image objectives: an augmentation recipe with overrides; None: the objective's
    image_size: tuple[int, int] | None = None  # image objectives: resize every image to (H, W) when reading
    seq_len: int = 128
    batch_size: int = 32  # global: split across data-parallel ranks
    steps: int = 1000
    lr: float = 1e-3
    warmup: float = 0.06
    schedule: str = "linear"
    weight_decay: float = 0.01
    grad_accum: int = 1
    mask_prob: float | None = None  # None: the objective's own rate (MLM 0.15, PLM 1/6, ...)
    lm_head: str = "tied"  # or "bert" (transform + bias), see ModelConfig.lm_head
    norm: str = "pre"  # or "post" (BERT's; with lm_head="bert" the encoder can be exported with convert --to-hf)
    # Rotary positions (RoPE) by default: with BERT's learned position table a tiny encoder's masked-LM loss sat
    # near the unigram plateau for thousands of steps on real text (held-out 6.40 at step 500, 6.22 at 2,000),
    # with RoPE it was 5.38 at step 500 (docs/results/README.md). "learned" is needed to export to BERT/GPT-2.
    position: str = "rotary"
    # No dropout while pretraining: short CPU-scale runs underfit (Geiping & Goldstein 2022, "Cramming"), and it
    # more than doubled MLM tokens/s here (docs/performance.md). Fine-tuning turns it back on (dropout=0.1).
    dropout: float = 0.0
    eval_every: int | None = None
    eval_batches: int = 20
    save_every: int | None = None
    log_every: int = 10
    seed: int = 0
    precision: str = "auto"
    device: str = "cpu"
    progress: bool = True
    on_nan: str = "stop"  # or "skip": see TrainConfig.on_nan
    # Encoder-decoder objectives (bart, mass): the family check, decoder depth, and corruption settings.
    family: str | None = None  # None: the family the objective needs; anything else must match it
    decoder_layers: int | None = None  # None: as many as the encoder (the preset's layers)
    noise: dict | None = None  # bart: mask, delete, infill, permute, rotate, poisson_lambda; mass: span
    distributed: str = "ddp"  # under torchrun: "ddp" or "fsdp" (sharded, for models that do not fit one device)
    # A checkpoint to start from instead of random weights: continued pretraining on your own domain (DAPT/TAPT,
    # Gururangan et al. 2020). Its architecture and tokenizer are kept (model, lm_head, norm and position are then
    # not used); heads of the same objective are kept too, others start fresh.
    init: str | None = None
    # Audio objectives: mel settings as KEY=VALUE overrides (sample_rate, window, hop, n_mels, f_min, f_max); None:
    # 16 kHz, 25 ms windows every 10 ms, 80 mel bins (data.audio.MelSettings).
    mel: str | None = None

    def __post_init__(self):
        kind = objective_modality(self.objective)
        if self.model is None:
            self.model = DEFAULT_PRESET[kind]
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)


DEFAULT_PRESET = {"text": "tiny", "image": "resnet-small", "audio": "audio-mini"}

# Fields that may change when a run is resumed (they do not change what is being trained).
RESUMABLE_CHANGES = {"steps", "eval_every", "save_every", "log_every", "progress", "eval_batches", "device",
                     "precision", "out", "on_nan", "distributed"}  # out: a run directory may be moved or copied, then resumed


# Settings whose default changed when they became options: a run.json without them was trained this way.
FIELDS_BEFORE_THEY_EXISTED = {"position": "learned"}


def _check_run_dir(cfg: PretrainConfig, resume: bool, overwrite: bool) -> bool:
    """Decide whether to resume. Refuse to mix runs or clobber one."""
    out = Path(cfg.out)
    if not out.exists() or not any(out.iterdir()):
        return False
    if overwrite:
        if is_main():
            shutil.rmtree(out)
        return False
    if not resume:
        raise UserError(f"output directory '{out}' already holds a run. Pass --resume auto to continue it, "
                        f"--overwrite to replace it, or choose another --out.")
    saved_path = out / "run.json"
    if saved_path.is_file():
        saved = read_json(saved_path)
        # a field added since the run started: the run had the behaviour from before the field existed
        defaults = {**asdict(PretrainConfig(objective=cfg.objective)), **FIELDS_BEFORE_THEY_EXISTED}
        started = {k: saved.get(k, default) for k, default in defaults.items()}
        diffs = [k for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES and started[k] != v]
        if diffs:
            raise UserError(f"--resume: '{out}' was started with different settings "
                            f"({', '.join(f'{k}={started[k]!r}' for k in diffs)}). Use the same options, "
                            f"or a new --out.")
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


@dataclass
class _Setup:
    """What a modality's set-up gives the common part of ``pretrain``: the module, its preprocessor, how to make
    the training batches of this rank, how to evaluate, a line for the log, and what config.json records."""

    module: torch.nn.Module
    inputs: object
    batches: Callable  # (micro batch, rank, world size) -> a batch source for the loop
    evaluate: Callable | None
    summary: str
    record: dict


def pretrain(cfg: PretrainConfig, resume: bool = False, overwrite: bool = False, callbacks=()) -> Path:
    """Pretrain and return the final checkpoint directory (RUN/final); ``callbacks`` go to the training loop."""
    if not cfg.out:
        raise UserError("pretraining needs an output directory (--out RUN).")
    check_strategy(cfg.distributed)
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
        setup = _text_setup(cfg) if kind == "text" else _image_setup(cfg)
    resuming = _check_run_dir(cfg, resume, overwrite)
    barrier()  # every rank has looked at the run directory before rank 0 writes to it
    out = Path(cfg.out)
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        if not resuming:
            write_json(out / "run.json", asdict(cfg))
    micro = cfg.batch_size // cfg.grad_accum
    data = setup.batches(micro, rank, world_size)
    n_params = sum(p.numel() for p in setup.module.backbone.parameters())
    if is_main():
        what = f"{cfg.init} (continued)" if cfg.init else cfg.model
        print(f"pretraining {what} {setup.module.config.family} ({n_params / 1e6:.2f}M backbone parameters) with "
              f"{cfg.objective} on {setup.summary}", file=sys.stderr)
    train_cfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=cfg.warmup,
                            schedule=cfg.schedule, grad_accum=cfg.grad_accum, precision=cfg.precision,
                            log_every=cfg.log_every, eval_every=cfg.eval_every, save_every=cfg.save_every,
                            seed=cfg.seed, progress=cfg.progress, device=cfg.device, on_nan=cfg.on_nan,
                            distributed=cfg.distributed)
    record = {"objective": cfg.objective, "preset": None if cfg.init else cfg.model, "steps": cfg.steps,
              **setup.record, **({"init": str(cfg.init)} if cfg.init else {})}
    train(setup.module, data, train_cfg, evaluate=setup.evaluate, run_dir=out, inputs=setup.inputs,
          extra_config={"pretraining": record}, resume=resuming, callbacks=callbacks)
    return out / "final"


def _text_setup(cfg: PretrainConfig) -> _Setup:
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
        return BlockBatches(PackedBlocks(corpus, "train", block_len), corruption, micro, cfg.seed, rank, world_size)

    def evaluate(module):
        micro = cfg.batch_size // cfg.grad_accum
        heldout = BlockBatches(heldout_blocks, corruption, micro, seed=12345)
        return evaluate_lm(module, heldout, min(cfg.eval_batches, max(1, len(heldout_blocks) // micro)))

    summary = (f"{corpus.meta['splits']['train']['tokens']:,} tokens; {cfg.steps} steps of "
               f"{cfg.batch_size}x{cfg.seq_len}")
    return _Setup(module, tokenizer, batches, evaluate, summary, {"seq_len": cfg.seq_len, "corpus": str(cfg.corpus)})


# Held-out split of an image pretraining set, in order of preference (MNIST has test, MedMNIST val and test).
EVAL_SPLITS = ("val", "test")


def _image_setup(cfg: PretrainConfig) -> _Setup:
    from ..data.augment import Augment, augment_config
    from ..data.batches import ExampleBatches
    from ..data.images import has_split, read_images
    from ..evaluation.metrics import default_image_metrics
    from ..evaluation.predict import evaluate_classifier
    from ..inputs.image import ImageInputs
    from ..models import image_preset

    objective = IMAGE_OBJECTIVES[cfg.objective]
    text_only = {"corpus": cfg.corpus, "mask_prob": cfg.mask_prob, "noise": cfg.noise, "family": cfg.family,
                 "decoder_layers": cfg.decoder_layers}
    given = [f"--{k.replace('_', '-')}" for k, v in text_only.items() if v]
    if given:
        raise UserError(f"{', '.join(given)} apply to text objectives; --objective {cfg.objective} reads a labeled "
                        f"image set (--data).")
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
    torch.manual_seed(cfg.seed)
    module = objective.build(build_backbone(model_cfg), train_set)
    examples = inputs.examples(train_set, augment=augment)
    evaluate = None
    if heldout is not None:
        n_eval = min(len(heldout), cfg.eval_batches * cfg.batch_size)
        held = inputs.examples(heldout.subset(range(n_eval)))
        metrics = default_image_metrics(train_set.num_labels)

        def evaluate(module):
            return evaluate_classifier(module, held, metrics, batch_size=max(64, cfg.batch_size))

    def batches(micro: int, rank: int, world_size: int):
        return ExampleBatches(examples, micro * world_size, cfg.seed, rank, world_size)

    summary = (f"{len(train_set):,} images of {train_set.size[0]}x{train_set.size[1]}x{train_set.channels} "
               f"({train_set.num_labels} classes) from {cfg.data}; {cfg.steps} steps of {cfg.batch_size}; "
               f"augmentation {augment.cfg.to_dict() if augment.cfg.enabled else 'off'}"
               + (f"; evaluated on {heldout.source} ({min(len(heldout), cfg.eval_batches * cfg.batch_size)} images)"
                  if heldout is not None else "; no held-out split found (val or test), so no evaluation"))
    return _Setup(module, inputs, batches, evaluate, summary,
                  {"data": str(cfg.data), "augment": augment.cfg.to_dict(), "image_size": list(train_set.size)})


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
