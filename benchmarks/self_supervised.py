"""Self-supervised image steps: transferlab's SimCLR, BYOL and MAE training steps against plain PyTorch steps of the
same method, on the same model and the same batches, side by side in one run; and MAE encoding only the visible
patches against encoding all of them.

For each method it measures images/s (source images: SimCLR and BYOL forward two views of each) of

  ours    the one loop (``training.loop.train``) on the objective's module (``SimCLR``, ``BYOL`` with its
          moving-average callback, ``MaskedAutoencoder`` with its masks made by ``PatchMasking`` beforehand, as the
          batch source makes them), precision "auto" (bf16 autocast on a CPU with AVX512-BF16), fused AdamW with
          the library's decay split, constant learning rate, no clipping;
  plain   the textbook step written out here, on the same backbone (weights copied from ours) and heads: SimCLR's
          NT-Xent with a masked similarity matrix, BYOL with its target updated by a Python loop over the
          parameters, MAE as the reference implementation writes it (``random_masking`` inside the step, the
          decoder predicting every patch and the loss weighted by the mask), in fp32 and under bf16 autocast,
          with ``torch.optim.AdamW`` (foreach, its default);
  mae-all MAE without its main trick: the encoder reads all patches, the masked ones replaced by a learned mask
          token (what BEiT and SimMIM do), the decoder and loss unchanged; its speed against ``ours`` is the
          speed-up of encoding only the visible quarter.

Batches are made once (augmentation is not timed: ``data/augment.py`` has its own benchmark), 3 warm-up steps, then
``--steps`` timed ones. The losses after the same steps are printed next to the speed (same init, same batches).

Time is the process's CPU time (``time.process_time``) by default, not the wall clock: on a shared machine other
jobs take turns on the core and would make the wall clock measure them; with one thread, CPU time is what the
wall clock shows on an idle core. ``--clock wall`` measures wall-clock time instead.

    python benchmarks/self_supervised.py                    # simclr, byol (resnet-mini), mae (vit-mini), batch 256
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/self_supervised.py --threads 1 --steps 8 --json ssl.json
    python benchmarks/self_supervised.py --batch-size 8 --steps 1 --resnet resnet-tiny --vit vit-tiny  # smoke run

(Not ``ssl.py``: run as a script, its folder comes first on ``sys.path`` and that name would shadow the standard
library's ``ssl``, which tqdm's asyncio import needs.)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferlab.models import build_backbone, image_preset  # noqa: E402
from transferlab.objectives import BYOL, MaskedAutoencoder, SimCLR, byol_momentum  # noqa: E402
from transferlab.training.callbacks import Callback  # noqa: E402
from transferlab.training.loop import TrainConfig, train  # noqa: E402
from transferlab.training.precision import autocast, configure_cpu, resolve_precision  # noqa: E402

WARMUP = 3
LR = 1e-3
WEIGHT_DECAY = 0.01
METHODS = ("simclr", "byol", "mae")


def make_batches(method: str, n: int, batch_size: int, module) -> list[dict]:
    """``n`` batches of 1x28x28 images with blobs on noise (normalised), as the batch source gives them."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        pixels = torch.randn(batch_size, 1, 28, 28, generator=g) * 0.3
        pixels[:, :, 8:20, 10:18] += 1.5 * torch.rand(batch_size, 1, 1, 1, generator=g)
        if method == "mae":
            out.append(module.corruption()({"pixels": pixels}, g))
        else:
            views = torch.stack([pixels + 0.2 * torch.randn(pixels.shape, generator=g) for _ in range(2)])
            out.append({"views": views})
    return out


def build(method: str, resnet: str, vit: str):
    torch.manual_seed(0)
    if method == "mae":
        return MaskedAutoencoder(build_backbone(image_preset(vit)))
    module_cls = SimCLR if method == "simclr" else BYOL
    return module_cls(build_backbone(image_preset(resnet)))


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


class _Timer(Callback):
    def __init__(self):
        self.start, self.end, self.losses = None, None, []

    def on_step_end(self, state, logs):
        self.losses.append(state.last_loss)
        if state.step == WARMUP:
            self.start = clock()
        self.end = clock()


