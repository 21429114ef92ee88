"""The GR00T N1.7 prompt: instruction + one image placeholder per view in a chat turn.

Follows Isaac-GR00T n1.7-release ``processing_gr00t_n1d7.py``: the instruction is lowercased
and stripped of punctuation (``formalize_language``), the conversation is one user turn with
the views' images then the text, rendered with the backbone's chat template
(``add_generation_prompt=False``), tokenised, and the Qwen3-VL processor expands every
``<|image_pad|>`` to the view's merged-token count. Without a ``chat_template.jinja`` in the
checkpoint the Qwen3-VL template's user turn is used (no system prompt):
``<|im_start|>user\\n`` + ``<|vision_start|><|image_pad|><|vision_end|>`` per view + text +
``<|im_end|>\\n``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from flash_rt.configs.groot import TokenConfig

TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"
PUNCTUATION = re.compile(r"[^\w\s]")


def formalize(text: str) -> str:
    return PUNCTUATION.sub("", text.lower())


def default_prompt(text: str, num_views: int, tokens: TokenConfig) -> str:
    image = tokens.vision_start_token + tokens.image_token + tokens.vision_end_token
    return f"{TURN_START}user\n{image * num_views}{text}{TURN_END}\n"


def template_prompt(template: Path, text: str, num_views: int) -> str:
    """Render a Hugging Face chat template (jinja2, as transformers configures it)."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True,
                             extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str):
        raise ValueError(f"{template}: {message}")

    content = [{"type": "image"} for _ in range(num_views)] + [{"type": "text", "text": text}]
    return env.from_string(template.read_text()).render(
        messages=[{"role": "user", "content": content}], add_generation_prompt=False,
        raise_exception=raise_exception)


def render_prompt(text: str, num_views: int, tokens: TokenConfig,
                  template: Optional[Path] = None, formalize_language: bool = True) -> str:
    text = formalize(text) if formalize_language else text
    if template is None:
        return default_prompt(text, num_views, tokens)
    return template_prompt(template, text, num_views)


def expand_image_tokens(ids: Sequence[int], tokens: TokenConfig, num_views: int,
                        tokens_per_view: int) -> list[int]:
    """One image placeholder per view -> tokens_per_view copies each (the processor's step)."""
    ids = [int(i) for i in ids]
    found = ids.count(tokens.image_token_id)
    if found != num_views:
        raise ValueError(f"the prompt holds {found} image placeholders "
                         f"({tokens.image_token}, id {tokens.image_token_id}) for {num_views} "
                         "camera views")
    out: list[int] = []
    for i in ids:
        out += [i] * tokens_per_view if i == tokens.image_token_id else [i]
    return out
