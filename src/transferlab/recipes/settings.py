"""The recipe configs: what `transferlab pretrain`, `finetune` and `seq2seq train` take, declared once.

Each config inherits the training settings (``training/settings.py``) and adds the recipe's data and model fields,
so it keeps the flat keyword API (``PretrainConfig(corpus=..., steps=..., lr=...)``), is validated field by field
when it is built (from Python exactly as from the command line, which is generated from these fields by
``cli_args.py``), and goes to the training loop as it is. A recipe changes a training default in its bases line
(``defaults={"lr": 1e-3}``) without restating the field's help.

This module stays light (no torch) so that the command line can be built from it quickly; checks that need the
model code import it inside ``check``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..data.labeled import ReadOptions
from ..errors import UserError
from ..options import Settings, option, option_like
from ..training.settings import BUDGET_CLOCKS, FinetuneSettings, TrainSettings

# The pretraining recipe's defaults by modality. Text: the winner of issue 20's sweep at equal CPU time (Muon for the
# trunk's matrices and a warm-up-stable-decay schedule, batch 64; docs/results/cpuhour.md); images and audio keep
# the recipe their results were measured with (AdamW, linear decay, batch 32, lr 1e-3). Text's lr follows the width
# (training.optim.default_pretrain_lr), chosen once the model is built.
# word2vec and ELMo have no attention blocks for Muon to orthogonalise and keep the other recipe too.
PRETRAIN_RECIPE = {"transformer": {"batch_size": 64, "optimizer": "muon", "schedule": "wsd"},
                   "other": {"batch_size": 32, "optimizer": "adamw", "schedule": "linear", "lr": 1e-3}}
NOT_TRANSFORMERS = ("word2vec", "elmo")
# The preset a pretraining run uses when --model is not given, per modality.
DEFAULT_PRESET = {"text": "tiny", "image": "resnet-small", "audio": "audio-mini", "mae": "vit-mini"}  # MAE needs a ViT
METHODS = ("finetune", "linear-probe", "gradual-unfreeze", "lora")  # transfer.methods.METHODS
POOLINGS = ("cls", "mean", "last")  # heads.POOLINGS


def parse_noise(text: str) -> dict[str, float]:
    """"infill=0.3,permute=1" -> {"infill": 0.3, "permute": 1.0}"""
    out = {}
    for item in (v.strip() for v in text.split(",") if v.strip()):
        key, sep, number = item.partition("=")
        try:
            out[key.strip()] = float(number)
        except ValueError:
            raise ValueError(f"'{item}' is not KEY=NUMBER (e.g. infill=0.3,permute=1)") from None
        if not sep:
            raise ValueError(f"'{item}' is not KEY=NUMBER (e.g. infill=0.3,permute=1)")
    return out


@dataclass(kw_only=True)
class PretrainConfig(TrainSettings, defaults={"steps": 1000, "log_every": 10, "save_every": 1000}):
    """`transferlab pretrain`: an objective on a prepared text corpus, or supervised on a labeled image set.

    The recipe's batch, optimizer and schedule default by modality (``check``: ``PRETRAIN_RECIPE``); the learning
    rate, for text, by the model's width, once the model is built (``recipes.pretrain``)."""

    # None: the modality's, filled in by check(); text's was chosen by issue 20's sweep (docs/results/cpuhour.md).
    batch_size: int | None = option_like(TrainSettings, "batch_size",
                                         default_text="text 64; images, audio, word2vec and elmo 32")
    optimizer: str | None = option_like(TrainSettings, "optimizer",
                                        default_text="text muon (adamw under --distributed fsdp); images, audio, "
                                                     "word2vec and elmo adamw")
    schedule: str | None = option_like(TrainSettings, "schedule",
                                       default_text="text wsd; images, audio, word2vec and elmo linear")
    lr: float | None = option_like(TrainSettings, "lr", default_text="text: from the model width, 3e-3 up to "
                                                                     "d_model 256 down to 1e-4 at 768; images, "
                                                                     "audio, word2vec and elmo 1e-3")

    corpus: str | None = option(None, "text objectives: a directory written by `transferlab corpus prepare`",
                                metavar="DIR")
    data: str | None = option(None, "image objectives: labeled images (an MNIST idx directory, a MedMNIST .npz, a "
                                    "folder with a sub-folder per class, or a CSV of path,label); audio objectives: "
                                    "a folder of WAV/FLAC clips (labels, if any, are ignored)", metavar="PATH")
    out: str | None = option(None, "the run directory (step checkpoints, final/, metrics.jsonl, run.json)",
                             metavar="RUN")
    objective: str = option("mlm", "text: mlm (BERT, encoder), clm (GPT, decoder), plm (XLNet), mpnet, electra "
                                   "(encoder), bart or mass (encoder-decoder), word2vec (word vectors), elmo "
                                   "(bidirectional LSTM); images: supervised (a classifier on the labels, e.g. MNIST "
                                   "standing in for ImageNet); self-supervised (labels ignored, read only by the kNN "
                                   "monitor): simclr, byol (ResNet or ViT), mae (ViT); audio: masked-frames (speech "
                                   "BERT: reconstruct masked spans of log-mel frames) or apc (speech GPT: predict the "
                                   "frames 40 ms ahead, causal)")
    model: str | None = option(None, "preset: text tiny, mini, small, medium, base; images resnet-tiny, resnet-mini, "
                                     "resnet-small, resnet18, vit-tiny, vit-mini, vit-small; audio audio-tiny, "
                                     "audio-mini, audio-small",
                               default_text="tiny for text, resnet-small for images, vit-mini for mae, audio-mini "
                                            "for audio")
    augment: str | None = option(None, "images: an augmentation recipe (none, light, xray) with KEY=VALUE "
                                       "overrides, e.g. xray,rotation=5,hflip=1 (flips are off by default: left and "
                                       "right matter on X-rays)", default_text="the objective's own")
    image_size: tuple[int, int] | None = option(None, "images: resize every image to H,W while reading",
                                                at_least=1, metavar="H,W", default_text="as stored")
    seq_len: int = option(128, "tokens per training block", unit="tokens", at_least=8)
    mask_prob: float | None = option(None, "corruption rate (mlm, mpnet, electra, plm)", above=0, below=1,
                                     default_text="the objective's own: 0.15, plm 1/6")
    lm_head: str = option("tied", "the LM head: the tied embedding alone, or BERT's transform + bias",
                          choices=("tied", "bert"))
    norm: str = option("pre", "encoder LayerNorm placement; post (with --lm-head bert) is BERT's, exportable with "
                              "`convert --to-hf`", choices=("pre", "post"))
    # Rotary positions (RoPE) by default: with BERT's learned position table a tiny encoder's masked-LM loss sat
    # near the unigram plateau for thousands of steps on real text (held-out 6.40 at step 500, 6.22 at 2,000),
    # with RoPE it was 5.38 at step 500 (docs/results/README.md). "learned" is needed to export to BERT/GPT-2.
    position: str = option("rotary", "rotary (RoPE in attention; leaves the early plateau much faster) or learned "
                                     "(BERT/GPT-2's position table, needed for `convert --to-hf`)",
                           choices=("rotary", "learned"))
    # No dropout while pretraining: short CPU-scale runs underfit (Geiping & Goldstein 2022, "Cramming"), and it
    # more than doubled MLM tokens/s here (docs/performance.md). Fine-tuning turns it back on (dropout=0.1).
    dropout: float = option(0.0, "dropout while pretraining", at_least=0, below=1)
    eval_batches: int = option(20, "batches of held-out data per evaluation", at_least=1)
    # A budget in time rather than steps: "the best model an hour buys". The run times its steps and sets its length
    # (and so the schedule's) from its own speed: training.budget.
    time_budget: float | None = option(None, "train for this many minutes instead of --steps: the run measures its "
                                             "speed and fits the number of steps and the schedule to the budget "
                                             "(evaluations and checkpoints are not counted)", unit="minutes",
                                       above=0, default_text="none: --steps decides")
    budget_clock: str = option("wall", "what --time-budget counts: wall-clock time, or this process's CPU time "
                                       "(CPU-minutes: its threads add up)", choices=BUDGET_CLOCKS)
    # Encoder-decoder objectives (bart, mass): the family check, decoder depth, and corruption settings.
    family: str | None = option(None, "check the backbone family", choices=("encoder", "decoder", "encoder_decoder"),
                                default_text="the one the objective needs")
    decoder_layers: int | None = option(None, "bart/mass: decoder blocks; mae: decoder blocks", at_least=1,
                                        default_text="bart/mass: as many as the encoder; mae: 2")
    noise: dict | None = option(None, "bart: mask, delete, infill, permute, rotate rates and poisson_lambda, e.g. "
                                      "infill=0.3,permute=1; mass: span=0.5; masked-frames: span=4 (positions of "
                                      "40 ms); apc: shift=1 (positions ahead)", parse=parse_noise,
                                metavar="KEY=X[,KEY=X]", default_text="the objective's own")
    # A checkpoint to start from instead of random weights: continued pretraining on your own domain (DAPT/TAPT,
    # Gururangan et al. 2020). Its architecture and tokenizer are kept (model, lm_head, norm and position are then
    # not used); heads of the same objective are kept too, others start fresh.
    init: str | None = option(None, "continue pretraining from this checkpoint (e.g. on your own domain's text): its "
                                    "architecture and tokenizer are kept, --model/--norm/--position/--lm-head unused",
                              metavar="DIR")
    # Self-supervised image objectives; their ranges are checked by the objectives, whose messages say why.
    temperature: float | None = option(None, "simclr: NT-Xent temperature", default_text="0.2")
    momentum: float | None = option(None, "byol: the target network's base momentum, raised to 1.0 on a cosine "
                                          "schedule", default_text="0.99")
    mask_ratio: float | None = option(None, "mae: fraction of patches masked", default_text="0.75")
    # Audio objectives: how clips become log-mel features (data.audio.MelSettings), recorded in the checkpoint.
    mel: str | None = option(None, "audio: log-mel settings as KEY=VALUE overrides of sample_rate=16000, "
                                   "window=400, hop=160, n_mels=80, f_min=0, f_max", metavar="KEY=N[,KEY=N]",
                             default_text="16 kHz, 25 ms windows every 10 ms, 80 mel bins, f_max half the rate")

    def check(self) -> None:
        from ..objectives import objective_modality

        kind = objective_modality(self.objective)  # a UserError naming --objective and listing them all
        if self.model is None:
            self.model = DEFAULT_PRESET.get(self.objective, DEFAULT_PRESET[kind])
        transformer = kind == "text" and self.objective not in NOT_TRANSFORMERS
        if self.optimizer is None and self.distributed == "fsdp":
            self.optimizer = "adamw"  # FSDP splits the matrices Muon orthogonalises whole
        for name, value in PRETRAIN_RECIPE["transformer" if transformer else "other"].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        super().check()


