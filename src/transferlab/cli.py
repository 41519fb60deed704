"""Command line: parses arguments and calls the library. No logic lives here.

Every user mistake is a ``UserError``: printed as one paragraph, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from .errors import Terminated, UserError


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _resume_hint(a) -> str:
    """The command an interrupted run prints: this one, with --resume auto and without --overwrite."""
    from .cli_args import command_line

    where = " (under torchrun, with the same torchrun options)" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    return f"run `{command_line(a.argv, add={'--resume': 'auto'}, drop=('--overwrite',))}`{where}"


def cmd_tokenizer_train(a):
    from .inputs.text import Tokenizer
    from .fsutil import check_output_dir

    check_output_dir(a.out, a.overwrite, "tokenizer")
    tok = Tokenizer.train(a.input, kind=a.kind, vocab_size=a.vocab_size, min_frequency=a.min_frequency,
                          lowercase=a.lowercase, progress=not a.quiet)
    path = tok.save(a.out)
    print(f"wrote {path} ({tok.vocab_size} tokens, {a.kind})")


def cmd_corpus_prepare(a):
    from .data.corpus import prepare_corpus
    from .inputs.text import Tokenizer

    out = prepare_corpus(a.input, Tokenizer.load(a.tokenizer), a.out, heldout_fraction=a.heldout_fraction,
                         seed=a.seed, overwrite=a.overwrite, progress=not a.quiet)
    print(f"wrote {out}")


def cmd_pretrain(a):
    from .cli_args import settings_from
    from .recipes.settings import PretrainConfig

    cfg = settings_from(PretrainConfig, a)
    from .recipes.pretrain import pretrain
    from .training.distributed import init_from_env, is_main

    init_from_env(cfg.device)
    final = pretrain(cfg, resume=a.resume == "auto", overwrite=a.overwrite, resume_hint=_resume_hint(a))
    if is_main():
        print(f"wrote {final}")


def cmd_finetune(a):
    from .cli_args import settings_from
    from .recipes.settings import FinetuneConfig

    cfg = settings_from(FinetuneConfig, a)
    from .recipes.finetune import finetune
    from .training.distributed import init_from_env, is_main

    init_from_env(cfg.device)
    history, results = finetune(cfg, overwrite=a.overwrite, resume=a.resume == "auto", resume_hint=_resume_hint(a))
    if not is_main():
        return
    if "final" in results:
        print("dev: " + ", ".join(f"{k}={v:.4f}" for k, v in results["final"].items()) +
              f"  (best epoch {results['best_epoch']})")
    if "test" in results:
        print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in results["test"].items()))
    print(f"wrote {Path(cfg.out) / 'final'}")


def cmd_export(a):
    from .transfer.export import export_int8

    print(f"wrote {export_int8(a.int8, a.out, overwrite=a.overwrite)}")


def cmd_seq2seq_train(a):
    from .cli_args import settings_from
    from .recipes.settings import Seq2SeqConfig

    cfg = settings_from(Seq2SeqConfig, a)
    from .recipes.seq2seq import finetune_seq2seq

    results = finetune_seq2seq(cfg, overwrite=a.overwrite, resume=a.resume == "auto", resume_hint=_resume_hint(a))
    if "final" in results:
        print("dev: " + ", ".join(f"{k}={v:.4f}" for k, v in results["final"].items() if k not in ("step", "epoch")))
    print(f"wrote {Path(cfg.out) / 'final'}")


def cmd_seq2seq_generate(a):
    import json

    from .recipes.seq2seq import generate_file

    predictions, metrics = generate_file(a.model, a.data, a.source_col, a.target_col, header=not a.no_header,
                                         out=a.out, beam=a.beam, length_penalty=a.length_penalty,
                                         max_target_len=a.max_target_len, bleu_tokenize=a.bleu_tokenize,
                                         skip_bad_rows=a.skip_bad_rows, progress=not a.quiet)
    if a.out is None:
        sys.stdout.write("".join(p + "\n" for p in predictions))
    else:
        print(f"wrote {len(predictions)} predictions to {a.out}", file=sys.stderr)
    if metrics is not None:
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}), file=sys.stderr)


def _open(a):
    from .cli_args import settings_from
    from .data.labeled import ReadOptions
    from .transfer import load

    options = settings_from(ReadOptions, a)
    model = load(a.model)
    data = model.read(a.data, a.split, require_labels=a.command == "evaluate", **options.given())
    for line in [data.skipped_summary() if getattr(data, "skipped", None) else "", *getattr(data, "notes", [])]:
        if line:
            print(f"note: {line}", file=sys.stderr)
    return model, data


def cmd_evaluate(a):
    import json
    import math

    from .evaluation.metrics import why_not_finite

    model, data = _open(a)
    if a.metrics:
        model.compile(metrics=a.metrics)
    result = model.evaluate(data)
    # JSON has no NaN: a value that is not a number is written as null, and the command fails, saying why.
    print(json.dumps({k: round(v, 6) if math.isfinite(v) else None for k, v in result.items()}, indent=2))
    if not all(math.isfinite(v) for v in result.values()):
        raise UserError(f"evaluating {a.model} on {a.data}: {why_not_finite(result)} The numbers above are not a "
                        f"result (null marks the ones that are not numbers).")


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


def cmd_convert(a):
    from .transfer.convert import from_hf, to_hf

    convert = from_hf if a.from_hf else to_hf
    print(f"wrote {convert(a.from_hf or a.to_hf, a.out, overwrite=a.overwrite, verbose=not a.quiet)}")


def cmd_demo(a):
    from .experiments.demo import run_demo

    run_demo(a.out, seeds=a.seeds, quick=a.quick, overwrite=a.overwrite)


def _executor(a):
    from .cli_args import settings_from
    from .experiments.executors import ExecutorConfig

    return settings_from(ExecutorConfig, a)


def cmd_compare(a):
    from .cli_args import command_line
    from .experiments.compare import run_compare

    # Re-running the same command resumes a grid: that is what an interrupt prints.
    run_compare(a.spec, a.out, progress=not a.quiet, executor=_executor(a), command=command_line(a.argv))


def cmd_protocols(a):
    from .experiments.grid_settings import PROTOCOL_KEYS, ProtocolSettings

    settings = {k: getattr(a, k) for k in PROTOCOL_KEYS if hasattr(a, k)}  # those given; the grid has the others
    ProtocolSettings(**settings)  # ranges and rules, named as the options, before any run
    from .experiments.protocols import run_protocols

    protocols = a.protocols or ["knn", "logistic-probe", "linear-probe", "finetune"]
    run_protocols(a.model, a.train, a.dev, a.test, protocols, a.budgets, a.seeds, a.out, settings, a.image_size,
                  progress=not a.quiet)


def cmd_multitask(a):
    from .experiments.multitask import run_multitask
    from .recipes.settings import MultitaskConfig

    # Only the options given: the others keep the spec's value, else the declared default.
    overrides = {k: getattr(a, k) for k in MultitaskConfig.train_keys() if hasattr(a, k)}
    run_multitask(a.spec, a.out, progress=not a.quiet, executor=_executor(a), overrides=overrides)


def cmd_assess(a):
    from .experiments.assess import assess

    assess(a.task, a.checkpoints, against=a.against, out=a.out, progress=not a.quiet, max_train=a.max_train)


def cmd_probe_senses(a):
    import json

    from .evaluation.probes import sense_probe

    probe = sense_probe(a.model, a.word, a.contexts, max_len=a.max_len)
    if a.json:
        print(json.dumps({"word": probe.word, "contexts": probe.contexts,
                          "similarity": [[round(float(v), 6) for v in row] for row in probe.similarity]}, indent=2))
    else:
        print(probe.table())


def cmd_generate(a):
    import json

    from .evaluation.generate import GenerationConfig, generate, load_causal_lm

    cfg = GenerationConfig(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k,
                           top_p=a.top_p, stop=a.stop or [], seed=a.seed, use_cache=not a.no_cache)
    module, tokenizer = load_causal_lm(a.model)
    for g in generate(module, tokenizer, a.prompt, cfg, batch_size=a.batch_size):
        if a.json:
            print(json.dumps({"prompt": g.prompt, "text": g.text, "finish_reason": g.finish_reason}))
        else:
            print(f"{g.prompt}\x1b[1m{g.text}\x1b[0m" if sys.stdout.isatty() else f"{g.prompt}{g.text}")


def cmd_icl(a):
    from .evaluation.icl import builtin_tasks, run_icl

    if a.list:
        print("\n".join(builtin_tasks()))
        return
    if not a.model or not a.tasks:
        raise UserError("icl needs --model DIR and --tasks NAMES_OR_FILES (or --list to see the built-in tasks).")
    run_icl(a.model, a.tasks, a.shots, a.out, data_root=a.data_root, limit=a.limit, overflow=a.overflow,
            batch_size=a.batch_size, progress=not a.quiet, overwrite=a.overwrite, window=a.window)


def cmd_perplexity(a):
    from .evaluation.perplexity import perplexity_file
    from .fsutil import check_output_file, write_json

    if a.json:
        check_output_file(a.json, overwrite=True, option="--json")
    r = perplexity_file(a.model, a.data, window=a.window, stride=a.stride, batch_size=a.batch_size,
                        progress=not a.quiet)
    print(f"perplexity {r['ppl']:.2f} per token ({r['tokens']:,} tokens), {r['word_ppl']:.2f} per word "
          f"({r['words']:,} words), {r['bits_per_byte']:.3f} bits per byte; window {r['window']}, stride "
          f"{r['stride']} (every token after the first window sees at least {r['min_context']} tokens of context)")
    if a.json:
        write_json(a.json, r)


def cmd_icl_scaling(a):
    from .experiments.icl_scaling import ScalingConfig, run_icl_scaling

    cfg = ScalingConfig(out=a.out, sizes=a.sizes, checkpoints=a.checkpoints, corpus=a.corpus, tasks=a.tasks,
                        shots=a.shots, limit=a.limit, data_root=a.data_root, overflow=a.overflow, steps=a.steps,
                        seq_len=a.seq_len, batch_size=a.batch_size, lr=a.lr, seed=a.seed, precision=a.precision,
                        progress=not a.quiet)
    run_icl_scaling(cfg, overwrite=a.overwrite, executor=_executor(a))
    print(f"wrote {Path(a.out) / 'scaling.png'}")


def cmd_probe_bias(a):
    from .evaluation.bias import BiasConfig
    from .experiments.bias_report import run_bias_probe

    cfg = BiasConfig(user_pairs=a.pair or [], only_user_pairs=a.only_my_pairs, samples=a.samples,
                     max_new_tokens=a.max_new_tokens, top_words=a.top_words, sentence_pairs=a.sentence_pairs,
                     seed=a.seed, occupations=a.occupations)
    run_bias_probe(a.model, cfg, a.out, overwrite=a.overwrite)


def cmd_probe_vision_bias(a):
    from .cli_args import settings_from
    from .experiments.vision_bias import VisionBiasConfig, run_vision_bias

    cfg = settings_from(VisionBiasConfig, a)
    result = run_vision_bias(cfg, overwrite=a.overwrite)
    print("\n".join(result["conclusion"]))
    print(f"wrote {Path(a.out) / 'vision_bias.md'}")


def _grid_parser(sub, name: str, help: str, example: str, func, settings=None, keys=()) -> None:
    """A subcommand that runs a resumable grid from a YAML spec (compare, multitask): the spec, where results go,
    quiet, where the runs execute (ExecutorConfig), and ``settings``' fields named in ``keys`` as overrides of the
    spec's `train:` section."""
    from dataclasses import fields

    from .cli_args import add_settings
    from .experiments.executors import ExecutorConfig

    p = sub.add_parser(name, help=help)
    p.add_argument("spec", help=f"YAML spec (see {example})")
    p.add_argument("--out", help=f"output directory, re-running into it resumes [default: the spec's `out:`, else "
                                 f"runs/{name}/NAME]")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no printed report")
    add_settings(p, ExecutorConfig)
    if settings is not None:
        add_settings(p, settings, skip=[f.name for f in fields(settings) if f.name not in keys],
                     title="multi-task settings (the spec's `train:` keys; given here, they win over the spec)")
    p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    # The training commands' options are generated from their settings dataclasses (cli_args.py): type, default,
    # unit, help and allowed values are declared once, there.
    from dataclasses import fields

    from .cli_args import Parser, _converter, add_settings
    from .data.labeled import ReadOptions
    from .experiments.executors import ExecutorConfig
    from .experiments.grid_settings import PROTOCOL_KEYS, ProtocolSettings
    from .experiments.vision_bias import VisionBiasConfig
    from .options import field_of, type_hints
    from .recipes.settings import FinetuneConfig, MultitaskConfig, PretrainConfig, Seq2SeqConfig

    p = Parser(prog="transferlab", description="Pretrain, transfer, fine-tune, and measure.")
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

    r = sub.add_parser("pretrain", help="pretrain a backbone: self-supervised on text, supervised on labeled images")
    add_settings(r, PretrainConfig, required=("out",), title="data and model")
    _run_options(r)
    r.set_defaults(func=cmd_pretrain)

    f = sub.add_parser("finetune", help="fine-tune a pretrained backbone (or a scratch twin) with a new head")
    add_settings(f, FinetuneConfig, title="data, model and transfer")
    _run_options(f)
    f.set_defaults(func=cmd_finetune)

    for name, func, helptext in (("evaluate", cmd_evaluate, "metrics of a fine-tuned model on a labeled file"),
                                 ("predict", cmd_predict, "predictions of a fine-tuned model")):
        e = sub.add_parser(name, help=helptext)
        e.add_argument("--model", required=True, help="fine-tuned directory (RUN/final)")
        e.add_argument("--data", required=True, help="labeled file, a GLUE directory, or image data")
        e.add_argument("--split", help="the split of a directory or .npz holding several [default: dev for text, "
                                       "test for images]")
        if name == "evaluate":
            e.add_argument("--metrics", type=_csv, help="metrics to report [default: the model's task's]")
        else:
            e.add_argument("--out", help="write TSV here instead of stdout")
            e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
        add_settings(e, ReadOptions)
        e.set_defaults(func=func)

    s2s = sub.add_parser("seq2seq", help="fine-tune an encoder-decoder (bart/mass) on text pairs, and generate")
    s2s = s2s.add_subparsers(dest="seq2seq_command", required=True)
    st = s2s.add_parser("train", help="fine-tune on (source, target) pairs; dev BLEU/chrF each epoch")
    add_settings(st, Seq2SeqConfig, title="data, model and generation")
    _run_options(st)
    st.set_defaults(func=cmd_seq2seq_train)
    sg = s2s.add_parser("generate", help="generate with a fine-tuned seq2seq model (BLEU when targets are given)")
    sg.add_argument("--model", required=True, help="fine-tuned directory (RUN/final)")
    sg.add_argument("--data", required=True)
    sg.add_argument("--out", help="write line/source/prediction TSV here instead of predictions on stdout")
    sg.add_argument("--quiet", action="store_true", help="no progress bar")
    sg.add_argument("--source-col", required=True, help="source column (0-based index with --no-header)")
    sg.add_argument("--target-col", help="target column: score the outputs against it (BLEU, chrF)")
    sg.add_argument("--no-header", action="store_true", help="the file has no header row")
    sg.add_argument("--beam", type=int, help="beam size (1 = greedy) [default: the fine-tuning run's]")
    sg.add_argument("--length-penalty", type=float, help="beam search length penalty [default: the fine-tuning run's]")
    sg.add_argument("--max-target-len", type=int, help="longest output in tokens [default: the fine-tuning run's]")
    sg.add_argument("--bleu-tokenize", help="sacrebleu tokenizer: 13a, intl, char (single words), none [default: "
                                            "the fine-tuning run's]")
    sg.add_argument("--skip-bad-rows", action="store_true")
    sg.set_defaults(func=cmd_seq2seq_generate)

    pl = sub.add_parser("plot", help="draw loss / perplexity / accuracy curves of runs into a PNG")
    pl.add_argument("runs", nargs="+")
    pl.add_argument("--out", default="curves.png")
    pl.add_argument("--metrics", type=_csv)
    pl.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    pl.set_defaults(func=cmd_plot)

    g = sub.add_parser("generate", help="continue prompts with a causal LM (greedy or sampled, KV cache)")
    g.add_argument("--model", required=True, help="causal-LM checkpoint directory (RUN/final of --objective clm)")
    g.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for a batch")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0, help="0 = no limit")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--stop", action="append", help="stop string (repeatable); the text ends before it")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every step")
    g.add_argument("--json", action="store_true", help="one JSON object per prompt")
    g.set_defaults(func=cmd_generate)

    ic = sub.add_parser("icl", help="zero/one/few-shot evaluation of a causal LM from task files (no training)")
    ic.add_argument("--model", help="causal-LM checkpoint directory")
    ic.add_argument("--tasks", type=_csv, help="built-in task names (see --list) or .yaml/.json task files")
    ic.add_argument("--shots", default="0,1,5", help="comma-separated numbers of demonstrations")
    ic.add_argument("--out", help="write results.json, table.md and the prompts used here")
    ic.add_argument("--data-root", default="../shared/data", help="what {data_root} in task files stands for")
    ic.add_argument("--limit", type=int, help="evaluate at most N documents per task")
    ic.add_argument("--overflow", choices=["error", "truncate"], default="error",
                    help="when the demonstrations do not fit the window: refuse (saying how many fit) or drop some")
    ic.add_argument("--batch-size", type=int, default=16)
    ic.add_argument("--window", type=int, help="prompt length limit [default: the length the model was trained on]")
    ic.add_argument("--list", action="store_true", help="print the built-in tasks")
    ic.add_argument("--overwrite", action="store_true")
    ic.add_argument("--quiet", action="store_true")
    ic.set_defaults(func=cmd_icl)

    pp = sub.add_parser("perplexity", help="perplexity of a causal LM on a text file, with a sliding window")
    pp.add_argument("--model", required=True, help="causal-LM checkpoint directory")
    pp.add_argument("--data", required=True, help="held-out text (.txt or .txt.gz)")
    pp.add_argument("--stride", type=int, help="tokens between window starts [default: window/2]")
    pp.add_argument("--window", type=int, help="tokens per window [default: the length the model was trained on]")
    pp.add_argument("--batch-size", type=int, default=4)
    pp.add_argument("--json", help="also write the result here")
    pp.add_argument("--quiet", action="store_true")
    pp.set_defaults(func=cmd_perplexity)

    sc = sub.add_parser("icl-scaling", help="pretrain causal LMs of increasing size, plot few-shot accuracy vs size")
    sc.add_argument("--out", required=True)
    sc.add_argument("--sizes", type=_csv, default=["tiny", "mini", "small"], help="presets to pretrain")
    sc.add_argument("--checkpoints", type=_csv, help="existing causal-LM checkpoints instead of pretraining")
    sc.add_argument("--corpus", help="prepared corpus [default: synthetic pattern episodes]")
    sc.add_argument("--tasks", type=_csv, default=["pattern"])
    sc.add_argument("--shots", default="0,1,5")
    sc.add_argument("--limit", type=int, default=200)
    sc.add_argument("--data-root", default="../shared/data")
    sc.add_argument("--overflow", choices=["error", "truncate"], default="error")
    sc.add_argument("--steps", type=int, default=300)
    sc.add_argument("--seq-len", type=int, default=128)
    sc.add_argument("--batch-size", type=int, default=16)
    sc.add_argument("--lr", type=float, default=3e-3)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--precision", default="auto")
    sc.add_argument("--overwrite", action="store_true")
    sc.add_argument("--quiet", action="store_true")
    add_settings(sc, ExecutorConfig)
    sc.set_defaults(func=cmd_icl_scaling)

    pr = sub.add_parser("probe", help="probes of what a pretrained model learned: bias, vision bias, word "
                                      "senses").add_subparsers(dest="probe_command", required=True)
    pb = pr.add_parser("bias", help="gender bias: paired prompts, occupation templates, stereotype sentence pairs")
    pb.add_argument("--model", required=True, help="pretrained checkpoint (causal LM: all probes; masked LM: (c))")
    pb.add_argument("--pair", action="append", help="'PROMPT A|PROMPT B' (repeatable), added to the defaults")
    pb.add_argument("--only-my-pairs", action="store_true", help="use only the --pair prompts")
    pb.add_argument("--samples", type=int, default=200, help="continuations sampled per prompt")
    pb.add_argument("--max-new-tokens", type=int, default=8)
    pb.add_argument("--top-words", type=int, default=10)
    pb.add_argument("--occupations", type=_csv, help="comma-separated occupations for the templates")
    pb.add_argument("--sentence-pairs", help="TSV of stereotype<TAB>anti-stereotype sentences [default: shipped]")
    pb.add_argument("--seed", type=int, default=0)
    pb.add_argument("--out", help="write bias.json, bias.md and bias.png here")
    pb.add_argument("--overwrite", action="store_true")
    pb.set_defaults(func=cmd_probe_bias)

    pv = pr.add_parser("vision-bias", help="images: transfer from a source skewed towards one stroke style vs a "
                                           "balanced one, accuracy per style on a balanced target task")
    add_settings(pv, VisionBiasConfig)
    pv.add_argument("--overwrite", action="store_true", help="start again instead of resuming --out")
    pv.set_defaults(func=cmd_probe_vision_bias)

    ex = sub.add_parser("export", help="a fine-tuned classifier for CPU inference: int8 Linear layers")
    ex.add_argument("--int8", required=True, metavar="MODEL",
                    help="fine-tuned directory (RUN/final) to quantize: dynamic int8 for every Linear layer "
                         "(weights int8, activations quantized per batch); evaluate/predict read the result")
    ex.add_argument("--out", required=True, help="the directory to write")
    ex.add_argument("--overwrite", action="store_true")
    ex.set_defaults(func=cmd_export)

    cv = sub.add_parser("convert", help="Hugging Face checkpoints (BERT, RoBERTa, GPT-2, BART) in and out")
    way = cv.add_mutually_exclusive_group(required=True)
    way.add_argument("--from-hf", help="a Hugging Face model directory (config.json, weights, tokenizer files)")
    way.add_argument("--to-hf", help="a transferlab checkpoint directory to write in Hugging Face format")
    cv.add_argument("--out", required=True, help="the directory to write")
    cv.add_argument("--overwrite", action="store_true")
    cv.add_argument("--quiet", action="store_true")
    cv.set_defaults(func=cmd_convert)

    d = sub.add_parser("demo", help="the whole story offline in minutes: pretraining beats scratch")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--quick", action="store_true", help="a smaller world and shorter runs (for tests)")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_demo)

    _grid_parser(sub, "compare", "methods x label budgets x seeds from a YAML spec, with a report",
                 "examples/compare_sst2.yaml", cmd_compare)
    pt = sub.add_parser("protocols", help="kNN, linear probes (logistic regression, a trained linear layer) and "
                                          "fine-tuning of one checkpoint on any labeled set, selected on dev")
    pt.add_argument("--model", required=True, help="checkpoint directory (RUN/final)")
    pt.add_argument("--train", required=True, help="labeled training data; an .npz or directory with several splits "
                                                   "may be given alone (dev = its val split, test = its test split)")
    pt.add_argument("--dev", help="labeled data to select on (default: the val split of --train)")
    pt.add_argument("--test", help="labeled data to report on (default with no --dev: the test split of --train)")
    # no argparse default: the help would wrap the hyphenated list mid-name
    pt.add_argument("--protocols", type=_csv, help="knn, logistic-probe, linear-probe (a trained linear layer), "
                                                   "finetune, scratch (default: all but scratch)")
    pt.add_argument("--budgets", type=_csv, default=["all"], help="label budgets, e.g. 10,100,all")
    pt.add_argument("--seeds", type=int, default=1)
    # the trained protocols' settings (linear-probe, finetune, scratch), as a compare spec's `train:` takes them
    add_settings(pt, ProtocolSettings, skip=[f.name for f in fields(ProtocolSettings) if f.name not in PROTOCOL_KEYS])
    # the pretraining setting's own converter: one definition of what an image size is
    size = _converter(PretrainConfig, field_of(PretrainConfig, "image_size"), type_hints(PretrainConfig)["image_size"])
    pt.add_argument("--image-size", type=size, metavar="H,W", help="images: resize every image to H,W while reading")
    pt.add_argument("--out", help="output directory (default runs/protocols/NAME); re-running into it resumes")
    pt.add_argument("--quiet", action="store_true", help="no progress bar, no printed table")
    pt.set_defaults(func=cmd_protocols)

    _grid_parser(sub, "multitask", "tasks trained jointly on one backbone vs each alone, from a YAML spec: "
                                   "per-task metrics, Δm, negative transfer flagged",
                 "examples/multitask_glue.yaml", cmd_multitask, MultitaskConfig, MultitaskConfig.train_keys())

    asx = sub.add_parser("assess", help="rank checkpoints for a labeled task from frozen features (LogME, kNN, "
                                        "linear probe), without fine-tuning them")
    asx.add_argument("--task", required=True, help="YAML with `task:` (train, dev, ...); a compare spec works")
    asx.add_argument("--checkpoints", nargs="+", required=True,
                     help="candidate directories, each DIR, NAME=DIR, or scratch:DIR (DIR's architecture, random "
                          "weights)")
    asx.add_argument("--against", help="a compare grid's results.jsonl (or JSON {name: score}): adds the fine-tuned "
                                       "scores and the Kendall tau of each ranking against them")
    asx.add_argument("--max-train", type=int, help="training examples whose features are scored (a stratified "
                                                   "sample) [default: the spec's max_train, else 2000]")
    asx.add_argument("--out", help="write assess.json and assess.md here")
    asx.add_argument("--quiet", action="store_true", help="no progress bar, no printed table")
    asx.set_defaults(func=cmd_assess)
    ps = pr.add_parser("senses", help="cosine similarity of one word's vectors across contexts (word2vec: all 1)")
    ps.add_argument("--model", required=True, help="any checkpoint directory (RUN/final)")
    ps.add_argument("--word", required=True)
    ps.add_argument("--contexts", nargs="+", required=True, help="two or more sentences containing the word")
    ps.add_argument("--max-len", type=int, default=128)
    ps.add_argument("--json", action="store_true", help="print the matrix as JSON")
    ps.set_defaults(func=cmd_probe_senses)
    return p


def _run_options(p):
    """What a training command does with its output directory (not settings of the run itself)."""
    p.add_argument("--resume", choices=["auto", "never"], default="never",
                   help="auto: continue the run in --out from its newest step checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (it is removed only once the new run has taken its first step)")


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for the command an interrupted run prints
    # One process (not torchrun, whose agent SIGTERMs every rank when one fails and where a checkpoint would wait on
    # the dead rank), on the main thread (signal handlers can only be set there): treat SIGTERM like Ctrl-C.
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1 and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if single else signal.SIG_DFL
    try:
        args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return 143 if isinstance(e, Terminated) else 130
    except OSError as e:  # disk full, read-only or unwritable output met outside the atomic writers
        where = f" '{e.filename}'" if e.filename else ""
        print(f"error: cannot read or write{where}: {e.strerror or e}. Free disk space or fix the permissions, then "
              f"run the command again (pretraining: add --resume auto to continue from the last checkpoint).",
              file=sys.stderr)
        return 2
    finally:
        if single:
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
