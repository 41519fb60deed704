"""In-context evaluation (GPT-3 style): no gradient step, only a task description and K demonstrations.

A task is a small YAML or JSON file in the style of the common evaluation harnesses::

    task: sst2                              # name used in tables and file names
    dataset: {builder: file, path: "{data_root}/sst2/dev.tsv"}    # the evaluated documents
    fewshot_dataset: {builder: file, path: "{data_root}/sst2/train.tsv"}  # demonstrations (default: dataset)
    output_type: multiple_choice            # or generate_until
    description: "Is each review positive or negative?"   # optional, opens every prompt
    doc_to_text: "Review: {{sentence}}\\nSentiment:"
    doc_to_target: "{{label}}"              # multiple choice: a choice's text or its index
    doc_to_choice: ["negative", "positive"] # each may use {{fields}} too
    target_delimiter: " "                   # between question and answer
    fewshot_delimiter: "\\n\\n"             # between examples
    fewshot_seed: 1234
    fewshot_group: episode                  # optional: demonstrations share this field's value with the doc
    generation_kwargs: {until: ["\\n"], max_gen_toks: 8, answer_pattern: "\\\\S+"}   # generate_until only
    limit: 500                              # evaluate the first N documents

The prompt for a document with K shots is, joined by ``fewshot_delimiter``::

    [description]  text(d1) + target_delimiter + target(d1)  ...  text(dK) + target_delimiter + target(dK)  text(doc)

and the answer is scored as the continuation ``target_delimiter + answer``. Demonstrations are drawn without
replacement by a generator seeded with ``fewshot_seed`` and the document's index, never the evaluated document
itself. Multiple choice picks the choice with the highest log-likelihood (``acc``) and with the highest
log-likelihood per character (``acc_norm``, which does not favour short answers); generation tasks decode
greedily up to a stop string and score exact match (after ``answer_pattern``, if given, picks the answer out).
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..fsutil import atomic_dir, check_output_dir, write_json
from .generate import GenerationConfig, causal_lm, continuation_text, cut_at_stop, generate_ids, stop_forms

TASK_DIR = Path(__file__).with_name("tasks")
OUTPUT_TYPES = ("multiple_choice", "generate_until")
OVERFLOW = ("error", "truncate")
_FIELDS = {"task", "dataset", "fewshot_dataset", "output_type", "description", "doc_to_text", "doc_to_target",
           "doc_to_choice", "target_delimiter", "fewshot_delimiter", "fewshot_seed", "fewshot_group",
           "generation_kwargs", "limit", "metadata"}
_REQUIRED = ("task", "dataset", "output_type", "doc_to_text", "doc_to_target")
_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


# ------------------------------------------------------------------------------------------------ templates
def render(template: str, doc: dict, where: str) -> str:
    """Fill ``{{field}}`` from ``doc``; an unknown field is a UserError naming ``where`` and the known fields."""
    def sub(m):
        name = m.group(1)
        if name not in doc:
            raise UserError(f"{where} uses the template variable '{{{{{name}}}}}', but the documents have no field "
                            f"'{name}' (they have: {', '.join(sorted(doc))}). Fix the name in the task file.")
        return str(doc[name])
    return _VAR.sub(sub, template)


# ------------------------------------------------------------------------------------------------- datasets
def _read_rows(path: Path, columns: list[str] | None, where: str) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{where}: data file '{path}' does not exist. Check the path, or point --data-root at the "
                        f"directory holding the shared datasets (default ../shared/data).")
    name = path.name.lower().removesuffix(".gz")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        if name.endswith(".txt"):
            return [{"line": line.rstrip("\n")} for line in f]
        if name.endswith(".json"):
            rows = json.load(f)
            if not isinstance(rows, list):
                raise UserError(f"{where}: '{path}' must hold a JSON list of objects.")
            return rows
        if name.endswith((".tsv", ".csv")):
            # GLUE TSVs contain bare quotes, so tabs are split without quote handling (as data/labeled.py does)
            reader = (csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if name.endswith(".tsv")
                      else csv.reader(f))
            rows = [r for r in reader if r]
            header, body = (columns, rows) if columns else (rows[0], rows[1:])
            return [dict(zip([h.strip() for h in header], [c.strip() for c in r])) for r in body]
    raise UserError(f"{where}: cannot read '{path}': use .tsv, .csv, .jsonl, .json or .txt (optionally .gz).")


def _file(args, data_root, where):
    return _read_rows(Path(str(args["path"]).format(data_root=data_root)), args.get("columns"), where)


def _word_pairs(args, data_root, where):
    """Distinct, lower-case alphabetic word pairs (first translation of each source word, in file order)."""
    rows = _read_rows(Path(str(args["path"]).format(data_root=data_root)), ["source", "target"], where)
    seen, docs = set(), []
    for r in rows:
        s, t = r.get("source", ""), r.get("target", "")
        if s.isalpha() and t.isalpha() and s.islower() and t.islower() and s != t and s not in seen:
            seen.add(s)
            docs.append({"source": s, "target": t})
        if len(docs) >= int(args.get("n", 1000)):
            break
    return docs


def _addition(args, data_root, where):
    rng = random.Random(int(args.get("seed", 0)))
    lo, hi = 10 ** (int(args.get("digits", 2)) - 1), 10 ** int(args.get("digits", 2)) - 1
    docs = []
    for _ in range(int(args.get("n", 500))):
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        docs.append({"a": a, "b": b, "sum": a + b})
    return docs


def _last_word(args, data_root, where):
    """LAMBADA-style passages from WikiText: a paragraph's last sentence-final word, given what precedes it."""
    rows = _read_rows(Path(str(args["path"]).format(data_root=data_root)), None, where)
    max_words, docs = int(args.get("max_words", 60)), []
    for r in rows:
        line = r["line"].strip()
        if not line or line.startswith("="):
            continue
        words = line.split()
        if len(words) < 12 or words[-1] != "." or not words[-2].isalpha():
            continue
        docs.append({"context": " ".join(words[-max_words - 2:-2]), "word": words[-2]})
        if len(docs) >= int(args.get("n", 500)):
            break
    return docs


