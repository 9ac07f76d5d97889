"""Hard-negative mining, ITM batch assembly and ITM loss."""

from __future__ import annotations

import math

import pytest
import torch

from amif.errors import ConfigError
from amif.losses import build_itm_batch, itm_loss, sample_hard_negatives


def _sim(b: int, n: int, seed: int, scale: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, n, generator=g)


def test_sampled_negative_is_never_the_positive():
    b, n = 8, 24
    pos = 8 + torch.arange(b)  # rank 1 of 3
    sim = _sim(b, n, seed=0, scale=1.0)
    sim[torch.arange(b), pos] = 5.0  # the positive is by far the most similar column
    sim[torch.arange(b), torch.arange(b)] = 1.5  # column i (the published code's "positive") is hard
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, pos, 0.07, generator=g) for _ in range(500)])
    assert draws.dtype == torch.long and draws.shape == (500, b)
    assert int(draws.min()) >= 0 and int(draws.max()) < n
    assert not (draws == pos).any()
    # the columns i (where the published code put the positive on every rank) are legal negatives here
    assert (draws == torch.arange(b)).any()


def test_sampling_follows_the_tempered_softmax():
    """The hardest wrong column is drawn more often than chance, at the softmax(sim/τ) rate (binomial 5σ)."""
    b, n, tau, draws = 4, 12, 0.1, 600
    pos = 4 + torch.arange(b)
    sim = _sim(b, n, seed=3)
    g = torch.Generator().manual_seed(1234)
    samples = torch.stack([sample_hard_negatives(sim, pos, tau, generator=g) for _ in range(draws)])
    for i in range(b):
        row = [sim[i, j].item() / tau for j in range(n)]
        allowed = [j for j in range(n) if j != pos[i]]
        hard = max(allowed, key=lambda j: row[j])
        z = sum(math.exp(row[j]) for j in allowed)
        p_hard = math.exp(row[hard]) / z
        count = int((samples[:, i] == hard).sum())
        chance = 1.0 / (n - 1)
        sd = math.sqrt(draws * chance * (1 - chance))
        assert count > draws * chance + 3 * sd, (count, draws * chance)
        sd_hard = math.sqrt(draws * p_hard * (1 - p_hard))
        assert abs(count - draws * p_hard) < 5 * sd_hard, (count, draws * p_hard)


