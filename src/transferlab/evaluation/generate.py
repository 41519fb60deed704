"""Text generation from a causal LM: greedy, temperature, top-k, top-p, stop strings, batched prompts, KV cache.

Batching uses left padding: every prompt ends at the same column, so one new column is decoded per step for all
rows. Each row keeps its own positions (0 at its first real token) and padded keys are masked out, so a prompt
generates the same tokens alone as in a batch.

Every prompt is preceded by [EOS]: pretraining packs documents separated by [EOS], so the token after it is
the start of a document, which is what a prompt is. It also gives an empty prompt something to condition on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..errors import UserError
from ..inputs.text import SPECIAL_TOKENS

N_SPECIAL = len(SPECIAL_TOKENS)


@dataclass
class GenerationConfig:
    """How to decode.

    Args:
        max_new_tokens: tokens generated per prompt at most.
        temperature: 0 = greedy (argmax); > 0 divides the logits before sampling.
        top_k: sample only among the k most likely tokens (0 = all).
        top_p: sample only from the smallest set of tokens whose probability reaches p (1 = all).
        stop: strings that end a continuation; the returned text stops before the first one.
        seed: seeds the sampler; the same prompts and seed give the same text.
        use_cache: keep past keys/values (one new token per step) instead of re-running the whole sequence.
        stop_at_eos: end a continuation at [EOS] (the end of a document).
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    use_cache: bool = True
    stop_at_eos: bool = True

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}.")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0 (0 = no limit), got {self.top_k}.")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}.")
        if any(s == "" for s in self.stop):
            raise UserError("--stop was given an empty string; every stop string needs at least one character.")


@dataclass
class Generation:
    prompt: str
    text: str  # the continuation, cut before the first stop string
    token_ids: list[int]  # generated ids (up to and including the token that completed a stop string or EOS)
    finish_reason: str  # "stop", "eos" or "length"


def causal_lm(module, where: str = "--model"):
    """(backbone, lm_head) of a causal LM module, or a UserError saying why this model cannot continue text."""
    kind = getattr(module, "kind", "")
    if not getattr(module.config, "causal", False) or "lm" not in getattr(module, "heads", {}):
        raise UserError(f"{where} holds a '{kind}' model, which has no causal language-model head: it cannot "
                        f"continue a prompt. Use a checkpoint pretrained with `--objective clm` (e.g. RUN/final).")
    return module.backbone, module.heads["lm"]


def attention_mask(valid: torch.Tensor, n_new: int) -> torch.Tensor:
    """(B, S) bool of real tokens -> (B, 1, n_new, S) mask for the last ``n_new`` queries: causal, no padded
    keys. A query may always see itself, so padded query rows are never empty (SDPA returns NaN for those)."""
    S = valid.shape[1]
    keys = torch.arange(S, device=valid.device)
    queries = keys[S - n_new:, None]
    allowed = (keys[None, :] <= queries) & valid[:, None, :]
    allowed |= keys[None, :] == queries
    return allowed[:, None]


def row_positions(valid: torch.Tensor) -> torch.Tensor:
    """(B, S) bool -> (B, S) positions counted from each row's first real token (left padding)."""
    return (valid.long().cumsum(1) - 1).clamp(min=0)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids (B, L), valid (B, L) bool), padded on the left."""
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    valid = torch.zeros((len(rows), L), dtype=torch.bool)
    for i, r in enumerate(rows):
        if r:
            ids[i, L - len(r):] = torch.tensor(r, dtype=torch.long)
            valid[i, L - len(r):] = True
    return ids, valid


def next_token(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids, greedy or sampled with temperature / top-k / top-p."""
    logits = logits.float()
    if cfg.temperature == 0:
        return logits.argmax(-1)
    logits = logits / cfg.temperature
    if 0 < cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already reach top_p (the most likely one always stays)
        drop_sorted = probs.cumsum(-1) - probs >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_ids(backbone, lm_head, prompts: list[list[int]], cfg: GenerationConfig, eos_id: int, pad_id: int,
                 stop_check=None) -> list[tuple[list[int], str]]:
    """Decode continuations of token-id prompts (each should start with the document-start token).

    Args:
        backbone, lm_head: a causal decoder and its LM head.
        prompts: one list of token ids per row (non-empty).
        cfg: decoding settings.
        eos_id, pad_id: end-of-document and padding ids.
        stop_check: ``f(row, generated_ids) -> bool``, True once the row has produced a stop string.

    Returns:
        per row (generated ids, finish reason "stop" | "eos" | "length").
    """
    device = backbone.wte.weight.device
    max_len = backbone.config.max_len
    longest = max(len(p) for p in prompts)
    if longest + cfg.max_new_tokens > max_len:
        raise UserError(f"a prompt of {longest} tokens plus --max-new-tokens {cfg.max_new_tokens} exceeds the "
                        f"model's window of {max_len} positions; shorten the prompt or ask for at most "
                        f"{max(0, max_len - longest)} new tokens.")
    ids, valid = left_pad(prompts, pad_id)
    ids, valid = ids.to(device), valid.to(device)
    generator = None
    if cfg.temperature > 0:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    # Only [EOS] among the special tokens is ever a training target; the others would be noise if sampled.
    banned = torch.zeros(backbone.config.vocab_size, dtype=torch.bool, device=device)
    banned[:N_SPECIAL] = True
    banned[eos_id] = False

    B = len(prompts)
    out: list[list[int]] = [[] for _ in range(B)]
    reason = ["length"] * B
    done = [False] * B
    cache = backbone.new_cache(ids.shape[1] + cfg.max_new_tokens) if cfg.use_cache else None
    step_ids = ids
    for _ in range(cfg.max_new_tokens):
        positions = row_positions(valid)
        n_new = step_ids.shape[1]
        hidden = backbone(step_ids, positions=positions[:, -n_new:], mask=attention_mask(valid, n_new),
                          cache=cache)
        logits = lm_head(hidden[:, -1]).masked_fill(banned, float("-inf"))
        token = next_token(logits, cfg, generator)
        for i in range(B):
            if done[i]:
                continue
            t = int(token[i])
            out[i].append(t)
            if cfg.stop_at_eos and t == eos_id:
                done[i], reason[i] = True, "eos"
            elif stop_check is not None and stop_check(i, out[i]):
                done[i], reason[i] = True, "stop"
        if all(done):
            break
        ids = torch.cat([ids, token[:, None]], 1)
        valid = torch.cat([valid, torch.ones_like(valid[:, :1])], 1)
        step_ids = token[:, None] if cache is not None else ids
    return [(o, r) for o, r in zip(out, reason)]


