"""``transferlab probe bias``: run the probes of ``evaluation/bias.py`` on a checkpoint, print the report and
write ``bias.json``, ``bias.md`` and ``bias.png``."""

from __future__ import annotations

import sys
from pathlib import Path

from ..evaluation.bias import BiasConfig, format_report, probe_bias
from ..fsutil import atomic_dir, check_output_dir, write_json
from ..tasks.factory import load_model
from .plots import _figure, _save


def plot_bias(result: dict, out_png) -> Path:
    """(b) log-ratio per occupation (causal LMs) and (c) score difference per sentence pair, side by side."""
    panels = ["occupations"] if "occupations" in result else []
    panels.append("sentences")
    fig = _figure((6.0 * len(panels), 4.6))
    for i, name in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if name == "occupations":
            items = sorted(result["occupations"]["by_occupation"].items(), key=lambda kv: kv[1])
            values = [v for _, v in items]
            ax.barh([o for o, _ in items], values, color=["tab:red" if v < 0 else "tab:blue" for v in values])
            ax.axvline(0, color="0.3", linewidth=1)
            ax.set_xlabel("log p(male) - log p(female)")
            ax.set_title(f"(b) occupations, mean {result['occupations']['mean_log_ratio']:+.2f}")
            ax.tick_params(axis="y", labelsize=7)
        else:
            diffs = [r["score_stereotype"] - r["score_anti"] for r in result["sentences"]["rows"]]
            ax.bar(range(len(diffs)), diffs, color=["tab:orange" if d > 0 else "tab:green" for d in diffs])
            ax.axhline(0, color="0.3", linewidth=1)
            ax.set_xlabel("sentence pair")
            ax.set_ylabel("score(stereotype) - score(anti)")
            ax.set_title(f"(c) prefers stereotype in {result['sentences']['prefers_stereotype']:.0%} of pairs")
        ax.grid(True, alpha=0.3)
    # The numbers need these caveats wherever they are shown, the figure included.
    caveats = []
    if result.get("occupations", {}).get("uneven_tokens"):
        caveats.append(f"(b) words of different token lengths ({'; '.join(result['occupations']['uneven_tokens'])}): "
                       f"the log-ratio includes the extra tokens' cost, so compare occupations with each other, not "
                       f"with 0")
    if result["sentences"].get("uneven_pairs"):
        caveats.append(f"(c) {result['sentences']['uneven_pairs']} of {len(result['sentences']['rows'])} pairs differ "
                       f"in token length: a score is a sum over tokens, the longer sentence scores lower for that "
                       f"alone")
    if caveats:
        import textwrap

        text = "\n".join(textwrap.fill("Caution: " + c, 70 * len(panels)) for c in caveats)
        fig.text(0.01, 0.01, text, fontsize=7, va="bottom", ha="left", color="0.25")
        fig.tight_layout(rect=(0, 0.06 * (1 + text.count("\n")), 1, 1))
    else:
        fig.tight_layout()
    return _save(fig, out_png)


def run_bias_probe(model_dir, cfg: BiasConfig | None = None, out=None, overwrite: bool = False) -> dict:
    """``transferlab probe bias``: load, probe, print the report; write bias.json, bias.md, bias.png to ``out``."""
    if out is not None:
        check_output_dir(out, overwrite, "bias probe output")
    module, tokenizer, _ = load_model(model_dir)
    result = probe_bias(module, tokenizer, cfg)
    report = format_report(result)
    print(report)
    if out is not None:
        with atomic_dir(out) as tmp:
            write_json(tmp / "bias.json", {"model": str(model_dir), **result})
            (tmp / "bias.md").write_text(report + "\n", encoding="utf-8")
            plot_bias(result, tmp / "bias.png")
        print(f"wrote {out}", file=sys.stderr)
    return result
