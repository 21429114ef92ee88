"""JPEG decoders of the node (flash_rt_ros.jpeg): the choice, the nvImageCodec wrapper
through the library's CPU backend (the GPU backends: test/gpu/test_jpeg_gpu.py), and that
an undecodable frame never resizes a camera's ring."""
import cv2
import numpy as np
import pytest

from flash_rt_ros.assembly import RESIZE_AFTER_FRAMES, ObservationAssembler
from flash_rt_ros.encodings import MalformedFrame
from flash_rt_ros.jpeg import (NvImageCodecJpeg, OpenCvJpeg, gpu_decoder_problem,
                               make_jpeg_decoder)
from flash_rt_ros.synthetic import encode, frame

H, W = 48, 64
S = 1_000_000_000


def jpeg_bytes(k: int = 1, h: int = H, w: int = W) -> np.ndarray:
    _, data, _ = encode(frame(k, 123_456_789_000, h, w), "jpeg")
    return np.frombuffer(data, np.uint8)


def test_choice_of_decoder():
    assert make_jpeg_decoder("cpu").name == "cpu"
    problem = gpu_decoder_problem()
    assert make_jpeg_decoder("auto").name == ("cpu" if problem else "gpu")
    if problem:
        with pytest.raises(RuntimeError, match="jpeg_decoder 'gpu': " + problem[:20]):
            make_jpeg_decoder("gpu")
    with pytest.raises(ValueError, match="expected one of cpu, gpu, auto"):
        make_jpeg_decoder("nvjpeg")


def test_nvimagecodec_wrapper_decodes_as_opencv():
    """The wrapper (CodeStream, RGB interleaved output, size check, copy into the slot) on
    nvImageCodec's CPU backend, which is libjpeg-turbo as OpenCV's: the same pixels."""
    buf = jpeg_bytes()
    want = np.zeros((H, W, 3), np.uint8)
    OpenCvJpeg().decode_into(buf, want)
    got = np.zeros((H, W, 3), np.uint8)
    ptr = got.__array_interface__["data"][0]
    NvImageCodecJpeg(backends=("CPU_ONLY",)).decode_into(buf, got)
    assert got.__array_interface__["data"][0] == ptr, "decoder must write into the slot"
    np.testing.assert_array_equal(got, want)
    rgb = frame(1, 123_456_789_000, H, W)  # and it is RGB, not BGR
    assert np.abs(got.astype(int) - rgb).mean() < np.abs(got[..., ::-1].astype(int) - rgb).mean()


@pytest.mark.parametrize("decoder", [OpenCvJpeg, lambda: NvImageCodecJpeg(("CPU_ONLY",))],
                         ids=["opencv", "nvimagecodec"])
def test_undecodable_and_mis_sized_payloads_are_malformed(decoder):
    dec = decoder()
    buf = jpeg_bytes()
    with pytest.raises(MalformedFrame) as err:  # a valid header, the entropy data cut off
        dec.decode_into(buf[:200], np.zeros((H, W, 3), np.uint8))
    assert err.value.cause == "undecodable"
    with pytest.raises(MalformedFrame, match="header says"):  # a slot of another size
        dec.decode_into(buf, np.zeros((H + 2, W, 3), np.uint8))


def test_undecodable_frames_of_a_new_size_never_resize_the_ring():
    """The slot size comes from the header; a JPEG whose header announces another size but
    whose data cannot be decoded must not count toward following that size (which would
    drop the camera's good frames)."""
    asm = ObservationAssembler(1, ["j"], state_source="none")
    asm.write_compressed(0, 20 * S, "jpeg", jpeg_bytes().tobytes())
    slots = [id(s) for s in asm._cams[0].slots]
    broken = jpeg_bytes(2, H * 2, W * 2)[:300].tobytes()
    for k in range(RESIZE_AFTER_FRAMES + 1):
        with pytest.raises(MalformedFrame):
            asm.write_compressed(0, 20 * S + 1 + k, "jpeg", broken)
    assert [id(s) for s in asm._cams[0].slots] == slots
    assert asm.snapshot(20 * S + 5, S).images[0].shape == (H, W, 3)


