"""Rosbag replay precision checks: record a reference, replay an engine, compare.

``python -m flash_rt_ros.bag {make-episode,record-reference,replay,compare} --help``;
see docs/precision.md. Everything here except ``replay --mode node`` works without rclpy
(bags are read and written with the pure-Python ``rosbags`` library).
"""
