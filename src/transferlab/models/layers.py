"""Blocks shared by every backbone: attention with arbitrary masks and separate query / key-value streams,
the MLP, and the residual block (pre- or post-norm).

Masks follow ``scaled_dot_product_attention``: a bool tensor broadcastable to (B, nh, Tq, Tk), True = may attend.

Positions are either added to the input (learned tables, BERT/GPT-2; the backbones own those) or rotary (RoPE, Su
et al. 2021): queries and keys are rotated by their positions inside attention, so attention scores depend on
relative offsets. ``Rotary`` holds the angles of one set of positions; blocks receive it as ``rope=``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


@dataclass
class Rotary:
    """cos/sin of RoPE's angles for a set of positions, ready to rotate (B, nh, T, hs) queries or keys.

    Channel pairs (i, i + hs/2) turn by ``position * base^(-2i/hs)`` (the half-split layout of GPT-NeoX and
    LLaMA). Angles are computed in fp32 from integer positions; ``apply`` rotates in the input's dtype.
    ``cos``/``sin`` are (T, hs/2) for positions shared by every row, (B, 1, T, hs/2) for per-row positions.
    """

    cos: torch.Tensor
    sin: torch.Tensor

    @classmethod
    def at(cls, positions: torch.Tensor, head_dim: int, base: float = 10000.0) -> "Rotary":
        """positions (T,) or (B, T) -> their angles for heads of ``head_dim`` channels (even)."""
        inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
        angles = positions.float()[..., None] * inv_freq  # (T, hs/2) or (B, T, hs/2)
        if angles.dim() == 3:
            angles = angles[:, None]  # (B, 1, T, hs/2): per-row positions broadcast over heads
        return cls(angles.cos(), angles.sin())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, nh, T, hs) -> x with each channel pair rotated by its position's angle."""
        x1, x2 = x.chunk(2, dim=-1)
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def take(self, index: torch.Tensor) -> "Rotary":
        """The angles of one position per row: ``index`` (B,) into these positions -> (B, 1, 1, hs/2) angles,
        which rotate (B, nh, 1, hs) queries."""
        if self.cos.dim() == 2:  # (T, hs/2): positions shared by every row
            cos, sin = self.cos[index], self.sin[index]  # (B, hs/2)
        else:  # (B, 1, T, hs/2): per-row positions
            rows = torch.arange(index.shape[0], device=index.device)
            cos, sin = self.cos[rows, 0, index], self.sin[rows, 0, index]  # (B, hs/2)
        return Rotary(cos[:, None, None], sin[:, None, None])

    def cat(self, other: "Rotary") -> "Rotary":
        """The positions of ``self`` followed by those of ``other`` (keys drawn from two streams)."""
        parts = [t if t.dim() == 4 else t[None, None] for t in (self.cos, other.cos, self.sin, other.sin)]
        B = max(t.shape[0] for t in parts)
        cos, ocos, sin, osin = (t.expand(B, -1, -1, -1) for t in parts)
        return Rotary(torch.cat([cos, ocos], dim=2), torch.cat([sin, osin], dim=2))


