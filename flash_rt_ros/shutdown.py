"""How a ROS 2 process tells a normal stop from a failure.

rclpy's signal handler shuts the context down on SIGINT/SIGTERM from another thread. A spin
loop that checked ``context.ok()`` a moment before can then fail to build its wait set (or a
publish can fail) with an ``RCLError`` about an invalid context. That error *is* the stop
arriving, not a fault: treating it as one makes a normal Ctrl-C exit non-zero now and then.
"""
from __future__ import annotations

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from rclpy.utilities import get_default_context

STOP_SIGNALS = (KeyboardInterrupt, ExternalShutdownException)


def is_normal_stop(exc: BaseException, context: Context | None = None) -> bool:
    """True when ``exc`` is how a spin or publish loop ends after a stop signal.

    Any error raised once the context has been shut down counts: by then nothing the process
    does can reach ROS any more, so the error says only that the stop came mid-call.
    """
    if isinstance(exc, STOP_SIGNALS):
        return True
    ctx = context if context is not None else get_default_context()
    return isinstance(exc, Exception) and not ctx.ok()
