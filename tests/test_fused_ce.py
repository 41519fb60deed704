"""The chunked linear cross-entropy equals the plain one, in value and in every gradient."""

import pytest
import torch
import torch.nn.functional as F

from transferlab.heads.fused_ce import linear_cross_entropy


@pytest.mark.parametrize("chunk", [3, 7, 100])
def test_matches_reference_with_ignored_rows(chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(20, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 8, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(30, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 30, (20,), generator=g)
    targets[::4] = -100
    ref = F.cross_entropy(F.linear(hidden, weight, bias), targets, ignore_index=-100)
    ref_grads = torch.autograd.grad(ref * 2.5, (hidden, weight, bias))
    out = linear_cross_entropy(hidden, weight, bias, targets, chunk=chunk)
    grads = torch.autograd.grad(out * 2.5, (hidden, weight, bias))
    torch.testing.assert_close(out, ref.float() if out.dtype == torch.float32 else ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_no_grad_path_and_bf16_autocast_close():
    g = torch.Generator().manual_seed(1)
    hidden, weight, bias = torch.randn(64, 16, generator=g), torch.randn(50, 16, generator=g), torch.zeros(50)
    targets = torch.randint(0, 50, (64,), generator=g)
    ref = F.cross_entropy(F.linear(hidden, weight, bias), targets)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, bias, targets), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = linear_cross_entropy(hidden, weight, bias, targets)
    assert abs(float(approx) - float(ref)) / float(ref) < 0.02


def test_without_bias():
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(10, 4, generator=g, requires_grad=True)
    weight = torch.randn(12, 4, generator=g, requires_grad=True)
    targets = torch.randint(0, 12, (10,), generator=g)
    ref = F.cross_entropy(F.linear(hidden, weight), targets)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    out = linear_cross_entropy(hidden, weight, None, targets, chunk=4)
    for a, b in zip(torch.autograd.grad(out, (hidden, weight)), ref_grads):
        torch.testing.assert_close(a, b)


def test_exact_for_confident_wrong_predictions():
    """Logit gaps of thousands (a diverging model) still give the exact loss: nothing underflows to log(0)."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(16, 8, generator=g) * 300
    weight = torch.randn(40, 8, generator=g)
    targets = torch.randint(0, 40, (16,), generator=g)
    ref = F.cross_entropy(F.linear(hidden, weight), targets)
    out = linear_cross_entropy(hidden, weight, None, targets, chunk=5)
    assert float(ref) > 500
    torch.testing.assert_close(out, ref)
