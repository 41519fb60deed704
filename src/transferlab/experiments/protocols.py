"""`transferlab protocols`: the standard evaluation protocols of a pretrained backbone on any labeled set of its
modality — kNN and logistic regression on the frozen features, a trained linear layer on the frozen backbone
(linear probe), and full fine-tuning — in one call, selected on dev and reported on test.

It is a one-checkpoint comparison grid (``compare``) built from the command line: the same runs, the same
select-on-dev / report-on-test rule, the same results.jsonl (so an interrupted call resumes) and the same report.
Training settings are the grid's image or text defaults unless given.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .compare import FROZEN, METHODS, run_compare

PROTOCOLS = ("knn", "logistic-probe", "linear-probe", "finetune")


def protocols_spec(checkpoint: str | Path, train: str, dev: str | None = None, test: str | None = None,
                   protocols=PROTOCOLS, budgets=("all",), seeds: int = 1, train_settings: dict | None = None,
                   image_size=None, name: str | None = None) -> dict:
    """The comparison spec (as ``compare`` reads it) that runs ``protocols`` for one checkpoint.

    Args:
        checkpoint: a checkpoint directory (RUN/final).
        train, dev, test: labeled data; an ``.npz`` or directory holding several splits may be given once as
            ``train`` (dev and test then default to it, each key reading its own split).
        protocols: names from ``PROTOCOLS`` (and ``scratch``, the same architecture trained from random weights).
        budgets: label budgets (numbers of training examples, or "all").
        seeds: how many seeds (labeled subsets and head initialisations).
        train_settings: training settings shared by the trained protocols (epochs, lr, batch_size, augment, ...).
    """
    unknown = [p for p in protocols if p not in METHODS or p == "pipeline"]
    if unknown:
        raise UserError(f"--protocols: unknown protocol(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(PROTOCOLS)} (and scratch, the architecture trained from random weights).")
    if not protocols:
        raise UserError(f"--protocols is empty; name at least one of {', '.join(PROTOCOLS)}.")
    directory = Path(checkpoint)
    test = test or (train if dev is None else None)
    task = {"train": str(train), "dev": str(dev or train), **({"test": str(test)} if test else {})}
    if image_size is not None:
        task["image_size"] = list(image_size)
    spec = {"name": name or (directory.parent.name if directory.name == "final" else directory.name),
            "checkpoints": [str(directory)], "task": task, "methods": list(protocols),
            "budgets": [b if b == "all" else int(b) for b in budgets], "seeds": seeds}
    trained = [p for p in protocols if p not in FROZEN]
    if train_settings and trained:
        spec["train"] = dict(train_settings)
    return spec


def run_protocols(checkpoint, train, dev=None, test=None, protocols=PROTOCOLS, budgets=("all",), seeds: int = 1,
                  out: str | Path | None = None, train_settings: dict | None = None, image_size=None,
                  progress: bool = True) -> dict:
    """Run ``protocols`` for ``checkpoint`` on a labeled set and write the results and report to ``out``
    (default runs/protocols/NAME). Returns ``run_compare``'s result (rows, summary, conclusion, files)."""
    spec = protocols_spec(checkpoint, train, dev, test, protocols, budgets, seeds, train_settings, image_size)
    out = Path(out) if out is not None else Path("runs") / "protocols" / spec["name"]
    return run_compare(spec, out, progress=progress)
