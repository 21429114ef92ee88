"""A realistic synthetic episode as a rosbag2 recording (tests, docs, the GPU replay).

2-3 cameras (640x480 by default) film a moving textured scene with an object circling in
it; a joint-state driver publishes smooth trajectories at its own rate; a prompt is
published once at the start. Like a real recording, each message carries its capture
time in ``header.stamp`` and is logged a few milliseconds later (transport latency with
a little jitter), the cameras run at their own phase, and every value is a pure function
of (camera, stamp), so any frame can be regenerated from its stamp.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flash_rt_ros.bag.types import COMPRESSED_IMAGE, IMAGE, JOINT_STATE, STRING, typestore
from flash_rt_ros.bag.writer import BagWriter
from flash_rt_ros.chunks import NS
from flash_rt_ros.encodings import COMPRESSED_FORMATS
from flash_rt_ros.synthetic import DEFAULT_JOINTS, encode, frame, joints

MS = 1_000_000
START_NS = 1_700_000_000 * NS  # a fixed wall-clock time, so episodes are reproducible


@dataclass
class EpisodeSpec:
    cameras: int = 3
    width: int = 640
    height: int = 480
    duration_s: float = 5.0
    camera_rate_hz: float = 30.0
    joint_rate_hz: float = 50.0
    encodings: tuple = ("rgb8",)  # per camera; the last one repeats (jpeg/png: CompressedImage)
    joint_names: tuple = tuple(DEFAULT_JOINTS)
    joint_topic: str = "/joint_states"
    prompt: str = "pick up the red block and put it in the bin"
    prompt_topic: str = "/prompt"
    seed: int = 0  # transport jitter
    start_ns: int = START_NS
    camera_topics: tuple = field(default=())  # default /cam{i}/image_raw[/compressed]

    def encoding(self, cam: int) -> str:
        return self.encodings[min(cam, len(self.encodings) - 1)]

    def topics(self) -> list[str]:
        if self.camera_topics:
            if len(self.camera_topics) != self.cameras:
                raise ValueError(f"{len(self.camera_topics)} camera topics for "
                                 f"{self.cameras} cameras")
            return list(self.camera_topics)
        return [f"/cam{i}/image_raw" + ("/compressed" if self.encoding(i) in COMPRESSED_FORMATS
                                        else "") for i in range(self.cameras)]


def scene(cam: int, stamp_ns: int, height: int, width: int) -> np.ndarray:
    """The camera's view at ``stamp_ns``: the sliding texture plus a circling object."""
    img = frame(cam, stamp_ns, height, width).copy()
    t = stamp_ns / NS
    cx = int(width * (0.5 + 0.3 * np.cos(0.8 * t + cam)))
    cy = int(height * (0.5 + 0.25 * np.sin(1.1 * t + 0.5 * cam)))
    r = max(4, min(height, width) // 10)
    yy, xx = np.ogrid[:height, :width]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (220, 30 + 60 * cam, 40)  # filled disc
    h = r // 2  # a dark 2-px square outline on it
    box = (np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= h)
    inner = (np.abs(yy - cy) <= h - 2) & (np.abs(xx - cx) <= h - 2)
    img[box & ~inner] = (20, 20, 20)
    return img


def _events(spec: EpisodeSpec):
    """(log time, stamp, kind, index) of every message, in log-time order."""
    rng = np.random.default_rng(spec.seed)
    end = spec.start_ns + int(spec.duration_s * NS)
    events = [(spec.start_ns, spec.start_ns, "prompt", 0)]
    for cam in range(spec.cameras):
        period = NS / spec.camera_rate_hz
        offset = (11 + 4 * cam) * MS  # cameras are not synchronised with each other
        k = 0
        while (stamp := spec.start_ns + offset + int(k * period)) < end:
            latency = int((4 + cam + rng.uniform(-0.5, 0.5)) * MS)
            events.append((stamp + latency, stamp, "camera", cam))
            k += 1
    period = NS / spec.joint_rate_hz
    k = 0
    while (stamp := spec.start_ns + 7 * MS + int(k * period)) < end:
        events.append((stamp + int((1 + rng.uniform(0, 0.3)) * MS), stamp, "joints", 0))
        k += 1
    return sorted(events)


def write_episode(out, spec: EpisodeSpec, storage: str = "mcap", overwrite: bool = False) -> dict:
    """Write the episode bag; returns a summary (topics, message counts)."""
    t = typestore().types
    Header, Time = t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]
    topics = spec.topics()
    custom = {"flash_rt.kind": "episode", "flash_rt.prompt": spec.prompt,
              "flash_rt.cameras": spec.cameras, "flash_rt.size": f"{spec.width}x{spec.height}",
              "flash_rt.encodings": " ".join(spec.encoding(i) for i in range(spec.cameras))}
    counts: dict[str, int] = {}

    def header(stamp: int, frame_id: str):
        return Header(stamp=Time(sec=stamp // NS, nanosec=stamp % NS), frame_id=frame_id)

    with BagWriter(out, storage=storage, custom_data=custom, overwrite=overwrite) as bag:
        for log_time, stamp, kind, i in _events(spec):
            if kind == "prompt":
                topic, msg = spec.prompt_topic, t[STRING](data=spec.prompt)
            elif kind == "camera":
                topic = topics[i]
                fmt, data, step = encode(scene(i, stamp, spec.height, spec.width),
                                         spec.encoding(i))
                payload = np.frombuffer(data, dtype=np.uint8)
                if fmt in COMPRESSED_FORMATS:
                    msg = t[COMPRESSED_IMAGE](header=header(stamp, f"cam{i}"), format=fmt,
                                              data=payload)
                else:
                    msg = t[IMAGE](header=header(stamp, f"cam{i}"), height=spec.height,
                                   width=spec.width, encoding=fmt, is_bigendian=0, step=step,
                                   data=payload)
            else:
                topic = spec.joint_topic
                n = len(spec.joint_names)
                msg = t[JOINT_STATE](header=header(stamp, "base_link"),
                                     name=list(spec.joint_names),
                                     position=joints(stamp, n),
                                     velocity=np.zeros(n), effort=np.zeros(n))
            bag.write(topic, log_time, msg)
            counts[topic] = counts.get(topic, 0) + 1
    return {"bag": str(out), "topics": counts, "camera_topics": topics,
            "joint_topic": spec.joint_topic, "prompt": spec.prompt}
