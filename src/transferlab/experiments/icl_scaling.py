"""In-context learning against model size (the shape of GPT-3's figure 1.3): pretrain a family of causal LMs of
increasing size on the same corpus (or take existing checkpoints), evaluate each zero-, one- and few-shot on the
same tasks, and plot accuracy against parameter count.

Without a corpus, the family is pretrained on synthetic pattern episodes (``evaluation.icl.write_pattern_corpus``,
a different seed from the evaluated ones): the one setting in which models this small reliably show in-context
learning. On natural text at CPU scale, expect flat curves near chance on the harder tasks, and report them so.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserError
from ..evaluation.generate import load_causal_lm, trained_window
from ..evaluation.icl import evaluate_icl, load_task, parse_shots, write_pattern_corpus
from ..fsutil import clear_output_dir, write_json
from .executors import ExecutorConfig
from .grid import run_grid
from .plots import _colours, _figure, _save


@dataclass
class ScalingConfig:
    """Args:
        out: run directory (models/, results.json, table.md, scaling.png).
        sizes: presets to pretrain, smallest first (ignored with ``checkpoints``).
        checkpoints: existing causal-LM checkpoint directories to evaluate instead of pretraining.
        corpus: a prepared corpus (``transferlab corpus prepare``); None builds the synthetic pattern corpus.
        tasks, shots, limit, data_root, overflow: as for ``transferlab icl``.
        steps, seq_len, batch_size, lr, seed, precision: pretraining settings, the same for every size.
    """

    out: str
    sizes: list[str] = field(default_factory=lambda: ["tiny", "mini", "small"])
    checkpoints: list[str] | None = None
    corpus: str | None = None
    tasks: list[str] = field(default_factory=lambda: ["pattern"])
    shots: list[int] = field(default_factory=lambda: [0, 1, 5])
    limit: int | None = 200
    data_root: str = "../shared/data"
    overflow: str = "error"
    steps: int = 300
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0
    precision: str = "auto"
    pattern_episodes: int = 2000
    progress: bool = True


def _synthetic_corpus(out: Path, cfg: ScalingConfig) -> str:
    from ..data.corpus import prepare_corpus
    from ..inputs.text import Tokenizer

    text = write_pattern_corpus(out / "pattern_corpus.txt", cfg.pattern_episodes, 8, seed=cfg.seed + 1)
    tokenizer = Tokenizer.train([text], kind="wordpiece", vocab_size=100, progress=False)
    return str(prepare_corpus([text], tokenizer, out / "corpus", heldout_fraction=0.02, progress=False))


@dataclass
class FamilyRun:
    """One model of the family: a preset to pretrain (``size``) or an existing ``checkpoint``, then evaluated."""

    name: str
    size: str | None
    checkpoint: str | None
    fingerprint: str
    weight: float = 1.0

    @property
    def key(self) -> tuple:
        return (self.name,)

    @property
    def label(self) -> str:
        return f"{self.name} ({'pretrain + evaluate' if self.size else 'evaluate'})"

    def cost(self) -> float:
        return self.weight


class FamilyWork:
    """Pretrains (or takes) one model and evaluates it: ``run_one`` of the family grid, picklable for worker
    processes. The tasks travel with it (a few hundred documents); paths are resolved against the directory the
    command was started in, and ``checkpoint`` in a row stays as that directory names it."""

    def __init__(self, cfg: ScalingConfig, corpus: str | None, tasks: list, shots: list[int]):
        self.cfg, self.corpus, self.tasks, self.shots = cfg, corpus, tasks, shots
        self.cwd = os.getcwd()

    def __call__(self, run: FamilyRun) -> dict:
        from ..recipes.pretrain import PretrainConfig, pretrain

        cfg = self.cfg
        checkpoint = run.checkpoint
        if run.size is not None:
            checkpoint = str(Path(cfg.out) / "models" / run.size / "final")
            pretrain(PretrainConfig(
                corpus=os.path.join(self.cwd, self.corpus), out=os.path.join(self.cwd, cfg.out, "models", run.size),
                objective="clm", model=run.size, steps=cfg.steps, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                lr=cfg.lr, seed=cfg.seed, precision=cfg.precision, progress=False, eval_batches=2,
                optimizer="adamw", schedule="linear"))  # the recipe its recorded results used
        where = os.path.join(self.cwd, checkpoint)
        module, tokenizer = load_causal_lm(where)
        params = sum(p.numel() for p in module.backbone.parameters())
        results, _ = evaluate_icl(module, tokenizer, self.tasks, self.shots, cfg.overflow, progress=False,
                                  window=trained_window(where))
        return {"name": run.name, "checkpoint": checkpoint, "params": params, "results": results,
                "fingerprint": run.fingerprint}


def _family(cfg: ScalingConfig) -> list[FamilyRun]:
    """The models to pretrain or take, biggest first: they take longest, so a pool starts them first."""
    from ..models.config import PRESETS

    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "progress", "sizes", "checkpoints")}
    runs = []
    for ckpt in cfg.checkpoints or []:
        name = Path(ckpt).parent.name if Path(ckpt).name == "final" else Path(ckpt).name
        runs.append(FamilyRun(name, None, str(ckpt), _fingerprint([settings, os.path.abspath(ckpt)])))
    for size in [] if cfg.checkpoints else cfg.sizes:
        if size not in PRESETS:
            raise UserError(f"--sizes: unknown preset '{size}'; choose from {', '.join(PRESETS)}.")
        # Pretraining dominates: cost ~ parameters per token (12 L d^2) for the ETA and the order.
        weight = 12 * PRESETS[size]["n_layer"] * PRESETS[size]["d_model"] ** 2
        runs.append(FamilyRun(size, size, None, _fingerprint([settings, size]), weight))
    names = [r.name for r in runs]
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"two models of the family are called '{name}'; name the checkpoint directories "
                            f"apart (or list each preset once).")
    return sorted(runs, key=lambda r: -r.weight)


def _fingerprint(parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_icl_scaling(cfg: ScalingConfig, overwrite: bool = False, executor: ExecutorConfig | None = None) -> dict:
    """Pretrain (or take) the family, evaluate every model at every shot count, write table + plot.

    Args:
        cfg: the family, tasks and pretraining settings.
        overwrite: replace an existing ``cfg.out``.
        executor: where the models are pretrained and evaluated (each independently: worker processes, Ray);
            None: one after another in this process.
    Returns:
        {"models": [{"name", "checkpoint", "params", "results": {task: {shots: metrics}}}], ...}
    """
    shots = parse_shots(cfg.shots)
    if not cfg.checkpoints and not cfg.sizes:
        raise UserError("icl-scaling needs --sizes (presets to pretrain) or --checkpoints (existing models).")
    family = _family(cfg)
    out = clear_output_dir(cfg.out, overwrite, "icl-scaling")
    out.mkdir(parents=True, exist_ok=True)
    # load the tasks first: a bad task file should fail before minutes of pretraining
    tasks = [load_task(t, cfg.data_root, cfg.limit) for t in cfg.tasks]
    corpus = None if cfg.checkpoints else (cfg.corpus or _synthetic_corpus(out, cfg))
    paths = [os.path.abspath(p) for p in [*(cfg.checkpoints or []), *([corpus] if corpus else []), out]]

    def describe(run: FamilyRun, row: dict) -> str:
        return f"{row['name']}: {row['params'] / 1e6:.2f}M parameters"

    grid = run_grid(family, FamilyWork(cfg, corpus, tasks, shots), out / "family.jsonl", row_key=lambda r: (r["name"],),
                    progress=cfg.progress, describe=describe, executor=executor, paths=paths)
    if grid["failed"]:
        listed = "; ".join(f"{f['label']} (log: {f['log']})" for f in grid["failed"])
        raise UserError(f"{len(grid['failed'])} of {len(family)} models failed: {listed}. No table or plot was "
                        f"written. Read the logs; then run again with --overwrite.")
    models = [{k: v for k, v in row.items() if k not in ("fingerprint", "threads")} for row in grid["rows"]]
    models.sort(key=lambda m: m["params"])
    summary = {"config": asdict(cfg), "models": models}
    write_json(out / "results.json", summary)
    table = format_scaling_table(models)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    plot_scaling(models, [t.name for t in tasks], shots, out / "scaling.png")
    print(table)
    return summary


def _score(metrics: dict) -> tuple[str, float]:
    return ("acc", metrics["acc"]) if "acc" in metrics else ("exact_match", metrics["exact_match"])


def format_scaling_table(models: list[dict]) -> str:
    lines = ["| model | parameters | task | shots | metric | score | chance |", "|---|---:|---|---:|---|---:|---:|"]
    for m in models:
        for task, by_shots in m["results"].items():
            for k, metrics in by_shots.items():
                metric, score = _score(metrics)
                lines.append(f"| {m['name']} | {m['params']:,} | {task} | {k} | {metric} | {score:.3f} | "
                             f"{metrics['chance']:.3f} |")
    return "\n".join(lines)


def plot_scaling(models: list[dict], tasks: list[str], shots: list[int], out_png) -> Path:
    """One panel per task: score against parameter count (log scale), one line per shot count."""
    fig = _figure((4.6 * len(tasks), 3.8))
    colours = _colours(len(shots))
    params = [m["params"] for m in models]
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        for colour, k in zip(colours, shots):
            scores = [_score(m["results"][task][str(k)])[1] for m in models]
            ax.plot(params, scores, marker="o", color=colour, label=f"{k}-shot")
        chance = models[0]["results"][task][str(shots[0])]["chance"]
        if chance > 0:
            ax.axhline(chance, color="0.4", linestyle=":", linewidth=1.2, label="chance")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(task)
        ax.set_xlabel("parameters (backbone)")
        ax.set_ylabel(_score(models[0]["results"][task][str(shots[0])])[0])
        ax.grid(True, alpha=0.35)
        ax.legend(loc="best", frameon=True, framealpha=0.9)
    fig.tight_layout()
    return _save(fig, out_png)
