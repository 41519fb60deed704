"""Perplexity of a causal LM on a held-out text file with a sliding window.

The text is tokenised whole (preceded by [EOS], the document start the model knows) and scored in windows of
``window`` tokens that start every ``stride`` tokens. Each token is scored exactly once, in the first window that
holds it after the part an earlier window already scored, so apart from the first window every token sees at
least ``window - stride`` tokens of context (1 when ``stride == window``). ``stride == window`` is the cheap
non-overlapping estimate (worse: tokens at a window's start see almost no context); a small stride approaches the
model's true perplexity at the cost of ``window / stride`` times the compute. Always report the stride with the
number. The window defaults to the length the model was pretrained on: positions beyond it were never trained.

Token perplexity depends on the tokenizer, so word-level perplexity (the same total log-likelihood divided by
the number of whitespace-separated words) and bits per byte are reported too: those compare across tokenizers,
and word-level perplexity is what WikiText papers report.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import torch

from ..errors import UserError
from .generate import causal_lm


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--data '{path}' does not exist; pass a text file (.txt or .txt.gz).")
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise UserError(f"--data '{path}' cannot be read as UTF-8 text ({e}).") from None


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_scored) per window over ids[0:n_tokens]: input ids[begin:end], its last ``n_scored``
    targets are scored. Token 0 ([EOS]) is context only; every other token is scored exactly once.

    A window's first token has no context inside it, so with ``stride == window`` consecutive windows overlap by
    one token (instead of dropping a token per window, as some implementations do)."""
    out, scored_to = [], 1
    begin = 0
    while scored_to < n_tokens:
        end = min(begin + window, n_tokens)
        out.append((begin, end, end - scored_to))
        scored_to = end
        begin = min(begin + stride, scored_to - 1)
    return out


@torch.no_grad()
def sliding_window_perplexity(module, tokenizer, text: str, window: int | None = None, stride: int | None = None,
                              batch_size: int = 4, progress: bool = False) -> dict:
    """Perplexity of ``text`` (see the module docstring).

    Args:
        module, tokenizer: a causal LM and its tokenizer.
        text: the held-out text.
        window: tokens per window (default and maximum: the model's position table).
        stride: tokens between window starts (default window // 2).
        batch_size: windows per forward pass.

    Returns:
        dict with ppl (per token), word_ppl, bits_per_byte, nll (summed), tokens, words, window, stride,
        min_context (window - stride).
    """
    from tqdm.auto import tqdm

    backbone, lm_head = causal_lm(module)
    max_len = backbone.config.max_len
    window = window or max_len
    stride = stride or max(1, window // 2)
    if not 2 <= window <= max_len:
        raise UserError(f"--window {window} must be between 2 and the model's {max_len} positions.")
    if not 1 <= stride <= window:
        raise UserError(f"--stride {stride} must be between 1 and the window ({window}).")
    ids = [tokenizer.eos_id] + tokenizer.encode(text)
    if len(ids) < 2:
        raise UserError("the text is empty after tokenisation; nothing to score.")
    module.eval()
    device = backbone.wte.weight.device
    all_ids = torch.tensor(ids, dtype=torch.long)
    spans = windows(len(ids), window, stride)
    nll = 0.0
    bar = tqdm(total=len(ids) - 1, desc="perplexity", unit="tok", disable=None if progress else True)
    for start in range(0, len(spans), batch_size):
        group = spans[start:start + batch_size]
        # windows of a group have equal length except possibly the very last one, which goes alone
        same = [s for s in group if s[1] - s[0] == group[0][1] - group[0][0]]
        for chunk in (same, [s for s in group if s not in same]):
            if not chunk:
                continue
            x = torch.stack([all_ids[b:e] for b, e, _ in chunk]).to(device)
            hidden = backbone(x)  # (B, T, C)
            T = x.shape[1]
            for r, (b, e, n) in enumerate(chunk):
                h = hidden[r, T - 1 - n:T - 1]
                targets = x[r, T - n:]
                nll += float(lm_head.loss(h, targets)) * n
                bar.update(n)
    bar.close()
    n_tokens = len(ids) - 1
    words = max(1, len(text.split()))
    n_bytes = max(1, len(text.encode("utf-8")))
    return {"ppl": math.exp(min(nll / n_tokens, 50.0)), "word_ppl": math.exp(min(nll / words, 50.0)),
            "bits_per_byte": nll / n_bytes / math.log(2), "nll": nll, "tokens": n_tokens, "words": words,
            "window": window, "stride": stride, "min_context": max(1, window - stride)}


def perplexity_file(model_dir, data, window: int | None = None, stride: int | None = None, batch_size: int = 4,
                    progress: bool = True) -> dict:
    """``transferlab perplexity``: load a causal-LM checkpoint and score a text file. ``window`` defaults to
    the length the model was pretrained on (longer windows would use untrained position embeddings)."""
    from .generate import load_causal_lm, trained_window

    module, tokenizer = load_causal_lm(model_dir)
    window = window or trained_window(model_dir)
    result = sliding_window_perplexity(module, tokenizer, read_text(data), window, stride, batch_size, progress)
    return {"model": str(model_dir), "data": str(data), **result}
