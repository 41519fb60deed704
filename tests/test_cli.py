"""CLI smoke tests on the tiny preset: files written, metrics logged, resume, clear errors."""

import json
import subprocess
import sys

import pytest

from transferlab.cli import main


def run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, corpus_text, labeled_files):
    d = tmp_path_factory.mktemp("cli")
    assert run("tokenizer", "train", "--input", corpus_text, "--vocab-size", 120, "--out", d / "tok", "--quiet") == 0
    assert run("corpus", "prepare", "--input", corpus_text, "--tokenizer", d / "tok", "--out", d / "corpus",
               "--heldout-fraction", 0.05, "--quiet") == 0
    assert run("pretrain", "--corpus", d / "corpus", "--objective", "mlm", "--model", "tiny", "--steps", 6,
               "--seq-len", 32, "--batch-size", 8, "--save-every", 3, "--out", d / "run", "--quiet") == 0
    return d


def test_pretrain_writes_checkpoints_and_metrics(workspace):
    run_dir = workspace / "run"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (run_dir / "final" / name).is_file()
    assert (run_dir / "step-0000006" / "trainer_state" / "optimizer.pt").is_file()
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    assert evals and all("ppl" in r and r["ppl"] > 1 for r in evals)
    trains = [r for r in rows if r["split"] == "train"]
    assert all({"loss", "lr", "tokens_per_s"} <= r.keys() for r in trains)
    config = json.loads((run_dir / "final" / "config.json").read_text())
    assert config["task"]["kind"] == "mlm" and config["backbone"]["n_layer"] == 2