def test_sampling_is_reproducible_with_a_generator():
    sim, pos = _sim(5, 10, seed=4), torch.arange(5)
    a = sample_hard_negatives(sim, pos, generator=torch.Generator().manual_seed(7))
    b = sample_hard_negatives(sim, pos, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_most_similar_mode_is_the_masked_argmax():
    b, n = 5, 15
    pos = 10 + torch.arange(b)
    sim = _sim(b, n, seed=5)
    sim[torch.arange(b), pos] = 1.0
    got = sample_hard_negatives(sim, pos, mode="most_similar")
    for i in range(b):
        best = max((j for j in range(n) if j != pos[i]), key=lambda j: sim[i, j].item())
        assert int(got[i]) == best
    assert torch.equal(got, sample_hard_negatives(sim, pos, mode="most_similar"))


def test_exclude_mask_and_errors():
    b, n = 3, 6
    pos = torch.arange(b)
    sim = _sim(b, n, seed=6)
    exclude = torch.zeros(b, n, dtype=torch.bool)
    exclude[:, 3:] = True  # only columns 0..2 (minus the positive) remain
    for mode in ("sample", "most_similar"):
        got = sample_hard_negatives(
            sim, pos, mode=mode, exclude=exclude, generator=torch.Generator().manual_seed(0)
        )
        assert (got < 3).all() and not (got == pos).any()
    with pytest.raises(ValueError, match="at least 2"):
        sample_hard_negatives(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError):
        full = torch.ones(b, n, dtype=torch.bool)
        sample_hard_negatives(sim, pos, exclude=full)
    with pytest.raises(ConfigError):
        sample_hard_negatives(sim, pos, mode="hardest")


def test_build_itm_batch_keeps_each_negatives_own_mask():
    b, world, li, lt, d = 3, 2, 5, 7, 4
    n = b * world
    g = torch.Generator().manual_seed(8)
    img_all = torch.randn(n, li, d, generator=g)
    txt_all = torch.randn(n, lt, d, generator=g)
    lengths = torch.tensor([2, 7, 4, 5, 3, 6])
    txt_mask_all = (torch.arange(lt)[None, :] < lengths[:, None]).long()
    img_mask_all = torch.ones(n, li, dtype=torch.bool)
    img_mask_all[1, 3:] = False
    sl = slice(b, 2 * b)  # rank 1
    img, txt = img_all[sl].clone().requires_grad_(True), txt_all[sl].clone().requires_grad_(True)
    neg_text = torch.tensor([0, 5, 1])
    neg_image = torch.tensor([1, 2, 4])
    out = build_itm_batch(
        img,
        img_mask_all[sl],
        txt,
        txt_mask_all[sl],
        img_all,
        img_mask_all,
        txt_all,
        txt_mask_all,
        neg_text,
        neg_image,
    )
    assert out.image_tokens.shape == (3 * b, li, d) and out.text_tokens.shape == (3 * b, lt, d)
    assert (
        out.text_mask.shape == (3 * b, lt)
        and out.image_mask is not None
        and out.image_mask.shape == (3 * b, li)
    )
    assert out.labels.tolist() == [1] * b + [0] * (2 * b)
    for i in range(b):
        # positives
        assert torch.equal(out.image_tokens[i], img_all[b + i]) and torch.equal(
            out.text_tokens[i], txt_all[b + i]
        )
        assert torch.equal(out.text_mask[i], txt_mask_all[b + i])
        # image -> negative text: the anchor's image, the negative's tokens AND mask
        j = int(neg_text[i])
        assert torch.equal(out.image_tokens[b + i], img_all[b + i])
        assert torch.equal(out.text_tokens[b + i], txt_all[j]) and torch.equal(
            out.text_mask[b + i], txt_mask_all[j]
        )
        assert torch.equal(out.image_mask[b + i], img_mask_all[b + i])
        # text -> negative image
        k = int(neg_image[i])
        assert torch.equal(out.image_tokens[2 * b + i], img_all[k]) and torch.equal(
            out.image_mask[2 * b + i], img_mask_all[k]
        )
        assert torch.equal(out.text_tokens[2 * b + i], txt_all[b + i]) and torch.equal(
            out.text_mask[2 * b + i], txt_mask_all[b + i]
        )
    assert out.text_mask.dtype == txt_mask_all.dtype
    # the local tokens keep their gradient
    (out.image_tokens.sum() + out.text_tokens.sum()).backward()
    assert img.grad is not None and txt.grad is not None
    # no image mask at all
    out2 = build_itm_batch(
        img, None, txt, txt_mask_all[sl], img_all, None, txt_all, txt_mask_all, neg_text, neg_image
    )
    assert out2.image_mask is None
    with pytest.raises(ValueError):
        build_itm_batch(
            img,
            img_mask_all[sl],
            txt,
            txt_mask_all[sl],
            img_all,
            None,
            txt_all,
            txt_mask_all,
            neg_text,
            neg_image,
        )


def test_itm_loss_is_plain_cross_entropy_without_clamping():
    logits = torch.tensor([[5.0, -3.0], [0.2, 0.1], [-4.0, 6.0]], requires_grad=True)
    labels = torch.tensor([1, 0, 0])
    loss = itm_loss(logits, labels)
    want = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        want += -(row[y] - math.log(sum(math.exp(v) for v in row)))
    assert loss.item() == pytest.approx(want / 3, rel=1e-6)
    loss.backward()
    # logits far outside [1e-7, 1 - 1e-7] still get a gradient (a clamp would zero it)
    assert (logits.grad.abs() > 1e-3).all()
    with pytest.raises(ValueError):
        itm_loss(torch.zeros(3, 3), labels)


@pytest.mark.parametrize("mode", ["sample", "most_similar"])
def test_rows_with_nothing_admissible_are_flagged_not_drawn(mode):
    sim = _sim(3, 5, seed=4)
    pos = torch.tensor([0, 1, 2])
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[1] = True  # row 1: nothing left
    exclude[0, 3:] = True  # row 0: only column 1 or 2
    idx, ok = sample_hard_negatives(sim, pos, mode=mode, exclude=exclude, return_valid=True,
                                    generator=torch.Generator().manual_seed(0))
    assert ok.tolist() == [True, False, True]
    assert int(idx[0]) in (1, 2) and int(idx[1]) == 1 and int(idx[2]) != 2
    keep = torch.tensor([True, True, True, True, False, True])
    logits, labels = torch.randn(6, 2), torch.tensor([1, 1, 1, 0, 0, 0])
    torch.testing.assert_close(itm_loss(logits, labels, keep), itm_loss(logits[keep], labels[keep]))
