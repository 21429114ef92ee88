"""Pre/post-processing against hand calculations and independent plain-numpy formulas."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from flash_rt.configs import load_config
from flash_rt.processing import (NormStats, Normalizer, Tokenizer, discretize_state,
                                 images_to_tensor, normalize, pad_to, pad_tokens, pi0_prompt,
                                 pi05_prompt, prepare_views, resize_with_pad, to_model_range,
                                 train_tiny_tokenizer, unnormalize)

TINY = load_config("pi05", "tiny")
TINY_PI0 = load_config("pi0", "tiny")


# ---------------------------------------------------------------- images

def ref_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Plain bilinear, half-pixel centres, source clamped at 0 and at the last pixel.

    Source coordinates follow the float32 semantics: scale = float32(in) / float32(out),
    src = fma(scale, dst + 0.5, -0.5) rounded once to float32 (torch's CPU kernel is
    compiled with FMA contraction; emulated exactly here as the float64 product of two
    float32 values is exact). Without the FMA, far-right samples move by ~1e-3 grey levels.
    The blend is float64.
    """
    h, w = img.shape[:2]
    f32 = np.float32

    def taps(n_in, n_out):
        scale = f32(n_in) / f32(n_out)
        src = ((np.arange(n_out) + 0.5) * np.float64(scale) - 0.5).astype(f32)
        src = np.maximum(src, f32(0))
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0.astype(f32)).astype(np.float64)

    y0, y1, fy = taps(h, out_h)
    x0, x1, fx = taps(w, out_w)
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - fx)[None, :, None] + f[y0][:, x1] * fx[None, :, None]
    bot = f[y1][:, x0] * (1 - fx)[None, :, None] + f[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


def rgb(gray: list[list[int]]) -> np.ndarray:
    """Same values in all three channels, offset per channel so a channel mix-up shows."""
    g = np.asarray(gray, dtype=np.uint8)
    return np.stack([g, g + 1, g + 2], axis=-1).astype(np.uint8)


def test_resize_pad_only_2x4_to_4():
    # ratio = max(4/4, 2/4) = 1 -> stays 2x4, one zero row above and one below.
    img = rgb([[10, 20, 30, 40], [50, 60, 70, 80]])
    out = resize_with_pad(img, 4)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert np.all(out[0] == 0) and np.all(out[3] == 0)
    np.testing.assert_array_equal(out[1:3], img)


def test_resize_downscale_is_block_mean_rounded_half_even():
    # 2x4 -> size 2: ratio 2 -> 1x2; scale 2 samples at 0.5/2.5 -> mean of each 2x2 block.
    img = np.zeros((2, 4, 3), np.uint8)
    img[..., 0] = [[1, 2, 2, 3], [1, 2, 2, 3]]  # blocks mean 1.5 -> 2, 2.5 -> 2 (half even)
    img[..., 1] = [[1, 2, 0, 1], [2, 2, 0, 0]]  # 1.75 -> 2, 0.25 -> 0
    img[..., 2] = [[255, 255, 0, 0], [255, 254, 0, 1]]  # 254.75 -> 255, 0.25 -> 0
    out = resize_with_pad(img, 2)  # top = (2 - 1) // 2 = 0: content row 0, pad row 1
    np.testing.assert_array_equal(out[0, :, 0], [2, 2])
    np.testing.assert_array_equal(out[0, :, 1], [2, 0])
    np.testing.assert_array_equal(out[0, :, 2], [255, 0])


def test_resize_downscale_pad_row_position():
    img = np.full((2, 4, 3), 7, np.uint8)
    out = resize_with_pad(img, 2)
    np.testing.assert_array_equal(out[0], 7)  # content row on top (top pad 0)
    np.testing.assert_array_equal(out[1], 0)  # remainder row at the bottom


def test_resize_upscale_by_hand():
    # 1x2 -> size 4: ratio 0.5 -> 2x4. Columns sample at 0(clamped), 0.25, 0.75, 1.25->1.
    img = rgb([[0, 100]])
    out = resize_with_pad(img, 4)
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[3], 0)
    for row in (1, 2):
        np.testing.assert_array_equal(out[row, :, 0], [0, 25, 75, 100])
        np.testing.assert_array_equal(out[row, :, 2], [2, 27, 77, 102])


