"""Checkpoint I/O: generator round trip, key-layout aliases, clear errors, no pickle."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from flash_rt.configs import load_config
from flash_rt.core.checkpoint import (
    CheckpointError, build_empty_reference, detect_preset, expected_layout,
    load_reference_weights,
)
from flash_rt.core.safetensors_stream import SafetensorsReader, TensorEntry, write_streaming
from flash_rt.tools.make_checkpoint import init_std_and_mean, make_checkpoint

EMBED = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
Q0 = "paligemma_with_expert.gemma_expert.model.layers.0.self_attn.q_proj.weight"


def _load(path, cfg):
    return load_reference_weights(build_empty_reference(cfg), SafetensorsReader(path))


@pytest.mark.parametrize("model", ["pi05", "pi0"])
def test_generator_round_trip_every_tensor(tmp_path, model):
    """Write with the generator, load through our reader, compare against safetensors' own."""
    out = make_checkpoint(tmp_path, model, "tiny", seed=3)
    cfg = load_config(model, "tiny")
    ref = _load(out / "model.safetensors", cfg)
    state = ref.state_dict()
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert all(k.startswith("model.") for k in keys)  # LeRobot layout
        assert {k[len("model."):] for k in keys} == set(expected_layout(cfg))
        for k in keys:
            assert torch.equal(f.get_tensor(k), state[k[len("model."):]]), k
    stats = json.loads((out / "norm_stats.json").read_text())["norm_stats"]
    assert set(stats) == {"state", "actions"} and set(stats["state"]) >= {"mean", "std", "q01", "q99"}
    assert (out / "tokenizer.model").is_file()


def test_generated_adarms_and_norms_nonzero(tmp_path):
    out = make_checkpoint(tmp_path, "pi05", "tiny")
    r = SafetensorsReader(out / "model.safetensors")
    for k in r.keys():
        if ".dense." in k or k.endswith("norm.weight") or "layernorm" in k:
            t = r.get(k)
            assert torch.count_nonzero(t) == t.numel() and t.std() > 0, k


def test_init_rule_keeps_layers_and_gates_significant():
    std_in, _ = init_std_and_mean("x.layers.0.mlp.up_proj.weight", (128, 64))
    std_out, _ = init_std_and_mean("x.layers.0.mlp.down_proj.weight", (64, 128))
    std_gate, _ = init_std_and_mean("x.layers.0.input_layernorm.dense.weight", (96, 32))
    assert std_in == pytest.approx(64 ** -0.5) and std_out == pytest.approx(128 ** -0.5)
    assert std_gate == pytest.approx(2 * 32 ** -0.5)


def _rewrite(src, dst, transform):
    """Re-save a checkpoint after applying ``transform`` to its {key: tensor} dict."""
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    tensors = transform(tensors)
    save_file(tensors, str(dst), metadata=meta)


