"""Audio end to end on tiny synthetic 'spoken words' (no espeak-ng: the clips are made here): self-supervised
pretraining from the CLI (masked frames and APC), head swap to an utterance classifier, fine-tuning with a test
split, evaluate/predict, the Keras-style model on waveforms, an audio compare grid, bad input and mixed modalities,
and the benchmark's smoke test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

import transferlab
from transferlab.cli import main
from transferlab.training.checkpoint import load_weights

SR = 16000
MEL = "sample_rate=8000,window=200,hop=80,n_mels=40"  # 8 kHz, 25 ms / 10 ms, 40 bins: cheap for tests
WORDS = {"ba": (300.0, 900.0), "di": (900.0, 300.0), "gu": (500.0, 1800.0)}  # a word = two 'syllables' (pitches)


def word(name: str, rng: np.random.Generator) -> np.ndarray:
    """One utterance: two harmonic syllables at the word's pitches (speaker-jittered), a pause, noise."""
    parts = []
    for f in WORDS[name]:
        n = int(SR * rng.uniform(0.15, 0.25))
        t = np.arange(n) / SR
        f = f * rng.uniform(0.9, 1.1)
        parts.append((np.sin(2 * np.pi * f * t) + 0.4 * np.sin(4 * np.pi * f * t)) * np.hanning(n))
    x = np.concatenate([np.zeros(int(SR * 0.05)), *parts, np.zeros(int(SR * 0.05))])
    return (0.3 * x / np.abs(x).max() + 0.005 * rng.standard_normal(len(x))).astype(np.float32)


def write(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, SR, np.round(x * 32767).astype(np.int16))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("speech")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("dev", 4), ("test", 4)):
        for name in WORDS:
            for i in range(n):
                write(root / "words" / split / name / f"{i}.wav", word(name, rng))
    for i in range(24):  # unlabeled: sentences of four words
        write(root / "unlabeled" / f"{i}.wav", np.concatenate([word(str(rng.choice(list(WORDS))), rng)
                                                               for _ in range(4)]))
    return root


