import dataclasses
from pathlib import Path

import pytest
import yaml

from flash_rt.configs import MODELS, available_presets, load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "flash_rt" / "configs"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("preset", ["full", "tiny"])
def test_config_is_read_from_yaml(model, preset):
    raw = yaml.safe_load((CONFIG_DIR / f"{model}.yaml").read_text())
    body = {**raw["common"], **raw["presets"][preset]}
    cfg = load_config(model, preset)
    assert dataclasses.asdict(cfg.siglip) == {**body["siglip"], "layer_norm_eps": 1e-6}
    assert cfg.prefix.width == body["prefix"]["width"]
    assert cfg.expert.mlp_dim == body["expert"]["mlp_dim"]
    assert cfg.horizon == body["horizon"] and cfg.max_token_len == body["max_token_len"]


def test_full_pi05_matches_spec_numbers():
    c = load_config("pi05", "full")
    assert (c.siglip.width, c.siglip.depth, c.siglip.num_heads, c.siglip.head_dim,
            c.siglip.mlp_dim, c.siglip.num_patches) == (1152, 27, 16, 72, 4304, 256)
    assert (c.prefix.width, c.prefix.depth, c.prefix.num_heads, c.prefix.num_kv_heads,
            c.prefix.head_dim, c.prefix.mlp_dim, c.prefix.vocab_size) == (
        2048, 18, 8, 1, 256, 16384, 257152)
    assert (c.expert.width, c.expert.mlp_dim, c.expert.q_dim, c.expert.kv_dim) == (
        1024, 4096, 2048, 256)
    assert (c.horizon, c.num_steps, c.action_dim, c.max_token_len) == (50, 10, 32, 200)
    assert c.adarms and not c.state_token and c.normalization == "quantile"
    assert c.max_prefix_len == 3 * 256 + 200


def test_full_pi0_family_switches():
    c = load_config("pi0", "full")
    assert c.state_token and not c.adarms and c.normalization == "mean_std"
    assert c.max_token_len == 48 and c.suffix_len == c.horizon + 1


def test_tiny_preset_keeps_code_paths():
    c = load_config("pi05", "tiny")
    assert c.num_views == 3 and c.prefix.num_heads > c.prefix.num_kv_heads  # views, GQA
    assert c.siglip.image_size == 224 and c.adarms


def test_overrides_and_validation():
    c = load_config("pi05", "tiny", horizon=7, num_steps=3, num_views=1)
    assert (c.horizon, c.num_steps, c.num_views) == (7, 3, 1)
    with pytest.raises(TypeError, match="unknown config fields"):
        load_config("pi05", "tiny", horizons=3)
    with pytest.raises(ValueError, match="horizon"):
        load_config("pi05", "tiny", horizon=0)
    with pytest.raises(ValueError, match="num_views"):
        load_config("pi05", "tiny", num_views=4)
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("pi05", "huge")
    with pytest.raises(ValueError, match="unknown model"):
        load_config("pi9")
    assert set(available_presets("pi05")) == {"full", "tiny", "small"}
    assert set(available_presets("pi0")) == {"full", "tiny", "small"}
