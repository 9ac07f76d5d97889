"""Optimal transport (IPOT, Sinkhorn, WPA) against POT and loop-based references, with padding."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from amif.errors import ConfigError
from amif.losses import cosine_cost, ipot, sinkhorn, wpa_loss

N_VALID = [4, 6, 2]
M_VALID = [5, 3, 7]
N_MAX, M_MAX = 6, 7


def _masks() -> tuple[torch.Tensor, torch.Tensor]:
    xm = torch.arange(N_MAX)[None, :] < torch.tensor(N_VALID)[:, None]
    ym = torch.arange(M_MAX)[None, :] < torch.tensor(M_VALID)[:, None]
    return xm, ym


def _cost(seed: int = 0) -> torch.Tensor:
    """Random costs in [0, 2] with garbage (large values) at padded positions, which must be ignored."""
    g = torch.Generator().manual_seed(seed)
    c = 2 * torch.rand(len(N_VALID), N_MAX, M_MAX, generator=g, dtype=torch.float64)
    xm, ym = _masks()
    return c.masked_fill(~(xm[:, :, None] & ym[:, None, :]), 50.0)


def ref_ipot(cost: list[list[float]], beta: float, iterations: int, k: int) -> np.ndarray:
    """IPOT (Xie et al. 2019, Algorithm 1) with explicit loops, on one unpadded cost matrix."""
    n, m = len(cost), len(cost[0])
    gibbs = [[math.exp(-cost[i][j] / beta) for j in range(m)] for i in range(n)]
    plan = [[1.0] * m for _ in range(n)]
    a, b = [1.0 / n] * n, [1.0 / m] * m
    for _ in range(iterations):
        q = [[gibbs[i][j] * plan[i][j] for j in range(m)] for i in range(n)]
        for _ in range(k):
            a = [(1.0 / n) / sum(q[i][j] * b[j] for j in range(m)) for i in range(n)]
            b = [(1.0 / m) / sum(q[i][j] * a[i] for i in range(n)) for j in range(m)]
        plan = [[a[i] * q[i][j] * b[j] for j in range(m)] for i in range(n)]
    return np.array(plan)


def test_cosine_cost_matches_loops_and_is_zero_at_padding():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, N_MAX, 5, generator=g, dtype=torch.float64)
    y = torch.randn(3, M_MAX, 5, generator=g, dtype=torch.float64)
    xm, ym = _masks()
    c = cosine_cost(x, y, xm, ym)
    assert c.shape == (3, N_MAX, M_MAX)
    for s in range(3):
        for j in range(N_MAX):
            for k in range(M_MAX):
                if xm[s, j] and ym[s, k]:
                    xs, ys = x[s, j].tolist(), y[s, k].tolist()
                    cos = sum(p * q for p, q in zip(xs, ys)) / math.sqrt(
                        sum(p * p for p in xs) * sum(q * q for q in ys)
                    )
                    assert c[s, j, k].item() == pytest.approx(1 - cos, abs=1e-12)
                else:
                    assert c[s, j, k].item() == 0.0


@pytest.mark.parametrize("k", [1, 2])
def test_ipot_matches_loop_reference_per_sample(k):
    cost = _cost(2)
    xm, ym = _masks()
    plan = ipot(cost, xm, ym, beta=0.5, iterations=50, k=k)
    for s, (n, m) in enumerate(zip(N_VALID, M_VALID)):
        want = ref_ipot(cost[s, :n, :m].tolist(), 0.5, 50, k)
        np.testing.assert_allclose(plan[s, :n, :m].numpy(), want, rtol=1e-9, atol=1e-13)
        assert plan[s, n:, :].abs().sum() == 0 and plan[s, :, m:].abs().sum() == 0
        # column marginal exact after every iteration, row marginal close at 50 iterations
        np.testing.assert_allclose(plan[s, :n, :m].sum(0).numpy(), np.full(m, 1 / m), rtol=1e-9)
        np.testing.assert_allclose(plan[s, :n, :m].sum(1).numpy(), np.full(n, 1 / n), atol=1e-3)


def test_ipot_converges_to_exact_ot_like_pot_emd():
    cost = _cost(3)
    xm, ym = _masks()
    plan = ipot(cost, xm, ym, beta=0.5, iterations=3000)
    for s, (n, m) in enumerate(zip(N_VALID, M_VALID)):
        c = cost[s, :n, :m].numpy()
        exact = ot.emd(np.full(n, 1 / n), np.full(m, 1 / m), c)
        np.testing.assert_allclose(plan[s, :n, :m].numpy(), exact, atol=1e-6)
        assert float((plan[s, :n, :m].numpy() * c).sum()) == pytest.approx(float((exact * c).sum()), abs=1e-8)
        np.testing.assert_allclose(plan[s, :n, :m].sum(1).numpy(), np.full(n, 1 / n), atol=1e-8)


def test_sinkhorn_matches_pot_per_sample():
    cost = _cost(4)
    xm, ym = _masks()
    for eps, iters in ((0.1, 1000), (0.05, 1000)):
        plan = sinkhorn(cost, xm, ym, epsilon=eps, iterations=iters)
        assert torch.isfinite(plan).all()
        for s, (n, m) in enumerate(zip(N_VALID, M_VALID)):
            c = cost[s, :n, :m].numpy()
            a, b = np.full(n, 1 / n), np.full(m, 1 / m)
            want = ot.sinkhorn(a, b, c, reg=eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-15)
            np.testing.assert_allclose(plan[s, :n, :m].numpy(), want, atol=1e-9)
            np.testing.assert_allclose(plan[s, :n, :m].sum(0).numpy(), b, rtol=1e-9)
            np.testing.assert_allclose(plan[s, :n, :m].sum(1).numpy(), a, rtol=1e-7)
            assert plan[s, n:, :].abs().sum() == 0 and plan[s, :, m:].abs().sum() == 0


def test_empty_samples_give_zero_plans_without_nans():
    cost = torch.rand(2, 3, 4)
    xm = torch.tensor([[True, True, False], [False, False, False]])
    ym = torch.ones(2, 4, dtype=torch.bool)
    for plan in (ipot(cost, xm, ym), sinkhorn(cost, xm, ym)):
        assert torch.isfinite(plan).all()
        assert plan[1].abs().sum() == 0
        assert plan[0].sum().item() == pytest.approx(1.0, rel=1e-4)


def _tokens(seed: int):
    g = torch.Generator().manual_seed(seed)
    txt = torch.randn(3, N_MAX, 8, generator=g, dtype=torch.float64, requires_grad=True)
    img = torch.randn(3, M_MAX, 8, generator=g, dtype=torch.float64, requires_grad=True)
    return txt, img


@pytest.mark.parametrize("method", ["ipot", "sinkhorn"])
def test_wpa_gradient_flows_through_the_cost_only(method):
    xm, ym = _masks()
    txt, img = _tokens(5)
    dist = wpa_loss(txt, img, xm, ym, method=method)
    assert dist.shape == (3,)
    dist.sum().backward()
    g_txt, g_img = txt.grad.clone(), img.grad.clone()

    # the same distance with the plan held fixed as a constant
    with torch.no_grad():
        c = cosine_cost(txt, img, xm, ym)
        if method == "ipot":  # solved on the image x text cost, as the published code does
            fixed = ipot(c.transpose(1, 2), ym, xm, beta=0.5, iterations=50).transpose(1, 2)
        else:
            fixed = sinkhorn(c, xm, ym, epsilon=0.1, iterations=100)
    txt2, img2 = (t.detach().clone().requires_grad_(True) for t in (txt, img))
    ref = (cosine_cost(txt2, img2, xm, ym) * fixed).sum(dim=(1, 2))
    torch.testing.assert_close(dist.detach(), ref.detach(), rtol=1e-12, atol=1e-12)
    ref.sum().backward()
    torch.testing.assert_close(g_txt, txt2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_img, img2.grad, rtol=1e-10, atol=1e-12)
    # padded tokens get no gradient
    assert g_txt[~xm].abs().sum() == 0 and g_img[~ym].abs().sum() == 0
    # loop check of the value: sum_jk C_jk T_jk
    for s in range(3):
        total = sum(c[s, j, k].item() * fixed[s, j, k].item() for j in range(N_MAX) for k in range(M_MAX))
        assert dist[s].item() == pytest.approx(total, rel=1e-10)


def test_wpa_half_precision_and_bad_method():
    xm, ym = _masks()
    txt, img = _tokens(6)
    d = wpa_loss(txt.detach().bfloat16(), img.detach().bfloat16(), xm, ym)
    assert d.dtype == torch.float32 and torch.isfinite(d).all() and (d > 0).all()
    with pytest.raises(ConfigError):
        wpa_loss(txt, img, xm, ym, method="emd")


@pytest.mark.parametrize("method", ["ipot", "sinkhorn"])
def test_plans_are_float32_under_bf16_autocast(method):
    """A 118 x 324 plan (caption tokens x 18 x 18 patches) under CPU bf16 autocast equals the float32 plan."""
    g = torch.Generator().manual_seed(0)
    txt, img = torch.randn(2, 118, 32, generator=g), torch.randn(2, 324, 32, generator=g)
    xm = torch.ones(2, 118, dtype=torch.bool)
    xm[1, 90:] = False
    cost = cosine_cost(txt, img, xm)
    solve = (lambda c: ipot(c, xm, None)) if method == "ipot" else (lambda c: sinkhorn(c, xm, None, iterations=50))
    want = solve(cost)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = solve(cost)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_bmm = torch.bmm(cost, want.transpose(1, 2))
    assert bf16_bmm.dtype == torch.bfloat16  # autocast is active here, so the guard above is what kept float32
    d_cached = wpa_loss(txt, img, xm, None, method=method, sinkhorn_iterations=50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d_auto = wpa_loss(txt, img, xm, None, method=method, sinkhorn_iterations=50)
    torch.testing.assert_close(d_auto, d_cached, rtol=1e-6, atol=1e-7)


def test_sinkhorn_has_its_own_iteration_count():
    g = torch.Generator().manual_seed(1)
    txt, img = torch.randn(1, 6, 8, generator=g), torch.randn(1, 9, 8, generator=g)
    few = wpa_loss(txt, img, method="sinkhorn", iterations=1, sinkhorn_iterations=2)
    many = wpa_loss(txt, img, method="sinkhorn", iterations=1, sinkhorn_iterations=200)
    assert not torch.allclose(few, many)
    torch.testing.assert_close(many, wpa_loss(txt, img, method="sinkhorn", iterations=50, sinkhorn_iterations=200))
