import torch
import torch.nn.functional as F

from nni_zodarts.zo_estimator import along, direct_estimate, implicit_slopes, unit_directions


def implicit_estimate(*args):
    """Eq. 5 as the architecture step computes it: ``along`` the sum of the two slopes."""
    first, implicit = implicit_slopes(*args)
    return along(first + implicit, args[4])

D = 12


def quadratic(alpha, A, b):
    return 0.5 * alpha @ A @ alpha + b @ alpha


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(D, D, generator=g, dtype=torch.float64)
    return M @ M.T / D + torch.eye(D, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64), \
        torch.randn(D, generator=g, dtype=torch.float64)


def test_directions_are_unit_and_isotropic():
    u = unit_directions(20000, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(u.norm(dim=1), torch.ones(20000, dtype=torch.float64))
    assert torch.allclose(u.T @ u / 20000, torch.eye(D, dtype=torch.float64) / D, atol=0.01)   # E[u u^T] = I / d


def test_direct_estimate_is_grad_over_d_on_average():
    A, b, alpha = _problem()
    true = A @ alpha + b
    u = unit_directions(20000, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mu = 1e-4
    f0 = quadratic(alpha, A, b)
    fk = torch.stack([quadratic(alpha + mu * v, A, b) for v in u])
    g = direct_estimate(f0, fk, u, mu)
    assert F.cosine_similarity(g, true, dim=0) > 0.95
    assert torch.allclose(g * D, true, rtol=0.15, atol=0.15 * true.abs().max())
    one = direct_estimate(f0, fk[:1], u[:1], mu)                 # a single direction: (grad . u) u
    assert torch.allclose(one, (true @ u[0]) * u[0], rtol=1e-3, atol=1e-6)


def test_implicit_estimate_matches_finite_difference_of_the_bilevel_objective():
    # Inner solution w*(alpha) = B alpha + c; outer L(w, alpha) = 0.5 |w|^2 + e.alpha, so F(alpha) = L(w*(alpha), alpha).
    g = torch.Generator().manual_seed(2)
    B = torch.randn(7, D, generator=g, dtype=torch.float64)
    c, e = torch.randn(7, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    alpha = torch.randn(D, generator=g, dtype=torch.float64)
    F_ = lambda a: 0.5 * (B @ a + c).square().sum() + e @ a
    w = B @ alpha + c
    mu = 1e-3
    u = unit_directions(2000, D, generator=g, dtype=torch.float64)
    total = torch.zeros(D, dtype=torch.float64)
    for v in u:
        w_prime = B @ (alpha + mu * v) + c                        # the perturbed trajectory's end point
        est = implicit_estimate(e, [w], [w], [[w_prime]], v[None], mu)
        fd = (F_(alpha + mu * v) - F_(alpha)) / mu                # finite-difference reference along v
        assert torch.allclose(est, fd * v, rtol=1e-2, atol=1e-2)
        total += est
    true = B.T @ w + e
    assert F.cosine_similarity(total, true, dim=0) > 0.95


def test_implicit_estimate_ignores_unused_weights():
    v = torch.tensor([[1.0, 0.0]])
    w = [torch.ones(3), torch.ones(2)]
    out = implicit_estimate(torch.tensor([2.0, 5.0]), [torch.ones(3), None], w, [[w[0] * 1.1, w[1] * 9]], v, 0.1)
    assert torch.allclose(out, torch.tensor([2.0 + 3.0, 0.0]))
