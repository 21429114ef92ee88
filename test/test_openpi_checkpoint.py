"""openpi JAX checkpoints (framework="jax"): the param-tree spec, bit-identity with the
safetensors path, the Orbax reader's streaming and the errors for bad checkpoints."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

import flash_rt
from flash_rt.configs import available_presets, load_config
from flash_rt.core.checkpoint import CheckpointError, expected_layout, open_checkpoint
from flash_rt.core.orbax_stream import INSTALL_HINT, OrbaxReader, OrbaxUnavailable, write_tree
from flash_rt.core.weight_cache import CacheKey, WeightCache
from flash_rt.frontends.jax._openpi_checkpoint import open_openpi_checkpoint
from flash_rt.frontends.jax._openpi_spec import build_openpi_spec
from flash_rt.frontends.torch._converted_weights import load_converted_weights
from flash_rt.frontends.torch import _pi0_spec, _pi05_spec
from flash_rt.tools.make_checkpoint import OPENPI, make_checkpoint

STATE = np.linspace(-0.5, 0.5, 8).astype(np.float32)
GATING = "PaliGemma/llm/layers/mlp/gating_einsum"
GPU_SPECS = {"pi05": _pi05_spec.build_spec, "pi0": _pi0_spec.build_spec}


def _pair(tmp_path_factory, model, dtype=torch.float32):
    """The same random weights as LeRobot safetensors and as an openpi checkpoint."""
    name = f"{model}_{str(dtype).split('.')[-1]}"
    lerobot = make_checkpoint(tmp_path_factory.mktemp(f"{name}_lerobot"), model, "tiny", seed=5,
                              dtype=dtype)
    openpi = make_checkpoint(tmp_path_factory.mktemp(f"{name}_openpi"), model, "tiny", seed=5,
                             dtype=dtype, fmt=OPENPI)
    return lerobot, openpi


@pytest.fixture(scope="module")
def pi05_pair(tmp_path_factory):
    return _pair(tmp_path_factory, "pi05")


@pytest.fixture(scope="module")
def pi0_pair(tmp_path_factory):
    return _pair(tmp_path_factory, "pi0")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _leaves(ckpt) -> dict:
    """Every leaf of a checkpoint's params as numpy (tiny checkpoints only)."""
    reader = OrbaxReader(ckpt / "params")
    return {p: reader.read(p) for p in reader.leaves}


def _rewrite(ckpt, leaves: dict) -> None:
    tree: dict = {}
    for path, value in leaves.items():
        *parents, name = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[name] = value
    shutil.rmtree(ckpt / "params")
    write_tree(ckpt / "params", tree)


# -- the declarative spec -----------------------------------------------------------------------

@pytest.mark.parametrize("model", ["pi05", "pi0"])
def test_spec_covers_the_layout_and_every_leaf_element_once(model):
    for preset in available_presets(model):
        cfg = load_config(model, preset)
        spec = build_openpi_spec(cfg)
        layout = expected_layout(cfg)
        assert [s.key for s in spec.slices if s.key not in layout] == []
        assert sorted(s.key for s in spec.slices) == sorted(layout)  # each key exactly once
        for s in spec.slices:
            assert s.shape == layout[s.key], s.key
            assert math.prod(spec.tree[s.leaf][len(s.index):]) == math.prod(s.shape), s.key
    # element level on tiny: distinct ids put through the inverse fill every leaf exactly,
    # and reading them back gives each canonical tensor unchanged
    cfg = load_config(model, "tiny")
    spec = build_openpi_spec(cfg)
    leaves = {p: torch.zeros(shape, dtype=torch.float64) for p, shape in spec.tree.items()}
    start, canon = 1, {}
    for s in spec.slices:
        canon[s.key] = torch.arange(start, start + math.prod(s.shape),
                                    dtype=torch.float64).reshape(s.shape)
        start += math.prod(s.shape)
        s.put(leaves[s.leaf], canon[s.key])
    ids = torch.cat([t.flatten() for t in leaves.values()]).sort().values
    assert torch.equal(ids, torch.arange(1, start, dtype=torch.float64))
    for s in spec.slices:
        assert torch.equal(s.take(leaves[s.leaf]), canon[s.key]), s.key


