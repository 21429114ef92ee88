"""Decode camera frames into a caller-owned RGB buffer.

Pure numpy/OpenCV on plain message fields (no rclpy types), so the node and the
rosbag replay tools decode identically. ROS 2 ``cv_bridge`` has no wheel, and it
would allocate a new array per frame anyway; here every raw encoding is converted
straight into the preallocated destination with ``np.copyto`` / ``cv2.cvtColor(dst=)``.
Every failure raises :class:`MalformedFrame` with a short, stable ``cause`` string that
the node uses as a counter key and for once-per-cause logging.

Everything is checked before anything is allocated or decoded: a raw frame's encoding,
size (within ``max_pixels``), step and payload length; a compressed frame's size from its
PNG/JPEG header (:mod:`flash_rt_ros.image_headers`). OpenCV's own errors (assertion
texts that name its C++ sources) never leave this module: they become ``MalformedFrame``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np

from flash_rt_ros.image_headers import compressed_size
from flash_rt_ros.malformed import MalformedFrame  # noqa: F401 - re-exported for callers
from flash_rt_ros.params import DEFAULTS

MAX_PIXELS = DEFAULTS["max_image_pixels"]


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


def _opencv_error(step: str) -> MalformedFrame:
    """What the log says when OpenCV raises: which step refused the frame. OpenCV's own text
    (a C++ assertion with source paths) says nothing useful about the input."""
    return MalformedFrame("undecodable", f"OpenCV could not {step} this frame")


def check_size(width: int, height: int, max_pixels: int) -> tuple[int, int, int]:
    """The RGB slot shape of a ``width`` x ``height`` frame, if it is within ``max_pixels``."""
    if height <= 0 or width <= 0:
        raise MalformedFrame("bad_size", f"{width}x{height}")
    if width * height > max_pixels:
        raise MalformedFrame("too_large", f"{width}x{height} = {width * height} pixels, more "
                                          f"than max_image_pixels {max_pixels}")
    return (height, width, 3)


@dataclass(frozen=True)
class RawFrame:
    """A validated ``sensor_msgs/Image`` payload: a view of the message bytes and the
    conversion that turns it into RGB (None: a plain copy)."""

    src: np.ndarray
    conversion: Optional[str]
    shape: tuple[int, int, int]  # RGB shape

    def into(self, dst: np.ndarray) -> None:
        """Convert into ``dst`` (the caller checked ``dst.shape == self.shape``)."""
        if self.conversion is None:
            np.copyto(dst, self.src)
            return
        try:
            cv2().cvtColor(self.src, getattr(cv2(), self.conversion), dst=dst)
        except cv2().error:
            raise _opencv_error(f"convert ({self.conversion})") from None


def raw_frame(encoding: str, height: int, width: int, step: int, data,
              max_pixels: int = MAX_PIXELS) -> RawFrame:
    """Validate a raw payload completely (nothing allocated, nothing converted yet)."""
    spec = _RAW.get(encoding.lower())
    if spec is None:
        raise MalformedFrame("unknown_encoding", encoding)
    channels, conversion = spec
    shape = check_size(width, height, max_pixels)
    if channels == 2 and width % 2:  # 4:2:2 packs two pixels per (Y, Y, U, V) group
        raise MalformedFrame("bad_size", f"{encoding} needs an even width, got {width}")
    row_bytes = width * channels
    if step < row_bytes:
        raise MalformedFrame("bad_step", f"step {step} < {row_bytes}")
    buf = np.frombuffer(data, dtype=np.uint8)
    # The last row only needs row_bytes, but ROS publishers always send step*height.
    if buf.size < step * height:
        raise MalformedFrame("truncated", f"{buf.size} bytes < step*height {step * height}")
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    src = rows if channels == 1 else rows.reshape(height, width, channels)
    return RawFrame(src, conversion, shape)


def require_shape(shape: tuple, dst: np.ndarray) -> None:
    if shape != dst.shape:
        raise MalformedFrame("size_mismatch", f"got {shape[1]}x{shape[0]}, "
                                              f"slot {dst.shape[1]}x{dst.shape[0]}")


def decode_raw(encoding: str, height: int, width: int, step: int, data, dst: np.ndarray,
               max_pixels: int = MAX_PIXELS) -> None:
    """Decode a ``sensor_msgs/Image`` payload into ``dst`` (uint8 HxWx3 RGB, preallocated)."""
    frame = raw_frame(encoding, height, width, step, data, max_pixels)
    require_shape(frame.shape, dst)
    frame.into(dst)


def compressed_format(fmt: str) -> str:
    """Map a ``CompressedImage.format`` string ("jpeg", "rgb8; jpeg compressed bgr8", ...)."""
    f = fmt.lower()
    for name in COMPRESSED_FORMATS:
        if name in f or (name == "jpeg" and "jpg" in f):
            return name
    raise MalformedFrame("unknown_format", fmt)


def check_compressed(fmt: str, data, max_pixels: int = MAX_PIXELS):
    """A ``CompressedImage``'s (kind, payload as uint8 array, RGB slot shape), after its
    format string is known and its header says it is within ``max_pixels``. ``kind`` is
    ``jpeg`` or ``png`` from the payload's magic bytes."""
    compressed_format(fmt)
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise MalformedFrame("truncated", "empty payload")
    kind, width, height = compressed_size(buf)
    return kind, buf, check_size(width, height, max_pixels)


def decode_bgr(kind: str, buf: np.ndarray, shape: tuple) -> np.ndarray:
    """Decode a checked JPEG/PNG payload to an OpenCV BGR array (OpenCV allocates it),
    refusing a result whose size is not the header's ``shape``.

    Returned as BGR so the caller's single ``cvtColor(..., dst=slot)`` both converts and
    lands the pixels in the preallocated slot.
    """
    try:
        img = cv2().imdecode(buf, cv2().IMREAD_COLOR)
    except cv2().error:
        raise _opencv_error(f"decode ({kind})") from None
    if img is None or img.size == 0:
        raise MalformedFrame("undecodable", f"{kind}, {buf.size} bytes")
    if img.shape != shape:  # the decoder disagrees with the header it was checked by
        raise MalformedFrame("undecodable", f"{kind} header says {shape[1]}x{shape[0]}, decoded "
                                            f"{img.shape[1]}x{img.shape[0]}")
    return img


def bgr_into(src_bgr: np.ndarray, dst: np.ndarray) -> None:
    """Convert a decoded BGR image into the RGB slot, refusing size changes."""
    require_shape(src_bgr.shape, dst)
    try:
        cv2().cvtColor(src_bgr, cv2().COLOR_BGR2RGB, dst=dst)
    except cv2().error:
        raise _opencv_error("convert (BGR to RGB)") from None
