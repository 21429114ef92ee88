"""Pre/post-processing: images -> views, state/actions <-> normalised, prompt -> token ids."""
from flash_rt.processing.image import (check_views, images_to_tensor, prepare_views, resize_with_pad,
                                       resized_shape, to_model_range)
from flash_rt.processing.normalize import (FeatureStats, NormStats, Normalizer, normalize,
                                           pad_to, unnormalize)
from flash_rt.processing.prompt import clean_task, discretize_state, pi0_prompt, pi05_prompt
from flash_rt.processing.tokenizer import Tokenizer, pad_tokens, train_tiny_tokenizer

__all__ = [
    "FeatureStats", "NormStats", "Normalizer", "Tokenizer", "check_views", "clean_task", "discretize_state",
    "images_to_tensor", "normalize", "pad_to", "pad_tokens", "pi0_prompt", "pi05_prompt",
    "prepare_views", "resize_with_pad", "resized_shape", "to_model_range", "train_tiny_tokenizer",
    "unnormalize",
]
