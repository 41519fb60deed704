"""The audio backbone and objectives: every preset gets gradients, padding and the causal mask hide what they must,
the span masking's statistics, a few pretraining steps lower each objective's loss, and the MFCC pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.data.audio import AudioSet, MelSettings
from transferlab.data.batches import FrameCrops
from transferlab.errors import UserError
from transferlab.models import AUDIO_PRESETS, audio_preset, build_backbone, config_from_dict
from transferlab.models.base import layer_groups
from transferlab.objectives import AUDIO_OBJECTIVES, APC, MaskedFrames, SpanMasking
from transferlab.objectives.audio import span_mask
from transferlab.objectives.classification import SequenceClassifier


def frames_batch(B=3, T=64, n_mels=80, lengths=(64, 40, 17), seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    attention = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return {"frames": torch.randn(B, T, n_mels, generator=g) * attention[..., None], "attention": attention}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", list(AUDIO_PRESETS))
def test_every_audio_backbone_gets_gradients(name, causal):
    cfg = audio_preset(name, n_mels=40, causal=causal)
    assert config_from_dict(cfg.to_dict()) == cfg
    model = SequenceClassifier(build_backbone(cfg), num_labels=10)
    batch = frames_batch(n_mels=40)
    batch["labels"] = torch.tensor([1, 2, 3])
    out = model(batch)
    assert out["logits"].shape == (3, 10) and torch.isfinite(out["logits"]).all()
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing
    hidden, attention = model.backbone.features(batch)
    assert hidden.shape == (3, 16, cfg.d_model) and attention.sum(1).tolist() == [16, 10, 5]  # ceil(n / 4)
    assert model.backbone.count(batch) == 3 * 64
    groups = layer_groups(model.backbone, model.heads)
    assert len(groups) == cfg.n_layer + 2 and sum(map(len, groups)) == len(list(model.parameters()))


@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_nothing_at_real_positions(causal):
    torch.manual_seed(0)
    backbone = build_backbone(audio_preset("audio-tiny", causal=causal)).eval()
    clip = torch.randn(1, 48, 80)
    alone = backbone(clip)
    padded = torch.cat([clip, torch.zeros(1, 32, 80)], 1)
    with_padding = backbone(padded, torch.tensor([[1] * 48 + [0] * 32]))
    torch.testing.assert_close(with_padding[:, :12], alone, atol=1e-5, rtol=1e-4)


def test_causal_positions_do_not_see_later_frames():
    torch.manual_seed(0)
    backbone = build_backbone(audio_preset("audio-tiny", causal=True)).eval()
    x = torch.randn(1, 64, 80)
    y = x.clone()
    y[:, 4 * 7 + 4:] = torch.randn(1, 64 - 32, 80)  # change every frame after position 7's last one (4p + 3)
    a, b = backbone(x), backbone(y)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])
    bidirectional = build_backbone(audio_preset("audio-tiny")).eval()
    assert not torch.allclose(bidirectional(x)[:, :8], bidirectional(y)[:, :8])


def test_span_masking_statistics():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([100, 37, 3, 0, 64] * 40)
    mask = span_mask(lengths, 100, 0.4, 4, g)
    for row, n in zip(mask, lengths.tolist()):
        k = min(round(n * 0.4 / 4), n // 4)
        assert int(row.sum()) == 4 * k, "exactly round(p n / span) spans of span positions"
        assert not row[n:].any(), "padding is never masked"
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.int().numpy(), 0])))[::2]
        assert all(r % 4 == 0 for r in runs), "runs are whole spans (touching spans merge)"
    real = lengths > 0
    assert abs(float(mask.sum()) / float(lengths[real].sum()) - 0.4) < 0.02
    # every position of a long row is masked about equally often (no edge bias worth the name)
    many = span_mask(torch.full((4000,), 50), 50, 0.4, 4, torch.Generator().manual_seed(1)).float().mean(0)
    assert many[4:-4].min() > 0.3 and many.max() < 0.5
    again = span_mask(lengths, 100, 0.4, 4, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    other = span_mask(lengths, 100, 0.4, 4, torch.Generator().manual_seed(7))
    assert not torch.equal(mask, other)


def test_span_masking_corrupts_only_masked_frames():
    batch = frames_batch()
    out = SpanMasking(0.5, 2)(dict(batch), torch.Generator().manual_seed(0))
    hidden = out["mask"].repeat_interleave(4, dim=1)
    assert (out["frames"][hidden] == 0).all() and torch.equal(out["frames"][~hidden], batch["frames"][~hidden])
    assert torch.equal(out["targets"], batch["frames"]) and out["mask"].shape == (3, 16)
    with pytest.raises(UserError, match="--mask-prob"):
        SpanMasking(0.95)


def synthetic_speech(n: int, seed: int, bands: tuple[int, ...] = tuple(range(6))) -> AudioSet:
    """Clips of 'syllables': each a 120 ms frame pattern (energy in one of the mel ``bands``, 5 bins wide) following
    a fixed grammar (the next band in turn), so the past and the context predict a frame and a model can learn to."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        T = int(rng.integers(96, 160))
        x = rng.normal(-8, 0.3, (T, 40)).astype(np.float32)
        i = int(rng.integers(len(bands)))
        for start in range(0, T, 12):
            x[start:start + 12, 5 * bands[i]:5 * bands[i] + 5] += 6.0
            i = (i + 1) % len(bands)
        clips.append(x)
    lengths = np.array([len(c) for c in clips])
    return AudioSet(np.concatenate(clips).astype(np.float16), np.r_[0, np.cumsum(lengths)[:-1]], lengths, None, None,
                    "synthetic", [str(i) for i in range(n)], MelSettings(n_mels=40))