class DeferredJpeg:
    """A decoder whose copy into the slot lands only when waited for: what the GPU decoder
    does when its callback returns before the copy (jpeg.PendingFrame)."""

    name = "gpu"

    def __init__(self):
        self.cpu = OpenCvJpeg()
        self.landed = 0

    def decode_into(self, buf, dst):
        self.cpu.decode_into(buf, dst)

    def decode_into_async(self, buf, dst):
        decoded = np.empty_like(dst)
        self.cpu.decode_into(buf, decoded)
        dst[...] = 7  # the slot's old content, as far as a reader can tell
        decoder = self

        class Landing:
            done = False

            def wait(self):
                if not self.done:
                    self.done = True
                    np.copyto(dst, decoded)
                    decoder.landed += 1
        return Landing()


def decoded(k: int) -> np.ndarray:
    out = np.zeros((H, W, 3), np.uint8)
    OpenCvJpeg().decode_into(jpeg_bytes(k), out)
    return out


def test_a_frame_still_landing_is_waited_for_before_it_is_read():
    """The callback returns before a GPU decode's copy has landed: the snapshot holds the
    slot with its pending copy, and the predict inputs (ChunkMaker.inputs, the only reader
    of held images) wait for it."""
    from flash_rt_ros.chunks import ChunkMaker
    from flash_rt_ros.params import NodeParams
    dec = DeferredJpeg()
    asm = ObservationAssembler(1, ["j"], state_source="none", jpeg=dec, jpeg_async=True)
    asm.write_compressed(0, 20 * S, "jpeg", jpeg_bytes(1).tobytes())  # a first frame of a
    assert dec.landed == 1  # size is decoded into scratch first, and waited for
    asm.write_compressed(0, 20 * S + 1, "jpeg", jpeg_bytes(3).tobytes())
    obs = asm.snapshot(20 * S + 2, S)
    assert dec.landed == 1 and (obs.images[0] == 7).all()  # not landed yet
    maker = ChunkMaker(None, NodeParams(joint_names=("j",)), 1, "cpu", "")
    inputs = maker.inputs(obs, "x")
    assert dec.landed == 2
    np.testing.assert_array_equal(inputs["images"][0], decoded(3))
    asm.release(obs)


def test_by_default_the_callback_waits_for_the_decode():
    """jpeg_async off (the default, measured faster on the H100): the camera callback's
    decode has landed when it returns, so a snapshot holds a finished frame and nothing
    pending."""
    dec = DeferredJpeg()
    asm = ObservationAssembler(1, ["j"], state_source="none", jpeg=dec)
    for k in (1, 3):
        asm.write_compressed(0, 20 * S + k, "jpeg", jpeg_bytes(k).tobytes())
    obs = asm.snapshot(20 * S + 5, S)
    assert obs.pending == []
    np.testing.assert_array_equal(obs.images[0], decoded(3))
    asm.release(obs)


def test_a_slot_is_written_only_after_its_previous_copy_landed():
    """Frames that nobody read leave copies pending in slots the ring hands out again: the
    next write into such a slot waits for the old copy first, so the old frame can never
    land over the new one."""
    dec = DeferredJpeg()
    asm = ObservationAssembler(1, ["j"], state_source="none", jpeg=dec, jpeg_async=True)
    for k in (1, 2, 3, 4):  # slots 0, 1, 0, 1 (the free one that is not the newest)
        asm.write_compressed(0, 20 * S + k, "jpeg", jpeg_bytes(k).tobytes())
    # frame 1 (scratch, waited) and frame 2 (its slot then took frame 4) have landed
    assert dec.landed == 2
    obs = asm.snapshot(20 * S + 5, S)
    obs.wait_ready()
    np.testing.assert_array_equal(obs.images[0], decoded(4))
    assert dec.landed == 3
    asm.release(obs)
    # a raw frame (written on the CPU) into the slot frame 3's copy is pending in waits too
    asm.write_raw(0, 20 * S + 6, "rgb8", H, W, W * 3, decoded(9).tobytes())
    assert dec.landed == 4
    obs = asm.snapshot(20 * S + 7, S)
    obs.wait_ready()
    np.testing.assert_array_equal(obs.images[0], decoded(9))
