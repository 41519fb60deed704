"""Backbone configurations as plain dataclasses, and presets as plain data.

Presets follow the published small BERTs (Turc et al. 2019, "Well-Read Students Learn Better"): tiny 2/128,
mini 4/256, small 4/512, medium 8/512, base 12/768 (layers/hidden), heads = hidden / 64 (tiny: 2), FFN = 4 x hidden,
so results line up with that table.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .base import JsonConfig

FAMILIES = ("encoder", "decoder", "encoder_decoder", "embedding", "rnn")

PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, d_model=128, n_head=2),
    "mini": dict(n_layer=4, d_model=256, n_head=4),
    "small": dict(n_layer=4, d_model=512, n_head=8),
    "medium": dict(n_layer=8, d_model=512, n_head=8),
    "base": dict(n_layer=12, d_model=768, n_head=12),
}


@dataclass
class ModelConfig(JsonConfig):
    """Everything needed to rebuild a backbone. Round-trips through ``config.json``.

    ``family`` decides the attention pattern: ``encoder`` is BERT (bidirectional, token types, embedding
    LayerNorm); ``decoder`` is GPT-2 (causal); ``encoder_decoder`` is BART (a bidirectional encoder and a causal
    decoder with cross-attention, sharing one token embedding). ``norm`` places the LayerNorms: "pre" (GPT-2; also our encoder
    default, because post-norm BERTs sat on the unigram plateau far longer in short CPU runs) or "post" (original
    BERT, needed to load BERT checkpoints). Pre-norm backbones end with a final LayerNorm.

    Two families have no attention: ``embedding`` is context-free word vectors (word2vec) and ``rnn`` ELMo's
    bidirectional LSTM, whose hidden state is both directions side by side (d_model / 2 each).
    """

    family: str = "encoder"
    vocab_size: int = 8000
    n_layer: int = 2
    d_model: int = 128
    n_head: int = 2
    d_ff: int = 0  # 0 -> 4 * d_model
    max_len: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    activation: str = "gelu"  # "gelu" (erf, BERT) or "gelu_tanh" (GPT-2)
    norm: str = "pre"  # "pre" or "post"
    # "tied": the LM head is the tied embedding alone (GPT-2). "bert": BERT's dense+GELU+LayerNorm transform and an
    # output bias before it (needed for BERT checkpoints). Measured on the demo world: with either the transform or
    # the bias a tiny encoder stayed on the unigram plateau (loss 4.6) for 1,500 steps; tied alone left it by ~600.
    lm_head: str = "tied"
    # "learned": a table of absolute positions added to the input (BERT, GPT-2; needed for their checkpoints).
    # "rotary": RoPE inside attention, so scores see relative offsets (what pretraining defaults to: see
    # PretrainConfig.position for the measurement). Configs written before this field existed are "learned".
    position: str = "learned"
    norm_eps: float = 1e-12
    init_std: float = 0.02  # small init keeps softmax gradients out of the denormal range on CPU
    pad_id: int = 0
    # encoder_decoder only: decoder blocks (0 -> n_layer, as BART-base's 6/6). n_layer counts the encoder blocks.
    n_dec_layer: int = 0
    # encoder_decoder only: the token the decoder starts from. None (what bart/mass pretraining here writes): the
    # tokenizer's [BOS] starts decoding, and a classifier feeds the input to both sides as it is. An id (set when a
    # Hugging Face BART is converted, its decoder_start_token_id): decoding starts from it, and a classifier's
    # decoder reads the input shifted right behind it, as BartForSequenceClassification does.
    decoder_start_id: int | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise UserError(f"unknown model family '{self.family}'; choose one of {', '.join(FAMILIES)}.")
        if self.d_ff == 0:
            self.d_ff = 4 * self.d_model
        if self.n_dec_layer == 0 and self.family == "encoder_decoder":
            self.n_dec_layer = self.n_layer
        if self.d_model % self.n_head:
            raise UserError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}.")
        if self.norm not in ("pre", "post"):
            raise UserError(f"unknown norm placement '{self.norm}'; choose pre or post.")
        if self.family == "rnn" and self.d_model % 2:
            raise UserError(f"an rnn backbone splits d_model={self.d_model} between two directions; make it even.")
        if self.family == "decoder" and self.norm != "pre":
            raise UserError("decoders are pre-norm (GPT-2); norm='post' is for encoders.")
        if self.lm_head not in ("tied", "bert"):
            raise UserError(f"unknown lm_head '{self.lm_head}'; choose tied or bert.")
        if self.position not in ("learned", "rotary"):
            raise UserError(f"unknown position encoding '{self.position}'; choose learned or rotary.")
        if self.position == "rotary" and (self.d_model // self.n_head) % 2:
            raise UserError(f"rotary positions turn channel pairs, so the head size d_model / n_head = "
                            f"{self.d_model // self.n_head} must be even; change d_model or n_head, or use "
                            f"position='learned'.")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise UserError(f"unknown activation '{self.activation}'; choose gelu or gelu_tanh.")

    modality = "text"  # what the backbone reads (a class attribute: not a field, not in config.json)

    @property
    def causal(self) -> bool:
        # An encoder-decoder returns its (causal) decoder's states, so the last real token summarises a sequence.
        return self.family in ("decoder", "encoder_decoder")

    @property
    def default_pooling(self) -> str:
        """How a classifier reads a sequence: GPT's last token for causal backbones (it has seen everything), the
        mean of the real tokens for the others. Not BERT's [CLS]: none of our pretraining objectives trains it (no
        next-sentence prediction). On 1,000 SST-2 labels (tiny MLM encoder, 3 seeds) the frozen encoder's mean
        separated the classes better than its [CLS] (linear probe 0.638 ± 0.012 against 0.611 ± 0.010), and
        fine-tuning reached 0.708 ± 0.009 against 0.697 ± 0.029 (docs/results/README.md). ``pooling="cls"`` stays."""
        return "last" if self.causal else "mean"

    def decoder_start(self, bos_id: int) -> int:
        """The first decoder input of an encoder-decoder: ``decoder_start_id``, else the tokenizer's ``bos_id``."""
        return bos_id if self.decoder_start_id is None else self.decoder_start_id

    @property
    def norm_first(self) -> bool:
        return self.norm == "pre"



def preset(name: str, family: str, vocab_size: int, **overrides) -> ModelConfig:
    """Build a config from a preset name; ``overrides`` replace any field."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset '{name}' (--model); choose one of {', '.join(PRESETS)}.")
    kw = dict(PRESETS[name], family=family, vocab_size=vocab_size)
    if family == "decoder":
        kw.update(activation="gelu_tanh", norm_eps=1e-5)
    elif family == "encoder_decoder":
        kw.update(norm_eps=1e-5)  # BART's (nn.LayerNorm's default), so a post-norm one exports with equal logits
    kw.update(overrides)
    return ModelConfig(**kw)
