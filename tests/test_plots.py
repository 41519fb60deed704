import json

import pytest

from transferlab.errors import UserError
from transferlab.experiments.plots import plot_mean_std, plot_runs, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir, n_steps=200, slope=1.0, truncated=False):
    run_dir.mkdir(parents=True)
    lines = []
    for step in range(10, n_steps + 1, 10):
        lines.append({"step": step, "split": "train", "time": step * 0.2, "epoch": step / 100,
                      "loss": 6.0 / (1 + slope * step / 50), "lr": 5e-4, "tokens_per_s": 8000.0})
        if step % 50 == 0:
            loss = 6.2 / (1 + slope * step / 50)
            lines.append({"step": step, "split": "eval", "time": step * 0.2, "epoch": step / 100, "loss": loss,
                          "ppl": 2.718 ** loss, "accuracy": 0.5 + 0.4 * step / n_steps * slope / 2})
    text = "".join(json.dumps(r) + "\n" for r in lines)
    if truncated:
        text += '{"step": 210, "split": "tra'  # a crash mid-write
    (run_dir / "metrics.jsonl").write_text(text, encoding="utf-8")
    return run_dir


def assert_png(path, min_bytes=10_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    assert not list(path.parent.glob(f".{path.name}.tmp-*")), "no temporary file left behind"


def test_read_metrics_skips_truncated_line(tmp_path):
    run = write_run(tmp_path / "run", truncated=True)
    with pytest.warns(UserWarning, match="skipped 1 line"):
        rows = read_metrics(run)
    assert len(rows) == 24 and rows[-1]["step"] == 200
    with pytest.warns(UserWarning):
        assert read_metrics(run / "metrics.jsonl") == rows


def test_read_metrics_missing_file_names_the_path(tmp_path):
    with pytest.raises(UserError, match="nope.metrics.jsonl"):
        read_metrics(tmp_path / "nope")


def test_plot_runs(tmp_path):
    a = write_run(tmp_path / "mlm-tiny", slope=1.0, truncated=True)
    b = write_run(tmp_path / "mlm-mini", slope=2.0)
    with pytest.warns(UserWarning):
        out = plot_runs([a, b], tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png"
    assert_png(out)
    assert_png(plot_runs([b], tmp_path / "epoch.png", metrics=["accuracy", "tokens_per_s"], x="epoch"))


def test_plot_runs_user_errors(tmp_path):
    a = write_run(tmp_path / "a")
    with pytest.raises(UserError, match="metrics.jsonl"):
        plot_runs([a, tmp_path / "missing"], tmp_path / "x.png")
    with pytest.raises(UserError, match="bleu"):
        plot_runs([a], tmp_path / "x.png", metrics=["bleu"])
    with pytest.raises(UserError, match="x='tokens'"):
        plot_runs([a], tmp_path / "x.png", x="tokens")
    assert not (tmp_path / "x.png").exists()


def test_plot_runs_same_dir_names_are_disambiguated(tmp_path):
    a = write_run(tmp_path / "one" / "final")
    b = write_run(tmp_path / "two" / "final")
    assert_png(plot_runs([a, b], tmp_path / "p.png", metrics=["loss"]), min_bytes=5_000)


def test_plot_mean_std(tmp_path):
    curves = {"scratch": [[0.5, 0.52, 0.49, 0.51], [0.48, 0.5, 0.53, 0.5], [0.51, 0.49, 0.5, 0.52]],
              "pretrained": [[0.6, 0.75, 0.82, 0.85], [0.58, 0.7, 0.8, 0.86], [0.62, 0.78, 0.84, 0.84]]}
    out = plot_mean_std(curves, tmp_path / "mean_std.png", xlabel="epoch", ylabel="dev accuracy",
                        title="pretrained vs scratch", baseline=0.5)
    assert_png(out)
    # Unequal lengths (early stopping) and a single seed still plot.
    ragged = {"a": [[0.5, 0.6, 0.7], [0.5, 0.65]], "b": [[0.4, 0.45]]}
    assert_png(plot_mean_std(ragged, tmp_path / "ragged.png", "epoch", "acc", "ragged", xs=[1, 2, 3]),
               min_bytes=5_000)
    with pytest.raises(ValueError):
        plot_mean_std({"a": [[0.1, 0.2, 0.3]]}, tmp_path / "bad.png", "x", "y", "t", xs=[1, 2])
