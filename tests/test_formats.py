"""The data people have (issue 21): headerless files from every command and spec, the classic small-data formats by
an explicit option (TREC / fastText lines, one file per class), encodings reported rather than mangled, cheaper
evaluation in compare grids, and the floor a reader needs (the best constant answer on the evaluated split)."""

from __future__ import annotations

import json

import pytest

from conftest import sentences
from transferlab.cli import main
from transferlab.data.labeled import class_names_from_files, read_labeled
from transferlab.errors import UserError

ANIMALS = {"cat", "dog", "bird"}


def run(*args) -> int:
    return main([str(a) for a in args])


def _label(s: str) -> str:
    return "2" if ANIMALS & set(s.split()) else "1"


def test_a_headerless_csv_from_finetune_evaluate_and_predict(pretrained_dir, tmp_path, capsys):
    """AG News ships as "class","title","description" rows without a header row."""
    train, dev = tmp_path / "train.csv", tmp_path / "test.csv"
    for path, seed, n in ((train, 1, 80), (dev, 2, 20)):
        path.write_text("".join(f'"{_label(s)}","{s[:12]}","{s}"\n' for s in sentences(n, seed)))
    assert run("finetune", "--init", pretrained_dir, "--train", train, "--out", tmp_path / "x", "--quiet") == 2
    err = capsys.readouterr().err
    assert "--no-header" in err and "header=False" not in err, "the hint names the option the command has"
    columns = ["--no-header", "--text-cols", "2", "--label-col", "0"]
    assert run("finetune", "--init", pretrained_dir, "--train", train, "--dev", dev, "--out", tmp_path / "ft",
               "--epochs", 1, "--max-len", 32, "--quiet", *columns) == 0
    assert json.loads((tmp_path / "ft" / "final" / "config.json").read_text())["label_names"] == ["1", "2"]
    capsys.readouterr()
    assert run("evaluate", "--model", tmp_path / "ft" / "final", "--data", dev, *columns) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1
    assert run("predict", "--model", tmp_path / "ft" / "final", "--data", dev, "--out", tmp_path / "p.tsv",
               *columns) == 0
    assert len((tmp_path / "p.tsv").read_text().splitlines()) == 21


def test_a_headerless_file_in_a_compare_spec(pretrained_dir, tmp_path):
    from transferlab.experiments.compare import CompareSpec

    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    for path, seed, n in ((train, 1, 60), (dev, 2, 20)):
        path.write_text("".join(f"gj04\t{_label(s)}\t\t{s}\n" for s in sentences(n, seed)))  # CoLA's layout
    spec = {"checkpoints": [str(pretrained_dir)], "methods": ["finetune"], "budgets": [20], "seeds": 1,
            "task": {"train": str(train), "dev": str(dev), "header": False, "text_cols": [3], "label_col": 1}}
    parsed = CompareSpec.parse(spec)
    assert len(parsed.train_set) == 60 and parsed.task["header"] is False and parsed.train_set.label_names == ["1", "2"]
    spec["task"]["label_col"] = 7
    with pytest.raises(UserError, match=r"task: .*no column '7'.*Pass task\.label_col"):
        CompareSpec.parse(spec)
    del spec["task"]["header"]
    spec["task"]["label_col"] = 1
    with pytest.raises(UserError, match=r"`header: false` under task"):
        CompareSpec.parse(spec)


def test_trec_and_fasttext_lines_by_an_explicit_format(tmp_path):
    trec = tmp_path / "train_5500.label"
    trec.write_bytes(b"DESC:manner How did serfdom develop in and then leave Russia ?\n"
                     b"ENTY:cremat What films featured the character Popeye Doyle ?\n"
                     b"DESC:def What is ethology ?\n")
    with pytest.raises(UserError, match=r"unsupported extension '\.label'.*--format.*label-space"):
        read_labeled(trec)
    fine = read_labeled(trec, format="label-space")
    assert fine.label_names == ["DESC:def", "DESC:manner", "ENTY:cremat"] and fine.texts_a[2] == "What is ethology ?"
    coarse = read_labeled(trec, format="label-space", coarse_labels=True)
    assert coarse.label_names == ["DESC", "ENTY"] and coarse.labels == [0, 1, 0]
    assert coarse.texts_a[0] == "How did serfdom develop in and then leave Russia ?", "no label left in the text"
    fasttext = tmp_path / "reviews.txt"
    fasttext.write_text("__label__pos great film\n__label__neg dull\n__label__neg __label__pos mixed\n")
    with pytest.raises(UserError, match=r":3: several labels on one line"):
        read_labeled(fasttext, format="label-space")
    assert read_labeled(fasttext, format="label-space", skip_bad_rows=True).label_names == ["neg", "pos"]
    colon = tmp_path / "c.txt"
    colon.write_text("positive:a fine day\nnegative:rain: again\n")
    assert read_labeled(colon, format="label-colon").texts_a == ["a fine day", "rain: again"]


