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


def _noise(value: str) -> dict[str, float]:
    """"infill=0.3,permute=1" -> {"infill": 0.3, "permute": 1.0}"""
    out = {}
    for item in _csv(value):
        key, sep, number = item.partition("=")
        try:
            out[key.strip()] = float(number)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{item}' is not KEY=NUMBER (e.g. infill=0.3,permute=1)") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"'{item}' is not KEY=NUMBER (e.g. infill=0.3,permute=1)")
    return out


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
    from .training.distributed import init_from_env, is_main
    from .recipes.pretrain import PretrainConfig, pretrain

    init_from_env(a.device)
    cfg = PretrainConfig(corpus=a.corpus, data=a.data, augment=a.augment, image_size=a.image_size, out=a.out,
                         objective=a.objective, model=a.model, seq_len=a.seq_len,
                         batch_size=a.batch_size, steps=a.steps, lr=a.lr, warmup=a.warmup, schedule=a.schedule,
                         grad_accum=a.grad_accum, mask_prob=a.mask_prob, lm_head=a.lm_head, norm=a.norm,
                         position=a.position, eval_every=a.eval_every, eval_batches=a.eval_batches,
                         save_every=a.save_every, seed=a.seed, precision=a.precision, device=a.device,
                         progress=not a.quiet, log_every=a.log_every, on_nan=a.on_nan, distributed=a.distributed)
    cfg.family, cfg.decoder_layers, cfg.noise = a.family, a.decoder_layers, a.noise  # encoder-decoder settings
    cfg.init = a.init
    final = pretrain(cfg, resume=a.resume == "auto", overwrite=a.overwrite)
    if is_main():
        print(f"wrote {final}")


def cmd_finetune(a):
    from .training.distributed import init_from_env, is_main
    from .recipes.finetune import FinetuneConfig, finetune

    init_from_env(a.device)
    cfg = FinetuneConfig(init=a.init, like=a.like, train=a.train, dev=a.dev, test=a.test, out=a.out, task=a.task,
                         augment=a.augment, image_size=a.image_size,
                         text_cols=a.text_cols, label_col=a.label_col, label_names=a.label_names,
                         num_labels=a.num_labels, metrics=a.metrics, epochs=a.epochs, batch_size=a.batch_size,
                         lr=a.lr, warmup=a.warmup, max_len=a.max_len, seed=a.seed, precision=a.precision,
                         skip_bad_rows=a.skip_bad_rows, progress=not a.quiet, method=a.method,
                         lora_rank=a.lora_rank, pooling=a.pooling, device=a.device, distributed=a.distributed)
    history, results = finetune(cfg, overwrite=a.overwrite)
    if not is_main():
        return
    if "final" in results:
        print("dev: " + ", ".join(f"{k}={v:.4f}" for k, v in results["final"].items()) +
              f"  (best epoch {results['best_epoch']})")
    if "test" in results:
        print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in results["test"].items()))
    print(f"wrote {Path(a.out) / 'final'}")


def cmd_seq2seq_train(a):
    from .recipes.seq2seq import Seq2SeqConfig, finetune_seq2seq

    cfg = Seq2SeqConfig(init=a.init, like=a.like, train=a.train, dev=a.dev, dev_fraction=a.dev_fraction, out=a.out,
                        source_col=a.source_col, target_col=a.target_col, header=not a.no_header,
                        max_examples=a.max_examples, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                        warmup=a.warmup, max_len=a.max_len, max_target_len=a.max_target_len, beam=a.beam,
                        length_penalty=a.length_penalty, bleu_tokenize=a.bleu_tokenize, eval_sources=a.eval_sources,
                        seed=a.seed, precision=a.precision, skip_bad_rows=a.skip_bad_rows, progress=not a.quiet)
    results = finetune_seq2seq(cfg, overwrite=a.overwrite)
    if "final" in results:
        print("dev: " + ", ".join(f"{k}={v:.4f}" for k, v in results["final"].items() if k not in ("step", "epoch")))
    print(f"wrote {Path(a.out) / 'final'}")


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
    from .transfer import load

    model = load(a.model)
    data = model.read(a.data, a.split, require_labels=a.command == "evaluate", text_cols=a.text_cols,
                      label_col=a.label_col, skip_bad_rows=a.skip_bad_rows, resize=a.image_size)
    if getattr(data, "skipped", None):
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


