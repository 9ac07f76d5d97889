"""Causal BERT-style answer decoder with cross-attention to the fused features (spec 1.4).

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

    def forward(self, x, mask, context, context_mask):
        x = self.self_norm(x + self.dropout(self.self_attn(x, context_mask=mask, causal=True)))
        if self.cross_attn is not None:
            x = self.cross_norm(x + self.dropout(self.cross_attn(x, context, context_mask=context_mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


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
        if cross_attention_init == "xavier":
            for layer in self.layers:
                if layer.cross_attn is not None:
                    xavier_init_attention(layer.cross_attn)

    def restrict_output(self, token_ids: torch.Tensor | None) -> None:
        """Score only ``token_ids`` (e.g. the tokens of the candidate answers): logits and softmax run
        over that set instead of the whole vocabulary. ``None`` restores the full vocabulary."""
        if token_ids is None:
            self.output_ids = self.output_lut = None
            return
        ids = torch.unique(token_ids.flatten().to(self.head_bias.device))
        lut = torch.full((self.head_bias.shape[0],), -1, dtype=torch.long, device=ids.device)
        lut[ids] = torch.arange(len(ids), device=ids.device)
        self.output_ids, self.output_lut = ids, lut

    def output_positions(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Indices of ``token_ids`` in the last dimension of :meth:`forward`'s logits."""
        if self.output_lut is None:
            return token_ids
        pos = self.output_lut[token_ids]
        if (pos < 0).any():
            bad = sorted(set(token_ids[pos < 0].tolist()))[:5]
            raise ValueError(f"token ids {bad} are outside the decoder's restricted output vocabulary")
        return pos

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Next-token logits [B, T, V] for ``input_ids`` [B, T] (right-padded, mask True = real); V is the
        restricted output vocabulary when one is set."""
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)[None] + self.type_embedding
        x = self.emb_dropout(self.emb_norm(x))
        for layer in self.layers:
            x = layer(x, attention_mask, context, context_mask)
        h = self.head_norm(F.gelu(self.head_transform(x)))
        if self.output_ids is None:
            return h @ self.word_embeddings.weight.T + self.head_bias
        return h @ self.word_embeddings.weight[self.output_ids].T + self.head_bias[self.output_ids]

    def sequence_log_likelihood(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Summed log-probability [B] of tokens ``ids[:, 1:]`` given the start token ``ids[:, 0]``."""
        logits = self(ids[:, :-1], mask[:, :-1], context, context_mask)
        target = mask[:, 1:].bool()
        pos = torch.zeros_like(ids[:, 1:])
        pos[target] = self.output_positions(ids[:, 1:][target])  # padding positions are not scored
        logp = logits.log_softmax(-1).gather(-1, pos[..., None]).squeeze(-1)
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