def rotary(cfg: ModelConfig, positions: torch.Tensor) -> Rotary | None:
    """The rotary angles of ``positions`` (T,) or (B, T) for a backbone of ``cfg``; None with learned positions."""
    return Rotary.at(positions, cfg.d_model // cfg.n_head) if cfg.position == "rotary" else None


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """(x.shape) int16, 1 = keep with probability 1 - p (to 1/32768), from one 32-bit draw per two elements.

    ``bernoulli_`` (what ``F.dropout`` draws with on CPU) spends a generator call and a float compare per element:
    14.5 ms for 1M elements on one core here, against 3.5 ms for this mask and its multiply (a throwaway timing,
    docs/performance.md). Everything after the draw is integer arithmetic: each 16-bit half keeps its low 15 bits
    (the top bit of a draw is always 0), and ``((u - threshold) >> 15) + 1`` is 0 below the threshold, 1 above.
    """
    n = x.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=x.device).random_()
    u = bits.view(torch.int16)[:n].view(x.shape) & 0x7FFF
    return ((u - min(round(p * 32768), 32767)) >> 15).add_(1)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = _keep_mask(x, p)
        ctx.save_for_backward(keep)  # 2 bytes an element, half of what F.dropout keeps
        ctx.scale = 1.0 / (1.0 - p)
        return x * keep.to(x.dtype).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep.to(grad.dtype).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout`` with a cheaper mask on CPU (seeded by torch's generator like it); on other devices F.dropout
    itself, whose kernels are already fused."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return _Dropout.apply(x, p)


class Dropout(nn.Module):
    """``nn.Dropout`` on ``dropout`` above."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Attention(nn.Module):
    """Multi-head attention with one fused qkv projection.

    ``forward(x)`` is self-attention. ``forward(x, kv=y)`` takes queries from ``x`` and keys/values from ``y``
    (cross-attention, or XLNet's query stream attending to the content stream) with the same weights.
    """

    def __init__(self, d_model: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                is_causal: bool = False, cache: "KVCache | None" = None,
                rope: "Rotary | tuple[Rotary, Rotary] | None" = None) -> torch.Tensor:
        """``rope``: the rotary angles of the positions of the queries and keys, or a pair (queries', keys')
        when they differ (two streams); None with learned positions, and for cross-attention."""
        B, T, C = x.shape
        if kv is None:
            q, k, v = self.qkv(x).split(C, dim=-1)
        elif torch.is_tensor(self.qkv.weight):
            w_q, w_kv = self.qkv.weight.split([C, 2 * C], dim=0)
            b_q, b_kv = self.qkv.bias.split([C, 2 * C], dim=0)
            q = F.linear(x, w_q, b_q)
            k, v = F.linear(kv, w_kv, b_kv).split(C, dim=-1)
        else:  # an int8 export's quantized Linear keeps its weights packed: project both streams whole
            q = self.qkv(x)[..., :C]
            k, v = self.qkv(kv)[..., C:].split(C, dim=-1)
        S = k.shape[1]
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, S, self.n_head, hs).transpose(1, 2)  # (B, nh, S, hs)
        v = v.view(B, S, self.n_head, hs).transpose(1, 2)
        if rope is not None:  # keys are rotated before caching: a cached key keeps its own position
            rope_q, rope_k = rope if isinstance(rope, tuple) else (rope, rope)
            q, k = rope_q.apply(q), rope_k.apply(k)
        if cache is not None:  # incremental decoding: attend to the cached past and the new positions
            k, v = cache.append(k, v)
        if x.device.type == "cpu" and (self.training and self.dropout > 0 or _math_is_faster(q, k, mask)):
            y = self._attend_math(q, k, v, mask, is_causal and mask is None)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)

    def _attend_math(self, q, k, v, mask, is_causal: bool) -> torch.Tensor:
        """SDPA's math path (scores, softmax, dropout when training, values), with the cheaper dropout mask.
        (B, nh, T, hs) q and (B, nh, S, hs) k, v -> (B, nh, T, hs)."""
        scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, nh, T, S)
        if is_causal:  # top-left aligned, as SDPA's is_causal
            mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = dropout(scores.softmax(-1), self.dropout, self.training)
        return weights @ v


# Up to this many query x key positions, unmasked bf16 attention on CPU runs the math path (batched matmuls +
# softmax) rather than SDPA's flash kernel, whose bf16 backward is slow on this CPU. One thread on the Zen 4 CPU,
# forward + backward, head size 64 (a throwaway timing): 128x3 heads of 49 x 49 (vit-mini on 28x28) 86 ms flash
# against 33 math; 32x4 of 128 x 128 107 against 34; 8x4 of 512 x 512 175 against 79. The math path keeps the
# (B, nh, T, S) probabilities for backward, so long sequences keep flash's memory. Padding masks keep SDPA too
# (its handling of a fully masked row is its own).
MATH_ATTENTION_MAX = 256 * 256


def _math_is_faster(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Unmasked bf16 attention short enough that the math path beats the CPU flash kernel (measured above)."""
    return q.dtype == torch.bfloat16 and mask is None and q.shape[-2] * k.shape[-2] <= MATH_ATTENTION_MAX


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str):
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff)
        self.proj = nn.Linear(d_ff, d_model)
        self.approximate = "tanh" if activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class Block(nn.Module):
    """Attention + MLP with residuals. Post-norm (BERT) or pre-norm (GPT-2), from the config's family."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_first = cfg.norm_first
        self.attn = Attention(cfg.d_model, cfg.n_head, cfg.dropout)
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg.d_model, cfg.d_ff, cfg.activation)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                kv: torch.Tensor | None = None, cache: "KVCache | None" = None,
                rope: "Rotary | tuple[Rotary, Rotary] | None" = None) -> torch.Tensor:
        if self.norm_first:
            kv_in = None if kv is None else self.ln_1(kv)
            x = x + self.drop(self.attn(self.ln_1(x), kv=kv_in, mask=mask, is_causal=is_causal, cache=cache,
                                        rope=rope))
            return x + self.drop(self.mlp(self.ln_2(x)))
        x = self.ln_1(x + self.drop(self.attn(x, kv=kv, mask=mask, is_causal=is_causal, cache=cache, rope=rope)))
        return self.ln_2(x + self.drop(self.mlp(x)))


def block_at(block: Block, x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None = None,
             causal: bool = False, rope: Rotary | None = None) -> torch.Tensor:
    """``block`` computed at one position per row only: x (B, T, C), index (B,) -> (B, 1, C), equal to
    ``block(x, ...)[rows, index]``.

    A classifier that pools one position ([CLS], or a decoder's last real token) reads nothing else of the last
    block, whose keys and values still need every position but whose queries, output projection and MLP need only
    that one: for the small preset (4 blocks) this skips about a fifth of a forward pass, and of its backward.

    Args:
        mask: the (B|1, 1, 1, T) key mask the full pass uses (padding), or None.
        causal: the full pass is causal (a decoder): the position sees the keys up to itself.
        rope: the rotary angles of the T positions, or None.
    """
    rows = torch.arange(x.shape[0], device=x.device)
    query = x[rows, index].unsqueeze(1)  # (B, 1, C)
    if causal:
        keys = torch.arange(x.shape[1], device=x.device)
        seen = (keys[None, :] <= index[:, None])[:, None, None, :]  # (B, 1, 1, T)
        mask = seen if mask is None else mask & seen
    return block(query, kv=x, mask=mask, rope=None if rope is None else (rope.take(index), rope))


class KVCache:
    """Keys and values of the positions one self-attention layer has already seen, for incremental decoding.

    Preallocated to ``capacity`` positions on first use, so each decoding step writes in place instead of
    re-concatenating the whole past. ``append`` returns the keys/values of every position so far.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, nh, T, hs) of new positions -> (B, nh, length, hs) of all positions so far."""
        B, nh, T, hs = k.shape
        if self.k is None:
            self.k = k.new_empty(B, nh, self.capacity, hs)
            self.v = v.new_empty(B, nh, self.capacity, hs)
        if self.length + T > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; {self.length} + {T} do not fit")
        self.k[:, :, self.length:self.length + T] = k
        self.v[:, :, self.length:self.length + T] = v
        self.length += T
        return self.k[:, :, :self.length], self.v[:, :, :self.length]


def padding_mask(attention: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 attention -> (B, 1, 1, T) bool key mask, or None when nothing is padded (fast SDPA path)."""
    if attention is None:
        return None
    attention = attention.bool()
    if bool(attention.all()):
        return None
    return attention[:, None, None, :]


