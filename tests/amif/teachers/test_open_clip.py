"""BiomedCLIP from its released open_clip folder: embeddings against an independent forward, bad folders."""

from __future__ import annotations

import json

import pytest
import torch

from amif.errors import CheckpointError
from amif.teachers import OpenCLIPTeacher, load_teacher
from amif.testing.biomedclip import reference_image, reference_text, write_biomedclip
from amif_train.cli import main as cli_main


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest restores the count after each test


@pytest.fixture(scope="module")
def released(module_tmp):
    folder = module_tmp("biomedclip")
    state = write_biomedclip(folder, width=128, layers=2, text_width=128, text_layers=2)
    return folder, state


def test_released_layout_matches_the_vit_and_bert_equations(released):
    folder, state = released
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "open_clip_config.json", "open_clip_pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "vocab.txt"])
    teacher = load_teacher(folder)
    assert isinstance(teacher, OpenCLIPTeacher)
    assert teacher.image_size == 32 and teacher.max_length == 64  # context 256 capped by 64 positions
    assert teacher.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert teacher.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))

    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    got = teacher.encode_images(pixels)
    want = reference_image(state, pixels, heads=2)
    assert got.shape == (3, 32)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    # one head instead of two gives other embeddings: the reference does test the head split
    assert (reference_image(state, pixels, heads=1) - want).abs().max() > 1e-3

    texts = ["the chest xray shows no acute effusion .", "ct of abdomen", "a small left pleural effusion"]
    got = teacher.encode_texts(texts)
    tok = teacher.tokenizer(texts, padding=True, return_tensors="pt")
    assert tok["input_ids"][0, 0] == 2 and 1 not in tok["input_ids"][0].tolist()  # [CLS], all words known
    want = reference_text(state, tok["input_ids"], tok["attention_mask"], heads=2)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    # padding does not change a caption's embedding
    torch.testing.assert_close(teacher.encode_texts(texts[1:2]), got[1:2], atol=2e-5, rtol=1e-4)


def _edit(folder, **edits):
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    for k, v in edits.items():
        cfg["model_cfg"][k].update(v) if isinstance(v, dict) else cfg["model_cfg"].__setitem__(k, v)
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))


def _resave(folder, fn):
    state = torch.load(folder / "open_clip_pytorch_model.bin", weights_only=True)
    fn(state)
    torch.save(state, folder / "open_clip_pytorch_model.bin")


BAD = {
    "missing": (lambda f: _resave(f, lambda s: s.pop("visual.trunk.blocks.0.attn.qkv.bias")),
                "1 missing: visual.trunk.blocks.0.attn.qkv.bias"),
    "extra": (lambda f: _resave(f, lambda s: s.__setitem__("visual.trunk.norm_pre.weight", torch.ones(64))),
              "1 unexpected: visual.trunk.norm_pre.weight"),
    "misshapen": (lambda f: _resave(f, lambda s: s.__setitem__("text.proj.2.weight", torch.zeros(32, 7))),
                  "misshapen: text.proj.2.weight (32, 7) (expected (32, 48))"),
    "no weights": (lambda f: (f / "open_clip_pytorch_model.bin").unlink(), "has no weights"),
    "corrupt weights": (lambda f: (f / "open_clip_pytorch_model.bin").write_bytes(b"not a pickle"), "cannot read"),
    "malformed config": (lambda f: (f / "open_clip_config.json").write_text("{"), "malformed"),
    "open_clip ViT": (lambda f: _edit(f, vision_cfg={"timm_model_name": None, "layers": 12, "width": 768}),
                      "image tower 'open_clip built-in' is not supported; supported open_clip architectures"),
    "convnext": (lambda f: _edit(f, vision_cfg={"timm_model_name": "convnext_base"}),
                 "image tower 'convnext_base' is not supported"),
    "built-in text": (lambda f: _edit(f, text_cfg={"hf_model_name": None}), "text tower without hf_model_name"),
    "attention pool": (lambda f: _edit(f, vision_cfg={"timm_pool": "abs_attn"}),
                       "vision_cfg.timm_pool 'abs_attn' not supported"),
    "roberta": (lambda f: _resave(f, lambda s: [s.__setitem__(k.replace("word_embeddings", "word_embeds"), s.pop(k))
                                                for k in list(s) if "word_embeddings" in k]),
                "is not a BERT"),
    "image size": (lambda f: _edit(f, vision_cfg={"image_size": 224}), "image size 224 does not match"),
}


def test_a_folder_of_neither_kind_says_what_it_needs(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(CheckpointError, match="neither open_clip_config.json .* nor config.json"):
        load_teacher(tmp_path)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_folders_name_the_problem(tmp_path, case):
    edit, message = BAD[case]
    write_biomedclip(tmp_path)
    edit(tmp_path)
    with pytest.raises(CheckpointError) as info:
        OpenCLIPTeacher.from_folder(tmp_path)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_cli_reports_a_bad_folder_in_one_line(tmp_path, capsys):
    write_biomedclip(tmp_path / "bc")
    _resave(tmp_path / "bc", lambda s: s.pop("logit_scale"))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "captions_train.jsonl").write_text(json.dumps({"id": "1", "image": "x.png", "caption": "a", "split": "train"}))
    code = cli_main(["teacher-cache", "--corpus", "captions", "--root", str(tmp_path / "c"), "--teacher",
                     str(tmp_path / "bc"), "--out", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "1 missing: logit_scale" in lines[0], err


@pytest.mark.parametrize("trust", [True, False])
def test_hf_port_with_remote_code_points_at_the_released_folder(tmp_path, trust):
    """A folder shaped like chuhac/BiomedCLIP-vit-bert-hf: config.json with auto_map and model code that
    imports transformers.modeling_attn_mask_utils (gone in transformers 5)."""
    port = tmp_path / "BiomedCLIP-vit-bert-hf"
    port.mkdir()
    (port / "config.json").write_text(json.dumps({
        "model_type": "biomed_clip", "architectures": ["BiomedCLIPModel"],
        "auto_map": {"AutoConfig": "configuration_biomed_clip.BiomedCLIPConfig",
                     "AutoModel": "modeling_biomed_clip.BiomedCLIPModel"}}))
    (port / "configuration_biomed_clip.py").write_text(
        "from transformers import PretrainedConfig\n\n\nclass BiomedCLIPConfig(PretrainedConfig):\n"
        "    model_type = 'biomed_clip'\n")
    (port / "modeling_biomed_clip.py").write_text(
        "from transformers import PreTrainedModel\n"
        "from transformers.modeling_attn_mask_utils import _prepare_4d_attention_mask\n\n"
        "from .configuration_biomed_clip import BiomedCLIPConfig\n\n\n"
        "class BiomedCLIPModel(PreTrainedModel):\n    config_class = BiomedCLIPConfig\n")
    (port / "model.safetensors").write_bytes(b"")
    (port / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(CheckpointError) as info:
        load_teacher(port, trust_remote_code=trust)
    text = str(info.value)
    assert "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224" in text and "open_clip_config.json" in text
    assert "\n" not in text
    if trust:  # the cause is named too
        assert "No module named 'transformers.modeling_attn_mask_utils'" in text
