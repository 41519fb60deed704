"""Settings declared once (issue 21): one validation from Python, the command line and compare specs; --help shows
every default; a failed start leaves the output as it was; every interrupt message's command works; nothing wrong
passes silently; messages point at the real cause."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from transferlab.cli import build_parser, main
from transferlab.errors import Terminated, UserError


def run(*args) -> int:
    return main([str(a) for a in args])


def snapshot(path: Path) -> dict:
    """Every file under ``path`` with its bytes (None when ``path`` does not exist)."""
    if not path.exists():
        return None
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}


def rerun(err: str) -> int:
    """Run the command an interrupt message printed (between backticks)."""
    found = re.search(r"`(transferlab [^`]+)`", err)
    assert found, err
    args = shlex.split(found.group(1))
    assert args[0] == "transferlab"
    return main(args[1:])


def pretrain_args(corpus, out, steps=6):
    return ["pretrain", "--corpus", corpus, "--out", out, "--steps", steps, "--seq-len", 32, "--batch-size", 8,
            "--eval-batches", 1, "--quiet"]


# ----------------------------------------------------------------------------------- declared once, validated once


@pytest.mark.parametrize("field,value,cli_value,needle", [
    ("steps", -5, "-5", "--steps must be at least 1, got -5"),
    ("lr", 0.0, "0", "--lr must be above 0"),
    ("lr", float("nan"), "nan", "is not a finite number"),
    ("warmup", 1.5, "1.5", "--warmup must be a whole number from 1 on"),
    ("grad_accum", 0, "0", "--grad-accum must be at least 1"),
    ("eval_every", 0, "0", "--eval-every must be at least 1"),
    ("save_every", -1, "-1", "--save-every must be at least 1"),
    ("log_every", 0, "0", "--log-every must be at least 1"),
    ("mask_prob", 1.5, "1.5", "--mask-prob must be in (0, 1), got 1.5"),
    ("seq_len", 4, "4", "--seq-len must be at least 8"),
    ("dropout", 1.0, "1", "--dropout must be in [0, 1), got 1"),
    ("device", "cuda:7", "cuda:7", "--device 'cuda:7' is not available"),
])
def test_a_bad_pretraining_value_is_the_same_error_from_python_and_the_cli(field, value, cli_value, needle, tmp_path,
                                                                           capsys):
    from transferlab.recipes.pretrain import PretrainConfig

    if field == "device":
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    with pytest.raises(UserError) as python:
        PretrainConfig(corpus="c", out=str(tmp_path / "run"), **{field: value})
    assert needle in str(python.value)
    out = tmp_path / "run"
    flag = "--" + field.replace("_", "-")
    code = None
    try:
        code = run("pretrain", "--corpus", "c", "--out", out, flag, cli_value)
    except SystemExit as e:  # a value argparse itself cannot read (not a number): its usual exit
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert not out.exists(), "a refused start writes nothing"


@pytest.mark.parametrize("args,needle", [
    (["--epochs", "0"], "--epochs must be above 0"),
    (["--batch-size", "10", "--grad-accum", "3"], "--batch-size must be divisible by --grad-accum 3"),
    (["--max-len", "1"], "--max-len must be at least 2"),
    (["--lora-rank", "0"], "--lora-rank must be at least 1"),
    (["--eval-sample", "0"], "--eval-sample must be at least 1"),
    (["--encoding", "klingon"], "--encoding 'klingon' is not an encoding"),
])
def test_bad_fine_tuning_values_exit_2_naming_the_option_and_leave_out_unchanged(args, needle, pretrained_dir,
                                                                                labeled_files, tmp_path, capsys):
    train, dev = labeled_files
    out = tmp_path / "ft"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier run")
    before = snapshot(out)
    assert run("finetune", "--init", pretrained_dir, "--train", train, "--out", out, "--quiet", "--overwrite",
               *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err, err
    assert snapshot(out) == before


def test_choices_and_types_are_refused_by_the_parser(capsys):
    for args, needle in ((["--schedule", "warp"], "unknown --schedule 'warp'; choose linear, cosine"),
                         (["--precision", "fp8"], "unknown --precision 'fp8'"),
                         (["--steps", "ten"], "--steps 'ten' is not a whole number")):
        with pytest.raises(SystemExit) as exit_:
            run("pretrain", "--corpus", "c", "--out", "o", *args)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: transferlab pretrain: ") and needle in err and "usage:" not in err, err


def test_the_cli_builds_the_same_config_python_does(tmp_path):
    from transferlab.cli_args import settings_from
    from transferlab.recipes.settings import FinetuneConfig, PretrainConfig

    args = build_parser().parse_args(["pretrain", "--corpus", "c", "--out", "o", "--steps", "7", "--lr", "1e-4",
                                      "--noise", "infill=0.3", "--image-size", "28", "--quiet"])
    assert settings_from(PretrainConfig, args) == PretrainConfig(corpus="c", out="o", steps=7, lr=1e-4,
                                                                 noise={"infill": 0.3}, image_size=(28, 28),
                                                                 progress=False)
    args = build_parser().parse_args(["finetune", "--init", "i", "--train", "t", "--out", "o", "--no-header",
                                      "--text-cols", "1,2", "--label-col", "0"])
    cfg = settings_from(FinetuneConfig, args)
    # lr None: chosen from the model's width once the model is known
    assert (cfg.header, cfg.text_cols, cfg.label_col, cfg.lr, cfg.epochs) == (False, ["1", "2"], "0", None, 3)


def test_a_recipe_changes_a_default_without_restating_the_field():
    from transferlab.options import field_of
    from transferlab.recipes.settings import PretrainConfig, Seq2SeqConfig
    from transferlab.training.settings import FinetuneSettings, TrainSettings

    for cls, name, default in ((PretrainConfig, "save_every", 1000), (PretrainConfig, "steps", 1000),
                               (FinetuneSettings, "warmup", 0.1), (Seq2SeqConfig, "lr", 1e-4)):
        f, base = field_of(cls, name), field_of(TrainSettings, name)
        assert f.default == default and f.metadata["help"] == base.metadata["help"]
        assert f.metadata["above" if name == "lr" else "at_least"] is not None
    # Pretraining's recipe fields are redeclared (None: the modality's, filled in when the config is built), with
    # the same help, range and choices.
    for name in ("batch_size", "optimizer", "schedule", "lr"):
        f, base = field_of(PretrainConfig, name), field_of(TrainSettings, name)
        assert f.default is None and f.metadata["default_text"]
        assert {k: v for k, v in f.metadata.items() if k != "default_text"} == \
            {k: v for k, v in base.metadata.items() if k != "default_text"}
    assert [f.name for f in dataclasses.fields(PretrainConfig)][:3] == ["steps", "epochs", "batch_size"]
    # Fine-tuning's lr is redeclared (None: from the model's width), with the same help and range.
    f, base = field_of(FinetuneSettings, "lr"), field_of(TrainSettings, "lr")
    assert f.default is None and f.metadata["help"] == base.metadata["help"] and f.metadata["above"] == 0


def test_light_copies_of_choice_lists_agree_with_the_code_that_uses_them():
    from transferlab.heads.heads import POOLINGS
    from transferlab.recipes import settings
    from transferlab.transfer.methods import METHODS

    assert settings.POOLINGS == POOLINGS and settings.METHODS == METHODS


def _leaf_parsers(parser, prefix=()):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaf_parsers(child, prefix + (name,))


def test_every_subcommand_help_shows_every_default():
    import argparse

    seen = 0
    for path, parser in _leaf_parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            default = action.default
            if default in (None, False, argparse.SUPPRESS):
                continue
            shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            # argparse's own "(default: X)" (ArgumentDefaultsHelpFormatter) counts too
            assert f"[default: {shown}" in text or f"(default: {shown})" in text, (path, action.option_strings)
            seen += 1
    assert seen > 30
    generate = " ".join(dict(_leaf_parsers(build_parser()))[("seq2seq", "generate")].format_help().split())
    assert "--beam BEAM beam size (1 = greedy) [default: the fine-tuning run's]" in generate
    finetune = " ".join(dict(_leaf_parsers(build_parser()))[("finetune",)].format_help().split())
    for needle in ("--lr X peak learning rate [default: from the model width",
                   "--optimizer {adamw,adam,sgd,muon}", "[default: 32 examples]",
                   "--header, --no-header", "[default: --header]"):
        assert needle in finetune


def test_compare_spec_values_go_through_the_same_validation(pretrained_dir, labeled_files, tmp_path):
    from transferlab.experiments.compare import CompareSpec

    train, dev = labeled_files
    spec = tmp_path / "spec.yaml"
    for key, value, needle in (("warmup", "1.5", "must be a whole number from 1 on"),
                               ("epochs", "0", "must be above 0, got 0"),
                               ("schedule", "warp", "unknown schedule 'warp'; choose linear"),
                               ("precision", "fp8", "unknown precision 'fp8'"),
                               ("eval_every_epochs", "0", "must be at least 1")):
        spec.write_text(f"checkpoints: [{pretrained_dir}]\ntask:\n  train: {train}\n  dev: {dev}\n"
                        f"methods: [finetune]\nbudgets: [20]\nseeds: 1\ntrain:\n  {key}: {value}\n")
        with pytest.raises(UserError) as e:
            CompareSpec.parse(spec)
        assert str(e.value).startswith(f"{spec}:9: train.{key}: ") and needle in str(e.value), str(e.value)


def test_compile_stores_the_settings_object_and_checks_it(pretrained_dir, labeled_files):
    from transferlab import from_pretrained
    from transferlab.training.settings import FinetuneSettings

    model = from_pretrained(pretrained_dir, num_labels=2, label_names=["neg", "pos"], verbose=False, max_len=32)
    model.compile(lr=1e-3, schedule="cosine")
    assert isinstance(model.compiled.settings, FinetuneSettings)
    assert (model.compiled.settings.lr, model.compiled.settings.schedule, model.compiled.settings.epochs) == \
        (1e-3, "cosine", 3)
    with pytest.raises(UserError, match="--lr must be above 0"):
        model.compile(lr=-1.0)
    with pytest.raises(UserError, match="unknown setting.*lrr"):
        model.compile(lrr=1.0)
    with pytest.raises(UserError, match="--epochs must be above 0"):
        model.fit(str(labeled_files[0]), epochs=0)


# ------------------------------------------------------------------------------------- no stale state


def test_nan_at_the_first_step_leaves_the_directory_as_found_and_the_fix_just_works(corpus_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    from transferlab.objectives import OBJECTIVES

    family, cls, corruption = OBJECTIVES["mlm"]

    class Poisoned(cls):
        def forward(self, batch):
            out = super().forward(batch)
            return dict(out, loss=out["loss"] * float("nan"))

    monkeypatch.setitem(OBJECTIVES, "mlm", (family, Poisoned, corruption))
    out = tmp_path / "run"
    assert run(*pretrain_args(corpus_dir, out)) == 2
    assert "became NaN or infinite at step 1" in capsys.readouterr().err
    assert not out.exists(), "no run.json, no metrics.jsonl: the corrected command must not need --overwrite"
    monkeypatch.undo()
    assert run(*pretrain_args(corpus_dir, out, 2)) == 0 and (out / "final").is_dir()


def test_a_failed_overwrite_puts_the_old_run_back(corpus_dir, tmp_path, capsys, monkeypatch):
    import transferlab.recipes.pretrain as recipe

    out = tmp_path / "run"
    assert run(*pretrain_args(corpus_dir, out, 2)) == 0
    before = snapshot(out)

    def sigterm_during_start_up(*args, **kwargs):
        raise Terminated()

    monkeypatch.setattr(recipe, "train", sigterm_during_start_up)
    assert run(*pretrain_args(corpus_dir, out, 3), "--overwrite") == 143
    err = capsys.readouterr().err
    assert "interrupted before the first step" in err and "run the same command again" in err
    assert snapshot(out) == before, "the run --overwrite was replacing is back, byte for byte"
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or ".tmp-" in p.name], "no debris"
    monkeypatch.undo()
    assert run(*pretrain_args(corpus_dir, out, 3), "--overwrite") == 0
    assert json.loads((out / "run.json").read_text())["steps"] == 3


def test_a_refused_fine_tuning_start_then_the_corrected_command(pretrained_dir, labeled_files, tmp_path, capsys):
    train, dev = labeled_files
    out = tmp_path / "ft"
    args = ["finetune", "--init", pretrained_dir, "--train", train, "--dev", dev, "--out", out, "--epochs", 1,
            "--max-len", 32, "--quiet"]
    assert run(*args, "--label-col", "nope") == 2
    assert "--label-col" in capsys.readouterr().err and not out.exists()
    assert run(*args) == 0 and (out / "final").is_dir()


def _interrupt_at(monkeypatch, step: int, exc=Terminated):
    """Raise ``exc`` (SIGTERM's exception) once, right after training step ``step`` is logged."""
    from transferlab.training.callbacks import MetricsLog

    real = MetricsLog.on_step_end
    fired = []

    def on_step_end(self, state, logs):
        real(self, state, logs)
        if state.step == step and not fired:
            fired.append(step)
            raise exc()

    monkeypatch.setattr(MetricsLog, "on_step_end", on_step_end)


def test_pretraining_interrupt_message_command_works(corpus_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 3)
    assert run(*pretrain_args(corpus_dir, out, 6), "--save-every", 100) == 143
    err = capsys.readouterr().err
    assert "interrupted at step 3; checkpoint saved to" in err
    monkeypatch.undo()
    assert rerun(err) == 0
    assert "resumed from" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6 and (out / "final").is_dir()


def test_fine_tuning_interrupt_message_command_works_and_the_history_is_whole(pretrained_dir, labeled_files,
                                                                             tmp_path, capsys, monkeypatch):
    train, dev = labeled_files
    out = tmp_path / "ft"
    _interrupt_at(monkeypatch, 7)  # in the second of 2 epochs (5 steps each)
    assert run("finetune", "--init", pretrained_dir, "--train", train, "--dev", dev, "--out", out, "--epochs", 2,
               "--batch-size", 32, "--max-len", 16, "--lr", 1e-3, "--quiet", "--overwrite") == 143
    err = capsys.readouterr().err
    assert "interrupted at step 7" in err and "--resume auto" in err and "--overwrite" not in err.split("`")[1]
    monkeypatch.undo()
    assert rerun(err) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["history"]["loss"]) == 2 and len(results["history"]["val_accuracy"]) == 2
    assert results["best_epoch"] in (1, 2)


