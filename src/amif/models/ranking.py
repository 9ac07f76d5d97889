"""Answer ranking: the top-k candidates by first-token probability, re-scored by their full-sequence
log-likelihood under the answer decoder.

:func:`rank_candidates` projects the cross-attention keys and values of each question's fused context
once and shares them between the first-token pass and the question's k candidates. The candidates
continue from the first-token pass (its start position and first-token scores are reused), are
trimmed to their own longest answer, and only their real target tokens reach the LM head, scored
with one logsumexp each. With ``reference=True`` it computes the same scores the way the
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

    The fast path reads two numbers back from the device per call: the length of the longest selected
    candidate and the number of their target tokens, which set the shapes of the scoring pass.
    """
    b = context.shape[0]
    start = candidate_ids[:1, :1].expand(b, 1)
    first_positions = decoder.output_positions(candidate_ids[:, 1], check=False)
    if reference:
        first = decoder(start, None, context, context_mask)[:, 0].float().log_softmax(-1)[:, first_positions]
        top = first.topk(k, dim=1).indices  # [B, k]
        ids, mask = candidate_ids[top].flatten(0, 1), candidate_mask[top].flatten(0, 1)
        ll = _reference_scores(decoder, ids, mask, context, context_mask, k)
    else:
        kv = decoder.context_kv(context)
        h, past = decoder.hidden_states(start, context, context_mask, context_kv=kv, return_past=True)
        first = decoder.logits(h[:, 0]).float().log_softmax(-1)[:, first_positions]  # [B, C]
        top = first.topk(k, dim=1).indices
        ll = first.gather(1, top).flatten() + _later_token_scores(
            decoder, candidate_ids[top].flatten(0, 1), candidate_mask[top].flatten(0, 1), context, context_mask,
            kv, past, k)
    order = ll.view(b, k).argsort(dim=1, descending=True)
    ll = ll.view(b, k).gather(1, order)
    return RankedAnswers(indices=top.gather(1, order), probs=ll.softmax(-1), log_likelihood=ll)


def _later_token_scores(
    decoder: AnswerDecoder, ids: torch.Tensor, mask: torch.Tensor, context: torch.Tensor,
    context_mask: torch.Tensor | None, kv: list, past: list, k: int,
) -> torch.Tensor:
    """Log-probability [B * k] of each selected candidate's tokens after its first answer token.

    The start position is the first-token pass's (its self-attention keys and values are ``past``),
    so the candidates run from their first answer token on, trimmed to the longest selected one,
    and the LM head scores only their real target positions (found by a stable sort rather than a
    boolean index, whose size the device would have to report).
    """
    length, n_real = torch.stack([mask.sum(1).max(), mask[:, 2:].sum()]).tolist()  # one wait per call
    if length <= 2:  # every selected answer is one token
        return torch.zeros(ids.shape[0], device=ids.device)
    h = decoder.hidden_states(ids[:, 1:length - 1], context, context_mask, context_kv=kv, group=k, past=past)
    target = mask[:, 2:length].bool().flatten()
    real = target.int().argsort(descending=True, stable=True)[:n_real]
    logits = decoder.logits(h.flatten(0, 1)[real])  # [n_real, V]
    pos = decoder.output_positions(ids[:, 2:length].flatten()[real], check=False)
    logp = logits.gather(1, pos[:, None]).squeeze(1).float() - logits.logsumexp(-1).float()
    dense = torch.zeros(target.shape[0], device=ids.device).index_put_((real,), logp)
    return dense.view(ids.shape[0], length - 2).sum(1)


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
