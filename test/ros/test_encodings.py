"""Frame decoding: every supported encoding, in place, and every malformed cause."""
import cv2
import numpy as np
import pytest

from flash_rt_ros.encodings import (MalformedFrame, bgr_into, decode_compressed, decode_raw)
from flash_rt_ros.synthetic import encode, frame

H, W = 48, 64


@pytest.fixture
def rgb():
    return frame(1, 123_456_789_000, H, W)


def _decode(rgb, enc):
    fmt, data, step = encode(rgb, enc)
    dst = np.zeros((H, W, 3), np.uint8)
    ptr = dst.__array_interface__["data"][0]
    if enc in ("jpeg", "png"):
        bgr_into(decode_compressed(fmt, data), dst)
    else:
        decode_raw(fmt, H, W, step, data, dst)
    assert dst.__array_interface__["data"][0] == ptr, "decoder must write into the slot"
    return dst


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "png"])
def test_lossless_encodings_are_exact(rgb, enc):
    np.testing.assert_array_equal(_decode(rgb, enc), rgb)


def test_mono8_is_gray_replicated(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(_decode(rgb, "mono8"), np.repeat(gray[..., None], 3, axis=2))


@pytest.mark.parametrize("enc", ["yuv422", "yuv422_yuy2", "jpeg"])
def test_lossy_encodings_are_close(enc):
    # A smooth image: 4:2:2 chroma subsampling and JPEG are near-lossless on it.
    y, x = np.mgrid[0:H, 0:W]
    smooth = np.stack([x * 3, y * 4, 255 - x * 2], axis=-1).astype(np.uint8)
    out = _decode(smooth, enc).astype(int)
    err = np.abs(out - smooth.astype(int)).mean()
    assert err < 4, f"{enc}: mean abs error {err:.1f}"
    # a swapped byte order / channel order would be far off
    assert np.abs(out - smooth[..., ::-1].astype(int)).mean() > 10 * max(err, 1)


def test_row_padding_is_skipped(rgb):
    step = W * 3 + 16
    padded = np.zeros((H, step), np.uint8)
    padded[:, : W * 3] = rgb.reshape(H, -1)
    dst = np.zeros_like(rgb)
    decode_raw("rgb8", H, W, step, padded.tobytes(), dst)
    np.testing.assert_array_equal(dst, rgb)


@pytest.mark.parametrize("mutate,cause", [
    (lambda f: dict(f, data=f["data"][:100]), "truncated"),
    (lambda f: dict(f, encoding="32FC1"), "unknown_encoding"),
    (lambda f: dict(f, step=5), "bad_step"),
    (lambda f: dict(f, width=W - 2), "size_mismatch"),
])
def test_malformed_raw_frames_name_their_cause(rgb, mutate, cause):
    fields = dict(encoding="rgb8", height=H, width=W, step=W * 3, data=rgb.tobytes())
    f = mutate(fields)
    with pytest.raises(MalformedFrame) as err:
        decode_raw(f["encoding"], f["height"], f["width"], f["step"], f["data"],
                   np.zeros((H, W, 3), np.uint8))
    assert err.value.cause == cause


@pytest.mark.parametrize("fmt,data,cause", [
    ("jpeg", b"\xff\xd8garbage", "undecodable"),
    ("jpeg", b"", "truncated"),
    ("tiff", b"II*\x00", "unknown_format"),
])
def test_malformed_compressed_frames(fmt, data, cause):
    with pytest.raises(MalformedFrame) as err:
        decode_compressed(fmt, data)
    assert err.value.cause == cause


@pytest.mark.parametrize("enc,order", [("yuv422", "UYVY"), ("yuv422_yuy2", "YUYV")])
def test_yuv_byte_order_from_first_principles(enc, order):
    """Hand-packed 4:2:2: neutral chroma gives gray, strong Cb gives blue (R,G < B)."""
    def pack(yv, u, v):
        px = {"Y": yv, "U": u, "V": v}
        return np.array([px[c] for c in order] * (W // 2) * H, np.uint8).tobytes()

    dst = np.zeros((H, W, 3), np.uint8)
    decode_raw(enc, H, W, W * 2, pack(126, 128, 128), dst)
    assert np.ptp(dst) <= 2 and abs(int(dst[0, 0, 0]) - 128) < 20
    decode_raw(enc, H, W, W * 2, pack(100, 240, 128), dst)
    r, g, b = (int(c) for c in dst[0, 0])
    assert b > r + 60 and b > g + 60, (r, g, b)
