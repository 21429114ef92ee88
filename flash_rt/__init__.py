"""flash_rt: Vision-Language-Action policy inference engine."""

__version__ = "0.1.0"


def load_model(*args, **kwargs):
    """See :func:`flash_rt.api.load_model` (imported lazily: torch is heavy)."""
    from flash_rt.api import load_model as _load_model

    return _load_model(*args, **kwargs)


__all__ = ["load_model", "__version__"]
