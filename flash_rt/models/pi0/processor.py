"""Pi0 prompt: BOS + task + a separately tokenised newline; the state goes to state_proj."""
from __future__ import annotations

from typing import Optional

import numpy as np

from flash_rt.models.common.processor import PolicyProcessor
from flash_rt.processing.prompt import PI0_PROMPT_SUFFIX, pi0_prompt


class Pi0Processor(PolicyProcessor):
    state_required_with_token_ids = True

    def prompt_ids(self, prompt: str, norm_state: Optional[np.ndarray]) -> list[int]:
        tok = self._tokenizer()
        return tok.encode(pi0_prompt(prompt)) + tok.encode(PI0_PROMPT_SUFFIX, add_bos=False)
