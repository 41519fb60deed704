"""Seq2seq transfer: fine-tune a bart/mass checkpoint (or its from-scratch twin) on text pairs, and generate.

Head handling follows ``from_pretrained``: the backbone is kept; the task head of a seq2seq model is the tied LM
head it was pretrained with (same vocabulary, same job: predict the next output token), so ``heads.lm.*`` is kept
too when present; any other head (a classifier) is dropped. The report lists loaded, dropped and new keys.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path

from ..data.batches import ExampleBatches
from ..errors import UserError
from ..evaluation.seq2seq import evaluate_seq2seq, score_predictions, teacher_forced_loss, translate
from ..fsutil import ProvisionalDir, check_output_file, read_json, write_json
from ..options import changed_settings
from ..tasks.factory import load_model
from ..tasks.seq2seq import PairSet, Seq2SeqLM, encode_pairs, read_pairs, split_by_source
from ..training.loop import RESUME_HINT, train
from ..transfer import build_transfer
from .settings import Seq2SeqConfig

__all__ = ["Seq2SeqConfig", "finetune_seq2seq", "generate_file", "load_seq2seq", "seq2seq_from_pretrained"]


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


# Settings that may differ when a run is resumed: they change how it is watched and where it runs, not what it learns.
RESUMABLE_CHANGES = {"progress", "device", "out", "save_every", "keep_checkpoints", "log_every", "precision",
                     "on_nan", "max_nan_skips", "distributed"}


def finetune_seq2seq(cfg: Seq2SeqConfig, overwrite: bool = False, resume: bool = False,
                     resume_hint: str = RESUME_HINT) -> dict:
    """Fine-tune and write RUN/{run.json, metrics.jsonl, final/, results.json}. Returns the results dict.

    ``resume``: continue the run in ``cfg.out`` from its newest step checkpoint; ``resume_hint``: what an
    interrupted run tells the user to do."""
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
    recorded = cfg
    positions = module.config.max_len
    if cfg.max_len > positions or cfg.max_target_len > positions:
        # A model reads at most its position table; the settings a run records are the ones it ran with.
        recorded = replace(cfg, max_len=min(cfg.max_len, positions),
                           max_target_len=min(cfg.max_target_len, positions))
        print(f"note: the checkpoint has {positions} positions, so sources are cut at {recorded.max_len} tokens "
              f"(--max-len {cfg.max_len}) and outputs at {recorded.max_target_len} (--max-target-len "
              f"{cfg.max_target_len}); run.json records what ran.", file=sys.stderr)
    max_len, max_target_len = recorded.max_len, recorded.max_target_len
    examples = encode_pairs(tokenizer, pairs, max_len, max_target_len, module.config.decoder_start(tokenizer.bos_id))
    # Only now, with data and model validated, is the output directory looked at.
    out = Path(cfg.out)
    resuming = False
    if out.exists() and any(out.iterdir()):
        if resume:
            if (out / "run.json").is_file():
                diffs = changed_settings(asdict(recorded), read_json(out / "run.json"), {}, RESUMABLE_CHANGES)
                if diffs:
                    raise UserError(f"--resume: '{out}' was started with different settings ({', '.join(diffs)}). "
                                    f"Use the same options, or a new --out.")
            resuming = True
        elif not overwrite:
            raise UserError(f"seq2seq output directory '{out}' already exists and is not empty. Pass --resume auto "
                            f"to continue the run in it, --overwrite to replace it, or choose another --out.")
    elif resume:
        print(f"--resume auto: '{out}' holds no run yet, so a new one starts", file=sys.stderr)
    data = ExampleBatches(examples, cfg.batch_size // cfg.grad_accum, cfg.seed)
    dev_eval = first_sources(dev, cfg.eval_sources) if dev is not None else None

    def evaluate(module):
        return evaluate_seq2seq(module, tokenizer, dev_eval, max_len, max_target_len, cfg.beam,
                                cfg.length_penalty, cfg.bleu_tokenize)

    generation = {"beam": cfg.beam, "length_penalty": cfg.length_penalty, "max_target_len": max_target_len,
                  "bleu_tokenize": cfg.bleu_tokenize}
    with ProvisionalDir(out, replace=overwrite and not resuming) as guard:
        if not resuming:
            write_json(out / "run.json", asdict(recorded))
        state = train(module, data, recorded, evaluate=evaluate if dev_eval is not None else None, run_dir=out,
                      inputs=tokenizer, extra_config={"max_len": max_len, "generation": generation},
                      resume=resuming, resume_hint=resume_hint, started=guard.commit)
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
    if out is not None:
        check_output_file(out, overwrite=True)  # its folder must exist before any generation runs
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
