"""Frame decoding: every supported encoding, in place, and every malformed cause."""
import cv2
import numpy as np
import pytest

from flash_rt_ros.encodings import (MAX_PIXELS, MalformedFrame, bgr_into, check_compressed,
                                    decode_bgr, decode_raw)
from flash_rt_ros.synthetic import encode, frame

H, W = 48, 64


def decode_compressed(fmt, data, max_pixels=MAX_PIXELS):
    """A CompressedImage payload to BGR as the node's assembler takes it: header checks,
    then the decode."""
    return decode_bgr(*check_compressed(fmt, data, max_pixels))


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


# ------------------------------------------------------------ limits and headers
import struct  # noqa: E402
import zlib  # noqa: E402

from flash_rt_ros.image_headers import compressed_size  # noqa: E402


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (gray 8-bit) with one tiny IDAT: what a
    decompression bomb looks like up to its first pixel."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is patched to claim another size."""
    ok, buf = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize("ext,params", [(".png", []), (".jpg", []),
                                        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])])
@pytest.mark.parametrize("h,w", [(48, 64), (1, 1), (479, 641), (2160, 3)])
def test_header_size_matches_what_opencv_decodes(ext, params, h, w):
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img, params)
    fmt, width, height = compressed_size(buf.tobytes())
    assert (width, height) == (w, h) and fmt == ("png" if ext == ".png" else "jpeg")
    assert cv2.imdecode(buf, cv2.IMREAD_COLOR).shape == (h, w, 3)


@pytest.fixture
def no_imdecode(monkeypatch):
    """Fail the test if OpenCV is asked to decode at all."""
    def refuse(*args, **kwargs):
        raise AssertionError("imdecode was called for a frame its header should refuse")
    monkeypatch.setattr(cv2, "imdecode", refuse)


@pytest.mark.parametrize("fmt,data", [("png", png_header_only(30000, 30000)),
                                      ("jpeg", jpeg_claiming(30000, 30000))],
                         ids=["png_bomb", "jpeg_bomb"])
def test_decompression_bomb_refused_from_its_header(no_imdecode, fmt, data):
    with pytest.raises(MalformedFrame) as err:
        decode_compressed(fmt, data)
    assert err.value.cause == "too_large" and "30000x30000" in str(err.value)


def test_pixel_limit_is_a_parameter(no_imdecode):
    fmt, data, _ = encode(frame(0, 1, H, W), "png")
    with pytest.raises(MalformedFrame, match="too_large"):
        decode_compressed(fmt, data, max_pixels=H * W - 1)
    with pytest.raises(MalformedFrame, match="too_large"):
        decode_raw("rgb8", H, W, W * 3, b"", np.zeros((H, W, 3), np.uint8), max_pixels=100)


@pytest.mark.parametrize("data,cause", [
    (b"BM" + b"\0" * 100, "undecodable"),  # a BMP: OpenCV would decode it, unchecked
    (b"\x89PNG\r\n\x1a\n\0\0", "truncated"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\0", "truncated"),
], ids=["bmp_magic", "png_no_ihdr", "jpeg_no_sof"])
def test_only_checked_formats_reach_the_decoder(no_imdecode, data, cause):
    with pytest.raises(MalformedFrame) as err:
        decode_compressed("png", data)
    assert err.value.cause == cause


@pytest.mark.parametrize("enc", ["yuv422", "yuv422_yuy2"])
def test_odd_width_yuv422_is_a_bad_size_not_an_opencv_assertion(enc):
    w = W - 1
    with pytest.raises(MalformedFrame) as err:
        decode_raw(enc, H, w, w * 2, b"\x80" * (w * 2 * H), np.zeros((H, w, 3), np.uint8))
    assert err.value.cause == "bad_size" and "even width" in str(err.value)


def test_opencv_errors_never_reach_the_log_verbatim(rgb, monkeypatch):
    def fail(*args, **kwargs):
        raise cv2.error("OpenCV(4.10.0) /io/opencv/modules/imgproc/src/color.cpp:196: "
                        "error: (-215:Assertion failed) !_src.empty() in function 'cvtColor'")
    monkeypatch.setattr(cv2, "cvtColor", fail)
    fmt, data, step = encode(rgb, "rgb8")
    with pytest.raises(MalformedFrame) as err:
        decode_raw("bgr8", H, W, step, data, np.zeros((H, W, 3), np.uint8))
    assert str(err.value) == "undecodable: OpenCV could not convert (COLOR_BGR2RGB) this frame"