@dataclass(kw_only=True)
class FinetuneConfig(FinetuneSettings, ReadOptions):
    """`transferlab finetune`: a fresh head on a checkpoint's backbone (or its from-scratch twin), trained on
    labeled data."""

    init: str = option(help="the checkpoint to start from (a run's final/ or step-N/), or 'scratch'", metavar="DIR")
    train: str = option(help="labeled training data: a file (.tsv/.csv/.jsonl, or any --format), a GLUE task "
                             "directory, or image data", metavar="PATH")
    out: str = option(help="the run directory (final/, metrics.jsonl, results.json, run.json)", metavar="RUN")
    dev: str | None = option(None, "validation data, evaluated after every epoch (images: the val split of --dev)",
                             metavar="PATH")
    test: str | None = option(None, "labeled test data, evaluated once with the final model (images: the test "
                                    "split)", metavar="PATH")
    like: str | None = option(None, "with --init scratch: copy this checkpoint's architecture and tokenizer",
                              metavar="DIR")
    task: str | None = option(None, "what the labels are", choices=("classification", "regression"),
                              default_text="regression when the labels are fractional numbers")
    label_names: list[str] | None = option(None, "the label set, in id order (labels outside it are errors)",
                                           metavar="A,B,...", default_text="the labels found, sorted")
    num_labels: int | None = option(None, "size of the new head (at least the labels found)", at_least=1,
                                    default_text="the number of labels found")
    metrics: list[str] | None = option(None, "metrics to report, the first one picks the best epoch: accuracy, f1, "
                                             "mcc, balanced_accuracy, roc_auc, pearson, spearman", metavar="A,B",
                                       default_text="by task: accuracy,f1 for two classes")
    max_len: int = option(128, "longest token sequence; longer texts are cut (never more than the checkpoint's "
                               "positions, which the run says and records)", unit="tokens", at_least=2)
    method: str = option("finetune", "what trains: everything, only the head (frozen backbone), ULMFiT's gradual "
                                     "unfreezing, or LoRA adapters + head", choices=METHODS)
    lora_rank: int = option(8, "with --method lora: rank of the adapters", at_least=1)
    pooling: str | None = option(None, "how the head reads the sequence: cls (BERT's first token, what Hugging Face "
                                       "classifiers export), mean of the tokens, or the last token",
                                 choices=POOLINGS, default_text="mean (last token for causal models)")
    augment: str | None = option(None, "images: an augmentation recipe (none, light, xray) with KEY=VALUE "
                                       "overrides, e.g. xray,rotation=5", default_text="none")
    strict_labels: bool = option(False, "refuse training labels that look wrong (a label in a handful of rows "
                                        "that the dev set never has; a word among numbers), instead of warning")


