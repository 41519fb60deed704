"""Cross-entropy over a vocabulary projection without materialising all the logits.

A causal LM's loss over B*T positions needs a (B*T, V) logits tensor: 500 MB in fp32 for 32x128 tokens and
BERT's 30k vocabulary, streamed through memory several times (cast, log-softmax, its backward). On a CPU that
traffic, not the matmul, dominated the step. Here the rows are processed in chunks; the gradients are formed in
the same pass (the loss is a scalar, so the backward only rescales them), and each chunk's logits live in cache.
"""

from __future__ import annotations

import torch

IGNORE = -100


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int):
        dtype = _compute_dtype(hidden)
        w = weight.to(dtype)
        valid = targets != IGNORE
        count = valid.sum().clamp(min=1)
        safe_targets = targets.clamp(min=0)
        needs_grad = any(ctx.needs_input_grad[:3])
        total = hidden.new_zeros((), dtype=torch.float32)
        if needs_grad:
            g_hidden = torch.empty_like(hidden)
            g_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            g_bias = None if bias is None else torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s:s + chunk].to(dtype)
            logits = (h @ w.t()).float()  # (n, V)
            if bias is not None:
                logits += bias.float()
            lse = torch.logsumexp(logits, dim=-1)
            v = valid[s:s + chunk]
            t = safe_targets[s:s + chunk]
            total += ((lse - logits.gather(1, t[:, None]).squeeze(1)) * v).sum()
            if needs_grad:
                probs = torch.exp_(logits.sub_(lse[:, None]))  # softmax, in place
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                probs.mul_(v[:, None] / count)
                g = probs.to(dtype)
                g_hidden[s:s + chunk] = (g @ w).to(hidden.dtype)
                g_weight += (g.t() @ h).float()
                if g_bias is not None:
                    g_bias += probs.sum(0)
        if needs_grad:
            ctx.g_bias = None if bias is None else g_bias.to(bias.dtype)
            ctx.save_for_backward(g_hidden, g_weight.to(weight.dtype))
        return total / count

    @staticmethod
    def backward(ctx, grad_out):
        g_hidden, g_weight = ctx.saved_tensors
        g_bias = None if ctx.g_bias is None else ctx.g_bias * grad_out
        return g_hidden * grad_out, g_weight * grad_out, g_bias, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                         chunk: int = 512) -> torch.Tensor:
    """mean over non-ignored rows of CE(hidden @ weight.T + bias, targets); hidden (N, C), targets (N,)."""
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk)