@pytest.fixture(scope="module")
def masked_ckpt(speech, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "masked"
    assert main(["pretrain", "--objective", "masked-frames", "--data", str(speech / "unlabeled"), "--model",
                 "audio-tiny", "--mel", MEL, "--steps", "4", "--batch-size", "4", "--seq-len", "64",
                 "--eval-batches", "1", "--out", str(out), "--quiet"]) == 0
    return out / "final"


def test_pretraining_records_its_inputs_and_counts_frames(masked_ckpt):
    config = json.loads((masked_ckpt / "config.json").read_text())
    assert config["task"] == {"kind": "masked-frames"}
    assert config["backbone"]["family"] == "audio_transformer" and config["backbone"]["n_mels"] == 40
    inputs = config["inputs"]
    assert inputs["modality"] == "audio" and inputs["settings"]["sample_rate"] == 8000
    assert len(inputs["mean"]) == 40 and all(s > 0 for s in inputs["std"])
    assert config["pretraining"]["mel"]["n_mels"] == 40 and config["pretraining"]["noise"] == {}
    rows = [json.loads(line) for line in (masked_ckpt.parent / "metrics.jsonl").read_text().splitlines()]
    assert any("frames_per_s" in r for r in rows if r["split"] == "train")
    assert any(r["split"] == "eval" and r["loss"] > 0 for r in rows)


def test_apc_keeps_its_causal_backbone_and_shift(speech, tmp_path):
    from transferlab.tasks.factory import load_model

    out = tmp_path / "apc"
    assert main(["pretrain", "--objective", "apc", "--data", str(speech / "unlabeled"), "--model", "audio-tiny",
                 "--mel", MEL, "--noise", "shift=2", "--steps", "3", "--batch-size", "4", "--seq-len", "64",
                 "--out", str(out), "--quiet"]) == 0
    module, inputs, config = load_model(out / "final")
    assert module.kind == "apc" and module.shift == 2 and module.backbone.config.causal
    assert inputs.settings.n_mels == 40
    model = transferlab.from_pretrained(out / "final", num_labels=3, verbose=False)
    assert model.module.backbone.config.causal, "fine-tuning keeps the attention pattern it was pretrained with"


def test_finetune_swaps_the_head_and_reports_test_metrics(masked_ckpt, speech, tmp_path, capsys):
    out = tmp_path / "ft"
    words = speech / "words"
    assert main(["finetune", "--init", str(masked_ckpt), "--train", str(words / "train"), "--dev", str(words / "dev"),
                 "--test", str(words / "test"), "--epochs", "3", "--batch-size", "8", "--lr", "3e-3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "dropped (pretraining head): heads.frames.bias, heads.frames.weight" in printed.err
    assert "test: loss=" in printed.out
    results = json.loads((out / "results.json").read_text())
    assert results["train_examples"] == 24 and results["test_examples"] == 12
    assert set(results["test"]) == {"loss", "accuracy"}
    saved = load_weights(out / "final")
    assert "heads.classifier.out.weight" in saved and saved["heads.classifier.out.weight"].shape == (3, 64)
    assert main(["evaluate", "--model", str(out / "final"), "--data", str(words)]) == 0  # the test split
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(results["test"]["accuracy"])
    assert main(["predict", "--model", str(out / "final"), "--data", str(words / "dev")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "line\tprediction" and len(lines) == 13 and {ln.split("\t")[1] for ln in lines[1:]} <= set(WORDS)


def test_keras_style_model_on_waveforms_learns_the_words(masked_ckpt):
    rng = np.random.default_rng(1)
    names = sorted(WORDS)
    y = np.arange(60) % 3
    x = [word(names[k], rng) for k in y]
    model = transferlab.from_pretrained(masked_ckpt, num_labels=3, label_names=names, verbose=False)
    scratch = transferlab.from_pretrained(masked_ckpt, num_labels=3, label_names=names, init="scratch", verbose=False)
    assert not torch.equal(model.module.backbone.conv1.weight, scratch.module.backbone.conv1.weight)
    model.compile(lr=3e-3)
    history = model.fit(x[:45], y[:45], validation_data=(x[45:], y[45:]), epochs=6, batch_size=8, verbose=False)
    assert history.history["loss"][-1] < history.history["loss"][0]
    probs = model.predict(x[45:], return_probs=True)
    assert probs.shape == (15, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # a waveform in memory is taken at the model's rate (8 kHz here) unless AudioSet.from_waveforms is told another
    assert model.predict([word("ba", rng)[::2]], batch_size=1).shape == (1,)


def test_audio_compare_grid_runs_in_seconds(masked_ckpt, speech, tmp_path):
    from transferlab.experiments.compare import run_compare

    words = speech / "words"
    spec = {"name": "words", "checkpoints": [str(masked_ckpt)],
            "task": {"train": str(words / "train"), "dev": str(words / "dev"), "test": str(words / "test")},
            "methods": ["scratch", "finetune", "linear-probe", "pipeline"], "budgets": [6, "all"], "seeds": 2,
            "train": {"epochs": 2, "batch_size": 8}}
    result = run_compare(spec, tmp_path / "grid", progress=False)
    rows = result["rows"]
    assert len(rows) == 2 * 2 * 4 and all("test" in r for r in rows)
    assert all(0 <= r["test"]["accuracy"] <= 1 for r in rows)
    assert {r["train_examples"] for r in rows} == {6, 24}
    report = (tmp_path / "grid" / "report.md").read_text()
    assert "MFCC pipeline" in report and "Test accuracy of the best dev epoch's weights" in report
    pipeline = [r for r in rows if r["kind"] == "pipeline"]
    assert pipeline[0]["trained_params"] == 3 * 52 + 3
    again = run_compare(spec, tmp_path / "grid", progress=False)
    assert again["ran"] == 0


def test_worker_processes_give_the_rows_of_the_in_process_audio_grid(masked_ckpt, speech, tmp_path):
    # A worker re-reads the splits from the spec's paths with the checkpoint's mel settings (8 kHz, 40 bins here):
    # the same rows as in one process, to the last digit.
    from transferlab.experiments.compare import run_compare
    from transferlab.experiments.executors import ExecutorConfig

    words = speech / "words"
    spec = {"name": "words", "checkpoints": [str(masked_ckpt)],
            "task": {"train": str(words / "train"), "dev": str(words / "dev"), "test": str(words / "test")},
            "methods": ["finetune", "pipeline"], "budgets": [6], "seeds": 2, "train": {"epochs": 1, "batch_size": 8}}
    rows = {}
    for workers in (1, 2):
        result = run_compare(spec, tmp_path / f"w{workers}", progress=False,
                             executor=ExecutorConfig(workers=workers, threads=1))
        rows[workers] = [{k: v for k, v in r.items() if k != "wall_s"} for r in result["rows"]]
    assert len(rows[1]) == 4 and rows[2] == rows[1]


def test_bad_audio_stops_the_run_before_anything_is_written(speech, tmp_path, capsys):
    bad = tmp_path / "bad"
    for i in range(3):
        write(bad / f"{i}.wav", word("ba", np.random.default_rng(i)))
    (bad / "2.wav").write_bytes((bad / "2.wav").read_bytes()[:3000])  # a copy cut short
    assert main(["pretrain", "--objective", "masked-frames", "--data", str(bad), "--out", str(tmp_path / "r"),
                 "--model", "audio-tiny", "--steps", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "2.wav" in err and "Reached EOF prematurely" in err and not (tmp_path / "r").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pretrain", "--objective", "apc", "--data", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "found no audio" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_mixing_modalities_is_refused_with_the_fix(masked_ckpt, pretrained_dir, labeled_files, speech, tmp_path,
                                                   capsys):
    train, _ = labeled_files
    words = speech / "words" / "train"
    assert main(["finetune", "--init", str(pretrained_dir), "--train", str(words), "--out", str(tmp_path / "a"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds audio data, but the checkpoint is a text model" in err and "pretrain an audio model" in err
    assert main(["finetune", "--init", str(masked_ckpt), "--train", str(train), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 2
    assert "holds text data, but the checkpoint is a audio model" in capsys.readouterr().err
    assert main(["pretrain", "--objective", "mlm", "--corpus", "x", "--mel", "n_mels=40", "--out",
                 str(tmp_path / "c")]) == 2
    assert "--mel sets how audio becomes log-mel features" in capsys.readouterr().err
    assert main(["pretrain", "--objective", "apc", "--data", str(speech / "unlabeled"), "--image-size", "28",
                 "--out", str(tmp_path / "d")]) == 2
    assert "--image-size do not apply to --objective apc" in capsys.readouterr().err
    assert main(["pretrain", "--objective", "apc", "--data", str(speech / "unlabeled"), "--noise", "span=2",
                 "--out", str(tmp_path / "e")]) == 2
    assert "apc has no setting span; it takes shift" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_benchmark_smoke():
    spec = importlib.util.spec_from_file_location("audio_bench", Path(__file__).parents[1] / "benchmarks" / "audio.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    step = bench.bench_step("audio-tiny", batch_size=4, seq_len=32, steps=2, precision="fp32")
    assert step["transferlab_frames_per_s"] > 0 and step["plain_frames_per_s"] > 0
    assert len(step["plain_losses"]) == 2 + bench.WARMUP and all(np.isfinite(step["plain_losses"]))
    features = bench.bench_features(minutes=0.1)
    assert features["hours_per_cpu_minute"] > 0 and features["clips"] >= 1