def run_ours(method: str, module, batches: list[dict], steps: int) -> dict:
    class Data:
        steps_per_epoch = None

        def batch(self, i):
            return batches[i]

    timer = _Timer()
    train(module, Data(), TrainConfig(steps=WARMUP + steps, lr=LR, weight_decay=WEIGHT_DECAY, warmup=0,
                                      schedule="constant", clip=0.0, progress=False, log_every=10**9),
          callbacks=[timer])
    return {"seconds": timer.end - timer.start, "losses": timer.losses}


# ------------------------------------------------------------------------------------------------ plain steps


def _pool(backbone, pixels):
    return backbone(pixels).mean(1)  # (N, T, C) -> (N, C): global average pooling


def plain_simclr(module: SimCLR, temperature: float):
    backbone, projector = module.backbone, module.heads["projector"]

    def step(batch):
        v = batch["views"]
        n = v.shape[1]
        z = F.normalize(projector(_pool(backbone, torch.cat([v[0], v[1]]))).float(), dim=1)
        sim = z @ z.T / temperature
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        labels = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
        return F.cross_entropy(sim, labels)

    return step, list(backbone.parameters()) + list(projector.parameters()), None


def plain_byol(module: BYOL, total_steps: int):
    online = torch.nn.ModuleDict({"backbone": module.backbone, "projector": module.heads["projector"],
                                  "predictor": module.heads["predictor"]})
    target = torch.nn.ModuleDict({"backbone": copy.deepcopy(module.backbone),
                                  "projector": copy.deepcopy(module.heads["projector"])})
    for p in target.parameters():
        p.requires_grad = False

    def loss_fn(p, z):
        return 2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=-1).mean()

    def step(batch):
        v = batch["views"]
        x = torch.cat([v[0], v[1]])
        p = online["predictor"](online["projector"](_pool(online["backbone"], x)))
        with torch.no_grad():
            z = target["projector"](_pool(target["backbone"], x))
        p1, p2 = p.chunk(2)
        z1, z2 = z.chunk(2)
        return loss_fn(p1, z2) + loss_fn(p2, z1)

    state = {"k": 0}

    def after(_):
        state["k"] += 1
        m = byol_momentum(state["k"], total_steps, module.momentum)
        with torch.no_grad():
            for name in ("backbone", "projector"):
                for t, o in zip(target[name].parameters(), online[name].parameters()):
                    t.mul_(m).add_(o, alpha=1 - m)

    return step, list(online.parameters()), after


def plain_mae(module: MaskedAutoencoder, all_patches: bool):
    """MAE's reference step (its ``random_masking``, dense decoder prediction, loss weighted by the mask); with
    ``all_patches`` the encoder reads every patch, the masked ones replaced by a learned encoder mask token."""
    vit, dec = module.backbone, module.heads["decoder"]
    ratio = module.mask_ratio
    enc_mask_token = torch.nn.Parameter(torch.zeros(1, 1, vit.config.d_model))
    g = torch.Generator().manual_seed(1)

    def step(batch):
        x = batch["pixels"]
        B = x.shape[0]
        tokens = vit.embed(x)  # (B, N, d)
        N, d = tokens.shape[1:]
        keep = int(N * (1 - ratio))
        noise = torch.rand(B, N, generator=g)
        shuffle = noise.argsort(1)
        restore = shuffle.argsort(1)
        ids_keep = shuffle[:, :keep]
        mask = torch.ones(B, N)
        mask[:, :keep] = 0
        mask = mask.gather(1, restore)  # 1 = masked, in patch order
        if all_patches:
            encoder_in = torch.where(mask.bool()[..., None], enc_mask_token.to(tokens.dtype), tokens)
            latent = vit.encode(encoder_in)  # (B, N, d)
            y = dec.embed(latent)
        else:
            latent = vit.encode(tokens.gather(1, ids_keep[..., None].expand(-1, -1, d)))  # (B, keep, d)
            y = dec.embed(latent)
            w = y.shape[-1]
            y = torch.cat([y, dec.mask_token.to(y.dtype).expand(B, N - keep, w)], 1)
            y = y.gather(1, restore[..., None].expand(-1, -1, w))  # unshuffle
        y = y + dec.pos_embed
        for block in dec.h:
            y = block(y)
        pred = dec.pred(dec.ln(y)).float()  # (B, N, p*p*C): every patch
        target = vit.patchify(x)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()

    params = [p for p in module.parameters() if p.requires_grad] + ([enc_mask_token] if all_patches else [])
    return step, params, None


