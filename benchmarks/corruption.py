"""Is corruption a bottleneck? Time each pretraining corruption on the same batches, side by side with one
training step of the model it feeds, in one run.

Corruptions: MLM masking (the vectorised baseline), each BART noise function alone, BART with all five, BART's
recipe (infill 0.3 + permute 1), MASS. Batches are real packed blocks of a prepared corpus (``--corpus``), or
synthetic ones (random ordinary tokens, a sentence end every ~20 tokens, a document end every ~400) without it.

    python benchmarks/corruption.py                                       # 64x128, synthetic, mini model step
    python benchmarks/corruption.py --corpus runs/corpus --batch-size 64 --seq-len 128 --model mini
    python benchmarks/corruption.py --batch-size 8 --seq-len 32 --repeats 3 --model tiny   # seconds-long check

Prints milliseconds per batch (median of ``--repeats``) and the share of a training step it would add.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from transferlab.models import build_backbone, preset  # noqa: E402
from transferlab.objectives import BartCorruption, DenoisingLM, MassCorruption, MLMCorruption  # noqa: E402
from transferlab.objectives.denoising import N_SPECIAL  # noqa: E402

MASK, BOS, EOS, CLS, END = 4, 5, 6, 2, 7


def synthetic_blocks(B: int, T: int, vocab: int, g: torch.Generator) -> torch.Tensor:
    ids = torch.randint(N_SPECIAL + 1, vocab, (B, T), generator=g)
    ids[torch.rand(B, T, generator=g) < 1 / 20] = END
    ids[torch.rand(B, T, generator=g) < 1 / 400] = EOS
    return ids


def corpus_blocks(directory: str, B: int, T: int) -> tuple[torch.Tensor, list[int], int]:
    from transferlab.data.blocks import PackedBlocks
    from transferlab.objectives import sentence_end_ids
    from transferlab.tokenization import Tokenizer

    tokenizer = Tokenizer.load(Path(directory) / "tokenizer.json")
    blocks = PackedBlocks(directory, "train", T)
    return blocks.get_batch(range(min(B, len(blocks)))), sentence_end_ids(tokenizer), tokenizer.vocab_size


def median_ms(fn, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        fn(i)
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--model", default="mini")
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    torch.set_flush_denormal(True)
    g = torch.Generator().manual_seed(0)
    if a.corpus:
        blocks, ends, vocab = corpus_blocks(a.corpus, a.batch_size, a.seq_len)
    else:
        vocab, ends = 8000, [END]
        blocks = synthetic_blocks(a.batch_size, a.seq_len, vocab, g)
    B, T = blocks.shape

    def bart(**rates):
        rates = {"infill": 0.0, "permute": 0.0, **rates}
        return BartCorruption(MASK, BOS, EOS, tuple(ends), max_len=T, **rates)

    corruptions = {
        "mlm 15%": MLMCorruption(vocab, MASK, CLS, 0.15),
        "bart mask 0.3": bart(mask=0.3),
        "bart delete 0.3": bart(delete=0.3),
        "bart infill 0.3": bart(infill=0.3),
        "bart permute 1": bart(permute=1.0),
        "bart rotate 1": bart(rotate=1.0),
        "bart recipe (infill 0.3 + permute 1)": bart(infill=0.3, permute=1.0),
        "bart all five": bart(mask=0.1, delete=0.1, infill=0.3, permute=1.0, rotate=0.5),
        "mass span 0.5": MassCorruption(MASK, BOS, 0.5),
    }
    module = DenoisingLM(build_backbone(preset(a.model, "encoder_decoder", vocab, max_len=max(512, T), dropout=0.0)))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    batch = corruptions["bart recipe (infill 0.3 + permute 1)"](blocks, g)

    def step(_):
        optimizer.zero_grad()
        module(batch)["loss"].backward()
        optimizer.step()

    step_ms = median_ms(step, max(2, a.repeats // 3))
    print(f"{B}x{T} blocks ({'corpus ' + a.corpus if a.corpus else 'synthetic'}), {torch.get_num_threads()} "
          f"threads; one fp32 training step of {a.model} encoder-decoder (bart batch): {step_ms:.1f} ms")
    print(f"{'corruption':40s} {'ms/batch':>9s} {'% of a step':>12s}")
    for name, corruption in corruptions.items():
        ms = median_ms(lambda i, c=corruption: c(blocks, torch.Generator().manual_seed(i)), a.repeats)
        print(f"{name:40s} {ms:9.2f} {100 * ms / step_ms:11.1f}%")


if __name__ == "__main__":
    main()
