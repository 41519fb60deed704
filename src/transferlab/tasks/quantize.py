"""Dynamic int8 quantization of a fine-tuned classifier for CPU inference, and the checkpoint that holds it.

``quantize_int8`` replaces every ``nn.Linear`` with PyTorch's dynamically quantized one
(``torch.ao.quantization.quantize_dynamic``): weights stored as int8 with one scale per matrix, activations
quantized on the fly per batch, int8 x int8 matmuls with int32 accumulation. Embeddings, LayerNorms and attention's
softmax stay fp32. The quantized model runs in fp32 around the int8 matmuls: bf16 autocast would hand the int8
kernels bf16 inputs they do not take.

A quantized checkpoint is a normal checkpoint directory whose ``config.json`` has a ``quantization`` entry and whose
``model.safetensors`` holds, for each quantized Linear ``NAME``, ``NAME.weight`` as int8 with
``NAME.weight_scale`` / ``NAME.weight_zero_point``, and ``NAME.bias`` in fp32; everything else as saved. No pickle:
the packed int8 weights are rebuilt from these tensors when the directory is loaded (``tasks.factory.load_model``).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..errors import UserError

SCHEME = "dynamic-int8"


def quantize_int8(module: nn.Module) -> nn.Module:
    """A dynamically int8-quantized copy of ``module`` (every ``nn.Linear``), in eval mode; ``module`` is kept.

    Encoder-decoder backbones are refused: their cross-attention reads the q/k/v weight as a matrix, which a
    quantized Linear does not expose.
    """
    family = getattr(getattr(module, "config", None), "family", None)
    if family == "encoder_decoder":
        raise UserError("int8 export quantizes the Linear layers of encoders and decoders; an encoder-decoder's "
                        "cross-attention reads its weights directly, so it is not supported. Export an encoder or "
                        "decoder classifier, or run this model in bf16 (the default precision).")
    with warnings.catch_warnings():  # torch.ao.quantization warns that it is deprecated; it is what 2.13 has
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(module).eval(), {nn.Linear},
                                                           dtype=torch.qint8)
    quantized.quantization = SCHEME  # TransferModel runs it in fp32 (see the module docstring)
    return quantized


def _quantized_linears(module: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {name: m for name, m in module.named_modules() if isinstance(m, DynamicLinear)}


def int8_state_dict(quantized: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of a ``quantize_int8`` module as safetensors can hold them (see the module docstring)."""
    linears = _quantized_linears(quantized)
    state = {}
    for name, linear in linears.items():
        weight, bias = linear._weight_bias()
        state[f"{name}.weight"] = weight.int_repr()
        state[f"{name}.weight_scale"] = torch.tensor(weight.q_scale(), dtype=torch.float64)
        state[f"{name}.weight_zero_point"] = torch.tensor(weight.q_zero_point(), dtype=torch.int64)
        if bias is not None:
            state[f"{name}.bias"] = bias.detach().clone()
    prefixes = tuple(f"{name}." for name in linears)
    for key, value in quantized.state_dict().items():
        if not key.startswith(prefixes) and torch.is_tensor(value):
            state[key] = value
    return state


def load_int8_state_dict(quantized: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put tensors written by ``int8_state_dict`` into a freshly quantized module of the same architecture (the
    caller has checked the keys and shapes against ``int8_state_dict(quantized)``)."""
    linears = _quantized_linears(quantized)
    for name, linear in linears.items():
        # the stored int8 values as they are (torch.quantize_per_tensor would round fp32 values again)
        weight = torch._make_per_tensor_quantized_tensor(state[f"{name}.weight"],
                                                         float(state[f"{name}.weight_scale"]),
                                                         int(state[f"{name}.weight_zero_point"]))
        linear.set_weight_bias(weight, state.get(f"{name}.bias"))
    # The rest one by one: load_state_dict would ask each quantized Linear for keys of torch's own (pickled) layout.
    prefixes = tuple(f"{name}." for name in linears)
    own = {**dict(quantized.named_parameters()), **dict(quantized.named_buffers())}
    with torch.no_grad():
        for key, value in state.items():
            if not key.startswith(prefixes):
                own[key].copy_(value)