def test_seq2seq_interrupt_message_command_works(corpus_dir, tmp_path, capsys, monkeypatch):
    from conftest import sentences

    assert run("pretrain", "--corpus", corpus_dir, "--objective", "bart", "--steps", 2, "--seq-len", 32,
               "--batch-size", 8, "--decoder-layers", 1, "--out", tmp_path / "bart", "--quiet") == 0
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("src\ttgt\n" + "".join(f"{s}\t{s}\n" for s in sentences(24, 3)), encoding="utf-8")
    out = tmp_path / "s2s"
    _interrupt_at(monkeypatch, 2)
    assert run("seq2seq", "train", "--init", tmp_path / "bart" / "final", "--train", pairs, "--source-col", "src",
               "--target-col", "tgt", "--epochs", 1, "--batch-size", 8, "--out", out, "--quiet") == 143
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert rerun(err) == 0 and (out / "final").is_dir()
    assert "resumed from" in capsys.readouterr().err


def test_compare_interrupt_message_command_works(pretrained_dir, labeled_files, tmp_path, capsys, monkeypatch):
    import transferlab.experiments.compare as compare

    train, dev = labeled_files
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"checkpoints: [{pretrained_dir}]\ntask:\n  train: {train}\n  dev: {dev}\nmethods: [finetune]\n"
                    f"budgets: [20]\nseeds: 2\ntrain:\n  epochs: 1\n  max_len: 32\n  lr: 1e-3\n")
    real, calls = compare.run_one, []

    def second_run_interrupted(spec_, run_):
        calls.append(run_)
        if len(calls) == 2:
            raise KeyboardInterrupt()
        return real(spec_, run_)

    monkeypatch.setattr(compare, "run_one", second_run_interrupted)
    out = tmp_path / "out"
    # --workers 1: in this process, where the patched run_one is (worker processes import their own)
    assert run("compare", spec, "--out", out, "--quiet", "--workers", 1) == 130
    err = capsys.readouterr().err
    assert "the 1 finished run(s) are kept" in err
    monkeypatch.undo()
    assert rerun(err) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2 and (out / "report.md").is_file()


