"""Static schedules for persistent kernels: phases of tasks, per-block task lists, counters.

Model-agnostic half of the megakernel design (csrc/megakernel/scheduler.cuh is its device
half). A schedule is a chain of *phases*; every task of a phase waits until all tasks of
its predecessor phase have signalled (one counter per phase), and tasks are dealt to the
blocks round-robin with a cursor that continues from phase to phase, so a small phase
lands on blocks that were idle in the one before. Each block runs its list in order.
GEMM tasks carry weight *pages* (byte ranges of a packed weight buffer) that a producer
warp streams ahead of the consumers in exactly the blocks' task order.

A phase may instead signal one counter per *group* of its tasks, and the next phase's
tasks each wait for one group only (finer dependencies: a consumer starts when the
producers of its own inputs are done, not the slowest task of the whole phase). The phase
after that waits for the whole of its predecessor again, so every group has to be waited
for by some task (else its tasks would be ordered before nothing).

The checks here are what CPU CI can prove about a schedule before it runs on a GPU:
no deadlock under in-order execution per block (:func:`simulate`), and no data race
between tasks that no counter orders on the buffers they declare (:func:`find_races`).
"""
from __future__ import annotations

import random
from collections import Counter
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
    counter: int = NO_COUNTER  # its first counter (set by Schedule.add)
    waits_on: int = NO_COUNTER  # counter of the previous phase (its first, if grouped)
    wait_target: int = 0
    # grouped signals: task index -> its group's counter, and tasks per counter
    signal_of: list[int] | None = None
    group_size: dict[int, int] | None = None
    # grouped waits: task index -> (counter, target) of the previous phase's group it needs
    wait_of: list[tuple[int, int]] | None = None
    group_ctr: dict | None = None  # group key -> its counter

    @property
    def counters(self) -> int:
        return len(self.group_size) if self.group_size else 1

    def signal(self, i: int) -> int:
        """The counter task ``i`` adds to when done."""
        return self.signal_of[i] if self.signal_of else self.counter

    def wait(self, i: int) -> tuple[int, int]:
        """(counter, target) task ``i`` waits for before it runs."""
        return self.wait_of[i] if self.wait_of else (self.waits_on, self.wait_target)


GroupKey = Callable[[Task], object]


@dataclass
class Schedule:
    """Phases in dependency order, dealt onto ``blocks`` persistent blocks."""

    blocks: int
    phases: list[Phase] = field(default_factory=list)
    _cursor: int = 0
    _lists: list[list[tuple[int, int]]] = field(default_factory=list)  # (phase, task index)
    _counters: int = 0

    def __post_init__(self) -> None:
        if self.blocks < 1:
            raise ValueError(f"a schedule needs >= 1 block, got {self.blocks}")
        self._lists = [[] for _ in range(self.blocks)]

    def add(self, name: str, tasks: Sequence[Task], *, groups: GroupKey | None = None,
            waits_for_group: GroupKey | None = None) -> Phase:
        """Append a phase. ``groups(task)``: this phase signals one counter per group key
        instead of one for the phase; then the next phase must give ``waits_for_group(task)``:
        the key of the one group each of its tasks needs."""
        if not tasks:
            raise ValueError(f"phase {name!r} has no tasks")
        tasks = list(tasks)
        prev = self.phases[-1] if self.phases else None
        if prev is not None and prev.group_size and waits_for_group is None:
            raise ValueError(f"phase {name!r} follows the grouped phase {prev.name!r}: "
                             "give waits_for_group")
        if waits_for_group is not None and not (prev and prev.group_size):
            raise ValueError(f"phase {name!r}: waits_for_group needs a grouped phase before it")
        if groups is not None and prev is not None and prev.group_size:
            raise ValueError(f"phase {name!r}: two grouped phases in a row are not supported")
        ph = Phase(name, tasks, counter=self._counters,
                   waits_on=prev.counter if prev else NO_COUNTER,
                   wait_target=len(prev.tasks) if prev else 0)
        if groups is not None:
            keys = [groups(t) for t in tasks]
            ctr = {k: self._counters + i for i, k in enumerate(dict.fromkeys(keys))}
            ph.signal_of = [ctr[k] for k in keys]
            ph.group_size = dict(Counter(ph.signal_of))
            ph.group_ctr = ctr
        if waits_for_group is not None:
            keys = [waits_for_group(t) for t in tasks]
            missing = set(keys) - set(prev.group_ctr)
            if missing:
                raise ValueError(f"phase {name!r} waits for groups {sorted(map(str, missing))} "
                                 f"that {prev.name!r} does not have")
            waited = [prev.group_ctr[k] for k in keys]
            ph.wait_of = [(c, prev.group_size[c]) for c in waited]
            unwaited = set(prev.group_size) - set(waited)
            if unwaited:
                raise ValueError(f"phase {name!r}: groups of {prev.name!r} that no task waits "
                                 f"for (counters {sorted(unwaited)}) would order nothing")
        self._counters += ph.counters
        idx = len(self.phases)
        self.phases.append(ph)
        for i in range(len(tasks)):
            self._lists[(self._cursor + i) % self.blocks].append((idx, i))
        self._cursor = (self._cursor + len(tasks)) % self.blocks
        return ph

    @property
    def counters(self) -> int:
        return self._counters

    def block_tasks(self, b: int) -> list[tuple[int, Task]]:
        return [(idx, self.phases[idx].tasks[i]) for idx, i in self._lists[b]]

    def row_phases(self) -> np.ndarray:
        """Phase index of each row of ``tables()["tasks"]`` (for per-phase profiles)."""
        return np.asarray([idx for lst in self._lists for idx, _ in lst], dtype=np.int64)

    def tables(self) -> dict[str, np.ndarray]:
        """The arrays the kernel reads (see csrc/megakernel/task_table.h)."""
        rows, starts, pages, page_starts = [], [0], [], [0]
        for lst in self._lists:
            for idx, i in lst:
                ph = self.phases[idx]
                t = ph.tasks[i]
                rows.append((t.op, t.layer, t.tile, t.k0, t.klen, *ph.wait(i), ph.signal(i)))
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
    lists = sched._lists
    order: list[Task] = []
    remaining = sum(len(lst) for lst in lists)
    while remaining:
        ready = []
        for b in range(sched.blocks):
            if pos[b] < len(lists[b]):
                idx, i = lists[b][pos[b]]
                ctr, target = sched.phases[idx].wait(i)
                if ctr == NO_COUNTER or counters[ctr] >= target:
                    ready.append(b)
        if not ready:
            stuck = {b: sched.phases[lists[b][pos[b]][0]].name
                     for b in range(sched.blocks) if pos[b] < len(lists[b])}
            raise RuntimeError(f"schedule deadlocks: blocks waiting at {stuck}")
        b = rng.choice(ready) if rng else ready[0]
        idx, i = lists[b][pos[b]]
        ph = sched.phases[idx]
        if run is not None:
            run(ph.tasks[i])
        order.append(ph.tasks[i])
        counters[ph.signal(i)] += 1
        pos[b] += 1
        remaining -= 1
    return order


