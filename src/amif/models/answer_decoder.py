"""Causal BERT-style answer decoder with cross-attention to the fused features
(docs/method.md#answer-decoder).

The decoder is a separate copy of a BERT-family model: post-LN layers with causal self-attention,
and, from layer ``cross_attention_from`` on, cross-attention to the GCA output (new, randomly
initialised weights, as in the paper; Glorot-uniform by default instead of the published code's
N(0, 0.02), see ``cross_attention_init``). The LM head's output matrix is tied to the word embeddings.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from amif.models.attention import FeedForward, MultiHeadAttention, init_weights, xavier_init_attention


class DecoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float, eps: float, context: int | None):
        super().__init__()
        self.self_attn = MultiHeadAttention(hidden, heads, dropout)
        self.self_norm = nn.LayerNorm(hidden, eps=eps)
        self.cross_attn = MultiHeadAttention(hidden, heads, dropout, context_size=context) if context else None
        self.cross_norm = nn.LayerNorm(hidden, eps=eps) if context else None
        self.ffn = FeedForward(hidden, intermediate)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, context, context_mask, kv=None, group: int = 1, past=None, return_kv: bool = False):
        # Answers are right-padded: under the causal mask a real position only sees real keys, so the
        # self-attention needs no padding mask (and the fused causal kernels stay available).
        a = self.self_attn(x, causal=True, past=past, return_kv=return_kv)
        a, self_kv = a if return_kv else (a, None)
        x = self.self_norm(x + self.dropout(a))
        if self.cross_attn is not None:
            x = self.cross_norm(x + self.dropout(self.cross_attn(x, context, context_mask, kv=kv, group=group)))
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))
        return (x, self_kv) if return_kv else x


class AnswerDecoder(nn.Module):
    """Generates answer tokens conditioned on a context sequence (the fused image+question features)."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        num_layers: int,
        cross_attention_from: int,
        context_size: int,
        max_positions: int = 512,
        dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        cross_attention_init: str = "xavier",
    ):
        super().__init__()
        if cross_attention_init not in ("xavier", "bert"):
            raise ValueError(f"cross_attention_init must be 'xavier' or 'bert', got {cross_attention_init!r}")
        if not 0 <= cross_attention_from < num_layers:
            raise ValueError(f"cross_attention_from={cross_attention_from} must lie in [0, {num_layers})")
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)
        self.type_embedding = nn.Parameter(torch.zeros(hidden_size))
        self.emb_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.emb_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(
                hidden_size, num_heads, intermediate_size, dropout, layer_norm_eps,
                context_size if i >= cross_attention_from else None,
            )
            for i in range(num_layers)
        )
        self.head_transform = nn.Linear(hidden_size, hidden_size)
        self.head_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(vocab_size))
        init_weights(self)
        # restricted output vocabulary (None: all tokens); see restrict_output
        self.register_buffer("output_ids", None, persistent=False)
        self.register_buffer("output_lut", None, persistent=False)
        self._host_lut: torch.Tensor | None = None
        if cross_attention_init == "xavier":
            for layer in self.layers:
                if layer.cross_attn is not None:
                    xavier_init_attention(layer.cross_attn)

    def restrict_output(self, token_ids: torch.Tensor | None) -> None:
        """Score only ``token_ids`` (e.g. the tokens of the candidate answers): logits and softmax run
        over that set instead of the whole vocabulary. ``None`` restores the full vocabulary."""
        if token_ids is None:
            self.output_ids = self.output_lut = self._host_lut = None
            return
        ids = torch.unique(token_ids.flatten().to(self.head_bias.device))
        lut = torch.full((self.head_bias.shape[0],), -1, dtype=torch.long, device=ids.device)
        lut[ids] = torch.arange(len(ids), device=ids.device)
        self.output_ids, self.output_lut = ids, lut
        self._host_lut = lut.cpu()  # for checking host-side targets without waiting for the device

    def output_positions(self, token_ids: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Indices of ``token_ids`` in the last dimension of :meth:`forward`'s logits. With
        ``check=False`` a token outside a restricted vocabulary gets -1 instead of raising ValueError
        (the check reads the values, which on an accelerator waits for the device)."""
        if self.output_lut is None:
            return token_ids
        pos = self.output_lut[token_ids]
        if check:
            _check_inside(token_ids, pos)
        return pos

    def check_targets(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """Raise ValueError if a real target token ``ids[:, 1:]`` lies outside the restricted output
        vocabulary. Reads the values: call it on host tensors (e.g. right after tokenising)."""
        if self.output_lut is None:
            return
        targets = ids[:, 1:][mask[:, 1:].bool()].cpu()
        _check_inside(targets, self._host_lut[targets])

    def context_kv(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Cross-attention keys and values of ``context`` for every layer (None where a layer has no
        cross-attention): project once, then pass as ``context_kv`` to score many answers per context."""
        return [None if layer.cross_attn is None else layer.cross_attn.project_kv(context) for layer in self.layers]

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        *,
        context_kv: list | None = None,
        group: int = 1,
        past: list | None = None,
        return_past: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list]:
        """LM-head features [B * group, T, D] of right-padded ``input_ids`` [B * group, T]; ``context``
        [B, Lc, Dc] (or its ``context_kv``) is shared by ``group`` consecutive rows.

        ``past`` (from an earlier call with ``return_past=True``, one row per context or per input
        row) holds every layer's self-attention keys and values of the positions before
        ``input_ids``, which then continue from there. ``return_past`` also returns this call's.
        """
        start = 0 if past is None else past[0][0].shape[2]
        pos = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)[None] + self.type_embedding
        x = self.emb_dropout(self.emb_norm(x))
        kvs = context_kv or [None] * len(self.layers)
        kept = []
        for i, layer in enumerate(self.layers):
            x = layer(x, context, context_mask, kv=kvs[i], group=group, past=None if past is None else past[i],
                      return_kv=return_past)
            if return_past:
                x, self_kv = x
                kept.append(self_kv)
        h = self.head_norm(F.gelu(self.head_transform(x)))
        return (h, kept) if return_past else h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Output logits [..., V] of LM-head features (V: the restricted vocabulary when one is set)."""
        if self.output_ids is None:
            return h @ self.word_embeddings.weight.T + self.head_bias
        return h @ self.word_embeddings.weight[self.output_ids].T + self.head_bias[self.output_ids]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        *,
        context_kv: list | None = None,
        group: int = 1,
    ) -> torch.Tensor:
        """Next-token logits [B, T, V] for ``input_ids`` [B, T]; V is the restricted output vocabulary
        when one is set. ``input_ids`` must be right-padded; ``attention_mask`` (True = real) is then
        not needed, because under the causal mask no real position sees a padded one."""
        return self.logits(self.hidden_states(input_ids, context, context_mask, context_kv=context_kv, group=group))

    def sequence_log_likelihood(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        *,
        context_kv: list | None = None,
        group: int = 1,
    ) -> torch.Tensor:
        """Summed log-probability [B * group] of tokens ``ids[:, 1:]`` given the start token ``ids[:, 0]``.

        Each position's log-probability is its target logit minus the logsumexp of its logits; the
        log-softmax over the vocabulary is never materialised. On the host, a target outside the
        restricted output vocabulary raises ValueError; on an accelerator the check is left to
        :meth:`check_targets` (it would wait for the device on every call).
        """
        logits = self(ids[:, :-1], None, context, context_mask, context_kv=context_kv, group=group)
        target = mask[:, 1:].bool()
        if ids.device.type == "cpu":
            self.check_targets(ids, mask)  # costs no device wait there
        pos = torch.where(target, self.output_positions(ids[:, 1:], check=False), 0)  # padding positions are not scored
        token = logits.gather(-1, pos[..., None]).squeeze(-1).float()
        logp = token - logits.logsumexp(-1).float()
        return (logp * target.to(logp.dtype)).sum(-1)

    def load_bert_weights(self, bert_state: dict[str, torch.Tensor]) -> list[str]:
        """Copy a transformers ``BertModel`` state dict into this decoder; returns the names loaded.

        Cross-attention, the LM-head transform and layers beyond the checkpoint's stay as initialised.
        """
        own = self.state_dict()
        loaded = []
        for key, value in bert_state.items():
            name = _bert_key_to_decoder(re.sub(r"^(bert\.|model\.)", "", key))
            if name is None:
                continue
            if name == "type_embedding":
                value = value[0]
            if name in own and own[name].shape == value.shape:
                own[name] = value.clone()
                loaded.append(name)
        self.load_state_dict(own)
        return loaded


def _check_inside(token_ids: torch.Tensor, positions: torch.Tensor) -> None:
    if (positions < 0).any():
        bad = sorted(set(token_ids[positions < 0].tolist()))[:5]
        raise ValueError(f"token ids {bad} are outside the decoder's restricted output vocabulary")


_LAYER_MAP = {
    "attention.self.query": "self_attn.query",
    "attention.self.key": "self_attn.key",
    "attention.self.value": "self_attn.value",
    "attention.output.dense": "self_attn.out",
    "attention.output.LayerNorm": "self_norm",
    "intermediate.dense": "ffn.fc1",
    "output.dense": "ffn.fc2",
    "output.LayerNorm": "ffn_norm",
}


def _bert_key_to_decoder(key: str) -> str | None:
    emb = {
        "embeddings.word_embeddings.weight": "word_embeddings.weight",
        "embeddings.position_embeddings.weight": "position_embeddings.weight",
        "embeddings.token_type_embeddings.weight": "type_embedding",
        "embeddings.LayerNorm.weight": "emb_norm.weight",
        "embeddings.LayerNorm.bias": "emb_norm.bias",
    }
    if key in emb:
        return emb[key]
    m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m and m.group(2) in _LAYER_MAP:
        return f"layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}.{m.group(3)}"
    return None
