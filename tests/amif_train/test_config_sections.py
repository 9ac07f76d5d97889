"""Experiment configs by layer (amif_train.config): sibling run sections, named architectures."""

import pytest

from amif.configuration import from_dict, to_dict
from amif.errors import ConfigError
from amif.models.config import ModelConfig
from amif_train.config import load_config

from helpers import TINY_CONFIG

CONFIGS = TINY_CONFIG.parent


def test_run_sections_are_siblings_and_keep_their_own_keys(tmp_path):
    from amif_train.config import FinetuneRunConfig, PretrainConfig, PretrainRunConfig, RunConfig

    assert issubclass(FinetuneRunConfig, RunConfig) and issubclass(PretrainRunConfig, RunConfig)
    assert not issubclass(PretrainRunConfig, FinetuneRunConfig) and not issubclass(FinetuneRunConfig, PretrainRunConfig)
    stage0 = CONFIGS / "demo" / "pretrain_stage0.yaml"
    # a fine-tuning-only key in a pre-training file is an unknown key (one line), and the reverse too
    with pytest.raises(ConfigError, match=r"^unknown key config\.run\.freeze_image_encoder; valid keys of "
                                          r"config\.run are: .*\bstage\b") as e:
        load_config(stage0, ["run.freeze_image_encoder=true"], cls=PretrainConfig)
    assert "\n" not in str(e.value) and "cache_frozen_features" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^unknown key config\.run\.stage; .*\bfreeze_text_encoder\b"):
        load_config(TINY_CONFIG, ["run.stage=1"])
    # keys both share are accepted by both
    assert load_config(stage0, ["run.lr_new_modules=0.01"], cls=PretrainConfig).run.lr_new_modules == 0.01
    assert load_config(TINY_CONFIG, ["run.freeze_text_encoder=true"]).run.freeze_text_encoder is True


def test_model_arch_is_resolved_and_overridable(tmp_path):
    from amif.registry import model_config_dict

    cfg = load_config(TINY_CONFIG)
    assert to_dict(cfg.model) == to_dict(from_dict(ModelConfig, model_config_dict("amif-tiny")))
    base = load_config(CONFIGS / "paper" / "finetune_base.yaml")
    assert (base.model.image_encoder.image_size, base.model.fusion.num_layers) == (288, 6)
    assert base.model.text_encoder.path == "/models/Bio_ClinicalBERT"  # the file's override of amif-base
    # the arch can be chosen on the command line, and its keys overridden there
    swapped = load_config(TINY_CONFIG, ["model.arch=amif-base", "model.fusion.num_layers=3"])
    assert swapped.model.image_encoder.hidden_size == 768 and swapped.model.fusion.num_layers == 3
    with pytest.raises(ConfigError, match=r"^unknown architecture config\.model\.arch='amif-huge'; known: .*amif-tiny"):
        load_config(TINY_CONFIG, ["model.arch=amif-huge"])
    with pytest.raises(ConfigError, match=r"unknown key config\.model\.image_encoder\.size"):
        load_config(TINY_CONFIG, ["model.image_encoder.size=64"])