PATTERN_INPUTS = ("apple stone river cloud lamp horse chair bread glass tiger paper music window garden candle "
                  "silver forest pencil rocket mirror castle ocean piano thunder").split()
PATTERN_LABELS = "red blue green yellow black white orange purple".split()


def pattern_episodes(n_episodes: int, per_episode: int, seed: int) -> list[list[dict]]:
    """Synthetic pattern completion: in each episode every input (two random words) maps to one label word drawn
    for that episode. The label is arbitrary, so only demonstrations from the same episode reveal it: a model
    that learned to copy in context scores well few-shot and at chance (1/8) zero-shot."""
    rng = random.Random(seed)
    episodes = []
    for e in range(n_episodes):
        label = rng.choice(PATTERN_LABELS)
        episodes.append([{"x": " ".join(rng.sample(PATTERN_INPUTS, 2)), "y": label, "episode": e}
                         for _ in range(per_episode)])
    return episodes


def write_pattern_corpus(path: str | Path, n_episodes: int = 2000, per_episode: int = 8, seed: int = 0) -> Path:
    """Pretraining text for the pattern task: one document per episode, one ``x -> y`` line per example (the
    same format as the task's prompts). Use a seed other than the task's so evaluated episodes are unseen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for episode in pattern_episodes(n_episodes, per_episode, seed):
            f.write("\n".join(f"{d['x']} -> {d['y']}" for d in episode) + "\n\n\n")
    return path


def _pattern(args, data_root, where):
    episodes = pattern_episodes(int(args.get("episodes", 100)), int(args.get("per_episode", 8)),
                                int(args.get("seed", 0)))
    return [doc for ep in episodes for doc in ep]


# name -> reader(args, data_root, where) -> list of documents (dicts)
BUILDERS = {"file": _file, "word_pairs": _word_pairs, "addition": _addition, "last_word": _last_word,
            "pattern": _pattern}


# ----------------------------------------------------------------------------------------------------- tasks
@dataclass
class Task:
    """A parsed task file with its documents and demonstration pool."""

    name: str
    source: str
    output_type: str
    doc_to_text: str
    doc_to_target: str
    docs: list[dict]
    pool: list[dict]
    pool_is_docs: bool
    doc_to_choice: list[str] = field(default_factory=list)
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    fewshot_seed: int = 1234
    fewshot_group: str | None = None
    until: list[str] = field(default_factory=lambda: ["\n"])
    max_gen_toks: int = 16
    answer_pattern: str | None = None
    _groups: dict | None = field(default=None, repr=False)

    def text(self, doc: dict) -> str:
        return render(self.doc_to_text, doc, f"{self.source}: doc_to_text")

    def choices(self, doc: dict) -> list[str]:
        return [render(c, doc, f"{self.source}: doc_to_choice") for c in self.doc_to_choice]

    def target(self, doc: dict) -> str:
        """The answer's text (for multiple choice, an index is turned into that choice's text)."""
        t = render(self.doc_to_target, doc, f"{self.source}: doc_to_target")
        if self.output_type == "multiple_choice":
            choices = self.choices(doc)
            if t in choices:  # text first, so numeric choices ("0", "1", ...) are not read as indices
                return t
            if t.strip().lstrip("-").isdigit():
                i = int(t)
                if not 0 <= i < len(choices):
                    raise UserError(f"{self.source}: doc_to_target gave index {i} but there are {len(choices)} "
                                    f"choices ({choices}).")
                return choices[i]
            raise UserError(f"{self.source}: doc_to_target gave '{t}', which is not one of the choices "
                            f"{choices}; give a choice's text or its index.")
        return t

    def demonstrations(self, index: int, k: int) -> list[dict]:
        """``k`` seeded demonstrations for document ``index``, never the document itself."""
        doc = self.docs[index]
        if self.fewshot_group:
            if self._groups is None:  # pool positions by group value, built once
                self._groups = {}
                for j, d in enumerate(self.pool):
                    self._groups.setdefault(d.get(self.fewshot_group), []).append(j)
            candidates = self._groups.get(doc.get(self.fewshot_group), [])
        else:
            candidates = range(len(self.pool))
        exclude = index if self.pool_is_docs else -1
        available = len(candidates) - (exclude in candidates)
        if k > available:
            group = f" in its '{self.fewshot_group}' group" if self.fewshot_group else ""
            raise UserError(f"task {self.name}: {k} shots asked, but document {index} has only {available} "
                            f"possible demonstrations{group}. Ask for fewer --shots.")
        # draw one extra so that dropping the evaluated document still leaves k; sampling positions keeps this
        # cheap for a pool of 67k training sentences
        picks = random.Random(f"{self.fewshot_seed}:{index}").sample(candidates, min(len(candidates), k + 1))
        return [self.pool[j] for j in picks if j != exclude][:k]

    def prompt(self, demos: list[dict], doc: dict) -> str:
        parts = [self.description] if self.description else []
        parts += [self.text(d) + self.target_delimiter + self.target(d) for d in demos]
        parts.append(self.text(doc))
        return self.fewshot_delimiter.join(parts)


def _load_spec(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            spec = json.loads(text)
        else:
            import yaml

            spec = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError / JSONDecodeError carry the line and column
        raise UserError(f"task file '{path}' is not valid {path.suffix.lstrip('.').upper()}: {e}") from None
    if not isinstance(spec, dict):
        raise UserError(f"task file '{path}' must hold a mapping of fields (task, dataset, doc_to_text, ...).")
    return spec


def builtin_tasks() -> list[str]:
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def load_task(name_or_path: str | Path, data_root: str | Path = "../shared/data", limit: int | None = None) -> Task:
    """Read a task file (or a built-in task by name) and its documents.

    Args:
        name_or_path: a built-in name (``transferlab icl --list``) or a .yaml/.yml/.json file.
        data_root: what ``{data_root}`` in dataset paths stands for.
        limit: evaluate at most this many documents (overrides the file's ``limit``).
    """
    path = Path(name_or_path)
    if not path.is_file():
        builtin = TASK_DIR / f"{name_or_path}.yaml"
        if not builtin.is_file():
            raise UserError(f"--tasks: '{name_or_path}' is neither a task file nor a built-in task; built-in tasks "
                            f"are {', '.join(builtin_tasks())}.")
        path = builtin
    spec = _load_spec(path)
    where = f"task file '{path}'"
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise UserError(f"{where} has unknown fields {unknown}; known fields are {', '.join(sorted(_FIELDS))}.")
    missing = [k for k in _REQUIRED if k not in spec]
    if spec.get("output_type") == "multiple_choice" and "doc_to_choice" not in spec:
        missing.append("doc_to_choice")
    if missing:
        raise UserError(f"{where} is missing the field(s) {', '.join(missing)}; every task needs task, dataset, "
                        f"output_type, doc_to_text, doc_to_target (and doc_to_choice for multiple choice).")
    if spec["output_type"] not in OUTPUT_TYPES:
        raise UserError(f"{where}: output_type '{spec['output_type']}' is not one of {', '.join(OUTPUT_TYPES)}.")

    def build(key):
        ds = spec[key]
        if not isinstance(ds, dict) or ds.get("builder", "file") not in BUILDERS:
            raise UserError(f"{where}: {key} must be a mapping with builder one of {', '.join(BUILDERS)} "
                            f"(and its arguments, e.g. path).")
        builder = ds.get("builder", "file")
        if builder in ("file", "word_pairs", "last_word") and "path" not in ds:
            raise UserError(f"{where}: {key} (builder {builder}) needs a path.")
        docs = BUILDERS[builder](ds, data_root, where)
        if not docs:
            raise UserError(f"{where}: {key} gave no documents.")
        return docs

    pattern = (spec.get("generation_kwargs") or {}).get("answer_pattern")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as e:
            raise UserError(f"{where}: generation_kwargs.answer_pattern {str(pattern)!r} is not a valid regular "
                            f"expression ({e}). Fix it (in YAML, a backslash inside double quotes is written "
                            f"twice: \"\\\\S+\"), or leave the field out to compare the whole answer.") from None
    docs = build("dataset")
    pool_is_docs = "fewshot_dataset" not in spec
    pool = docs if pool_is_docs else build("fewshot_dataset")
    limit = limit if limit is not None else spec.get("limit")
    gen = spec.get("generation_kwargs") or {}
    choices = spec.get("doc_to_choice") or []
    if spec["output_type"] == "multiple_choice" and (not isinstance(choices, list) or len(choices) < 2):
        raise UserError(f"{where}: doc_to_choice must be a list of at least two choices.")
    task = Task(name=str(spec["task"]), source=where, output_type=spec["output_type"],
                doc_to_text=str(spec["doc_to_text"]), doc_to_target=str(spec["doc_to_target"]),
                docs=docs[:limit] if limit else docs, pool=pool, pool_is_docs=pool_is_docs,
                doc_to_choice=[str(c) for c in choices], description=str(spec.get("description", "")),
                target_delimiter=str(spec.get("target_delimiter", " ")),
                fewshot_delimiter=str(spec.get("fewshot_delimiter", "\n\n")),
                fewshot_seed=int(spec.get("fewshot_seed", 1234)), fewshot_group=spec.get("fewshot_group"),
                until=list(gen.get("until", ["\n"])), max_gen_toks=int(gen.get("max_gen_toks", 16)),
                answer_pattern=gen.get("answer_pattern"))
    # render every template on the first document now, so a wrong variable fails before any model runs
    task.prompt([], task.docs[0])
    task.target(task.docs[0])
    task.target(task.pool[0])
    return task


# --------------------------------------------------------------------------------------------------- scoring
def split_continuation(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation such that context + continuation tokenises as their concatenation
    where possible. Trailing spaces move from the context to the continuation (as the harnesses do), because
    BPE attaches a space to the word after it."""
    stripped = context.rstrip(" ")
    continuation = context[len(stripped):] + continuation
    ctx = [tokenizer.eos_id] + tokenizer.encode(stripped)
    whole = [tokenizer.eos_id] + tokenizer.encode(stripped + continuation)
    if whole[:len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer.encode(continuation)


@torch.no_grad()
def loglikelihoods(module, requests: list[tuple[list[int], list[int]]], batch_size: int = 16,
                   progress: bool = False) -> list[tuple[float, bool]]:
    """Sum of log p(continuation tokens | context) and whether each token was the argmax, per request.

    Requests are sorted by length so batches hold similar lengths; sequences are right-padded (the causal mask
    keeps real tokens from seeing padding) and only continuation positions go through the vocabulary projection.
    """
    from tqdm.auto import tqdm

    backbone, lm_head = causal_lm(module)
    device = backbone.wte.weight.device
    too_long = [i for i, (c, x) in enumerate(requests) if len(c) + len(x) - 1 > backbone.config.max_len]
    if too_long:
        c, x = requests[too_long[0]]
        raise UserError(f"{len(too_long)} text(s) are longer than the model's window of {backbone.config.max_len} "
                        f"tokens (the first has {len(c) + len(x) - 1}); shorten them.")
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    bar = tqdm(total=len(requests), desc="log-likelihood", unit="req", disable=None if progress else True)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs = [(requests[i][0] + requests[i][1])[:-1] for i in idx]
        L = max(len(s) for s in seqs)
        ids = torch.zeros((len(idx), L), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s)
        hidden = backbone(ids.to(device))
        for r, i in enumerate(idx):
            ctx, cont = requests[i]
            pos = slice(len(ctx) - 1, len(ctx) - 1 + len(cont))
            logp = lm_head(hidden[r, pos]).float().log_softmax(-1)
            target = torch.tensor(cont, device=device)
            results[i] = (float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all()))
        bar.update(len(idx))
    bar.close()
    return results


# ------------------------------------------------------------------------------------------------ evaluation
def _fit(task: Task, tokenizer, index: int, k: int, window: int, reserve: int, overflow: str):
    """(prompt, shots used) for document ``index`` with ``k`` shots, within ``window`` tokens
    minus ``reserve`` for the answer. Demonstrations are dropped from the front when ``overflow='truncate'``."""
    doc = task.docs[index]
    demos = task.demonstrations(index, k)
    for used in range(k, -1, -1):
        prompt = task.prompt(demos[k - used:], doc)
        ids = [tokenizer.eos_id] + tokenizer.encode(prompt)
        if len(ids) + reserve <= window:
            if used < k and overflow == "error":
                need = 1 + len(tokenizer.encode(task.prompt(demos, doc))) + reserve
                raise UserError(f"task {task.name}, document {index}: {k} shots need {need} tokens but the model's "
                                f"window is {window}; at most {used} shots fit here. Ask for "
                                f"fewer --shots, or pass --overflow truncate to drop the demonstrations that do "
                                f"not fit.")
            return prompt, used
    if overflow == "error":
        raise UserError(f"task {task.name}, document {index}: even without demonstrations the prompt needs "
                        f"{len(ids) + reserve} tokens but the model's window is {window}. Pass --overflow truncate "
                        f"to cut the prompt from the left, or shorten the documents.")
    return prompt, 0


def _left_truncate(ctx: list[int], cont_len: int, window: int) -> list[int]:
    """Keep the end of the context (the [EOS] start token stays first) so context + continuation fit."""
    room = window - cont_len
    return ctx if len(ctx) <= room else ctx[:1] + ctx[len(ctx) - room + 1:]


def evaluate_task(module, tokenizer, task: Task, k: int, overflow: str = "error", batch_size: int = 16,
                  progress: bool = False, window: int | None = None) -> tuple[dict, list[dict]]:
    """Score ``task`` with ``k`` demonstrations per document, within ``window`` tokens (default: the position
    table; ``trained_window(dir)`` gives the length the model was pretrained on, which is what to use).

    Returns:
        (metrics, records): metrics ``acc`` (and ``acc_norm`` for multiple choice, ``exact_match`` for
        generation), ``n``, ``shots_used_min``/``mean``; records hold each document's prompt, answer and outcome.
    """
    if overflow not in OVERFLOW:
        raise UserError(f"--overflow must be one of {', '.join(OVERFLOW)}, got '{overflow}'.")
    backbone, lm_head = causal_lm(module)
    window = min(window or backbone.config.max_len, backbone.config.max_len)
    records = []
    if task.output_type == "multiple_choice":
        requests, spans = [], []
        for i, doc in enumerate(task.docs):
            choices = task.choices(doc)
            reserve = max(len(tokenizer.encode(task.target_delimiter + c)) for c in choices) + 1
            prompt, used = _fit(task, tokenizer, i, k, window, reserve, overflow)
            spans.append((len(requests), len(choices)))
            for c in choices:
                ctx, cont = split_continuation(tokenizer, prompt, task.target_delimiter + c)
                requests.append((_left_truncate(ctx, len(cont), window), cont))
            records.append({"doc": i, "shots": used, "prompt": prompt, "choices": choices,
                            "target": task.target(doc)})
        scores = loglikelihoods(module, requests, batch_size, progress)
        for rec, (start, n) in zip(records, spans):
            ll = [scores[start + j][0] for j in range(n)]
            norm = [v / max(1, len(task.target_delimiter + c)) for v, c in zip(ll, rec["choices"])]
            gold = rec["choices"].index(rec["target"])
            rec.update(loglik=ll, prediction=rec["choices"][max(range(n), key=ll.__getitem__)],
                       correct=int(max(range(n), key=ll.__getitem__) == gold),
                       correct_norm=int(max(range(n), key=norm.__getitem__) == gold))
        metrics = {"acc": _mean(r["correct"] for r in records), "acc_norm": _mean(r["correct_norm"] for r in records),
                   "chance": _mean(1 / len(r["choices"]) for r in records)}
    else:
        forms = stop_forms(tokenizer, task.until)

        cfg = GenerationConfig(max_new_tokens=task.max_gen_toks, stop=task.until)
        prompts = []
        for i, doc in enumerate(task.docs):
            prompt, used = _fit(task, tokenizer, i, k, window, task.max_gen_toks, overflow)
            ids = _left_truncate([tokenizer.eos_id] + tokenizer.encode(prompt), task.max_gen_toks, window)
            prompts.append(ids)
            records.append({"doc": i, "shots": used, "prompt": prompt, "target": task.target(doc)})
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch",
                          disable=None if progress else True):
            chunk = prompts[start:start + batch_size]

            def stop_check(row, generated, chunk=chunk):
                return cut_at_stop(continuation_text(tokenizer, chunk[row], generated), forms)[1]

            outs = generate_ids(backbone, lm_head, chunk, cfg, tokenizer.eos_id, tokenizer.pad_id,
                                stop_check if forms else None)
            for rec, prompt_ids, (ids, _) in zip(records[start:], chunk, outs):
                text = cut_at_stop(continuation_text(tokenizer, prompt_ids, ids), forms)[0]
                answer = _answer(text, task.answer_pattern)
                rec.update(generated=text, prediction=answer,
                           correct=int(answer == _answer(rec["target"], task.answer_pattern)))
        metrics = {"exact_match": _mean(r["correct"] for r in records), "chance": 0.0}
    shots = [r["shots"] for r in records]
    metrics.update(n=len(records), shots=k, shots_used_min=min(shots), shots_used_mean=_mean(shots))
    return metrics, records