def test_one_file_per_class_in_the_encoding_it_ships_in(pretrained_dir, tmp_path, capsys):
    mr = tmp_path / "rt-polaritydata"
    mr.mkdir()
    (mr / "rt-polarity.pos").write_bytes("a charming , caf\u00e9 film \u2026 truly\n".encode("cp1252") * 3 +
                                         b"the cat sat and it was happy\n" * 20)
    (mr / "rt-polarity.neg").write_bytes(b"the dog ran and it was sad\n" * 23)
    with pytest.raises(UserError, match=r"not valid UTF-8 \(byte 0xe9.*--encoding cp1252"):
        read_labeled(mr, format="files-per-class")
    data = read_labeled(mr, format="files-per-class", encoding="cp1252")
    assert data.label_names == ["neg", "pos"] and len(data) == 46
    assert data.texts_a.count("a charming , caf\u00e9 film \u2026 truly") == 3, "0x85 is cp1252's ellipsis"
    assert any("one class per file: 'neg' from rt-polarity.neg (23 lines)" in n for n in data.notes)
    assert any("read as cp1252: 3 line(s) hold non-ASCII characters" in n for n in data.notes)
    latin = read_labeled(mr, format="files-per-class", encoding="latin-1")
    assert any("U+0085" in n and "--encoding cp1252" in n for n in latin.notes), latin.notes
    assert run("finetune", "--init", pretrained_dir, "--train", mr, "--format", "files-per-class", "--encoding",
               "cp1252", "--out", tmp_path / "ft", "--epochs", 1, "--max-len", 16, "--quiet") == 0
    assert "one class per file" in capsys.readouterr().err


def test_class_names_come_from_what_the_file_names_do_not_share():
    assert class_names_from_files(["rt-polarity.neg", "rt-polarity.pos"]) == ["neg", "pos"]
    assert class_names_from_files(["plot.tok.gt9.5000", "quote.tok.gt9.5000"]) == ["plot", "quote"]
    assert class_names_from_files(["negative.txt", "positive.txt"]) == ["negative", "positive"]
    assert class_names_from_files(["pos", "neg"]) == ["pos", "neg"]


def test_a_line_break_character_inside_a_line_stays_text(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("sentence\tlabel\nfirst half\u0085second half\t1\nplain\t0\n", encoding="utf-8")
    data = read_labeled(path)
    assert data.texts_a[0] == "first half\u0085second half" and len(data) == 2
    assert any("U+0085 on line 2" in n and "stays inside its example" in n for n in data.notes)


def test_compare_evaluates_less_often_and_on_a_seeded_sample(pretrained_dir, labeled_files, tmp_path):
    from transferlab.experiments.compare import CompareSpec, run_one

    train, dev = labeled_files
    spec = {"checkpoints": [str(pretrained_dir)], "methods": ["finetune"], "budgets": [32], "seeds": 1,
            "task": {"train": str(train), "dev": str(dev)},
            "train": {"epochs": 4, "batch_size": 16, "max_len": 32, "eval_every_epochs": 2, "eval_sample": 20}}
    parsed = CompareSpec.parse(spec)
    row = run_one(parsed, parsed.plan()[0])
    assert [e["epoch"] for e in row["epochs"]] == [2, 4], "every second epoch"
    assert [e["dev_examples"] for e in row["epochs"]] == [20, 60], "a sample, then every example at the end"
    assert row["final"]["dev_examples"] == 60


def test_the_floor_is_the_best_constant_answer_on_the_evaluated_split():
    from transferlab.experiments import report

    # TREC's coarse classes: ENTY is the most frequent training label, DESC the most frequent on the test set.
    setup = {"name": "trec", "task": {"metric": "accuracy"}, "checkpoints": [], "seeds": [0], "budgets": ["all"],
             "budget_sizes": {"all": 5452},
             "class_counts": {"ABBR": 86, "DESC": 1162, "ENTY": 1250, "HUM": 1223, "LOC": 835, "NUM": 896},
             "dev_class_counts": {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65, "LOC": 81, "NUM": 113}}
    floor = report.constant_floor(setup)
    assert floor["label"] == "DESC" and floor["score"] == pytest.approx(138 / 500)
    assert floor["train_label"] == "ENTY" and floor["train_score"] == pytest.approx(94 / 500)
    rows = [{"checkpoint": "m", "method": "finetune", "kind": "finetune", "budget": "all", "budget_size": 5452,
             "seed": 0, "arch": "a", "final": {"accuracy": 0.25}, "best": {"accuracy": 0.25},
             "epochs": [{"accuracy": 0.25}], "trained_params": 1, "wall_s": 1.0}]
    text = report.conclusions(report.summarize(rows, setup), setup)
    assert text[0].startswith("The best constant answer on dev is 'DESC', which scores 0.276 accuracy (every "
                              "single-label answer was scored against the dev labels); always answering the most "
                              "frequent training label ('ENTY') would score only 0.188")
    assert "finetune does not beat the best constant answer (0.276)." in text[1]
    macro = dict(setup, task={"metric": "balanced_accuracy"})
    assert report.constant_floor(macro)["score"] == pytest.approx(1 / 6), "any constant answer: 1/k"
