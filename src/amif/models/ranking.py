"""Answer ranking: the top-k candidates by first-token probability, re-scored by their full-sequence
log-likelihood under the answer decoder.

:func:`rank_candidates` projects the cross-attention keys and values of each question's fused context
once and shares them between the first-token pass and the question's k candidates, trims the selected
candidates to their own longest answer, and scores the target tokens with one logsumexp per position. With ``reference=True`` it computes the same scores the way the
published code does: the context repeated k times (its keys and values projected once per
candidate), every candidate padded to the longest of the whole list, the full log-softmax of every
position. It is kept to check the fast path against (tests, ``benchmarks/bench_rank.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from amif.models.answer_decoder import AnswerDecoder


@dataclass
class RankedAnswers:
    """Ranked candidates per question: ``indices`` [B, k] into the candidate list, ``probs`` [B, k]
    (softmax over the k sequence log-likelihoods), ``log_likelihood`` [B, k], best first."""

    indices: torch.Tensor
    probs: torch.Tensor
    log_likelihood: torch.Tensor


def rank_candidates(
    decoder: AnswerDecoder,
    candidate_ids: torch.Tensor,
    candidate_mask: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor | None,
    k: int,
    *,
    reference: bool = False,
) -> RankedAnswers:
    """Rank ``candidate_ids`` [C, T] (``[CLS] answer [SEP]``, right-padded) for each of the B contexts
    [B, Lc, D]. ``reference=True``: the published code's computation (module docstring), same result.

    The fast path reads one number back from the device per call: the length of the longest selected
    candidate, which sets the width of the scoring pass.
    """
    b = context.shape[0]
    kv = None if reference else decoder.context_kv(context)
    start = candidate_ids[:1, :1].expand(b, 1)
    first = decoder(start, None, context, context_mask, context_kv=kv)[:, 0].log_softmax(-1)
    top = first[:, decoder.output_positions(candidate_ids[:, 1], check=False)].topk(k, dim=1).indices  # [B, k]
    ids, mask = candidate_ids[top].flatten(0, 1), candidate_mask[top].flatten(0, 1)
    if reference:
        ll = _reference_scores(decoder, ids, mask, context, context_mask, k)
    else:
        length = int(mask.sum(1).max())
        ll = decoder.sequence_log_likelihood(ids[:, :length], mask[:, :length], context, context_mask,
                                             context_kv=kv, group=k)
    order = ll.view(b, k).argsort(dim=1, descending=True)
    ll = ll.view(b, k).gather(1, order)
    return RankedAnswers(indices=top.gather(1, order), probs=ll.softmax(-1), log_likelihood=ll)


def _reference_scores(
    decoder: AnswerDecoder, ids: torch.Tensor, mask: torch.Tensor, context: torch.Tensor,
    context_mask: torch.Tensor | None, k: int,
) -> torch.Tensor:
    """Sequence log-likelihoods [B * k] with the context repeated k times and a full log-softmax."""
    cmask = None if context_mask is None else context_mask.repeat_interleave(k, 0)
    logits = decoder(ids[:, :-1], None, context.repeat_interleave(k, 0), cmask)
    target = mask[:, 1:].bool()
    pos = torch.where(target, decoder.output_positions(ids[:, 1:], check=False), 0)
    logp = logits.float().log_softmax(-1).gather(-1, pos[..., None]).squeeze(-1)
    return (logp * target).sum(-1)
