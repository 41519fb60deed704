"""Generation speed with and without the KV cache, side by side in one run.

Builds a random causal LM of each preset (or loads --model), decodes the same prompts greedily with the cache and
without it, and prints tokens/s for both and the ratio. Both sides generate exactly the same tokens (checked),
so the ratio is the cache's whole effect. Without the cache every step re-runs the full sequence, so the gain
grows with prompt length + new tokens.

    python benchmarks/generate.py                                    # mini, batch 1 and 8, 128 + 128 tokens
    python benchmarks/generate.py --models tiny,mini,small --prompt-len 256 --new-tokens 256
    python benchmarks/generate.py --model runs/clm-mini/final        # a trained checkpoint
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferlab.evaluation.generate import GenerationConfig, generate_ids  # noqa: E402
from transferlab.heads import LMHead  # noqa: E402
from transferlab.models import build_backbone, preset  # noqa: E402

EOS, PAD = 6, 0


def random_lm(name: str, vocab: int, max_len: int):
    torch.manual_seed(0)
    backbone = build_backbone(preset(name, "decoder", vocab, max_len=max_len, dropout=0.0)).eval()
    return backbone, LMHead(backbone.config, backbone.wte).eval()


def timed(backbone, head, prompts, new_tokens: int, use_cache: bool, repeats: int) -> tuple[float, list]:
    cfg = GenerationConfig(max_new_tokens=new_tokens, use_cache=use_cache, stop_at_eos=False)
    generate_ids(backbone, head, [p[:8] for p in prompts], GenerationConfig(max_new_tokens=2), EOS, PAD)  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = generate_ids(backbone, head, prompts, cfg, EOS, PAD)
        best = min(best, time.perf_counter() - t0)
    return len(prompts) * new_tokens / best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mini", help="comma-separated presets (random weights)")
    p.add_argument("--model", help="a causal-LM checkpoint directory instead of random presets")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--repeats", type=int, default=3, help="best of N")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    if a.model:
        from transferlab.evaluation.generate import causal_lm, load_causal_lm

        module, _ = load_causal_lm(a.model)
        models = {a.model: causal_lm(module)}
    else:
        max_len = a.prompt_len + a.new_tokens + 1
        models = {name: random_lm(name, a.vocab_size, max_len) for name in a.models.split(",")}
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} threads, "
          f"prompt {a.prompt_len} + {a.new_tokens} new tokens, greedy, best of {a.repeats}")
    print(f"{'model':<12} {'batch':>5} {'no cache tok/s':>15} {'cache tok/s':>12} {'ratio':>7}")
    for name, (backbone, head) in models.items():
        vocab = backbone.config.vocab_size
        for bs in (int(b) for b in a.batch_sizes.split(",")):
            g = torch.Generator().manual_seed(bs)
            prompts = [[EOS] + torch.randint(7, vocab, (a.prompt_len - 1,), generator=g).tolist() for _ in range(bs)]
            plain, out_plain = timed(backbone, head, prompts, a.new_tokens, False, a.repeats)
            cached, out_cached = timed(backbone, head, prompts, a.new_tokens, True, a.repeats)
            same = "" if out_plain == out_cached else "  (outputs differ!)"
            print(f"{Path(name).name:<12} {bs:>5} {plain:>15.1f} {cached:>12.1f} {cached / plain:>6.2f}x{same}")


if __name__ == "__main__":
    main()
