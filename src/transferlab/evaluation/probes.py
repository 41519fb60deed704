"""Probes of what a backbone's hidden states hold.

``sense_probe``: the vectors one word gets in several contexts, and their cosine similarities. A context-free
model (word2vec) gives the word the same vector everywhere (similarity 1); a contextual model (ELMo, BERT, XLNet,
...) gives "bank" in "the bank of the river" and in "money in the bank" different vectors. A word split into
several subword tokens is represented by the mean of their hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..inputs.text import encode_texts
from ..tasks.factory import load_model


@dataclass
class SenseProbe:
    word: str
    contexts: list[str]
    vectors: torch.Tensor  # (n, C)
    similarity: torch.Tensor  # (n, n) cosine

    def off_diagonal(self) -> torch.Tensor:
        n = len(self.contexts)
        return self.similarity[~torch.eye(n, dtype=torch.bool)]

    def table(self) -> str:
        """Plain-text report: the similarity matrix with numbered contexts."""
        n = len(self.contexts)
        lines = [f"'{self.word}' in {n} contexts, cosine similarity of its vectors:"]
        lines += [f"  [{i}] {c}" for i, c in enumerate(self.contexts)]
        lines.append("      " + "".join(f"[{j}]".rjust(8) for j in range(n)))
        for i in range(n):
            lines.append(f"  [{i}] " + "".join(f"{float(self.similarity[i, j]):8.4f}" for j in range(n)))
        off = self.off_diagonal()
        lines.append(f"  mean across contexts {float(off.mean()):.4f}, min {float(off.min()):.4f}")
        return "\n".join(lines)


def _find(seq: list[int], sub: list[int]) -> int:
    for start in range(len(seq) - len(sub) + 1):
        if seq[start:start + len(sub)] == sub:
            return start
    return -1


@torch.no_grad()
def sense_probe(model_dir: str | Path, word: str, contexts: list[str], max_len: int = 128) -> SenseProbe:
    """The hidden states of ``word`` in each of ``contexts``, from the backbone saved in ``model_dir``.

    Args:
        model_dir: any checkpoint directory (pretrained or fine-tuned; its heads are not used).
        word: the word to follow; it must occur in every context.
        contexts: at least two sentences.
    Returns:
        a ``SenseProbe`` with the vectors and their pairwise cosine similarities.
    """
    if len(contexts) < 2:
        raise UserError(f"the sense probe compares a word across contexts; give at least two (--contexts), got "
                        f"{len(contexts)}.")
    module, tokenizer, _ = load_model(model_dir)
    backbone = module.backbone.eval()
    # byte-level BPE marks a word start with a leading space; WordPiece and Unigram do not
    candidates = [tokenizer.encode(word), tokenizer.encode(" " + word)]
    encoded = encode_texts(tokenizer, backbone.config.family, contexts, None, max_len)
    vectors = []
    for text, ids in zip(contexts, encoded.input_ids):
        found = [(start, len(sub)) for sub in candidates if sub and (start := _find(ids, sub)) >= 0]
        if not found:
            pieces = " ".join(tokenizer.id_to_token(i) or "?" for i in candidates[0])
            raise UserError(f"--word '{word}' (tokens: {pieces}) does not occur in the context '{text}' after "
                            f"tokenisation (first {max_len} tokens); use the word as written in every context.")
        start, n = found[0]
        hidden = backbone(torch.tensor([ids]))[0]
        vectors.append(hidden[start:start + n].float().mean(0))
    vectors = torch.stack(vectors)
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    return SenseProbe(word, list(contexts), vectors, unit @ unit.t())
