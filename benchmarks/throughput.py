"""Throughput: transferlab against Hugging Face `transformers`, same configuration, side by side in one run.

Workloads (each on the same batches, same optimizer, same number of steps on both sides):
  mlm       masked-LM pretraining, encoder (`BertForMaskedLM` on the HF side)
  clm       causal-LM pretraining, decoder (`GPT2LMHeadModel`)
  bart      BART denoising pretraining, encoder-decoder (`BartForConditionalGeneration`; text infilling 30% +
            sentence permutation, BART's recipe; post-norm with learned positions on both sides)
  finetune  sentence-pair classification fine-tuning (`BertForSequenceClassification`)
  infer     classifier inference latency at batch 1 and batch 32 (no gradients)

For each it prints tokens/s (or ms per batch), the ratio to `transformers` with bf16 autocast (the peer's best
configuration on a CPU with bf16 units: what a user comparing tools turns on) and to `transformers` in its default
fp32, model-FLOPs utilisation of every row against the machine's bf16 matmul peak measured in the same run (so each
ratio sits beside the physical ceiling of both sides), the loss reached after the same number of steps (speed must
not be bought with accuracy) and the peak RSS of the process that ran it: every (workload, side) runs in a child
process of its own, so the RSS is that configuration's alone. Inference also gets its batch-1 ratios.

    python benchmarks/throughput.py                                  # mini, all workloads
    python benchmarks/throughput.py --models mini,small --workloads mlm,clm
    python benchmarks/throughput.py --workloads mlm,clm --steps 200 --corpus runs/real2/corpus   # equal-steps loss
    python benchmarks/throughput.py --compile                        # also transferlab under torch.compile
    python benchmarks/throughput.py --workloads finetune,infer --pooling cls   # the classifier transformers has

transferlab runs as a user gets it (precision "auto": bf16 autocast where the CPU has AMX/AVX512-BF16, sparse
MLM head, chunked cross-entropy, SDPA); `transformers` runs under the same bf16 autocast (the baseline) and in its
default fp32 (the second column). Both sides use BERT's LM-head transform for MLM and a tied, bias-free head for CLM,
so the architectures are identical. The classifier (finetune, infer) pools as the library does by default (the mean of
the tokens for an encoder); ``--pooling cls`` reads [CLS] through BERT's pooler as `transformers` does, and then our
last block computes that position alone. Our inference runs as ``predict_logits`` does: bf16 weights held for the
whole pass instead of autocast's cast on every call. BART's tokens are the clean tokens reconstructed (the decoder's targets), as
pretraining counts them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferlab.models import build_backbone, preset  # noqa: E402
from transferlab.objectives import BartCorruption, CausalLM, DenoisingLM, MaskedLM, MLMCorruption  # noqa: E402
from transferlab.objectives.classification import SequenceClassifier  # noqa: E402
from transferlab.training.optim import build_optimizer  # noqa: E402
from transferlab.training.precision import autocast, configure_cpu, inference_weights, resolve_precision  # noqa: E402

WORKLOADS = ("mlm", "clm", "bart", "finetune", "infer")
SENTENCE_END = 7  # synthetic ids: the most frequent Zipfian id ends a sentence (about one token in ten)
WARMUP = 3
# "cpu": the process's CPU time, right for one thread on a shared machine, where a job pinned to a core still got
# 15-40% of it at times and wall-clock figures mean little (benchmarks/images.py measures the same way).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10, clock=time.perf_counter) -> float:
    """GFLOP/s of an n x n matmul on this machine: the ceiling model-FLOPs utilisation is measured against.
    ``clock``: time.process_time measures a single thread's own time on a shared core (benchmarks/images.py)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = clock()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (clock() - t0) / 1e9


def config(model: str, workload: str, vocab: int, seq_len: int, dropout: float):
    family = {"clm": "decoder", "bart": "encoder_decoder"}.get(workload, "encoder")
    bart = dict(norm="post", position="learned") if workload == "bart" else {}  # Hugging Face BART's layout
    return preset(model, family, vocab, dropout=dropout, max_len=max(512, seq_len),
                  lm_head="bert" if workload == "mlm" else "tied", **bart)