def test_slices_follow_openpis_equations():
    """Each canonical tensor, used the torch way (x @ W.T, conv2d), computes what openpi's
    modules compute with the leaf (their einsum equations, written out here), so the
    spec is checked against openpi and not only against its own inverse."""
    cfg = load_config("pi05", "tiny")
    slices = {s.key: s for s in build_openpi_spec(cfg).slices}
    tree = build_openpi_spec(cfg).tree
    gen = torch.Generator().manual_seed(0)

    def leaf_and_weight(key):
        s = slices[key]
        leaf = torch.randn(tree[s.leaf], generator=gen, dtype=torch.float64)
        return leaf[s.index] if s.index else leaf, s.take(leaf)

    def close(a, b):
        assert torch.allclose(a, b, atol=1e-9), (a - b).abs().max()

    lm, ex = "paligemma_with_expert.paligemma.model.language_model.layers.1", \
        "paligemma_with_expert.gemma_expert.model.layers.1"
    vis = "paligemma_with_expert.paligemma.model.vision_tower.vision_model"
    for tower, g in ((lm, cfg.prefix), (ex, cfg.expert)):
        x = torch.randn(2, 3, g.width, generator=gen, dtype=torch.float64)
        w, W = leaf_and_weight(f"{tower}.self_attn.q_proj.weight")  # gemma.py Attention
        close((x @ W.T).reshape(2, 3, g.num_heads, g.head_dim), torch.einsum("BTD,NDH->BTNH", x, w))
        for j, proj in enumerate("kv"):  # "BSD,2KDH->2BSKH", j-th of the pair
            w, W = leaf_and_weight(f"{tower}.self_attn.{proj}_proj.weight")
            close((x @ W.T).reshape(2, 3, g.num_kv_heads, g.head_dim),
                  torch.einsum("BSD,KDH->BSKH", x, w))
        enc = torch.randn(2, 3, g.num_heads, g.head_dim, generator=gen, dtype=torch.float64)
        w, W = leaf_and_weight(f"{tower}.self_attn.o_proj.weight")
        close(enc.flatten(2) @ W.T, torch.einsum("BTNH,NHD->BTD", enc, w))
        for proj in ("gate_proj", "up_proj"):  # FeedForward: jnp.dot(x, w_gating[0 | 1])
            w, W = leaf_and_weight(f"{tower}.mlp.{proj}.weight")
            close(x @ W.T, x @ w)
        h = torch.randn(2, 3, g.mlp_dim, generator=gen, dtype=torch.float64)
        w, W = leaf_and_weight(f"{tower}.mlp.down_proj.weight")  # jnp.dot(h, w_linear)
        close(h @ W.T, h @ w)
    cond = torch.randn(2, cfg.expert.width, generator=gen, dtype=torch.float64)
    w, W = leaf_and_weight(f"{ex}.input_layernorm.dense.weight")  # nn.Dense: cond @ kernel
    close(cond @ W.T, cond @ w)
    s = cfg.siglip
    x = torch.randn(2, 3, s.width, generator=gen, dtype=torch.float64)
    for proj in ("q_proj", "k_proj", "v_proj"):  # flax DenseGeneral(features=(heads, hd))
        w, W = leaf_and_weight(f"{vis}.encoder.layers.1.self_attn.{proj}.weight")
        b, B = leaf_and_weight(f"{vis}.encoder.layers.1.self_attn.{proj}.bias")
        close((x @ W.T + B).reshape(2, 3, s.num_heads, s.head_dim),
              torch.einsum("btd,dnh->btnh", x, w) + b)
    enc = torch.randn(2, 3, s.num_heads, s.head_dim, generator=gen, dtype=torch.float64)
    w, W = leaf_and_weight(f"{vis}.encoder.layers.1.self_attn.out_proj.weight")  # axis=(-2, -1)
    close(enc.flatten(2) @ W.T, torch.einsum("btnh,nhd->btd", enc, w))
    P = s.patch_size  # flax nn.Conv on NHWC, kernel (P, P, in, out), stride P, VALID
    img = torch.randn(1, 2 * P, 2 * P, 3, generator=gen, dtype=torch.float64)
    w, W = leaf_and_weight(f"{vis}.embeddings.patch_embedding.weight")
    patches = img.reshape(1, 2, P, 2, P, 3).permute(0, 1, 3, 2, 4, 5)
    close(torch.nn.functional.conv2d(img.permute(0, 3, 1, 2), W, stride=P).permute(0, 2, 3, 1),
          torch.einsum("bijpqc,pqco->bijo", patches, w))
    w, W = leaf_and_weight(f"{vis}.embeddings.position_embedding.weight")  # leaf (1, N, W)[0]
    close(W, w)


