"""Write rosbag2 recordings (MCAP by default, or sqlite3) with rosbag2 v9 metadata.

rosbags' writer produces the same ``metadata.yaml`` layout as rosbag2 on Jazzy/Kilted
(version 9: structured QoS lists, ``type_description_hash``, ``custom_data``,
``ros_distro``) and embeds every message definition in the MCAP schema records, so
``ros2 bag info`` / ``ros2 bag play`` read these bags. ``custom_data`` is always written
(what made the bag and how): rosbag2 parses a null ``custom_data`` as an error, and the
reports quote it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from flash_rt_ros.bag.types import chunk_types, typestore
from flash_rt_ros.chunks import ChunkRecord, to_message

STORAGES = ("mcap", "sqlite3")
METADATA_VERSION = 9


class BagWriter:
    """A rosbag2 directory being written; use as a context manager. On an exception the
    partial directory is removed, so a failed run never leaves a bag that looks complete."""

    def __init__(self, path, storage: str = "mcap", custom_data: dict | None = None,
                 overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise FileExistsError(f"{self.path} exists; remove it or pass --overwrite")
            shutil.rmtree(self.path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=METADATA_VERSION, storage_plugin=plugin)
        self._custom = {"flash_rt.writer": "flash_rt_ros.bag"}
        self._custom.update({k: str(v) for k, v in (custom_data or {}).items()})
        self._connections: dict = {}
        self._store = typestore()

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.abort()
            shutil.rmtree(self.path, ignore_errors=True)

    def set_custom(self, key: str, value) -> None:
        self._custom[key] = str(value)

    def close(self) -> None:
        for key, value in self._custom.items():
            self._writer.set_custom_data(key, value)
        self._writer.close()

    def _connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self._store)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic} is {conn.msgtype}, not {msgtype}")
        return conn

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, data: bytes) -> None:
        """An already CDR-serialised message (as it came off the wire or out of a bag)."""
        self._writer.write(self._connection(topic, msgtype), int(log_time_ns), data)

    def write(self, topic: str, log_time_ns: int, msg) -> None:
        """A rosbags message object."""
        data = self._store.serialize_cdr(msg, msg.__msgtype__)
        self.write_raw(topic, msg.__msgtype__, log_time_ns, bytes(data))

    def write_chunk(self, topic: str, log_time_ns: int, rec: ChunkRecord) -> None:
        self.write(topic, log_time_ns, to_message(rec, chunk_types()))