def model_flops_per_token(cfg, workload: str, seq_len: int, predicted_fraction: float,
                          encoder_fraction: float = 1.0, pooling: str | None = None) -> float:
    """FLOPs one token needs (forward + backward = 3x forward; forward only for inference): 2 per weight in the
    blocks, 4·T·d per layer for attention scores and values, and the vocabulary projection only for the tokens
    that are predicted (all of them in CLM and BART, the masked ones in MLM). Counted the same for both sides.
    BART's token is a decoder target; its encoder reads ``encoder_fraction`` tokens per target (infilling shortens
    the input), and each decoder layer adds cross-attention (q/o per target, k/v per encoder token). A classifier
    pooling one position ("cls": the only one `transformers`' BERT classifier reads) needs only keys and values of
    the last block at every token, the rest of that block once per sequence: counted so on both sides, as MLM's
    vocabulary projection is (the side that computes the rest does work the prediction never reads)."""
    d, L = cfg.d_model, cfg.n_layer
    block = L * (4 * d * d + 2 * d * cfg.d_ff)
    forward = 2 * block + L * 4 * seq_len * d
    if workload == "bart":
        S = encoder_fraction * seq_len
        encoder = encoder_fraction * (2 * block + L * 4 * S * d)
        per_layer = 2 * (4 * d * d + 2 * d * d + 2 * d * cfg.d_ff) + 4 * seq_len * d + 4 * S * d
        decoder = cfg.n_dec_layer * (per_layer + encoder_fraction * 2 * 2 * d * d)
        forward = encoder + decoder + 2 * d * cfg.vocab_size
    elif workload == "mlm":
        forward += predicted_fraction * 2 * (d * cfg.vocab_size + d * d)
    elif workload == "clm":
        forward += 2 * d * cfg.vocab_size
    elif pooling in ("cls", "last"):
        per_layer = 2 * (4 * d * d + 2 * d * cfg.d_ff) + 4 * seq_len * d
        forward += 2 * 2 * d * d + (2 * (2 * d * d + 2 * d * cfg.d_ff) + 4 * seq_len * d) / seq_len - per_layer
    return forward if workload == "infer" else 3 * forward


# ---------------------------------------------------------------------------------------------------- data


def token_batches(n: int, batch: int, seq_len: int, vocab: int, corpus: str | None, seed: int = 0) -> list:
    """(batch, seq_len) id tensors: blocks of a prepared corpus, or Zipfian ids (so a loss curve means something)."""
    if corpus:
        from transferlab.data.blocks import TokenCorpus

        tokens = TokenCorpus(corpus).tokens("train")
        g = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, len(tokens) - seq_len, (n, batch), generator=g)
        return [torch.stack([torch.from_numpy(tokens[s:s + seq_len].astype("int64")) for s in row.tolist()])
                for row in starts]
    g = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, vocab - 7 + 1, dtype=torch.float64)
    return [torch.multinomial(probs, batch * seq_len, replacement=True, generator=g).view(batch, seq_len) + 7
            for _ in range(n)]


def workload_batches(workload: str, n: int, batch: int, seq_len: int, vocab: int, corpus: str | None) -> list:
    ids = token_batches(n, batch, seq_len, vocab, corpus)
    if workload == "mlm":
        g = torch.Generator().manual_seed(1)
        corruption = MLMCorruption(vocab, mask_id=4, cls_id=2)
        return [corruption(x[:, : seq_len - 1], g) for x in ids]
    if workload == "clm":
        return [{"input_ids": x} for x in ids]
    if workload == "bart":
        g = torch.Generator().manual_seed(1)
        corruption = BartCorruption(mask_id=4, bos_id=5, eos_id=6, sentence_end_ids=(SENTENCE_END,), max_len=seq_len)
        return [corruption(x, g) for x in ids]
    # sentence pairs: [CLS] a [SEP] b [SEP], token types 0/1, labels from a fixed rule so there is signal
    out = []
    for x in ids:
        x = x.clone()
        half = seq_len // 2
        x[:, 0], x[:, half - 1], x[:, -1] = 2, 3, 3
        types = torch.zeros_like(x)
        types[:, half:] = 1
        labels = (x[:, 1] % 2).long()
        out.append({"input_ids": x, "token_type_ids": types, "labels": labels})
    return out


# ---------------------------------------------------------------------------------------------------- models