def test_full_tree_has_openpis_documented_shapes():
    # shapes stated by openpi's gemma.py / siglip.py for the real Pi0.5 (gemma_2b, gemma_300m,
    # So400m/14), as listed in shared/docs/pi05_model_spec.md
    tree = build_openpi_spec(load_config("pi05", "full")).tree
    llm, img = "PaliGemma/llm/layers", "PaliGemma/img"
    assert tree[f"{llm}/attn/q_einsum/w"] == (18, 8, 2048, 256)
    assert tree[f"{llm}/attn/kv_einsum/w"] == (18, 2, 1, 2048, 256)
    assert tree[f"{llm}/attn/attn_vec_einsum/w"] == (18, 8, 256, 2048)
    assert tree[GATING] == (18, 2, 2048, 16384)
    assert tree[f"{llm}/mlp/linear"] == (18, 16384, 2048)
    assert tree[f"{llm}/attn/q_einsum_1/w"] == (18, 8, 1024, 256)
    assert tree[f"{llm}/mlp_1/gating_einsum"] == (18, 2, 1024, 4096)
    assert tree[f"{llm}/pre_attention_norm_1/Dense_0/kernel"] == (18, 1024, 3072)
    assert "PaliGemma/llm/final_norm_1/scale" not in tree  # adaRMS: no learned scale
    assert tree["PaliGemma/llm/embedder/input_embedding"] == (257152, 2048)
    assert tree[f"{img}/embedding/kernel"] == (14, 14, 3, 1152)
    assert tree[f"{img}/pos_embedding"] == (1, 256, 1152)
    block = f"{img}/Transformer/encoderblock"
    assert tree[f"{block}/MultiHeadDotProductAttention_0/query/kernel"] == (27, 1152, 16, 72)
    assert tree[f"{block}/MlpBlock_0/Dense_0/kernel"] == (27, 1152, 4304)
    assert tree["time_mlp_in/kernel"] == (1024, 1024)
    pi0 = build_openpi_spec(load_config("pi0", "full")).tree
    assert pi0["PaliGemma/llm/layers/pre_attention_norm_1/scale"] == (18, 1024)
    assert pi0["action_time_mlp_in/kernel"] == (2048, 1024)


# -- same weights, same actions -------------------------------------------------------------

@pytest.mark.parametrize("model,views", [("pi05", 2), ("pi0", 1)])
def test_openpi_and_safetensors_give_bit_identical_actions(request, model, views,
                                                           camera_images):
    lerobot, openpi = request.getfixturevalue(f"{model}_pair")
    torch_policy = flash_rt.load_model(lerobot, model=model, hardware="cpu", num_views=views)
    jax_policy = flash_rt.load_model(openpi, model=model, framework="jax", hardware="cpu",
                                     num_views=views)
    assert type(jax_policy).__name__ == f"{model.capitalize()}JaxFrontendCpu"
    assert jax_policy.framework == "jax" and jax_policy.config == torch_policy.config
    want = torch_policy.reference.state_dict()
    got = jax_policy.reference.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    for seed in (0, 1):
        a = jax_policy.predict(camera_images[:views], STATE, prompt="open the drawer", seed=seed)
        b = torch_policy.predict(camera_images[:views], STATE, prompt="open the drawer",
                                 seed=seed)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.actions_normalized, b.actions_normalized)