def test_resume_auto_with_nothing_to_resume_says_so_and_a_run_without_checkpoints_warns(corpus_dir, tmp_path,
                                                                                        capsys):
    out = tmp_path / "run"
    assert run(*pretrain_args(corpus_dir, out, 2)[:-1], "--resume", "auto") == 0
    err = capsys.readouterr().err
    assert "--resume auto: " in err and "holds no run yet" in err
    assert "no step checkpoints will be written" in err and "kill -9 loses the run" in err


# ---------------------------------------------------------------------------------------- nothing silently wrong


def test_max_len_beyond_the_positions_is_said_and_recorded(pretrained_dir, labeled_files, tmp_path, capsys):
    import json as _json

    positions = _json.loads((pretrained_dir / "config.json").read_text())["backbone"]["max_len"]
    train, dev = labeled_files
    out = tmp_path / "ft"
    assert run("finetune", "--init", pretrained_dir, "--train", train, "--out", out, "--epochs", 1,
               "--max-len", positions + 100, "--quiet") == 0
    assert f"texts are cut at {positions} tokens" in capsys.readouterr().err
    assert _json.loads((out / "run.json").read_text())["max_len"] == positions


def test_suspicious_training_labels_are_reported_and_strict_labels_refuses(pretrained_dir, tmp_path, capsys):
    from conftest import sentences

    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    rows = [f"{s}\t{i % 2}" for i, s in enumerate(sentences(120, 1))] + ["a stray row\tpositive"]
    train.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    dev.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences(20, 2))))
    args = ["finetune", "--init", pretrained_dir, "--train", train, "--dev", dev, "--epochs", 1, "--max-len", 16,
            "--batch-size", 64, "--quiet"]
    assert run(*args, "--out", tmp_path / "a") == 0
    err = capsys.readouterr().err
    assert f"{train}:122: label 'positive' is in only 1 of 121 training rows and never in {dev}" in err
    assert "is a word among numeric labels (0, 1)" in err
    assert run(*args, "--out", tmp_path / "b", "--strict-labels") == 2
    assert "--strict-labels refuses" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_a_pair_model_refuses_single_sentences(pretrained_dir, tmp_path, capsys):
    from conftest import sentences

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\tlabel\n" + "".join(
        f"{a}\t{b}\t{i % 2}\n" for i, (a, b) in enumerate(zip(sentences(40, 1), sentences(40, 2)))))
    single = tmp_path / "single.tsv"
    single.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences(10, 3))))
    out = tmp_path / "ft"
    assert run("finetune", "--init", pretrained_dir, "--train", pairs, "--out", out, "--epochs", 1, "--max-len", 32,
               "--quiet") == 0
    assert run("evaluate", "--model", out / "final", "--data", single) == 2
    err = capsys.readouterr().err
    assert "fine-tuned on sentence pairs (two text columns)" in err and "--text-cols" in err
    assert run("evaluate", "--model", out / "final", "--data", pairs) == 0


