"""Pi0.5 prompt: the task plus the discretised normalised state (quantile-normalised)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from flash_rt.models.common.processor import PolicyProcessor
from flash_rt.processing import discretize_state, pi05_prompt


class Pi05Processor(PolicyProcessor):
    # Pi0.5 reads the state only through the prompt: caller-made token ids already hold it.
    state_required_with_token_ids = False

    def prompt_ids(self, prompt: str, norm_state: Optional[np.ndarray]) -> list[int]:
        real_dims = self.normalizer.num_state_dims  # only the robot's dims, not the padding
        bins = discretize_state(norm_state[:real_dims])
        return self._tokenizer().encode(pi05_prompt(prompt, bins))
