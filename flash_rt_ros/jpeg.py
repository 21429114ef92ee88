"""JPEG decoders for ``sensor_msgs/CompressedImage``: OpenCV on the CPU, or nvImageCodec on
the GPU (the GPU's hardware JPEG engines where it has them: A100, H100, Jetson Thor; its
CUDA decoder elsewhere).

Why a GPU decoder: with camera-triggered inference the triggering frame is decoded inside
the node's own-work window, and one 640x480 JPEG costs ~0.8-1.9 ms of CPU with OpenCV
(libjpeg-turbo; docs/performance.md), above the 0.5 ms the node may add. nvImageCodec
(NVIDIA's maintained decoder library, ``nvidia-nvimgcodec-cu13`` + ``nvidia-nvjpeg`` on
PyPI) moves the entropy decoding off the CPU with its hardware backend.

Both decoders write RGB into the caller's preallocated slot (shape already checked from
the JPEG header by :mod:`flash_rt_ros.encodings`) and raise
:class:`~flash_rt_ros.malformed.MalformedFrame` for a payload they cannot decode. The GPU
decoder copies the decoded frame back into the (pinned) host slot on a stream of its own,
so the node's input path is unchanged. Measured on an H100 (docs/performance.md, 2026-12-06):
0.32 ms per 640x480 frame on the hardware engine against 1.41 with OpenCV; the node's own
work with 3 JPEG cameras 0.70 / 0.80 ms p50 / p99 against 1.82 / 1.95, the callback waiting
for each decode (``decode_into``, the node's default). ``decode_into_async`` (the callback
returns before the copy lands, the inference thread waits for it) measured slower in the
node: 2.02 against 0.78-0.91 ms p50 (2026-12-06, fourteenth session;
``FLASH_RT_ROS_JPEG_ASYNC=1`` selects it for A/Bs).
"""
from __future__ import annotations

import functools
import threading
from typing import Protocol

import numpy as np

from flash_rt_ros.encodings import bgr_into, decode_bgr
from flash_rt_ros.malformed import MalformedFrame

from flash_rt_ros.params import JPEG_DECODERS

CPU, GPU, AUTO = JPEG_DECODERS
# nvImageCodec backends tried in order for `gpu`: the hardware engines, then CUDA, then
# CUDA with entropy decoding on the CPU (small images on GPUs without engines).
GPU_BACKENDS = ("HW_GPU_ONLY", "GPU_ONLY", "HYBRID_CPU_GPU")


class PendingFrame:
    """A GPU decode still landing in its host slot: :meth:`wait` returns once it has (and at
    once after that). Keeps what the device still reads (the decoded image, the compressed
    bytes) alive until then."""

    __slots__ = ("_event", "_keep")

    def __init__(self, event, keep: tuple):
        self._event, self._keep = event, keep

    def wait(self) -> None:
        event = self._event
        if event is not None:
            event.synchronize()
            self._event = self._keep = None


class JpegDecoder(Protocol):
    name: str

    def decode_into(self, buf: np.ndarray, dst: np.ndarray) -> None:
        """Decode JPEG bytes ``buf`` (uint8, 1-D) as RGB into ``dst`` (uint8 HxWx3)."""

    def decode_into_async(self, buf: np.ndarray, dst: np.ndarray) -> PendingFrame | None:
        """As decode_into, but ``dst`` may still be landing when it returns: then the
        PendingFrame to wait on before reading it (None: ``dst`` is complete)."""


class OpenCvJpeg:
    """libjpeg-turbo through OpenCV, on the calling thread."""

    name = CPU

    def decode_into(self, buf: np.ndarray, dst: np.ndarray) -> None:
        bgr_into(decode_bgr("jpeg", buf, dst.shape), dst)

    def decode_into_async(self, buf: np.ndarray, dst: np.ndarray) -> None:
        self.decode_into(buf, dst)


# Codec libraries nvImageCodec looks for at import that JPEG decoding never uses: its
# "failed to load" errors about them are dropped (any other line it prints is kept).
_UNUSED_CODECS = ("nvjpeg2k", "nvJPEG2000", "nvtiff", "nvTIFF")


