"""Errors a caller of the engine must tell apart from a failed call it can retry."""
from __future__ import annotations


class GraphCaptureError(RuntimeError):
    """A GPU frontend's CUDA-graph capture failed. torch's graph memory pool stays in its
    recording state after a failed capture, so no later capture in this process can
    succeed: the frontend refuses every later call with this error, and a long-running
    caller (the ROS node) should end the process so that its supervisor restarts it."""
