"""Time to quality: training time to a stated held-out loss, transferlab's default pretraining recipe against
Hugging Face `transformers`' usual one, side by side in one run.

What is compared, exactly:

- **ours**: `transferlab pretrain` as a user runs it, through the recipe and the one loop (``recipes.pretrain``):
  the preset (tiny by default) with its defaults, i.e. rotary positions, pre-norm, the tied LM head, no dropout,
  sparse masked-LM prediction (the head only on the masked rows), chunked cross-entropy, batch 64, and the recipe's
  optimizer and schedule: Muon for the trunk's matrices with AdamW for the rest (lr --lr, by default the preset's:
  3e-3 for tiny; weight decay 0.01 off biases and norms), 6% linear warm-up, the peak held, then linear decay to 0
  over the last 20% of --steps (wsd), clipping at 1.0. (Before issue 20's sweep the recipe was AdamW alone with
  linear decay, batch 32, lr 1e-3; the figures in docs/performance.md say which they ran.)
- **transformers**: ``BertForMaskedLM`` (masked LM) or ``GPT2LMHeadModel`` (causal LM) with the preset's layers,
  width, heads and feed-forward size (built as in ``benchmarks/throughput.py``, SDPA attention; otherwise the
  config defaults: learned positions, BERT's post-norm and LM-head transform, dropout 0.1 unless --hf-dropout),
  trained the way the HF ``Trainer`` trains: its default optimizer on torch >= 2.8 (fused ``torch.optim.AdamW``,
  betas 0.9/0.999, eps 1e-8), weight decay on the parameters ``Trainer.get_decay_parameter_names`` picks,
  ``get_linear_schedule_with_warmup``, clipping at 1.0 (``max_grad_norm``). The learning rate, warm-up steps and
  weight decay are ours, not the Trainer's defaults (5e-5, no warm-up, no decay): those are BERT-base fine-tuning
  values, and pretraining a small model from scratch at 5e-5 would make the peer look slow for a reason no user
  pretraining with it would accept. --hf-lr changes its rate alone.
- **the same on both sides**: the tokenizer and the batches (the prepared corpus's blocks in the recipe's seeded
  order, one ``BlockBatches`` stream, masked 15% with 80/10/10 by the recipe's corruption: the identical tensors),
  batch size, sequence length, precision (bf16 autocast where the CPU runs it natively, --precision to change,
  weights and loss fp32), thread count, schedule length (--steps) and the evaluation.
- **the loss**: the mean cross-entropy per predicted token on the same fixed held-out batches (the recipe's own
  held-out stream, ``evaluate_lm``, eval mode, no gradients, the training precision) every --eval-every steps.
  Masked LM: over the masked positions (HF's ``labels`` are -100 elsewhere, so its loss is the same mean); causal LM:
  over the T-1 next-token predictions of each block, which both sides shift the same way.
- **the clock**: training time only (--clock wall, or cpu: the process's CPU time, for one thread on a shared
  machine); each side's evaluations are timed apart and reported separately, model building is not timed. A side
  stops at the first evaluation at or below --target, when its clock passes --cap-s (its last evaluation then
  follows), or at --steps. The two sides alternate --chunk steps at a time in one process (a lockstep), so a burst
  of load on the machine hits both alike.

    python benchmarks/time_to_quality.py --corpus runs/cpuhour/corpus --objective mlm --target 7.0 --cap-s 600
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/time_to_quality.py --corpus runs/cpuhour/corpus \\
        --target 7.0 --cap-s 90 --threads 1 --clock cpu --json ttq.json

The table gives each side's time, steps and tokens to the target ("not reached in T" when it was not), the last
held-out loss, tokens/s and the evaluation time; then the ratio transformers time / ours (a lower bound when only
ours reached the target). --json writes both curves (held-out loss against steps, tokens and seconds) and every
training loss.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402  (the HF models, built as the throughput benchmark builds them)
from transferlab.errors import UserError  # noqa: E402
from transferlab.recipes.pretrain import PretrainConfig, pretrain, text_setup  # noqa: E402
from transferlab.training.callbacks import Callback  # noqa: E402
from transferlab.models.config import PRESETS  # noqa: E402
from transferlab.training.optim import default_pretrain_lr, warmup_steps_of  # noqa: E402
from transferlab.training.precision import autocast, configure_cpu, resolve_precision  # noqa: E402

OBJECTIVES = {"mlm": "BertForMaskedLM", "clm": "GPT2LMHeadModel"}
CLOCKS = throughput.CLOCKS
DEFAULTS = PretrainConfig()  # the recipe's defaults: preset, batch, length, lr, schedule length, evaluation size
HF_DROPOUT = 0.1  # BertConfig's and GPT2Config's default (hidden, attention and embedding dropout)


@dataclass
class Side:
    """One side's run as it goes: its clock, its curve, and why it stopped."""

    name: str
    model: str
    target: float
    cap_s: float
    clock: object
    train_s: float = 0.0
    eval_s: float = 0.0
    steps: int = 0
    tokens: int = 0
    stop: str | None = None  # "target", "cap" or "steps"
    reached: dict | None = None  # the first evaluation at or below the target
    curve: list = field(default_factory=list)  # {"step", "tokens", "seconds", "loss"} per evaluation
    train_losses: list = field(default_factory=list)

    def stepped(self, tokens: int, loss: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.train_losses.append(loss)
        if self.stop is None and self.train_s >= self.cap_s:
            self.stop = "cap"

    def evaluated(self, loss: float) -> None:
        point = {"step": self.steps, "tokens": self.tokens, "seconds": self.train_s, "loss": loss}
        if not self.curve or self.curve[-1]["step"] != self.steps:
            self.curve.append(point)
        if self.reached is None and loss <= self.target:
            self.reached = point
            self.stop = "target"

    def result(self) -> dict:
        final = self.curve[-1]["loss"] if self.curve else float("nan")
        return {"side": self.name, "model": self.model, "reached": self.reached is not None,
                "time_to_target_s": self.reached["seconds"] if self.reached else None,
                "steps_to_target": self.reached["step"] if self.reached else None,
                "tokens_to_target": self.reached["tokens"] if self.reached else None,
                "stop": self.stop or "steps", "steps": self.steps, "tokens": self.tokens, "train_s": self.train_s,
                "eval_s": self.eval_s, "final_loss": final, "tokens_per_s": self.tokens / max(self.train_s, 1e-9),
                "curve": self.curve, "train_losses": self.train_losses}


class LossOf(torch.nn.Module):
    """A `transformers` LM seen as a task module (``forward(batch) -> {"loss", "n_predictions"}``), so the
    recipe's own held-out evaluation scores it exactly as it scores ours."""

    def __init__(self, model, objective: str):
        super().__init__()
        self.model, self.objective = model, objective
        self.loss = throughput.loss_fn("transformers", objective, model)

    def forward(self, batch: dict) -> dict:
        if self.objective == "mlm":
            n = int((batch["labels"] != -100).sum())
        else:
            n = batch["input_ids"][:, 1:].numel()  # (B, T-1) next-token targets
        return {"loss": self.loss(batch), "n_predictions": n}


def hf_optimizer(model, lr: float, weight_decay: float, warmup_steps: int, steps: int):
    """The HF Trainer's optimizer and schedule (``create_optimizer`` / ``create_scheduler`` with the defaults on
    torch >= 2.8: fused AdamW, linear warm-up and decay), built with `transformers`' own helpers."""
    from transformers import Trainer, get_linear_schedule_with_warmup

    decay = set(Trainer.get_decay_parameter_names(None, model))  # uses no Trainer state
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    return opt, get_linear_schedule_with_warmup(opt, warmup_steps, steps)


def hf_training(side: Side, model, objective: str, data, evaluate, precision: str, steps: int, eval_every: int,
                lr: float, weight_decay: float, warmup_steps: int):
    """The peer's loop (the Trainer's inner loop: autocast forward, backward, clip, step, schedule, zero), a
    generator that yields after every step so the lockstep can interleave it with ours."""
    opt, scheduler = hf_optimizer(model, lr, weight_decay, warmup_steps, steps)
    step_loss = throughput.loss_fn("transformers", objective, model)
    scored = LossOf(model, objective)
    model.train()
    for step in range(steps):
        t0 = side.clock()  # from the batch on, as our loop's time (a Trainer's data loader is on its clock too)
        batch = data.batch(step)
        with autocast(precision):
            loss = step_loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        scheduler.step()
        opt.zero_grad(set_to_none=True)
        loss = float(loss.detach())
        side.train_s += side.clock() - t0
        side.stepped(batch["input_ids"].numel(), loss)
        if side.stop or (step + 1) % eval_every == 0 or step + 1 == steps:
            t0 = side.clock()
            model.eval()
            with torch.no_grad(), autocast(precision):
                side.evaluated(evaluate(scored)["loss"])
            model.train()
            side.eval_s += side.clock() - t0
        if side.stop:
            return
        yield


class Lockstep(Callback):
    """Times our loop (training only: evaluations apart), stops it at the target or the cap, and after every
    ``chunk`` of our steps runs the next ``chunk`` of the peer's (outside our clock)."""

    def __init__(self, side: Side, peer: list, chunk: int, tokens_per_step: int):
        self.side, self.peer, self.chunk, self.tokens_per_step = side, peer, chunk, tokens_per_step
        self.resumed = 0.0

    def on_fit_start(self, state) -> None:
        self.resumed = self.side.clock()

    def on_step_end(self, state, logs) -> None:
        self.side.train_s += self.side.clock() - self.resumed
        self.side.stepped(self.tokens_per_step, state.last_loss)
        state.should_stop = state.should_stop or self.side.stop is not None
        if state.step % self.chunk == 0:
            run_peer(self.peer, self.chunk)
        self.resumed = self.side.clock()

    def on_eval_end(self, state, metrics) -> None:
        self.side.eval_s += self.side.clock() - self.resumed
        self.side.evaluated(float(metrics["loss"]))
        state.should_stop = state.should_stop or self.side.stop is not None
        self.resumed = self.side.clock()


def run_peer(peer: list, steps: int | None) -> None:
    """Advance the peer's step generator (held in a one-item list, emptied when it is done) by ``steps`` steps
    (None: to its end)."""
    done = 0
    while peer and (steps is None or done < steps):
        try:
            next(peer[0])
        except StopIteration:
            peer.clear()
        done += 1


def race(corpus: str, objective: str = "mlm", model: str = DEFAULTS.model, target: float = 7.0,
         cap_s: float = 600.0, eval_every: int = 50, eval_batches: int = DEFAULTS.eval_batches,
         batch_size: int = DEFAULTS.batch_size, seq_len: int = DEFAULTS.seq_len, lr: float | None = None,
         hf_lr: float | None = None, hf_dropout: float = HF_DROPOUT, steps: int = DEFAULTS.steps,
         precision: str = DEFAULTS.precision, clock: str = "wall", chunk: int = 10, seed: int = DEFAULTS.seed,
         quiet: bool = True) -> dict:
    """Both sides to ``target`` (or ``cap_s`` seconds of training, or ``steps``), interleaved in chunks.

    Returns:
        {"sides": [ours, theirs], "ratio": transformers' time to target / ours, or None, "ratio_is_lower_bound"}:
        each side's dict as ``Side.result`` makes it.
    """
    clock_fn = CLOCKS[clock]
    configure_cpu()  # flush denormals on this thread, where both sides run (the loop does it for ours too)
    with tempfile.TemporaryDirectory(prefix="ttq-") as run:
        cfg = PretrainConfig(corpus=corpus, out=str(Path(run) / "ours"), objective=objective, model=model,
                             batch_size=batch_size, seq_len=seq_len, lr=lr, steps=steps, precision=precision,
                             eval_every=eval_every, eval_batches=eval_batches, seed=seed, save_every=None,
                             progress=not quiet)
        # The recipe's own data and evaluation, built a second time for the peer: the same seeded batch stream,
        # corruption and held-out batches our run trains and is scored on.
        setup = text_setup(cfg)
        lr = lr or default_pretrain_lr(setup.module.config.d_model)  # the recipe's default for the width
        data = setup.batches(batch_size, 0, 1)
        vocab = setup.inputs.vocab_size
        hf_cfg = throughput.config(model, objective, vocab, seq_len, hf_dropout)
        hf_model = throughput.build("transformers", objective, hf_cfg)
        tokens_per_step = data.batch(0)["input_ids"].numel()
        ours = Side("transferlab", type(setup.module).__name__, target, cap_s, clock_fn)
        theirs = Side("transformers", OBJECTIVES[objective], target, cap_s, clock_fn)
        warmup = warmup_steps_of(cfg.warmup, steps)  # the recipe's rule
        peer = [hf_training(theirs, hf_model, objective, data, setup.evaluate,
                            resolve_precision(precision), steps, eval_every, hf_lr or lr, cfg.weight_decay, warmup)]
        pretrain(cfg, callbacks=[Lockstep(ours, peer, chunk, tokens_per_step)])
        run_peer(peer, None)  # the peer goes on alone once ours has stopped
    rows = [ours.result(), theirs.result()]
    ratio, bound = None, False
    if rows[0]["reached"] and rows[1]["reached"]:
        ratio = rows[1]["time_to_target_s"] / rows[0]["time_to_target_s"]
    elif rows[0]["reached"]:  # the peer's time is at least what it trained
        ratio, bound = rows[1]["train_s"] / rows[0]["time_to_target_s"], True
    return {"sides": rows, "ratio": ratio, "ratio_is_lower_bound": bound}


def table(report: dict, target: float) -> str:
    """The printed table: one line per side, then the ratio in words."""
    lines = [f"{'side':<13} {'model':<16} {'time to ' + format(target, 'g'):>22} {'steps':>6} {'tokens':>11} "
             f"{'final loss':>10} {'tokens/s':>9} {'eval s':>7}"]
    for r in report["sides"]:
        if r["reached"]:
            when, steps, tokens = f"{r['time_to_target_s']:.1f} s", r["steps_to_target"], r["tokens_to_target"]
        else:
            when = f"not reached in {r['train_s']:.0f} s"
            steps, tokens = r["steps"], r["tokens"]
        lines.append(f"{r['side']:<13} {r['model']:<16} {when:>22} {steps:>6} {tokens:>11,} {r['final_loss']:>10.3f} "
                     f"{r['tokens_per_s']:>9,.0f} {r['eval_s']:>7.1f}")
    ours, theirs = report["sides"]
    if report["ratio"] is None:
        lines.append(f"ratio (transformers time / transferlab time): - (transferlab did not reach {target:g})")
    elif report["ratio_is_lower_bound"]:
        lines.append(f"ratio (transformers time / transferlab time): > {report['ratio']:.2f}x (transformers did not "
                     f"reach {target:g} in {theirs['train_s']:.0f} s)")
    else:
        lines.append(f"ratio (transformers time / transferlab time): {report['ratio']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="a `transferlab corpus prepare` output (with its tokenizer)")
    p.add_argument("--objective", choices=sorted(OBJECTIVES), default="mlm")
    p.add_argument("--preset", default=DEFAULTS.model, help="text preset: layers, width, heads, ff of both sides")
    p.add_argument("--target", type=float, required=True, help="held-out loss (nats per predicted token) to reach")
    p.add_argument("--cap-s", type=float, default=600.0, help="stop a side after this much training time")
    p.add_argument("--eval-every", type=int, default=50, help="steps between held-out evaluations")
    p.add_argument("--eval-batches", type=int, default=DEFAULTS.eval_batches, help="held-out batches per evaluation")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--seq-len", type=int, default=DEFAULTS.seq_len)
    p.add_argument("--lr", type=float, help="peak learning rate of both sides (default: the recipe's for the "
                                             "preset's width)")
    p.add_argument("--hf-lr", type=float, help="the transformers side's own peak rate (default: --lr)")
    p.add_argument("--hf-dropout", type=float, default=HF_DROPOUT,
                   help="dropout of the transformers side (its configs' default; ours pretrains without)")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps,
                   help="schedule length of both sides (warm-up, then linear decay to 0 here)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=DEFAULTS.precision,
                   help="both sides: auto = bf16 autocast where the CPU runs it natively")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: the process's CPU time (with --threads 1, on a shared machine)")
    p.add_argument("--chunk", type=int, default=10, help="steps each side runs before the other takes its turn")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--json", help="also write both curves and every training loss here")
    a = p.parse_args(argv)
    if a.clock == "cpu" and a.threads != 1:
        p.error("--clock cpu counts one thread's time; pass --threads 1 with it")
    for flag in ("cap_s", "eval_every", "eval_batches", "batch_size", "steps", "chunk", "threads"):
        if getattr(a, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(a, flag)}")
    torch.set_num_threads(a.threads)
    a.lr = a.lr or default_pretrain_lr(PRESETS[a.preset]["d_model"])
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} threads, "
          f"{a.objective} {a.preset}, batch {a.batch_size} x {a.seq_len}, corpus {a.corpus}, precision "
          f"{resolve_precision(a.precision)}, ours {DEFAULTS.optimizer} + {DEFAULTS.schedule} at lr {a.lr:g} "
          f"(transformers adamw + linear at {a.hf_lr or a.lr:g}, dropout "
          f"{a.hf_dropout:g}), schedule {a.steps} steps, target {a.target:g}, cap {a.cap_s:g} s, {a.clock} clock, "
          f"evaluation every {a.eval_every} steps on {a.eval_batches} held-out batches", flush=True)
    try:
        report = race(a.corpus, a.objective, a.preset, a.target, a.cap_s, a.eval_every, a.eval_batches,
                      a.batch_size, a.seq_len, a.lr, a.hf_lr, a.hf_dropout, a.steps, a.precision, a.clock, a.chunk,
                      a.seed)
    except UserError as e:
        raise SystemExit(f"error: {e}") from None
    print(table(report, a.target), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), **report}, indent=2))
    return report


if __name__ == "__main__":
    main()