def test_bf16_leaves_match_bf16_safetensors(tmp_path_factory, camera_images):
    lerobot, openpi = _pair(tmp_path_factory, "pi05", torch.bfloat16)
    assert OrbaxReader(openpi / "params").leaves["params/" + GATING].dtype.name == "bfloat16"
    a = flash_rt.load_model(openpi, framework="jax", hardware="cpu", num_views=1)
    b = flash_rt.load_model(lerobot, hardware="cpu", num_views=1)
    np.testing.assert_array_equal(a.predict(camera_images[:1], STATE, prompt="x", seed=2).actions,
                                  b.predict(camera_images[:1], STATE, prompt="x", seed=2).actions)


@pytest.mark.parametrize("model", ["pi05", "pi0"])
def test_gpu_weight_spec_buffers_identical_and_cached(request, model, tmp_path):
    """The GPU frontends' conversion (run here on the CPU) gives the same buffers from both
    formats, and an openpi checkpoint's cache entry is keyed on its own content."""
    lerobot, openpi = request.getfixturevalue(f"{model}_pair")
    cache = WeightCache(tmp_path / "cache")
    bundles = {"torch": open_checkpoint(lerobot, model),
               "jax": open_openpi_checkpoint(openpi, model)}
    spec = GPU_SPECS[model](bundles["jax"].config)
    keys = {fw: CacheKey(b.content_hash(cache.directory), "cpu", "fp8", spec.version, "test")
            for fw, b in bundles.items()}
    assert keys["torch"] != keys["jax"]
    cpu = torch.device("cpu")
    converted = {fw: load_converted_weights(b, spec, cache, keys[fw], cpu)
                 for fw, b in bundles.items()}
    assert converted["jax"].keys() == converted["torch"].keys()
    for name, t in converted["torch"].items():
        assert torch.equal(converted["jax"][name].view(torch.uint8).flatten(),
                           t.view(torch.uint8).flatten()), name
    assert cache.path("weights", keys["jax"]).is_file()
    again = open_openpi_checkpoint(openpi, model)
    assert again.content_hash(cache.directory) == keys["jax"].checkpoint_hash
    cached = load_converted_weights(again, spec, cache, keys["jax"], cpu)
    assert all(torch.equal(cached[k], converted["jax"][k]) for k in cached)


def test_content_hash_and_id_follow_the_params_content(tmp_path, pi05_pair):
    ckpt = _copy(pi05_pair[1], tmp_path / "ck")
    bundle = open_openpi_checkpoint(ckpt, "pi05")
    first, first_id = bundle.content_hash(tmp_path / "memo"), bundle.checkpoint_id
    assert bundle.content_hash() == first and len(first) == 64
    assert bundle.checkpoint_id == first_id and len(first_id) == 16
    leaves = _leaves(ckpt)
    leaves["params/action_out_proj/bias"] = leaves["params/action_out_proj/bias"] + 1
    _rewrite(ckpt, leaves)
    changed = open_openpi_checkpoint(ckpt, "pi05")
    assert changed.content_hash(tmp_path / "memo") != first
    assert changed.checkpoint_id != first_id


# -- streaming ------------------------------------------------------------------------------

def test_leaves_stream_largest_first_and_are_read_once(pi05_pair, monkeypatch):
    bundle = open_openpi_checkpoint(pi05_pair[1], "pi05")
    weights = bundle.reader
    reads, held = [], []
    original = weights.params.read
    monkeypatch.setattr(weights.params, "read", lambda p: reads.append(p) or original(p))
    for key in weights.keys():
        weights.get(key)
        held.append(len(weights._held))
    sizes = [weights.params.leaves[p].nbytes for p in reads]
    assert len(reads) == len(set(reads)) == len(weights.params.leaves)  # each leaf read once
    assert sizes == sorted(sizes, reverse=True)
    assert max(held) == 1 and held[-1] == 0  # in key order: one leaf held at a time


