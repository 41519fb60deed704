"""The LM loss alone: transferlab's chunked linear cross-entropy against the plain way, side by side in one run.

"plain" is what `transformers` does: the (rows, V) logits tensor, then `F.cross_entropy`, autograd for the rest.
Both compute the loss of (rows, C) hidden states against a tied (V, C) embedding, forward and backward, under the
same precision. Printed per configuration: milliseconds per forward+backward (process CPU time, so a busy machine
skews it less than wall time), the ratio, and the largest gradient difference (speed must not change the math).

    python benchmarks/lm_loss.py                       # CLM rows (32x127) and MLM rows (15% of 32x128), V=30522
    python benchmarks/lm_loss.py --threads 2 --reps 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferlab.heads.fused_ce import linear_cross_entropy  # noqa: E402
from transferlab.training.precision import autocast, configure_cpu, resolve_precision  # noqa: E402


def plain(hidden, weight, targets):
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=-100)


def chunked(hidden, weight, targets):
    return linear_cross_entropy(hidden, weight, None, targets)


def measure(loss_fn, rows: int, vocab: int, d: int, precision: str, reps: int):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, d, generator=g).requires_grad_()
    weight = (torch.randn(vocab, d, generator=g) * 0.02).requires_grad_()
    targets = torch.randint(7, vocab, (rows,), generator=g)
    targets[::50] = -100  # some ignored rows, as padding gives

    def step():
        hidden.grad = weight.grad = None
        with autocast(precision):
            loss = loss_fn(hidden, weight, targets)
        loss.backward()
        return float(loss.detach())

    step()  # warm-up
    t0 = time.process_time()
    for _ in range(reps):
        loss = step()
    ms = 1000 * (time.process_time() - t0) / reps
    return ms, loss, hidden.grad.clone(), weight.grad.clone()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    configure_cpu()
    auto = resolve_precision("auto")
    print(f"# torch {torch.__version__}, {a.threads} thread(s), V={a.vocab_size}, C={a.d_model}, process CPU time")
    print(f"{'rows':>6} {'precision':<9} {'plain ms':>9} {'chunked ms':>11} {'speed-up':>9} {'max |dgrad|':>12}")
    for rows, what in ((32 * 127, "CLM"), (int(0.15 * 32 * 128), "MLM")):
        for precision in dict.fromkeys([auto, "fp32"]):
            t_plain, l_plain, gh_plain, gw_plain = measure(plain, rows, a.vocab_size, a.d_model, precision, a.reps)
            t_ours, l_ours, gh_ours, gw_ours = measure(chunked, rows, a.vocab_size, a.d_model, precision, a.reps)
            diff = max(float((gh_plain - gh_ours).abs().max()) / float(gh_plain.abs().max()),
                       float((gw_plain - gw_ours).abs().max()) / float(gw_plain.abs().max()))
            print(f"{rows:>6} {precision:<9} {t_plain:9.0f} {t_ours:11.0f} {t_plain / t_ours:8.2f}x {diff:12.1e}"
                  f"   ({what}; loss {l_plain:.4f} vs {l_ours:.4f})", flush=True)


if __name__ == "__main__":
    main()
