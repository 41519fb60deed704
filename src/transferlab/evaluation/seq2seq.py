"""Generation from encoder-decoders (greedy and beam search) and BLEU / chrF with sacrebleu.

The encoder runs once per batch; every decoding step reruns the decoder over the prefix (no key/value cache):
outputs here are short (words, sentences), and the decoder-only sampler in ``generate.py`` is where a cache pays.

Beam search keeps ``beam_size`` hypotheses per input for up to ``max_new_tokens`` steps; a hypothesis that has
emitted [EOS] is finished and carried along with its score frozen. The winner maximises
``log p(y) / len(y) ** length_penalty`` (len counts the [EOS]); with ``beam_size=1`` it is exactly greedy.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


@torch.no_grad()
def generate(module, input_ids: torch.Tensor, attention: torch.Tensor | None, bos_id: int, eos_id: int,
             max_new_tokens: int = 32, beam_size: int = 1, length_penalty: float = 1.0) -> list[list[int]]:
    """Decode each row of ``input_ids`` (B, S); returns the generated ids without [BOS] and [EOS].

    Args:
        module: a ``Seq2SeqLM`` (its ``backbone.encode`` and ``next_token_logits`` are used).
        attention: (B, S) padding mask of the inputs, or None.
        beam_size: 1 = greedy.
        length_penalty: exponent of the length normalisation of beam scores (0 = raw log-probability).
    """
    memory = module.backbone.encode(input_ids, attention)
    if beam_size == 1:
        seqs = greedy_search(module, memory, attention, bos_id, eos_id, max_new_tokens)
    else:
        seqs = beam_search(module, memory, attention, bos_id, eos_id, max_new_tokens, beam_size, length_penalty)
    return [_strip(s, eos_id) for s in seqs.tolist()]


def _strip(seq: list[int], eos_id: int) -> list[int]:
    seq = seq[1:]  # [BOS]
    return seq[:seq.index(eos_id)] if eos_id in seq else seq


def greedy_search(module, memory, attention, bos_id, eos_id, max_new_tokens) -> torch.Tensor:
    B = memory.shape[0]
    seqs = torch.full((B, 1), bos_id, dtype=torch.long, device=memory.device)
    done = torch.zeros(B, dtype=torch.bool, device=memory.device)
    for _ in range(max_new_tokens):
        nxt = module.next_token_logits(seqs, memory, attention).argmax(-1)
        nxt = nxt.masked_fill(done, eos_id)
        seqs = torch.cat([seqs, nxt[:, None]], 1)
        done |= nxt == eos_id
        if bool(done.all()):
            break
    return seqs


def beam_search(module, memory, attention, bos_id, eos_id, max_new_tokens, K, length_penalty) -> torch.Tensor:
    B = memory.shape[0]
    memory = memory.repeat_interleave(K, 0)  # (B*K, S, C), beams of one input are adjacent
    attention = None if attention is None else attention.repeat_interleave(K, 0)
    seqs = torch.full((B * K, 1), bos_id, dtype=torch.long, device=memory.device)
    scores = torch.full((B, K), NEG_INF, device=memory.device)
    scores[:, 0] = 0.0  # all beams start identical: let only the first one expand at step 1
    done = torch.zeros(B * K, dtype=torch.bool, device=memory.device)
    lengths = torch.zeros(B * K, device=memory.device)
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(module.next_token_logits(seqs, memory, attention), -1)  # (B*K, V)
        V = logp.shape[-1]
        # A finished hypothesis continues only with [EOS] at no cost, so its score stays frozen.
        logp[done] = NEG_INF
        logp[done, eos_id] = 0.0
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)
        scores, flat = cand.topk(K, dim=-1)  # (B, K)
        parent = (flat // V + torch.arange(B, device=flat.device)[:, None] * K).view(-1)
        token = (flat % V).view(-1)
        seqs = torch.cat([seqs[parent], token[:, None]], 1)
        lengths = lengths[parent] + (~done[parent]).float()
        done = done[parent] | (token == eos_id)
        if bool(done.all()):
            break
    normalised = scores / lengths.view(B, K).clamp(min=1) ** length_penalty
    best = normalised.argmax(-1) + torch.arange(B, device=memory.device) * K
    return seqs[best]


def corpus_metrics(hypotheses: list[str], references: list[list[str]], tokenize: str = "13a") -> dict:
    """Corpus BLEU and chrF (sacrebleu, 0-100), and exact match against any reference (a fraction).

    Args:
        hypotheses: one string per input.
        references: the acceptable outputs of each input (any number, at least one).
        tokenize: sacrebleu's BLEU tokenizer: "13a" (WMT default), "intl", "char" (for single words), "none".
    Returns:
        {"bleu", "chrf", "exact_match"}.
    """
    import sacrebleu

    n_refs = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(n_refs)]
    bleu = sacrebleu.metrics.BLEU(tokenize=tokenize).corpus_score(hypotheses, streams)
    chrf = sacrebleu.metrics.CHRF().corpus_score(hypotheses, streams)
    exact = sum(h.strip() in {r.strip() for r in refs} for h, refs in zip(hypotheses, references))
    return {"bleu": bleu.score, "chrf": chrf.score, "exact_match": exact / max(len(hypotheses), 1)}


@torch.no_grad()
def translate(module, tokenizer, texts: list[str], max_len: int = 128, beam_size: int = 1,
              max_new_tokens: int = 32, length_penalty: float = 1.0, batch_size: int = 64,
              progress: bool = False) -> list[str]:
    """Generate an output string for each input text (a fine-tuned ``Seq2SeqLM`` and its tokenizer)."""
    from tqdm.auto import tqdm

    from ..tasks.seq2seq import PairSet, encode_pairs

    max_new_tokens = min(max_new_tokens, module.config.max_len - 1)  # decoder positions run out after that
    decoder_start = module.config.decoder_start(tokenizer.bos_id)
    examples = encode_pairs(tokenizer, PairSet(list(texts), None, "<in-memory>", []), max_len, max_new_tokens,
                            decoder_start)
    module.eval()
    device = next(module.parameters()).device
    out = []
    starts = range(0, len(examples), batch_size)
    for start in tqdm(starts, desc="generate", unit="batch", disable=None if progress else True,
                      dynamic_ncols=True):
        batch = examples.collate(range(start, min(start + batch_size, len(examples))))
        ids = generate(module, batch["input_ids"].to(device), batch["attention"].to(device), decoder_start,
                       tokenizer.eos_id, max_new_tokens, beam_size, length_penalty)
        out.extend(tokenizer.decode(s) for s in ids)
    return out


@torch.no_grad()
def teacher_forced_loss(module, examples, batch_size: int = 64) -> float:
    """Mean cross-entropy per target token over ``Seq2SeqExamples``, the decoder reading the true prefix."""
    module.eval()
    device = next(module.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples.collate(range(start, min(start + batch_size, len(examples))))
        out = module({k: v.to(device) for k, v in batch.items()})
        total += float(out["loss"]) * out["n_predictions"]
        count += out["n_predictions"]
    return total / max(count, 1)


def score_predictions(pairs, predictions: list[str], tokenize: str = "13a") -> dict:
    """Metrics of one prediction per row of ``pairs``, each distinct source scored once against all its targets."""
    prediction_of = dict(zip(pairs.sources, predictions))
    sources, references = pairs.grouped()
    return corpus_metrics([prediction_of[s] for s in sources], references, tokenize)


@torch.no_grad()
def evaluate_seq2seq(module, tokenizer, pairs, max_len: int = 128, max_target_len: int = 32,
                     beam_size: int = 1, length_penalty: float = 1.0, tokenize: str = "13a",
                     batch_size: int = 64) -> dict:
    """Teacher-forced loss over the pairs, then BLEU / chrF / exact match of generated outputs against every
    target given for each distinct source."""
    from ..tasks.seq2seq import encode_pairs

    examples = encode_pairs(tokenizer, pairs, max_len, max_target_len, module.config.decoder_start(tokenizer.bos_id))
    loss = teacher_forced_loss(module, examples, batch_size)
    sources, references = pairs.grouped()
    hypotheses = translate(module, tokenizer, sources, max_len, beam_size, max_target_len, length_penalty,
                           batch_size)
    return {"loss": loss, **corpus_metrics(hypotheses, references, tokenize)}