def _answer(text: str, pattern: str | None) -> str:
    text = text.strip()
    if pattern:
        m = re.search(pattern, text)
        return m.group(0) if m else ""
    return text


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def evaluate_icl(module, tokenizer, tasks: list[Task], shots: list[int], overflow: str = "error",
                 batch_size: int = 16, progress: bool = True, window: int | None = None) -> tuple[dict, dict]:
    """Every task at every shot count. Returns (results[task][shots] -> metrics, records[(task, shots)])."""
    results, records = {}, {}
    for task in tasks:
        for k in shots:
            if progress:
                print(f"{task.name}: {k}-shot, {len(task.docs)} documents", file=sys.stderr)
            metrics, recs = evaluate_task(module, tokenizer, task, k, overflow, batch_size, progress, window)
            results.setdefault(task.name, {})[str(k)] = metrics
            records[(task.name, k)] = recs
    return results, records


def format_table(results: dict) -> str:
    """A Markdown table: one row per task and shot count."""
    lines = ["| task | shots | metric | score | acc_norm | chance | n | shots used (min/mean) |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for task, by_shots in results.items():
        for k, m in by_shots.items():
            metric = "acc" if "acc" in m else "exact_match"
            norm = f"{m['acc_norm']:.3f}" if "acc_norm" in m else "-"
            lines.append(f"| {task} | {k} | {metric} | {m[metric]:.3f} | {norm} | {m['chance']:.3f} | {m['n']} | "
                         f"{m['shots_used_min']}/{m['shots_used_mean']:.1f} |")
    return "\n".join(lines)


def parse_shots(value) -> list[int]:
    try:
        shots = [int(s) for s in str(value).split(",") if s.strip()] if not isinstance(value, list) else value
    except ValueError:
        raise UserError(f"--shots must be comma-separated integers such as 0,1,5; got '{value}'.") from None
    if not shots or any(s < 0 for s in shots):
        raise UserError(f"--shots must be non-negative integers such as 0,1,5; got '{value}'.")
    return shots


def run_icl(model_dir, tasks: list[str], shots, out=None, data_root="../shared/data", limit: int | None = None,
            overflow: str = "error", batch_size: int = 16, progress: bool = True, overwrite: bool = False,
            window: int | None = None) -> dict:
    """``transferlab icl``: load the model and tasks, evaluate, print the table, write ``out``.

    ``out`` receives ``results.json`` (metrics per task and shot count), ``table.md`` and
    ``prompts/TASK-Kshot.jsonl`` (every prompt as the model saw it, with answer and outcome). It is written
    under a temporary name and renamed when complete. ``window`` defaults to the length the model was
    pretrained on.
    """
    from .generate import load_causal_lm, trained_window

    shots = parse_shots(shots)
    if out is not None:
        check_output_dir(out, overwrite, "icl output")
    loaded = [load_task(t, data_root, limit) for t in tasks]
    module, tokenizer = load_causal_lm(model_dir)
    window = window or trained_window(model_dir)
    results, records = evaluate_icl(module, tokenizer, loaded, shots, overflow, batch_size, progress, window)
    table = format_table(results)
    print(table)
    if out is not None:
        with atomic_dir(out) as tmp:
            write_json(tmp / "results.json", {"model": str(model_dir), "data_root": str(data_root),
                                              "window": window, "overflow": overflow, "results": results})
            (tmp / "table.md").write_text(table + "\n", encoding="utf-8")
            (tmp / "prompts").mkdir()
            for (name, k), recs in records.items():
                with open(tmp / "prompts" / f"{name}-{k}shot.jsonl", "w", encoding="utf-8") as f:
                    for r in recs:
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return results


__all__ = ["Task", "load_task", "evaluate_task", "evaluate_icl", "run_icl", "loglikelihoods", "format_table",
           "split_continuation", "pattern_episodes", "builtin_tasks"]