# Access modes of a task on a buffer cell: read, write, read-modify-write (only this task
# touches the cell in its phase), accumulate (commutative adds: any number per phase).
READ, WRITE, MODIFY, ACCUMULATE = "r", "w", "m", "a"


_CLASH = {READ: (WRITE, ACCUMULATE), WRITE: (READ, WRITE, ACCUMULATE),
          ACCUMULATE: (READ, WRITE)}


def _mode_class(mode: str) -> str:
    return WRITE if mode in (WRITE, MODIFY) else mode  # writes and modifies share a class


def find_races(sched: Schedule,
               accesses: Callable[[Task], Iterable[tuple[str, Iterable, str]]]) -> list[str]:
    """Conflicting accesses between tasks that no counter orders: two tasks of one phase,
    and a task of a grouped phase with a task of the next phase that waits for another
    group (all other pairs are ordered: phases form a chain, and every group is waited
    for). ``accesses(task)`` yields (buffer, cells, mode). Returns human-readable
    conflicts (empty: race-free)."""
    problems: list[str] = []
    for p, ph in enumerate(sched.phases):
        # cell -> {mode class: first two distinct tasks}
        seen: dict[tuple[str, object], dict[str, list[Task]]] = {}
        for t in ph.tasks:
            for buf, cells, mode in accesses(t):
                cls = _mode_class(mode)
                for cell in cells:
                    by = seen.setdefault((buf, cell), {})
                    for other in _CLASH[cls]:
                        hit = next((o for o in by.get(other, ()) if o is not t), None)
                        if hit is not None:
                            problems.append(f"phase {ph.name}: {buf}{cell} {other} by {hit} "
                                            f"and {mode} by {t}")
                            if len(problems) > 20:
                                return problems
                    lst = by.setdefault(cls, [])
                    if len(lst) < 2 and all(o is not t for o in lst):
                        lst.append(t)
        if ph.group_size and p + 1 < len(sched.phases):
            problems += _group_races(ph, sched.phases[p + 1], accesses)
            if len(problems) > 20:
                return problems
    return problems


def _group_races(ph: Phase, nxt: Phase, accesses) -> list[str]:
    """Conflicts between the tasks of grouped phase ``ph`` and the tasks of ``nxt`` that
    wait for a group other than theirs."""
    # cell -> {counter of a group of ph: {mode class: one task}}
    by_cell: dict[tuple[str, object], dict[int, dict[str, Task]]] = {}
    for i, t in enumerate(ph.tasks):
        for buf, cells, mode in accesses(t):
            for cell in cells:
                by_cell.setdefault((buf, cell), {}).setdefault(ph.signal(i), {}).setdefault(
                    _mode_class(mode), t)
    problems = []
    for i, u in enumerate(nxt.tasks):
        waited = nxt.wait(i)[0]
        for buf, cells, mode in accesses(u):
            clash = _CLASH[_mode_class(mode)]
            for cell in cells:
                for ctr, modes in by_cell.get((buf, cell), {}).items():
                    hit = next((modes[c] for c in clash if c in modes), None)
                    if ctr != waited and hit is not None:
                        problems.append(f"phases {ph.name} / {nxt.name}: {buf}{cell} by {hit} "
                                        f"and {mode} by {u}, which waits for another group")
                        if len(problems) > 20:
                            return problems
    return problems
