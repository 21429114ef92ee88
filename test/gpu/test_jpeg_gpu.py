"""The node's GPU JPEG decoder (flash_rt_ros.jpeg, nvImageCodec) on a real GPU: skipped
without CUDA; with CUDA but without nvImageCodec it fails, so a GPU run cannot pass by
skipping (carry the wheels: bench/device/gpu_jpeg_session.sh)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flash_rt_ros.buffers import host_buffer
from flash_rt_ros.encodings import MalformedFrame
from flash_rt_ros.jpeg import GPU_BACKENDS, NvImageCodecJpeg, OpenCvJpeg, gpu_decoder_problem
from flash_rt_ros.synthetic import encode, frame


@pytest.fixture(scope="module")
def gpu_jpeg():
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available: the GPU JPEG decoder needs an NVIDIA GPU (run on the device)")
    problem = gpu_decoder_problem()
    if problem:
        pytest.fail(f"CUDA is available but the GPU JPEG decoder is not: {problem}")
    return NvImageCodecJpeg()


def payload(h: int, w: int, k: int = 0) -> np.ndarray:
    return np.frombuffer(encode(frame(k, 123_456_789_000, h, w), "jpeg")[1], np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("h, w", [(480, 640), (720, 1280), (37, 53)])
def test_gpu_decode_matches_opencv(gpu_jpeg, h, w):
    """Into the pinned slot, in place, deterministic, and as OpenCV's decode up to the
    decoders' IDCT / chroma-upsampling differences (a few levels, PSNR >= 40 dB)."""
    buf = payload(h, w)
    want = np.zeros((h, w, 3), np.uint8)
    OpenCvJpeg().decode_into(buf, want)
    got = host_buffer((h, w, 3), np.uint8)
    ptr = got.__array_interface__["data"][0]
    gpu_jpeg.decode_into(buf, got)
    assert got.__array_interface__["data"][0] == ptr, "decoder must write into the slot"
    again = np.zeros_like(got)
    gpu_jpeg.decode_into(buf, again)
    np.testing.assert_array_equal(got, again)
    assert psnr(got, want) >= 40.0, f"PSNR {psnr(got, want):.1f} dB against OpenCV"
    assert np.abs(got.astype(int) - want).mean() < 1.0


def test_each_gpu_backend_present_decodes(gpu_jpeg):
    """Every backend this GPU has decodes the frame; the hardware one (A100 / H100 / Thor
    engines) is reported, not required."""
    buf, want = payload(480, 640), np.zeros((480, 640, 3), np.uint8)
    OpenCvJpeg().decode_into(buf, want)
    decoded = []
    for backend in GPU_BACKENDS:
        dst = np.zeros_like(want)
        try:
            NvImageCodecJpeg(backends=(backend,)).decode_into(buf, dst)
        except (MalformedFrame, RuntimeError):
            continue  # this GPU lacks the backend: no decoder, or it returned no image
        assert psnr(dst, want) >= 40.0, backend
        decoded.append(backend)
    print("GPU JPEG backends that decoded:", decoded)
    assert decoded, "no GPU backend decoded a baseline JPEG"


def test_gpu_decoder_refuses_broken_payloads(gpu_jpeg):
    buf = payload(480, 640)
    with pytest.raises(MalformedFrame):
        gpu_jpeg.decode_into(buf[:300], np.zeros((480, 640, 3), np.uint8))
    with pytest.raises(MalformedFrame, match="header says"):
        gpu_jpeg.decode_into(buf, np.zeros((240, 320, 3), np.uint8))


def test_async_decode_lands_after_its_wait(gpu_jpeg):
    """decode_into_async returns before the copy into the pinned slot has landed (the
    camera callback does not wait): after PendingFrame.wait() the slot holds what the
    synchronous decode writes, and frames decoded back to back keep their own pixels."""
    bufs = [payload(480, 640, k) for k in range(3)]
    want = []
    for buf in bufs:
        dst = np.zeros((480, 640, 3), np.uint8)
        gpu_jpeg.decode_into(buf, dst)
        want.append(dst)
    slots = [host_buffer((480, 640, 3), np.uint8) for _ in bufs]
    pending = [gpu_jpeg.decode_into_async(buf, slot) for buf, slot in zip(bufs, slots)]
    assert all(p is not None for p in pending)
    for p, slot, w in zip(pending, slots, want):
        p.wait()
        p.wait()  # idempotent
        np.testing.assert_array_equal(slot, w)
