"""GR00T N1.7 processor: images, prompt/tokenizer, state and action normalisation."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from flash_rt.configs import load_config
from flash_rt.models.groot.checkpoint import open_groot_checkpoint
from flash_rt.models.groot.image import normalize_view, transform_view
from flash_rt.models.groot.modality import load_embodiment
from flash_rt.models.groot.prompt import expand_image_tokens, formalize, render_prompt
from flash_rt.processing.bpe import BpeTokenizer

TINY = load_config("groot", "tiny")


@pytest.fixture(scope="module")
def bundle(tiny_groot_ckpt):
    return open_groot_checkpoint(tiny_groot_ckpt)


@pytest.fixture(scope="module")
def spec(bundle):
    return load_embodiment(None, bundle.processor_kwargs, bundle.statistics,
                           bundle.embodiment_ids, TINY.max_num_embodiments)


def test_view_is_letterboxed_cropped_and_resized():
    img = np.full((100, 200, 3), 200, np.uint8)  # wide: black bars above and below
    out = transform_view(img, TINY.image)
    edge = TINY.image.edge
    assert out.shape == (edge, edge, 3) and out.dtype == np.uint8
    # the centre crop keeps `fraction` of the 200x200 letterbox: bars of 50 - crop margin rows
    margin = (200 - int(200 * TINY.image.fraction)) // 2
    bar = (50 - margin) * edge / int(200 * TINY.image.fraction)
    col = out[:, edge // 2, 0].astype(int)
    assert col[: int(bar) - 2].max() == 0 and col[-(int(bar) - 2):].max() == 0
    assert col[edge // 2] == 200
    # a square frame at the edge size is centre-cropped then resized back (INTER_AREA)
    sq = np.random.default_rng(0).integers(0, 256, (edge, edge, 3), dtype=np.uint8)
    c = int(edge * TINY.image.fraction)
    o = (edge - c) // 2
    want = cv2.resize(sq[o:o + c, o:o + c], (edge, edge), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(transform_view(sq, TINY.image), want)


def test_pixels_normalised_like_the_qwen_processor():
    view = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    x = normalize_view(view, TINY.image)
    expected = (torch.arange(256).float().view(16, 16) / 255 - 0.5) / 0.5
    torch.testing.assert_close(x[1], expected)


def test_prompt_is_a_user_turn_with_one_image_per_view():
    text = render_prompt("Pick up the RED block, now!", 2, TINY.tokens)
    assert text == ("<|im_start|>user\n" + "<|vision_start|><|image_pad|><|vision_end|>" * 2
                    + "pick up the red block now<|im_end|>\n")
    assert formalize("Open the drawer.") == "open the drawer"


def test_checkpoint_chat_template_is_rendered(tmp_path):
    tpl = tmp_path / "chat_template.jinja"
    tpl.write_text("{% for m in messages %}<{{ m.role }}>{% for c in m.content %}"
                   "{% if c.type == 'image' %}[img]{% else %}{{ c.text }}{% endif %}"
                   "{% endfor %}{% endfor %}")
    assert render_prompt("go", 2, TINY.tokens, tpl) == "<user>[img][img]go"


def test_tokenizer_round_trip_and_special_ids(bundle):
    tok = BpeTokenizer(bundle.tokenizer)
    for text in ["pick up the red block", "Ünïcödé  tabs\tand\nnewlines 12345", ""]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(render_prompt("move the mug", 2, TINY.tokens))
    assert ids.count(TINY.tokens.image_token_id) == 2
    assert ids.count(TINY.tokens.vision_start_token_id) == 2
    # trained merges: a frequent word is fewer tokens than bytes
    assert len(tok.encode("the")) < len(b"the")


def test_image_placeholders_expand_per_view():
    t = TINY.tokens
    ids = [1, t.image_token_id, 7, t.image_token_id]
    out = expand_image_tokens(ids, t, 2, 3)
    assert out == [1] + [t.image_token_id] * 3 + [7] + [t.image_token_id] * 3
    with pytest.raises(ValueError, match="1 image placeholders"):
        expand_image_tokens([1, t.image_token_id], t, 2, 3)


def test_state_normalisation_uses_percentiles_and_clips(bundle, spec):
    stats = bundle.statistics[spec.tag]["state"]
    lo = np.concatenate([stats[g.name]["q01"] for g in spec.state])
    hi = np.concatenate([stats[g.name]["q99"] for g in spec.state])
    x = (lo + hi) / 2 + (hi - lo) * np.linspace(-0.45, 0.45, spec.state_dims)
    np.testing.assert_allclose(spec.normalize_state(x), 2 * (x - lo) / (hi - lo) - 1)
    far = hi + 10.0
    np.testing.assert_array_equal(spec.normalize_state(far), np.ones(spec.state_dims))
    with pytest.raises(ValueError, match="flat vector"):
        spec.normalize_state(x[:-1])


def test_actions_unnormalise_to_robot_units(bundle, spec):
    stats = bundle.statistics[spec.tag]["action"]
    lo = np.concatenate([stats[g.name]["q01"] for g in spec.action])
    hi = np.concatenate([stats[g.name]["q99"] for g in spec.action])
    y = np.linspace(-1.5, 1.5, 3 * spec.action_dims).reshape(3, -1)
    got = spec.unnormalize_actions(y)
    np.testing.assert_allclose(got, (np.clip(y, -1, 1) + 1) / 2 * (hi - lo) + lo)


def test_mean_std_groups(bundle):
    kwargs = json.loads(json.dumps(bundle.processor_kwargs))
    tag = next(iter(kwargs["modality_configs"]))
    kwargs["modality_configs"][tag]["state"]["mean_std_embedding_keys"] = ["arm"]
    spec = load_embodiment(tag, kwargs, bundle.statistics, bundle.embodiment_ids,
                           TINY.max_num_embodiments)
    arm = bundle.statistics[tag]["state"]["arm"]
    x = np.array(arm["mean"]) + 5 * np.array(arm["std"])  # not clipped
    out = spec.normalize_state(np.concatenate([x, [0.0]]))
    np.testing.assert_allclose(out[:len(x)], 5.0)


def test_embodiment_selection_and_refusals(bundle):
    kw, st, ids = bundle.processor_kwargs, bundle.statistics, bundle.embodiment_ids
    with pytest.raises(ValueError, match="unknown embodiment 'gr1'"):
        load_embodiment("gr1", kw, st, ids, TINY.max_num_embodiments)
    rel = json.loads(json.dumps(kw))
    rel["use_relative_action"] = True
    tag = next(iter(rel["modality_configs"]))
    rel["modality_configs"][tag]["action"]["action_configs"][0]["rep"] = "RELATIVE"
    with pytest.raises(ValueError, match="relative actions"):
        load_embodiment(tag, rel, st, ids, TINY.max_num_embodiments)
    with pytest.raises(ValueError, match="no embodiment id"):
        load_embodiment(tag, kw, st, {tag: TINY.max_num_embodiments}, TINY.max_num_embodiments)
