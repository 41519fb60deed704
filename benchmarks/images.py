"""Image throughput: transferlab's training and inference path against plain PyTorch loops of the same model on the
same batches, side by side in one run.

For each preset (ResNet and ViT, 1x28x28 images, 10 classes) it measures images/s of

  training   ours: the one loop (``training.loop.train``) on a ``SequenceClassifier`` over the backbone, as
             ``transferlab finetune`` / ``pretrain`` run it (precision "auto", the library's fused AdamW with its
             decay split), fed pre-made batches through a data object's ``batch(i)``;
             plain: the textbook loop (zero_grad, forward, ``F.cross_entropy``, backward, ``AdamW.step``) on the
             same module class, in every configuration a practitioner would try: fp32 or bf16 autocast, NCHW or
             channels-last, AdamW's default implementation or ``fused=True``;
  inference  ours: ``evaluation.predict.predict_logits`` on ``ImageExamples`` (what ``TransferModel.predict``
             calls); plain: ``model.eval()`` + ``torch.no_grad()`` in the same four precision/layout variants;
             batch 128 (or --batch-size) and batch 1.

Both sides start from the same weights (one seed) and see the same images, without augmentation, so they do the
same work and must reach the same loss after the same steps (printed next to the speed). Ours runs the plain
loop's settings: a constant learning rate without warm-up or clipping (``TrainConfig(schedule="constant",
warmup=0, clip=0)``). "NCHW" builds the ResNet as a textbook NCHW model (``ResNet.memory_format`` set to
``torch.contiguous_format``; the library's ResNet keeps itself channels-last); "channels-last" converts the model
and every input batch, as a practitioner would.

The table gives images/s, the ratio to plain fp32 NCHW and to the best plain configuration, model-FLOPs
utilisation (FLOPs per image from ``torch.utils.flop_counter`` x images/s, over the bf16 matmul peak, the machine's
ceiling, as ``throughput.py`` reports it; measured at the start and the end of the run, the higher kept), the loss
(mean of the last 3 steps), and the peak RSS with the RSS at the start and the end of the measured steps (flat
memory over steps). Every configuration runs in a child process of its own, so the RSS is that configuration's
alone.

Timing: with one thread, images/s are counted against the process's CPU time (``--clock cpu``, the default there):
on a shared machine the wall clock also counts other processes' turns on the core, which changed a configuration's
wall-clock figure by 2-3x between two runs here, while CPU time moved by about 10%. Training speed comes from the
median step or batch. ``--lockstep`` runs all configurations of a model in one process, one step of each in turn
(a rotating order), so a burst of background load hits every configuration alike; the ratios are then the
steadiest, and the RSS columns are the whole process's. ``--repeats`` runs everything several times and keeps each
configuration's fastest. Both clocks are in the JSON.

    python benchmarks/images.py                                          # resnet-mini, resnet-small, vit-mini
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/images.py --threads 1 --steps 10 --json images.json
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/images.py --threads 1 --steps 10 --lockstep  # steadiest ratios
    python benchmarks/images.py --models resnet-tiny,vit-tiny --batch-size 8 --steps 2 --in-process  # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import matmul_peak  # noqa: E402  (the same peak as the text benchmark)

from transferlab.data.batches import ImageExamples  # noqa: E402
from transferlab.evaluation.predict import predict_logits  # noqa: E402
from transferlab.models import ResNet, build_backbone, image_preset  # noqa: E402
from transferlab.objectives.classification import SequenceClassifier  # noqa: E402
from transferlab.training.callbacks import Callback  # noqa: E402
from transferlab.training.loop import TrainConfig, train  # noqa: E402
from transferlab.training.memory import rss_bytes  # noqa: E402
from transferlab.training.precision import configure_cpu, resolve_precision  # noqa: E402

WARMUP = 3  # steps (batches) before timing starts
NUM_CLASSES = 10
IMAGE = (1, 28, 28)  # (C, H, W)
LR = 1e-3
WEIGHT_DECAY = 0.01
MIB = 2**20


def train_configs(optimizers: list[str]) -> list[dict]:
    """Ours, then plain in each precision x layout x optimizer."""
    plain = [dict(side="plain", precision=p, layout=lay, optimizer=o)
             for p in ("fp32", "bf16") for lay in ("nchw", "cl") for o in optimizers]
    return [dict(side="ours")] + plain


def infer_configs() -> list[dict]:
    return [dict(side="ours")] + [dict(side="plain", precision=p, layout=lay)
                                  for p in ("fp32", "bf16") for lay in ("nchw", "cl")]


def config_name(c: dict, auto: str) -> str:
    if c["side"] == "ours":
        return f"ours (auto = {auto})"
    parts = ["plain", c["precision"], "channels-last" if c["layout"] == "cl" else "NCHW"]
    if "optimizer" in c:
        parts.append(f"AdamW {c['optimizer']}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------- data


def image_examples(n: int, seed: int = 0) -> ImageExamples:
    """``n`` uint8 images of NUM_CLASSES classes, each class a fixed random pattern under heavy noise (so the loss
    falls and an equal-steps comparison means something), normalised by their own mean and std."""
    rng = np.random.default_rng(seed)
    C, H, W = IMAGE
    templates = rng.integers(0, 256, (NUM_CLASSES, H, W, C))
    labels = rng.integers(0, NUM_CLASSES, n)
    noise = rng.integers(0, 256, (n, H, W, C))
    images = ((templates[labels] + noise) // 2).astype(np.uint8)  # (n, H, W, C)
    pixels = images / 255.0
    mean = tuple(pixels.mean(axis=(0, 1, 2)).tolist())
    std = tuple(pixels.std(axis=(0, 1, 2)).tolist())
    return ImageExamples(images, labels.astype(np.int64), mean, std)


def premade_batches(examples: ImageExamples, n: int, batch_size: int) -> list[dict]:
    """``n`` batches of distinct images, collated once (float pixels (B, C, H, W) and labels)."""
    return [examples.collate(range(i * batch_size, (i + 1) * batch_size)) for i in range(n)]


class PremadeBatches:
    """The loop's data contract over a list of batches: ``batch(i)`` is the i-th one."""

    def __init__(self, batches: list[dict]):
        self.batches = batches
        self.steps_per_epoch = len(batches)

    def batch(self, i: int) -> dict:
        return dict(self.batches[i % len(self.batches)])


