"""Two robots at once over real DDS, each in its own namespace, with the packaged params
file as launch_ros passes it (``--ros-args -r __ns:=/armN --params-file ...``).

Each robot's publisher (cameras of a different size per robot) and node run under the
robot's namespace; the packaged file is keyed ``/**`` and names its topics relatively, so
both apply unchanged. Every chunk of a robot must reproduce exactly from that robot's own
frames: a node reading the other robot's cameras would compute other actions.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from conftest import Listener  # noqa: E402
from fake_policy import fake_actions  # noqa: E402
from helpers import actions_of, regenerate_images  # noqa: E402

FAKE_NODE = "test/ros/run_fake_node.py"
ROBOTS = {"arm1": (32, 24), "arm2": (48, 36)}  # width, height of each robot's cameras


def test_two_robots_in_their_own_namespaces(procs, domain):
    listeners = {}
    try:
        for ns, (w, h) in ROBOTS.items():
            procs.start(f"pub_{ns}", ["-m", "flash_rt_ros.synthetic", "--cameras", "3",
                                      "--width", str(w), "--height", str(h), "--rate", "10",
                                      "--ros-args", "-r", f"__ns:=/{ns}"])
            procs.start(f"node_{ns}", [FAKE_NODE, "--ros-args", "-r", f"__ns:=/{ns}",
                                       "--params-file", "config/pi05_cpu.yaml",
                                       "-p", "rate_hz:=5.0"])
            listeners[ns] = Listener(domain, chunk_topic=f"/{ns}/flash_rt_policy/action_chunk",
                                     name=f"test_listener_{ns}")
        for ns, (w, h) in ROBOTS.items():
            lst = listeners[ns]
            lst.wait_for(lambda l: len(l.chunks) >= 3, 60, f"3 chunks from /{ns}")
            with lst.lock:
                chunks = [m for _, m in lst.chunks[:3]]
            for chunk in chunks:
                assert list(chunk.camera_topics) == [f"/{ns}/cam{i}/image_raw"
                                                     for i in range(3)]
                images = regenerate_images(chunk, ["rgb8"] * 3, h, w)
                expected = fake_actions(images, np.asarray(chunk.state), chunk.seed,
                                        chunk.horizon, chunk.action_dim)
                np.testing.assert_array_equal(actions_of(chunk), expected)
            # The ROS graph reaches the listener by discovery, asynchronously to the
            # chunks: the node's reader endpoints can be seen later than its chunks, so
            # the graph is waited for (not read once) before its exact content is checked.
            lst.wait_for(lambda l: ("flash_rt_policy", f"/{ns}")
                         in l.node.get_node_names_and_namespaces(), 15,
                         f"the node /{ns}/flash_rt_policy in the graph")
            cam0 = f"/{ns}/cam0/image_raw"
            lst.wait_for(lambda l: l.node.get_subscriptions_info_by_topic(cam0), 15,
                         f"a subscription to {cam0} in the graph")
            subs = lst.node.get_subscriptions_info_by_topic(cam0)
            assert [(i.node_name, i.node_namespace) for i in subs] == \
                [("flash_rt_policy", f"/{ns}")], subs
    finally:
        for lst in listeners.values():
            lst.close()
    for p in procs.items:
        assert "fatal" not in procs.log(p), procs.log(p)
