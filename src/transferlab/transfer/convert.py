"""Hugging Face checkpoints in and out: BERT, RoBERTa, GPT-2 and BART.

``from_hf(src, out)`` turns a Hugging Face model directory on local disk (``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, tokenizer files) into a transferlab checkpoint directory; ``to_hf(src, out)`` does the reverse.

The mapping is data: per architecture, a table of renames between our parameter names and Hugging Face's. An entry
is ``(ours, theirs, op)``; ``{i}`` stands for the layer index (``{j}`` for a decoder layer of an encoder-decoder)
and ``{p}`` for the base-model prefix (``bert.``, ``roberta.``, ``transformer.``, ``model.``). Three ops cover every
difference:

- a tuple ``theirs`` is fused: BERT's (and BART's) separate query/key/value become our one ``qkv`` Linear
  (concatenated along the output dimension, in that order) and are split back on the way out;
- ``"T"`` transposes: GPT-2's ``Conv1D`` stores weights as (in, out), a Linear as (out, in);
- ``"pos"`` drops the position rows an architecture never reads: RoBERTa's first ``pad_token_id + 1`` (its positions
  start after the padding index), BART's first 2 (its table is offset by 2); on the way out they are written as
  zeros (only RoBERTa's padded positions ever read them).

BART maps onto our post-norm encoder-decoder one to one (embedding LayerNorms, post-norm blocks, no final
LayerNorm, one shared embedding that is also the LM head). Its ``final_logits_bias`` is a buffer Hugging Face never
trains (zeros unless the vocabulary was resized): a non-zero one is refused, and zeros are written. Its decoder
starts from ``decoder_start_token_id``, which becomes the model config's ``decoder_start_id``; a sequence classifier
reads the decoder's state at the last token ([EOS]) of the input shifted right behind it, our "last" pooling.

Adding an architecture is a new ``Arch`` entry in ``ARCHS``.
Weights are read with safetensors, or ``torch.load(weights_only=True)`` for ``pytorch_model.bin``: no pickle code
ever runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..fsutil import atomic_dir, check_output_dir, read_json, write_json
from ..inputs.text import DEFAULT_ROLES, ROLES, Tokenizer
from ..models import ModelConfig, build_backbone
from ..training.checkpoint import check_weights

HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _wb(ours: str, theirs: str | tuple[str, ...], op: str = "") -> tuple[tuple, tuple]:
    """The weight and bias entries of one Linear / LayerNorm (a Conv1D's bias is not transposed)."""
    def suffix(name, s):
        return tuple(t + s for t in name) if isinstance(name, tuple) else name + s
    return ((ours + ".weight", suffix(theirs, ".weight"), op),
            (ours + ".bias", suffix(theirs, ".bias"), "" if op == "T" else op))


_LAYER = "{p}encoder.layer.{i}."
BERT_BACKBONE = (
    ("wte.weight", "{p}embeddings.word_embeddings.weight", ""),
    ("wpe.weight", "{p}embeddings.position_embeddings.weight", "pos"),
    ("wtt.weight", "{p}embeddings.token_type_embeddings.weight", ""),
    *_wb("ln_emb", "{p}embeddings.LayerNorm"),
    *_wb("h.{i}.attn.qkv", tuple(_LAYER + f"attention.self.{n}" for n in ("query", "key", "value"))),
    *_wb("h.{i}.attn.proj", _LAYER + "attention.output.dense"),
    *_wb("h.{i}.ln_1", _LAYER + "attention.output.LayerNorm"),  # post-norm: ln_1 follows attention
    *_wb("h.{i}.mlp.fc", _LAYER + "intermediate.dense"),
    *_wb("h.{i}.mlp.proj", _LAYER + "output.dense"),
    *_wb("h.{i}.ln_2", _LAYER + "output.LayerNorm"),
)
GPT2_BACKBONE = (
    ("wte.weight", "{p}wte.weight", ""),
    ("wpe.weight", "{p}wpe.weight", ""),
    *_wb("h.{i}.ln_1", "{p}h.{i}.ln_1"),
    *_wb("h.{i}.attn.qkv", "{p}h.{i}.attn.c_attn", "T"),  # c_attn is already fused q|k|v
    *_wb("h.{i}.attn.proj", "{p}h.{i}.attn.c_proj", "T"),
    *_wb("h.{i}.ln_2", "{p}h.{i}.ln_2"),
    *_wb("h.{i}.mlp.fc", "{p}h.{i}.mlp.c_fc", "T"),
    *_wb("h.{i}.mlp.proj", "{p}h.{i}.mlp.c_proj", "T"),
    *_wb("ln_f", "{p}ln_f"),
)

_ENC, _DEC = "{p}encoder.layers.{i}.", "{p}decoder.layers.{j}."


def _bart_attention(ours: str, theirs: str) -> tuple:
    return (*_wb(ours + ".qkv", tuple(f"{theirs}.{n}_proj" for n in "qkv")), *_wb(ours + ".proj", theirs + ".out_proj"))


BART_BACKBONE = (
    ("wte.weight", "{p}shared.weight", ""),
    ("wpe.weight", "{p}encoder.embed_positions.weight", "pos"),
    ("wpe_dec.weight", "{p}decoder.embed_positions.weight", "pos"),
    *_wb("ln_emb", "{p}encoder.layernorm_embedding"),
    *_wb("ln_emb_dec", "{p}decoder.layernorm_embedding"),
    *_bart_attention("h.{i}.attn", _ENC + "self_attn"),
    *_wb("h.{i}.ln_1", _ENC + "self_attn_layer_norm"),
    *_wb("h.{i}.mlp.fc", _ENC + "fc1"),
    *_wb("h.{i}.mlp.proj", _ENC + "fc2"),
    *_wb("h.{i}.ln_2", _ENC + "final_layer_norm"),
    *_bart_attention("h_dec.{j}.attn", _DEC + "self_attn"),
    *_wb("h_dec.{j}.ln_1", _DEC + "self_attn_layer_norm"),
    *_bart_attention("h_dec.{j}.cross_attn", _DEC + "encoder_attn"),
    *_wb("h_dec.{j}.ln_cross", _DEC + "encoder_attn_layer_norm"),
    *_wb("h_dec.{j}.mlp.fc", _DEC + "fc1"),
    *_wb("h_dec.{j}.mlp.proj", _DEC + "fc2"),
    *_wb("h_dec.{j}.ln_2", _DEC + "final_layer_norm"),
)

# (Hugging Face config key, ModelConfig field)
BERT_CONFIG = (("vocab_size", "vocab_size"), ("hidden_size", "d_model"), ("num_hidden_layers", "n_layer"),
               ("num_attention_heads", "n_head"), ("intermediate_size", "d_ff"),
               ("max_position_embeddings", "max_len"), ("type_vocab_size", "type_vocab_size"),
               ("layer_norm_eps", "norm_eps"), ("hidden_dropout_prob", "dropout"), ("initializer_range", "init_std"),
               ("hidden_act", "activation"))
GPT2_CONFIG = (("vocab_size", "vocab_size"), ("n_embd", "d_model"), ("n_layer", "n_layer"), ("n_head", "n_head"),
               ("n_inner", "d_ff"), ("n_positions", "max_len"), ("layer_norm_epsilon", "norm_eps"),
               ("resid_pdrop", "dropout"), ("initializer_range", "init_std"), ("activation_function", "activation"))
BART_CONFIG = (("vocab_size", "vocab_size"), ("d_model", "d_model"), ("encoder_layers", "n_layer"),
               ("decoder_layers", "n_dec_layer"), ("encoder_attention_heads", "n_head"), ("encoder_ffn_dim", "d_ff"),
               ("max_position_embeddings", "max_len"), ("dropout", "dropout"), ("init_std", "init_std"),
               ("activation_function", "activation"), ("decoder_start_token_id", "decoder_start_id"))
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
ACTIVATIONS_OUT = {"gelu": "gelu", "gelu_tanh": "gelu_new"}


@dataclass(frozen=True)
class Arch:
    """One Hugging Face architecture: names, config keys, fixed choices, and the renames of each part."""

    model_type: str
    family: str
    prefix: str
    config: tuple
    fixed: dict  # ModelConfig fields the architecture fixes
    requires: dict  # config key -> the only value we can represent (an absent key counts as that value)
    backbone: tuple
    heads: dict  # our task kind -> renames of its head (absolute Hugging Face names)
    classes: dict  # our task kind -> Hugging Face class name
    ignore: tuple  # regexes of tied copies and buffers: never loaded, never written
    roles: dict  # default special tokens when the tokenizer files name none
    same: tuple = ()  # pairs of config keys that must be equal (we have one value for both)
    position_offset: Callable[[int], int] = lambda pad_id: 0  # the position rows it never reads, from the pad id
    max_len_counts_offset: bool = False  # whether the config's position count includes those rows (RoBERTa's does)
    aliases: tuple = ()  # (name, other names): a tied tensor that older saves may store under another name
    pooling: str = "cls"  # what its *ForSequenceClassification reads: our pooling of the same token


_ENCODER_REQUIRES = {"is_decoder": False, "add_cross_attention": False, "position_embedding_type": "absolute",
                     "tie_word_embeddings": True}
_BERT_FIXED = {"norm": "post", "position": "learned"}
_CLS_BERT = (*_wb("heads.classifier.dense", "{p}pooler.dense"), *_wb("heads.classifier.out", "classifier"))
_CLS_ROBERTA = (*_wb("heads.classifier.dense", "classifier.dense"), *_wb("heads.classifier.out", "classifier.out_proj"))

_ROBERTA_ROLES = {"bos": "<s>", "cls": "<s>", "eos": "</s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>",
                  "mask": "<mask>"}
_CLS_BART = (*_wb("heads.classifier.dense", "classification_head.dense"),
             *_wb("heads.classifier.out", "classification_head.out_proj"))
_BART_GENERATION = "BartForConditionalGeneration"

ARCHS: dict[str, Arch] = {
    "bert": Arch(
        "bert", "encoder", "bert.", BERT_CONFIG, _BERT_FIXED, _ENCODER_REQUIRES, BERT_BACKBONE,
        heads={"mlm": (*_wb("heads.lm.dense", "cls.predictions.transform.dense"),
                       *_wb("heads.lm.ln", "cls.predictions.transform.LayerNorm"),
                       ("heads.lm.bias", "cls.predictions.bias", "")),
               "classification": _CLS_BERT, "regression": _CLS_BERT},
        classes={"mlm": "BertForMaskedLM", "classification": "BertForSequenceClassification",
                 "regression": "BertForSequenceClassification"},
        ignore=(r"(.*\.)?embeddings\.position_ids", r"cls\.predictions\.decoder\.(weight|bias)"),
        roles={"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}),
    "roberta": Arch(
        "roberta", "encoder", "roberta.", BERT_CONFIG, _BERT_FIXED, _ENCODER_REQUIRES, BERT_BACKBONE,
        heads={"mlm": (*_wb("heads.lm.dense", "lm_head.dense"), *_wb("heads.lm.ln", "lm_head.layer_norm"),
                       ("heads.lm.bias", "lm_head.bias", "")),
               "classification": _CLS_ROBERTA, "regression": _CLS_ROBERTA},
        classes={"mlm": "RobertaForMaskedLM", "classification": "RobertaForSequenceClassification",
                 "regression": "RobertaForSequenceClassification"},
        ignore=(r"(.*\.)?embeddings\.position_ids", r"lm_head\.decoder\.(weight|bias)"),
        roles=_ROBERTA_ROLES, position_offset=lambda pad_id: pad_id + 1, max_len_counts_offset=True),
    "gpt2": Arch(
        "gpt2", "decoder", "transformer.", GPT2_CONFIG, {"norm": "pre", "lm_head": "tied", "position": "learned"},
        {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
         "tie_word_embeddings": True},
        GPT2_BACKBONE, heads={"clm": ()}, classes={"clm": "GPT2LMHeadModel"},
        ignore=(r"lm_head\.weight", r"(.*\.)?h\.\d+\.attn\.(masked_)?bias"),
        roles={"bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": "<|endoftext|>"}),
    "bart": Arch(
        "bart", "encoder_decoder", "model.", BART_CONFIG,
        {"norm": "post", "lm_head": "tied", "position": "learned", "norm_eps": 1e-5},  # nn.LayerNorm's default eps
        {"scale_embedding": False, "tie_word_embeddings": True, "is_encoder_decoder": True},
        BART_BACKBONE,
        # our seq2seq kinds are one module (encoder-decoder + tied LM head): all are BartForConditionalGeneration
        heads={"seq2seq": (), "bart": (), "mass": (), "classification": _CLS_BART, "regression": _CLS_BART},
        classes={"seq2seq": _BART_GENERATION, "bart": _BART_GENERATION, "mass": _BART_GENERATION,
                 "classification": "BartForSequenceClassification", "regression": "BartForSequenceClassification"},
        ignore=(r"(model\.)?(encoder|decoder)\.embed_tokens\.weight", r"lm_head\.weight", r"final_logits_bias"),
        roles=_ROBERTA_ROLES,
        same=(("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")),
        position_offset=lambda pad_id: 2,
        aliases=(("{p}shared.weight", ("{p}encoder.embed_tokens.weight", "{p}decoder.embed_tokens.weight",
                                       "lm_head.weight")),),
        pooling="last"),
}
SUPPORTED = ", ".join(f"{a.model_type} ({', '.join(sorted(set(a.classes.values())))})" for a in ARCHS.values())


def _arch(model_type: str | None, where: str) -> Arch:
    if model_type not in ARCHS:
        raise UserError(f"{where}: model_type {model_type!r} is not supported. Supported architectures: {SUPPORTED}.")
    return ARCHS[model_type]


def _expand(renames: tuple, cfg: ModelConfig, prefix: str):
    """Yield (ours, theirs, op) with {i} (encoder layers), {j} (decoder layers) and {p} filled in."""
    for ours, theirs, op in renames:
        layers = range(cfg.n_layer) if "{i}" in ours else range(cfg.n_dec_layer) if "{j}" in ours else [None]
        for i in layers:
            fill = (lambda s: s.format(i=i, j=i, p=prefix))
            yield fill(ours), tuple(map(fill, theirs)) if isinstance(theirs, tuple) else fill(theirs), op


# ------------------------------------------------------------------------------------------------- reading HF
def _read_hf_weights(src: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    def load(path: Path) -> dict:
        try:
            if path.suffix == ".safetensors":
                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt file, or a pickle that needs code (refused by weights_only)
            from ..training.checkpoint import refusal_reason

            raise UserError(f"cannot read weights '{path}': {refusal_reason(e)}. Nothing in it was executed. The file "
                            f"is corrupted, or it is a pickle holding more than tensors; re-save the model with "
                            f"save_pretrained(safe_serialization=True) where it came from.") from None

    for name in HF_WEIGHTS:
        path = src / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):  # sharded: the index maps each tensor to its shard
            shards = sorted(set(read_json(path).get("weight_map", {}).values()))
            weights = {}
            for shard in shards:
                weights.update(load(src / shard))
            return weights
        return load(path)
    raise UserError(f"'{src}' holds no PyTorch weights (looked for {', '.join(HF_WEIGHTS)}). Save the model with "
                    f"save_pretrained() from PyTorch; TensorFlow/Flax weights are not read.")


def _hf_roles(src: Path, arch: Arch, hf_tokenizer) -> dict[str, str]:
    """Special-token roles from tokenizer_config.json / special_tokens_map.json, else the architecture's defaults;
    only tokens the vocabulary has."""
    named: dict[str, str] = {}
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        if (src / file).is_file():
            for role in ROLES:
                value = read_json(src / file).get(f"{role}_token")
                value = value.get("content") if isinstance(value, dict) else value
                if isinstance(value, str):
                    named.setdefault(role, value)
    roles = {**arch.roles, **named}
    return {r: t for r, t in roles.items() if hf_tokenizer.token_to_id(t) is not None}


def _read_hf_tokenizer(src: Path, arch: Arch) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    cfg = read_json(src / "tokenizer_config.json") if (src / "tokenizer_config.json").is_file() else {}
    if (src / "tokenizer.json").is_file():
        hf = HFTokenizer.from_file(str(src / "tokenizer.json"))
    elif (src / "vocab.txt").is_file():  # a BERT saved with the slow tokenizer only
        from tokenizers.implementations import BertWordPieceTokenizer

        hf = BertWordPieceTokenizer(str(src / "vocab.txt"), lowercase=cfg.get("do_lower_case", True),
                                    strip_accents=cfg.get("strip_accents"))._tokenizer
    elif (src / "vocab.json").is_file() and (src / "merges.txt").is_file():  # GPT-2 / RoBERTa, slow files only
        from tokenizers.implementations import ByteLevelBPETokenizer

        hf = ByteLevelBPETokenizer(str(src / "vocab.json"), str(src / "merges.txt"),
                                   add_prefix_space=cfg.get("add_prefix_space", False))._tokenizer
    else:
        raise UserError(f"'{src}' has no tokenizer files (tokenizer.json, vocab.txt, or vocab.json + merges.txt). "
                        f"Save the tokenizer next to the model with tokenizer.save_pretrained('{src}').")
    return Tokenizer(hf, source=str(src), special_tokens=_hf_roles(src, arch, hf))


def _model_config(hf_config: dict, arch: Arch, tokenizer: Tokenizer, where: Path) -> ModelConfig:
    for key, value in arch.requires.items():
        if hf_config.get(key, value) != value:
            raise UserError(f"'{where}': {key}={hf_config[key]!r} is not supported for {arch.model_type} (only "
                            f"{value!r}); transferlab cannot represent this variant.")
    for a, b in arch.same:
        if a in hf_config and b in hf_config and hf_config[a] != hf_config[b]:
            raise UserError(f"'{where}': {a}={hf_config[a]!r} differs from {b}={hf_config[b]!r}; transferlab's "
                            f"encoder-decoder has one value for both, so this variant cannot be represented.")
    kw = {ours: hf_config[theirs] for theirs, ours in arch.config if hf_config.get(theirs) is not None}
    act = kw.get("activation", "gelu")
    if act not in ACTIVATIONS:
        raise UserError(f"'{where}': activation {act!r} is not supported; supported: {', '.join(ACTIVATIONS)}.")
    kw["activation"] = ACTIVATIONS[act]
    if arch.max_len_counts_offset:
        kw["max_len"] = kw["max_len"] - arch.position_offset(tokenizer.pad_id)
    if tokenizer.vocab_size != kw["vocab_size"]:
        raise UserError(f"'{where}': the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                        f"{kw['vocab_size']}; transferlab needs them equal (checkpoints with a padded embedding "
                        f"matrix are not converted).")
    return ModelConfig(family=arch.family, pad_id=tokenizer.pad_id, **arch.fixed, **kw)


def _hf_task(hf_config: dict, arch: Arch, weights: dict, prefix: str, cfg: ModelConfig) -> tuple[dict, str]:
    """Which of our tasks the checkpoint's heads make: (task config, lm_head choice)."""
    def has(kind):
        return bool(arch.heads[kind]) and all(
            all(t in weights for t in (theirs if isinstance(theirs, tuple) else (theirs,)))
            for _, theirs, _ in _expand(arch.heads[kind], cfg, prefix))

    if arch.family == "decoder":
        return {"kind": "clm"}, "tied"
    if has("classification") and not any(c.endswith(("MaskedLM", "ConditionalGeneration"))
                                          for c in hf_config.get("architectures") or []):
        id2label = hf_config.get("id2label") or {}
        names = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
        if hf_config.get("problem_type") == "regression" or len(names or [0, 1]) == 1:
            return {"kind": "regression", "num_labels": 1, "label_names": None, "pooling": arch.pooling}, "tied"
        n = len(names) if names else int(hf_config.get("num_labels", 2))
        return {"kind": "classification", "num_labels": n, "label_names": names, "pooling": arch.pooling}, "tied"
    if arch.family == "encoder_decoder":  # BartModel or BartForConditionalGeneration: the LM head is tied
        return {"kind": "seq2seq"}, "tied"
    if has("mlm"):
        return {"kind": "mlm"}, "bert"
    # A bare encoder (BertModel): the tied embedding alone is its LM head, enough to fine-tune.
    return {"kind": "mlm", "no_lm_head": True}, "tied"


def _fill_aliases(weights: dict, arch: Arch, prefix: str) -> None:
    """Store each aliased tensor under its main name when a save kept only one of its tied copies."""
    for name, others in arch.aliases:
        name = name.format(p=prefix)
        found = [o for o in (o.format(p=prefix) for o in others) if o in weights]
        if name not in weights and found:
            weights[name] = weights[found[0]]


def _check_logits_bias(weights: dict, src: Path) -> None:
    """BART's final_logits_bias: a buffer, zeros unless the vocabulary was resized; we have no such bias."""
    bias = weights.get("final_logits_bias")
    if bias is not None and bool(bias.any()):
        raise UserError(f"'{src}': final_logits_bias is not zero, and transferlab's tied LM head has no output bias, "
                        f"so its logits would differ. This happens after resize_token_embeddings; such checkpoints "
                        f"are not converted.")


def from_hf(src: str | Path, out: str | Path, overwrite: bool = False, verbose: bool = True) -> Path:
    """Convert a Hugging Face checkpoint directory into a transferlab checkpoint directory.

    Args:
        src: a directory written by ``save_pretrained`` (config.json, weights, tokenizer files).
        out: the transferlab checkpoint directory to write (fine-tune it with ``from_pretrained(out, ...)``).
        overwrite: replace ``out`` if it exists.
        verbose: print which tensors were converted and which were dropped.
    Returns:
        ``out``.
    """
    from ..tasks.factory import build_task
    from ..training.checkpoint import save_checkpoint

    src, out = Path(src), Path(out)
    check_output_dir(out, overwrite, "conversion output")
    if not (src / "config.json").is_file():
        raise UserError(f"'{src}' is not a Hugging Face model directory: it has no config.json.")
    hf_config = read_json(src / "config.json")
    arch = _arch(hf_config.get("model_type"), str(src / "config.json"))
    tokenizer = _read_hf_tokenizer(src, arch)
    weights = _read_hf_weights(src)
    cfg = _model_config(hf_config, arch, tokenizer, src)
    prefix = arch.prefix if any(k.startswith(arch.prefix) for k in weights) else ""
    _fill_aliases(weights, arch, prefix)
    _check_logits_bias(weights, src)
    task, lm_head = _hf_task(hf_config, arch, weights, prefix, cfg)
    cfg.lm_head = lm_head
    no_lm_head = task.pop("no_lm_head", False)

    renames = [("backbone." + o, t, op) for o, t, op in _expand(arch.backbone, cfg, prefix)]
    if not no_lm_head:
        renames += list(_expand(arch.heads[task["kind"]], cfg, prefix))
    state, used = {}, set()
    offset = arch.position_offset(tokenizer.pad_id)
    for ours, theirs, op in renames:
        names = theirs if isinstance(theirs, tuple) else (theirs,)
        missing = [n for n in names if n not in weights]
        if missing:
            raise UserError(f"'{src}' lacks {missing[0]} (needed for {ours}); the checkpoint is incomplete or not a "
                            f"standard {arch.model_type} layout.")
        used.update(names)
        t = torch.cat([weights[n] for n in names], 0) if len(names) > 1 else weights[names[0]]
        t = t.t() if op == "T" else t[offset:] if op == "pos" else t
        state[ours] = t.float().contiguous()
    ignored = [re.compile(p) for p in arch.ignore]
    dropped = sorted(k for k in weights if k not in used and not any(p.fullmatch(k) for p in ignored))

    module = build_task(build_backbone(cfg), task)
    check_weights(module.state_dict(), state, src)
    module.load_state_dict(state)
    source = {"format": "huggingface", "model_type": arch.model_type, "source": str(src),
              "architectures": hf_config.get("architectures")}
    save_checkpoint(out, module, tokenizer, extra={"converted_from": source})
    if verbose:
        print(f"converted {len(state)} tensors from {src} ({arch.model_type}) to {out} (task {task['kind']})",
              file=sys.stderr)
        print(f"  dropped (no transferlab counterpart): {', '.join(dropped) or 'none'}", file=sys.stderr)
        if no_lm_head:
            print("  no LM head in the source: the MLM head is the tied embedding alone (fine for fine-tuning, "
                  "not for filling masks)", file=sys.stderr)
    return out


# ------------------------------------------------------------------------------------------------- writing HF
def _target_arch(config: dict, src: Path) -> Arch:
    """The architecture a checkpoint exports as, once every field that architecture fixes has its value there."""
    cfg = ModelConfig.from_dict(config["backbone"])
    source = (config.get("converted_from") or {}).get("model_type")
    families = {"decoder": "gpt2", "encoder_decoder": "bart", "encoder": "roberta" if source == "roberta" else "bert"}
    if cfg.family not in families:
        raise UserError(f"'{src}' holds a '{cfg.family}' backbone; Hugging Face export covers encoders (BERT, "
                        f"RoBERTa), decoders (GPT-2) and encoder-decoders (BART).")
    arch = ARCHS[families[cfg.family]]
    for field, value in arch.fixed.items():
        if getattr(cfg, field) != value:
            raise UserError(_unexportable(src, arch, cfg, field, value))
    return arch


def _unexportable(src: Path, arch: Arch, cfg: ModelConfig, field: str, value) -> str:
    """Why a checkpoint whose ``field`` is not the ``value`` Hugging Face ``arch`` fixes cannot be written as one."""
    hf = f"Hugging Face {arch.model_type}"
    if field == "norm":
        return (f"'{src}' is a pre-norm {cfg.family.replace('_', '-')}; {hf} is post-norm, so it cannot be written "
                f"as one. Pretrain with --norm post (every converted checkpoint already is post-norm), or export a "
                f"decoder (GPT-2).")
    if field == "position":
        return (f"'{src}' uses rotary positions; {hf} has a learned position table, so it cannot be written as "
                f"one. Pretrain with --position learned to export.")
    if field == "lm_head":
        return (f"'{src}' has the '{cfg.lm_head}' LM head; {hf}'s is the tied embedding alone, so its logits would "
                f"differ. Pretrain with --lm-head {value} to export.")
    return (f"'{src}' has LayerNorm eps {cfg.norm_eps:g}; {hf}'s is fixed at {value:g} (its config has no such "
            f"key), so its logits would differ. Checkpoints pretrained here since eps {value:g} became the "
            f"{cfg.family} default export.")


def _hf_config_out(cfg: ModelConfig, arch: Arch, kind: str, task: dict, tokenizer: Tokenizer) -> dict:
    ours = cfg.to_dict()
    out = {theirs: ours[o] for theirs, o in arch.config}
    act_key = next(theirs for theirs, o in arch.config if o == "activation")
    out[act_key] = ACTIVATIONS_OUT[cfg.activation]
    pad = tokenizer.pad_id
    out.update({"model_type": arch.model_type, "architectures": [arch.classes[kind]], "pad_token_id": pad,
                "tie_word_embeddings": True})
    if arch.max_len_counts_offset:
        max_key = next(theirs for theirs, o in arch.config if o == "max_len")
        out[max_key] = cfg.max_len + arch.position_offset(pad)
    if arch.family == "encoder":
        out.update(attention_probs_dropout_prob=cfg.dropout, position_embedding_type="absolute", is_decoder=False)
    elif arch.family == "encoder_decoder":
        out.update(decoder_attention_heads=cfg.n_head, decoder_ffn_dim=cfg.d_ff, attention_dropout=cfg.dropout,
                   activation_dropout=0.0, classifier_dropout=cfg.dropout, encoder_layerdrop=0.0,
                   decoder_layerdrop=0.0, scale_embedding=False, is_encoder_decoder=True,
                   decoder_start_token_id=cfg.decoder_start(tokenizer.bos_id), bos_token_id=tokenizer.bos_id,
                   eos_token_id=tokenizer.eos_id, forced_eos_token_id=tokenizer.eos_id)
    else:
        out.update(embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=tokenizer.bos_id,
                   eos_token_id=tokenizer.eos_id)
    if kind in ("classification", "regression"):
        names = task.get("label_names") or [f"LABEL_{i}" for i in range(task["num_labels"])]
        out.update(id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
                   problem_type="regression" if kind == "regression" else "single_label_classification")
    return out


def _hf_tokenizer_config(tokenizer: Tokenizer, max_len: int, arch: Arch) -> dict:
    roles = tokenizer.special_tokens if tokenizer.special_tokens is not None else DEFAULT_ROLES
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if arch.model_type == "bert" else \
        ["input_ids", "attention_mask"]
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len, "model_input_names": inputs,
            **{f"{role}_token": token for role, token in roles.items()}}


def _hf_tokenizer_json(tokenizer: Tokenizer, arch: Arch) -> str:
    """The tokenizer as transformers users expect it: when asked to add special tokens, an encoder's frames text as
    [CLS] a [SEP] (b [SEP]), an encoder-decoder's as a [EOS] (a [SEP] b [EOS]): the framing our fine-tuning uses.
    Our own tokenizers have no such template (we add special tokens in collate code), so one is added; a converted
    one keeps its own."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    hf = HFTokenizer.from_str(tokenizer.hf.to_str())
    if arch.family == "encoder" and hf.post_processor is None:
        cls, sep = tokenizer.id_to_token(tokenizer.cls_id), tokenizer.id_to_token(tokenizer.sep_id)
        hf.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tokenizer.cls_id), (sep, tokenizer.sep_id)])
    if arch.family == "encoder_decoder" and hf.post_processor is None:
        sep, eos = tokenizer.id_to_token(tokenizer.sep_id), tokenizer.id_to_token(tokenizer.eos_id)
        hf.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {sep} $B {eos}",
            special_tokens=sorted({(sep, tokenizer.sep_id), (eos, tokenizer.eos_id)}))
    return hf.to_str(pretty=True)


_POOLED_TOKEN = {"cls": "the first token ([CLS])", "last": "the decoder's state at the last token ([EOS])"}


def _check_exportable_classifier(src: Path, arch: Arch, kind: str, pooling: str, cfg: ModelConfig) -> None:
    """A Hugging Face classifier reads one token: ours must pool that token, with the same decoder input."""
    if pooling != arch.pooling:
        raise UserError(f"'{src}' is a classifier that pools the '{pooling}' of its tokens; Hugging Face "
                        f"{arch.classes[kind]} reads {_POOLED_TOKEN[arch.pooling]} only, so its logits would "
                        f"differ. Fine-tune with pooling='{arch.pooling}' (`finetune --pooling {arch.pooling}`) "
                        f"to export.")
    if cfg.family == "encoder_decoder" and cfg.decoder_start_id is None:
        raise UserError(f"'{src}' is an encoder-decoder classifier whose decoder reads the input unshifted (our "
                        f"bart/mass pretraining); Hugging Face {arch.classes[kind]} shifts it right behind "
                        f"decoder_start_token_id, so its logits would differ. Classifiers fine-tuned from a "
                        f"converted BART (`convert --from-hf`) export.")


def to_hf(src: str | Path, out: str | Path, overwrite: bool = False, verbose: bool = True) -> Path:
    """Write a transferlab checkpoint as a Hugging Face model directory (``from_pretrained``-loadable).

    Encoders (post-norm) become BERT, or RoBERTa when they were converted from one; masked-LM checkpoints need
    BERT's LM head (``lm_head="bert"``); fine-tuned classifiers become ``*ForSequenceClassification``. Decoders
    with the causal-LM head become GPT-2. Encoder-decoders (post-norm, learned positions) become BART:
    bart/mass/seq2seq checkpoints ``BartForConditionalGeneration``, classifiers fine-tuned from a converted BART
    ``BartForSequenceClassification``.

    Args:
        src: a transferlab checkpoint directory.
        out: the Hugging Face directory to write.
        overwrite: replace ``out`` if it exists.
        verbose: print what was written.
    Returns:
        ``out``.
    """
    from safetensors.torch import save_file

    from ..tasks.factory import load_model

    src, out = Path(src), Path(out)
    check_output_dir(out, overwrite, "conversion output")
    module, tokenizer, config = load_model(src)
    arch = _target_arch(config, src)
    cfg, task = module.config, config["task"]
    kind = task["kind"]
    if kind not in arch.classes:
        raise UserError(f"'{src}' is a '{kind}' {cfg.family} checkpoint; Hugging Face {arch.model_type} has no "
                        f"matching class here (supported: {', '.join(arch.classes)}).")
    pooling = task.get("pooling")
    if kind in ("classification", "regression"):
        _check_exportable_classifier(src, arch, kind, pooling, cfg)
    if kind == "mlm" and cfg.lm_head != "bert":
        raise UserError(f"'{src}' has the tied-only LM head; Hugging Face {arch.model_type} always has BERT's "
                        f"transform and bias. Pretrain with --lm-head bert to export a masked-LM checkpoint.")
    ours = module.state_dict()
    renames = [("backbone." + o, t, op) for o, t, op in _expand(arch.backbone, cfg, arch.prefix)]
    renames += list(_expand(arch.heads[kind], cfg, arch.prefix))
    offset = arch.position_offset(tokenizer.pad_id)
    state = {}
    for name, theirs, op in renames:
        t = ours[name]
        t = t.t() if op == "T" else torch.cat([t.new_zeros(offset, t.shape[1]), t]) if op == "pos" else t
        parts = t.chunk(len(theirs)) if isinstance(theirs, tuple) else (t,)
        for n, part in zip(theirs if isinstance(theirs, tuple) else (theirs,), parts):
            state[n] = part.clone().contiguous()
    if arch.classes[kind] == _BART_GENERATION:
        state["final_logits_bias"] = torch.zeros(1, cfg.vocab_size)
    with atomic_dir(out) as tmp:
        write_json(tmp / "config.json", _hf_config_out(cfg, arch, kind, task, tokenizer))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "tokenizer.json").write_text(_hf_tokenizer_json(tokenizer, arch), encoding="utf-8")
        write_json(tmp / "tokenizer_config.json", _hf_tokenizer_config(tokenizer, cfg.max_len, arch))
    if verbose:
        print(f"wrote {arch.classes[kind]} ({len(state)} tensors) to {out}", file=sys.stderr)
    return out