@pytest.mark.parametrize("h,w,size", [(3, 7, 5), (7, 3, 5), (5, 9, 6), (13, 4, 8), (11, 17, 16),
                                      (480, 640, 224), (720, 1280, 224), (1, 9, 4),
                                      (30, 20, 64)])
def test_resize_matches_reference(h, w, size):
    rng = np.random.default_rng(h * 1000 + w)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = resize_with_pad(img, size)
    ratio = max(w / size, h / size)
    nh, nw = max(1, int(h / ratio)), max(1, int(w / ratio))
    top, left = (size - nh) // 2, (size - nw) // 2
    pad = np.ones((size, size), bool)
    pad[top:top + nh, left:left + nw] = False
    assert np.all(out[pad] == 0)
    got = out[top:top + nh, left:left + nw].astype(np.int64)
    if (nh, nw) == (h, w):
        np.testing.assert_array_equal(got, img)
        return
    ref = ref_bilinear(img, nh, nw)
    expect = np.clip(np.round(ref), 0, 255)  # numpy rounds half to even, like torch
    # float32 vs float64 may only disagree on exact-half ties.
    diff = got != expect
    near_tie = np.abs(ref - np.floor(ref) - 0.5) < 1e-3
    assert np.all(np.abs(got - expect) <= 1)
    assert not np.any(diff & ~near_tie), np.argwhere(diff & ~near_tie)[:5]


def test_resize_already_square_is_identity():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_with_pad(img, 16), img)


def test_resize_tall_and_wide_place_content_centred():
    tall = np.full((20, 4, 3), 200, np.uint8)   # -> 10x2 in 10x10: cols 4..5
    wide = np.full((3, 30, 3), 200, np.uint8)   # -> 1x10 in 10x10: row 4
    t, w = resize_with_pad(tall, 10), resize_with_pad(wide, 10)
    assert np.argwhere(t[..., 0]).min(0).tolist() == [0, 4]
    assert np.argwhere(t[..., 0]).max(0).tolist() == [9, 5]
    assert np.argwhere(w[..., 0]).min(0).tolist() == [4, 0]
    assert np.argwhere(w[..., 0]).max(0).tolist() == [4, 9]
    assert np.all(t[:, 4:6] == 200) and np.all(w[4] == 200)


def test_to_model_range_exact():
    x = np.array([0, 1, 127, 128, 255], np.uint8)
    y = to_model_range(x)
    assert y.dtype == torch.float32
    expect = (np.array([0, 1, 127, 128, 255], np.float32) / np.float32(255) * 2 - 1)
    np.testing.assert_array_equal(y.numpy(), expect.astype(np.float32))
    assert y[0].item() == -1.0 and y[-1].item() == 1.0
    with pytest.raises(ValueError):
        to_model_range(np.zeros(3, np.float32))


def test_images_to_tensor_layout():
    a = np.zeros((2, 3, 3), np.uint8)
    a[1, 2] = [255, 0, 255]
    t = images_to_tensor([a, a])
    assert t.shape == (2, 3, 2, 3)
    assert t[1, :, 1, 2].tolist() == [1.0, -1.0, 1.0]
    assert t[0, 0, 0, 0].item() == -1.0


def test_prepare_views_masks_and_padding():
    s, v = TINY.siglip.image_size, TINY.num_views
    img = np.full((s, s, 3), 255, np.uint8)
    views, mask = prepare_views([img, None], v, s)
    assert views.shape == (v, 3, s, s) and views.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.tolist() == [True] + [False] * (v - 1)
    assert torch.all(views[0] == 1.0)
    assert torch.all(views[1:] == -1.0)


