"""When each MLModel is reconciled next, without asking kopf (and so the apiserver) for it.

Every reconcile ends by naming its model's next look: soon when it waits for something
(a drain, a canary's step, the ready timeout, an archive to retry, a turn in the fleet's
update budget), else one reconcile interval later (5 minutes by default), the safety net
that catches what no event announced. One asyncio task wakes the models that are due and reconciles them on kopf's own
executor, from the MLModel the watch last showed (objcache.py).

Why not kopf's means: a kopf timer per model keeps a task and the model's whole last
body in memory for every model, and a kopf retry (``TemporaryError``) is a PATCH of the
MLModel's annotations and a watch event per wait; with 1,000 models waiting for a fleet
change those were most of the operator's requests. A wake-up here is an entry in a heap.

It is still level-based: a wake-up only says when to look, every reconcile reads the
cluster's state as it is then, and a wake-up lost (a restart) is made good by the
reconcile kopf runs for every model when the operator starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

log = logging.getLogger(__name__)

# The periodic look comes at the interval times a factor in this range, so models
# reconciled together (a start-up, a burst) drift apart instead of all waking at once.
JITTER: Final = 0.1
# A reconcile that raised is tried again after this many seconds, doubled each time in a
# row, up to ERROR_RETRY_MAX (or the reconcile interval, when shorter).
ERROR_RETRY_FIRST: Final = 2.0
ERROR_RETRY_MAX: Final = 60.0
# A model due on a standby replica is looked at again this soon (peering.py reads the
# peering every 5 s): a replica that took over reconciles it then, not an interval later.
STANDBY_RECHECK: Final = 5.0


@dataclass(frozen=True)
class Due:
    """A model to reconcile now."""

    uid: str
    namespace: str
    name: str
    errors: int  # how many reconciles in a row raised before this one


class _Entry(NamedTuple):
    """A model's pending wake-up."""

    at: float  # when (the clock's time)
    seq: int  # when it was set, in order (the heap's tie-break, and for after()'s token)
    due: Due


