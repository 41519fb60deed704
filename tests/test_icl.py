"""In-context evaluation: exact prompts, log-likelihoods against brute force, clear errors, and a tiny model
trained briefly on the pattern (copy) task does better few-shot than zero-shot."""

import json

import pytest
import torch

from transferlab.cli import main
from transferlab.errors import UserError
from transferlab.evaluation.icl import (evaluate_task, load_task, loglikelihoods, split_continuation,
                                        write_pattern_corpus)
from transferlab.models import build_backbone, preset
from transferlab.objectives import CausalLM


def write(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture
def qa_files(tmp_path):
    docs = [{"q": f"q{i}", "a": f"a{i}"} for i in range(3)]
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs), encoding="utf-8")
    spec = {"task": "qa", "dataset": {"builder": "file", "path": "{data_root}/docs.jsonl"},
            "output_type": "generate_until", "description": "DESC", "doc_to_text": "Q: {{q}}",
            "doc_to_target": "{{a}}", "target_delimiter": " => ", "fewshot_delimiter": " || "}
    return tmp_path, spec


def test_prompt_is_exact_and_never_shows_the_evaluated_example(qa_files):
    root, spec = qa_files
    task = load_task(write(root / "t.json", spec), data_root=root)
    for i in range(3):
        demos = task.demonstrations(i, 2)
        assert task.docs[i] not in demos and len(demos) == 2
        assert demos == task.demonstrations(i, 2)  # seeded
        a, b = demos
        assert task.prompt(demos, task.docs[i]) == (f"DESC || Q: {a['q']} => {a['a']} || Q: {b['q']} => {b['a']} "
                                                    f"|| Q: q{i}")
    assert task.prompt([], task.docs[0]) == "DESC || Q: q0"
    with pytest.raises(UserError, match="only 2 possible demonstrations"):
        task.demonstrations(0, 3)


def test_demonstrations_come_from_the_fewshot_pool_and_group(tmp_path, qa_files):
    root, spec = qa_files
    (root / "pool.jsonl").write_text("\n".join(json.dumps({"q": f"p{i}", "a": f"b{i}", "g": i % 2})
                                               for i in range(10)), encoding="utf-8")
    spec = dict(spec, fewshot_dataset={"builder": "file", "path": "{data_root}/pool.jsonl"})
    task = load_task(write(root / "t.json", spec), data_root=root)
    assert all(d["q"].startswith("p") for d in task.demonstrations(0, 5))
    (root / "docs.jsonl").write_text("\n".join(json.dumps({"q": f"q{i}", "a": "x", "g": i % 2}) for i in range(3)))
    task = load_task(write(root / "t.json", dict(spec, fewshot_group="g")), data_root=root)
    assert all(d["g"] == 1 for d in task.demonstrations(1, 5))


def test_split_continuation_moves_the_space_and_matches_joint_tokenisation(tokenizer):
    ctx, cont = split_continuation(tokenizer, "the cat sat on ", "the mat")
    assert ctx[0] == tokenizer.eos_id
    assert ctx[1:] + cont == tokenizer.encode("the cat sat on the mat")
    assert tokenizer.decode(cont) == "the mat"


@torch.no_grad()
def test_loglikelihood_equals_brute_force(tokenizer):
    torch.manual_seed(0)
    module = CausalLM(build_backbone(preset("tiny", "decoder", tokenizer.vocab_size, max_len=64,
                                            dropout=0.0))).eval()
    requests = [split_continuation(tokenizer, c, x) for c, x in
                [("the cat", " sat on the mat"), ("a", " dog"), ("the big red bird flew over the", " house")]]
    got = loglikelihoods(module, requests, batch_size=2)
    for (ctx, cont), (ll, _) in zip(requests, got):
        expected = 0.0
        for t, token in enumerate(cont):
            prefix = torch.tensor([ctx + cont[:t]])
            logits = module.heads["lm"](module.backbone(prefix))[0, -1]
            expected += float(logits.log_softmax(-1)[token])
        assert ll == pytest.approx(expected, abs=1e-4)


def test_task_file_errors(qa_files):
    root, spec = qa_files
    missing = {k: v for k, v in spec.items() if k != "doc_to_target"}
    with pytest.raises(UserError, match="missing the field.*doc_to_target"):
        load_task(write(root / "m.json", missing), data_root=root)
    with pytest.raises(UserError, match=r"'\{\{question\}\}'.*have: a, q"):
        load_task(write(root / "v.json", dict(spec, doc_to_text="Q: {{question}}")), data_root=root)
    with pytest.raises(UserError, match="unknown fields.*fewshot_delimeter"):
        load_task(write(root / "u.json", dict(spec, fewshot_delimeter="x")), data_root=root)
    with pytest.raises(UserError, match="needs.*doc_to_choice|doc_to_choice"):
        load_task(write(root / "c.json", dict(spec, output_type="multiple_choice")), data_root=root)
    (root / "bad.yaml").write_text("task: [unclosed\n", encoding="utf-8")
    with pytest.raises(UserError, match="not valid YAML"):
        load_task(root / "bad.yaml", data_root=root)
    with pytest.raises(UserError, match="built-in tasks are"):
        load_task("no_such_task")
    with pytest.raises(UserError, match="--data-root"):
        load_task("sst2", data_root=root / "nowhere")


