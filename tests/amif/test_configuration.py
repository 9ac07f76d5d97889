"""Typed YAML configuration: overrides, unknown keys, types, bases."""

import pytest

from amif.configuration import save_config
from amif.errors import ConfigError
from amif_train.config import FinetuneConfig, load_config

from helpers import TINY_CONFIG


def test_tiny_config_loads_with_overrides():
    cfg = load_config(TINY_CONFIG, ["run.max_epochs=3", "model.gca.enabled=false", "run.betas=[0.9, 0.95]"])
    assert isinstance(cfg, FinetuneConfig)
    assert cfg.run.max_epochs == 3 and cfg.model.gca.enabled is False and cfg.run.betas == (0.9, 0.95)
    assert cfg.model.text_encoder.path == "minilm"


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key config\.model\.fusion\.nlayers.*num_layers"):
        load_config(TINY_CONFIG, ["model.fusion.nlayers=2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"config\.run\.learning_rate.*valid keys of config\.run are: .*\blr\b"):
        load_config(bad)


def test_wrong_types_and_values_are_errors():
    with pytest.raises(ConfigError, match="config.run.lr: expected a number"):
        load_config(None, ["run.lr=fast"])
    assert load_config(None, ["run.lr=3e-4"]).run.lr == 3e-4  # YAML 1.1 reads this as a string
    with pytest.raises(ConfigError, match="protocol"):
        load_config(None, ["data.protocol=leaky"])
    with pytest.raises(ConfigError, match="must look like"):
        load_config(None, ["run.lr"])


def test_base_file_and_round_trip(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"_base_: {TINY_CONFIG}\nrun:\n  max_epochs: 7\n")
    cfg = load_config(child)
    assert cfg.run.max_epochs == 7 and cfg.model.image_encoder.image_size == 128
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")
