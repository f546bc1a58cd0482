"""Time as a dependency: the real clock, and a controllable one for tests.

The scheduler never sleeps on wall time directly: it asks the clock what time it is and
waits until either the next deadline or a nudge from the clock (a test moving time on).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime.datetime: ...

    def subscribe(self, callback: Callable[[], None]) -> None: ...


class SystemClock:
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Wall time never jumps on request; nothing to notify."""


class FakeClock:
    """A clock that moves only when told to; thread-safe, notifies subscribers on moves."""

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self._now = start or datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []

    def now(self) -> datetime.datetime:
        with self._lock:
            return self._now

    def subscribe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def advance(self, seconds: float) -> datetime.datetime:
        with self._lock:
            self._now += datetime.timedelta(seconds=seconds)
            now, subscribers = self._now, list(self._subscribers)
        for callback in subscribers:
            callback()
        return now

    def set(self, moment: datetime.datetime) -> None:
        with self._lock:
            self._now = moment
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback()