class Wakeups:
    """Each model's next reconcile time, the earliest first. Thread-safe: reconciles run in
    threads and name their model's next look under its lock; the loop reads in asyncio."""

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if interval <= 0:
            raise ValueError(
                f"MLMODEL_RECONCILE_INTERVAL: interval {interval!r}: expected seconds > 0"
            )
        self.interval = interval
        self.clock = clock
        self.rand = rand
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, str]] = []  # (due, sequence, uid); stale kept
        self._entries: dict[str, _Entry] = {}  # uid -> its pending wake-up
        self._seq = itertools.count()
        self._changed: Callable[[], None] = lambda: None
        self._woke_all = -1  # the token of the last wake_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def periodic(self) -> float:
        """The safety net's delay: the interval, jittered by +-JITTER."""
        return self.interval * (1.0 + JITTER * (2.0 * self.rand() - 1.0))

    def token(self) -> int:
        """Taken when a reconcile starts; given back to :meth:`after`, it tells the wake-ups
        asked for while that reconcile ran (which it may not have seen) from older ones."""
        with self._lock:
            return next(self._seq)

    def now(self, uid: str, namespace: str, name: str) -> None:
        """Something changed (an event of the model or one of its objects): reconcile it
        as soon as a worker is free."""
        self._put(uid, namespace, name, 0.0, keep_earlier=True)

    def after(
        self, uid: str, namespace: str, name: str, delay: float | None, since: int | None = None
    ) -> None:
        """The model was just reconciled (it started at ``since``, a :meth:`token`): its
        next look is in ``delay`` seconds, or the periodic one when None or later. This
        replaces what was pending, except a wake-up asked for after ``since``, which the
        reconcile may not have seen: then the earlier of the two is kept."""
        periodic = self.periodic()
        delay = periodic if delay is None else min(delay, periodic)
        with self._lock:
            if since is not None and since < self._woke_all:
                delay = 0.0  # it ran from what was known before wake_all(): again
        self._put(uid, namespace, name, delay, keep_newer_than=since)

    def wake_all(self) -> None:
        """Something every model depends on changed (the Prometheus operator's CRDs came
        or went): reconcile each as soon as a worker is free; one whose reconcile runs
        now is reconciled again once it ends."""
        with self._lock:
            self._woke_all = next(self._seq)
            pending = [e.due for e in self._entries.values()]
        for due in pending:
            self._put(due.uid, due.namespace, due.name, 0.0, due.errors, keep_earlier=True)

    def failed(self, due: Due) -> float:
        """The reconcile of ``due`` raised: try again after a growing delay (returned),
        or sooner if something changed meanwhile."""
        cap = min(self.interval, ERROR_RETRY_MAX)
        delay = min(cap, ERROR_RETRY_FIRST * 2.0 ** min(due.errors, 16))
        self._put(due.uid, due.namespace, due.name, delay, due.errors + 1, keep_earlier=True)
        return delay

    def postpone(self, due: Due) -> None:
        """Not now (this replica is on standby): look again soon, when this replica may
        have become the active one (kopf hands it the events from then on, but a model
        whose event came just before this replica knew it was active waits here)."""
        delay = min(self.interval, STANDBY_RECHECK)
        self._put(due.uid, due.namespace, due.name, delay, due.errors, keep_earlier=True)

    def forget(self, uid: str) -> None:
        """The model is gone: no more wake-ups."""
        with self._lock:
            self._entries.pop(uid, None)

    def _put(
        self,
        uid: str,
        namespace: str,
        name: str,
        delay: float,
        errors: int = 0,
        *,
        keep_earlier: bool = False,
        keep_newer_than: int | None = None,
    ) -> None:
        """Set ``uid``'s next look; ``keep_earlier``: unless one is pending sooner;
        ``keep_newer_than``: a pending one set after that token, when sooner, stays."""
        at = self.clock() + max(0.0, delay)
        with self._lock:
            entry = self._entries.get(uid)
            sooner = entry is not None and entry.at <= at
            newer = (
                entry is not None and keep_newer_than is not None and entry.seq > keep_newer_than
            )
            if sooner and (keep_earlier or newer):
                return
            seq = next(self._seq)
            self._entries[uid] = _Entry(at, seq, Due(uid, namespace, name, errors))
            heapq.heappush(self._heap, (at, seq, uid))
            # entries replaced leave their old heap items behind: drop them in bulk
            if len(self._heap) > 2 * len(self._entries) + 64:
                self._heap = [(e.at, e.seq, u) for u, e in self._entries.items()]
                heapq.heapify(self._heap)
            first = self._heap[0][1] == seq
        if first:
            self._changed()

    def pop_due(self) -> tuple[list[Due], float | None]:
        """The models due now (each taken off: its reconcile names its next look), and
        the seconds until the next one after them (None: none pending)."""
        now = self.clock()
        out: list[Due] = []
        with self._lock:
            while self._heap:
                at, seq, uid = self._heap[0]
                entry = self._entries.get(uid)
                if entry is None or entry.seq != seq:  # replaced or forgotten
                    heapq.heappop(self._heap)
                    continue
                if at > now:
                    return out, at - now
                heapq.heappop(self._heap)
                del self._entries[uid]
                out.append(entry.due)
        return out, None

    async def run(
        self,
        reconcile: Callable[[Due], Awaitable[None]],
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        """Reconcile each model when it is due, forever (cancel the task to stop).
        ``reconcile`` runs one model (it names the model's next look, or raises). One
        reconcile per model at a time: a model due again while its reconcile runs (an
        event came) is started once that one ends, rather than hold a worker waiting for
        the model's lock."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def changed() -> None:
            loop.call_soon_threadsafe(wake.set)

        self._changed = changed
        running: set[asyncio.Task[None]] = set()
        busy: set[str] = set()  # uids whose reconcile runs
        again: dict[str, Due] = {}  # due while busy: started when it ends

        async def one(due: Due) -> None:
            try:
                await reconcile(due)
            except Exception as exc:  # logged, tried again; a loop that dies would stop all
                delay = self.failed(due)
                log.warning(
                    "%s/%s: reconcile failed (%s: %s); trying again in %.0fs",
                    due.namespace, due.name, type(exc).__name__, exc, delay,
                )  # fmt: skip
            finally:
                busy.discard(due.uid)
                if (later := again.pop(due.uid, None)) is not None:
                    self.now(later.uid, later.namespace, later.name)

        try:
            while True:
                wake.clear()
                due, delay = self.pop_due()
                for d in due:
                    if not active():
                        self.postpone(d)
                    elif d.uid in busy:
                        again[d.uid] = d
                    else:
                        busy.add(d.uid)
                        task = asyncio.create_task(one(d))
                        running.add(task)
                        task.add_done_callback(running.discard)
                if not due:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), delay)
                else:
                    await asyncio.sleep(0)  # let the started ones reach the executor
        finally:
            self._changed = lambda: None
            for task in running:
                task.cancel()