def test_prepare_views_resizes_each_view():
    views, mask = prepare_views([None, np.full((4, 8, 3), 255, np.uint8)], 2, 8)
    assert mask.tolist() == [False, True]
    # 4x8 -> 4x8 inside 8x8: rows 2..5 white, others black.
    assert torch.all(views[1, :, 2:6] == 1.0)
    assert torch.all(views[1, :, :2] == -1.0) and torch.all(views[1, :, 6:] == -1.0)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 4), np.uint8), r"view 1.*\(4, 4\)"),
    (np.zeros((4, 4, 3), np.float32), r"view 1.*float32"),
    (np.zeros((4, 4, 4), np.uint8), r"view 1.*\(4, 4, 4\)"),
    (np.zeros((0, 4, 3), np.uint8), r"view 1.*empty"),
])
def test_prepare_views_rejects_bad_images(bad, match):
    ok = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=match):
        prepare_views([ok, bad], 3, 8)


def test_prepare_views_too_many():
    ok = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="4 images"):
        prepare_views([ok] * 4, 3, 8)


# ---------------------------------------------------------------- normalisation

STATE_N, ACTION_N = 7, 6


def stats_dict(rng: np.random.Generator) -> dict:
    def feat(n):
        q01 = rng.uniform(-2, 0, n)
        return {"mean": rng.uniform(-1, 1, n).tolist(), "std": rng.uniform(0.1, 2, n).tolist(),
                "q01": q01.tolist(), "q99": (q01 + rng.uniform(0.5, 3, n)).tolist()}
    return {"norm_stats": {"state": feat(STATE_N), "actions": feat(ACTION_N)}}


@pytest.fixture
def stats_file(tmp_path):
    raw = stats_dict(np.random.default_rng(1))
    path = tmp_path / "norm_stats.json"
    path.write_text(json.dumps(raw))
    return path, raw


def test_norm_stats_load(stats_file):
    path, raw = stats_file
    st = NormStats.load(path)
    assert len(st.state) == STATE_N and len(st.actions) == ACTION_N
    np.testing.assert_array_equal(st.state.q99, raw["norm_stats"]["state"]["q99"])


def test_norm_stats_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        NormStats.load(tmp_path / "nope.json")
    base = stats_dict(np.random.default_rng(2))
    cases = {
        "no_top": ({"state": {}}, "norm_stats"),
        "no_actions": ({"norm_stats": {"state": base["norm_stats"]["state"]}}, "actions"),
        "no_std": (None, "std"),
        "mismatch": (None, "length mismatch"),
    }
    for name, (raw, match) in cases.items():
        if name == "no_std":
            raw = json.loads(json.dumps(base))
            del raw["norm_stats"]["state"]["std"]
        if name == "mismatch":
            raw = json.loads(json.dumps(base))
            raw["norm_stats"]["actions"]["q01"].append(0.0)
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(raw))
        with pytest.raises(ValueError, match=match):
            NormStats.load(p)


