"""Image backbones (ResNet, ViT) and their presets: shapes, gradients, the backbone contract, JSON round trips, and
fitting a checkpoint to other inputs (channels, image size) or refusing it."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.errors import UserError
from transferlab.heads import ClassificationHead
from transferlab.models import (BACKBONES, CONFIGS, IMAGE_PRESETS, build_backbone, config_from_dict, image_preset,
                                preset)
from transferlab.models.base import layer_groups
from transferlab.models.vit import resample_positions

FAST = ["resnet-tiny", "resnet-mini", "vit-tiny", "vit-mini"]  # resnet18 only for its size and one forward


def pixels(B=3, C=1, H=28, W=28, seed=0) -> torch.Tensor:
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed))


def model(name: str, **kw):
    torch.manual_seed(0)
    return build_backbone(image_preset(name, **kw))


def randomise_batchnorm(m: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine weights (fresh ones are the identity, and the zero
    gammas make each block the identity), so that an equality test exercises the whole ResNet."""
    g = torch.Generator().manual_seed(1)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data = torch.rand(n, generator=g) + 0.5
            bn.bias.data = torch.randn(n, generator=g) * 0.1
            bn.running_mean = torch.randn(n, generator=g) * 0.1
            bn.running_var = torch.rand(n, generator=g) + 0.5
    return m


@pytest.mark.parametrize("name", FAST)
def test_forward_shape_and_contract(name):
    m = model(name).eval()
    x = pixels()
    hidden = m(x)
    grid = 7 if name.startswith("vit") else 28 // 2 ** (len(m.config.widths) - 1)  # patches, or last feature map
    assert hidden.shape == (3, grid * grid, m.config.d_model)
    assert torch.isfinite(hidden).all()
    features, attention = m.features({"pixels": x})
    assert attention is None and torch.equal(features, hidden)
    assert m.count({"pixels": x}) == 3 and (m.modality, m.unit) == ("image", "images")


def test_resnet18_size_and_forward():
    m = model("resnet18").eval()
    assert 11.0e6 < sum(p.numel() for p in m.parameters()) < 11.3e6  # ResNet-18's 11.2M (its fc aside)
    hidden = m(pixels(B=2))
    assert hidden.shape == (2, 16, 512) and torch.isfinite(hidden).all()  # 28 -> 28, 14, 7, 4


@pytest.mark.parametrize("name", FAST)
def test_every_parameter_gets_a_gradient(name):
    backbone = model(name)
    head = ClassificationHead(backbone.config, 5)
    assert head.dense is None, "image heads have no pooler"
    hidden, attention = backbone.features({"pixels": pixels()})
    loss = F.cross_entropy(head(hidden, attention), torch.tensor([0, 3, 4]))
    loss.backward()
    params = list(backbone.named_parameters()) + list(head.named_parameters())
    bad = [n for n, p in params if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, bad
    # the stem is reached through every block (a zero-init ResNet block passes its shortcut on)
    stem = backbone.conv1.weight if name.startswith("resnet") else backbone.patch_embed.weight
    assert stem.grad.abs().sum() > 0


def test_resnet_blocks_start_as_the_identity():
    """Goyal et al.'s zero-init: a fresh block without a projection passes its (non-negative) input on unchanged."""
    block = model("resnet-mini").layer1[1].eval()
    x = pixels(C=16).relu()
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("name", list(IMAGE_PRESETS))
def test_config_round_trips_through_json(name):
    cfg = image_preset(name, in_channels=3, image_size=(32, 32), dropout=0.1)
    back = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and type(back) is type(cfg)
    assert cfg.modality == "image" and cfg.default_pooling == "mean" and "modality" not in cfg.to_dict()


@pytest.mark.parametrize("name", FAST)
def test_layer_groups_hold_every_parameter_once(name):
    backbone = model(name)
    head = ClassificationHead(backbone.config, 4)
    groups = layer_groups(backbone, head)
    assert len(groups) == 1 + len(backbone.blocks) + 1  # stem, blocks, head
    ids = [id(p) for g in groups for p in g]
    everything = list(backbone.parameters()) + list(head.parameters())
    assert len(ids) == len(set(ids)) == len(everything)
    assert set(ids) == {id(p) for p in everything}
    stem = {id(p) for p in groups[0]}
    if name.startswith("vit"):
        assert stem == {id(backbone.pos_embed), id(backbone.patch_embed.weight), id(backbone.patch_embed.bias)}
        assert id(backbone.ln_f.weight) in {id(p) for p in groups[-2]}, "the final norm joins the last block"
    else:
        assert stem == {id(backbone.conv1.weight), id(backbone.bn1.weight), id(backbone.bn1.bias)}


@pytest.mark.parametrize("name", ["resnet-tiny", "vit-tiny"])
def test_channel_adaptation_keeps_the_output(name):
    """RGB -> grayscale sums the first filters: the adapted model on x gives the RGB model's output on x in all
    three channels. Grayscale -> RGB repeats them scaled by 1/3: the same holds the other way round."""
    x = pixels()
    rgb = randomise_batchnorm(model(name, in_channels=3)).eval()
    gray = model(name, in_channels=1).eval()
    weights, notes = gray.adapt_weights(rgb.state_dict(), rgb.config.to_dict(), "runs/rgb/final")
    assert notes == ["adapted the first convolution from 3 to 1 input channels by summing its filters (timm's rule)"]
    gray.load_state_dict(weights)
    torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)

    back = model(name, in_channels=3).eval()
    weights, notes = back.adapt_weights(gray.state_dict(), gray.config.to_dict(), "runs/gray/final")
    assert "from 1 to 3 input channels" in notes[0] and "1/3" in notes[0]
    back.load_state_dict(weights)
    torch.testing.assert_close(back(x.repeat(1, 3, 1, 1)), gray(x), atol=1e-5, rtol=1e-5)