def test_too_many_shots_for_the_window(tokenizer, qa_files):
    root, spec = qa_files
    spec = dict(spec, doc_to_text="Q: {{q}} the cat sat on the mat and the dog ran under the tree")
    task = load_task(write(root / "t.json", spec), data_root=root)
    module = CausalLM(build_backbone(preset("tiny", "decoder", tokenizer.vocab_size, max_len=80,
                                            dropout=0.0))).eval()
    with pytest.raises(UserError, match=r"2 shots need \d+ tokens but the model's window is 80; at most 1 shots"):
        evaluate_task(module, tokenizer, task, 2)
    metrics, records = evaluate_task(module, tokenizer, task, 2, overflow="truncate")
    assert metrics["shots_used_min"] == 1 and all(r["shots"] == 1 for r in records)


@pytest.fixture(scope="module")
def pattern_model(tmp_path_factory):
    """A tiny causal LM trained briefly on pattern episodes (a different seed from the evaluated ones)."""
    from transferlab.data.corpus import prepare_corpus
    from transferlab.tokenization import Tokenizer
    from transferlab.recipes.pretrain import PretrainConfig, pretrain

    d = tmp_path_factory.mktemp("pattern")
    text = write_pattern_corpus(d / "pattern.txt", n_episodes=400, per_episode=8, seed=1)
    tok = Tokenizer.train([text], kind="wordpiece", vocab_size=100, progress=False)
    corpus = prepare_corpus([text], tok, d / "corpus", heldout_fraction=0.05, progress=False)
    return pretrain(PretrainConfig(corpus=str(corpus), out=str(d / "run"), objective="clm", model="tiny",
                                   seq_len=64, batch_size=16, steps=300, lr=3e-3, progress=False, eval_batches=1,
                                   precision="fp32"))


def test_tiny_model_learns_in_context_cli(pattern_model, tmp_path, capsys):
    out = tmp_path / "icl"
    assert main(["icl", "--model", str(pattern_model), "--tasks", "pattern", "--shots", "0,2", "--limit", "40",
                 "--out", str(out), "--quiet"]) == 0
    assert "| pattern | 2 | acc |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["results"]["pattern"]
    zero, few = results["0"]["acc"], results["2"]["acc"]
    assert few >= 0.8 and few > zero + 0.4, (zero, few)
    assert results["2"]["chance"] == pytest.approx(1 / 8)
    rows = [json.loads(l) for l in (out / "prompts" / "pattern-2shot.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and rows[0]["prompt"].count("->") == 3 and rows[0]["target"] in rows[0]["choices"]
    assert (out / "table.md").is_file()
    assert main(["icl", "--model", str(pattern_model), "--tasks", "pattern", "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_generation_task_scored_by_exact_match(pattern_model, tmp_path):
    from transferlab.evaluation.generate import load_causal_lm

    spec = {"task": "pattern_gen", "dataset": {"builder": "pattern", "episodes": 10, "per_episode": 6, "seed": 100},
            "output_type": "generate_until", "doc_to_text": "{{x}} ->", "doc_to_target": "{{y}}",
            "fewshot_delimiter": "\n", "fewshot_group": "episode",
            "generation_kwargs": {"until": ["\n", "->"], "max_gen_toks": 3, "answer_pattern": "\\S+"}}
    task = load_task(write(tmp_path / "g.json", spec))
    module, tok = load_causal_lm(pattern_model)
    few, records = evaluate_task(module, tok, task, 3)
    assert few["exact_match"] >= 0.8
    assert all(r["correct"] == int(r["prediction"] == r["target"]) for r in records)
    zero, _ = evaluate_task(module, tok, task, 0)
    assert zero["exact_match"] < few["exact_match"]


def test_cli_icl_errors(pretrained_dir, capsys):
    assert main(["icl", "--model", str(pretrained_dir), "--tasks", "addition", "--shots", "0"]) == 2
    assert "causal language-model head" in capsys.readouterr().err
    assert main(["icl", "--list"]) == 0
    assert set(capsys.readouterr().out.split()) >= {"sst2", "en_fr", "addition", "lambada", "pattern"}


@pytest.mark.data
def test_builtin_tasks_read_the_shared_data():
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "sst2").is_dir():
        pytest.skip("../shared/data is not here")
    sst2 = load_task("sst2", SHARED_DATA)
    assert len(sst2.docs) == 872 and len(sst2.pool) == 67349
    assert {sst2.target(d) for d in sst2.docs} == {"negative", "positive"}
    assert sst2.prompt([], sst2.docs[0]).endswith("Review: it 's a charming and often affecting journey .\nSentiment:")
    en_fr = load_task("en_fr", SHARED_DATA)
    assert en_fr.pool[:2] == [{"source": "the", "target": "le"}, {"source": "and", "target": "et"}]
    assert len(en_fr.pool) == 1000 and len(en_fr.docs) == 500 and len({d["source"] for d in en_fr.pool}) == 1000
    assert all(d["source"] != d["target"] and d["source"].isalpha() for d in en_fr.pool)
    addition = load_task("addition", SHARED_DATA)
    assert all(int(d["sum"]) == int(d["a"]) + int(d["b"]) and 10 <= int(d["a"]) <= 99 for d in addition.docs)
    lambada = load_task("lambada", SHARED_DATA)
    assert len(lambada.docs) == 500 and all(d["word"].isalpha() and len(d["context"].split()) <= 30
                                            for d in lambada.docs)
