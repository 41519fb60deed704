"""Cross-entropy over a vocabulary projection without materialising all the logits.

A causal LM's loss over B*T positions needs a (B*T, V) logits tensor: 500 MB in fp32 for 32x128 tokens and
BERT's 30k vocabulary, streamed through memory several times (cast, log-softmax, its backward). On a CPU that
traffic, not the matmul, dominated the step. Here the rows are processed in chunks and the gradients are formed in
the same pass (the loss is a scalar, so the backward only rescales them).

What made the chunk loop fast on CPU (measured in docs/performance.md):
- three (chunk, V) buffers are allocated once per call and reused: a fresh 60 MB tensor costs more in page faults
  than the softmax that fills it;
- the softmax runs in place through PyTorch's fused kernel (one max pass, one exp-sum pass, one write); the
  log-sum-exp for the loss comes from the row maximum's probability, which never underflows, instead of a
  separate ``logsumexp`` (which subtracts, exponentiates and sums in three allocating passes);
- the 1/count scale and the masking of ignored rows are applied to (N, C) / (V, C) results, not to (N, V) ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int):
        dtype = _compute_dtype(hidden)
        device = hidden.device
        w = weight.to(dtype)
        n_rows, vocab = hidden.shape[0], weight.shape[0]
        valid = targets != IGNORE
        count = valid.sum().clamp(min=1)
        all_valid = bool(valid.all())
        safe_targets = targets.clamp(min=0)
        needs_grad = any(ctx.needs_input_grad[:3])
        n = max(1, min(chunk, n_rows))
        logits_buf = torch.empty(n, vocab, dtype=dtype, device=device)
        # Softmax and its gradient in fp32 (a separate buffer only when the matmuls run in bf16/fp16).
        low_precision = torch.finfo(dtype).bits < 32
        probs_buf = torch.empty(n, vocab, dtype=torch.float32, device=device) if low_precision else None
        total = torch.zeros((), dtype=torch.float32, device=device)
        if needs_grad:
            g_hidden = torch.empty(hidden.shape, dtype=torch.float32 if low_precision else dtype, device=device)
            g_weight = torch.zeros(weight.shape, dtype=g_hidden.dtype, device=device)
            g_bias = None if bias is None else torch.zeros(bias.shape, dtype=g_hidden.dtype, device=device)
        for s in range(0, n_rows, n):
            h = hidden[s:s + n].to(dtype)
            m = h.shape[0]
            logits = torch.mm(h, w.t(), out=logits_buf[:m])  # (m, V)
            probs = logits if probs_buf is None else probs_buf[:m].copy_(logits)
            if bias is not None:
                probs += bias.to(probs.dtype)
            rows = torch.arange(m, device=device)
            t = safe_targets[s:s + m]
            target_logit = probs[rows, t]
            row_max = probs.amax(-1)
            torch.softmax(probs, -1, out=probs)  # in place
            # p(argmax) = exp(max - lse) >= 1/V, so this log-sum-exp is exact and never meets an underflow.
            lse = row_max - torch.log(probs.amax(-1))
            v = valid[s:s + m]
            total += ((lse - target_logit).float() * v).sum()
            if needs_grad:
                probs[rows, t] -= 1.0  # d(CE)/d(logits) = softmax - onehot (times 1/count, applied at the end)
                if not all_valid:
                    probs.masked_fill_(~v[:, None], 0.0)
                g = probs if probs_buf is None else logits.copy_(probs)
                g_hidden[s:s + m] = g @ w
                g_weight += g.t() @ h
                if g_bias is not None:
                    g_bias += probs.sum(0)
        if needs_grad:
            scale = 1.0 / count
            ctx.g_bias = None if bias is None else (g_bias * scale).to(bias.dtype)
            ctx.save_for_backward((g_hidden * scale).to(hidden.dtype), (g_weight * scale).to(weight.dtype))
        return total / count

    @staticmethod
    def backward(ctx, grad_out):
        g_hidden, g_weight = ctx.saved_tensors
        g_bias = None if ctx.g_bias is None else ctx.g_bias * grad_out
        return g_hidden * grad_out, g_weight * grad_out, g_bias, None, None


# Rows are padded (with ignored targets) to a multiple of this: masked LM predicts a different number of tokens
# every batch, and each new matmul shape costs oneDNN a compiled kernel kept in its cache. Unpadded, RSS grew from
# 0.3 to 1.6 GB over 300 steps of 1,100-1,300 rows; padded to 64, it stayed at ~0.45 GB (docs/reliability.md).
ROW_MULTIPLE = 64


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                         chunk: int = 512) -> torch.Tensor:
    """mean over non-ignored rows of CE(hidden @ weight.T + bias, targets); hidden (N, C), targets (N,)."""
    pad = -hidden.shape[0] % ROW_MULTIPLE
    if pad:
        hidden = F.pad(hidden, (0, 0, 0, pad))
        targets = F.pad(targets, (0, pad), value=IGNORE)
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk)
