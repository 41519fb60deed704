"""Seq2seq transfer: fine-tune a bart/mass checkpoint (or its from-scratch twin) on text pairs, and generate.

Head handling follows ``from_pretrained``: the backbone is kept; the task head of a seq2seq model is the tied LM
head it was pretrained with (same vocabulary, same job: predict the next output token), so ``heads.lm.*`` is kept
too when present; any other head (a classifier) is dropped. The report lists loaded, dropped and new keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..data.batches import ExampleBatches
from ..errors import UserError
from ..evaluation.seq2seq import evaluate_seq2seq, score_predictions, teacher_forced_loss, translate
from ..fsutil import clear_output_dir, write_json
from ..tasks.factory import load_model
from ..tasks.seq2seq import PairSet, Seq2SeqLM, encode_pairs, read_pairs, split_by_source
from ..training.loop import TrainConfig, train
from ..transfer import build_transfer


def seq2seq_from_pretrained(directory: str | Path, init: str = "pretrained", seed: int = 0,
                            dropout: float | None = 0.1, verbose: bool = True):
    """An encoder-decoder checkpoint -> (Seq2SeqLM, tokenizer, TransferReport): the head swap of
    ``transfer.build_transfer`` with a seq2seq head, which keeps the checkpoint's LM head (same vocabulary, same
    job: predict the next output token) and drops any other head (a classifier).

    Args:
        directory: a bart/mass pretraining run's ``final/`` (or any encoder-decoder checkpoint).
        init: "pretrained", or "scratch" for the same architecture with random weights.
        dropout: dropout while fine-tuning (pretraining runs without it); None keeps the checkpoint's.
    """
    return build_transfer(directory, task="seq2seq", init=init, seed=seed, verbose=verbose, dropout=dropout)


@dataclass
class Seq2SeqConfig:
    init: str  # a checkpoint directory, or "scratch" (then `like` names the architecture to copy)
    train: str
    out: str
    source_col: str
    target_col: str
    dev: str | None = None
    dev_fraction: float | None = None  # hold out this fraction of the training file's distinct sources instead
    like: str | None = None
    header: bool = True  # False: columns are 0-based indices
    max_examples: int | None = None  # first N rows of the training file
    epochs: float = 3
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    schedule: str = "linear"
    max_len: int = 64
    max_target_len: int = 32
    beam: int = 4
    length_penalty: float = 1.0
    bleu_tokenize: str = "13a"  # "char" for single words
    eval_sources: int = 500  # distinct dev sources generated at each evaluation (generation is the slow part)
    seed: int = 0
    precision: str = "auto"
    skip_bad_rows: bool = False
    progress: bool = True


def check_generation(beam: int, max_target_len: int, tokenize: str) -> None:
    """Refuse generation settings that cannot work, before any training."""
    import sacrebleu

    if beam < 1:
        raise UserError(f"--beam must be at least 1 (1 = greedy), got {beam}.")
    if max_target_len < 2:
        raise UserError(f"--max-target-len must be at least 2 (a token and [EOS]), got {max_target_len}.")
    try:
        sacrebleu.metrics.BLEU(tokenize=tokenize)
    except Exception:  # sacrebleu raises a bare error type for an unknown tokenizer name
        raise UserError(f"--bleu-tokenize '{tokenize}' is not a sacrebleu tokenizer; use 13a (default), intl, char "
                        f"(single words) or none.") from None


def first_sources(pairs: PairSet, n: int) -> PairSet:
    """The pairs of the first ``n`` distinct sources (all their targets, so references stay complete)."""
    keep = set(list(dict.fromkeys(pairs.sources))[:n])
    return pairs.subset(i for i, s in enumerate(pairs.sources) if s in keep)


def finetune_seq2seq(cfg: Seq2SeqConfig, overwrite: bool = False) -> dict:
    """Fine-tune and write RUN/{run.json, metrics.jsonl, final/, results.json}. Returns the results dict."""
    if cfg.init == "scratch":
        if not cfg.like:
            raise UserError("--init scratch needs --like DIR: the bart/mass checkpoint whose architecture and "
                            "tokenizer the from-scratch twin copies (its weights are not used).")
        source, init = cfg.like, "scratch"
    else:
        source, init = cfg.init, "pretrained"
    if cfg.dev and cfg.dev_fraction:
        raise UserError("pass either --dev FILE or --dev-fraction F, not both.")
    check_generation(cfg.beam, cfg.max_target_len, cfg.bleu_tokenize)
    pairs = read_pairs(cfg.train, cfg.source_col, cfg.target_col, cfg.header, cfg.skip_bad_rows, cfg.max_examples)
    dev = None
    if cfg.dev_fraction:
        pairs, dev = split_by_source(pairs, cfg.dev_fraction, cfg.seed)
    elif cfg.dev:
        dev = read_pairs(cfg.dev, cfg.source_col, cfg.target_col, cfg.header, cfg.skip_bad_rows)
    module, tokenizer, report = seq2seq_from_pretrained(source, init, cfg.seed, verbose=cfg.progress)
    max_len = min(cfg.max_len, module.config.max_len)
    examples = encode_pairs(tokenizer, pairs, max_len, min(cfg.max_target_len, module.config.max_len),
                            module.config.decoder_start(tokenizer.bos_id))
    # Only now, with data and model validated, may --overwrite remove an earlier run.
    out = clear_output_dir(cfg.out, overwrite, "seq2seq output")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", asdict(cfg))
    data = ExampleBatches(examples, cfg.batch_size, cfg.seed)
    dev_eval = first_sources(dev, cfg.eval_sources) if dev is not None else None

    def evaluate(module):
        return evaluate_seq2seq(module, tokenizer, dev_eval, max_len, cfg.max_target_len, cfg.beam,
                                cfg.length_penalty, cfg.bleu_tokenize)

    train_cfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=cfg.warmup,
                            schedule=cfg.schedule, precision=cfg.precision, seed=cfg.seed, progress=cfg.progress,
                            log_every=max(1, data.steps_per_epoch // 4))
    generation = {"beam": cfg.beam, "length_penalty": cfg.length_penalty, "max_target_len": cfg.max_target_len,
                  "bleu_tokenize": cfg.bleu_tokenize}
    state = train(module, data, train_cfg, evaluate=evaluate if dev_eval is not None else None, run_dir=out,
                  inputs=tokenizer, extra_config={"max_len": max_len, "generation": generation})
    results = {"init": init, "source": source, "train_examples": len(pairs), "transfer": str(report),
               "history": state.history}
    if dev_eval is not None:
        results.update(dev_examples=len(dev), dev_evaluated=len(dev_eval), final=state.history[-1])
    write_json(out / "results.json", results)
    return results


def load_seq2seq(directory: str | Path):
    """A fine-tuned seq2seq directory -> (Seq2SeqLM, tokenizer, config)."""
    module, tokenizer, config = load_model(directory)
    if config["task"].get("kind") != Seq2SeqLM.kind:
        raise UserError(f"'{directory}' holds a '{config['task'].get('kind')}' model, not a fine-tuned seq2seq "
                        f"model; fine-tune it first with `transferlab seq2seq train --init {directory} ...`.")
    return module, tokenizer, config


def generate_file(model: str | Path, data: str | Path, source_col: str, target_col: str | None = None,
                  header: bool = True, out: str | Path | None = None, beam: int | None = None,
                  length_penalty: float | None = None, max_target_len: int | None = None,
                  bleu_tokenize: str | None = None, skip_bad_rows: bool = False, progress: bool = True):
    """Generate for every row of ``data``; write ``line<TAB>source<TAB>prediction`` to ``out`` (atomically).

    Settings left None come from the model's fine-tuning run. Returns (predictions, metrics or None): metrics
    when ``target_col`` is given (references grouped by source, as in training)."""
    module, tokenizer, config = load_seq2seq(model)
    gen = config.get("generation", {})
    beam = beam or gen.get("beam", 1)
    length_penalty = gen.get("length_penalty", 1.0) if length_penalty is None else length_penalty
    max_target_len = max_target_len or gen.get("max_target_len", 32)
    bleu_tokenize = bleu_tokenize or gen.get("bleu_tokenize", "13a")
    check_generation(beam, max_target_len, bleu_tokenize)
    pairs = read_pairs(data, source_col, target_col, header, skip_bad_rows)
    max_len = config.get("max_len", 128)
    predictions = translate(module, tokenizer, pairs.sources, max_len, beam, max_target_len, length_penalty,
                            progress=progress)
    metrics = None
    if target_col is not None:
        start = module.config.decoder_start(tokenizer.bos_id)
        loss = teacher_forced_loss(module, encode_pairs(tokenizer, pairs, max_len, max_target_len, start))
        metrics = {"loss": loss, **score_predictions(pairs, predictions, bleu_tokenize)}
    if out is not None:
        out = Path(out)
        rows = ["line\tsource\tprediction"] + [f"{line}\t{s}\t{p}" for line, s, p in
                                               zip(pairs.lines, pairs.sources, predictions)]
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
        tmp.replace(out)
    return predictions, metrics