def test_same_input_needs_no_adaptation():
    for name in ("resnet-tiny", "vit-tiny"):
        m = model(name)
        weights, notes = m.adapt_weights(m.state_dict(), m.config.to_dict(), "ckpt")
        assert notes == [] and all(torch.equal(weights[k], v) for k, v in m.state_dict().items())
    # a ResNet takes any image size: the config does not even record one
    m = model("resnet-tiny").eval()
    assert m(pixels(H=32, W=20)).shape == (3, 8 * 5, 64)


def test_vit_position_table_is_resampled_for_another_image_size():
    src = model("vit-tiny").eval()
    dst = model("vit-tiny", image_size=(32, 32)).eval()
    weights, notes = dst.adapt_weights(src.state_dict(), src.config.to_dict(), "runs/vit/final")
    assert weights["pos_embed"].shape == (1, 64, 128)  # a 7x7 grid became 8x8
    assert len(notes) == 1 and "7x7 to a 8x8 patch grid" in notes[0] and "bicubic" in notes[0]
    dst.load_state_dict(weights)
    out = dst(pixels(H=32, W=32))
    assert out.shape == (3, 64, 128) and torch.isfinite(out).all()
    # every other weight is carried as it is
    assert all(torch.equal(weights[k], v) for k, v in src.state_dict().items() if k != "pos_embed")

    # resampling to the same grid is the identity, and the model's output is unchanged
    table = src.pos_embed.detach()
    assert torch.equal(resample_positions(table, (7, 7), (7, 7)), table)
    same = model("vit-tiny").eval()
    w, _ = same.adapt_weights(src.state_dict(), src.config.to_dict(), "ckpt")
    same.load_state_dict(w)
    torch.testing.assert_close(same(pixels()), src(pixels()))


def test_position_resampling_keeps_rows_and_columns_apart():
    """On a non-square grid: a table holding each patch's row in channel 0 and its column in channel 1 still
    does after resampling (rows stay rows), and varies smoothly along them."""
    h, w = 7, 5
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float), torch.arange(w, dtype=torch.float),
                                indexing="ij")
    table = torch.stack([rows, cols], -1).reshape(1, h * w, 2)
    new = resample_positions(table, (h, w), (14, 10)).reshape(14, 10, 2)
    torch.testing.assert_close(new[..., 0], new[:, :1, 0].expand(14, 10))  # the row channel is constant on a row
    torch.testing.assert_close(new[..., 1], new[:1, :, 1].expand(14, 10))
    assert (new[1:, 0, 0] >= new[:-1, 0, 0]).all() and new[-1, 0, 0] > new[0, 0, 0] + 5
    assert (new[0, 1:, 1] >= new[0, :-1, 1]).all() and new[0, -1, 1] > new[0, 0, 1] + 3


@pytest.mark.parametrize("name,other,field", [("resnet-tiny", dict(widths=(32, 64, 128)), "widths"),
                                              ("resnet-tiny", dict(depths=(1, 2, 1)), "depths"),
                                              ("vit-tiny", dict(d_model=64), "d_model"),
                                              ("vit-tiny", dict(patch_size=7), "patch_size"),
                                              ("vit-tiny", dict(n_head=4), "n_head")])
