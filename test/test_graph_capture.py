"""How the GPU frontends capture their CUDA graph, checked without a GPU: the capture mode
that lets other threads use CUDA meanwhile, and a failed capture turned into
GraphCaptureError for that call and every later capture (torch's graph pool stays in its
recording state after one; found on the H100 with the ROS node's GPU JPEG decodes)."""
from __future__ import annotations

import contextlib
from collections import OrderedDict

import pytest
import torch

from flash_rt.core.errors import GraphCaptureError
from flash_rt.frontends.torch import _paligemma_gpu
from flash_rt.frontends.torch._paligemma_gpu import PaliGemmaGpuFrontend


def _frontend():
    """The capture path alone: an instance made without __init__, its CUDA parts stubbed."""
    fe = PaliGemmaGpuFrontend.__new__(PaliGemmaGpuFrontend)
    fe._graphs, fe._capture_failed, fe._pool, fe.stream = OrderedDict(), None, None, None
    fe.ran = []
    fe._ctx_for = lambda key: "ctx"
    fe._eager = lambda key, ctx: fe.ran.append("eager")
    fe._run = lambda key, ctx: fe.ran.append("run")
    return fe


class _FakeGraph:
    pass


def _capture(monkeypatch, fail: bool, modes: list):
    @contextlib.contextmanager
    def graph(g, pool=None, stream=None, capture_error_mode="global"):
        modes.append(capture_error_mode)
        yield
        if fail:  # what cudaStreamEndCapture reports after another thread's unsafe call
            raise RuntimeError("CUDA error: operation failed due to a previous error during "
                               "capture\nmore lines")
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)


def test_capture_is_thread_local_and_cached(monkeypatch):
    modes: list = []
    _capture(monkeypatch, fail=False, modes=modes)
    fe = _frontend()
    g = fe._graph("key")
    assert isinstance(g, _FakeGraph) and fe._graph("key") is g
    assert modes == ["thread_local"] == [_paligemma_gpu.CAPTURE_MODE]
    assert fe.ran == ["eager", "run"]


def test_a_failed_capture_is_graph_capture_error_now_and_later(monkeypatch):
    modes: list = []
    _capture(monkeypatch, fail=True, modes=modes)
    fe = _frontend()
    with pytest.raises(GraphCaptureError, match=r"capture failed \(RuntimeError: CUDA error: "
                                                r"operation failed due to a previous error "
                                                r"during capture\); no capture can succeed"):
        fe._graph("key")
    assert "key" not in fe._graphs
    _capture(monkeypatch, fail=False, modes=modes)  # even if capturing would work now
    with pytest.raises(GraphCaptureError):
        fe._graph("other key")
    assert len(modes) == 1, "a capture was attempted after the failed one"