def test_quantile_and_mean_std_formulas(stats_file):
    st = NormStats.load(stats_file[0]).state
    x = np.random.default_rng(3).uniform(-5, 5, STATE_N)
    q01, q99 = np.array(st.q01), np.array(st.q99)
    np.testing.assert_allclose(normalize(x, st, "quantile"),
                               (x - q01) / (q99 - q01 + 1e-6) * 2 - 1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(normalize(x, st, "mean_std"),
                               (x - st.mean) / (st.std + 1e-6), rtol=0, atol=1e-12)
    # No clipping: a value far above q99 lands far above 1.
    assert normalize(q99 + 10 * (q99 - q01), st, "quantile").min() > 20
    # Exact boundary values.
    np.testing.assert_allclose(normalize(q01, st, "quantile"), -1.0, atol=1e-12)
    np.testing.assert_allclose(normalize(q99, st, "quantile"), 1.0, atol=1e-5)


@pytest.mark.parametrize("method", ["quantile", "mean_std"])
def test_round_trip_and_pass_through(stats_file, method):
    st = NormStats.load(stats_file[0]).actions
    y = np.random.default_rng(4).uniform(-1, 1, (5, 10))  # 10 > ACTION_N dims
    back = unnormalize(y, st, method)
    np.testing.assert_array_equal(back[:, ACTION_N:], y[:, ACTION_N:])
    assert not np.allclose(back[:, :ACTION_N], y[:, :ACTION_N])
    np.testing.assert_allclose(normalize(back[:, :ACTION_N], st, method), y[:, :ACTION_N],
                               atol=1e-9)


def test_pad_to():
    out = pad_to(np.array([[1.0, 2.0]]), 4)
    np.testing.assert_array_equal(out, [[1.0, 2.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="5 dims"):
        pad_to(np.zeros(5), 4)


def test_normalizer_state_and_actions(stats_file):
    st = NormStats.load(stats_file[0])
    norm = Normalizer(st, TINY)
    assert (norm.num_state_dims, norm.num_action_dims) == (STATE_N, ACTION_N)
    raw = np.random.default_rng(5).uniform(-1, 1, STATE_N)
    s = norm.normalize_state(raw)
    assert s.dtype == np.float32 and s.shape == (TINY.action_dim,)
    assert np.all(s[STATE_N:] == 0)
    expect = (raw - st.state.q01) / (st.state.q99 - st.state.q01 + 1e-6) * 2 - 1
    np.testing.assert_allclose(s[:STATE_N], expect, rtol=1e-6)

    a = np.random.default_rng(6).uniform(-1, 1, (TINY.horizon, TINY.action_dim))
    out = norm.unnormalize_actions(a, ACTION_N)
    assert out.shape == (TINY.horizon, ACTION_N) and out.dtype == np.float32
    q01, q99 = st.actions.q01, st.actions.q99
    np.testing.assert_allclose(out, (a[:, :ACTION_N] + 1) / 2 * (q99 - q01 + 1e-6) + q01,
                               rtol=1e-6)
    extra = norm.unnormalize_actions(a, ACTION_N + 2)  # dims past the stats pass through
    np.testing.assert_allclose(extra[:, ACTION_N:], a[:, ACTION_N:ACTION_N + 2], rtol=1e-6)


def test_normalizer_mean_std_for_pi0(stats_file):
    st = NormStats.load(stats_file[0])
    raw = np.random.default_rng(7).uniform(-1, 1, STATE_N)
    s = Normalizer(st, TINY_PI0).normalize_state(raw)
    np.testing.assert_allclose(s[:STATE_N], (raw - st.state.mean) / (st.state.std + 1e-6),
                               rtol=1e-6)


def test_normalizer_errors(stats_file):
    norm = Normalizer(NormStats.load(stats_file[0]), TINY)
    bad = np.zeros(STATE_N)
    bad[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        norm.normalize_state(bad)
    bad[2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        norm.normalize_state(bad)
    with pytest.raises(ValueError, match="more than action_dim"):
        norm.normalize_state(np.zeros(TINY.action_dim + 1))
    with pytest.raises(ValueError, match="stats describe"):
        norm.normalize_state(np.zeros(STATE_N - 1))
    with pytest.raises(ValueError, match="horizon"):
        norm.unnormalize_actions(np.zeros((3, TINY.action_dim - 1)), ACTION_N)


def test_quantile_needs_quantiles(tmp_path):
    raw = stats_dict(np.random.default_rng(8))
    for feat in raw["norm_stats"].values():
        del feat["q01"], feat["q99"]
    p = tmp_path / "ms.json"
    p.write_text(json.dumps(raw))
    st = NormStats.load(p)
    Normalizer(st, TINY_PI0)  # mean/std is fine
    with pytest.raises(ValueError, match="q01"):
        Normalizer(st, TINY)


# ---------------------------------------------------------------- prompt

def test_discretize_edges_by_hand():
    # Bin width 2/256 = 1/128, so bin = floor((s + 1) * 128) inside [-1, 1).
    # -1 -> 0; 0 -> 128; 0.992 -> floor(254.976) = 254 (last edge is 1 - 1/128 = 0.9921875);
    # 1 -> 255 (it is past the last left edge); above 1 -> 255; below -1 -> -1.
    s = np.array([-1.0, 0.0, 0.992, 0.9921875, 1.0, 3.0, -1.0001, -0.5 + 1e-9])
    np.testing.assert_array_equal(discretize_state(s), [0, 128, 254, 255, 255, 255, -1, 64])
    with pytest.raises(ValueError):
        discretize_state(np.array([np.nan]))


def test_discretize_matches_floor_formula():
    s = np.random.default_rng(9).uniform(-1, 1, 1000)
    np.testing.assert_array_equal(discretize_state(s), np.floor((s + 1) * 128).astype(int))


def test_pi05_prompt_exact():
    p = pi05_prompt("  pick_up the\ncup \n", np.array([0, 128, 255, -1]))
    assert p == "Task: pick up the cup, State: 0 128 255 -1;\nAction: "


def test_pi0_prompt_exact():
    assert pi0_prompt(" open_the drawer\n") == "open the drawer"


# ---------------------------------------------------------------- tokenizer

TINY_VOCAB = 512


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    t0 = time.perf_counter()
    train_tiny_tokenizer(path, TINY_VOCAB)
    assert time.perf_counter() - t0 < 2.0
    return Tokenizer(path, max_vocab=TINY.prefix.vocab_size)


def test_tokenizer_special_ids_and_bos(tok):
    assert tok.bos_id == 2 and tok.pad_id == 0
    assert tok.vocab_size <= TINY_VOCAB <= TINY.prefix.vocab_size
    ids = tok.encode("pick up the red block")
    assert ids[0] == 2 and 2 not in ids[1:]
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_tokenizer_round_trips_prompt_with_state(tok):
    bins = discretize_state(np.linspace(-1, 1, 8))
    text = pi05_prompt("stack the green cube on the plate", bins)
    ids = tok.encode(text)
    assert tok.decode(ids) == text  # newline, spaces and every digit survive
    assert 1 not in ids  # byte fallback: no <unk>
    assert tok.decode(tok.encode("Zürich ☕")) == "Zürich ☕"


def test_tokenizer_deterministic(tmp_path):
    a = train_tiny_tokenizer(tmp_path / "a.model", TINY_VOCAB).read_bytes()
    b = train_tiny_tokenizer(tmp_path / "b.model", TINY_VOCAB).read_bytes()
    assert a == b


def test_tokenizer_vocab_guard(tok, tmp_path):
    path = train_tiny_tokenizer(tmp_path / "t.model", TINY_VOCAB)
    with pytest.raises(ValueError, match="vocab"):
        Tokenizer(path, max_vocab=TINY_VOCAB - 1)


def test_encode_padded(tok):
    ids, mask = tok.encode_padded("open the drawer", TINY.max_token_len)
    n = len(tok.encode("open the drawer"))
    assert ids.dtype == np.int64 and mask.dtype == np.bool_
    assert ids.shape == mask.shape == (TINY.max_token_len,)
    assert mask[:n].all() and not mask[n:].any() and np.all(ids[n:] == 0) and ids[0] == 2


def test_pad_tokens():
    ids, mask = pad_tokens([2, 7, 9], 5)
    assert ids.tolist() == [2, 7, 9, 0, 0] and mask.tolist() == [True, True, True, False, False]
    with pytest.raises(ValueError, match="6 tokens.*max_token_len 5"):
        pad_tokens(list(range(6)), 5)
    with pytest.raises(ValueError, match="outside the vocab"):
        pad_tokens([2, 10], 5, vocab_size=10)
    with pytest.raises(ValueError, match="negative"):
        pad_tokens([2, -1], 5)
    with pytest.raises(ValueError, match="integer"):
        pad_tokens([2.0, 3.5], 5)


def test_long_prompt_is_an_error_not_truncated(tok):
    text = pi05_prompt("pick up the red block " * 40, discretize_state(np.zeros(8)))
    with pytest.raises(ValueError, match="max_token_len"):
        tok.encode_padded(text, TINY_PI0.max_token_len)
