"""The answer decoder starts its LM head from a BERT checkpoint's masked-LM head when there is one
(``BertLMHeadModel.from_pretrained`` in the published code), and stays as initialised without one."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForPreTraining, BertModel

from amif.errors import CheckpointError
from amif.models.vqa import AMiFVQA
from amif.weights import load_bert_mlm_head
from amif_train.config import load_config

from helpers import MICRO, TINY_CONFIG

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "lung", "is", "there", "a", "lesion", "?"]


def _config() -> BertConfig:
    return BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=48, max_position_embeddings=32)


def _folder(path, model_cls):
    torch.manual_seed(0)
    model = model_cls(_config())
    if model_cls is BertForPreTraining:
        with torch.no_grad():  # non-default values, so a copy is visible
            model.cls.predictions.bias.normal_()
            model.cls.predictions.transform.LayerNorm.weight.normal_()
    model.save_pretrained(path)
    (path / "vocab.txt").write_text("\n".join(WORDS + [f"w{i}" for i in range(40 - len(WORDS))]) + "\n")
    return path, model


def _vqa(folder) -> AMiFVQA:
    cfg = load_config(TINY_CONFIG, MICRO + [f"model.text_encoder.path={folder}", "model.text_encoder.num_layers=null",
                                            "model.decoder.num_layers=null", "model.decoder.cross_attention_from=1"])
    return AMiFVQA(cfg.model, ["yes", "no"], ["yes", "no"])


def test_decoder_loads_the_mlm_head(tmp_path):
    folder, ref = _folder(tmp_path / "bert", BertForPreTraining)
    dec = _vqa(folder).decoder
    t = ref.cls.predictions.transform
    assert torch.equal(dec.head_transform.weight, t.dense.weight)
    assert torch.equal(dec.head_transform.bias, t.dense.bias)
    assert torch.equal(dec.head_norm.weight, t.LayerNorm.weight)
    assert torch.equal(dec.head_bias, ref.cls.predictions.bias)
    assert torch.equal(dec.word_embeddings.weight, ref.bert.embeddings.word_embeddings.weight)  # still tied


def test_plain_bert_has_no_head_and_keeps_the_init(tmp_path):
    folder, _ = _folder(tmp_path / "bert", BertModel)
    assert load_bert_mlm_head(folder) == {}
    dec = _vqa(folder).decoder
    assert torch.count_nonzero(dec.head_bias) == 0 and torch.all(dec.head_norm.weight == 1)


def test_incomplete_head_is_an_error(tmp_path):
    folder, _ = _folder(tmp_path / "bert", BertForPreTraining)
    state = load_file(folder / "model.safetensors")
    state = {k: v for k, v in state.items() if "transform.dense" not in k}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="masked-LM head is incomplete.*head_transform.bias"):
        load_bert_mlm_head(folder)
