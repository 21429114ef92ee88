"""GR00T N1.7, torch, cpu: the FP32 reference (ground truth for every GR00T fast path).

Shares the CPU reference frontend's loading and device moves (``.to``); only the checkpoint
(sharded safetensors + config/processor files), the processor and the tensors handed to
the reference differ from the Pi family.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flash_rt.core.checkpoint import (ASSET_ID_IS_OPENPI, build_empty_reference,
                                      load_reference_weights)
from flash_rt.core.progress import ProgressBar
from flash_rt.frontends.torch._reference_cpu import ReferenceCpuFrontend
from flash_rt.models.groot.checkpoint import GrootBundle, open_groot_checkpoint
from flash_rt.models.groot.modality import load_embodiment
from flash_rt.models.groot.processor import GrootObservation, GrootProcessor
from flash_rt.processing.bpe import BpeTokenizer


class GrootTorchFrontendCpu(ReferenceCpuFrontend):
    model = "groot"

    def _open(self, checkpoint: str | Path, *, preset, tokenizer, num_views, horizon,
              num_steps, max_token_len, action_dims, embodiment, asset_id) -> GrootBundle:
        """``horizon`` is the number of actions returned (at most the embodiment's chunk);
        the views, state and action groups come from the embodiment's modality config."""
        if max_token_len is not None:
            raise ValueError("GR00T prompts have no fixed token budget: max_token_len does "
                             "not apply")
        if asset_id is not None:
            raise ValueError(f"{ASSET_ID_IS_OPENPI}; GR00T normalises with the checkpoint's "
                             "statistics.json per embodiment: choose it with embodiment=")
        bundle = open_groot_checkpoint(checkpoint, preset=preset, tokenizer=tokenizer,
                                       num_steps=num_steps)
        self.config = bundle.config
        self.checkpoint_id = bundle.checkpoint_id
        spec = load_embodiment(embodiment, bundle.processor_kwargs, bundle.statistics,
                               bundle.embodiment_ids, self.config.max_num_embodiments)
        if num_views is not None and num_views != spec.num_views:
            raise ValueError(f"embodiment {spec.tag!r} takes {spec.num_views} views "
                             f"{list(spec.video_keys)}, not {num_views}")
        self.embodiment = spec
        tok = BpeTokenizer(bundle.tokenizer) if bundle.tokenizer else None
        self.processor = GrootProcessor(
            self.config, spec, tok, bundle.chat_template, action_dims=action_dims,
            horizon=horizon,
            formalize_language=bool(bundle.processor_kwargs.get("formalize_language", True)))
        return bundle

    def _load(self, bundle: GrootBundle) -> None:
        plan = bundle.plan()
        bar = ProgressBar("loading weights", len(plan.source))
        self.reference = load_reference_weights(build_empty_reference(self.config),
                                                bundle.reader, progress=bar.update, plan=plan)
        bar.close()
        self.device = torch.device("cpu")

    def _infer(self, obs: GrootObservation, noise) -> np.ndarray:
        def put(t):
            return t.to(self.device, non_blocking=True)

        out = self.reference.sample_actions(put(obs.pixels), put(obs.input_ids),
                                            put(obs.token_mask), put(obs.state),
                                            put(obs.embodiment_id), put(noise))
        return out[0].float().cpu().numpy()
