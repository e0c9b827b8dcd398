import pytest
import torch

from nni_zodarts.sparsemax import TemperedSoftmax, TemperedSparsemax, sparsemax, temperature_at


def test_output_on_simplex_with_exact_zeros():
    z = torch.tensor([[2.0, 1.0, -1.0, 0.5], [0.1, 0.1, 0.1, 0.1]])
    p = sparsemax(z)
    assert torch.allclose(p.sum(-1), torch.ones(2))
    assert (p >= 0).all()
    assert p[0, 2] == 0 and p[0, 3] == 0                      # exact zeros, unlike softmax
    assert torch.allclose(p[0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(p[1], torch.full((4,), 0.25))


def test_matches_a_bisection_projection_onto_the_simplex_and_is_idempotent():
    torch.manual_seed(0)
    z = torch.randn(50, 6, dtype=torch.float64) * 2
    lo, hi = z.min(-1).values - 1, z.max(-1).values           # sum(max(z - tau, 0)) falls from >= 1 to 0 on [lo, hi]
    for _ in range(100):                                     # the threshold of the Euclidean projection, by bisection
        mid = (lo + hi) / 2
        above = torch.clamp(z - mid[:, None], min=0).sum(-1) > 1
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    p = sparsemax(z)
    assert torch.allclose(p, torch.clamp(z - lo[:, None], min=0), atol=1e-12)
    assert torch.allclose(p.sum(-1), torch.ones(50, dtype=torch.float64))
    assert torch.allclose(sparsemax(p), p)                   # a point of the simplex projects onto itself


def test_jacobian_is_closed_form_over_tau():
    torch.manual_seed(1)
    alpha, tau = torch.randn(5, dtype=torch.float64), 0.7
    norm = TemperedSparsemax(tau)
    jac = torch.autograd.functional.jacobian(norm, alpha)
    s = (norm(alpha) > 0).double()
    expected = (torch.diag(s) - torch.outer(s, s) / s.sum()) / tau
    assert torch.allclose(jac, expected)
    assert torch.autograd.gradcheck(lambda a: sparsemax(a / tau), (alpha.clone().requires_grad_(),))


def test_along_other_dims():
    z = torch.randn(3, 4, 5)
    assert torch.allclose(sparsemax(z, dim=1), sparsemax(z.transpose(1, 2), dim=-1).transpose(1, 2))


def test_temperature_table_of_spec():
    table = {0: 1.5, 4: 1.5, 5: 1.125, 10: 0.84375, 15: 0.6328, 20: 0.4746, 25: 0.3560, 30: 0.2670,
             35: 0.2002, 39: 0.2002, 40: 0.1502, 45: 0.1126}
    for epoch, tau in table.items():
        assert temperature_at(epoch) == pytest.approx(tau, abs=1e-4)


def test_lower_temperature_is_sparser_and_softmax_is_dense():
    alpha = torch.tensor([0.3, 0.2, 0.0, -0.1])
    assert (TemperedSparsemax(1.5)(alpha) > 0).sum() > (TemperedSparsemax(0.2)(alpha) > 0).sum()
    assert (TemperedSoftmax(0.2)(alpha) > 0).all()
