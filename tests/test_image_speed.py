"""The speed changes of the image benchmark keep the numbers: channels-last ResNets compute what NCHW ones did and
save plain contiguous checkpoints, a resumed optimizer takes its parameters' layout, bf16 attention's math path
matches SDPA, and predictions in bf16 match fp32 to bf16 rounding (and stay fp32 one image at a time)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferlab.models import ResNet, build_backbone, image_preset
from transferlab.objectives.classification import SequenceClassifier


def _classifier(preset: str = "resnet-tiny", in_channels: int = 1, seed: int = 0) -> SequenceClassifier:
    torch.manual_seed(seed)
    return SequenceClassifier(build_backbone(image_preset(preset, in_channels=in_channels)), 10)


def _nchw_twin(module: SequenceClassifier, monkeypatch) -> SequenceClassifier:
    """The same resnet-tiny classifier and weights, built as before channels-last (plain NCHW)."""
    with monkeypatch.context() as m:
        m.setattr(ResNet, "memory_format", torch.contiguous_format)
        twin = _classifier("resnet-tiny", module.config.in_channels)
    twin.load_state_dict(module.state_dict())
    return twin


@pytest.mark.parametrize("in_channels", [1, 3])
def test_channels_last_resnet_computes_what_nchw_did(in_channels, monkeypatch):
    module = _classifier(in_channels=in_channels)
    twin = _nchw_twin(module, monkeypatch)
    assert module.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert twin.backbone.layer1[0].conv1.weight.is_contiguous()
    g = torch.Generator().manual_seed(1)
    batch = {"pixels": torch.randn(6, in_channels, 28, 28, generator=g), "labels": torch.randint(0, 10, (6,),
                                                                                                generator=g)}
    # fp32, train mode (BatchNorm on batch statistics): logits, loss and every gradient agree to float rounding
    out, ref = module(batch), twin(batch)
    torch.testing.assert_close(out["logits"], ref["logits"], rtol=1e-4, atol=1e-5)
    out["loss"].backward()
    ref["loss"].backward()
    grads = dict(twin.named_parameters())
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-3, atol=1e-5, msg=name)
        assert p.grad.stride() == p.stride()  # AdamW's fused kernel relies on it
    # bf16 autocast, eval mode: the same logits to bf16 rounding
    module.eval(), twin.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = module(batch)["logits"], twin(batch)["logits"]
    assert (a - b).abs().max() < 0.05 * b.abs().max() + 1e-3
    # the backbone's flattened output is (B, H'W', C), the same tensor in both layouts
    hidden = module.backbone(batch["pixels"])
    assert hidden.shape == (6, 49, 64) and hidden.is_contiguous()
    torch.testing.assert_close(hidden, twin.backbone(batch["pixels"]), rtol=1e-4, atol=1e-5)


def test_channels_last_checkpoint_is_contiguous_and_round_trips(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from transferlab.inputs.image import ImageInputs
    from transferlab.tasks.factory import load_model
    from transferlab.training.checkpoint import save_checkpoint

    inputs = ImageInputs((28, 28), 1, (0.5,), (0.3,))
    module = _classifier().eval()
    save_checkpoint(tmp_path / "ck", module, inputs)
    saved = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert saved["backbone.conv1.weight"].is_contiguous() and saved["backbone.conv1.weight"].shape == (16, 1, 3, 3)
    loaded, _, _ = load_model(tmp_path / "ck")
    assert loaded.backbone.layer2[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = {"pixels": torch.randn(3, 1, 28, 28)}
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x)["logits"], module(x)["logits"], rtol=0, atol=0)
    # a checkpoint written by an NCHW ResNet (before this change) loads into the channels-last one
    twin = _nchw_twin(module, monkeypatch)
    save_checkpoint(tmp_path / "old", twin, inputs)
    old, _, _ = load_model(tmp_path / "old")
    with torch.no_grad():
        torch.testing.assert_close(old.eval()(x)["logits"], module(x)["logits"], rtol=1e-4, atol=1e-5)


def test_resumed_optimizer_state_takes_the_parameter_layout(tmp_path, monkeypatch):
    """Moments saved contiguous (an NCHW run) resumed onto channels-last weights: the fused AdamW must update the
    same elements as an uninterrupted NCHW run."""
    from transferlab.training.checkpoint import load_trainer_state, save_checkpoint
    from transferlab.training.optim import build_optimizer

    module = _classifier()
    twin = _nchw_twin(module, monkeypatch)
    g = torch.Generator().manual_seed(2)
    batches = [{"pixels": torch.randn(4, 1, 28, 28, generator=g), "labels": torch.randint(0, 10, (4,), generator=g)}
               for _ in range(2)]
    old_opt = build_optimizer(twin, 1e-2)
    twin(batches[0])["loss"].backward()
    old_opt.step()
    old_opt.zero_grad(set_to_none=True)
    save_checkpoint(tmp_path / "step", twin, trainer_state={"step": 1}, optimizer=old_opt)

    module.load_state_dict(twin.state_dict())
    new_opt = build_optimizer(module, 1e-2)
    load_trainer_state(tmp_path / "step", new_opt)
    for p in module.parameters():
        assert new_opt.state[p]["exp_avg"].stride() == p.stride()
    for m, opt in ((module, new_opt), (twin, old_opt)):
        m(batches[1])["loss"].backward()
        opt.step()
    reference = dict(twin.named_parameters())
    for name, p in module.named_parameters():
        torch.testing.assert_close(p, reference[name], rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_attention_math_path_matches_sdpa():
    from transferlab.models.layers import MATH_ATTENTION_MAX, Attention, _math_is_faster

    torch.manual_seed(0)
    attn = Attention(64, 2, dropout=0.0)
    x = torch.randn(4, 49, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = attn.qkv(x)[..., :64].view(4, 49, 2, 32).transpose(1, 2)
        assert _math_is_faster(q, q, None)
        y = attn(x)
    y.float().sum().backward()
    got_x, got_w = x.grad.clone(), attn.qkv.weight.grad.clone()
    x.grad, attn.qkv.weight.grad = None, None
    ref = attn(x)  # fp32: SDPA, as before
    ref.sum().backward()
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()
    assert (got_x - x.grad).abs().max() < 0.05 * x.grad.abs().max()
    assert (got_w - attn.qkv.weight.grad).abs().max() < 0.05 * attn.qkv.weight.grad.abs().max()
    # fp32, masked or long attention keeps SDPA
    assert not _math_is_faster(q.float(), q.float(), None)
    assert not _math_is_faster(q, q, torch.ones(4, 1, 1, 49, dtype=torch.bool))
    long = torch.empty(1, 1, int(MATH_ATTENTION_MAX ** 0.5) + 1, 8, dtype=torch.bfloat16)
    assert not _math_is_faster(long, long, None)


def test_predictions_in_bf16_match_fp32():
    from transferlab.data.batches import ImageExamples
    from transferlab.evaluation.predict import predict_logits
    from transferlab.training.precision import resolve_precision

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28, 1)).astype(np.uint8)
    examples = ImageExamples(images, None, (0.5,), (0.3,))
    for preset in ("resnet-tiny", "vit-tiny"):
        module = _classifier(preset).eval()
        fp32 = predict_logits(module, examples, batch_size=16, precision="fp32")
        with torch.no_grad():
            direct = module(examples.collate(range(40)))["logits"]
        torch.testing.assert_close(fp32, direct, rtol=1e-4, atol=1e-5)
        bf16 = predict_logits(module, examples, batch_size=16, precision="bf16")
        assert bf16.dtype == torch.float32 and bf16.shape == (40, 10)
        assert (bf16 - fp32).abs().max() < 0.05 * fp32.abs().max() + 1e-3, preset
        # "auto" is bf16 for batches (where the CPU has it) and fp32 one image at a time, where bf16 is slower
        auto = predict_logits(module, examples, batch_size=16)
        expected = bf16 if resolve_precision("auto") == "bf16" else fp32
        torch.testing.assert_close(auto, expected, rtol=0, atol=0)
        torch.testing.assert_close(predict_logits(module, examples.subset(range(3)), batch_size=1), fp32[:3],
                                   rtol=1e-4, atol=1e-5)
