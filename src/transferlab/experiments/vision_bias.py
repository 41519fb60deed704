"""The vision bias probe: does a source skewed towards one sub-group transfer worse to the other?

ImageNet's photos come mostly from a few regions, and models transferred from it do better on images from there.
This is the controlled version of that claim, on digits whose only difference between sub-groups is the stroke
style (``data/styles.py``):

1. Two sources from the same labeled training images (the same digits, the same size): **skewed** draws each image
   in style A with probability ``skew`` (0.95) and in style B otherwise; **balanced** draws 50/50. One uniform draw
   per image decides both (``assign_styles``), so the two sources differ only in the images that change style.
2. Supervised pretraining on each source through the library's ``pretrain`` recipe (``objective="supervised"``),
   with the same preset, steps, learning rate, augmentation and seed: one run per source per seed. A run costs
   about a minute on one core with the defaults, so the seed spread can include the pretraining itself instead of
   only the transfer step.
3. A balanced target task the source did not train: digit parity (or "digit < 5") on the **test** images (disjoint
   from the source), each in style A or B with probability 1/2. ``target_labels`` of them, stratified over
   style x class, train a fresh head (``from_pretrained``, head swap) by a linear probe (frozen features: what the
   representation encodes) and by full fine-tuning; the rest are the evaluation set.
4. Accuracy per sub-group (style A, style B) and the gap A - B, for the skewed- and the balanced-source models,
   mean ± std over seeds, with the paired difference (same seed, same target split). The source classifier's own
   10-class accuracy on the evaluation images, per style, is reported too: the bias before any transfer.

Outputs in ``out``: ``vision_bias.json`` (every number), ``vision_bias.md`` (tables, conclusion, settings, the
command), ``vision_bias.png`` (per-group accuracy with error bars, and style examples), each written atomically;
``runs/seed-S/SOURCE/`` holds the pretraining runs. Running again into the same ``out`` with the same settings skips
every finished pretraining run (a complete ``final/``) and transfer (its ``probe.json``); more ``seeds`` adds seeds.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fsutil import read_json, remove_tree, write_json, write_text
from ..options import Settings, flag_of, option
from ..training.settings import PRECISIONS

SOURCES = ("skewed", "balanced")
METHODS = ("linear-probe", "finetune")
SOURCE_DIGITS = "source-classifier"  # the pretrained classifier itself, on its own classes: no transfer
KINDS = (SOURCE_DIGITS, *METHODS)
KIND_NAMES = {SOURCE_DIGITS: "source classifier (its own classes, no transfer)", "linear-probe": "linear probe",
              "finetune": "full fine-tuning"}
# The target task: a binary label from the class id (for MNIST the id is the digit).
TARGETS = {"parity": ("even", "odd"), "low": ("low half", "high half")}
MIN_TRAIN_PER_CELL = 5  # target training images per (style, target class) cell
MIN_EVAL_PER_CELL = 10  # evaluation images left per cell
# Settings that may differ when a probe is run again into the same directory (they change nothing measured).
RESUMABLE = ("seeds", "progress", "out")


def _pair(text: str) -> tuple:
    """"thick,thin" -> ("thick", "thin") (tuple coercion would read an "x" in a name as H,W's separator)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


@dataclass(kw_only=True)
class VisionBiasConfig(Settings):
    """Settings of the probe; every field is a command-line option of ``probe vision-bias``, declared here once
    (``cli_args.add_settings``). Seeds run 0..seeds-1; each pretrains both sources and draws its own target split."""

    section = "the probe"
    data: str = option(help="a labeled image set with train (source) and test (target) splits, e.g. "
                            "../shared/data/mnist")
    out: str = option(help="writes vision_bias.json/.md/.png and runs/ here; running again with the same settings "
                           "resumes")
    skew: float = option(0.95, "share of style A in the skewed source, in [0.5, 1); the balanced source has 0.5")
    styles: tuple[str, str] = option(("thick", "thin"), "style A (the skewed majority),style B: thin, thick, "
                                                        "inverted, plain", parse=_pair, metavar="A,B")
    model: str = option("resnet-tiny", "image preset pretrained on each source")
    steps: int = option(500, "pretraining steps per source and seed", unit="steps", at_least=1)
    batch_size: int = option(128, "pretraining batch", unit="images", at_least=1)
    lr: float = option(2e-3, "pretraining learning rate", above=0)
    augment: str = option("light", "pretraining augmentation recipe (with KEY=VALUE overrides)")
    source_size: int | None = option(None, "source images, a seeded subset", unit="images",
                                     default_text="the whole train split")
    target: str = option("parity", "the target task: class id even/odd (parity), or lower/upper half of the "
                                    "classes (low: digit < 5)", choices=tuple(TARGETS))
    target_labels: int = option(400, "labeled target images to train the new head (stratified over style x "
                                     "target class)", unit="images")
    transfer_steps: int = option(300, "optimizer steps of each transfer", unit="steps", at_least=1)
    transfer_batch_size: int = option(64, "batch of each transfer", unit="images", at_least=1)
    probe_lr: float = option(1e-2, "learning rate of the linear probe", above=0)
    finetune_lr: float = option(1e-3, "learning rate of full fine-tuning", above=0)
    seeds: int = option(3, "seeds 0..N-1, each pretraining both sources", at_least=1)
    precision: str = option("auto", "auto, bf16 or fp32", choices=PRECISIONS)
    progress: bool = option(True, "no progress bars", flag="--quiet", negate=True)

    def check(self):
        # Sentences that say what the value means (a share, a split over cells), beyond what a range can say.
        from ..data.styles import check_style

        if not 0.5 <= self.skew < 1:
            raise UserError(f"--skew {self.skew} is outside [0.5, 1): it is the share of style {self.styles[0]} in "
                            f"the skewed source (0.95: 95% {self.styles[0]}, 5% {self.styles[1]}); 0.5 is the "
                            f"balanced source itself and 1 leaves no minority images to learn from.")
        if len(self.styles) != 2 or self.styles[0] == self.styles[1]:
            raise UserError(f"--styles {','.join(self.styles)}: give two different styles, the majority first "
                            f"(e.g. thick,thin).")
        for s in self.styles:
            check_style(s)
        least = 4 * MIN_TRAIN_PER_CELL
        if self.target_labels < least:
            raise UserError(f"--target-labels {self.target_labels} is too few: the training labels are split over "
                            f"2 styles x 2 target classes and each needs {MIN_TRAIN_PER_CELL}, so give at least "
                            f"{least}.")
        if self.source_size is not None and self.source_size < 2:
            raise UserError(f"--source-size {self.source_size}: give at least 2 images, or leave it out for the "
                            f"whole train split.")

    def command(self) -> str:
        """The CLI command that runs exactly these settings."""
        parts = ["transferlab", "probe", "vision-bias"]
        for name, option in OPTION.items():
            value = getattr(self, name)
            if value is None:
                continue
            parts += [option, ",".join(value) if isinstance(value, tuple) else str(value)]
        return " ".join(shlex.quote(p) for p in parts)



# field -> its command-line option, for the messages and the command a run prints
OPTION = {f.name: flag_of(f) for f in fields(VisionBiasConfig) if f.name != "progress"}

# ------------------------------------------------------------------------------------------------- data

def _read_data(cfg: VisionBiasConfig):
    """The source (train split) and target (test, else val) image sets, with every refusal naming its option."""
    from ..data.images import has_split, read_images

    source = read_images(cfg.data, "train", require_labels=False)
    if source.labels is None:
        raise UserError(f"--data '{cfg.data}' has no labels: supervised pretraining needs the class of every source "
                        f"image. Pass a labeled set (an MNIST idx directory with its labels files, an .npz with "
                        f"train_labels, class folders).")
    split = next((s for s in ("test", "val") if has_split(cfg.data, s)), None)
    if split is None:
        raise UserError(f"--data '{cfg.data}' has no test (or val) split for the target task, which must use images "
                        f"the source did not train on. Give a set with a test split (MNIST's t10k files, an .npz "
                        f"with test_images / test_labels).")
    target = read_images(cfg.data, split, label_names=source.label_names)
    if source.num_labels < 2:
        raise UserError(f"--data '{cfg.data}' has {source.num_labels} class; the source task needs at least 2.")
    if cfg.source_size is not None and cfg.source_size > len(source):
        raise UserError(f"--source-size {cfg.source_size} is more than the {len(source)} training images of "
                        f"'{cfg.data}'; lower it or leave it out.")
    return source, target


def target_labels_of(class_ids: np.ndarray, num_classes: int, target: str) -> np.ndarray:
    """The binary target label of each class id: parity (id % 2) or "low" (0 below num_classes / 2, else 1)."""
    ids = np.asarray(class_ids, dtype=np.int64)
    if target == "parity":
        return ids % 2
    return (ids >= num_classes / 2).astype(np.int64)


def split_target(styles: np.ndarray, labels: np.ndarray, n_train: int, pair: tuple[str, str], seed) -> tuple:
    """Training and evaluation indices: ``n_train`` spread evenly over the style x label cells, the rest evaluates.

    Returns:
        (train indices, eval indices), each sorted.
    """
    rng = np.random.default_rng(seed)
    cells = [np.flatnonzero((styles == s) & (labels == y)) for s in pair for y in (0, 1)]
    quota = [n_train // 4 + (k < n_train % 4) for k in range(4)]
    short = [(pair[k // 2], k % 2, len(c), q) for k, (c, q) in enumerate(zip(cells, quota))
             if len(c) < q + MIN_EVAL_PER_CELL]
    if short:
        s, y, have, q = short[0]
        raise UserError(f"--target-labels {n_train} needs {q} training images of style {s} with target label {y}, "
                        f"plus {MIN_EVAL_PER_CELL} left to evaluate, but the target split has {have}. Lower "
                        f"--target-labels, or use a larger test split.")
    train = np.concatenate([rng.choice(c, q, replace=False) for c, q in zip(cells, quota)])
    return np.sort(train), np.setdiff1d(np.arange(len(styles)), train)


def _write_source(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The restyled source as an ``.npz`` the pretraining recipe reads (written under a temporary name)."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, train_images=images, train_labels=labels.astype(np.int64))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------- runs

def _per_group(correct: np.ndarray, styles: np.ndarray, pair: tuple[str, str]) -> dict:
    a, b = (float(correct[styles == s].mean()) for s in pair)
    return {"A": a, "B": b, "gap": a - b, "all": float(correct.mean())}


def _source_accuracy(final: Path, evaluation, styles: np.ndarray, pair) -> dict:
    """The pretrained classifier's own accuracy on the evaluation images, per style."""
    import torch

    from ..evaluation.predict import predict_logits
    from ..tasks.factory import load_model

    module, inputs, config = load_model(final)
    module.eval()
    with torch.no_grad():
        logits = predict_logits(module, inputs.examples(evaluation), batch_size=256)
    # The checkpoint names its classes by the source's class ids; a class the source lacked counts as wrong.
    index = {name: k for k, name in enumerate(config["task"]["label_names"])}
    truth = np.array([index.get(str(int(c)), -1) for c in evaluation.labels])
    return _per_group(logits.argmax(-1).numpy() == truth, styles, pair)


def _transfer(final: Path, method: str, train, evaluation, styles, names, cfg: VisionBiasConfig, seed: int) -> dict:
    """Head swap from ``final``, train by ``method``, and score the evaluation images per style."""
    from ..transfer import from_pretrained

    started = time.time()
    model = from_pretrained(final, num_labels=2, label_names=list(names), seed=seed, verbose=False)
    lr = cfg.probe_lr if method == "linear-probe" else cfg.finetune_lr
    model.compile(lr=lr, method=method, precision=cfg.precision, warmup=0.1)
    per_epoch = math.ceil(len(train) / cfg.transfer_batch_size)
    # Epochs a hair under steps / per_epoch, so that the loop's ceil(epochs x per_epoch) is exactly transfer_steps.
    model.fit(train, epochs=(cfg.transfer_steps - 0.5) / per_epoch, batch_size=cfg.transfer_batch_size, seed=seed,
              verbose=cfg.progress)
    correct = model.predict(evaluation, batch_size=256) == evaluation.labels
    return {**_per_group(correct, styles, cfg.styles), "seconds": round(time.time() - started, 1)}


def _check_out(cfg: VisionBiasConfig, overwrite: bool) -> Path:
    """Start, resume (same settings) or refuse; ``--overwrite`` starts again."""
    out = Path(cfg.out)
    settings = out / "settings.json"
    mine = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}
    mine["styles"] = list(cfg.styles)
    if out.exists() and any(out.iterdir()):
        if overwrite:
            remove_tree(out)
        elif not settings.is_file():
            raise UserError(f"--out '{out}' already exists and does not hold a vision bias probe. Choose another "
                            f"--out, or pass --overwrite to replace it.")
        else:
            saved = read_json(settings)
            diffs = [k for k in mine if saved.get(k) != mine[k]]
            if diffs:
                raise UserError(f"--out '{out}' holds a probe run with other settings "
                                f"({', '.join(f'{OPTION.get(k, k)} {saved.get(k)!r}' for k in diffs)}). Run with "
                                f"those settings to resume it, choose another --out, or pass --overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(settings, mine)
    return out


def _log(cfg: VisionBiasConfig, message: str) -> None:
    if cfg.progress:
        print(message, file=sys.stderr)


def run_vision_bias(cfg: VisionBiasConfig, overwrite: bool = False) -> dict:
    """Run the probe (see the module docstring) and write ``vision_bias.{json,md,png}`` into ``cfg.out``.

    Args:
        cfg: the settings.
        overwrite: replace an existing ``cfg.out`` instead of resuming it (same settings) or refusing.
    Returns:
        the result written to ``vision_bias.json``.
    """
    from ..data.augment import augment_config
    from ..data.styles import assign_styles, ink, restyle
    from ..models import image_preset
    from ..recipes.pretrain import PretrainConfig, pretrain
    from ..training.checkpoint import check_complete

    started = time.time()
    source_all, target_all = _read_data(cfg)
    # An unknown preset or a bad augmentation is refused now, not after the first run has trained.
    image_preset(cfg.model, in_channels=source_all.channels, image_size=source_all.size)
    augment_config(cfg.augment)
    a, b = cfg.styles
    names = TARGETS[cfg.target]
    target_y = target_labels_of(target_all.labels, source_all.num_labels, cfg.target)
    # Every seed's target split is drawn (and too many --target-labels refused) before anything is written.
    plans = []
    for seed in range(cfg.seeds):
        t_styles = assign_styles(len(target_all), 0.5, cfg.styles, [seed, 2])
        plans.append((t_styles, *split_target(t_styles, target_y, cfg.target_labels, cfg.styles, [seed, 3])))
    out = _check_out(cfg, overwrite)
    runs = []
    for seed, (t_styles, train_idx, eval_idx) in enumerate(plans):
        if cfg.source_size is None:
            source = source_all
        else:
            pick = np.sort(np.random.default_rng([seed, 1]).permutation(len(source_all))[:cfg.source_size])
            source = source_all.subset(pick)
        styled = restyle(target_all, t_styles)
        evaluation_digits = styled.subset(eval_idx)  # class ids: for the source classifier
        relabeled = replace(styled, labels=target_y, label_names=list(names))
        train, evaluation = relabeled.subset(train_idx), relabeled.subset(eval_idx)
        eval_styles = t_styles[eval_idx]
        for source_name, share in (("skewed", cfg.skew), ("balanced", 0.5)):
            run_dir = out / "runs" / f"seed-{seed}" / source_name
            done = run_dir / "probe.json"
            if done.is_file():
                _log(cfg, f"seed {seed}, {source_name} source: finished earlier ({done})")
                runs.append(read_json(done))
                continue
            s_styles = assign_styles(len(source), share, cfg.styles, [seed, 0])
            record = {"seed": seed, "source": source_name, "share_a": float(np.mean(s_styles == a)),
                      "source_images": {a: int(np.sum(s_styles == a)), b: int(np.sum(s_styles == b))}}
            final = run_dir / "final"
            if final.is_dir() and check_complete(final) is None:
                _log(cfg, f"seed {seed}, {source_name} source: pretraining finished earlier ({final})")
                record["pretrain_seconds"] = None
            else:
                _log(cfg, f"seed {seed} ({seed + 1} of {cfg.seeds}), {source_name} source: pretraining on "
                          f"{record['source_images'][a]:,} {a} + {record['source_images'][b]:,} {b} images")
                npz = run_dir.parent / f"{source_name}-source.npz"
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                _write_source(npz, restyle(source, s_styles).images, source.labels)
                t0 = time.time()
                pretrain(PretrainConfig(data=str(npz), out=str(run_dir), objective="supervised", model=cfg.model,
                                        augment=cfg.augment, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                        seed=seed, precision=cfg.precision, progress=cfg.progress,
                                        log_every=max(1, cfg.steps // 20)),
                         resume=True)
                record["pretrain_seconds"] = round(time.time() - t0, 1)
                npz.unlink(missing_ok=True)  # the restyled source is rebuilt from the seed whenever it is needed
            record[SOURCE_DIGITS] = _source_accuracy(final, evaluation_digits, eval_styles, cfg.styles)
            for method in METHODS:
                _log(cfg, f"seed {seed}, {source_name} source: {KIND_NAMES[method]} on {len(train)} target labels")
                record[method] = _transfer(final, method, train, evaluation, eval_styles, names, cfg, seed)
            write_json(done, record)
            runs.append(record)
    counts = {"train": {s: int(np.sum(t_styles[train_idx] == s)) for s in cfg.styles},
              "eval": {s: int(np.sum(eval_styles == s)) for s in cfg.styles}}
    sample = target_all.subset(_examples(target_all))
    ink_by_style = {s: round(float(ink(restyle(target_all, s).images).mean()), 4) for s in ("plain", a, b)}
    result = {
        "settings": {**asdict(cfg), "styles": list(cfg.styles), "command": cfg.command()},
        "data": {"source_images": len(source_all) if cfg.source_size is None else cfg.source_size,
                 "target_split": target_all.source, "target_images": len(target_all),
                 "target_labels": counts, "target_names": list(names), "mean_ink": ink_by_style},
        "runs": runs,
        "summary": summarise(runs, cfg.styles),
        "seconds": round(time.time() - started, 1),
    }
    result["conclusion"] = conclude(result["summary"], cfg)
    write_json(out / "vision_bias.json", result)
    write_text(out / "vision_bias.md", format_report(result))
    plot_vision_bias(result, sample, cfg.styles, out / "vision_bias.png")
    _log(cfg, f"wrote {out / 'vision_bias.md'}")
    return result


def _examples(data, n: int = 10) -> list[int]:
    """The first image of each of the first ``n`` classes (or the first ``n`` images): the style examples."""
    firsts = [int(np.flatnonzero(data.labels == c)[0]) for c in range(data.num_labels) if np.any(data.labels == c)]
    return (firsts if len(firsts) >= 2 else list(range(len(data))))[:n]


# ------------------------------------------------------------------------------------------------- numbers

def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}


def summarise(runs: list[dict], pair: tuple[str, str]) -> dict:
    """Mean ± std over seeds per (kind, source, group), the paired skewed - balanced difference, and the verdict
    on the minority style: harmed when the paired loss exceeds twice the larger seed std of the two sources."""
    by = {(r["seed"], r["source"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs if (r["seed"], "skewed") in by and (r["seed"], "balanced") in by})
    summary = {}
    for kind in KINDS:
        entry = {}
        for source in SOURCES:
            entry[source] = {g: _stats([by[(s, source)][kind][g] for s in seeds]) for g in ("A", "B", "gap")}
        entry["paired"] = {g: _stats([by[(s, "skewed")][kind][g] - by[(s, "balanced")][kind][g] for s in seeds])
                           for g in ("A", "B", "gap")}
        loss = -entry["paired"]["B"]["mean"]
        spread = max(entry["skewed"]["B"]["std"], entry["balanced"]["B"]["std"])
        if len(seeds) < 2:
            verdict = "one seed"
        elif loss > 2 * spread:
            verdict = "hurts"
        elif loss > 0:
            verdict = "within spread"
        else:
            verdict = "no loss"
        entry.update(minority_loss=loss, spread=spread, ratio=loss / spread if spread > 0 else None,
                     verdict=verdict, seeds=len(seeds))
        summary[kind] = entry
    return summary


def conclude(summary: dict, cfg: VisionBiasConfig) -> list[str]:
    """One sentence per kind, computed from the numbers, then the overall reading."""
    a, b = cfg.styles
    lines = []
    for kind in KINDS:
        e = summary[kind]
        sk, ba, pb, pa = e["skewed"]["B"], e["balanced"]["B"], e["paired"]["B"], e["paired"]["A"]
        lower = sum(v < 0 for v in pb["values"])
        text = (f"{KIND_NAMES[kind]}: on the minority style ({b}) the skewed-source model scores "
                f"{sk['mean']:.3f} ± {sk['std']:.3f} against {ba['mean']:.3f} ± {ba['std']:.3f} from the balanced "
                f"source, a paired difference of {pb['mean']:+.3f} ± {pb['std']:.3f} (lower in {lower} of "
                f"{len(pb['values'])} seeds)")
        if e["verdict"] == "one seed":
            text += "; with one seed there is no spread to judge it against"
        elif e["verdict"] == "hurts":
            text += (f": a loss {e['minority_loss'] / e['spread']:.1f}x the seed spread ({e['spread']:.3f})"
                     if e["spread"] > 0 else ": a loss with no seed spread at all")
            text += ", more than twice it: the skew hurts the minority style"
        elif e["verdict"] == "within spread":
            text += f": lower, but within twice the seed spread ({e['spread']:.3f}): no measured harm"
        else:
            text += ": no loss"
        text += f". On the majority style ({a}) the paired difference is {pa['mean']:+.3f} ± {pa['std']:.3f}."
        lines.append(text)
    hurt = [KIND_NAMES[k] for k in METHODS if summary[k]["verdict"] == "hurts"]
    spared = [KIND_NAMES[k] for k in METHODS if summary[k]["verdict"] != "hurts"]
    if summary[METHODS[0]]["seeds"] < 2:
        lines.append("Reading: one seed only; run more seeds (--seeds 3) before reading anything into a difference.")
    elif hurt:
        text = (f"Reading: at skew {cfg.skew} the skewed source costs the minority style ({b}) more than twice the "
                f"seed spread after transfer by {' and by '.join(hurt)}")
        if spared:
            text += f"; after {' and '.join(spared)} the loss stays within twice the spread"
        lines.append(text + ".")
    else:
        lines.append(f"Reading: no transfer method shows a loss on the minority style larger than twice the seed "
                     f"spread at skew {cfg.skew}: in this setting the skewed source did not measurably cost the "
                     f"minority style ({b}).")
    return lines


# ------------------------------------------------------------------------------------------------- report

def _cell(stats: dict, signed: bool = False) -> str:
    return f"{stats['mean']:+.3f} ± {stats['std']:.3f}" if signed else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def format_report(result: dict) -> str:
    """The Markdown report: settings, the per-group table, per-seed numbers, the conclusion."""
    s, d, summary = result["settings"], result["data"], result["summary"]
    a, b = s["styles"]
    seeds = summary[METHODS[0]]["seeds"]
    lines = ["# Vision bias probe: a skewed source vs a balanced one", "",
             f"Command: `{s['command']}`", "",
             "![per-group accuracy and style examples](vision_bias.png)", "",
             f"Accuracy per sub-group on the evaluation images of the target task, mean ± std over {seeds} seed(s); "
             f"gap = {a} - {b}; the paired rows are skewed minus balanced, seed by seed (same target split).", "",
             f"| model | source | {a} (A, majority) | {b} (B, minority) | gap A - B |",
             "|---|---|---:|---:|---:|"]
    source_label = {"skewed": f"skewed ({s['skew']:.0%} {a})", "balanced": f"balanced (50% {a})"}
    for kind in KINDS:
        e = summary[kind]
        for source in SOURCES:
            lines.append(f"| {KIND_NAMES[kind]} | {source_label[source]} | {_cell(e[source]['A'])} | "
                         f"{_cell(e[source]['B'])} | {_cell(e[source]['gap'], True)} |")
        mark = " ✗" if e["verdict"] == "hurts" else ""
        lines.append(f"| {KIND_NAMES[kind]} | **skewed - balanced (paired)** | {_cell(e['paired']['A'], True)} | "
                     f"**{_cell(e['paired']['B'], True)}**{mark} | {_cell(e['paired']['gap'], True)} |")
    lines += ["", "✗ = the minority style loses more than twice the seed spread (the larger of the two sources' "
              "std on that style).", "", "## Conclusion", ""]
    lines += [f"- {line}" for line in result["conclusion"]]
    lines += ["", "## Per seed", "", f"| seed | source | share of {a} | pretraining s | "
              + " | ".join(f"{KIND_NAMES[k].split(' (')[0]} {a} / {b}" for k in KINDS) + " |",
              "|---|---|---:|---:|" + "---:|" * len(KINDS)]
    for r in sorted(result["runs"], key=lambda r: (r["seed"], SOURCES.index(r["source"]))):
        secs = "-" if r.get("pretrain_seconds") is None else f"{r['pretrain_seconds']:.0f}"
        lines.append(f"| {r['seed']} | {r['source']} | {r['share_a']:.3f} | {secs} | "
                     + " | ".join(f"{r[k]['A']:.3f} / {r[k]['B']:.3f}" for k in KINDS) + " |")
    tl = d["target_labels"]
    ink = d["mean_ink"]
    pretrain_s = sum(r.get("pretrain_seconds") or 0 for r in result["runs"])
    transfer_s = sum(r[m]["seconds"] for r in result["runs"] for m in METHODS)
    lines += ["", "## Settings", "",
              f"- Data: `{s['data']}`; source = its train split ({d['source_images']:,} images), target = "
              f"`{d['target_split']}` ({d['target_images']:,} images, never seen by pretraining).",
              f"- Styles (data/styles.py): A = {a}, B = {b}; mean pixel intensity in [0, 1] (how much ink): "
              + ", ".join(f"{k} {v:.3f}" for k, v in ink.items()) + ".",
              f"- Sources: skewed = each image {a} with probability {s['skew']}, else {b}; balanced = 50/50; the "
              f"same images and one uniform draw per image for both, so they differ only in the images that change "
              f"style.",
              f"- Pretraining: `pretrain --objective supervised`, preset {s['model']}, {s['steps']} steps of "
              f"{s['batch_size']}, lr {s['lr']}, augmentation {s['augment']}, precision {s['precision']}; one run "
              f"per source per seed (seed = pretraining seed).",
              f"- Target task: {s['target']} ({' vs '.join(d['target_names'])}), each target image {a} or {b} with "
              f"probability 1/2; {s['target_labels']} training labels stratified over style x class "
              f"({', '.join(f'{k} {v}' for k, v in tl['train'].items())}, last seed), evaluated on the rest "
              f"({', '.join(f'{k} {v:,}' for k, v in tl['eval'].items())}).",
              f"- Transfer: head swap (`from_pretrained`), {s['transfer_steps']} steps of "
              f"{s['transfer_batch_size']}, linear probe lr {s['probe_lr']} (frozen backbone, BatchNorm in eval "
              f"mode), full fine-tuning lr {s['finetune_lr']}, 10% warm-up then linear decay, no augmentation.",
              f"- The source classifier row scores the pretrained model on its own classes (the digits) on the same "
              f"evaluation images: the bias before any transfer.",
              f"- Time: pretraining {pretrain_s / 60:.1f} min and transfer {transfer_s / 60:.1f} min over all runs "
              f"(wall time, as recorded when each ran); this invocation {result['seconds'] / 60:.1f} min (runs "
              f"finished by an earlier one are skipped)."]
    return "\n".join(lines) + "\n"


def plot_vision_bias(result: dict, examples, pair: tuple[str, str], out_png) -> Path:
    """Per-group accuracy bars with ±1 std error bars per model kind, and the examples in each style."""
    from ..data.styles import restyle
    from .plots import _figure, _save

    summary = result["summary"]
    a, b = pair
    fig = _figure((12.0, 4.6))
    grid = fig.add_gridspec(1, 2, width_ratios=[2.2, 1.0])
    ax = fig.add_subplot(grid[0, 0])
    bars = [("skewed", "A", f"skewed source, {a}", "tab:blue", ""),
            ("skewed", "B", f"skewed source, {b}", "tab:red", ""),
            ("balanced", "A", f"balanced source, {a}", "tab:blue", "//"),
            ("balanced", "B", f"balanced source, {b}", "tab:red", "//")]
    width = 0.2
    lows = []
    for j, (source, group, label, colour, hatch) in enumerate(bars):
        means = [summary[k][source][group]["mean"] for k in KINDS]
        stds = [summary[k][source][group]["std"] for k in KINDS]
        lows += [m - sd for m, sd in zip(means, stds)]
        xs = [i + (j - 1.5) * width for i in range(len(KINDS))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=label, color=colour, hatch=hatch,
               alpha=1.0 if source == "skewed" else 0.45, edgecolor="0.2")
    ax.set_xticks(range(len(KINDS)))
    target = result["settings"]["target"]
    ax.set_xticklabels([f"{KIND_NAMES[k].split(' (')[0]}\n({'its own classes' if k == SOURCE_DIGITS else target})"
                        for k in KINDS])
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
    ax.set_ylabel("accuracy on the evaluation images")
    seeds = summary[METHODS[0]]["seeds"]
    ax.set_title(f"per-style accuracy, mean ± std over {seeds} seed(s); skew {result['settings']['skew']}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="y", alpha=0.3)
    rows = [examples, restyle(examples, a), restyle(examples, b)]
    strip = np.concatenate([np.concatenate(list(r.images[..., 0] if r.channels == 1 else r.images), axis=1)
                            for r in rows], axis=0)  # (3 H, n W) or (3 H, n W, 3)
    ex = fig.add_subplot(grid[0, 1])
    ex.imshow(strip, cmap="gray", vmin=0, vmax=255)
    h = examples.size[0]
    ex.set_yticks([h / 2, 3 * h / 2, 5 * h / 2])
    ex.set_yticklabels(["plain", f"A: {a}", f"B: {b}"])
    ex.set_xticks([])
    ex.set_title("the same test images in each style")
    fig.tight_layout()
    return _save(fig, out_png)