def test_evaluate_never_prints_nan_as_success(pretrained_dir, labeled_files, tmp_path, capsys):
    train, dev = labeled_files
    out = tmp_path / "ft"
    assert run("finetune", "--init", pretrained_dir, "--train", train, "--out", out, "--epochs", 1, "--max-len", 32,
               "--quiet") == 0
    one_class = tmp_path / "one.tsv"
    one_class.write_text("sentence\tlabel\nthe cat sat .\tpos\nthe dog ran .\tpos\n")
    capsys.readouterr()
    assert run("evaluate", "--model", out / "final", "--data", one_class, "--metrics", "accuracy,roc_auc") == 2
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # valid JSON: no NaN token
    assert printed["roc_auc"] is None and printed["accuracy"] is not None
    assert "roc_auc is undefined when the evaluated data holds one class only" in captured.err


def test_checkpoint_integrity_facts_are_checked_with_the_field_named(pretrained_dir, tmp_path, capsys):
    import shutil

    from transferlab.training.checkpoint import MARKER, _write_marker, load_config

    run_dir = pretrained_dir.parent
    with pytest.raises(UserError, match=r"is a run directory, not a checkpoint; use .*/final"):
        load_config(run_dir)
    copy = tmp_path / "ck"
    shutil.copytree(pretrained_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "backbone": {**config["backbone"], "d_model": "128"}}))
    (copy / MARKER).unlink()
    _write_marker(copy)
    from transferlab.tasks.factory import load_model

    with pytest.raises(UserError, match=r"backbone\.d_model must be a whole number, got '128'"):
        load_model(copy)
    (copy / "config.json").write_text(json.dumps({**config, "task": {**config["task"], "num_labels": "2"}}))
    (copy / MARKER).unlink()
    _write_marker(copy)
    with pytest.raises(UserError, match=r"field task\.num_labels must be a whole number"):
        load_config(copy)
    (copy / "config.json").write_text(json.dumps(config))
    (copy / MARKER).unlink()
    capsys.readouterr()
    load_config(copy)
    assert f"checkpoint '{copy}' has no {MARKER}" in capsys.readouterr().err


