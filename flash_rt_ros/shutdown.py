"""How a ROS 2 process tells a normal stop from a failure.

rclpy's signal handler shuts the context down on SIGINT/SIGTERM from another thread. A spin
loop that checked ``context.ok()`` a moment before can then fail to build its wait set (or a
publish can fail) with an ``RCLError`` about an invalid context. That error *is* the stop
arriving, not a fault: treating it as one makes a normal Ctrl-C exit non-zero now and then.
Signals that arrive more than once are handled by :class:`StopSignals`.
"""
from __future__ import annotations

import signal
import threading

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


class StopSignals:
    """SIGINT/SIGTERM handlers of a node process, installed before ``rclpy.init``.

    A robot stops a node in ways that signal it more than once: Ctrl-C in a terminal under
    ``ros2 launch`` sends SIGINT to the whole process group and launch forwards another a
    few ms later; launch escalates to SIGTERM when a node is slow to stop. Python's default
    SIGINT handler raises KeyboardInterrupt wherever the main thread is, so the second one
    lands in the clean-up (joining the inference worker, destroying the node): a traceback
    and a non-zero exit, or ``rclpy.shutdown`` skipped and an abort at exit ("terminate
    called without an active exception").

    rclpy's own handler (installed by ``rclpy.init``) shuts the context down, which ends
    the executor's spin, and then calls the handler that was in place before it: this one.
    The first signal raises KeyboardInterrupt only while the process is starting (a model
    load takes seconds to minutes and nothing else would interrupt it); while serving, the
    executor's return is the stop. Every later signal is ignored, and once rclpy is shut
    down both signals are ignored outright (:meth:`ignore`).
    """

    def __init__(self):
        self.received: int | None = None  # the first signal's number
        self._interrupt = True

    def install(self) -> "StopSignals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def serving(self) -> None:
        """From now on a signal stops the executor (rclpy) rather than interrupting."""
        self._interrupt = False

    def ignore(self) -> None:
        """After ``rclpy.shutdown`` (which puts this handler back in place): ignore both
        signals at the OS level. Interpreter finalisation restores the default action of
        a signal with a Python handler, and a second Ctrl-C during it would kill the
        process (status -2) after a clean stop."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            return
        self.received = signum
        if self._interrupt:
            raise KeyboardInterrupt


def busy_threads() -> list:
    """Threads other than the main one still running: a predict or a model load that a
    stop cannot interrupt. Exiting normally would wait for them (or crash tearing down the
    interpreter under them), so the process ends with ``os._exit`` instead."""
    return [t for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and not t.daemon]
