"""Pretraining throughput: transferlab against Hugging Face `transformers`, same configuration, one run.

Both sides train the same architecture (a preset from the small-BERT table) on the same batches of token ids
with the same optimizer (AdamW, lr 1e-4 -> same schedule), for the same number of steps. We print tokens/s,
the ratio, and the loss each side reached, so speed is never bought with accuracy.

    python benchmarks/throughput.py                      # mini, seq 128, batch 32, MLM and CLM
    python benchmarks/throughput.py --model small --steps 20 --objectives mlm

transferlab runs as a user gets it by default (precision "auto": bf16 autocast where the CPU has AMX/AVX512-BF16,
sparse MLM head, SDPA); `transformers` runs in its default fp32, and, for an apples-to-apples view of the kernels,
also under the same bf16 autocast (`hf+bf16`).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferlab.models import build_backbone, preset  # noqa: E402
from transferlab.objectives import CausalLM, MaskedLM, MLMCorruption  # noqa: E402
from transferlab.training.precision import autocast, configure_cpu, resolve_precision  # noqa: E402


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n matmul on this machine: the ceiling model-FLOPs utilisation is measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def hf_model(objective: str, cfg):
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    if objective == "mlm":
        return BertForMaskedLM(BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                                          num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                                          intermediate_size=cfg.d_ff, max_position_embeddings=cfg.max_len,
                                          hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                                          attn_implementation="sdpa"))
    return GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_embd=cfg.d_model, n_layer=cfg.n_layer,
                                      n_head=cfg.n_head, n_positions=cfg.max_len, resid_pdrop=cfg.dropout,
                                      embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, attn_implementation="sdpa"))


def batches(objective: str, n: int, batch: int, seq_len: int, vocab: int, seed: int = 0):
    """Token ids with a Zipfian unigram distribution (so a loss curve means something), then the corruption."""
    g = torch.Generator().manual_seed(seed)
    probs = 1.0 / torch.arange(1, vocab - 7 + 1, dtype=torch.float64)
    corruption = MLMCorruption(vocab, mask_id=4, cls_id=2)
    out = []
    for _ in range(n):
        ids = torch.multinomial(probs, batch * seq_len, replacement=True, generator=g).view(batch, seq_len) + 7
        out.append(corruption(ids[:, : seq_len - 1], g) if objective == "mlm" else {"input_ids": ids})
    return out


def run(side: str, objective: str, cfg, data, warmup: int, precision: str) -> dict:
    torch.manual_seed(0)
    if side == "transferlab":
        model = (MaskedLM if objective == "mlm" else CausalLM)(build_backbone(cfg))
        step_loss = lambda b: model(b)["loss"]  # noqa: E731
    else:
        model = hf_model(objective, cfg)
        if objective == "mlm":
            step_loss = lambda b: model(input_ids=b["input_ids"], labels=b["labels"]).loss  # noqa: E731
        else:
            step_loss = lambda b: model(input_ids=b["input_ids"], labels=b["input_ids"]).loss  # noqa: E731
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    losses, t0 = [], None
    for i, b in enumerate(data):
        if i == warmup:
            t0 = time.perf_counter()
        with autocast(precision):
            loss = step_loss(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    tokens = sum(b["input_ids"].numel() for b in data[warmup:])
    return {"side": side, "objective": objective, "precision": precision, "tokens_per_s": tokens / seconds,
            "final_loss": sum(losses[-5:]) / 5, "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mini")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=30522, help="BERT's vocabulary size by default")
    p.add_argument("--steps", type=int, default=30, help="timed steps (after 3 warm-up steps)")
    p.add_argument("--objectives", default="mlm,clm", help='comma-separated, or "none" for the matmul peak only')
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dropout", type=float, default=0.0, help="both sides; 0 is transferlab's pretraining default")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    configure_cpu()
    auto = resolve_precision("auto")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} threads, "
          f"preset {a.model}, seq {a.seq_len}, batch {a.batch_size}, vocab {a.vocab_size}, auto precision = {auto}")
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"# 2048x2048 matmul peak: fp32 {peak['fp32']:,.0f} GFLOP/s, bf16 {peak['bf16']:,.0f} GFLOP/s")
    results = []
    for objective in [o for o in a.objectives.split(",") if o != "none"]:
        cfg = preset(a.model, "encoder" if objective == "mlm" else "decoder", a.vocab_size, dropout=a.dropout,
                     max_len=max(512, a.seq_len))
        data = batches(objective, a.steps + 3, a.batch_size, a.seq_len, a.vocab_size)
        rows = [run("transferlab", objective, cfg, data, 3, auto), run("transformers", objective, cfg, data, 3, "fp32")]
        if auto == "bf16":
            rows.append(run("transformers", objective, cfg, data, 3, "bf16"))
        base = rows[1]["tokens_per_s"]
        for r in rows:
            r["ratio_vs_hf_fp32"] = r["tokens_per_s"] / base
            print(f"{objective}  {r['side']:<12} {r['precision']:<5} {r['tokens_per_s']:>10,.0f} tok/s  "
                  f"x{r['ratio_vs_hf_fp32']:.2f}  loss after {a.steps + 3} steps {r['final_loss']:.3f}")
        results += rows
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# peak RSS {peak_mb:,.0f} MB")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "results": results, "peak_rss_mb": peak_mb,
                                                "matmul_gflops": peak}, indent=2))


if __name__ == "__main__":
    main()
