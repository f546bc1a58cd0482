"""One deadline queue for every binding: no timer or daemon per object.

Bindings are keyed by (namespace, name). ``trigger`` asks for a run now (watch events),
``run_key`` results set the next deadline (refresh time, retry time). A key never runs twice
at once; a trigger that arrives during a run causes exactly one more run afterwards. Between
deadlines the scheduler sleeps: no polling, no API requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from rolecall.clock import Clock

logger = logging.getLogger("rolecall.scheduler")

ERROR_RETRY_SECONDS = 30.0
MAX_SLEEP_SECONDS = 60.0


class Scheduler:
    def __init__(
        self,
        run: Callable[[Any], Awaitable[datetime.datetime | None]],
        clock: Clock,
        *,
        workers: int = 16,
    ) -> None:
        self._run = run
        self._clock = clock
        self._workers = max(1, workers)
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, tuple[float, int]] = {}
        self._running: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # requested during a run: the earliest time
        self._seq = itertools.count()
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.paused = False
        self.runs = 0

    # --- public API (call from the scheduler's event loop) ------------------------------

    def trigger(self, key: Hashable, at: datetime.datetime | None = None) -> None:
        """Run ``key`` at ``at`` (default now) or earlier if it is already due earlier."""
        when = (at or self._clock.now()).timestamp()
        if key in self._running:
            self._again[key] = min(when, self._again.get(key, when))
            return
        current = self._due.get(key)
        if current is not None and current[0] <= when:
            return
        self._push(key, when)

    def forget(self, key: Hashable) -> None:
        self._due.pop(key, None)
        self._again.pop(key, None)

    def pending(self) -> int:
        return len(self._due)

    def due_at(self, key: Hashable) -> datetime.datetime | None:
        entry = self._due.get(key)
        return datetime.datetime.fromtimestamp(entry[0], datetime.UTC) if entry else None

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
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"rolecall-worker-{i}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # --- internals ----------------------------------------------------------------------

    def _push(self, key: Hashable, when: float) -> None:
        seq = next(self._seq)
        self._due[key] = (when, seq)
        heapq.heappush(self._heap, (when, seq, key))
        if self._heap[0][1] == seq:
            self._wake.set()

    async def _dispatch(self) -> None:
        while True:
            now = self._clock.now().timestamp()
            while self._heap and self._heap[0][0] <= now and not self.paused:
                when, seq, key = heapq.heappop(self._heap)
                if self._due.get(key) != (when, seq):
                    continue  # superseded
                del self._due[key]
                self._running.add(key)
                self._queue.put_nowait(key)
            timeout = MAX_SLEEP_SECONDS
            if self._heap and not self.paused:
                timeout = min(timeout, max(0.0, self._heap[0][0] - now))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            nxt: datetime.datetime | None
            try:
                nxt = await self._run(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.error(
                    "Reconciling %s failed unexpectedly (%s); retrying in %ss",
                    key,
                    type(exc).__name__,
                    ERROR_RETRY_SECONDS,
                    exc_info=exc,
                )
                nxt = self._clock.now() + datetime.timedelta(seconds=ERROR_RETRY_SECONDS)
            finally:
                self._running.discard(key)
                self.runs += 1
            again = self._again.pop(key, None)
            when = nxt.timestamp() if nxt is not None else None
            if again is not None:
                when = again if when is None else min(when, again)
            if when is not None:
                self._push(key, when)