@dataclass(kw_only=True)
class Seq2SeqConfig(TrainSettings, defaults={"epochs": 3, "lr": 1e-4, "warmup": 0.1}):
    """`transferlab seq2seq train`: an encoder-decoder checkpoint (bart/mass) fine-tuned on (source, target)
    pairs, with dev BLEU/chrF after every epoch."""

    init: str = option(help="a bart/mass checkpoint directory (RUN/final), or 'scratch'", metavar="DIR")
    train: str = option(help="pairs file (.tsv/.csv/.jsonl, optionally .gz)", metavar="PATH")
    out: str = option(help="the run directory", metavar="RUN")
    source_col: str = option(help="the source column (a 0-based position with --no-header)", metavar="COL")
    target_col: str = option(help="the target column", metavar="COL")
    dev: str | None = option(None, "dev pairs file", metavar="PATH")
    dev_fraction: float | None = option(None, "instead of --dev: hold out this fraction of the training file's "
                                              "distinct sources", above=0, below=1)
    like: str | None = option(None, "with --init scratch: copy this checkpoint's architecture and tokenizer",
                              metavar="DIR")
    header: bool = option(True, "whether the first row names the columns; --no-header takes 0-based positions")
    max_examples: int | None = option(None, "use only the first N training rows", at_least=1,
                                      default_text="all")
    max_len: int = option(64, "source tokens kept (never more than the checkpoint's positions)", unit="tokens",
                          at_least=2)
    max_target_len: int = option(32, "longest output", unit="tokens", at_least=2)
    beam: int = option(4, "beam size (1 = greedy)", at_least=1)
    length_penalty: float = option(1.0, "beam search length penalty (score / length^penalty)", at_least=0)
    bleu_tokenize: str = option("13a", "sacrebleu tokenizer: 13a, intl, char (single words), none")
    eval_sources: int = option(500, "distinct dev sources generated per evaluation (generation is the slow part)",
                               at_least=1)
    skip_bad_rows: bool = option(False, "drop malformed rows (they are listed) instead of stopping at the first")