@functools.cache
def nvimgcodec():
    """The nvImageCodec module, imported on first use (CPU-only nodes never import it).
    Its import prints, on the C side, an error for every optional codec library that is
    not installed; those about codecs other than JPEG are filtered out."""
    import os
    import sys
    import tempfile
    with tempfile.TemporaryFile(mode="w+b") as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            from nvidia import nvimgcodec as module
        except ImportError as exc:
            raise ImportError("jpeg_decoder 'gpu' needs nvImageCodec: pip install "
                              "nvidia-nvimgcodec-cu13 nvidia-nvjpeg") from exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines()
            kept = [ln for ln in lines if not any(c in ln for c in _UNUSED_CODECS)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
    return module


class NvImageCodecJpeg:
    """nvImageCodec on the GPU (or its CPU backend, ``backends=("CPU_ONLY",)``, which the
    CPU tests use to check this wrapper with the real library).

    A GPU decode runs on a CUDA stream of its own (never the legacy default stream, which
    would wait for the engine's graph replay) and is copied into ``dst`` on that stream:
    ``decode_into`` waits for the copy, ``decode_into_async`` returns a PendingFrame instead
    (the node's camera callback then returns without waiting for the GPU, with
    FLASH_RT_ROS_JPEG_ASYNC=1; the observation waits before its images are read, see
    ``assembly.Observation.wait_ready``). One decode
    at a time (a lock): camera callbacks on a multi-threaded executor share the decoder and
    its stream.
    """

    name = GPU

    def __init__(self, backends: tuple[str, ...] = GPU_BACKENDS, device: int = 0):
        n = nvimgcodec()
        self.on_gpu = backends != ("CPU_ONLY",)
        self._lock = threading.Lock()
        self._params = n.DecodeParams(color_spec=n.ColorSpec.SRGB,
                                      sample_format=n.SampleFormat.I_RGB)
        kinds = [n.Backend(getattr(n.BackendKind, b)) for b in backends]
        if self.on_gpu:
            import torch
            if not torch.cuda.is_available():
                raise RuntimeError("jpeg_decoder 'gpu' needs a CUDA GPU; none is visible")
            self._torch = torch
            self._device = torch.device("cuda", device)
            self._stream = torch.cuda.Stream(device=self._device)
            self._decoder = n.Decoder(device_id=device, backends=kinds)
        else:
            self._decoder = n.Decoder(device_id=n.NVIMGCODEC_DEVICE_CPU_ONLY, backends=kinds)

    def decode_into(self, buf: np.ndarray, dst: np.ndarray) -> None:
        pending = self.decode_into_async(buf, dst)
        if pending is not None:
            pending.wait()

    def decode_into_async(self, buf: np.ndarray, dst: np.ndarray) -> PendingFrame | None:
        with self._lock:
            return self._decode_into(buf, dst)

    def _decode_into(self, buf: np.ndarray, dst: np.ndarray) -> PendingFrame | None:
        n = nvimgcodec()
        buf = np.ascontiguousarray(buf)
        try:
            stream = n.CodeStream(buf)
            if self.on_gpu:
                img = self._decoder.decode(stream, params=self._params,
                                           cuda_stream=self._stream.cuda_stream)
            else:
                img = self._decoder.decode(stream, params=self._params)
        except (RuntimeError, ValueError):  # the library's refusal of a payload
            img = None
        if img is None:
            raise MalformedFrame("undecodable", f"jpeg, {buf.size} bytes (nvImageCodec)")
        if tuple(img.shape) != dst.shape:
            raise MalformedFrame("undecodable", f"jpeg header says {dst.shape[1]}x{dst.shape[0]}, "
                                                f"decoded {img.shape[1]}x{img.shape[0]}")
        if not self.on_gpu:
            np.copyto(dst, np.asarray(img))
            return None
        torch = self._torch
        with torch.cuda.stream(self._stream):
            src = torch.as_tensor(img, device=self._device)  # __cuda_array_interface__, no copy
            # into the (pinned) slot, on this stream; a pageable dst makes it synchronous
            torch.from_numpy(dst).copy_(src, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        return PendingFrame(done, (img, src, stream, buf))


def gpu_decoder_problem() -> str | None:
    """Why ``jpeg_decoder: gpu`` cannot run here (None: it can)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
        nvimgcodec()
    except ImportError as exc:
        return str(exc)
    return None


def make_jpeg_decoder(choice: str) -> JpegDecoder:
    """The decoder for the node parameter ``jpeg_decoder``: ``cpu`` (OpenCV, the default),
    ``gpu`` (nvImageCodec; an error where it cannot run) or ``auto`` (``gpu`` where it can
    run, else ``cpu``)."""
    if choice not in JPEG_DECODERS:
        raise ValueError(f"jpeg_decoder {choice!r}: expected one of {', '.join(JPEG_DECODERS)}")
    if choice == CPU:
        return OpenCvJpeg()
    problem = gpu_decoder_problem()
    if problem is None:
        return NvImageCodecJpeg()
    if choice == GPU:
        raise RuntimeError(f"jpeg_decoder 'gpu': {problem}")
    return OpenCvJpeg()
