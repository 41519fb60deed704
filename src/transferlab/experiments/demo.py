"""`transferlab demo`: the whole story offline in a few minutes.

A synthetic world where transfer is needed by construction (``data.synthetic``): made-up words whose categories
show only in their contexts in a large unlabeled corpus, and a small labeled task whose dev sentences use only
words never seen in labeled training. We pretrain a tiny BERT with masked LM on the corpus, fine-tune it and a
from-scratch twin on the labeled task over several seeds, and report what we measured.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.corpus import prepare_corpus
from ..data.synthetic import make_world, write_world
from ..fsutil import clear_output_dir, write_json
from ..inputs.text import Tokenizer
from ..recipes.pretrain import PretrainConfig, pretrain
from ..transfer import from_pretrained
from .plots import plot_mean_std


@dataclass
class DemoSize:
    corpus_sentences: int
    pretrain_steps: int
    n_train: int
    n_dev: int
    epochs: int
    batch_size: int = 32
    seq_len: int = 64
    pretrain_batch: int = 64


FULL = DemoSize(corpus_sentences=120_000, pretrain_steps=3000, n_train=300, n_dev=400, epochs=10)
QUICK = DemoSize(corpus_sentences=8_000, pretrain_steps=60, n_train=64, n_dev=64, epochs=2, pretrain_batch=32)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(out: str | Path = "runs/demo", seeds: int = 3, quick: bool = False, overwrite: bool = False,
             progress: bool = True) -> dict:
    """Run the demo; write OUT/results.json, OUT/summary.md and OUT/curves.png. Returns the results."""
    size = QUICK if quick else FULL
    out = clear_output_dir(out, overwrite, "demo output")
    start = time.time()
    _say(f"[1/4] generating the synthetic world into {out / 'world'}")
    world = make_world(seed=0)
    paths = write_world(out / "world", world, corpus_sentences=size.corpus_sentences, n_train=size.n_train,
                        n_dev=size.n_dev, seed=0)

    _say("[2/4] training a tokenizer and tokenising the unlabeled corpus")
    tokenizer = Tokenizer.train([paths["corpus"]], kind="wordpiece", vocab_size=2000, progress=False)
    corpus = prepare_corpus([paths["corpus"]], tokenizer, out / "corpus", heldout_fraction=0.02, progress=False,
                            segment_tokens=512)

    _say(f"[3/4] pretraining a tiny encoder with masked LM for {size.pretrain_steps} steps")
    final = pretrain(PretrainConfig(corpus=str(corpus), out=str(out / "pretrain"), model="tiny",
                                    seq_len=size.seq_len, batch_size=size.pretrain_batch, steps=size.pretrain_steps,
                                    lr=2e-3, warmup=0.05, progress=progress, log_every=25,
                                    # the recipe the demo's figures (README) were measured with, kept when text
                                    # pretraining's default became Muon + wsd (docs/results/cpuhour.md)
                                    optimizer="adamw", schedule="linear"))
    pretrain_seconds = time.time() - start

    _say(f"[4/4] fine-tuning pretrained vs scratch, {seeds} seeds x {size.epochs} epochs on {size.n_train} "
         f"labeled sentences; dev uses only unseen words")
    curves: dict[str, list[list[float]]] = {"pretrained": [], "scratch": []}
    for seed in range(seeds):
        for init in ("pretrained", "scratch"):
            model = from_pretrained(final, num_labels=2, init=init, seed=seed, max_len=size.seq_len,
                                    verbose=seed == 0 and progress)
            model.compile(lr=1e-3, metrics=["accuracy"], warmup=0.1)
            history = model.fit(str(paths["train"]), validation_data=str(paths["dev"]), epochs=size.epochs,
                                batch_size=size.batch_size, seed=seed, verbose=False)
            curves[init].append(history.history["val_accuracy"])
            _say(f"  seed {seed} {init:>10}: dev accuracy {history.history['val_accuracy'][-1]:.3f}")

    results = _summarise(curves, size, seeds, pretrain_seconds, time.time() - start)
    write_json(out / "results.json", results)
    plot_mean_std(curves, out / "curves.png", xlabel="epoch", ylabel="dev accuracy (unseen words)",
                  title="Pretrained vs from-scratch on the synthetic task", xs=list(range(1, size.epochs + 1)),
                  baseline=0.5)
    (out / "summary.md").write_text(results["table"] + "\n\n" + results["conclusion"] + "\n", encoding="utf-8")
    print(results["table"])
    print()
    print(results["conclusion"])
    print(f"\nwrote {out / 'results.json'}, {out / 'summary.md'}, {out / 'curves.png'}")
    return results


def _summarise(curves, size: DemoSize, seeds: int, pretrain_seconds: float, total_seconds: float) -> dict:
    final = {k: np.array([c[-1] for c in v]) for k, v in curves.items()}
    best = {k: np.array([max(c) for c in v]) for k, v in curves.items()}
    rows = ["| init | final dev accuracy | best-epoch dev accuracy |", "|---|---|---|"]
    for k in curves:
        rows.append(f"| {k} | {final[k].mean():.3f} ± {final[k].std(ddof=1) if seeds > 1 else 0:.3f} | "
                    f"{best[k].mean():.3f} ± {best[k].std(ddof=1) if seeds > 1 else 0:.3f} |")
    gain = final["pretrained"].mean() - final["scratch"].mean()
    spread = max(final["pretrained"].std(ddof=1), final["scratch"].std(ddof=1)) if seeds > 1 else 0.0
    if gain > 2 * spread and gain > 0.05:
        verdict = (f"Pretraining helped: +{gain:.3f} accuracy over the from-scratch twin, more than twice the "
                   f"seed-to-seed spread ({spread:.3f}).")
    elif gain > 0:
        verdict = (f"Pretraining helped only a little: +{gain:.3f}, within about two seed standard deviations "
                   f"({spread:.3f}); the pretraining run may be too short.")
    else:
        verdict = f"Pretraining did not help here: {gain:+.3f} accuracy against scratch."
    conclusion = (f"{verdict} Chance is 0.5: the dev sentences use only words absent from the labeled training "
                  f"set, so only what the unlabeled corpus taught about those words can help. "
                  f"({seeds} seeds, mean ± std; pretraining + data took {pretrain_seconds:.0f} s, "
                  f"everything {total_seconds:.0f} s.)")
    return {"curves": curves, "final": {k: v.tolist() for k, v in final.items()}, "gain": float(gain),
            "spread": float(spread), "table": "\n".join(rows), "conclusion": conclusion,
            "size": size.__dict__, "seeds": seeds, "seconds": {"pretrain": pretrain_seconds, "total": total_seconds}}
