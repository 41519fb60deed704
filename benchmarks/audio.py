"""Audio throughput: the masked-frames pretraining step, and feature extraction.

1. Pretraining step: frames/s of ``transferlab``'s loop (``training.loop.train`` with the ``MaskedFrames`` module,
   precision "auto", clipping, schedule, the metrics it logs) against a plain PyTorch loop over the same module
   (same initial weights) on the same precomputed batches: forward, backward, clip, AdamW step, under the same
   autocast. Batch construction (crops + span masking) is timed separately, per batch, since the loop builds batches
   inside its step.
2. Feature extraction: WAV files of synthetic speech-like audio at 22,050 Hz are written to a temporary folder and
   read with ``read_audio`` into the memory-mapped feature cache (decode, resample to 16 kHz, STFT, mel, log,
   float16): hours of audio per minute of CPU time, and how much of it resampling and the mel transform take.

    python benchmarks/audio.py                                   # audio-mini, batch 32 x 256 frames, one thread
    python benchmarks/audio.py --model audio-small --steps 30 --threads 2 --json runs/bench/audio.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferlab.data.audio import AudioSet, LogMel, MelSettings, read_audio, resample  # noqa: E402
from transferlab.data.batches import FrameCrops  # noqa: E402
from transferlab.models import audio_preset, build_backbone  # noqa: E402
from transferlab.objectives import MaskedFrames, SpanMasking  # noqa: E402
from transferlab.training.callbacks import Callback  # noqa: E402
from transferlab.training.loop import TrainConfig, train  # noqa: E402
from transferlab.training.optim import build_optimizer  # noqa: E402
from transferlab.training.precision import autocast, configure_cpu, resolve_precision  # noqa: E402

WARMUP = 3


def synthetic_features(n_clips: int, n_mels: int, seed: int = 0) -> AudioSet:
    """Clips of 2 to 6 s of log-mel-like frames (a slow random walk per bin): only shapes matter for the step."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(200, 600, n_clips)
    walk = np.cumsum(rng.normal(0, 0.3, (int(lengths.sum()), n_mels)), axis=0) * 0.05 - 6
    return AudioSet(walk.astype(np.float16), np.r_[0, np.cumsum(lengths)[:-1]], lengths, None, None, "synthetic",
                    [str(i) for i in range(n_clips)], MelSettings(n_mels=n_mels))


class _Clock(Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, state, logs):
        self.times.append(time.perf_counter())


class _Replay:
    """A batch source that hands out precomputed batches (the loop's ``data`` contract)."""

    steps_per_epoch = None

    def __init__(self, batches):
        self.batches = batches

    def batch(self, i: int) -> dict:
        return self.batches[i % len(self.batches)]


def bench_step(model: str, batch_size: int, seq_len: int, steps: int, precision: str) -> dict:
    """Frames/s of the masked-frames step: transferlab's loop and a plain PyTorch loop, same module, same batches."""
    configure_cpu()
    cfg = audio_preset(model)
    data = synthetic_features(max(64, batch_size * 2), cfg.n_mels)
    source = FrameCrops(data, [-6.0] * cfg.n_mels, [1.0] * cfg.n_mels, seq_len, SpanMasking(), global_batch=batch_size)
    t0 = time.perf_counter()
    batches = [source.batch(i) for i in range(steps + WARMUP)]
    batch_ms = (time.perf_counter() - t0) / len(batches) * 1000
    frames = batch_size * batches[0]["frames"].shape[1]
    torch.manual_seed(0)
    initial = MaskedFrames(build_backbone(cfg)).state_dict()
    resolved = resolve_precision(precision)

    # plain PyTorch
    module = MaskedFrames(build_backbone(cfg))
    module.load_state_dict(initial)
    module.train()
    optimizer = build_optimizer(module, 1e-3, 0.01)
    plain_losses, stamps = [], []
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast(resolved):
            loss = module(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        plain_losses.append(float(loss.detach()))
        stamps.append(time.perf_counter())
    plain = frames * steps / (stamps[-1] - stamps[WARMUP - 1])

    # transferlab's loop
    module = MaskedFrames(build_backbone(cfg))
    module.load_state_dict(initial)
    clock = _Clock()
    train(module, _Replay(batches), TrainConfig(steps=steps + WARMUP, lr=1e-3, warmup=0, schedule="constant",
                                                 precision=precision, progress=False, log_every=10**6),
          callbacks=[clock])
    ours = frames * steps / (clock.times[-1] - clock.times[WARMUP - 1])
    params = sum(p.numel() for p in module.backbone.parameters())
    return {"model": model, "params_m": round(params / 1e6, 3), "batch": batch_size, "seq_len": seq_len,
            "precision": resolved, "steps": steps, "transferlab_frames_per_s": round(ours),
            "plain_frames_per_s": round(plain), "ratio": round(ours / plain, 3),
            "batch_build_ms": round(batch_ms, 2), "plain_losses": plain_losses}


def speechlike(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone with a wandering pitch under a syllable-rate envelope, plus noise: int16 PCM."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 120 + 40 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    x = 0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(n)
    return np.round(x * 32767).astype(np.int16)


def bench_features(minutes: float, rate: int = 22050) -> dict:
    """Hours of audio per CPU-minute of ``read_audio`` (decode + resample + log-mel into the cache), and the share
    of resampling and of the transform measured alone on the same audio."""
    from scipy.io import wavfile

    rng = np.random.default_rng(0)
    settings = MelSettings()
    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp) / "clips"
        clips.mkdir()
        waves, total = [], 0.0
        while total < minutes * 60:
            seconds = float(rng.uniform(1.0, 8.0))
            waves.append(speechlike(seconds, rate, rng))
            wavfile.write(clips / f"{len(waves):05d}.wav", rate, waves[-1])
            total += seconds
        hours = total / 3600
        t0, c0 = time.perf_counter(), time.process_time()
        data = read_audio(clips, require_labels=False, cache_dir=Path(tmp) / "cache", progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert abs(data.hours - hours) < 0.01
        c0 = time.process_time()
        resampled = [resample(w.astype(np.float32) / 32768, rate, settings.sample_rate) for w in waves]
        resample_cpu = time.process_time() - c0
        transform = LogMel(settings)
        c0 = time.process_time()
        for w in resampled:
            transform(w)
        mel_cpu = time.process_time() - c0
    return {"audio_hours": round(hours, 4), "clips": len(waves), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "hours_per_cpu_minute": round(hours / (cpu / 60), 2), "resample_share": round(resample_cpu / cpu, 3),
            "log_mel_share": round(mel_cpu / cpu, 3)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="audio-mini")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256, help="log-mel frames per crop (10 ms each)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of audio for the feature extraction")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    step = bench_step(a.model, a.batch_size, a.seq_len, a.steps, a.precision)
    features = bench_features(a.minutes)
    result = {"machine": platform.processor() or platform.machine(), "threads": a.threads, "step": step,
              "features": features}
    print(f"pretraining step ({step['model']}, {step['params_m']}M, batch {step['batch']} x {step['seq_len']} frames, "
          f"{step['precision']}): transferlab {step['transferlab_frames_per_s']:,} frames/s, plain PyTorch "
          f"{step['plain_frames_per_s']:,} frames/s (ratio {step['ratio']}); building a batch {step['batch_build_ms']} "
          f"ms")
    print(f"feature extraction: {features['audio_hours']:.3f} h of 22,050 Hz WAV in {features['cpu_s']} CPU-s = "
          f"{features['hours_per_cpu_minute']} h of audio per CPU-minute (resampling {features['resample_share']:.0%}, "
          f"log-mel {features['log_mel_share']:.0%} of it)")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
