"""One deadline queue for every binding, shared fairly between namespaces.

Bindings are keyed by (namespace, name). ``trigger`` asks for a run now (watch events); a
run's result sets the next deadline (refresh time, retry time). A key is in exactly one
place at a time — due (the heap), ready (waiting for a worker), running, or parked (waiting
for STS) — so it never runs twice at once; a trigger that arrives during a run causes exactly
one more run afterwards. Between
deadlines the scheduler sleeps: no polling, no API requests.

Fairness (a hostile or careless namespace must not delay anyone else):

- Due keys wait in a :class:`FairQueue`: one FIFO per namespace, namespaces served round
  robin. 2 000 bindings due at once in one namespace delay another namespace's binding by
  one turn, not by 2 000.
- A run that needs STS does not call it on the worker: it returns a :class:`Deferred` and
  the key is *parked* in a second fair queue. One STS lane takes the global STS token and a
  concurrency slot *first*, and only then picks the next namespace's next parked key. So
  workers never sit waiting for STS, and deletions, withdrawals and restores (which need no
  STS) are never queued behind STS calls.
- A trigger for a parked key un-parks it and runs it again on a worker (its spec, policy or
  Secret changed: the parked decision may be stale — a withdrawal must not wait for STS).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from rolecall.clock import Clock

logger = logging.getLogger("rolecall.scheduler")

ERROR_RETRY_SECONDS = 30.0
MAX_SLEEP_SECONDS = 60.0

K = TypeVar("K", bound=Hashable)
Outcome = Any  # datetime.datetime | None | Deferred


@runtime_checkable
class Deferred(Protocol):
    """The rest of a run that needs an STS call: run it when the STS lane grants a turn."""

    async def run(self) -> datetime.datetime | None: ...


class FairQueue(Generic[K]):
    """FIFO per lane, lanes served round robin; removal is O(1) (lazy)."""

    def __init__(self, lane_of: Callable[[K], str]) -> None:
        self._lane_of = lane_of
        self._lanes: dict[str, deque[tuple[int, K]]] = {}
        self._ring: deque[str] = deque()  # lanes with (possibly stale) entries, in turn order
        self._live: dict[K, int] = {}  # key → sequence number of its live entry
        self._seq = itertools.count()
        self._nonempty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def put(self, key: K) -> None:
        if key in self._live:
            return
        seq = next(self._seq)
        self._live[key] = seq
        lane = self._lane_of(key)
        entries = self._lanes.get(lane)
        if entries is None:
            entries = self._lanes[lane] = deque()
            self._ring.append(lane)
        entries.append((seq, key))
        self._nonempty.set()

    def remove(self, key: K) -> bool:
        return self._live.pop(key, None) is not None

    def pop(self) -> K | None:
        while self._ring:
            lane = self._ring.popleft()
            entries = self._lanes[lane]
            while entries:
                seq, key = entries.popleft()
                if self._live.get(key) == seq:
                    del self._live[key]
                    if entries:
                        self._ring.append(lane)  # its next turn comes after every other lane
                    else:
                        del self._lanes[lane]
                    return key
            del self._lanes[lane]
        self._nonempty.clear()
        return None

    async def get(self) -> K:
        while True:
            key = self.pop()
            if key is not None:
                return key
            await self._nonempty.wait()

    async def wait_nonempty(self) -> None:
        while not self._live:
            self._nonempty.clear()
            await self._nonempty.wait()


def _namespace_of(key: Hashable) -> str:
    return str(key[0]) if isinstance(key, tuple) and key else ""


class Scheduler:
    def __init__(
        self,
        run: Callable[[Any], Awaitable[Outcome]],
        clock: Clock,
        *,
        workers: int = 16,
        sts_gate: Callable[[], Awaitable[None]] | None = None,
        sts_concurrency: int = 8,
        lane_of: Callable[[Hashable], str] = _namespace_of,
    ) -> None:
        self._run = run
        self._clock = clock
        self._workers = max(1, workers)
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, tuple[float, int]] = {}
        self._running: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # requested during a run: the earliest time
        self._seq = itertools.count()
        self._ready: FairQueue[Hashable] = FairQueue(lane_of)
        self._sts_queue: FairQueue[Hashable] = FairQueue(lane_of)
        self._parked: dict[Hashable, Deferred] = {}
        self._sts_gate = sts_gate
        self._sts_slots = asyncio.Semaphore(max(1, sts_concurrency))
        self._wake = asyncio.Event()
        self._resumed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused = False
        self._resumed.set()
        self.runs = 0

    # --- public API (call from the scheduler's event loop) ------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = value
        if value:
            self._resumed.clear()
        else:
            self._resumed.set()

    def trigger(self, key: Hashable, at: datetime.datetime | None = None) -> None:
        """Run ``key`` at ``at`` (default now) or earlier if it is already due earlier."""
        now = self._clock.now().timestamp()
        when = at.timestamp() if at is not None else now
        if key in self._ready and when <= now:
            return  # about to run anyway, with the facts of that moment
        if key in self._running or key in self._ready:
            # never two runs of one key at once: one more run after this one
            self._again[key] = min(when, self._again.get(key, when))
            return
        if key in self._parked:
            # its facts changed while it waited for STS: decide again, on a worker
            self._unpark(key)
        current = self._due.get(key)
        if current is not None and current[0] <= when:
            return
        self._push(key, when)

    def forget(self, key: Hashable) -> None:
        self._due.pop(key, None)
        self._again.pop(key, None)
        self._ready.remove(key)
        self._unpark(key)

    def pending(self) -> int:
        return len(self._due)

    def waiting_for_sts(self) -> int:
        return len(self._parked)

    def due_at(self, key: Hashable) -> datetime.datetime | None:
        entry = self._due.get(key)
        return datetime.datetime.fromtimestamp(entry[0], datetime.UTC) if entry else None

    def idle_at(self, now: datetime.datetime) -> bool:
        """Nothing runs, waits for a worker or for STS, and nothing is due at ``now``: what a
        test that moves a fake clock waits for after every step."""
        moment = now.timestamp()
        return (
            not self._running
            and not self._ready
            and not self._parked
            and all(when > moment for when, _ in self._due.values())
        )

    def alive(self) -> bool:
        return bool(self._tasks) and all(not t.done() for t in self._tasks)

    def wake(self) -> None:
        """Re-check deadlines now; safe to call from any thread (the clock calls it)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._clock.subscribe(self.wake)
        self._tasks.append(asyncio.create_task(self._dispatch(), name="rolecall-dispatch"))
        self._tasks.append(asyncio.create_task(self._sts_lane(), name="rolecall-sts-lane"))
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"rolecall-worker-{i}"))

    async def stop(self) -> None:
        tasks = self._tasks + list(self._inflight)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._inflight.clear()

    # --- internals ----------------------------------------------------------------------

    def _push(self, key: Hashable, when: float) -> None:
        seq = next(self._seq)
        self._due[key] = (when, seq)
        heapq.heappush(self._heap, (when, seq, key))
        if self._heap[0][1] == seq:
            self._wake.set()

    def _unpark(self, key: Hashable) -> None:
        if self._parked.pop(key, None) is not None:
            self._sts_queue.remove(key)

    async def _dispatch(self) -> None:
        while True:
            now = self._clock.now().timestamp()
            while self._heap and self._heap[0][0] <= now and not self._paused:
                when, seq, key = heapq.heappop(self._heap)
                if self._due.get(key) != (when, seq):
                    continue  # superseded
                del self._due[key]
                if key in self._running or key in self._parked:  # defensive: one run at a time
                    self._again[key] = min(when, self._again.get(key, when))
                    continue
                self._ready.put(key)
            timeout = MAX_SLEEP_SECONDS
            if self._heap and not self._paused:
                timeout = min(timeout, max(0.0, self._heap[0][0] - now))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            self._running.add(key)
            outcome = await self._guarded(key, self._run(key))
            if isinstance(outcome, Deferred):
                self._running.discard(key)
                if key in self._again:
                    # triggered while deciding: decide again instead of acting on stale facts
                    self._push(key, self._again.pop(key))
                    continue
                self._parked[key] = outcome
                self._sts_queue.put(key)
                continue
            self._finish(key, outcome)

    async def _sts_lane(self) -> None:
        """Grant STS turns: token and slot first, then the next namespace's next key."""
        while True:
            await self._sts_queue.wait_nonempty()
            await self._resumed.wait()
            if self._sts_gate is not None:
                await self._sts_gate()
            await self._sts_slots.acquire()
            key = self._sts_queue.pop()
            deferred = self._parked.pop(key, None) if key is not None else None
            if key is None or deferred is None or self._paused:
                if key is not None and deferred is not None:  # lost leadership meanwhile
                    self._parked[key] = deferred
                    self._sts_queue.put(key)
                self._sts_slots.release()
                continue
            self._running.add(key)
            task = asyncio.create_task(self._run_deferred(key, deferred), name=f"rolecall-sts-{key}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _run_deferred(self, key: Hashable, deferred: Deferred) -> None:
        try:
            outcome = await self._guarded(key, deferred.run())
        finally:
            self._sts_slots.release()
        self._finish(key, outcome)

    async def _guarded(self, key: Hashable, run: Awaitable[Outcome]) -> Outcome:
        try:
            return await run
        except asyncio.CancelledError:
            self._running.discard(key)
            raise
        except Exception as exc:
            logger.error(
                "Reconciling %s failed unexpectedly (%s); retrying in %ss",
                key,
                type(exc).__name__,
                ERROR_RETRY_SECONDS,
                exc_info=exc,
            )
            return self._clock.now() + datetime.timedelta(seconds=ERROR_RETRY_SECONDS)

    def _finish(self, key: Hashable, nxt: datetime.datetime | None) -> None:
        self._running.discard(key)
        self.runs += 1
        again = self._again.pop(key, None)
        when = nxt.timestamp() if nxt is not None else None
        if again is not None:
            when = again if when is None else min(when, again)
        if when is not None:
            self._push(key, when)