def test_openpi_layout_without_prefix_and_tied_lm_head(tmp_path):
    out = make_checkpoint(tmp_path / "a", "pi05", "tiny")
    cfg = load_config("pi05", "tiny")
    src = out / "model.safetensors"

    def openpi(t):
        t = {k[len("model."):]: v for k, v in t.items()}
        t[LM_HEAD] = t.pop(EMBED)  # published files carry only the tied lm_head
        t["paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.zeros(3, 3)  # unused
        return t

    _rewrite(src, tmp_path / "b.safetensors", openpi)
    a = _load(src, cfg).state_dict()
    b = _load(tmp_path / "b.safetensors", cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_checkpoint_loads_as_fp32(tmp_path):
    out = make_checkpoint(tmp_path, "pi05", "tiny", dtype=torch.bfloat16)
    model = _load(out / "model.safetensors", load_config("pi05", "tiny"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("model." + Q0).dtype == torch.bfloat16
        assert torch.equal(f.get_tensor("model." + Q0).float(), model.state_dict()[Q0])


@pytest.mark.parametrize("problem,expected", [
    ("missing", "missing keys.*" + Q0.replace(".", r"\.")),
    ("unexpected", r"unexpected keys.*model\.extra\.weight"),
    ("shape", r"q_proj\.weight: checkpoint shape \(5, 32\), model expects \(64, 32\)"),
])
def test_layout_errors_name_the_key(tmp_path, problem, expected):
    out = make_checkpoint(tmp_path / "a", "pi05", "tiny")
    cfg = load_config("pi05", "tiny")

    def corrupt(t):
        if problem == "missing":
            del t["model." + Q0]
        elif problem == "unexpected":
            t["model.extra.weight"] = torch.ones(2)
        else:
            t["model." + Q0] = torch.ones(5, 32)
        return t

    _rewrite(out / "model.safetensors", tmp_path / "bad.safetensors", corrupt)
    with pytest.raises(CheckpointError, match=expected):
        _load(tmp_path / "bad.safetensors", cfg)


def test_truncated_file_is_a_clear_error(tmp_path):
    out = make_checkpoint(tmp_path / "a", "pi05", "tiny")
    data = (out / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ValueError, match="truncated"):
        SafetensorsReader(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ValueError, match="header length"):
        SafetensorsReader(tmp_path / "junk.safetensors")


def test_pickle_files_are_never_read(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "model.safetensors")  # a pickle in disguise
    with pytest.raises(ValueError):
        SafetensorsReader(tmp_path / "model.safetensors")


def test_preset_detected_from_shapes_without_metadata(tmp_path):
    out = make_checkpoint(tmp_path / "a", "pi0", "tiny")
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(tmp_path / "nometa.safetensors"))  # without the generator's metadata
    reader = SafetensorsReader(tmp_path / "nometa.safetensors")
    assert reader.metadata == {}
    assert detect_preset(reader, "pi0") == "tiny"
    with pytest.raises(CheckpointError, match="pi0"):
        detect_preset(SafetensorsReader(out / "model.safetensors"), "pi05")


STREAM_DTYPES = {
    "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_streaming_dtypes_match_the_safetensors_library(tmp_path):
    """Per-entry dtypes under their spec names, bit-exact both ways with safetensors itself."""
    g = torch.Generator().manual_seed(1)
    src = torch.randn(3, 5, generator=g) * 100
    tensors = {name: (src > 0 if dt == torch.bool else src.clamp(-400, 400).to(dt))
               for name, dt in STREAM_DTYPES.items()}
    entries = [TensorEntry(k, tuple(v.shape), lambda v=v: v, v.dtype) for k, v in tensors.items()]
    entries.append(TensorEntry("default", (2, 2), lambda: torch.full((2, 2), 1.5)))
    hasher = hashlib.sha256()
    write_streaming(tmp_path / "d.safetensors", entries, dtype=torch.bfloat16, hasher=hasher)
    assert hasher.hexdigest() == _sha256(tmp_path / "d.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["d.safetensors"]  # no temporary left
    raw = (tmp_path / "d.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert all(header[name]["dtype"] == name for name in STREAM_DTYPES)  # the spec's names
    ours = SafetensorsReader(tmp_path / "d.safetensors")
    assert ours.dtype("default") == torch.bfloat16  # entries without a dtype: the writer's
    with safe_open(str(tmp_path / "d.safetensors"), framework="pt") as f:
        for name, want in tensors.items():
            theirs = f.get_tensor(name)
            assert theirs.dtype == want.dtype == ours.dtype(name), name
            assert torch.equal(theirs.view(torch.uint8), want.view(torch.uint8)), name
            assert torch.equal(ours.get(name).view(torch.uint8), want.view(torch.uint8)), name
    save_file(tensors, str(tmp_path / "lib.safetensors"))  # and files the library wrote
    lib = SafetensorsReader(tmp_path / "lib.safetensors")
    hasher = hashlib.sha256()
    read = dict(lib.iter_file(hasher=hasher))
    assert hasher.hexdigest() == _sha256(tmp_path / "lib.safetensors")
    for name, want in tensors.items():
        assert read[name].dtype == want.dtype
        assert torch.equal(read[name].view(torch.uint8), want.view(torch.uint8)), name


def test_stream_writer_rejects_bad_entries_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="complex"):
        write_streaming(tmp_path / "x.safetensors",
                        [TensorEntry("c", (1,), lambda: torch.ones(1), torch.complex64)])
    with pytest.raises(ValueError, match="repeated or reserved"):
        write_streaming(tmp_path / "x.safetensors",
                        [TensorEntry("__metadata__", (1,), lambda: torch.ones(1))])
    with pytest.raises(ValueError, match="declared"):
        write_streaming(tmp_path / "x.safetensors",
                        [TensorEntry("a", (2,), lambda: torch.ones(2)),
                         TensorEntry("b", (3,), lambda: torch.ones(4))])
    assert list(tmp_path.iterdir()) == []  # the partial file of the failed write is gone


def test_iter_file_rejects_trailing_bytes(tmp_path):
    save_file({"a": torch.ones(3)}, str(tmp_path / "t.safetensors"))
    with open(tmp_path / "t.safetensors", "ab") as fh:
        fh.write(b"\0" * 8)
    with pytest.raises(ValueError, match="trailing"):
        list(SafetensorsReader(tmp_path / "t.safetensors").iter_file())
    save_file({"a": torch.ones(3), "b": torch.zeros(2)}, str(tmp_path / "u.safetensors"))
    it = SafetensorsReader(tmp_path / "u.safetensors").iter_file(hasher=hashlib.sha256())
    assert next(it)[0] == "a"
    it.close()  # stopping early waits for the helper thread and closes the file