@pytest.mark.parametrize("objective", list(AUDIO_OBJECTIVES))
def test_a_few_pretraining_steps_lower_the_loss(objective):
    from transferlab.inputs.audio import AudioInputs

    torch.manual_seed(0)
    spec = AUDIO_OBJECTIVES[objective]
    module = spec.module(build_backbone(audio_preset("audio-tiny", n_mels=40, causal=spec.causal)))
    data = synthetic_speech(64, 0)
    inputs = AudioInputs.fit(data)
    crops = FrameCrops(data, inputs.mean, inputs.std, 64, spec.corruption(None, {}), global_batch=8, seed=0)
    assert torch.equal(crops.batch(3)["frames"], crops.batch(3)["frames"]), "a batch is a function of the step"
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        out = module(crops.batch(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        assert out["n_predictions"] > 0
    assert np.mean(losses[-5:]) < 0.85 * losses[0], losses


def test_objectives_refuse_the_wrong_backbone():
    with pytest.raises(UserError, match="causal"):
        APC(build_backbone(audio_preset("audio-tiny")))
    with pytest.raises(UserError, match="bidirectional"):
        MaskedFrames(build_backbone(audio_preset("audio-tiny", causal=True)))
    with pytest.raises(UserError, match="unknown audio model preset"):
        audio_preset("audio-huge")
    with pytest.raises(UserError, match="even size"):
        audio_preset("audio-tiny", d_model=66, n_head=2)


def test_mfcc_pipeline_separates_what_mfccs_see():
    from transferlab.experiments.classical import dct_matrix, mfcc_linear, mfcc_statistics

    d = dct_matrix(40, 40)
    np.testing.assert_allclose(d @ d.T, np.eye(40), atol=1e-10)
    def two_classes(n, seed):
        """class 0 speaks in the low bands, class 1 in the high ones"""
        low, high = synthetic_speech(n, seed, (0, 1, 2)), synthetic_speech(n, seed + 1, (3, 4, 5))
        frames = np.concatenate([low.features, high.features])
        lengths = np.r_[low.lengths, high.lengths]
        return AudioSet(frames, np.r_[0, np.cumsum(lengths)[:-1]], lengths, np.r_[[0] * n, [1] * n], ["low", "high"],
                        "two", [str(i) for i in range(2 * n)], low.settings)

    train, dev = two_classes(15, 0), two_classes(5, 10)
    stats = mfcc_statistics(train, n_mfcc=13)
    assert stats.shape == (30, 52) and np.isfinite(stats).all()
    metrics, n_params = mfcc_linear(train, dev, ["accuracy"], test=dev)
    assert metrics["accuracy"] == metrics["test_accuracy"] == 1.0 and n_params == 53