def build(side: str, workload: str, cfg, num_labels: int = 2, pooling: str | None = None):
    torch.manual_seed(0)
    if side == "transferlab":
        if workload == "mlm":
            return MaskedLM(build_backbone(cfg))
        if workload == "clm":
            return CausalLM(build_backbone(cfg))
        if workload == "bart":
            return DenoisingLM(build_backbone(cfg))
        return SequenceClassifier(build_backbone(cfg), num_labels, pooling=pooling)
    from transferlab.compat import import_torchvision

    import_torchvision()  # transformers imports torchvision when installed; PyPI's fails beside the CPU torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    if workload == "bart":
        from transformers import BartConfig, BartForConditionalGeneration

        return BartForConditionalGeneration(BartConfig(
            vocab_size=cfg.vocab_size, d_model=cfg.d_model, encoder_layers=cfg.n_layer, decoder_layers=cfg.n_dec_layer,
            encoder_attention_heads=cfg.n_head, decoder_attention_heads=cfg.n_head, encoder_ffn_dim=cfg.d_ff,
            decoder_ffn_dim=cfg.d_ff, max_position_embeddings=cfg.max_len, dropout=cfg.dropout,
            attention_dropout=cfg.dropout, pad_token_id=0, bos_token_id=5, eos_token_id=6, decoder_start_token_id=5,
            attn_implementation="sdpa"))
    if workload == "clm":
        return GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_embd=cfg.d_model, n_layer=cfg.n_layer,
                                          n_head=cfg.n_head, n_positions=cfg.max_len, resid_pdrop=cfg.dropout,
                                          embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                                          attn_implementation="sdpa"))
    bert = BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
                      num_attention_heads=cfg.n_head, intermediate_size=cfg.d_ff, max_position_embeddings=cfg.max_len,
                      hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                      num_labels=num_labels, attn_implementation="sdpa")
    return BertForMaskedLM(bert) if workload == "mlm" else BertForSequenceClassification(bert)


def loss_fn(side: str, workload: str, model):
    if side == "transferlab":
        return lambda b: model(b)["loss"]
    if workload == "mlm":
        return lambda b: model(input_ids=b["input_ids"], labels=b["labels"]).loss
    if workload == "clm":
        return lambda b: model(input_ids=b["input_ids"], labels=b["input_ids"]).loss
    if workload == "bart":
        return lambda b: model(input_ids=b["input_ids"], attention_mask=b["attention"],
                               decoder_input_ids=b["decoder_input_ids"], labels=b["labels"]).loss
    return lambda b: model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], labels=b["labels"]).loss


def forward_fn(side: str, model):
    if side == "transferlab":
        return lambda b: model(b)["logits"]
    return lambda b: model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"]).logits


# ---------------------------------------------------------------------------------------------------- one run