# ---------------------------------------------------------------------------------------------------- measuring


def build(model: str, layout: str = "library") -> SequenceClassifier:
    """The classifier of preset ``model``, from the same seed in every configuration. ``layout="nchw"`` builds the
    ResNet as a textbook NCHW model (the library's ResNet keeps itself channels-last); "library" as it comes."""
    torch.manual_seed(0)
    saved = ResNet.memory_format
    if layout == "nchw":
        ResNet.memory_format = torch.contiguous_format
    try:
        return SequenceClassifier(build_backbone(image_preset(model, in_channels=IMAGE[0], image_size=IMAGE[1:])),
                                  NUM_CLASSES)
    finally:
        ResNet.memory_format = saved


def flops_per_image(model: str, training: bool, batch: int = 4) -> float:
    """Model FLOPs of one image (forward + backward when ``training``), counted by torch.utils.flop_counter.

    SDPA runs its math path while counting: the counter has no formula for the CPU flash kernel, and the math path
    does the same matmuls."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    module = build(model).train(training)
    pixels = torch.randn(batch, *IMAGE)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        if training:
            F.cross_entropy(module({"pixels": pixels})["logits"], torch.zeros(batch, dtype=torch.long)).backward()
        else:
            with torch.no_grad():
                module({"pixels": pixels})
    return counter.get_total_flops() / batch


def now() -> tuple[float, float]:
    """(wall-clock, process CPU) seconds. With one thread the CPU clock is the time the code itself ran: on a shared
    machine the wall clock also counts the turns of other processes on the same core."""
    return time.perf_counter(), time.process_time()


class StepClock:
    """Durations of the steps (training steps or inference batches) after the first ``warmup``, the loss of every
    step, and the RSS after the warm-up and after each measured step."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.losses: list[float] = []
        self.durations: list[tuple[float, float]] = []  # (wall, cpu) seconds of each measured step
        self.rss: list[int] = []
        self.started = now()

    def begin(self) -> None:
        self.started = now()

    def end(self, step: int, loss: float | None = None) -> None:
        """``step`` (1-based) has just finished (with ``loss``, for training)."""
        t = now()
        if loss is not None:
            self.losses.append(loss)
        if step > self.warmup:
            self.durations.append((t[0] - self.started[0], t[1] - self.started[1]))
        if step >= self.warmup:
            self.rss.append(rss_bytes())

    def result(self, images_per_step: int, clock: str) -> dict:
        """Images/s of the median step by each clock (a step that another process preempted does not count against
        the code), ``images_per_s`` by ``clock``, the wall-clock mean, losses and RSS."""
        wall, cpu = (np.array([d[i] for d in self.durations]) for i in (0, 1))
        out = {"images_per_s_wall": images_per_step / float(np.median(wall)),
               "images_per_s_cpu": images_per_step / float(np.median(cpu)),
               "images_per_s_wall_mean": images_per_step * len(wall) / float(wall.sum()),
               "rss_start_mb": self.rss[0] / MIB, "rss_end_mb": self.rss[-1] / MIB,
               "rss_growth_mb": (max(self.rss) - self.rss[0]) / MIB}
        out["images_per_s"] = out[f"images_per_s_{clock}"]
        if self.losses:
            out.update(losses=self.losses, loss=float(np.mean(self.losses[-3:])))
        return out