def test_pretrain_resume_auto_continues(workspace, capsys):
    assert run("pretrain", "--corpus", workspace / "corpus", "--objective", "mlm", "--model", "tiny", "--steps", 9,
               "--seq-len", 32, "--batch-size", 8, "--save-every", 3, "--out", workspace / "run", "--quiet",
               "--resume", "auto") == 0
    assert "resumed from" in capsys.readouterr().err
    rows = [json.loads(l) for l in (workspace / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 9


def test_a_run_from_before_rotary_positions_resumes_only_as_learned(workspace, capsys, tmp_path):
    """run.json written before --position existed means learned positions: resuming it with the new default is
    refused with the setting to pass, and --position learned resumes it."""
    args = ["pretrain", "--corpus", workspace / "corpus", "--steps", 4, "--seq-len", 32, "--batch-size", 4,
            "--save-every", 2, "--out", tmp_path / "old", "--quiet", "--resume", "auto"]
    assert run(*args[:-2], "--steps", 2, "--position", "learned") == 0  # the later --steps wins
    saved = json.loads((tmp_path / "old" / "run.json").read_text())
    del saved["position"], saved["init"]
    (tmp_path / "old" / "run.json").write_text(json.dumps(saved))
    assert run(*args) == 2
    assert "position='learned'" in capsys.readouterr().err
    assert run(*args, "--position", "learned") == 0


def test_clm_pretraining(workspace):
    assert run("pretrain", "--corpus", workspace / "corpus", "--objective", "clm", "--steps", 3, "--seq-len", 32,
               "--batch-size", 4, "--out", workspace / "gpt", "--quiet") == 0
    config = json.loads((workspace / "gpt" / "final" / "config.json").read_text())
    assert config["backbone"]["family"] == "decoder"


def test_continued_pretraining_starts_from_the_checkpoint(workspace, corpus_text, capsys, tmp_path):
    """--init: the checkpoint's architecture and weights (heads of the same objective included) start the run;
    another objective keeps the backbone and gets fresh heads; a wrong family or tokenizer is refused up front."""
    from transferlab.training.checkpoint import load_weights

    src = workspace / "run" / "final"
    common = ["--corpus", workspace / "corpus", "--init", src, "--steps", 1, "--seq-len", 32, "--batch-size", 8,
              "--quiet"]
    assert run("pretrain", *common, "--model", "mini", "--lr", 1e-9, "--out", tmp_path / "more") == 0
    assert "fresh heads" not in capsys.readouterr().err
    before, after = load_weights(src), load_weights(tmp_path / "more" / "final")
    assert before.keys() == after.keys(), "the checkpoint's tiny architecture, not --model mini"
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-6, "one step at lr 1e-9 from it"
    assert run("pretrain", *common, "--objective", "electra", "--out", tmp_path / "electra") == 0
    assert "fresh heads: discriminator, generator" in capsys.readouterr().err

    assert run("pretrain", *common, "--objective", "clm", "--out", tmp_path / "clm") == 2
    assert "holds a 'encoder' backbone, but --objective clm trains a 'decoder' one" in capsys.readouterr().err
    assert run("tokenizer", "train", "--input", corpus_text, "--vocab-size", 100, "--out", tmp_path / "tok",
               "--quiet") == 0
    assert run("corpus", "prepare", "--input", corpus_text, "--tokenizer", tmp_path / "tok", "--out",
               tmp_path / "corpus", "--quiet") == 0
    assert run("pretrain", *common[2:], "--corpus", tmp_path / "corpus", "--out", tmp_path / "other") == 2
    assert "different tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "clm").exists() and not (tmp_path / "other").exists()


def test_finetune_evaluate_predict(workspace, labeled_files, capsys):
    train, dev = labeled_files
    for init in ("pretrained", "scratch"):
        args = ["finetune", "--train", train, "--dev", dev, "--epochs", 2, "--batch-size", 16, "--lr", 1e-3,
                "--out", workspace / f"ft-{init}", "--quiet"]
        args += ["--init", workspace / "run" / "final"] if init == "pretrained" else \
            ["--init", "scratch", "--like", workspace / "run" / "final"]
        assert run(*args) == 0
        results = json.loads((workspace / f"ft-{init}" / "results.json").read_text())
        assert results["init"] == init and 0 <= results["final"]["accuracy"] <= 1
    capsys.readouterr()
    assert run("evaluate", "--model", workspace / "ft-pretrained" / "final", "--data", dev) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "accuracy", "f1"}
    out = workspace / "preds.tsv"
    assert run("predict", "--model", workspace / "ft-pretrained" / "final", "--data", dev, "--out", out) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "line\tprediction" and len(lines) == 61 and lines[1].split("\t")[1] in ("neg", "pos")


def test_plot(workspace):
    assert run("plot", workspace / "run", workspace / "gpt", "--out", workspace / "curves.png") == 0
    assert (workspace / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,needle", [
    (["pretrain", "--corpus", "/nonexistent", "--out", "x"], "corpus prepare"),
    (["finetune", "--init", "/nonexistent", "--train", "/nonexistent.tsv", "--out", "x"], "/nonexistent"),
])
def test_errors_are_one_paragraph_and_exit_2(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


def test_unknown_preset_and_existing_output(workspace, capsys):
    assert run("pretrain", "--corpus", workspace / "corpus", "--model", "huge", "--out", workspace / "x") == 2
    assert "unknown model preset 'huge'" in capsys.readouterr().err
    assert run("pretrain", "--corpus", workspace / "corpus", "--out", workspace / "run", "--steps", 2) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert not (workspace / "x").exists(), "nothing half-written"


def test_bad_label_column_names_file_and_option(workspace, labeled_files, capsys):
    train, _ = labeled_files
    code = run("finetune", "--init", workspace / "run" / "final", "--train", train, "--label-col", "nope",
               "--out", workspace / "ft-bad", "--quiet")
    err = capsys.readouterr().err
    assert code == 2 and str(train) in err and "--label-col" in err
    assert not (workspace / "ft-bad").exists()


def test_module_entry_point_exits_nonzero_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "transferlab", "pretrain", "--corpus", str(tmp_path), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "corpus prepare" in proc.stderr
