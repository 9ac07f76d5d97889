"""Named architectures (amif.registry): every registered one builds and runs a forward pass on CPU."""

import pytest
import torch

import amif
from amif.errors import ConfigError
from amif.registry import list_models, model_config_dict, register_model_config

# small sizes that keep each architecture's structure (its text encoder, pooling, decoder wiring)
SMALL = dict(
    image_encoder={"image_size": 32, "patch_size": 8, "hidden_size": 48, "num_layers": 1, "num_heads": 2,
                   "intermediate_size": 96},
    text_encoder={"num_layers": 1},
    fusion={"hidden_size": 48, "num_layers": 1, "num_heads": 2, "intermediate_size": 96},
    gca={"num_heads": 2, "intermediate_size": 96},
    decoder={"num_layers": 1, "cross_attention_from": 0},
)


def test_the_paper_and_the_tiny_architectures_are_registered(tmp_path):
    assert {"amif-base", "amif-tiny"} <= set(list_models()) and list_models() == amif.list_models()
    base = model_config_dict("amif-base")
    assert (base["image_encoder"]["image_size"], base["image_encoder"]["num_layers"]) == (288, 11)
    assert (base["fusion"]["num_layers"], base["decoder"]["cross_attention_from"]) == (6, 6)
    # the dataclass defaults are the paper's sizes too: a file without a model section gets amif-base
    empty = tmp_path / "empty.yaml"
    empty.write_text("model: {}\n")
    assert amif.model_config("amif-base") == amif.model_config(empty)


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_builds_and_runs_forward(arch):
    torch.manual_seed(0)
    model = amif.create_model(arch, answers=["yes", "no", "left lung"], **SMALL)
    q = model.tokenizer(["is there a lesion?", "which side?"], padding="longest", return_tensors="pt")
    a = model.tokenizer(["yes", "left lung"], padding="longest", return_tensors="pt")
    pixels = torch.randn(2, 3, 32, 32)
    loss = model(pixels, q["input_ids"], q["attention_mask"], a["input_ids"], a["attention_mask"])
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.decoder.layers[0].cross_attn is not None  # the override reached the decoder
    model.eval()
    ranked = model.rank(pixels, q["input_ids"], q["attention_mask"])
    assert ranked.indices.shape == (2, 3) and torch.allclose(ranked.probs.sum(-1), torch.ones(2))


def test_create_model_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown architecture 'amif-huge' .*known: amif-base, amif-tiny"):
        amif.create_model("amif-huge")
    with pytest.raises(ConfigError, match=r"^unknown key model\.image_encoder\.size; valid keys"):
        amif.model_config("amif-tiny", image_encoder={"size": 64})
    with pytest.raises(ConfigError, match=r"^unknown key model\.encoder; valid keys of model are"):
        amif.model_config("amif-tiny", encoder={})


def test_yaml_files_and_registered_folders(tmp_path, monkeypatch):
    monkeypatch.setattr("amif.registry._extra", {})  # registrations end with the test
    exp = tmp_path / "exp.yaml"
    exp.write_text("model:\n  arch: amif-tiny\n  decoder: {rank_k: 4}\nrun: {lr: 0.1}\n")
    cfg = amif.model_config(exp, image_encoder={"image_size": 64})
    assert (cfg.decoder.rank_k, cfg.image_encoder.image_size, cfg.fusion.hidden_size) == (4, 64, 192)
    own = tmp_path / "archs"
    own.mkdir()
    (own / "my-net.yaml").write_text("fusion: {hidden_size: 96, num_layers: 1, num_heads: 4}\n")
    assert register_model_config(own) == ["my-net"] and "my-net" in amif.list_models()
    assert amif.model_config("my-net").fusion.hidden_size == 96
    (own / "bad.yaml").write_text("arch: amif-tiny\n")
    register_model_config(own / "bad.yaml")
    with pytest.raises(ConfigError, match="must hold one model section"):
        amif.model_config("bad")