class OursClock(Callback):
    """Times the loop's steps from the end of one step to the end of the next, and runs ``between`` (the lockstep
    mode's plain steps) outside that time."""

    def __init__(self, clock: StepClock, between=None):
        self.clock, self.between = clock, between

    def on_fit_start(self, state) -> None:
        self.clock.begin()

    def on_step_end(self, state, logs) -> None:
        self.clock.end(state.step, state.last_loss)
        if self.between is not None:
            self.between(state.step)
        self.clock.begin()


def train_ours(module, batches: list[dict], clock: StepClock, between=None) -> None:
    """The library's training path: the one loop, precision "auto", its optimizer, the plain loop's settings."""
    cfg = TrainConfig(steps=len(batches), lr=LR, weight_decay=WEIGHT_DECAY, warmup=0, schedule="constant", clip=0.0,
                      precision="auto", progress=False, log_every=10**9, eval_every=10**9)
    train(module, PremadeBatches(batches), cfg, callbacks=[OursClock(clock, between)])


def plain_training(module, batches: list[dict], clock: StepClock, precision: str, layout: str, optimizer: str):
    """The textbook loop, as a practitioner writes it for this configuration; a generator that yields after each
    step, so the lockstep mode can interleave configurations."""
    channels_last = layout == "cl"
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    kind = {"default": {}, "fused": {"fused": True}, "foreach": {"foreach": True}}[optimizer]
    opt = torch.optim.AdamW(module.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, **kind)
    module.train()
    for step, batch in enumerate(batches, 1):
        clock.begin()
        x, y = batch["pixels"], batch["labels"]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(module({"pixels": x})["logits"], y)
        loss.backward()
        opt.step()
        clock.end(step, loss.item())
        yield


def inference(module, config: dict, examples: ImageExamples, batch_size: int, n: int, clock: StepClock,
              logits: list):
    """``n`` batches of ``batch_size`` images, one per ``next()``, appending the logits. Ours: ``predict_logits`` on
    the batch's ``ImageExamples`` (uint8 images, normalised inside, as ``TransferModel.predict`` runs); plain: the
    same images pre-normalised, ``model.eval()`` + ``torch.no_grad()`` in the configuration's precision and layout."""
    module.eval()
    if config["side"] == "ours":
        parts = [examples.subset(range(i * batch_size, (i + 1) * batch_size)) for i in range(n)]
    else:
        channels_last = config["layout"] == "cl"
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        batches = premade_batches(examples, n, batch_size)
    for i in range(n):
        clock.begin()
        if config["side"] == "ours":
            out = predict_logits(module, parts[i], batch_size)
        else:
            x = batches[i]["pixels"]
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=config["precision"] == "bf16"):
                out = module({"pixels": x})["logits"].float()
        clock.end(i + 1)
        logits.append(out)
        yield