# Light copies (the modules that use them import torch); tests/test_multitask.py checks they agree.
MT_KINDS = ("classification", "regression", "multilabel")  # data.multitask.MT_KINDS
SAMPLING = ("proportional", "uniform", "temperature", "round-robin", "weighted")  # data.multitask.SAMPLING
WEIGHTINGS = ("equal", "uncertainty", "pcgrad")  # tasks.weighting.WEIGHTINGS
MULTITASK_STEPS = 500  # a run's length when neither steps nor epochs is given


def augment_rule(value: str) -> str | None:
    """What is wrong with an augmentation recipe (``data.augment``), or None: checked when the settings are built,
    so a typo stops a grid before its first run."""
    from ..data.augment import augment_config

    try:
        augment_config(value)
    except UserError as e:
        return str(e)
    return None


@dataclass(kw_only=True)
class MultitaskConfig(FinetuneSettings, defaults={"steps": None, "epochs": None},
                      described={"steps": f"{MULTITASK_STEPS}, unless --epochs is given"}):
    """One run of `transferlab multitask`: tasks trained jointly on one backbone, a head each (a single-task
    baseline is the same run with one task). The training settings are fine-tuning's, lr from the model's width
    included; the spec's `train:` section and the command line take the fields in ``train_keys()``."""

    init: str = option(help="the checkpoint to start from (a run's final/ or step-N/), or 'scratch' (with `like`)",
                       cli=False)
    tasks: list[dict] = option(help="the tasks: {name, kind, columns} and, unless `data` holds them, their own "
                                    "train, dev, test, text_cols, path_col, image_size, max_train", cli=False)
    data: dict | None = option(None, "a file shared by the tasks without their own files (train, dev, test, "
                                     "text_cols, path_col, image_size, max_train), a label column per task",
                               cli=False)
    like: str | None = option(None, "with init 'scratch': the checkpoint whose architecture the from-scratch twin "
                                    "copies", cli=False)
    out: str | None = option(None, "the run directory (final/, metrics.jsonl, run.json, results.json)", cli=False)
    max_len: int = option(128, "longest token sequence of a text task (never more than the checkpoint's positions)",
                          unit="tokens", at_least=2)
    pooling: str | None = option(None, "how every head reads the sequence: cls, mean, or the last token",
                                 choices=POOLINGS, default_text="mean (last token for causal models)")
    augment: str | None = option(None, "images: an augmentation recipe (none, light, xray) with KEY=VALUE overrides, "
                                       "applied to every training batch", default_text="none", rule=augment_rule)
    # The spec has sections of its own for these (sampling:, weighting:, tasks' metric:).
    sampling: str = option("proportional", "which task's data each step trains on: proportional to its size, "
                                           "uniform, temperature (p ∝ n^(1/T)), round-robin, or weighted",
                           choices=SAMPLING, cli=False)
    temperature: float = option(2.0, "with sampling 'temperature': T (1 is proportional, large T uniform)", above=0,
                                cli=False)
    sampling_weights: dict | None = option(None, "with sampling 'weighted': task -> weight (a source labelling "
                                                 "several tasks weighs their sum)", cli=False)
    weighting: str = option("equal", "how the task losses combine: their sum, Kendall et al.'s uncertainty "
                                     "weighting, or PCGrad", choices=WEIGHTINGS, cli=False)
    metrics: dict | None = option(None, "task -> metric names, the first the task's headline",
                                  default_text="by kind: accuracy,f1 / pearson,spearman / roc_auc", cli=False)
    weighting_lr: float = option(1e-2, "learning rate of a learned weighting's parameters (uncertainty's "
                                       "log-variances, which must travel ~1 to matter)", above=0)
    keep_heads: list[str] = option([], "heads of a multi-task checkpoint to carry over (same task name and size) "
                                       "instead of training fresh ones", metavar="A,B", default_text="none")
    drop_incomplete: bool = option(False, "train only on examples labelled for every task of their source (the "
                                          "baseline that masking missing labels is measured against)")

    # Fields a grid's runs take from the spec's other sections (seeds:) or that do not apply to them: a grid runs
    # without torchrun, keeps no per-run logs, progress or checkpoints (a row of results.jsonl each), and scores
    # every dev example.
    NOT_TRAIN_KEYS = ("seed", "progress", "distributed", "eval_sample", "log_every", "save_every", "keep_checkpoints")

    @classmethod
    def train_keys(cls) -> tuple[str, ...]:
        """The settings a multi-task spec's `train:` section and `transferlab multitask --OPTION` take."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("cli", True) and f.name not in cls.NOT_TRAIN_KEYS)

    def check(self) -> None:
        super().check()
        if self.steps is None and self.epochs is None:
            self.steps = MULTITASK_STEPS
        if not self.tasks:
            raise UserError("a multi-task run needs at least one task.")
        for t in self.tasks:
            if t.get("kind", "classification") not in MT_KINDS:
                raise UserError(f"task '{t.get('name')}': unknown kind '{t.get('kind')}'; choose one of "
                                f"{', '.join(MT_KINDS)}.")


__all__ = ["PretrainConfig", "FinetuneConfig", "Seq2SeqConfig", "MultitaskConfig", "DEFAULT_PRESET", "Settings",
           "parse_noise"]
