"""Loading pretrained encoder weights from local folders (amif.weights).

Small checkpoints are written in the real formats: transformers folders (``save_pretrained``, sharded, and
the older ``pytorch_model.bin`` with ``vision_model.`` keys), and the OpenAI CLIP layout as a TorchScript
archive and as a plain state dict. The OpenAI path is checked against an independent ViT forward written
here that consumes the OpenAI-layout tensors directly.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from amif.errors import CheckpointError, ConfigError
from amif.weights import (
    check_state_dict,
    check_text_encoder_folder,
    load_clip_vision,
    load_clip_vision_model,
    load_text_encoder_folder,
)

WIDTH, LAYERS, PATCH, GRID, MLP, EMBED = 128, 2, 8, 4, 256, 32  # width 128 -> 2 heads of 64
IMAGE = PATCH * GRID


# --------------------------------------------------------------------------------------------------
# OpenAI-layout checkpoints and an independent reference forward
# --------------------------------------------------------------------------------------------------


def make_openai_state_dict(seed: int = 0) -> dict[str, Tensor]:
    """A tiny CLIP state dict in the OpenAI layout, visual tower plus some text-tower tensors, in fp16."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.05) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    def ln(prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}.weight": 1 + rnd(WIDTH, scale=0.1), f"{prefix}.bias": rnd(WIDTH)}

    sd: dict[str, Tensor] = {
        "visual.conv1.weight": rnd(WIDTH, 3, PATCH, PATCH),
        "visual.class_embedding": rnd(WIDTH, scale=0.5),
        "visual.positional_embedding": rnd(GRID * GRID + 1, WIDTH, scale=0.5),
        **ln("visual.ln_pre"),
        **ln("visual.ln_post"),
        "visual.proj": rnd(WIDTH, EMBED),
        # text tower and the rest of CLIP: must be ignored
        "token_embedding.weight": rnd(20, EMBED),
        "positional_embedding": rnd(8, EMBED),
        "transformer.resblocks.0.attn.in_proj_weight": rnd(3 * EMBED, EMBED),
        "ln_final.weight": torch.ones(EMBED),
        "text_projection": rnd(EMBED, EMBED),
        "logit_scale": torch.tensor(4.6),
    }
    for i in range(LAYERS):
        p = f"visual.transformer.resblocks.{i}."
        sd.update(
            {
                p + "attn.in_proj_weight": rnd(3 * WIDTH, WIDTH, scale=0.1),
                p + "attn.in_proj_bias": rnd(3 * WIDTH),
                p + "attn.out_proj.weight": rnd(WIDTH, WIDTH, scale=0.1),
                p + "attn.out_proj.bias": rnd(WIDTH),
                **ln(p + "ln_1"),
                **ln(p + "ln_2"),
                p + "mlp.c_fc.weight": rnd(MLP, WIDTH, scale=0.1),
                p + "mlp.c_fc.bias": rnd(MLP),
                p + "mlp.c_proj.weight": rnd(WIDTH, MLP, scale=0.1),
                p + "mlp.c_proj.bias": rnd(WIDTH),
            }
        )
    return {k: v.half() for k, v in sd.items()}  # the OpenAI release stores fp16 weights


