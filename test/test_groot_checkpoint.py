"""GR00T N1.7 checkpoints: the released sharded layout, written and read strictly."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from flash_rt.configs import load_config
from flash_rt.core.checkpoint import CheckpointError, expected_layout
from flash_rt.core.safetensors_stream import SafetensorsReader, TensorEntry, write_streaming
from flash_rt.core.sharded import INDEX_FILE, ShardedSafetensorsReader
from flash_rt.models.groot.checkpoint import open_groot_checkpoint, plan_groot_keys
from flash_rt.models.groot.reference import LM_HEAD_KEY

TINY = load_config("groot", "tiny")
# A sample of the released key names (Isaac-GR00T n1.7-release module tree).
RELEASED_KEYS = [
    "backbone.model.model.visual.patch_embed.proj.weight",
    "backbone.model.model.visual.pos_embed.weight",
    "backbone.model.model.visual.blocks.0.attn.qkv.weight",
    "backbone.model.model.visual.merger.linear_fc2.weight",
    "backbone.model.model.visual.deepstack_merger_list.0.norm.weight",
    "backbone.model.model.language_model.embed_tokens.weight",
    "backbone.model.model.language_model.layers.0.self_attn.q_norm.weight",
    "backbone.model.model.language_model.norm.weight",
    "action_head.model.timestep_encoder.timestep_embedder.linear_1.weight",
    "action_head.model.transformer_blocks.0.norm1.linear.weight",
    "action_head.model.transformer_blocks.0.attn1.to_out.0.weight",
    "action_head.model.transformer_blocks.1.ff.net.0.proj.weight",
    "action_head.model.proj_out_2.weight",
    "action_head.vl_self_attention.transformer_blocks.0.norm3.weight",
    "action_head.vlln.weight", "action_head.position_embedding.weight",
    "action_head.state_encoder.layer1.W", "action_head.action_encoder.W2.b",
    "action_head.action_decoder.layer2.W",
]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite_shard(ckpt, shard, drop=(), add=None):
    """Rewrite one shard without ``drop`` keys and with ``add`` {key: tensor}."""
    reader = SafetensorsReader(ckpt / shard)
    entries = [TensorEntry(k, reader.shape(k), (lambda k=k: reader.get(k)))
               for k in reader.keys() if k not in drop]
    entries += [TensorEntry(k, tuple(t.shape), (lambda t=t: t)) for k, t in (add or {}).items()]
    tensors = {e.name: e.make() for e in entries}  # read before the file is replaced
    write_streaming(ckpt / shard, [TensorEntry(k, tuple(t.shape), (lambda t=t: t))
                                   for k, t in tensors.items()], metadata=reader.metadata)


def _drop_key(ckpt, key):
    """The checkpoint without ``key``, in its shard and in the index."""
    body = _index(ckpt)
    shard = body["weight_map"].pop(key)
    _rewrite_shard(ckpt, shard, drop={key})
    _write_index(ckpt, body)


def _index(ckpt):
    return json.loads((ckpt / INDEX_FILE).read_text())


def _write_index(ckpt, body):
    (ckpt / INDEX_FILE).write_text(json.dumps(body))


def test_layout_uses_the_released_key_names():
    layout = expected_layout(TINY)
    assert set(RELEASED_KEYS) - {"backbone.model.lm_head.weight"} <= set(layout)
    assert all(k.startswith(("backbone.model.model.", "action_head.")) for k in layout)
    v = TINY.vision
    assert layout["backbone.model.model.visual.patch_embed.proj.weight"] == (
        v.width, 3, v.temporal_patch_size, v.patch_size, v.patch_size)
    assert layout["action_head.action_encoder.W1.W"] == (
        TINY.max_num_embodiments, TINY.max_action_dim, TINY.input_embedding_dim)
    # cross blocks read the backbone width, self blocks the DiT width
    assert layout["action_head.model.transformer_blocks.0.attn1.to_k.weight"][1] == \
        TINY.backbone_embedding_dim
    assert layout["action_head.model.transformer_blocks.1.attn1.to_k.weight"][1] == TINY.dit.width


def test_generated_checkpoint_is_sharded_with_config_and_processor_files(tiny_groot_ckpt):
    index = _index(tiny_groot_ckpt)
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and shards[0] == "model-00001-of-%05d.safetensors" % len(shards)
    assert LM_HEAD_KEY in index["weight_map"]
    cfg = json.loads((tiny_groot_ckpt / "config.json").read_text())
    assert cfg["model_type"] == "Gr00tN1d7" and cfg["select_layer"] == TINY.text.num_layers
    bundle = open_groot_checkpoint(tiny_groot_ckpt)
    assert bundle.config == TINY
    plan = bundle.plan()
    assert set(plan.source) == set(expected_layout(TINY))


def test_config_json_overrides_the_preset(tiny_groot_ckpt, tmp_path):
    ckpt = _copy(tiny_groot_ckpt, tmp_path / "c")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_inference_timesteps"] = 7
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert open_groot_checkpoint(ckpt).config.num_inference_timesteps == 7
    cfg["model_type"] = "Gr00tN1d6"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="Gr00tN1d6"):
        open_groot_checkpoint(ckpt)


def test_missing_key_is_named(tiny_groot_ckpt, tmp_path):
    ckpt = _copy(tiny_groot_ckpt, tmp_path / "c")
    key = "action_head.model.proj_out_2.weight"
    _drop_key(ckpt, key)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): " + key):
        open_groot_checkpoint(ckpt).plan()


def test_extra_key_is_named(tiny_groot_ckpt, tmp_path):
    ckpt = _copy(tiny_groot_ckpt, tmp_path / "c")
    key = "action_head.value_head.weight"
    body = _index(ckpt)
    shard = sorted(set(body["weight_map"].values()))[0]
    _rewrite_shard(ckpt, shard, add={key: torch.zeros(2, 2)})
    body["weight_map"][key] = shard
    _write_index(ckpt, body)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): " + key):
        open_groot_checkpoint(ckpt).plan()


def test_wrong_shape_is_named(tiny_groot_ckpt, tmp_path):
    ckpt = _copy(tiny_groot_ckpt, tmp_path / "c")
    key = "action_head.vlln.weight"
    shard = _index(ckpt)["weight_map"][key]
    _rewrite_shard(ckpt, shard, drop={key}, add={key: torch.ones(3)})
    with pytest.raises(CheckpointError, match=key + r": checkpoint shape \(3,\)"):
        open_groot_checkpoint(ckpt).plan()


def test_index_must_match_its_shards(tiny_groot_ckpt, tmp_path):
    ckpt = _copy(tiny_groot_ckpt, tmp_path / "c")
    body = _index(ckpt)
    shards = sorted(set(body["weight_map"].values()))
    key = next(k for k, s in body["weight_map"].items() if s == shards[0])
    body["weight_map"][key] = shards[1]  # listed in the wrong shard
    _write_index(ckpt, body)
    with pytest.raises(ValueError, match="does not match its shards") as err:
        ShardedSafetensorsReader(ckpt)
    assert key in str(err.value)


def test_tied_lm_head_may_be_absent(tiny_groot_ckpt, tmp_path):
    ckpt = _copy(tiny_groot_ckpt, tmp_path / "c")
    _drop_key(ckpt, LM_HEAD_KEY)
    bundle = open_groot_checkpoint(ckpt)
    assert LM_HEAD_KEY not in bundle.plan().source


def test_loaded_weights_equal_the_file(tiny_groot_ckpt):
    import flash_rt

    policy = flash_rt.load_model(tiny_groot_ckpt, model="groot", hardware="cpu")
    reader = ShardedSafetensorsReader(tiny_groot_ckpt)
    state = policy.reference.state_dict()
    for key in RELEASED_KEYS:
        if key in state:
            assert torch.equal(state[key], reader.get(key).float()), key
    assert all(p.dtype == torch.float32 for p in policy.reference.parameters())
