"""Balanced lesion attributes for the demo's studies, planned before any image is rendered.

Every group of studies that shares a source, plane and split gets its lesion counts in the
proportions of ``COUNT_PROBS`` (largest remainder), every count its intensities (brighter / darker)
in equal numbers, and its single-lesion studies a sequence of (horizontal side, vertical side,
intensity, size rank) chosen so that every attribute and every pair of attributes is as evenly
spread as the group's size allows. No attribute can then predict another within a source and
plane: a model has to read the side from where the lesion is, not from how bright it is.
Placement later draws only locations (and slices), never these attributes.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np

COUNT_PROBS = (0.25, 0.35, 0.2, 0.2)  # lesions per study: 0, 1, 2, 3 (single lesions get position / size)
INTENSITIES = ("brighter", "darker")
SIDES = (-1, 1)  # image side of the organ's centre line: -1 left / top, +1 right / bottom
SIZE_RANKS = (0, 1, 2)  # index into the size classes a frame offers (modulo their number)


@dataclass(frozen=True)
class LesionPlan:
    """The drawn attributes of one study's lesions."""

    n: int
    intensity: str | None  # shared by all lesions of the study; None when n == 0
    target: tuple[int, int] = (0, 0)  # single lesion: (horizontal, vertical) side; (0, 0) otherwise
    size_rank: int = 0  # single lesion: which of the offered size classes

    def as_dict(self) -> dict:
        return {"n": self.n, "intensity": self.intensity, "target": list(self.target), "size_rank": self.size_rank}


def count_schedule(n_studies: int, probs: tuple[float, ...] = COUNT_PROBS,
                   rng: np.random.Generator | None = None) -> list[int]:
    """Lesion counts for ``n_studies`` studies in the proportions ``probs``, sorted.

    Each count gets the whole part of its share; the studies left over go to counts drawn without
    replacement in proportion to the fractional parts (so that small groups, e.g. a one-study
    validation group, are not always given the same count). Without ``rng`` the largest fractional
    parts win.
    """
    raw = [p * n_studies for p in probs]
    counts = [int(x) for x in raw]
    left = n_studies - sum(counts)
    frac = np.array([r - c for r, c in zip(raw, counts)], dtype=np.float64)
    if left and rng is not None:
        extra = rng.choice(len(probs), size=left, replace=False, p=frac / frac.sum())
    else:
        extra = sorted(range(len(probs)), key=lambda k: (-frac[k], k))[:left]
    for k in extra:
        counts[int(k)] += 1
    return [k for k, c in enumerate(counts) for _ in range(c)]


def _imbalance(combos: list[tuple[int, ...]]) -> tuple[int, int]:
    """(largest single-factor imbalance, sum of squared pairwise-cell deviations) of +-1 triples."""
    single = max(abs(sum(c[i] for c in combos)) for i in range(3))
    pair = sum(sum(c[i] * c[j] for c in combos) ** 2 for i, j in itertools.combinations(range(3), 2))
    return single, pair


def _binary_design(rng: np.random.Generator, m: int) -> list[tuple[int, int, int]]:
    """``m`` (horizontal, vertical, intensity) sign triples, as balanced as ``m`` allows, in random order.

    ``m // 8`` copies of the full 2 x 2 x 2 design plus the subset of the remaining size whose
    factors and pairs of factors are most even (ties at random); for ``m`` = 4 that is a half
    fraction, in which every pair is exactly balanced too.
    """
    full = list(itertools.product((-1, 1), repeat=3))
    r = m % 8
    subsets = [list(c) for c in itertools.combinations(full, r)]
    scores = [_imbalance(sub) for sub in subsets]
    best = [sub for sub, sc in zip(subsets, scores) if sc == min(scores)]
    out = full * (m // 8) + best[int(rng.integers(len(best)))]
    return [out[i] for i in rng.permutation(len(out))]


def _size_ranks(rng: np.random.Generator, triples: list[tuple[int, int, int]]) -> list[int]:
    """Size ranks for ``triples``, each the least used so far overall and with its triple's values."""
    single: Counter = Counter()
    pair: Counter = Counter()
    out = []
    for c in triples:
        scores = [(single[r], sum(pair[(i, c[i], r)] for i in range(3))) for r in SIZE_RANKS]
        ties = [r for r, sc in zip(SIZE_RANKS, scores) if sc == min(scores)]
        rank = ties[int(rng.integers(len(ties)))]
        single[rank] += 1
        for i in range(3):
            pair[(i, c[i], rank)] += 1
        out.append(rank)
    return out


def _size_deviation(triples: list[tuple[int, int, int]], ranks: list[int]) -> float:
    """Sum of squared deviations from independence of the (side or intensity) x size tables."""
    m = len(triples)
    total = 0.0
    for i in range(3):
        for v in (-1, 1):
            n_v = sum(1 for c in triples if c[i] == v)
            for r in SIZE_RANKS:
                n_r = ranks.count(r)
                obs = sum(1 for c, k in zip(triples, ranks) if c[i] == v and k == r)
                total += (obs - n_v * n_r / m) ** 2
    return total


def balanced_sequence(rng: np.random.Generator, m: int, tries: int = 20) -> list[tuple[int, int, str, int]]:
    """``m`` (horizontal side, vertical side, intensity, size rank) for single-lesion studies, in random order.

    Sides and intensity come from :func:`_binary_design`; size ranks from the best of ``tries``
    greedy deals (:func:`_size_ranks`), the one whose size tables are closest to independence.
    """
    if m == 0:
        return []
    triples = _binary_design(rng, m)
    deals = [_size_ranks(rng, triples) for _ in range(tries)]
    ranks = min(deals, key=lambda d: _size_deviation(triples, d))
    return [(th, tv, INTENSITIES[(ki + 1) // 2], r) for (th, tv, ki), r in zip(triples, ranks)]


def plan_group(rng: np.random.Generator, n_studies: int, lesions: bool = True,
               probs: tuple[float, ...] = COUNT_PROBS) -> list[LesionPlan]:
    """Lesion plans for one (source, plane, split) group of ``n_studies`` studies, in study order."""
    if not lesions:
        return [LesionPlan(0, None) for _ in range(n_studies)]
    counts = count_schedule(n_studies, probs, rng)
    order = rng.permutation(n_studies)
    counts = [counts[i] for i in order]
    singles = iter(balanced_sequence(rng, counts.count(1)))
    multi: dict[int, int] = {}  # count -> studies so far, for alternating intensities
    start = {k: int(rng.integers(2)) for k in (2, 3)}
    plans = []
    for n in counts:
        if n == 0:
            plans.append(LesionPlan(0, None))
        elif n == 1:
            th, tv, inten, rank = next(singles)
            plans.append(LesionPlan(1, inten, (th, tv), rank))
        else:
            k = multi.get(n, 0)
            multi[n] = k + 1
            plans.append(LesionPlan(n, INTENSITIES[(k + start[n]) % 2]))
    return plans