def measure(spec: dict) -> list[dict]:
    """The configurations ``spec["configs"]`` (with model, task, batch_size, steps, b1_images, threads, clock) in
    this process, one step (or batch) of each in turn, so that whatever else the machine runs hits all of them
    alike. Returns one row per configuration."""
    torch.set_num_threads(spec["threads"])
    configure_cpu()  # as the loop does, on both sides: flush denormals
    configs, bs = spec["configs"], spec["batch_size"]
    modules = [build(spec["model"], c.get("layout", "library")) for c in configs]
    clocks = [StepClock(WARMUP) for _ in configs]
    rows = [{} for _ in configs]
    if spec["task"] == "train":
        n = WARMUP + spec["steps"]
        batches = premade_batches(image_examples(n * bs), n, bs)
        plain = [plain_training(m, batches, k, c["precision"], c["layout"], c["optimizer"])
                 for m, k, c in zip(modules, clocks, configs) if c["side"] == "plain"]

        def step_others(step: int) -> None:
            for g in plain[step % len(plain):] + plain[:step % len(plain)]:  # rotated: no fixed position
                next(g)

        if configs[0]["side"] == "ours":
            train_ours(modules[0], batches, clocks[0], step_others if plain else None)
        else:
            for step in range(n):
                step_others(step)
        for row, k in zip(rows, clocks):
            row.update(k.result(bs, spec["clock"]))
    else:
        sizes = {"batch": (bs, WARMUP + spec["steps"]), "batch1": (1, WARMUP + spec["b1_images"])}
        examples = image_examples(max(b * k for b, k in sizes.values()))
        for key, (b, k) in sizes.items():
            clocks = [StepClock(WARMUP) for _ in configs]
            logits = [[] for _ in configs]
            runs = [inference(m, c, examples, b, k, ck, lg) for m, c, ck, lg in zip(modules, configs, clocks, logits)]
            for i in range(k):
                for g in runs[i % len(runs):] + runs[:i % len(runs)]:
                    next(g)
            for row, ck, lg in zip(rows, clocks, logits):
                result = ck.result(b, spec["clock"])
                row.update({f"{key}_{name}": v for name, v in result.items() if name.startswith("images_per_s")})
                row[f"{key}_first_logits"] = torch.cat(lg)[WARMUP * b:][:4].tolist()
                if key == "batch":
                    row.update({name: v for name, v in result.items() if name.startswith("rss")})
        for row in rows:
            row["images_per_s"] = row["batch_images_per_s"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [{**{k: v for k, v in spec.items() if k != "configs"}, "config": c, **row, "peak_rss_mb": peak,
             "lockstep": len(configs) > 1} for c, row in zip(configs, rows)]


def spawn(spec: dict) -> list[dict]:
    """``measure(spec)`` in a child process of its own (its peak RSS is then these configurations' alone)."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed for {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- report


def annotate(rows: list[dict], flops: float, peak: dict, auto: str) -> dict:
    """Ratios to plain fp32 NCHW and to the best plain row (added to ``rows``), MFU; returns the best plain row."""
    plain = [r for r in rows if r["config"]["side"] == "plain"]
    base = next(r for r in plain if r["config"]["precision"] == "fp32" and r["config"]["layout"] == "nchw")
    best = max(plain, key=lambda r: r["images_per_s"])
    for r in rows:
        r["name"] = config_name(r["config"], auto)
        r["flops_per_image"] = flops
        r["ratio_vs_plain_fp32"] = r["images_per_s"] / base["images_per_s"]
        r["ratio_vs_best_plain"] = r["images_per_s"] / best["images_per_s"]
        r["mfu"] = r["images_per_s"] * flops / (peak["bf16"] * 1e9)
        if "batch1_images_per_s" in r:
            r["batch1_ratio_vs_plain_fp32"] = r["batch1_images_per_s"] / base["batch1_images_per_s"]
            best1 = max(p["batch1_images_per_s"] for p in plain)
            r["batch1_ratio_vs_best_plain"] = r["batch1_images_per_s"] / best1
            r["logits_max_diff_vs_plain_fp32"] = float(np.abs(np.array(r["batch_first_logits"])
                                                              - np.array(base["batch_first_logits"])).max())
    return best


def progress(row: dict, auto: str) -> dict:
    """Say on stderr what a configuration measured, as it finishes (a full run takes tens of minutes)."""
    print(f"  {row['model']} {row['task']} {config_name(row['config'], auto)}: {row['images_per_s']:,.0f} images/s",
          file=sys.stderr, flush=True)
    return row


def print_header(task: str) -> None:
    if task == "train":
        print(f"{'model':<13} {'training':<40} {'img/s':>8} {'/fp32':>7} {'/best':>7} {'MFU':>6} {'loss':>7} "
              f"{'RSS MB':>7} {'start':>7} {'end':>7}")
    else:
        print(f"{'model':<13} {'inference':<28} {'img/s':>8} {'/fp32':>7} {'/best':>7} {'MFU':>6} {'b1 ms':>7} "
              f"{'/fp32':>7} {'/best':>7} {'dlogits':>7} {'RSS MB':>7}")


def print_train(model: str, rows: list[dict], best: dict) -> None:
    for r in rows:
        print(f"{model:<13} {r['name']:<40} {r['images_per_s']:8,.0f} {r['ratio_vs_plain_fp32']:6.2f}x "
              f"{r['ratio_vs_best_plain']:6.2f}x {100 * r['mfu']:5.1f}% {r['loss']:7.4f} {r['peak_rss_mb']:7,.0f} "
              f"{r['rss_start_mb']:7,.0f} {r['rss_end_mb']:7,.0f}", flush=True)
    print(f"{model:<13} best plain: {best['name']}", flush=True)


def print_infer(model: str, rows: list[dict], best: dict, batch_size: int) -> None:
    for r in rows:
        print(f"{model:<13} {r['name']:<28} {r['images_per_s']:8,.0f} {r['ratio_vs_plain_fp32']:6.2f}x "
              f"{r['ratio_vs_best_plain']:6.2f}x {100 * r['mfu']:5.1f}% {1000 / r['batch1_images_per_s']:7.2f} "
              f"{r['batch1_ratio_vs_plain_fp32']:6.2f}x {r['batch1_ratio_vs_best_plain']:6.2f}x "
              f"{r['logits_max_diff_vs_plain_fp32']:7.4f} {r['peak_rss_mb']:7,.0f}", flush=True)
    print(f"{model:<13} best plain at batch {batch_size}: {best['name']}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(measure(json.loads(sys.argv[2]))))
        return {}
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet-mini,resnet-small,vit-mini", help="comma-separated image presets")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help=f"timed training steps / inference batches (after {WARMUP} "
                                                         f"warm-up ones)")
    p.add_argument("--b1-images", type=int, default=64, help="images timed one at a time (batch 1)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=1, help="rounds over all configurations; each keeps its fastest")
    p.add_argument("--clock", choices=("cpu", "wall"),
                   help="what images/s is measured by: the process's CPU time (the default with --threads 1: on a "
                        "shared machine it leaves out other processes' turns on the core) or wall-clock time (the "
                        "default with more threads, whose CPU times add up)")
    p.add_argument("--optimizers", default="default,fused",
                   help="the plain loop's AdamW: default (torch's choice: the per-tensor loop on CPU), fused, foreach")
    p.add_argument("--tasks", default="train,infer")
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n matmul that measures the peak")
    p.add_argument("--lockstep", action="store_true",
                   help="run all configurations of a model in one process, a step of each in turn, so background "
                        "load on a shared machine hits them alike (the RSS columns are then the whole process's)")
    p.add_argument("--in-process", action="store_true", help="run every configuration in this process (smoke tests; "
                                                              "the RSS columns are then the whole run's)")
    p.add_argument("--json", help="also write every result (with per-step losses) here")
    a = p.parse_args(argv)
    optimizers = a.optimizers.split(",")
    for o in optimizers:
        if o not in ("default", "fused", "foreach"):
            p.error(f"--optimizers: unknown '{o}'; choose from default, fused, foreach")
    tasks = a.tasks.split(",")
    for t in tasks:
        if t not in ("train", "infer"):
            p.error(f"--tasks: unknown '{t}'; choose from train, infer")
    models = a.models.split(",")
    for m in models:
        image_preset(m)  # an unknown preset is refused here, with the list, not in a child
    clock = a.clock or ("cpu" if a.threads == 1 else "wall")
    torch.set_num_threads(a.threads)
    configure_cpu()
    auto = resolve_precision("auto")
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} threads on cores "
          f"{affinity}, load average {os.getloadavg()[0]:.2f}, batch {a.batch_size}, {'x'.join(map(str, IMAGE))} "
          f"images, {WARMUP} warm-up + {a.steps} timed steps, auto precision = {auto}, images/s by the {clock} clock")
    timer = time.process_time if clock == "cpu" else time.perf_counter
    peak = {"fp32": matmul_peak(torch.float32, a.matmul_size, clock=timer),
            "bf16": matmul_peak(torch.bfloat16, a.matmul_size, clock=timer)}
    print(f"# {a.matmul_size}x{a.matmul_size} matmul peak at the start: fp32 {peak['fp32']:,.0f} GFLOP/s, bf16 "
          f"{peak['bf16']:,.0f} GFLOP/s (again at the end; MFU: against the higher bf16 peak in every row)")
    run = measure if a.in_process else spawn
    out = {"args": vars(a), "auto_precision": auto, "train": {}, "infer": {}}
    results = []
    for task in tasks:
        for model in models:
            flops = flops_per_image(model, training=task == "train")
            configs = train_configs(optimizers) if task == "train" else infer_configs()
            spec = dict(model=model, task=task, batch_size=a.batch_size, steps=a.steps, b1_images=a.b1_images,
                        threads=a.threads, clock=clock)
            groups = [configs] if a.lockstep else [[c] for c in configs]
            # Rounds over all configurations; each keeps its fastest round.
            rounds = [[progress(row, auto) for group in groups for row in run({**spec, "configs": group})]
                      for _ in range(a.repeats)]
            rows = [max(runs, key=lambda r: r["images_per_s"]) | {"rounds_images_per_s": [r["images_per_s"]
                                                                                          for r in runs]}
                    for runs in zip(*rounds)]
            results.append((task, model, rows, flops))
    # Other work on a shared machine lowers a single peak measurement; the higher of two is the better ceiling.
    end = {"fp32": matmul_peak(torch.float32, a.matmul_size, clock=timer),
           "bf16": matmul_peak(torch.bfloat16, a.matmul_size, clock=timer)}
    print(f"# matmul peak at the end: fp32 {end['fp32']:,.0f} GFLOP/s, bf16 {end['bf16']:,.0f} GFLOP/s; load average "
          f"{os.getloadavg()[0]:.2f}")
    out["matmul_gflops"] = {"start": peak, "end": end}
    peak = {k: max(peak[k], end[k]) for k in peak}
    if a.lockstep or a.in_process:
        print("# RSS columns: the whole process's (all configurations of a model ran in one process)")
    for i, (task, model, rows, flops) in enumerate(results):
        if i == 0 or task != results[i - 1][0]:
            print_header(task)
        best = annotate(rows, flops, peak, auto)
        if task == "train":
            print_train(model, rows, best)
        else:
            print_infer(model, rows, best, a.batch_size)
        out[task][model] = {"rows": rows, "best_plain": best["name"]}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