def stop_forms(tokenizer, stop: list[str]) -> list[str]:
    """Each stop string as given and as the tokenizer writes it back (WordPiece puts spaces around punctuation
    and drops newlines), so a stop string matches decoded text whichever tokenizer the model has."""
    forms = []
    for s in stop:
        for form in (s, tokenizer.decode(tokenizer.encode(s))):
            if form and form not in forms:
                forms.append(form)
    return forms


def continuation_text(tokenizer, prompt_ids: list[int], generated: list[int]) -> str:
    """The text the generated ids add to the prompt. Decoding them alone would lose the join: WordPiece glues a
    "##" piece to the prompt's last word, and the space before a new word is only written between two words."""
    tail = list(prompt_ids[-8:])  # the join depends on the last prompt tokens only; keeps stop checks O(1)
    before = tokenizer.decode(tail)
    after = tokenizer.decode(tail + list(generated))
    return after[len(before):] if after.startswith(before) else tokenizer.decode(generated)


def cut_at_stop(text: str, forms: list[str]) -> tuple[str, bool]:
    """Text before the earliest stop form, and whether one was found."""
    hits = [text.find(f) for f in forms if f in text]
    return (text[:min(hits)], True) if hits else (text, False)


def generate(module, tokenizer, prompts: list[str] | str, cfg: GenerationConfig | None = None,
             batch_size: int = 16) -> list[Generation]:
    """Continue each prompt. Python API behind ``transferlab generate``.

    Args:
        module: a causal LM (``load_model(dir)[0]`` of a ``--objective clm`` checkpoint).
        tokenizer: its tokenizer.
        prompts: a string or a list of strings.
        cfg: decoding settings (default: greedy, 32 new tokens, with the KV cache).
        batch_size: prompts decoded together.

    Returns:
        one ``Generation`` per prompt, in order.
    """
    cfg = cfg or GenerationConfig()
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise UserError("no prompt was given; pass at least one --prompt.")
    backbone, lm_head = causal_lm(module)
    module.eval()
    forms = stop_forms(tokenizer, cfg.stop)
    results: list[Generation] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        encoded = [[tokenizer.eos_id] + tokenizer.encode(p) for p in chunk]

        def stop_check(i, generated):
            return cut_at_stop(continuation_text(tokenizer, encoded[i], generated), forms)[1]

        # each chunk's sampler is seeded from the seed and the chunk's position, so output never depends on
        # what else ran before in the same process (but a sampled prompt's text does depend on its batch)
        chunk_cfg = replace(cfg, seed=cfg.seed + start)
        outs = generate_ids(backbone, lm_head, encoded, chunk_cfg, tokenizer.eos_id, tokenizer.pad_id,
                            stop_check if forms else None)
        for prompt, prompt_ids, (ids, reason) in zip(chunk, encoded, outs):
            text, _ = cut_at_stop(continuation_text(tokenizer, prompt_ids, ids), forms)
            results.append(Generation(prompt, text, ids, reason))
    return results


def load_causal_lm(directory):
    """(module, tokenizer) of a causal-LM checkpoint directory, in eval mode; a clear error for other models."""
    from ..tasks.factory import load_model

    module, tokenizer, _ = load_model(directory)
    causal_lm(module, f"'{directory}'")
    return module.eval(), tokenizer


def trained_window(directory) -> int:
    """The context length a checkpoint was pretrained on (its blocks' length): positions beyond it have
    embeddings that never received a gradient, so evaluation should not use them. Falls back on the position
    table's size for checkpoints that do not record it."""
    from ..training.checkpoint import load_config

    config = load_config(directory)
    max_len = config["backbone"]["max_len"]
    seq_len = (config.get("pretraining") or {}).get("seq_len")
    return min(int(seq_len), max_len) if seq_len else max_len
