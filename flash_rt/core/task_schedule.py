"""Static schedules for persistent kernels: phases of tasks, per-block task lists, counters.

Model-agnostic half of the megakernel design (csrc/megakernel/scheduler.cuh is its device
half). A schedule is a chain of *phases*; every task of a phase waits until all tasks of
its predecessor phase have signalled (one counter per phase), and tasks are dealt to the
blocks round-robin with a cursor that continues from phase to phase, so a small phase
lands on blocks that were idle in the one before. Each block runs its list in order.
GEMM tasks carry weight *pages* (byte ranges of a packed weight buffer) that a producer
warp streams ahead of the consumers in exactly the blocks' task order.

The checks here are what CPU CI can prove about a schedule before it runs on a GPU:
no deadlock under in-order execution per block (:func:`simulate`), and no data race
between tasks of one phase on the buffers they declare (:func:`find_races`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

NO_COUNTER = -1
TASK_FIELDS = ("op", "layer", "tile", "k0", "klen", "wait_ctr", "wait_target", "signal_ctr")


@dataclass(frozen=True)
class Task:
    op: int
    layer: int
    tile: int = 0
    k0: int = 0
    klen: int = 0
    pages: tuple[tuple[int, int], ...] = ()  # (byte offset, bytes) of its weight pages


@dataclass
class Phase:
    name: str
    tasks: list[Task]
    counter: int = NO_COUNTER  # set by Schedule.add
    waits_on: int = NO_COUNTER  # counter of the previous phase
    wait_target: int = 0


@dataclass
class Schedule:
    """Phases in dependency order, dealt onto ``blocks`` persistent blocks."""

    blocks: int
    phases: list[Phase] = field(default_factory=list)
    _cursor: int = 0
    _lists: list[list[tuple[int, Task]]] = field(default_factory=list)  # (phase index, task)

    def __post_init__(self) -> None:
        if self.blocks < 1:
            raise ValueError(f"a schedule needs >= 1 block, got {self.blocks}")
        self._lists = [[] for _ in range(self.blocks)]

    def add(self, name: str, tasks: Sequence[Task]) -> Phase:
        if not tasks:
            raise ValueError(f"phase {name!r} has no tasks")
        prev = self.phases[-1] if self.phases else None
        ph = Phase(name, list(tasks), counter=len(self.phases),
                   waits_on=prev.counter if prev else NO_COUNTER,
                   wait_target=len(prev.tasks) if prev else 0)
        idx = len(self.phases)
        self.phases.append(ph)
        for i, t in enumerate(ph.tasks):
            self._lists[(self._cursor + i) % self.blocks].append((idx, t))
        self._cursor = (self._cursor + len(ph.tasks)) % self.blocks
        return ph

    @property
    def counters(self) -> int:
        return len(self.phases)

    def block_tasks(self, b: int) -> list[tuple[int, Task]]:
        return self._lists[b]

    def row_phases(self) -> np.ndarray:
        """Phase index of each row of ``tables()["tasks"]`` (for per-phase profiles)."""
        return np.asarray([idx for lst in self._lists for idx, _ in lst], dtype=np.int64)

    def tables(self) -> dict[str, np.ndarray]:
        """The arrays the kernel reads (see csrc/megakernel/task_table.h)."""
        rows, starts, pages, page_starts = [], [0], [], [0]
        for lst in self._lists:
            for idx, t in lst:
                ph = self.phases[idx]
                rows.append((t.op, t.layer, t.tile, t.k0, t.klen, ph.waits_on, ph.wait_target,
                             ph.counter))
                pages.extend(t.pages)
            starts.append(len(rows))
            page_starts.append(len(pages))
        return {
            "tasks": np.asarray(rows, dtype=np.int32).reshape(-1, len(TASK_FIELDS)),
            "task_start": np.asarray(starts, dtype=np.int32),
            "pages": np.asarray(pages, dtype=np.int64).reshape(-1, 2),
            "page_start": np.asarray(page_starts, dtype=np.int32),
        }


def simulate(sched: Schedule, run: Callable[[Task], None] | None = None,
             rng: random.Random | None = None) -> list[Task]:
    """Run every block's list in order with counter semantics; return the execution order.

    At each step one block whose next task's wait is satisfied runs that task to completion
    (the first such block, or a random one with ``rng``: a different interleaving per
    seed). Raises RuntimeError naming the stuck blocks if no block can progress.
    """
    counters = [0] * sched.counters
    pos = [0] * sched.blocks
    order: list[Task] = []
    remaining = sum(len(sched.block_tasks(b)) for b in range(sched.blocks))
    while remaining:
        ready = []
        for b in range(sched.blocks):
            lst = sched.block_tasks(b)
            if pos[b] < len(lst):
                ph = sched.phases[lst[pos[b]][0]]
                if ph.waits_on == NO_COUNTER or counters[ph.waits_on] >= ph.wait_target:
                    ready.append(b)
        if not ready:
            stuck = {b: sched.phases[sched.block_tasks(b)[pos[b]][0]].name
                     for b in range(sched.blocks) if pos[b] < len(sched.block_tasks(b))}
            raise RuntimeError(f"schedule deadlocks: blocks waiting at {stuck}")
        b = rng.choice(ready) if rng else ready[0]
        idx, t = sched.block_tasks(b)[pos[b]]
        if run is not None:
            run(t)
        order.append(t)
        counters[sched.phases[idx].counter] += 1
        pos[b] += 1
        remaining -= 1
    return order


# Access modes of a task on a buffer cell: read, write, read-modify-write (only this task
# touches the cell in its phase), accumulate (commutative adds: any number per phase).
READ, WRITE, MODIFY, ACCUMULATE = "r", "w", "m", "a"


def find_races(sched: Schedule,
               accesses: Callable[[Task], Iterable[tuple[str, Iterable, str]]]) -> list[str]:
    """Conflicting accesses between tasks of one phase (the only unordered pairs: phases
    are totally ordered by their counters). ``accesses(task)`` yields (buffer, cells,
    mode). Returns human-readable conflicts (empty: race-free)."""
    problems: list[str] = []
    for ph in sched.phases:
        # cell -> {mode class: first two distinct tasks}; writes and modifies share a class
        seen: dict[tuple[str, object], dict[str, list[Task]]] = {}
        for t in ph.tasks:
            for buf, cells, mode in accesses(t):
                cls = WRITE if mode in (WRITE, MODIFY) else mode
                clash = {READ: (WRITE, ACCUMULATE), WRITE: (READ, WRITE, ACCUMULATE),
                         ACCUMULATE: (READ, WRITE)}[cls]
                for cell in cells:
                    by = seen.setdefault((buf, cell), {})
                    for other in clash:
                        hit = next((o for o in by.get(other, ()) if o is not t), None)
                        if hit is not None:
                            problems.append(f"phase {ph.name}: {buf}{cell} {other} by {hit} "
                                            f"and {mode} by {t}")
                            if len(problems) > 20:
                                return problems
                    lst = by.setdefault(cls, [])
                    if len(lst) < 2 and all(o is not t for o in lst):
                        lst.append(t)
    return problems
