"""Retrieval recall@K against a plain loop, positive masks, tie handling and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amif.retrieval import caption_positive_mask, recall_at_k, retrieval_ranks


def _loop_recall(sim: torch.Tensor, positive: torch.Tensor, k: int) -> float:
    """Reference: a query is a hit when one of its positives is among its k highest-scoring candidates."""
    hits = 0
    for q in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda c: -float(sim[q, c]))
        if any(bool(positive[q, c]) for c in order[:k]):
            hits += 1
    return hits / sim.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_loop_diagonal(seed):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(40, 8, generator=g)
    txt = img + 1.5 * torch.randn(40, 8, generator=g)  # noisy copies: some hits, some misses
    out = recall_at_k(img, txt, ks=(1, 5, 10))
    sim = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    eye = torch.eye(40, dtype=torch.bool)
    for k in (1, 5, 10):
        assert out[f"i2t_r{k}"] == pytest.approx(_loop_recall(sim, eye, k))
        assert out[f"t2i_r{k}"] == pytest.approx(_loop_recall(sim.T, eye, k))
    assert 0.0 < out["i2t_r1"] < 1.0  # the case is neither trivial nor hopeless
    assert out["recall_mean"] == pytest.approx(sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)) / 6)
    assert out["i2t_r1"] <= out["i2t_r5"] <= out["i2t_r10"]


def test_recall_with_positive_mask_matches_loop():
    g = torch.Generator().manual_seed(3)
    n_img, n_txt = 30, 12
    img, txt = torch.randn(n_img, 6, generator=g), torch.randn(n_txt, 6, generator=g)
    owner = torch.arange(n_img) % n_txt  # several images per caption
    pos = owner[:, None] == torch.arange(n_txt)[None, :]
    out = recall_at_k(img, txt, ks=(1, 3), positive_mask=pos)
    sim = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    for k in (1, 3):
        assert out[f"i2t_r{k}"] == pytest.approx(_loop_recall(sim, pos, k))
        assert out[f"t2i_r{k}"] == pytest.approx(_loop_recall(sim.T, pos.T, k))


def test_perfect_and_collapsed_features():
    x = F.normalize(torch.randn(10, 16), dim=-1)
    perfect = recall_at_k(x, x.clone())
    assert perfect["i2t_r1"] == 1.0 and perfect["t2i_r1"] == 1.0
    # all features equal: every candidate ties with the positive; ties count against the query
    same = torch.ones(10, 4)
    collapsed = recall_at_k(same, same, ks=(1, 5, 10))
    assert collapsed["i2t_r1"] == 0.0 and collapsed["i2t_r5"] == 0.0
    assert collapsed["i2t_r10"] == 1.0  # K >= number of candidates


def test_ranks_and_caption_mask():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]])
    pos = torch.tensor([[True, False, False], [False, True, False]])
    assert retrieval_ranks(sim, pos).tolist() == [0, 1]
    mask = caption_positive_mask(["a", "b", "a"])
    assert mask.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    assert torch.equal(caption_positive_mask(torch.tensor([5, 7, 5])), mask)


def test_input_errors():
    with pytest.raises(ValueError, match="positive_mask"):
        recall_at_k(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="no positive"):
        recall_at_k(torch.randn(2, 2), torch.randn(2, 2), positive_mask=torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ValueError):
        recall_at_k(torch.randn(3, 2), torch.randn(3, 5))
