"""Decode camera frames into a caller-owned RGB buffer.

Pure numpy/OpenCV on plain message fields (no rclpy types), so the node and the
rosbag replay tools decode identically. ROS 2 ``cv_bridge`` has no wheel, and it
would allocate a new array per frame anyway; here every raw encoding is converted
straight into the preallocated destination with ``np.copyto`` / ``cv2.cvtColor(dst=)``.
Every failure raises :class:`MalformedFrame` with a short, stable ``cause`` string that
the node uses as a counter key and for once-per-cause logging.
"""
from __future__ import annotations

import functools

import numpy as np


class MalformedFrame(ValueError):
    """A frame that cannot be decoded; ``cause`` is a stable counter key."""

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause


@functools.cache
def cv2():
    """OpenCV, imported on first use: rgb8 frames (the common case, and the rosbag tools on a
    GPU box without OpenCV) need only numpy."""
    try:
        import cv2 as module
    except ImportError as exc:  # pragma: no cover - opencv is a declared dependency
        raise ImportError("this image encoding needs OpenCV: pip install "
                          "opencv-python-headless") from exc
    return module


# encoding -> (channels of the source, OpenCV conversion to RGB (a cv2 attribute name) or
# None for a plain copy)
_RAW = {
    "rgb8": (3, None),
    "bgr8": (3, "COLOR_BGR2RGB"),
    "rgba8": (4, "COLOR_RGBA2RGB"),
    "bgra8": (4, "COLOR_BGRA2RGB"),
    "mono8": (1, "COLOR_GRAY2RGB"),
    "8uc1": (1, "COLOR_GRAY2RGB"),
    "8uc3": (3, None),  # untyped 3-channel: taken as RGB, as cv_bridge would pass it through
    # ROS "yuv422" is UYVY byte order; "yuv422_yuy2" / "yuyv" is YUYV.
    "yuv422": (2, "COLOR_YUV2RGB_UYVY"),
    "uyvy": (2, "COLOR_YUV2RGB_UYVY"),
    "yuv422_yuy2": (2, "COLOR_YUV2RGB_YUY2"),
    "yuyv": (2, "COLOR_YUV2RGB_YUY2"),
}

RAW_ENCODINGS = tuple(sorted(_RAW))
COMPRESSED_FORMATS = ("jpeg", "png")


def frame_shape(encoding: str, height: int, width: int) -> tuple[int, int, int]:
    """RGB shape a raw frame decodes to (validates the encoding and the size)."""
    if encoding.lower() not in _RAW:
        raise MalformedFrame("unknown_encoding", encoding)
    if height <= 0 or width <= 0:
        raise MalformedFrame("bad_size", f"{width}x{height}")
    return (height, width, 3)


def decode_raw(encoding: str, height: int, width: int, step: int, data, dst: np.ndarray) -> None:
    """Decode a ``sensor_msgs/Image`` payload into ``dst`` (uint8 HxWx3 RGB, preallocated)."""
    enc = encoding.lower()
    spec = _RAW.get(enc)
    if spec is None:
        raise MalformedFrame("unknown_encoding", encoding)
    channels, conversion = spec
    if dst.shape != (height, width, 3):
        raise MalformedFrame("size_mismatch", f"got {width}x{height}, slot {dst.shape[1]}x{dst.shape[0]}")
    row_bytes = width * channels
    if step < row_bytes:
        raise MalformedFrame("bad_step", f"step {step} < {row_bytes}")
    buf = np.frombuffer(data, dtype=np.uint8)
    # The last row only needs row_bytes, but ROS publishers always send step*height.
    if buf.size < step * height:
        raise MalformedFrame("truncated", f"{buf.size} bytes < step*height {step * height}")
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    if channels == 1:
        src = rows
    else:
        src = rows.reshape(height, width, channels)
    if conversion is None:
        np.copyto(dst, src)
    else:
        cv2().cvtColor(src, getattr(cv2(), conversion), dst=dst)


def compressed_format(fmt: str) -> str:
    """Map a ``CompressedImage.format`` string ("jpeg", "rgb8; jpeg compressed bgr8", ...)."""
    f = fmt.lower()
    for name in COMPRESSED_FORMATS:
        if name in f or (name == "jpeg" and "jpg" in f):
            return name
    raise MalformedFrame("unknown_format", fmt)


def decode_compressed(fmt: str, data) -> np.ndarray:
    """Decode a JPEG/PNG payload to an OpenCV BGR array (OpenCV allocates it).

    Returned as BGR so the caller's single ``cvtColor(..., dst=slot)`` both converts and
    lands the pixels in the preallocated slot.
    """
    compressed_format(fmt)
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise MalformedFrame("truncated", "empty payload")
    img = cv2().imdecode(buf, cv2().IMREAD_COLOR)
    if img is None or img.size == 0:
        raise MalformedFrame("undecodable", f"{fmt}, {buf.size} bytes")
    return img


def bgr_into(src_bgr: np.ndarray, dst: np.ndarray) -> None:
    """Convert a decoded BGR image into the RGB slot, refusing size changes."""
    if src_bgr.shape != dst.shape:
        raise MalformedFrame("size_mismatch", f"got {src_bgr.shape[1]}x{src_bgr.shape[0]}, "
                             f"slot {dst.shape[1]}x{dst.shape[0]}")
    cv2().cvtColor(src_bgr, cv2().COLOR_BGR2RGB, dst=dst)