def cmd_convert(a):
    from .transfer.convert import from_hf, to_hf

    convert = from_hf if a.from_hf else to_hf
    print(f"wrote {convert(a.from_hf or a.to_hf, a.out, overwrite=a.overwrite, verbose=not a.quiet)}")


def cmd_demo(a):
    from .experiments.demo import run_demo

    run_demo(a.out, seeds=a.seeds, quick=a.quick, overwrite=a.overwrite)


def _executor(a):
    from .experiments.executors import ExecutorConfig

    return ExecutorConfig(executor=a.executor, workers=a.workers, threads=a.threads, address=a.address)


def cmd_compare(a):
    from .experiments.compare import run_compare

    run_compare(a.spec, a.out, progress=not a.quiet, executor=_executor(a))


def cmd_multitask(a):
    from .experiments.multitask import run_multitask

    run_multitask(a.spec, a.out, progress=not a.quiet, executor=_executor(a))


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
    from .fsutil import write_json

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
    from .experiments.vision_bias import VisionBiasConfig, run_vision_bias

    cfg = VisionBiasConfig(data=a.data, out=a.out, skew=a.skew, styles=tuple(a.styles), model=a.model, steps=a.steps,
                           batch_size=a.batch_size, lr=a.lr, augment=a.augment, source_size=a.source_size,
                           target=a.target, target_labels=a.target_labels, transfer_steps=a.transfer_steps,
                           transfer_batch_size=a.transfer_batch_size, probe_lr=a.probe_lr,
                           finetune_lr=a.finetune_lr, seeds=a.seeds, precision=a.precision, progress=not a.quiet)
    result = run_vision_bias(cfg, overwrite=a.overwrite)
    print("\n".join(result["conclusion"]))
    print(f"wrote {Path(a.out) / 'vision_bias.md'}")


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

    r = sub.add_parser("pretrain", help="pretrain a backbone: self-supervised on text, supervised on labeled images")
    r.add_argument("--corpus", help="text objectives: a directory written by `corpus prepare`")
    r.add_argument("--data", help="image objectives: labeled images (MNIST idx directory, MedMNIST .npz, a folder with "
                                  "a sub-folder per class, or a CSV of path,label)")
    r.add_argument("--objective", default="mlm", help="text: mlm (BERT, encoder) or clm (GPT, decoder); plm (XLNet), "
                   "mpnet, electra (encoder); bart or mass (encoder-decoder); word2vec (word vectors); elmo "
                   "(bidirectional LSTM). images: supervised (a classifier on the labels, e.g. MNIST for ImageNet)")
    r.add_argument("--model", help="preset: text tiny (default), mini, small, medium, base; images resnet-tiny, "
                                   "resnet-mini, resnet-small (default), resnet18, vit-tiny, vit-mini, vit-small")
    _image_options(r)
    r.add_argument("--steps", type=int, default=1000)
    r.add_argument("--out", required=True, help="run directory")
    r.add_argument("--seq-len", type=int, default=128)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--grad-accum", type=int, default=1)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--warmup", type=float, default=0.06, help="fraction of steps (<1) or steps")
    r.add_argument("--schedule", default="linear", help="linear, cosine or constant")
    r.add_argument("--mask-prob", type=float,
                   help="corruption rate; default: the objective's own (mlm/mpnet/electra 0.15, plm 1/6)")
    r.add_argument("--lm-head", choices=["tied", "bert"], default="tied",
                   help="tied embedding only, or BERT's transform + bias")
    r.add_argument("--norm", choices=["pre", "post"], default="pre",
                   help="encoder LayerNorm placement; post (with --lm-head bert) is BERT's, exportable with --to-hf")
    r.add_argument("--position", choices=["rotary", "learned"], default="rotary",
                   help="rotary (RoPE in attention; much faster to leave the early plateau) or learned (BERT/GPT-2's "
                        "position table, needed for --to-hf)")
    r.add_argument("--init", help="continue pretraining from this checkpoint (e.g. on your own domain's text): its "
                                   "architecture and tokenizer are kept, --model/--norm/--position/--lm-head unused")
    r.add_argument("--eval-every", type=int)
    r.add_argument("--eval-batches", type=int, default=20, help="batches of held-out data per evaluation")
    r.add_argument("--save-every", type=int, help="write a resumable step checkpoint every N steps")
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--resume", choices=["auto", "never"], default="never")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--family", choices=["encoder", "decoder", "encoder_decoder"],
                   help="check the backbone family (default: the one the objective needs)")
    r.add_argument("--decoder-layers", type=int, help="bart/mass: decoder blocks (default: as many as the encoder)")
    r.add_argument("--noise", type=_noise,
                   help="bart: mask,delete,infill,permute,rotate rates and poisson_lambda, e.g. infill=0.3,permute=1; "
                        "mass: span=0.5")
    r.add_argument("--on-nan", choices=["stop", "skip"], default="stop",
                   help="on a NaN/inf loss: stop (keeping the last good checkpoint) or skip the batch, counted in "
                        "metrics.jsonl; more than 10 bad batches in a row still stop")
    _common_train(r)
    _distributed(r)
    r.set_defaults(func=cmd_pretrain)

    f = sub.add_parser("finetune", help="fine-tune a pretrained backbone (or a scratch twin) with a new head")
    f.add_argument("--init", required=True, help="checkpoint directory (e.g. RUN/final), or 'scratch'")
    f.add_argument("--like", help="with --init scratch: copy this checkpoint's architecture and tokenizer")
    f.add_argument("--train", required=True, help="labeled file (.tsv/.csv/.jsonl) or a GLUE task directory")
    f.add_argument("--dev", help="validation file or GLUE task directory (images: the val split of --dev)")
    f.add_argument("--test", help="labeled test data, evaluated once after training (images: the test split)")
    f.add_argument("--out", required=True)
    _image_options(f)
    f.add_argument("--task", choices=["classification", "regression"])
    f.add_argument("--label-names", type=_csv, help="comma-separated label set, in id order")
    f.add_argument("--num-labels", type=int)
    f.add_argument("--metrics", type=_csv, help="accuracy,f1,mcc,pearson,spearman")
    f.add_argument("--epochs", type=float, default=3)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--lr", type=float, default=5e-5)
    f.add_argument("--warmup", type=float, default=0.1)
    f.add_argument("--max-len", type=int, default=128)
    f.add_argument("--method", choices=["finetune", "linear-probe", "gradual-unfreeze", "lora"], default="finetune",
                   help="what trains: everything, only the head (frozen backbone), ULMFiT gradual unfreezing, "
                        "or LoRA adapters + head")
    f.add_argument("--lora-rank", type=int, default=8)
    f.add_argument("--pooling", choices=["mean", "cls", "last"],  # heads.POOLINGS (the CLI imports no torch)
                   help="how the head reads the sequence; default: mean of the tokens (last token for causal "
                        "models). cls is BERT's first token, what Hugging Face classifiers export")
    f.add_argument("--overwrite", action="store_true")
    _columns(f)
    _common_train(f)
    _distributed(f)
    f.set_defaults(func=cmd_finetune)

    for name, func, helptext in (("evaluate", cmd_evaluate, "metrics of a fine-tuned model on a labeled file"),
                                 ("predict", cmd_predict, "predictions of a fine-tuned model")):
        e = sub.add_parser(name, help=helptext)
        e.add_argument("--model", required=True, help="fine-tuned directory (RUN/final)")
        e.add_argument("--data", required=True, help="labeled file, a GLUE directory, or image data")
        e.add_argument("--split", help="the split of a directory or .npz holding several (default: dev for text, "
                                       "test for images)")
        e.add_argument("--image-size", type=_size, help="images: resize every image to H,W while reading")
        if name == "evaluate":
            e.add_argument("--metrics", type=_csv)
        else:
            e.add_argument("--out", help="write TSV here instead of stdout")
            e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
        _columns(e)
        e.set_defaults(func=func)

    s2s = sub.add_parser("seq2seq", help="fine-tune an encoder-decoder (bart/mass) on text pairs, and generate")
    s2s = s2s.add_subparsers(dest="seq2seq_command", required=True)
    st = s2s.add_parser("train", help="fine-tune on (source, target) pairs; dev BLEU/chrF each epoch")
    st.add_argument("--init", required=True, help="a bart/mass checkpoint directory (RUN/final), or 'scratch'")
    st.add_argument("--like", help="with --init scratch: copy this checkpoint's architecture and tokenizer")
    st.add_argument("--train", required=True, help="pairs file (.tsv/.csv/.jsonl, optionally .gz)")
    st.add_argument("--dev", help="dev pairs file")
    st.add_argument("--dev-fraction", type=float, help="instead of --dev: hold out this fraction of the sources")
    st.add_argument("--max-examples", type=int, help="use only the first N training rows")
    st.add_argument("--out", required=True)
    st.add_argument("--epochs", type=float, default=3)
    st.add_argument("--batch-size", type=int, default=32)
    st.add_argument("--lr", type=float, default=1e-4)
    st.add_argument("--warmup", type=float, default=0.1)
    st.add_argument("--max-len", type=int, default=64, help="source tokens kept")
    st.add_argument("--eval-sources", type=int, default=500, help="distinct dev sources generated per evaluation")
    st.add_argument("--overwrite", action="store_true")
    sg = s2s.add_parser("generate", help="generate with a fine-tuned seq2seq model (BLEU when targets are given)")
    sg.add_argument("--model", required=True, help="fine-tuned directory (RUN/final)")
    sg.add_argument("--data", required=True)
    sg.add_argument("--out", help="write line/source/prediction TSV here instead of predictions on stdout")
    sg.add_argument("--quiet", action="store_true", help="no progress bar")
    for q, train_side in ((st, True), (sg, False)):
        q.add_argument("--source-col", required=True, help="source column (0-based index with --no-header)")
        q.add_argument("--target-col", required=train_side, help="target column")
        q.add_argument("--no-header", action="store_true", help="the file has no header row")
        q.add_argument("--beam", type=int, default=4 if train_side else None, help="beam size (1 = greedy)")
        q.add_argument("--length-penalty", type=float, default=1.0 if train_side else None)
        q.add_argument("--max-target-len", type=int, default=32 if train_side else None,
                       help="longest output in tokens")
        q.add_argument("--bleu-tokenize", default="13a" if train_side else None,
                       help="sacrebleu tokenizer: 13a, intl, char (single words), none")
        q.add_argument("--skip-bad-rows", action="store_true")
    _common_train(st)
    st.set_defaults(func=cmd_seq2seq_train)
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
    ic.add_argument("--window", type=int, help="prompt length limit (default: the length the model was trained on)")
    ic.add_argument("--list", action="store_true", help="print the built-in tasks")
    ic.add_argument("--overwrite", action="store_true")
    ic.add_argument("--quiet", action="store_true")
    ic.set_defaults(func=cmd_icl)

    pp = sub.add_parser("perplexity", help="perplexity of a causal LM on a text file, with a sliding window")
    pp.add_argument("--model", required=True, help="causal-LM checkpoint directory")
    pp.add_argument("--data", required=True, help="held-out text (.txt or .txt.gz)")
    pp.add_argument("--stride", type=int, help="tokens between window starts (default window/2)")
    pp.add_argument("--window", type=int, help="tokens per window (default: the length the model was trained on)")
    pp.add_argument("--batch-size", type=int, default=4)
    pp.add_argument("--json", help="also write the result here")
    pp.add_argument("--quiet", action="store_true")
    pp.set_defaults(func=cmd_perplexity)

    sc = sub.add_parser("icl-scaling", help="pretrain causal LMs of increasing size, plot few-shot accuracy vs size")
    sc.add_argument("--out", required=True)
    sc.add_argument("--sizes", type=_csv, default=["tiny", "mini", "small"], help="presets to pretrain")
    sc.add_argument("--checkpoints", type=_csv, help="existing causal-LM checkpoints instead of pretraining")
    sc.add_argument("--corpus", help="prepared corpus (default: synthetic pattern episodes)")
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
    _executor_options(sc)
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
    pb.add_argument("--sentence-pairs", help="TSV of stereotype<TAB>anti-stereotype sentences (default: shipped)")
    pb.add_argument("--seed", type=int, default=0)
    pb.add_argument("--out", help="write bias.json, bias.md and bias.png here")
    pb.add_argument("--overwrite", action="store_true")
    pb.set_defaults(func=cmd_probe_bias)

    pv = pr.add_parser("vision-bias", help="images: transfer from a source skewed towards one stroke style vs a "
                                           "balanced one, accuracy per style on a balanced target task",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pv.add_argument("--data", required=True, help="a labeled image set with train (source) and test (target) splits, "
                                                  "e.g. ../shared/data/mnist")
    pv.add_argument("--out", required=True, help="writes vision_bias.json/.md/.png and runs/ here; running again "
                                                 "with the same settings resumes")
    pv.add_argument("--skew", type=float, default=0.95, help="share of style A in the skewed source, in [0.5, 1)")
    pv.add_argument("--styles", type=_csv, default=["thick", "thin"],
                    help="style A (the skewed majority),style B: thin, thick, inverted, plain")
    pv.add_argument("--model", default="resnet-tiny", help="image preset pretrained on each source")
    pv.add_argument("--steps", type=int, default=500, help="pretraining steps per source and seed")
    pv.add_argument("--batch-size", type=int, default=128, help="pretraining batch")
    pv.add_argument("--lr", type=float, default=2e-3, help="pretraining learning rate")
    pv.add_argument("--augment", default="light", help="pretraining augmentation recipe (with KEY=VALUE overrides)")
    pv.add_argument("--source-size", type=int, help="source images, a seeded subset (default: the whole train split)")
    pv.add_argument("--target", choices=["parity", "low"], default="parity",
                    help="the target task: class id even/odd, or lower/upper half of the classes (digit < 5)")
    pv.add_argument("--target-labels", type=int, default=400, help="labeled target images to train the new head")
    pv.add_argument("--transfer-steps", type=int, default=300)
    pv.add_argument("--transfer-batch-size", type=int, default=64)
    pv.add_argument("--probe-lr", type=float, default=1e-2, help="learning rate of the linear probe")
    pv.add_argument("--finetune-lr", type=float, default=1e-3, help="learning rate of full fine-tuning")
    pv.add_argument("--seeds", type=int, default=3)
    pv.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    pv.add_argument("--overwrite", action="store_true", help="start again instead of resuming --out")
    pv.add_argument("--quiet", action="store_true", help="no progress bars")
    pv.set_defaults(func=cmd_probe_vision_bias)

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

    _spec_grid_parser(sub, "compare", cmd_compare, "methods x label budgets x seeds from a YAML spec, with a report",
                      "examples/compare_sst2.yaml", "table")
    _spec_grid_parser(sub, "multitask", cmd_multitask, "tasks trained jointly on one backbone vs each alone, from a "
                      "YAML spec: per-task metrics, Δm, negative transfer flagged", "examples/multitask_glue.yaml",
                      "report")

    asx = sub.add_parser("assess", help="rank checkpoints for a labeled task from frozen features (LogME, kNN, "
                                        "linear probe), without fine-tuning them")
    asx.add_argument("--task", required=True, help="YAML with `task:` (train, dev, ...); a compare spec works")
    asx.add_argument("--checkpoints", nargs="+", required=True,
                     help="candidate directories, each DIR, NAME=DIR, or scratch:DIR (DIR's architecture, random "
                          "weights)")
    asx.add_argument("--against", help="a compare grid's results.jsonl (or JSON {name: score}): adds the fine-tuned "
                                       "scores and the Kendall tau of each ranking against them")
    asx.add_argument("--max-train", type=int, help="training examples whose features are scored (a stratified "
                                                   "sample; default: the spec's max_train, else 2000)")
    asx.add_argument("--out", help="write assess.json and assess.md here")
    asx.add_argument("--quiet", action="store_true")
    asx.set_defaults(func=cmd_assess)
    ps = pr.add_parser("senses", help="cosine similarity of one word's vectors across contexts (word2vec: all 1)")
    ps.add_argument("--model", required=True, help="any checkpoint directory (RUN/final)")
    ps.add_argument("--word", required=True)
    ps.add_argument("--contexts", nargs="+", required=True, help="two or more sentences containing the word")
    ps.add_argument("--max-len", type=int, default=128)
    ps.add_argument("--json", action="store_true", help="print the matrix as JSON")
    ps.set_defaults(func=cmd_probe_senses)
    return p


def _common_train(p):
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", help="auto, bf16 or fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _spec_grid_parser(sub, name: str, func, help: str, example: str, printed: str) -> None:
    """A subcommand that runs (or resumes) a YAML spec's grid into runs/NAME/SPEC_NAME."""
    p = sub.add_parser(name, help=help)
    p.add_argument("spec", help=f"YAML spec (see {example})")
    p.add_argument("--out", help=f"output directory (default: the spec's `out:`, else runs/{name}/NAME); "
                                 f"re-running into it resumes")
    p.add_argument("--quiet", action="store_true", help=f"no progress bar, no printed {printed}")
    _executor_options(p)
    p.set_defaults(func=func)


def _executor_options(p):
    # experiments.executors.ExecutorConfig validates these (the CLI imports no torch)
    p.add_argument("--workers", default="auto",
                   help="runs at a time: N worker processes on this machine (1: one after another in this "
                        "process), or with --executor ray the most runs in flight; default auto: as many as the "
                        "cores and memory allow, at most the runs left")
    p.add_argument("--threads", type=int, help="torch threads per run (default: the cores divided among the "
                                               "workers; 1 with Ray). Rows are identical across executors at the "
                                               "same thread count")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: worker processes on this machine; ray: Ray tasks on a cluster")
    p.add_argument("--address", help="with --executor ray: the cluster's HOST:PORT (`ray start --head` prints it), "
                                     "ray://HOST:PORT or auto; default: start a local Ray in this process. The "
                                     "workers read data and checkpoints from the same paths, so every node must "
                                     "see them")


def _distributed(p):
    p.add_argument("--distributed", choices=["ddp", "fsdp"], default="ddp",
                   help="under torchrun with several processes: ddp (a model copy per process) or fsdp (parameters, "
                        "gradients and optimizer state sharded over the processes, for models too big for one "
                        "device); checkpoints are the same either way")


def _size(value: str) -> tuple[int, int]:
    """"28" -> (28, 28); "32,48" -> (32, 48)"""
    try:
        parts = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an image size: give H,W (e.g. 28,28) or one number") \
            from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"'{value}' is not an image size: give H,W (e.g. 28,28) or one number")
    return parts[0], parts[1]


def _image_options(p):
    p.add_argument("--augment", help="images: an augmentation recipe (none, light, xray) with KEY=VALUE overrides, "
                                     "e.g. xray,rotation=5,hflip=1; flips are off by default (left and right matter "
                                     "on X-rays)")
    p.add_argument("--image-size", type=_size, help="images: resize every image to H,W while reading")


def _columns(p):
    p.add_argument("--text-cols", type=_csv, help="comma-separated text column names (1 or 2)")
    p.add_argument("--label-col")
    p.add_argument("--skip-bad-rows", action="store_true", help="drop malformed rows (they are listed)")


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
