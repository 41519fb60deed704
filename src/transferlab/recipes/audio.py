"""Audio pretraining set-up: the audio part of ``recipes.pretrain`` (the run directory, loop, resume and checkpoint
rules are the common part there).

Reads a folder of clips (unlabeled, or class folders whose labels are ignored) into log-mel features once, fits the
normalisation on them, holds out a fixed 2% of the clips (at least one of ten or more, at most 500) for the evaluation
loss, and trains on random crops of ``seq_len`` frames, corrupted by the objective (``objectives.AUDIO_OBJECTIVES``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from ..objectives import AUDIO_OBJECTIVES, audio_objective_settings

HELDOUT_FRACTION = 0.02
MAX_HELDOUT = 500


def audio_setup(cfg):
    """The ``PretrainSetup`` (module, inputs, batches, evaluation, summary, record) of an audio objective run."""
    from ..data.audio import parse_mel, read_audio
    from ..data.batches import FrameCrops
    from ..evaluation.predict import evaluate_lm
    from ..inputs.audio import AudioInputs
    from ..models import audio_preset, build_backbone
    from .pretrain import PretrainSetup, run_length

    objective = AUDIO_OBJECTIVES[cfg.objective]
    other = {"corpus": cfg.corpus, "augment": cfg.augment, "image_size": cfg.image_size, "family": cfg.family,
             "decoder_layers": cfg.decoder_layers, "init": cfg.init}
    given = [f"--{k.replace('_', '-')}" for k, v in other.items() if v]
    if given:
        raise UserError(f"{', '.join(given)} do not apply to --objective {cfg.objective}, which reads a folder of "
                        f"audio clips (--data) and starts from a preset (--model).")
    if not cfg.data:
        raise UserError(f"--objective {cfg.objective} reads audio: pass --data PATH (a folder of WAV/FLAC clips, "
                        f"flat or in sub-folders, or a CSV with a path column).")
    if cfg.seq_len < 16 or cfg.seq_len % 16:
        raise UserError(f"--seq-len {cfg.seq_len}: audio objectives crop clips to this many log-mel frames (10 ms "
                        f"each); use a multiple of 16 (batches are padded to one), e.g. 256 for 2.56 s.")
    settings = parse_mel(cfg.mel)
    noise = audio_objective_settings(cfg.objective, cfg.noise)
    corruption = objective.corruption(cfg.mask_prob, noise)
    data = read_audio(cfg.data, "train", settings=settings, require_labels=False, progress=cfg.progress)
    order = np.random.default_rng(0).permutation(len(data))  # the same held-out clips for every seed
    n_held = min(MAX_HELDOUT, max(1, int(len(data) * HELDOUT_FRACTION))) if len(data) >= 10 else 0
    heldout, train = data.subset(np.sort(order[:n_held])), data.subset(np.sort(order[n_held:]))
    inputs = AudioInputs.fit(train)
    model_cfg = audio_preset(cfg.model, n_mels=settings.n_mels, dropout=cfg.dropout, causal=objective.causal)
    torch.manual_seed(cfg.seed)
    module = objective.module(build_backbone(model_cfg), **{k: v for k, v in noise.items() if k == "shift"})

    def batches(micro: int, rank: int, world_size: int):
        return FrameCrops(train, inputs.mean, inputs.std, cfg.seq_len, corruption, global_batch=micro, seed=cfg.seed,
                          rank=rank, world_size=world_size)

    evaluate = None
    if n_held:
        def evaluate(module):
            micro = cfg.batch_size // cfg.grad_accum
            source = FrameCrops(heldout, inputs.mean, inputs.std, cfg.seq_len, corruption, global_batch=micro, seed=12345)
            return evaluate_lm(module, source, min(cfg.eval_batches, max(1, n_held // micro)))

    summary = (f"{len(train):,} clips ({train.hours:.2f} h, {settings.n_mels} mel bins at {settings.sample_rate} Hz) "
               f"from {cfg.data}; {run_length(cfg)} of {cfg.batch_size} crops of {cfg.seq_len} frames"
               + (f"; {n_held} clips held out for the evaluation loss" if n_held else "; too few clips to hold out "
                  "an evaluation set"))
    record = {"data": str(cfg.data), "mel": settings.to_dict(), "seq_len": cfg.seq_len, "noise": noise,
              "mask_prob": getattr(corruption, "mask_prob", None), "train_hours": round(train.hours, 4)}
    return PretrainSetup(module, inputs, batches, evaluate, summary, record)
