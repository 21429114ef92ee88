"""The error every refused input raises, and the cut that keeps quoted input text short.

Kept apart from the decoders so the header readers (image_headers) and the decoders
(encodings) can both raise it without importing each other.
"""
from __future__ import annotations

DETAIL_CHARS = 160  # a detail may quote message fields (an encoding string, a joint name)


def brief(text, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for a log line or a diagnostics value: a prompt
    or a message field can be megabytes, and logging it whole floods every consumer."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class MalformedFrame(ValueError):
    """An input that cannot be used; ``cause`` is a stable counter key, the detail is cut
    to DETAIL_CHARS (a hostile message must not make every log line megabytes long)."""

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(f"{cause}: {brief(detail, DETAIL_CHARS)}" if detail else cause)
        self.cause = cause