def test_tree_saved_from_a_training_state_loads(tmp_path, pi05_pair, camera_images):
    ckpt = _copy(pi05_pair[1], tmp_path / "ck")
    _rewrite(ckpt, {f"{p}/value": v for p, v in _leaves(ckpt).items()})  # nnx.State paths
    a = flash_rt.load_model(ckpt, framework="jax", hardware="cpu", num_views=1)
    b = flash_rt.load_model(pi05_pair[1], framework="jax", hardware="cpu", num_views=1)
    np.testing.assert_array_equal(a.predict(camera_images[:1], STATE, prompt="x", seed=0).actions,
                                  b.predict(camera_images[:1], STATE, prompt="x", seed=0).actions)


# -- assets ---------------------------------------------------------------------------------

def test_asset_id_picks_the_norm_stats(tmp_path, pi05_pair):
    ckpt = _copy(pi05_pair[1], tmp_path / "ck")
    stats = json.loads((ckpt / "assets/synthetic/norm_stats.json").read_text())
    stats["norm_stats"]["actions"]["q99"] = [v + 1.0 for v in stats["norm_stats"]["actions"]["q99"]]
    nested = ckpt / "assets/physical-intelligence/libero"  # openpi's repo-id asset ids
    nested.mkdir(parents=True)
    (nested / "norm_stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match=r"several assets .*'physical-intelligence/libero'"):
        flash_rt.load_model(ckpt, framework="jax", hardware="cpu")
    a = flash_rt.load_model(ckpt, framework="jax", hardware="cpu", asset_id="synthetic")
    b = flash_rt.load_model(ckpt, framework="jax", hardware="cpu",
                            asset_id="physical-intelligence/libero")
    sa, sb = a.processor.normalizer.action_affine(), b.processor.normalizer.action_affine()
    assert not np.allclose(sa[0], sb[0])
    with pytest.raises(FileNotFoundError, match=r"nope/norm_stats.json not found; assets with "
                                                r"norm stats: \['physical-intelligence"):
        flash_rt.load_model(ckpt, framework="jax", hardware="cpu", asset_id="nope")


def test_missing_assets_and_asset_id_on_torch(tmp_path, pi05_pair):
    ckpt = _copy(pi05_pair[1], tmp_path / "ck")
    shutil.rmtree(ckpt / "assets")
    with pytest.raises(FileNotFoundError, match="assets/<asset_id>/norm_stats.json"):
        flash_rt.load_model(ckpt, framework="jax", hardware="cpu")
    with pytest.raises(ValueError, match="asset_id picks the norm stats of an openpi checkpoint"):
        flash_rt.load_model(pi05_pair[0], hardware="cpu", asset_id="synthetic")


# -- bad checkpoints: one error naming the leaf, never a model --------------------------------

def test_missing_params_directory(tmp_path, pi05_pair):
    ckpt = _copy(pi05_pair[1], tmp_path / "ck")
    shutil.rmtree(ckpt / "params")
    with pytest.raises(FileNotFoundError, match=r"ck/params not found: an openpi checkpoint"):
        flash_rt.load_model(ckpt, framework="jax", hardware="cpu")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        flash_rt.load_model(pi05_pair[1], framework="torch", hardware="cpu")


def test_truncated_array_file_names_the_leaf(tmp_path, pi05_pair):
    ckpt = _copy(pi05_pair[1], tmp_path / "ck")
    data = max((p for p in (ckpt / "params").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=r"cannot read leaf 'params/[^']+' \(truncated or "
                                              r"corrupt array data\?\)"):
        flash_rt.load_model(ckpt, framework="jax", hardware="cpu")


def test_missing_and_misshaped_leaves_are_named(tmp_path, pi05_pair):
    ckpt = _copy(pi05_pair[1], tmp_path / "ck")
    leaves = _leaves(ckpt)
    del leaves["params/PaliGemma/llm/layers/mlp_1/linear"]
    leaves["params/action_in_proj/kernel"] = leaves["params/action_in_proj/kernel"][:, :-1]
    leaves["params/PaliGemma/llm/layers/attn/q_einsum/lora_a"] = np.zeros((2, 4), np.float32)
    _rewrite(ckpt, leaves)
    with pytest.raises(CheckpointError) as err:
        flash_rt.load_model(ckpt, framework="jax", hardware="cpu", preset="tiny")
    msg = str(err.value)
    assert "missing leaves (1): PaliGemma/llm/layers/mlp_1/linear" in msg
    assert "unexpected leaves (1): PaliGemma/llm/layers/attn/q_einsum/lora_a" in msg
    assert "action_in_proj/kernel: checkpoint shape (32, 31), model expects (32, 32)" in msg


def test_other_models_params_and_non_openpi_trees(tmp_path, pi0_pair):
    with pytest.raises(CheckpointError, match="holds openpi 'pi0' params, not 'pi05'"):
        flash_rt.load_model(pi0_pair[1], model="pi05", framework="jax", hardware="cpu")
    ckpt = _copy(pi0_pair[1], tmp_path / "ck")
    _rewrite(ckpt, {"state/step": np.zeros(1, np.float32)})
    with pytest.raises(CheckpointError, match=r"not openpi params \(expected every leaf under "
                                              r"'params'"):
        flash_rt.load_model(ckpt, model="pi0", framework="jax", hardware="cpu")
    junk = tmp_path / "junk"
    (junk / "params").mkdir(parents=True)
    (junk / "params" / "_METADATA").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable Orbax checkpoint"):
        flash_rt.load_model(junk, model="pi0", framework="jax", hardware="cpu")


def test_without_the_extra_the_error_says_how_to_install(monkeypatch, tmp_path, pi05_pair):
    import sys

    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)  # import fails like a missing pkg
    with pytest.raises(OrbaxUnavailable, match=r"jax extra .*" + INSTALL_HINT.replace(
            "[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        flash_rt.load_model(pi05_pair[1], framework="jax", hardware="cpu")


def test_make_checkpoint_cli_writes_the_openpi_layout(tmp_path):
    from flash_rt.tools.make_checkpoint import main

    assert main(["--format", "openpi", "--model", "pi0", "--asset-id", "my/robot",
                 "--out", str(tmp_path / "ck")]) == 0
    ck = tmp_path / "ck"
    assert (ck / "params" / "_METADATA").is_file() and (ck / "tokenizer.model").is_file()
    assert (ck / "assets/my/robot/norm_stats.json").is_file()
    assert not list(ck.glob(".openpi-staging-*"))  # scratch leaves removed
    assert not (ck / "model.safetensors").exists()
    bundle = open_openpi_checkpoint(ck, "pi0")
    assert bundle.config.preset == "tiny" and bundle.norm_stats.parent.name == "robot"


@pytest.mark.parametrize("argv,expected", [
    (["--model", "groot", "--format", "openpi"], "GR00T checkpoints are written in their released"),
    (["--model", "groot", "--asset-id", "x"], "GR00T's released layout has none"),
    (["--model", "pi05", "--asset-id", "x"], "the lerobot layout has none"),
    (["--model", "groot", "--no-model-prefix"], "lerobot format only"),
    (["--format", "openpi", "--no-model-prefix"], "lerobot format only"),
])
def test_make_checkpoint_refuses_options_the_layout_cannot_have(tmp_path, capsys, argv, expected):
    from flash_rt.tools.make_checkpoint import main

    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(tmp_path / "ck")])
    assert exc.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "ck").exists()


def test_groot_has_no_openpi_format_and_jax_frontends_no_embodiment(tmp_path, pi05_pair):
    with pytest.raises(ValueError, match="GR00T checkpoints are written in their released"):
        make_checkpoint(tmp_path / "ck", "groot", fmt=OPENPI)
    assert not (tmp_path / "ck").exists()
    with pytest.raises(ValueError, match="embodiment= applies to GR00T"):
        flash_rt.load_model(pi05_pair[1], framework="jax", hardware="cpu", embodiment="x")
