"""Command line: parses arguments and calls the library. No logic lives here.

Every user mistake is a ``UserError``: printed as one paragraph, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def cmd_tokenizer_train(a):
    from .tokenization import Tokenizer
    from .fsutil import check_output_dir

    check_output_dir(a.out, a.overwrite, "tokenizer")
    tok = Tokenizer.train(a.input, kind=a.kind, vocab_size=a.vocab_size, min_frequency=a.min_frequency,
                          lowercase=a.lowercase, progress=not a.quiet)
    path = tok.save(a.out)
    print(f"wrote {path} ({tok.vocab_size} tokens, {a.kind})")


def cmd_corpus_prepare(a):
    from .data.corpus import prepare_corpus
    from .tokenization import Tokenizer

    out = prepare_corpus(a.input, Tokenizer.load(a.tokenizer), a.out, heldout_fraction=a.heldout_fraction,
                         seed=a.seed, overwrite=a.overwrite, progress=not a.quiet)
    print(f"wrote {out}")


def cmd_pretrain(a):
    from .training.distributed import init_from_env, is_main
    from .training.pretrain import PretrainConfig, pretrain

    init_from_env(a.device)
    cfg = PretrainConfig(corpus=a.corpus, out=a.out, objective=a.objective, model=a.model, seq_len=a.seq_len,
                         batch_size=a.batch_size, steps=a.steps, lr=a.lr, warmup=a.warmup, schedule=a.schedule,
                         grad_accum=a.grad_accum, mask_prob=a.mask_prob, lm_head=a.lm_head, eval_every=a.eval_every,
                         save_every=a.save_every, seed=a.seed, precision=a.precision, device=a.device,
                         progress=not a.quiet, log_every=a.log_every, on_nan=a.on_nan)
    final = pretrain(cfg, resume=a.resume == "auto", overwrite=a.overwrite)
    if is_main():
        print(f"wrote {final}")


def cmd_finetune(a):
    from .transfer.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(init=a.init, like=a.like, train=a.train, dev=a.dev, out=a.out, task=a.task,
                         text_cols=a.text_cols, label_col=a.label_col, label_names=a.label_names,
                         num_labels=a.num_labels, metrics=a.metrics, epochs=a.epochs, batch_size=a.batch_size,
                         lr=a.lr, warmup=a.warmup, max_len=a.max_len, seed=a.seed, precision=a.precision,
                         skip_bad_rows=a.skip_bad_rows, progress=not a.quiet)
    history, results = finetune(cfg, overwrite=a.overwrite)
    if "final" in results:
        print("dev: " + ", ".join(f"{k}={v:.4f}" for k, v in results["final"].items()) +
              f"  (best epoch {results['best_epoch']})")
    print(f"wrote {Path(a.out) / 'final'}")


def _open(a):
    from .data.labeled import read_labeled
    from .transfer import load

    model = load(a.model)
    data = read_labeled(a.data, text_cols=a.text_cols, label_col=a.label_col, task=model.problem,
                        label_names=model.module.label_names, skip_bad_rows=a.skip_bad_rows,
                        require_labels=a.command == "evaluate")
    if data.skipped:
        print(data.skipped_summary(), file=sys.stderr)
    return model, data


def cmd_evaluate(a):
    import json

    model, data = _open(a)
    if a.metrics:
        model.compile(metrics=a.metrics)
    result = model.evaluate(data)
    print(json.dumps({k: round(v, 6) for k, v in result.items()}, indent=2))


def cmd_predict(a):
    from .fsutil import check_output_file

    if a.out:
        check_output_file(a.out, a.overwrite)
    model, data = _open(a)
    preds = model.predict(data)
    names = model.module.label_names
    out = Path(a.out) if a.out else None
    lines = ["line\tprediction"] + [f"{line}\t{names[int(p)] if names else p}" for line, p in zip(data.lines, preds)]
    text = "\n".join(lines) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        print(f"wrote {len(preds)} predictions to {out}")


def cmd_plot(a):
    from .experiments.plots import plot_runs
    from .fsutil import check_output_file

    check_output_file(a.out, a.overwrite)
    print(f"wrote {plot_runs(a.runs, a.out, metrics=a.metrics)}")


def cmd_demo(a):
    from .experiments.demo import run_demo

    run_demo(a.out, seeds=a.seeds, quick=a.quick, overwrite=a.overwrite)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferlab", description="Pretrain, transfer, fine-tune, and measure.")
    sub = p.add_subparsers(dest="command", required=True)

    tok = sub.add_parser("tokenizer", help="train a tokenizer").add_subparsers(dest="tok_command", required=True)
    t = tok.add_parser("train", help="train a subword tokenizer on text files")
    t.add_argument("--input", nargs="+", required=True, help="files (.txt, .txt.gz, .jsonl) or directories")
    t.add_argument("--kind", choices=["bpe", "wordpiece", "unigram"], default="wordpiece")
    t.add_argument("--vocab-size", type=int, default=8000)
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--lowercase", action="store_true")
    t.add_argument("--out", required=True, help="directory to write tokenizer.json into")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_tokenizer_train)

    cor = sub.add_parser("corpus", help="prepare a corpus").add_subparsers(dest="corpus_command", required=True)
    c = cor.add_parser("prepare", help="tokenise text once into memory-mapped token files")
    c.add_argument("--input", nargs="+", required=True)
    c.add_argument("--tokenizer", required=True, help="tokenizer.json or a directory holding it")
    c.add_argument("--out", required=True)
    c.add_argument("--heldout-fraction", type=float, default=0.01)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--overwrite", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_corpus_prepare)

    r = sub.add_parser("pretrain", help="pretrain a backbone with a self-supervised objective")
    r.add_argument("--corpus", required=True, help="a directory written by `corpus prepare`")
    r.add_argument("--objective", default="mlm", help="mlm (BERT, encoder) or clm (GPT, decoder)")
    r.add_argument("--model", default="tiny", help="preset: tiny, mini, small, medium, base")
    r.add_argument("--steps", type=int, default=1000)
    r.add_argument("--out", required=True, help="run directory")
    r.add_argument("--seq-len", type=int, default=128)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--grad-accum", type=int, default=1)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--warmup", type=float, default=0.06, help="fraction of steps (<1) or steps")
    r.add_argument("--schedule", default="linear", help="linear, cosine or constant")
    r.add_argument("--mask-prob", type=float, default=0.15)
    r.add_argument("--lm-head", choices=["tied", "bert"], default="tied",
                   help="tied embedding only, or BERT's transform + bias")
    r.add_argument("--eval-every", type=int)
    r.add_argument("--save-every", type=int, help="write a resumable step checkpoint every N steps")
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--resume", choices=["auto", "never"], default="never")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--on-nan", choices=["stop", "skip"], default="stop",
                   help="on a NaN/inf loss: stop (keeping the last good checkpoint) or skip the batch, counted in "
                        "metrics.jsonl; more than 10 bad batches in a row still stop")
    _common_train(r)
    r.set_defaults(func=cmd_pretrain)

    f = sub.add_parser("finetune", help="fine-tune a pretrained backbone (or a scratch twin) with a new head")
    f.add_argument("--init", required=True, help="checkpoint directory (e.g. RUN/final), or 'scratch'")
    f.add_argument("--like", help="with --init scratch: copy this checkpoint's architecture and tokenizer")
    f.add_argument("--train", required=True, help="labeled file (.tsv/.csv/.jsonl) or a GLUE task directory")
    f.add_argument("--dev", help="validation file or GLUE task directory")
    f.add_argument("--out", required=True)
    f.add_argument("--task", choices=["classification", "regression"])
    f.add_argument("--label-names", type=_csv, help="comma-separated label set, in id order")
    f.add_argument("--num-labels", type=int)
    f.add_argument("--metrics", type=_csv, help="accuracy,f1,mcc,pearson,spearman")
    f.add_argument("--epochs", type=float, default=3)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--lr", type=float, default=5e-5)
    f.add_argument("--warmup", type=float, default=0.1)
    f.add_argument("--max-len", type=int, default=128)
    f.add_argument("--overwrite", action="store_true")
    _columns(f)
    _common_train(f)
    f.set_defaults(func=cmd_finetune)

    for name, func, helptext in (("evaluate", cmd_evaluate, "metrics of a fine-tuned model on a labeled file"),
                                 ("predict", cmd_predict, "predictions of a fine-tuned model")):
        e = sub.add_parser(name, help=helptext)
        e.add_argument("--model", required=True, help="fine-tuned directory (RUN/final)")
        e.add_argument("--data", required=True)
        if name == "evaluate":
            e.add_argument("--metrics", type=_csv)
        else:
            e.add_argument("--out", help="write TSV here instead of stdout")
            e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
        _columns(e)
        e.set_defaults(func=func)

    pl = sub.add_parser("plot", help="draw loss / perplexity / accuracy curves of runs into a PNG")
    pl.add_argument("runs", nargs="+")
    pl.add_argument("--out", default="curves.png")
    pl.add_argument("--metrics", type=_csv)
    pl.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    pl.set_defaults(func=cmd_plot)

    d = sub.add_parser("demo", help="the whole story offline in minutes: pretraining beats scratch")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--quick", action="store_true", help="a smaller world and shorter runs (for tests)")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def _common_train(p):
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _columns(p):
    p.add_argument("--text-cols", type=_csv, help="comma-separated text column names (1 or 2)")
    p.add_argument("--label-col")
    p.add_argument("--skip-bad-rows", action="store_true", help="drop malformed rows (they are listed)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # disk full, read-only or unwritable output met outside the atomic writers
        where = f" '{e.filename}'" if e.filename else ""
        print(f"error: cannot read or write{where}: {e.strerror or e}. Free disk space or fix the permissions, then "
              f"run the command again (pretraining: add --resume auto to continue from the last checkpoint).",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
