"""TWN ternary weights: threshold and alpha on hand-computed tensors, alpha as the least-squares optimum,
the exact threshold of Eq. 6 against a brute-force search, the straight-through gradient, and ResNet-18B."""
import itertools

import pytest
import torch

from common.models import build_model
from common.quant import build_quantizer


def tern(**kw):
    return build_quantizer({"name": "ternary", **kw})


def test_threshold_and_alpha_by_hand():
    w = torch.tensor([[0.9, -0.1, 0.3, -0.6], [0.05, 0.2, -0.4, 0.0]])
    # mean|W| = 2.55 / 8 = 0.31875; Delta = 0.7 * 0.31875 = 0.223125 -> I = {0.9, 0.3, -0.6, -0.4}
    # alpha = (0.9 + 0.3 + 0.6 + 0.4) / 4 = 0.55
    expected = torch.tensor([[0.55, 0.0, 0.55, -0.55], [0.0, 0.0, -0.55, 0.0]])
    assert torch.allclose(tern(t=0.7)(w), expected)
    # t = 0.75: Delta = 0.2390625, same set here; per filter: row 0 mean 0.475 -> Delta 0.3325 -> {0.9, -0.6},
    # alpha 0.75; row 1 mean 0.1625 -> Delta 0.11375 -> {0.2, -0.4}, alpha 0.3
    assert torch.allclose(tern(t=0.75)(w), expected)
    per_filter = torch.tensor([[0.75, 0.0, 0.0, -0.75], [0.0, 0.3, -0.3, 0.0]])
    assert torch.allclose(tern(t=0.7, per="filter")(w), per_filter)


@pytest.mark.parametrize("per", ["layer", "filter"])
def test_alpha_is_the_least_squares_optimum_for_its_mask(per):
    w = torch.randn(6, 3, 3, 3)
    q = tern(per=per)(w)
    dims = (1, 2, 3) if per == "filter" else (0, 1, 2, 3)
    mask = (q != 0).double()
    sign = torch.sign(q).double()
    wd = w.double()
    alpha = (q.abs().double().amax(dim=dims, keepdim=True))
    # brute force over a fine grid of alphas around the closed form: none does better
    for f in torch.linspace(0.8, 1.2, 81, dtype=torch.float64):
        worse = ((wd - f * alpha * sign) ** 2).sum(dim=dims)
        best = ((wd - alpha * sign) ** 2).sum(dim=dims)
        assert (best <= worse + 1e-9).all()
    # and it is the closed form (W . W~) / (W~ . W~) of Algorithm 1
    closed = (wd * sign).sum(dim=dims, keepdim=True) / mask.sum(dim=dims, keepdim=True)
    assert torch.allclose(alpha, closed, atol=1e-6)


def test_exact_threshold_beats_every_other_mask_on_small_tensors():
    """Eq. 6 maximises (sum_I |W|)^2 / |I|, i.e. minimises ||W - alpha W~||^2 over all ternary W~: check against
    every one of the 3^n ternary patterns of small tensors."""
    q = tern(threshold="exact")
    for _ in range(20):
        w = torch.randn(7, dtype=torch.float64)
        err = ((w - q(w)) ** 2).sum()
        best = min(((w - (w @ torch.tensor(p, dtype=w.dtype)) / max(sum(map(abs, p)), 1) * torch.tensor(p, dtype=w.dtype)) ** 2).sum()
                   for p in itertools.product((-1, 0, 1), repeat=7))
        assert err <= best + 1e-12


def test_approx_threshold_is_close_to_exact_for_gaussian_weights():
    w = torch.randn(20000)
    e_approx = ((w - tern(t=0.75)(w)) ** 2).sum()
    e_exact = ((w - tern(threshold="exact")(w)) ** 2).sum()
    assert e_exact <= e_approx <= 1.01 * e_exact  # the paper's 0.75 E|W| rule is near-optimal for Gaussians


def test_levels_and_straight_through_gradient():
    w = torch.randn(16, 8, requires_grad=True)
    out = tern(per="filter")(w)
    for row in out.detach():
        assert len(set(row.abs().unique().tolist()) - {0.0}) == 1  # one alpha per filter, three levels
    g = torch.randn(16, 8)
    out.backward(g)
    assert torch.equal(w.grad, g)  # identity STE, no clip mask


def test_bits_validation_rejects_bad_t():
    from common.config import validate
    from common.errors import UserError

    with pytest.raises(UserError, match=r"quant.rules\[0\].weight.t"):
        validate({"quant": {"rules": [{"weight": {"name": "ternary", "t": 0}}]}})


def test_resnet18b_widens_every_stage():
    m = build_model({"name": "resnet18", "width": 1.5}, (3, 64, 64), 10)
    assert [m.layer1[0].conv1.out_channels, m.layer2[0].conv1.out_channels, m.layer3[0].conv1.out_channels,
            m.layer4[0].conv1.out_channels, m.fc.in_features] == [96, 192, 384, 768, 768]
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 10)
