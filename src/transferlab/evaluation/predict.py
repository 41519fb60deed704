"""Evaluation passes: held-out language-model loss / perplexity, and classifier predictions + metrics."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.batches import EncodedExamples, in_order
from ..training.precision import autocast, inference_weights, resolve_precision
from .metrics import compute_metrics


@torch.no_grad()
def evaluate_lm(module, source, n_batches: int) -> dict:
    """Mean loss, and every other scalar the module reports (ELECTRA's generator loss and discriminator accuracy,
    ...), over the first ``n_batches`` of a fixed held-out source, weighted by predictions; ``ppl`` is exp() of the
    module's token cross-entropy (``perplexity_of``), left out when it has none."""
    totals: dict[str, float] = {}
    count = 0
    for i in range(n_batches):
        out = module(source.batch(i))
        n = int(out["n_predictions"])
        for key, value in out.items():
            if key != "n_predictions" and torch.is_tensor(value) and value.dim() == 0:
                totals[key] = totals.get(key, 0.0) + float(value) * n
        count += n
    metrics = {key: total / max(count, 1) for key, total in totals.items()}
    ppl_of = getattr(module, "perplexity_of", "loss")
    if ppl_of in metrics:
        metrics["ppl"] = math.exp(min(metrics[ppl_of], 50.0))
    return metrics


# Below this batch size "auto" predicts in fp32: autocast casts every weight to bf16 on every call, which one image
# does not pay back. One thread on the Zen 4 CPU, bf16 against fp32 (a throwaway A/B, docs/performance.md): batch 1
# 0.65-0.9x for resnet-mini/resnet-small/vit-mini, batch 4 1.2-1.4x, batch 128 1.5-2.1x.
AUTO_BF16_MIN_BATCH = 4


@torch.no_grad()
def predict_logits(module, examples: EncodedExamples, batch_size: int = 64, precision: str = "auto") -> torch.Tensor:
    """Logits of every example, in order, as fp32 (N, num_labels).

    Args:
        precision: "auto" (bf16 autocast where the hardware has it, as training and its evaluations run, for
            batches of AUTO_BF16_MIN_BATCH or more; fp32 below), "bf16" or "fp32". bf16 logits match fp32's to bf16
            rounding.
    Returns:
        a CPU tensor (N, num_labels).
    """
    device = next(module.parameters()).device
    if precision == "auto" and batch_size < AUTO_BF16_MIN_BATCH:
        precision = "fp32"
    precision = resolve_precision(precision, device)
    outs = []
    with inference_weights(module, precision):
        for batch in in_order(examples, batch_size):
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            with autocast(precision, device):
                outs.append(module(batch)["logits"].float().cpu())
    return torch.cat(outs)


@torch.no_grad()
def evaluate_classifier(module, examples: EncodedExamples, metrics: list[str], batch_size: int = 64,
                        loss_fn=None, precision: str = "auto") -> dict:
    """Loss (the module's own, or ``loss_fn(logits, labels)``) and the named metrics on labeled examples, with the
    logits computed in ``precision`` (``predict_logits``)."""
    logits = predict_logits(module, examples, batch_size, precision)
    labels = torch.from_numpy(np.asarray(examples.labels))
    if loss_fn is not None:
        loss = loss_fn(logits, labels)
    elif module.problem == "regression":
        loss = torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float())
    else:
        loss = torch.nn.functional.cross_entropy(logits, labels.long())
    preds = module.predictions(logits).numpy()
    scores = None if module.problem == "regression" else torch.softmax(logits, -1).numpy()  # for roc_auc
    return {"loss": float(loss), **compute_metrics(metrics, preds, labels.numpy(), scores)}
