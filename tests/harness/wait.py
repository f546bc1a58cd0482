"""Polling with a deadline, for tests: never sleep-and-hope.

    secret = wait_for(lambda: read_secret_or_none(), timeout=5, message="no Secret")

The predicate is called until it returns something truthy, which is returned. On timeout an
AssertionError names the message and the last value seen (or the last exception raised by
the predicate, which is otherwise retried).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_NOTHING = object()


def _failure(message: str, timeout: float, last: Any, error: BaseException | None) -> AssertionError:
    text = message or "condition not met"
    if last is not _NOTHING:
        text += f" (after {timeout:g}s; last value: {last!r})"
    else:
        text += f" (after {timeout:g}s; never evaluated without an error)"
    if error is not None:
        text += f"; last error: {error!r}"
    return AssertionError(text)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns a truthy value; return that value.

    Exceptions of the types in ``ignore`` are retried (the last one is reported on timeout);
    others propagate at once.
    """
    deadline = time.monotonic() + timeout
    last: Any = _NOTHING
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
        except ignore as e:
            error = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise _failure(message, timeout, last, error)
        time.sleep(interval)


async def await_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """The async twin of :func:`wait_for`; the predicate may be sync or async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = _NOTHING
    error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            last = value
        except ignore as e:
            error = e
        else:
            if last:
                return last  # type: ignore[no-any-return]
        if loop.time() >= deadline:
            raise _failure(message, timeout, last, error)
        await asyncio.sleep(interval)