def init_weights(module: nn.Module, std: float) -> None:
    """BERT/GPT-2 initialisation: normal(0, std) for linear and embedding weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CrossBlock(Block):
    """A decoder block of an encoder-decoder: causal self-attention, then cross-attention to the encoder's
    output (``memory``), then the MLP. A subclass rather than a flag on ``Block`` so the encoder and decoder-only
    blocks stay exactly as they are; the cross-attention is the same ``Attention`` with ``kv=memory``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.cross_attn = Attention(cfg.d_model, cfg.n_head, cfg.dropout)
        self.ln_cross = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
                mask: torch.Tensor | None = None,
                rope: "Rotary | tuple[Rotary, Rotary] | None" = None) -> torch.Tensor:
        """x (B, T, C) decoder stream, memory (B, S, C) encoder output, memory_mask (B, 1, 1, S) key mask;
        ``mask`` replaces the causal pattern of the self-attention when given; ``rope`` rotates the
        self-attention only (a decoder position and an encoder position have no common origin)."""
        causal = mask is None
        if self.norm_first:
            x = x + self.drop(self.attn(self.ln_1(x), mask=mask, is_causal=causal, rope=rope))
            x = x + self.drop(self.cross_attn(self.ln_cross(x), kv=memory, mask=memory_mask))
            return x + self.drop(self.mlp(self.ln_2(x)))
        x = self.ln_1(x + self.drop(self.attn(x, mask=mask, is_causal=causal, rope=rope)))
        x = self.ln_cross(x + self.drop(self.cross_attn(x, kv=memory, mask=memory_mask)))
        return self.ln_2(x + self.drop(self.mlp(x)))