def test_incompatible_weights_name_the_checkpoint_and_the_fix(name, other, field):
    src = model(name, **other)
    dst = model(name)
    with pytest.raises(UserError, match=rf"runs/other/final.*{field}.*--init scratch"):
        dst.adapt_weights(src.state_dict(), src.config.to_dict(), "runs/other/final")


def test_weights_of_another_family_are_refused():
    src, dst = model("vit-tiny"), model("resnet-tiny")
    with pytest.raises(UserError, match="runs/vit/final holds a 'vit' backbone.*'resnet'"):
        dst.adapt_weights(src.state_dict(), src.config.to_dict(), "runs/vit/final")


def test_weights_that_do_not_match_their_own_config_are_refused():
    m = model("resnet-tiny")
    weights = m.state_dict()
    weights["layer1.0.conv1.weight"] = torch.zeros(8, 16, 3, 3)
    with pytest.raises(UserError, match=r"ckpt.*layer1\.0\.conv1\.weight is \(8, 16, 3, 3\)"):
        m.adapt_weights(weights, m.config.to_dict(), "ckpt")


def test_resnet_runs_channels_last_under_bf16_autocast():
    m = randomise_batchnorm(model("resnet-tiny")).eval()
    x = pixels()
    expected = m(x)
    m = m.to(memory_format=torch.channels_last)
    xc = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(m(xc), expected, atol=1e-4, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(xc)
    assert out.dtype == torch.bfloat16 and out.shape == expected.shape
    assert F.cosine_similarity(out.float().flatten(), expected.flatten(), dim=0) > 0.99
    m.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(xc).float().pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_vit_pieces_for_masked_image_modelling():
    m = model("vit-tiny", in_channels=3, image_size=(28, 20)).eval()
    x = pixels(C=3, H=28, W=20)
    patches = m.patchify(x)
    assert patches.shape == (3, 7 * 5, 4 * 4 * 3)
    assert torch.equal(m.unpatchify(patches), x)
    # patch 1 is the second 4x4 square of the top row, its pixels row by row with the channels last
    torch.testing.assert_close(patches[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))
    tokens = m.embed(x)
    assert tokens.shape == (3, 35, 128)
    torch.testing.assert_close(m.encode(tokens), m(x))
    visible = tokens[:, [0, 5, 17, 34]]  # MAE encodes only the visible patches
    assert m.encode(visible).shape == (3, 4, 128)


def test_pixels_that_do_not_fit_the_backbone_are_a_user_error():
    with pytest.raises(UserError, match="3 channels.*in_channels=1"):
        model("resnet-tiny")(pixels(C=3))
    with pytest.raises(UserError, match="32x32.*image_size=\\(28, 28\\)"):
        model("vit-tiny")(pixels(H=32, W=32))
    with pytest.raises(UserError, match="float pixels"):
        model("vit-tiny")(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_presets_registry_and_config_errors():
    assert {"resnet", "vit"} <= set(BACKBONES) and set(CONFIGS) == set(BACKBONES)
    with pytest.raises(UserError, match="unknown image model preset 'resnet50'.*resnet-tiny, resnet-mini"):
        image_preset("resnet50")
    with pytest.raises(UserError, match="no option patch_size"):
        image_preset("resnet-tiny", patch_size=4)
    with pytest.raises(UserError, match="unknown backbone family 'convnext'.*encoder.*resnet, vit"):
        config_from_dict({"family": "convnext"})
    with pytest.raises(UserError, match="unknown fields \\['bogus'\\]"):
        config_from_dict({**image_preset("vit-tiny").to_dict(), "bogus": 1})
    with pytest.raises(UserError, match="one entry per stage"):
        image_preset("resnet-tiny", depths=(1, 1))
    with pytest.raises(UserError, match="positive integers"):
        image_preset("resnet-tiny", widths=(16, 0, 64))
    with pytest.raises(UserError, match="patch_size=4 does not divide image_size=\\(30, 28\\)"):
        image_preset("vit-tiny", image_size=(30, 28))
    with pytest.raises(UserError, match="not divisible by n_head"):
        image_preset("vit-tiny", n_head=3)
    with pytest.raises(UserError, match="in_channels=0"):
        image_preset("vit-tiny", in_channels=0)
    # text configs go through the same registry unchanged
    for family in ("encoder", "decoder", "encoder_decoder", "embedding", "rnn"):
        cfg = preset("tiny", family, vocab_size=50, max_len=16)
        assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        assert build_backbone(cfg).config is cfg
