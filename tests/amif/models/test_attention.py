"""Boolean and causal attention masks give the outputs of the additive float masks they replaced."""

import torch
import torch.nn.functional as F

from amif.models.answer_decoder import AnswerDecoder
from amif.models.attention import MultiHeadAttention
from amif.models.coattention import CoAttentionFusion
from amif.models.config import FusionConfig


def _float_mask_attention(attn, x, context, key_mask, causal):
    """The previous computation: an additive finfo.min bias for padding plus one for the causal mask."""
    q = attn._split(attn.query(x))
    k, v = attn.project_kv(context)
    lq, lk = q.shape[2], k.shape[2]
    low = torch.finfo(q.dtype).min
    bias = torch.zeros(q.shape[0], 1, lq, lk)
    if key_mask is not None:
        bias = bias.masked_fill(~key_mask[:, None, None, :], low)
    if causal:
        future = ~torch.ones(lq, lk, dtype=torch.bool).tril(diagonal=lk - lq)
        bias = (bias + torch.zeros(lq, lk).masked_fill(future, low)).clamp(min=low)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    b, h, n, d = out.shape
    return attn.out(out.transpose(1, 2).reshape(b, n, h * d))


def test_boolean_key_padding_mask_equals_the_additive_bias():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, context_size=24).eval()
    x, ctx = torch.randn(3, 5, 32), torch.randn(3, 7, 24)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] + [0] * 6], dtype=torch.bool)
    assert torch.allclose(attn(x, ctx, context_mask=mask), _float_mask_attention(attn, x, ctx, mask, False), atol=1e-6)


def test_is_causal_on_right_padded_input_equals_causal_plus_padding_bias_at_real_positions():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4).eval()
    x = torch.randn(3, 6, 32)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] + [0] * 5], dtype=torch.bool)  # right-padded
    new = attn(x, causal=True)
    old = _float_mask_attention(attn, x, x, mask, True)
    assert torch.allclose(new[mask], old[mask], atol=1e-6)


def test_decoder_scores_are_those_of_the_masked_decoder():
    """A right-padded batch scores each answer as the same answer alone (no padding at all)."""
    torch.manual_seed(0)
    dec = AnswerDecoder(vocab_size=40, hidden_size=32, num_heads=4, intermediate_size=64, num_layers=2,
                        cross_attention_from=0, context_size=24).eval()
    ids = torch.tensor([[1, 5, 7, 9, 2], [1, 6, 2, 0, 0], [1, 2, 0, 0, 0]])
    mask = ids != 0
    ctx, cmask = torch.randn(3, 4, 24), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        batch = dec.sequence_log_likelihood(ids, mask, ctx, cmask)
        alone = [dec.sequence_log_likelihood(ids[i:i + 1, :n], mask[i:i + 1, :n], ctx[i:i + 1, cmask[i]], None)
                 for i, n in enumerate(mask.sum(1).tolist())]
    assert torch.allclose(batch, torch.cat(alone), atol=1e-5)


def test_coattention_with_boolean_masks_equals_trimmed_inputs():
    torch.manual_seed(0)
    fusion = CoAttentionFusion(FusionConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64),
                               text_width=16, image_width=24).eval()
    text, image = torch.randn(2, 6, 16), torch.randn(2, 5, 24)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    with torch.no_grad():
        x, y = fusion(text, mask, image)
        x1, y1 = fusion(text[1:, :4], mask[1:, :4], image[1:])
    assert torch.allclose(x[1:, :4], x1, atol=1e-5) and torch.allclose(y[1:], y1, atol=1e-5)


def test_grouped_queries_equal_a_repeated_context():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, context_size=24).eval()
    x, ctx = torch.randn(6, 3, 32), torch.randn(2, 7, 24)  # 3 query rows per context row
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2], dtype=torch.bool)
    grouped = attn(x, ctx, mask, group=3)
    repeated = attn(x, ctx.repeat_interleave(3, 0), mask.repeat_interleave(3, 0))
    assert torch.allclose(grouped, repeated, atol=1e-6)
    assert torch.allclose(attn(x, None, mask, kv=attn.project_kv(ctx), group=3), grouped)