class TrainingRun:
    """One side's training, a step at a time: ``step`` runs one batch and returns the clock's seconds for it, so
    sides can run one after another (separate processes) or in lockstep (one process, alternating steps)."""

    def __init__(self, side: str, workload: str, cfg, precision: str, compile_: bool, clock=time.perf_counter,
                 pooling: str | None = None):
        self.workload, self.precision, self.clock, self.compile = workload, precision, clock, compile_
        self.model = build(side, workload, cfg, pooling=pooling)
        self.model.train()
        self.step_loss = loss_fn(side, workload, self.model)
        self.compile_s = 0.0
        if compile_:
            t = time.perf_counter()
            self.step_loss = torch.compile(self.step_loss)
            self.compile_s = -(time.perf_counter() - t)  # the compile itself happens in the first call, timed below
        lr = 1e-3 if workload != "finetune" else 1e-4
        # Each side's optimizer as its users get it: ours from the library, HF's as its Trainer defaults to on
        # torch >= 2.8 (fused AdamW; weight decay on every parameter).
        self.opt = (build_optimizer(self.model, lr, weight_decay=0.01) if side == "transferlab"
                    else torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01, fused=True))
        self.losses, self.seconds = [], []

    def step(self, b: dict) -> float:
        ts = self.clock()
        with autocast(self.precision):
            loss = self.step_loss(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(float(loss.detach()))
        self.seconds.append(self.clock() - ts)
        return self.seconds[-1]

    def result(self, data: list) -> dict:
        seconds = sum(self.seconds[WARMUP:])
        steady = seconds / (len(data) - WARMUP)
        if self.compile:
            self.compile_s += self.seconds[0] - steady
        tokens = sum((b["labels"] if self.workload == "bart" else b["input_ids"]).numel() for b in data[WARMUP:])
        losses = self.losses
        return {"tokens_per_s": tokens / seconds, "final_loss": sum(losses[-5:]) / min(5, len(losses)),
                "losses": losses, "compile_s": self.compile_s,
                "params": sum(p.numel() for p in self.model.parameters())}


def run_training(side: str, workload: str, cfg, data: list, precision: str, compile_: bool,
                 clock=time.perf_counter, pooling: str | None = None) -> dict:
    run = TrainingRun(side, workload, cfg, precision, compile_, clock, pooling)
    for b in data:
        run.step(b)
    return run.result(data)


class InferenceRun:
    """One side's classifier inference, a batch at a time (see TrainingRun); ``weights`` is the context the
    timed calls run in."""

    def __init__(self, side: str, cfg, precision: str, compile_: bool, clock=time.perf_counter,
                 pooling: str | None = None):
        self.model = build(side, "finetune", cfg, pooling=pooling).eval()
        self.forward = forward_fn(side, self.model)
        if compile_:
            self.forward = torch.compile(self.forward)
        self.precision, self.clock = precision, clock
        # ours as its predict path runs it: bf16 weights held for the whole pass (predict_logits), not cast per call
        self.weights = (inference_weights(self.model, precision) if side == "transferlab"
                        else contextlib.nullcontext())
        self.seconds: dict[int, list[float]] = {}

    def step(self, b: dict, bs: int) -> float:
        """One forward of ``b``, timed under the batch size ``bs`` it stands for (32: at most 32 rows)."""
        ts = self.clock()
        with autocast(self.precision):
            self.forward(b)
        self.seconds.setdefault(bs, []).append(self.clock() - ts)
        return self.seconds[bs][-1]

    def result(self, batches: dict[int, list]) -> dict:
        out = {}
        for bs, timed in batches.items():
            seconds = sum(self.seconds[bs][WARMUP:])
            out[f"batch{bs}_ms"] = 1000 * seconds / len(timed[WARMUP:])
            if bs == 32:
                out["tokens_per_s"] = sum(b["input_ids"].numel() for b in timed[WARMUP:]) / seconds
        return out


def inference_batches(data: list) -> dict[int, list]:
    """Batch size -> its batches: the first 32 rows of each batch, and every row on its own for batch 1 (a call
    of ~25 ms, timed over only as many calls as steps, moved by a third between runs on a shared core)."""
    rows = [{k: v[i:i + 1] for k, v in b.items()} for b in data for i in range(b["input_ids"].shape[0])]
    return {1: rows, 32: [{k: v[:32] for k, v in b.items()} for b in data]}


def run_inference(side: str, cfg, data: list, precision: str, compile_: bool, clock=time.perf_counter,
                  pooling: str | None = None) -> dict:
    run = InferenceRun(side, cfg, precision, compile_, clock, pooling)
    batches = inference_batches(data)
    with torch.inference_mode(), run.weights:
        for bs, bs_batches in batches.items():
            for b in bs_batches:
                run.step(b, bs)
    return run.result(batches)


def run_lockstep(specs: list[dict]) -> list[dict]:
    """Every side of one workload in this process, a step of each in turn, each timed on its own: a change in
    the machine's load then falls on every side alike (peak RSS is the process's, so not reported per side)."""
    spec = specs[0]
    torch.set_num_threads(spec["threads"])
    configure_cpu()
    w, clock = spec["workload"], CLOCKS[spec.get("clock", "wall")]
    cfg = config(spec["model"], w, spec["vocab_size"], spec["seq_len"], spec["dropout"])
    data = workload_batches(w, spec["steps"] + WARMUP, spec["batch_size"], spec["seq_len"], spec["vocab_size"],
                            spec["corpus"])
    rows = []
    if w == "infer":
        runs = [InferenceRun(s["side"], cfg, s["precision"], s["compile"], clock, s.get("pooling")) for s in specs]
        batches = inference_batches(data)
        with torch.inference_mode(), contextlib.ExitStack() as held:
            for run in runs:
                held.enter_context(run.weights)
            for bs, bs_batches in batches.items():
                for b in bs_batches:
                    for run in runs:
                        run.step(b, bs)
        rows = [run.result(batches) for run in runs]
    else:
        runs = [TrainingRun(s["side"], w, cfg, s["precision"], s["compile"], clock, s.get("pooling")) for s in specs]
        for b in data:
            for run in runs:
                run.step(b)
        rows = [run.result(data) for run in runs]
    return [{**s, **describe(s, cfg, data, row), "peak_rss_mb": float("nan")} for s, row in zip(specs, rows)]


def child(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    configure_cpu()
    w = spec["workload"]
    clock = CLOCKS[spec.get("clock", "wall")]
    cfg = config(spec["model"], w, spec["vocab_size"], spec["seq_len"], spec["dropout"])
    data = workload_batches(w, spec["steps"] + WARMUP, spec["batch_size"], spec["seq_len"], spec["vocab_size"],
                            spec["corpus"])
    pooling = spec.get("pooling")
    if w == "infer":
        row = run_inference(spec["side"], cfg, data, spec["precision"], spec["compile"], clock, pooling)
    else:
        row = run_training(spec["side"], w, cfg, data, spec["precision"], spec["compile"], clock, pooling)
    row = describe(spec, cfg, data, row)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**spec, **row}


def describe(spec: dict, cfg, data: list, row: dict) -> dict:
    """``row`` with the model FLOPs per token of its workload (what MFU is computed from)."""
    w = spec["workload"]
    if w == "mlm":
        predicted = sum(int((b["labels"] != -100).sum()) for b in data) / sum(b["input_ids"].numel() for b in data)
    else:
        predicted = 1.0
    encoder_fraction = 1.0
    if w == "bart":
        encoder_fraction = sum(int(b["attention"].sum()) for b in data) / sum(b["labels"].numel() for b in data)
    pooling = spec.get("pooling") if w in ("finetune", "infer") else None
    return {**row, "flops_per_token": model_flops_per_token(cfg, w, spec["seq_len"], predicted, encoder_fraction,
                                                            pooling)}


BASELINES = {"bf16": "vs_hf_bf16", "fp32": "vs_hf_fp32"}  # transformers' precision -> ratio key suffix


def add_ratios(rows: list[dict], peak: dict) -> None:
    """Add to each row (in place) its model-FLOPs utilisation against the bf16 matmul peak and its speed ratios
    against `transformers` at each precision present (bf16 autocast, fp32); inference rows get batch-1 ones too."""
    bases = {r["precision"]: r for r in rows if r["side"] == "transformers"}
    for r in rows:
        r["mfu_bf16"] = r["tokens_per_s"] * r["flops_per_token"] / (peak["bf16"] * 1e9)
        if "batch1_ms" in r:  # one sequence of seq_len tokens per batch-1 call
            r["batch1_mfu_bf16"] = r["seq_len"] / (r["batch1_ms"] / 1000) * r["flops_per_token"] / (peak["bf16"] * 1e9)
        for prec, suffix in BASELINES.items():
            if prec in bases:
                r[f"ratio_{suffix}"] = r["tokens_per_s"] / bases[prec]["tokens_per_s"]
                if "batch1_ms" in r:
                    r[f"batch1_ratio_{suffix}"] = bases[prec]["batch1_ms"] / r["batch1_ms"]


def format_row(r: dict) -> str:
    """One table line; a ratio whose baseline did not run (--no-hf-bf16) prints as '-'."""
    def ratio(key: str, width: int) -> str:
        return f"{r[key]:{width - 1}.2f}x" if key in r else f"{'-':>{width}}"

    name = f"{r['side']}{'+compile' if r['compile'] else ''} {r['precision']}"
    loss = f"{r['final_loss']:7.3f}" if "final_loss" in r else f"{'-':>7}"
    if "batch1_ms" in r:
        b1 = f"{r['batch1_ms']:7.1f} {100 * r['batch1_mfu_bf16']:5.1f}% {ratio('batch1_ratio_vs_hf_bf16', 7)} "
        b1 += f"{r['batch32_ms']:8.1f}"
    else:
        b1 = f"{'-':>7} {'-':>6} {'-':>7} {'-':>8}"
    compiled = f"  (compile {r['compile_s']:.0f} s)" if r["compile"] and "compile_s" in r else ""
    return (f"{r['model']:<6} {r['workload']:<9} {name:<20} {r['tokens_per_s']:9,.0f} {100 * r['mfu_bf16']:5.1f}% "
            f"{ratio('ratio_vs_hf_bf16', 8)} {ratio('ratio_vs_hf_fp32', 8)} {loss} {b1} {r['peak_rss_mb']:7,.0f}"
            + compiled)


def spawn(spec: dict | list[dict]) -> dict | list[dict]:
    """Run one side (a spec) or every side in lockstep (a list of specs) in a child process; its row(s)."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed for {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        spec = json.loads(sys.argv[2])
        print(json.dumps(run_lockstep(spec) if isinstance(spec, list) else child(spec)))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mini", help="comma-separated presets, e.g. mini,small")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated from {', '.join(WORKLOADS)}")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=30522, help="BERT's vocabulary size by default")
    p.add_argument("--corpus", help="a prepared corpus: train on its real text (vocabulary from its meta.json)")
    p.add_argument("--steps", type=int, default=20, help=f"timed steps (after {WARMUP} warm-up steps)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dropout", type=float, default=0.0, help="both sides; 0 is transferlab's pretraining default")
    p.add_argument("--pooling", choices=("mean", "cls"),
                   help="finetune/infer: our classifier's pooling (default: the library's, mean for encoders); cls "
                        "is what transformers' BERT classifier reads, so both sides compute the same function")
    p.add_argument("--compile", action="store_true", help="also run transferlab under torch.compile")
    p.add_argument("--no-hf-bf16", action="store_true", help="skip transformers under bf16 autocast")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: the process's CPU time (with --threads 1, on a shared machine)")
    p.add_argument("--lockstep", action="store_true",
                   help="run every side of a workload in one process, a step of each in turn (a changing load on a "
                        "shared machine falls on all alike; no per-side peak RSS)")
    p.add_argument("--json", help="also write every result (with per-step losses) here")
    a = p.parse_args()
    if a.clock == "cpu" and a.threads != 1:
        p.error("--clock cpu counts one thread's time; pass --threads 1 with it")
    for w in a.workloads.split(","):
        if w not in WORKLOADS:
            p.error(f"--workloads: unknown workload '{w}'; choose from {', '.join(WORKLOADS)}")
    vocab = a.vocab_size
    if a.corpus:
        from transferlab.data.blocks import TokenCorpus

        vocab = TokenCorpus(a.corpus).vocab_size
    torch.set_num_threads(a.threads)
    configure_cpu()
    auto = resolve_precision("auto")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} threads, "
          f"seq {a.seq_len}, batch {a.batch_size}, vocab {vocab}"
          f"{' from ' + a.corpus if a.corpus else ' (Zipfian ids)'}, {a.steps} timed steps, "
          f"auto precision = {auto}, {a.clock} clock")
    peak = {"fp32": matmul_peak(torch.float32, clock=CLOCKS[a.clock]),
            "bf16": matmul_peak(torch.bfloat16, clock=CLOCKS[a.clock])}
    print(f"# 2048x2048 matmul peak: fp32 {peak['fp32']:,.0f} GFLOP/s, bf16 {peak['bf16']:,.0f} GFLOP/s")
    sides = [("transferlab", auto, False)]
    if a.compile:
        sides.append(("transferlab", auto, True))
    sides.append(("transformers", "fp32", False))
    if auto == "bf16" and not a.no_hf_bf16:
        sides.append(("transformers", "bf16", False))
    print(f"{'model':<6} {'workload':<9} {'side':<20} {'tok/s':>9} {'MFU':>6} {'vs bf16':>8} {'vs fp32':>8} "
          f"{'loss':>7} {'b1 ms':>7} {'b1 MFU':>6} {'b1/bf16':>7} {'b32 ms':>8} {'RSS MB':>7}")
    results = []
    for model in a.models.split(","):
        for workload in a.workloads.split(","):
            specs = [dict(model=model, workload=workload, side=side, precision=precision, compile=compile_,
                          steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len, vocab_size=vocab,
                          corpus=a.corpus, threads=a.threads, dropout=a.dropout, clock=a.clock, pooling=a.pooling)
                     for side, precision, compile_ in sides]
            rows = spawn(specs) if a.lockstep else [spawn(spec) for spec in specs]
            add_ratios(rows, peak)
            for r in rows:
                print(format_row(r), flush=True)
            results += rows
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "matmul_gflops": peak, "results": results}, indent=2))


if __name__ == "__main__":
    main()
