"""Export a fine-tuned classifier for CPU inference: the directory behind `transferlab export --int8`.

The export is a checkpoint directory like any other (``transfer.load`` opens it; evaluate and predict read it),
with its Linear layers dynamically quantized to int8 (``tasks.quantize``). It is made from the fine-tuned model as
saved, so the accuracy change is the quantization's alone; ``benchmarks/int8.py`` measures it with the latency.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fsutil import check_output_dir
from ..tasks.factory import load_model
from ..tasks.quantize import SCHEME, int8_state_dict, quantize_int8
from ..training.checkpoint import save_checkpoint


def export_int8(directory: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write a dynamically int8-quantized copy of the fine-tuned classifier in ``directory`` to ``out``.

    Returns:
        ``out``, a checkpoint directory (config.json records the scheme and the source).
    """
    module, inputs, config = load_model(directory)
    if not hasattr(module, "problem"):
        raise UserError(f"'{directory}' holds a '{config['task']['kind']}' checkpoint; --int8 exports a fine-tuned "
                        f"classifier or regressor (`transferlab finetune` writes one to RUN/final).")
    if "quantization" in config:
        raise UserError(f"'{directory}' is already an int8 export; export the fine-tuned model it came from "
                        f"({config['quantization'].get('source', 'its source')}).")
    quantized = quantize_int8(module)
    check_output_dir(out, overwrite, "export output")
    extra = {k: config[k] for k in ("label_names", "max_len") if k in config}
    extra["quantization"] = {"scheme": SCHEME, "modules": "torch.nn.Linear", "source": str(directory)}
    return save_checkpoint(out, quantized, inputs, weights=int8_state_dict(quantized), extra=extra)
