"""``run.global_batch_size``: the per-device batch derived from it, and clear errors when it does not divide."""

import pytest

from amif.errors import ConfigError
from amif_train.config import (
    PretrainConfig,
    PretrainRunConfig,
    RunConfig,
    count_devices,
    load_config,
    per_device_batch_size,
)

from helpers import CONFIGS, TINY_CONFIG


def test_per_device_batch_from_the_global_batch():
    assert per_device_batch_size(RunConfig(batch_size=7), 4) == 7  # no global batch: run.batch_size
    assert per_device_batch_size(RunConfig(global_batch_size=48), 1) == 48
    assert per_device_batch_size(RunConfig(global_batch_size=48), 2) == 24
    assert per_device_batch_size(RunConfig(global_batch_size=48, accumulate_grad_batches=2), 1) == 24
    assert per_device_batch_size(PretrainRunConfig(global_batch_size=256), 4, pretraining=True) == 64


def test_global_batch_errors():
    with pytest.raises(ConfigError, match="not divisible by 3 device"):
        per_device_batch_size(RunConfig(global_batch_size=256), 3)
    with pytest.raises(ConfigError, match="accumulation does not enlarge"):
        per_device_batch_size(PretrainRunConfig(global_batch_size=256, accumulate_grad_batches=2), 1,
                              pretraining=True)
    with pytest.raises(ConfigError, match="not divisible by 5 device"):  # caught when the file is loaded
        load_config(TINY_CONFIG, ["run.global_batch_size=48", "run.devices=5"])
    with pytest.raises(ConfigError, match="global_batch_size must be >= 1"):
        load_config(TINY_CONFIG, ["run.global_batch_size=0"])


def test_count_devices():
    assert count_devices(RunConfig(devices=4)) == 4
    assert count_devices(RunConfig(devices=[0, 2])) == 2
    assert count_devices(RunConfig(devices="2")) == 2
    assert count_devices(RunConfig(devices="auto", accelerator="cpu")) == 1
    with pytest.raises(ConfigError, match="run.devices"):
        count_devices(RunConfig(devices=0))


@pytest.mark.parametrize("name,devices,per_device", [
    ("pretrain_stage0", 1, 256), ("pretrain_stage0", 4, 64), ("pretrain_stage1", 1, 256),
    ("finetune_slake", 1, 48), ("finetune_pathvqa", 2, 24),
])
def test_paper_configs_keep_the_paper_batch_on_any_device_count(name, devices, per_device):

    path = CONFIGS / "paper" / f"{name}.yaml"
    cls = PretrainConfig if name.startswith("pretrain") else None
    overrides = [f"run.devices={devices}"]
    cfg = load_config(path, overrides, cls=cls) if cls else load_config(path, overrides)
    assert cfg.run.devices == devices
    assert per_device_batch_size(cfg.run, devices, pretraining=cls is not None) == per_device
    if cls is None:
        assert load_config(path).run.devices == 1  # as shipped: one GPU
