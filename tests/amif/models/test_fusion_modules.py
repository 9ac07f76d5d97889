"""Co-attention fusion, gated cross-attention and the answer decoder: shapes, masks, gate."""

import torch

from amif.models.answer_decoder import AnswerDecoder
from amif.models.attention import MultiHeadAttention
from amif.models.coattention import CoAttentionFusion
from amif.models.config import FusionConfig
from amif.models.gated_cross_attention import GatedCrossAttention


def _pad(x: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([x, torch.randn(x.shape[0], extra, *x.shape[2:]) * 5], dim=1)


def test_attention_matches_manual_softmax_with_padding():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).eval()
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = mha(x, ctx, context_mask=mask)
    q = mha.query(x).view(2, 3, 2, 8).transpose(1, 2)
    k = mha.key(ctx).view(2, 5, 2, 8).transpose(1, 2)
    v = mha.value(ctx).view(2, 5, 2, 8).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / 8**0.5
    s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    ref = mha.out((s.softmax(-1) @ v).transpose(1, 2).reshape(2, 3, 16))
    assert torch.allclose(out, ref, atol=1e-5)


def test_causal_attention_ignores_future_tokens():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)
    assert torch.allclose(mha(x, causal=True)[:, :4], mha(y, causal=True)[:, :4], atol=1e-6)
    assert not torch.allclose(mha(x, causal=True)[:, 4:], mha(y, causal=True)[:, 4:])


def test_coattention_shapes_and_padding_invariance():
    torch.manual_seed(0)
    fusion = CoAttentionFusion(FusionConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64),
                               text_width=24, image_width=40).eval()
    text, image = torch.randn(2, 5, 24), torch.randn(2, 9, 40)
    mask = torch.ones(2, 5, dtype=torch.bool)
    x, y = fusion(text, mask, image)
    assert x.shape == (2, 5, 32) and y.shape == (2, 9, 32)
    # pad the question with 3 junk tokens: no real output may change
    x2, y2 = fusion(_pad(text, 3), torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1), image)
    assert torch.allclose(x, x2[:, :5], atol=1e-5)
    assert torch.allclose(y, y2, atol=1e-5)


def test_gca_gate_in_unit_interval_and_padding_invariance():
    torch.manual_seed(0)
    gca = GatedCrossAttention(32, 4, 64).eval()
    fused, prior = torch.randn(2, 7, 32), torch.randn(1, 6, 32)
    pmask = torch.ones(1, 6, dtype=torch.bool)
    out, gate = gca(fused, prior, pmask, return_gate=True)
    assert out.shape == fused.shape and gate.shape == fused.shape
    assert gate.min() > 0 and gate.max() < 1
    # padded vocabulary positions take no part
    out2 = gca(fused, _pad(prior, 4), torch.cat([pmask, torch.zeros(1, 4, dtype=torch.bool)], 1))
    assert torch.allclose(out, out2, atol=1e-5)
    # each fused token only reads the vocabulary: dropping a token leaves the others unchanged
    assert torch.allclose(gca(fused[:, :4], prior, pmask), out[:, :4], atol=1e-5)


def test_gca_gate_mixes_readout_and_features():
    torch.manual_seed(0)
    gca = GatedCrossAttention(16, 2, 32).eval()
    fused, prior = torch.randn(1, 3, 16), torch.randn(1, 4, 16)
    with torch.no_grad():
        gca.gate.weight.zero_()
        gca.gate.bias.fill_(-50.0)  # gate ~ 0: the vocabulary read-out is shut out
        shut = gca(fused, prior)
        other_prior = gca(fused, torch.randn(1, 4, 16))
    assert torch.allclose(shut, other_prior, atol=1e-5)


def test_decoder_cross_attention_only_from_given_layer_and_padding_invariance():
    torch.manual_seed(0)
    dec = AnswerDecoder(vocab_size=50, hidden_size=32, num_heads=4, intermediate_size=64, num_layers=3,
                        cross_attention_from=1, context_size=24).eval()
    assert dec.layers[0].cross_attn is None and dec.layers[1].cross_attn is not None
    ids = torch.tensor([[1, 5, 7, 2, 0, 0]])
    mask = ids != 0
    ctx, cmask = torch.randn(1, 4, 24), torch.ones(1, 4, dtype=torch.bool)
    logits = dec(ids, mask, ctx, cmask)
    assert logits.shape == (1, 6, 50)
    ctx2 = torch.cat([ctx, torch.randn(1, 3, 24)], 1)
    cmask2 = torch.cat([cmask, torch.zeros(1, 3, dtype=torch.bool)], 1)
    assert torch.allclose(logits, dec(ids, mask, ctx2, cmask2), atol=1e-5)
    ll = dec.sequence_log_likelihood(ids, mask, ctx, cmask)
    manual = logits[0, :3].log_softmax(-1)[torch.arange(3), ids[0, 1:4]].sum()
    assert torch.allclose(ll[0], manual, atol=1e-5)


def test_decoder_loads_bert_weights():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64), add_pooling_layer=False)
    dec = AnswerDecoder(60, 32, 4, 64, num_layers=2, cross_attention_from=1, context_size=32)
    loaded = dec.load_bert_weights(bert.state_dict())
    assert torch.equal(dec.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert torch.equal(dec.layers[1].self_attn.query.weight, bert.encoder.layer[1].attention.self.query.weight)
    assert torch.equal(dec.layers[0].ffn.fc2.bias, bert.encoder.layer[0].output.dense.bias)
    assert not any("cross" in k for k in loaded)
    assert len(loaded) == 5 + 2 * 16