def run_plain(method: str, module, batches: list[dict], steps: int, precision: str, variant: str = "") -> dict:
    if method == "simclr":
        step, params, after = plain_simclr(module, module.temperature)
    elif method == "byol":
        step, params, after = plain_byol(module, WARMUP + steps)
    else:
        step, params, after = plain_mae(module, all_patches=variant == "all")
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    module.train()
    losses, start = [], None
    for i in range(WARMUP + steps):
        if i == WARMUP:
            start = clock()
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = step(batches[i])
        loss.backward()
        optimizer.step()
        if after is not None:
            after(i)
        losses.append(float(loss.detach()))
    return {"seconds": clock() - start, "losses": losses}


# ------------------------------------------------------------------------------------------------ driver


def bench(methods, batch_size: int, steps: int, resnet: str, vit: str, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    configure_cpu()
    auto = resolve_precision("auto")
    rows = []
    for method in methods:
        model = vit if method == "mae" else resnet
        configs = [("ours", auto, "")] + [("plain", p, "") for p in ("fp32", "bf16")]
        if method == "mae":
            configs += [("plain", p, "all") for p in ("fp32", "bf16")]
        batches = make_batches(method, WARMUP + steps, batch_size, build(method, resnet, vit))
        for side, precision, variant in configs:
            module = build(method, resnet, vit)  # same seed: same initial weights on every side
            if side == "ours":
                result = run_ours(method, module, batches, steps)
            else:
                result = run_plain(method, module, batches, steps, precision, variant)
            name = f"{side} {precision}" + (" (encoder reads all patches)" if variant else "")
            rows.append({"method": method, "model": model, "side": name, "precision": precision,
                         "variant": variant or "visible" if method == "mae" else "",
                         "images_per_s": batch_size * steps / result["seconds"], "loss": result["losses"][-1],
                         "losses": result["losses"], "batch_size": batch_size, "steps": steps})
            print(f"{method:7s} {model:12s} {name:40s} {rows[-1]['images_per_s']:8.1f} images/s  "
                  f"loss {rows[-1]['loss']:.4f}", file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| method | model | step | images/s | vs plain fp32 | vs best plain | loss after the steps |",
             "|---|---|---|---:|---:|---:|---:|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        plain = [r for r in mine if r["side"].startswith("plain") and r["variant"] in ("", "visible")]
        fp32 = next(r for r in plain if r["precision"] == "fp32")["images_per_s"]
        best = max(r["images_per_s"] for r in plain)
        for r in mine:
            lines.append(f"| {method} | {r['model']} | {r['side']} | {r['images_per_s']:,.0f} | "
                         f"{r['images_per_s'] / fp32:.2f}x | {r['images_per_s'] / best:.2f}x | {r['loss']:.4f} |")
    mae = [r for r in rows if r["method"] == "mae"]
    if mae:
        ours = next(r for r in mae if r["side"].startswith("ours"))
        everything = max((r for r in mae if r["variant"] == "all"), key=lambda r: r["images_per_s"])
        lines.append("")
        speedup = ours["images_per_s"] / everything["images_per_s"]
        lines.append(f"MAE encoding only the visible patches (ours) runs {speedup:.2f}x the images/s of encoding all "
                     f"of them (best of fp32/bf16: {everything['side']}).")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--resnet", default="resnet-mini", help="SimCLR and BYOL's backbone preset")
    p.add_argument("--vit", default="vit-mini", help="MAE's backbone preset")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="time by CPU time (default) or wall clock")
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    global clock
    clock = CLOCKS[a.clock]
    rows = bench([m for m in a.methods.split(",") if m], a.batch_size, a.steps, a.resnet, a.vit, a.threads)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} thread(s), batch "
          f"{a.batch_size}, {a.steps} timed steps after {WARMUP} warm-up, {a.clock} clock\n")
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
