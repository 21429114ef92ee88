"""Read rosbag2 recordings (MCAP or sqlite3; a bag directory or a bare .mcap/.db3 file).

Every failure is a :class:`BagError` that names the file and where reading stopped: the
topic, the message's index in the bag and its log time, or the byte offset when the
container itself is damaged (a truncated MCAP, a corrupt sqlite3 database), instead of
a traceback from deep inside the storage library.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from flash_rt_ros.bag.types import ACTION_CHUNK, typestore
from flash_rt_ros.chunks import ChunkRecord, from_message


class BagError(RuntimeError):
    """A bag that cannot be read; the message says which file and where."""


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int  # when the recorder received it (the bag's clock)
    index: int  # position in the bag's log-time order, from 0
    raw: bytes  # CDR as recorded

    def decode(self):
        return typestore().deserialize_cdr(self.raw, self.msgtype)


class BagReader:
    """One rosbag2 recording, opened on construction (use as a context manager)."""

    def __init__(self, path):
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag (a rosbag2 directory or a .mcap/.db3 file)")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises several types, all mean "unreadable"
            raise BagError(self._explain("cannot open the bag", exc)) from exc
        self.topics = {c.topic: c.msgtype for c in self._reader.connections}
        meta = self._reader.storage.metadata
        self.custom_data = dict(getattr(meta, "custom", None) or {})

    def _storage_files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if p.suffix in (".mcap", ".db3"))
        return [self.path]

    def _files(self) -> str:
        """The storage file(s) behind the bag, for error messages."""
        return ", ".join(str(p) for p in self._storage_files()) or str(self.path)

    def _explain(self, what: str, exc: BaseException) -> str:
        """'<file>: <what>: <error>', plus where a damaged MCAP file breaks."""
        from flash_rt_ros.bag.mcap_scan import damage

        text = f"{what}: {type(exc).__name__}: {exc}"
        for f in self._storage_files():
            if f.suffix == ".mcap":
                where = damage(f)
                if where:
                    return f"{f}: truncated or damaged MCAP, {where} ({text})"
        return f"{self._files()}: {text}"

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def require(self, topic: str, msgtypes: Iterable[str], role: str) -> str:
        """The type of ``topic``; BagError if the bag lacks it or it has another type."""
        msgtypes = tuple(msgtypes)
        have = self.topics.get(topic)
        if have is None:
            raise BagError(f"{self.path}: no topic {topic} ({role}); the bag has "
                           f"{', '.join(f'{t} [{m}]' for t, m in sorted(self.topics.items()))}")
        if have not in msgtypes:
            raise BagError(f"{self.path}: topic {topic} ({role}) is {have}, expected "
                           f"{' or '.join(msgtypes)}")
        return have

    def messages(self, topics: Optional[Iterable[str]] = None) -> Iterator[BagMessage]:
        """The messages of ``topics`` (all if None) in log-time order, raw."""
        wanted = set(self.topics if topics is None else topics)
        conns = [c for c in self._reader.connections if c.topic in wanted]
        index, last = 0, "before the first message"
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, log_time, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise BagError(self._explain(f"unreadable {last}", exc)) from exc
            yield BagMessage(conn.topic, conn.msgtype, int(log_time), index, bytes(raw))
            last = f"after message #{index} (topic {conn.topic}, log time {log_time} ns)"
            index += 1

    def decode(self, m: BagMessage):
        """The deserialised message; BagError naming the file, topic and index if corrupt."""
        try:
            return m.decode()
        except Exception as exc:
            raise BagError(f"{self._files()}: message #{m.index} on topic {m.topic} "
                           f"(log time {m.log_time_ns} ns, {len(m.raw)} bytes) cannot be "
                           f"decoded as {m.msgtype}: {type(exc).__name__}: {exc}") from exc

    def decoded(self, topics: Optional[Iterable[str]] = None) -> Iterator[tuple[BagMessage, object]]:
        """Like :meth:`messages`, each with its deserialised message."""
        for m in self.messages(topics):
            yield m, self.decode(m)

    def chunk_topic(self) -> str:
        """The bag's one ActionChunk topic."""
        topics = sorted(t for t, m in self.topics.items() if m == ACTION_CHUNK)
        if len(topics) != 1:
            raise BagError(f"{self.path}: expected one {ACTION_CHUNK} topic, found "
                           f"{topics or 'none'}")
        return topics[0]

    def chunks(self) -> list[ChunkRecord]:
        """Every ActionChunk of the bag's ActionChunk topic, in log-time order."""
        return [from_message(msg) for _, msg in self.decoded([self.chunk_topic()])]