def test_init_with_a_run_directory_points_at_final(pretrained_dir, labeled_files, tmp_path, capsys):
    train, _ = labeled_files
    assert run("finetune", "--init", pretrained_dir.parent, "--train", train, "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "is a run directory, not a checkpoint; use" in err and "/final" in err and "step-N" in err


# ---------------------------------------------------------------------------------- messages at the real cause


def test_an_output_file_in_a_missing_folder_is_refused_before_any_work(pretrained_dir, labeled_files, tmp_path,
                                                                       capsys):
    _, dev = labeled_files
    assert run("predict", "--model", pretrained_dir, "--data", dev, "--out", tmp_path / "no" / "p.tsv") == 2
    err = capsys.readouterr().err
    assert f"the folder '{tmp_path / 'no'}' does not exist" in err and "mkdir -p" in err


def test_an_invalid_answer_pattern_names_the_task_file_and_field(tmp_path):
    from transferlab.evaluation.icl import load_task

    data = tmp_path / "d.jsonl"
    data.write_text('{"q": "a", "a": "b"}\n')
    task = tmp_path / "t.yaml"
    task.write_text(f"task: t\ndataset: {{builder: file, path: {data}}}\noutput_type: generate_until\n"
                    f"doc_to_text: '{{{{q}}}}'\ndoc_to_target: '{{{{a}}}}'\n"
                    f"generation_kwargs: {{answer_pattern: '([a-z'}}\n")
    with pytest.raises(UserError, match=rf"task file '{task}': generation_kwargs.answer_pattern .* is not a valid "
                                        rf"regular expression"):
        load_task(str(task), data_root=str(tmp_path))


def test_pickle_refusals_never_advise_turning_the_check_off():
    import torch

    from transferlab.training.checkpoint import refusal_reason

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    import io

    buffer = io.BytesIO()
    torch.save({"x": Payload()}, buffer)
    buffer.seek(0)
    with pytest.raises(Exception) as e:
        torch.load(buffer, weights_only=True)
    reason = refusal_reason(e.value)
    assert "weights_only" not in reason and "safe_globals" not in reason and "print" in reason


def test_logs_without_a_terminal_are_one_line_per_interval(corpus_dir, tmp_path, capsys):
    args = pretrain_args(corpus_dir, tmp_path / "run", 4)[:-1] + ["--log-every", 2]
    assert run(*args) == 0  # under pytest stderr is not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/4", "4/4"] and all(" loss " in line for line in lines)


def test_bias_plot_and_report_carry_the_token_length_caveat(tmp_path):
    from transferlab.evaluation.bias import format_report
    from transferlab.experiments.bias_report import plot_bias

    result = {"kind": "clm", "note": "n", "occupations": {"by_occupation": {"nurse": -0.5}, "mean_log_ratio": -0.5,
                                                          "uneven_tokens": ["'he' is 1 token(s), 'she' 2"]},
              "sentences": {"method": "log-likelihood", "prefers_stereotype": 0.5, "mean_difference": 0.1,
                            "uneven_pairs": 1, "rows": [{"score_stereotype": -3.0, "score_anti": -4.0}]}}
    assert "in 1 of 1 pairs the two sentences have different token lengths" in format_report(result)
    assert plot_bias(result, tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------------- Python API


def test_from_pretrained_on_a_fine_tuned_directory_keeps_its_head_or_says_it_dropped_it(pretrained_dir,
                                                                                      labeled_files, tmp_path,
                                                                                      capsys):
    import torch

    from transferlab import from_pretrained, load

    train, dev = labeled_files
    model = from_pretrained(pretrained_dir, num_labels=2, verbose=False, max_len=32)
    model.compile(lr=1e-3).fit(str(train), epochs=1, verbose=False)
    model.save(tmp_path / "ft")
    kept = from_pretrained(tmp_path / "ft")
    assert "kept the trained classification head" in capsys.readouterr().err
    saved = load(tmp_path / "ft").module.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in kept.module.state_dict().items())
    assert kept.evaluate(str(dev))["accuracy"] == pytest.approx(model.evaluate(str(dev))["accuracy"])
    fresh = from_pretrained(tmp_path / "ft", num_labels=3)
    err = capsys.readouterr().err
    assert "the trained classification head" in err and "was dropped" in err and "without num_labels" in err
    assert "dropped (trained classification head)" in str(fresh.report)
    with pytest.warns(UserWarning, match="was dropped"):
        from_pretrained(tmp_path / "ft", num_labels=3, verbose=False)