def reference_forward(sd: dict[str, Tensor], images: Tensor, num_layers: int | None = None) -> Tensor:
    """ln_post(all tokens) of an OpenAI-style ViT, straight from the OpenAI-layout tensors (float64)."""
    w = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(images.double(), w["visual.conv1.weight"], stride=PATCH)  # B, width, g, g
    x = x.flatten(2).transpose(1, 2)
    cls = w["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + w["visual.positional_embedding"]

    def ln(t: Tensor, name: str) -> Tensor:
        return F.layer_norm(t, (WIDTH,), w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-5)

    x = ln(x, "visual.ln_pre")
    heads, batch, tokens = WIDTH // 64, x.shape[0], x.shape[1]
    for i in range(num_layers or LAYERS):
        p = f"visual.transformer.resblocks.{i}."
        h = ln(x, p + "ln_1")
        qkv = h @ w[p + "attn.in_proj_weight"].T + w[p + "attn.in_proj_bias"]
        q, k, v = (t.reshape(batch, tokens, heads, 64).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(64), dim=-1) @ v
        att = att.transpose(1, 2).reshape(batch, tokens, WIDTH)
        x = x + att @ w[p + "attn.out_proj.weight"].T + w[p + "attn.out_proj.bias"]
        h = ln(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU
        x = x + h @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"]
    return ln(x, "visual.ln_post")


def tower(model: CLIPVisionModel) -> nn.Module:
    return getattr(model, "vision_model", model)  # transformers 4.x wraps the tower, 5.x does not


def encode(model: CLIPVisionModel, images: Tensor, **kwargs) -> Tensor:
    """All tokens after post_layernorm (CLIP's ln_post), as amif's image encoder uses them."""
    model.eval()
    with torch.no_grad():
        return tower(model).post_layernorm(model(pixel_values=images, **kwargs).last_hidden_state)


def save_torchscript(sd: dict[str, Tensor], file: Path) -> None:
    """Save ``sd`` as a TorchScript archive whose ``state_dict()`` has the same names (like ViT-B-16.pt)."""
    root = nn.Module()
    for key, t in sd.items():
        *path, name = key.split(".")
        m = root
        for part in path:
            if not hasattr(m, part):
                m.add_module(part, nn.Module())
            m = getattr(m, part)
        m.register_parameter(name, nn.Parameter(t.clone(), requires_grad=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but the release uses it
        torch.jit.script(root).save(str(file))


@pytest.fixture(scope="module")
def openai_sd() -> dict[str, Tensor]:
    return make_openai_state_dict()


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def openai_files(module_tmp, openai_sd) -> dict[str, Path]:
    d = module_tmp("openai")
    jit_file, plain_file = d / "ViT-T-8.pt", d / "plain.pt"
    save_torchscript(openai_sd, jit_file)
    torch.save(openai_sd, plain_file)
    folder = d / "folder"
    folder.mkdir()
    shutil.copy(jit_file, folder / "ViT-T-8.pt")
    return {"jit": jit_file, "plain": plain_file, "folder": folder}


# --------------------------------------------------------------------------------------------------
# OpenAI layout
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["jit", "plain", "folder"])
def test_openai_layout_matches_reference_forward(openai_files, openai_sd, images, kind):
    config, sd = load_clip_vision(openai_files[kind])
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (WIDTH, LAYERS, 2)
    assert (config.patch_size, config.image_size, config.intermediate_size) == (PATCH, IMAGE, MLP)
    assert config.hidden_act == "quick_gelu"
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert not any("proj" == k.split(".")[-1] or "text" in k or "logit" in k for k in sd)
    model = CLIPVisionModel(config)
    model.load_state_dict(sd, strict=True)
    got = encode(model, images)
    want = reference_forward(openai_sd, images).float()
    assert got.shape == (2, GRID * GRID + 1, WIDTH)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_jit_archive_is_really_torchscript(openai_files):
    with pytest.raises(RuntimeError), warnings.catch_warnings():  # a TorchScript archive, not a pickle
        warnings.simplefilter("ignore")
        torch.load(openai_files["jit"], weights_only=True)


def test_num_layers_keeps_first_blocks(openai_files, openai_sd, images):
    config, sd = load_clip_vision(openai_files["plain"], num_layers=1)
    assert config.num_hidden_layers == 1
    assert not any(".layers.1." in k for k in sd)
    model = CLIPVisionModel(config)
    model.load_state_dict(sd, strict=True)
    want = reference_forward(openai_sd, images, num_layers=1).float()
    torch.testing.assert_close(encode(model, images), want, atol=1e-5, rtol=1e-5)


def test_position_embedding_interpolated_and_persisted(openai_files, images):
    """At 48 px (4x4 -> 6x6 grid) the stored table equals transformers' own runtime interpolation."""
    config0, sd0 = load_clip_vision(openai_files["plain"])
    native = CLIPVisionModel(config0)
    native.load_state_dict(sd0, strict=True)
    big = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    want = encode(native, big, interpolate_pos_encoding=True)

    model = load_clip_vision_model(openai_files["plain"], image_size=48)
    assert model.config.image_size == 48
    pos = tower(model).embeddings.position_embedding.weight
    assert pos.shape == (37, WIDTH)
    torch.testing.assert_close(
        pos[0], sd0[next(k for k in sd0 if k.endswith("position_embedding.weight"))][0]
    )
    torch.testing.assert_close(encode(model, big), want, atol=1e-5, rtol=1e-5)


def test_load_clip_vision_model_uses_sdpa(openai_files):
    model = load_clip_vision_model(openai_files["plain"], num_layers=1)
    assert model.config._attn_implementation == "sdpa"


def test_bad_image_size_and_num_layers(openai_files):
    with pytest.raises(ConfigError, match="multiple of the patch size 8"):
        load_clip_vision(openai_files["plain"], image_size=50)
    with pytest.raises(CheckpointError, match="asked for 3 blocks but the checkpoint has 2"):
        load_clip_vision(openai_files["plain"], num_layers=3)


# --------------------------------------------------------------------------------------------------
# transformers folders
# --------------------------------------------------------------------------------------------------


def tiny_vision_config(**kw) -> CLIPVisionConfig:
    args = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    args.update(kw)
    return CLIPVisionConfig(**args)


def tiny_clip_model() -> CLIPModel:
    torch.manual_seed(0)
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=100,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = tiny_vision_config().to_dict()
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


@pytest.fixture(scope="module")
def clip_model() -> CLIPModel:
    return tiny_clip_model()


@pytest.mark.parametrize("shard", [False, True])
def test_clipmodel_folder(tmp_path, clip_model, images, shard):
    clip_model.save_pretrained(tmp_path, **({"max_shard_size": "40KB"} if shard else {}))
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    config, sd = load_clip_vision(tmp_path)
    assert not any("text" in k or "visual_projection" in k or "logit" in k for k in sd)
    model = CLIPVisionModel(config)
    model.load_state_dict(sd, strict=True)
    ref = CLIPModel.from_pretrained(tmp_path).vision_model
    torch.testing.assert_close(encode(model, images), encode(ref, images), atol=1e-6, rtol=1e-6)


def test_clipvisionmodel_folder_and_num_layers(tmp_path, clip_model, images):
    vision = clip_model.vision_model
    CLIPVisionModel(vision.config).save_pretrained(tmp_path)  # architecture + random weights
    ref = CLIPVisionModel.from_pretrained(tmp_path).eval()
    config, sd = load_clip_vision(tmp_path, num_layers=1, image_size=48)
    assert (config.num_hidden_layers, config.image_size) == (1, 48)
    model = CLIPVisionModel(config)
    model.load_state_dict(sd, strict=True)
    ref.config.num_hidden_layers = 1
    tower(ref).encoder.layers = tower(ref).encoder.layers[:1]
    big = torch.randn(1, 3, 48, 48)
    torch.testing.assert_close(
        encode(model, big), encode(ref, big, interpolate_pos_encoding=True), atol=1e-5, rtol=1e-5
    )


def test_legacy_pytorch_model_bin_with_prefix_and_position_ids(tmp_path, clip_model, images):
    """Older hub checkpoints: pytorch_model.bin, keys 'vision_model.*', persisted position_ids buffers."""
    ref = clip_model.vision_model
    sd = {f"vision_model.{k}": v for k, v in ref.state_dict().items()}
    sd = {k.replace("vision_model.vision_model.", "vision_model."): v for k, v in sd.items()}
    sd["vision_model.embeddings.position_ids"] = torch.arange(GRID * GRID + 1)[None]
    sd["text_model.embeddings.token_embedding.weight"] = torch.zeros(100, 32)
    sd["visual_projection.weight"] = torch.zeros(16, 64)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    clip_model.config.save_pretrained(tmp_path)
    model = load_clip_vision_model(tmp_path)
    torch.testing.assert_close(encode(model, images), encode(ref, images), atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def test_error_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder") as e:
        load_clip_vision(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


def test_error_folder_without_weights(tmp_path):
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(CheckpointError, match="no weights file") as e:
        load_clip_vision(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_error_config_without_weights(tmp_path):
    tiny_vision_config().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no weights file; expected one of model.safetensors"):
        load_clip_vision(tmp_path)


def test_error_weights_without_config(tmp_path, clip_model):
    clip_model.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_clip_vision(tmp_path)
    with pytest.raises(CheckpointError, match="without a config.json"):
        load_clip_vision(tmp_path / "model.safetensors")


def test_error_hf_state_dict_as_pt_file(tmp_path, clip_model):
    torch.save(clip_model.state_dict(), tmp_path / "clip.pt")
    with pytest.raises(CheckpointError, match="transformers CLIP weights without config.json"):
        load_clip_vision(tmp_path / "clip.pt")


def test_error_unknown_layouts(tmp_path):
    bert = tmp_path / "bert"
    BertModel(tiny_bert_config()).save_pretrained(bert)
    with pytest.raises(CheckpointError, match="model_type 'bert'"):
        load_clip_vision(bert)
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"unknown layout.*foo\.weight") as e:
        load_clip_vision(tmp_path / "x.pt")
    assert str(tmp_path / "x.pt") in str(e.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_clip_vision(tmp_path / "junk.pt")


def test_error_several_candidate_files(tmp_path, openai_files):
    shutil.copy(openai_files["plain"], tmp_path / "a.pt")
    shutil.copy(openai_files["plain"], tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="a.pt, b.pt"):
        load_clip_vision(tmp_path)


def test_error_openai_missing_tensor(tmp_path, openai_sd):
    sd = {k: v for k, v in openai_sd.items() if not k.startswith("visual.ln_post")}
    torch.save(sd, tmp_path / "ViT.pt")
    with pytest.raises(CheckpointError, match=r"lacks the tensor 'visual\.ln_post\.weight'"):
        load_clip_vision(tmp_path / "ViT.pt")


def test_error_openai_wrong_shape(tmp_path, openai_sd):
    sd = dict(openai_sd)
    sd["visual.transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(MLP + 8, WIDTH)
    torch.save(sd, tmp_path / "ViT.pt")
    with pytest.raises(CheckpointError) as e:
        load_clip_vision(tmp_path / "ViT.pt")
    msg = str(e.value)
    assert str(tmp_path / "ViT.pt") in msg
    assert f"encoder.layers.1.mlp.fc1.weight: expected ({MLP}, {WIDTH}), got ({MLP + 8}, {WIDTH})" in msg


def test_error_hf_wrong_shapes_from_config(tmp_path, clip_model):
    clip_model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vision_config"]["intermediate_size"] = 80
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        load_clip_vision(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "6 tensor(s) with the wrong shape" in msg
    assert "encoder.layers.0.mlp.fc1.weight: expected (80, 64), got (96, 64)" in msg
    assert "encoder.layers.1.mlp.fc2.weight: expected (64, 80), got (64, 96)" in msg
    assert "encoder.layers.0.mlp.fc1.bias: expected (80,), got (96,)" in msg


def test_error_missing_shard(tmp_path, clip_model):
    clip_model.save_pretrained(tmp_path, max_shard_size="40KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"missing: {shard.name}"):
        load_clip_vision(tmp_path)


def test_check_state_dict_lists_everything():
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    sd = {
        "0.weight": torch.zeros(3, 5),
        "0.bias": torch.zeros(3),
        "1.weight": torch.zeros(3),
        "2.extra": torch.zeros(1),
    }
    with pytest.raises(CheckpointError) as e:
        check_state_dict(model, sd, context="/some/folder")
    msg = str(e.value)
    assert msg.startswith("/some/folder: the weights do not fit Sequential")
    assert "0.weight: expected (3, 4), got (3, 5)" in msg
    assert "1 missing tensor(s):\n  1.bias" in msg
    assert "1 unexpected tensor(s):\n  2.extra" in msg
    with pytest.raises(CheckpointError) as e:  # non-strict: only the shapes count
        check_state_dict(model, sd, strict=False, context="ctx")
    assert "0.weight" in str(e.value) and "missing" not in str(e.value) and "unexpected" not in str(e.value)
    check_state_dict(model, {"0.weight": torch.zeros(3, 4)}, strict=False, context="ctx")
    check_state_dict(model, model.state_dict(), context="ctx")


# --------------------------------------------------------------------------------------------------
# text encoder folders
# --------------------------------------------------------------------------------------------------


def tiny_bert_config(**kw) -> BertConfig:
    args = dict(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    args.update(kw)
    return BertConfig(**args)


def write_vocab(folder: Path) -> None:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "lung", "is", "normal", "?"]
    words += [f"w{i}" for i in range(40 - len(words))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")


@pytest.fixture
def bert_folder(tmp_path) -> Path:
    """Laid out like the Bio_ClinicalBERT download: config.json, weights, vocab.txt, no tokenizer_config."""
    folder = tmp_path / "bert"
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(folder)
    write_vocab(folder)
    return folder


def test_text_encoder_folder_loads(bert_folder):
    assert check_text_encoder_folder(bert_folder) == bert_folder
    model, tokenizer = load_text_encoder_folder(bert_folder)
    assert isinstance(model, BertModel)
    ids = tokenizer("the lung is normal?", return_tensors="pt")
    assert ids["input_ids"][0].tolist() == [2, 5, 6, 7, 8, 9, 3]
    no_pooler, _ = load_text_encoder_folder(bert_folder, attn_implementation="sdpa", add_pooling_layer=False)
    assert no_pooler.pooler is None and no_pooler.config._attn_implementation == "sdpa"
    ref = BertModel.from_pretrained(bert_folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**ids).last_hidden_state, ref(**ids).last_hidden_state)


def test_text_encoder_pytorch_model_bin(bert_folder):
    sd = BertModel.from_pretrained(bert_folder).state_dict()
    (bert_folder / "model.safetensors").unlink()
    torch.save(sd, bert_folder / "pytorch_model.bin")
    model, _ = load_text_encoder_folder(bert_folder)
    torch.testing.assert_close(
        model.state_dict()["embeddings.word_embeddings.weight"], sd["embeddings.word_embeddings.weight"]
    )


def test_text_encoder_missing_pieces(tmp_path, bert_folder):
    with pytest.raises(CheckpointError, match="text-encoder folder not found"):
        check_text_encoder_folder(tmp_path / "nope")
    (bert_folder / "config.json").unlink()
    (bert_folder / "vocab.txt").unlink()
    with pytest.raises(CheckpointError) as e:
        check_text_encoder_folder(bert_folder)
    msg = str(e.value)
    assert str(bert_folder) in msg and "config.json" in msg and "tokenizer files" in msg
    assert "no weights file" not in msg


def test_text_encoder_without_pytorch_weights(bert_folder):
    (bert_folder / "model.safetensors").unlink()
    (bert_folder / "tf_model.h5").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no weights file.*Only tf_model\.h5 found") as e:
        load_text_encoder_folder(bert_folder)
    assert str(bert_folder) in str(e.value)


def test_text_encoder_wrong_shapes(bert_folder):
    cfg = json.loads((bert_folder / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (bert_folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        load_text_encoder_folder(bert_folder)
    msg = str(e.value)
    assert str(bert_folder) in msg and "3 tensor(s) with the wrong shape" in msg
    assert "encoder.layer.0.intermediate.dense.weight: expected (64, 32), got (48, 32)" in msg


def test_text_encoder_missing_tensors(bert_folder):
    from safetensors.torch import load_file, save_file

    sd = load_file(bert_folder / "model.safetensors")
    del sd["encoder.layer.0.output.dense.weight"]
    save_file(sd, bert_folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match=r"1 missing tensor\(s\):\n  encoder\.layer\.0\.output\.dense\.weight"
    ):
        load_text_encoder_folder(bert_folder)
