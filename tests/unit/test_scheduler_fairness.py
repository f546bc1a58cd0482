"""Fair sharing between namespaces: one namespace's flood never delays another's binding.

The scheduler is driven by real asyncio with a fake clock and a fake run function; the STS
gate is a real token bucket at a low rate, so a flood would take minutes if served first come
first served.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Hashable
from dataclasses import dataclass

from rolecall.clock import FakeClock
from rolecall.ratelimit import TokenBucket
from rolecall.scheduler import FairQueue, Scheduler


def test_fair_queue_serves_namespaces_in_turn() -> None:
    async def main() -> list[tuple[str, int]]:
        q: FairQueue[tuple[str, int]] = FairQueue(lambda k: k[0])
        for i in range(5):
            q.put(("flood", i))
        q.put(("quiet", 0))
        q.put(("other", 0))
        return [q.pop() for _ in range(4)]  # type: ignore[misc]

    order = asyncio.run(main())
    assert order == [("flood", 0), ("quiet", 0), ("other", 0), ("flood", 1)]


def test_fair_queue_removal_is_honoured() -> None:
    async def main() -> list[object]:
        q: FairQueue[tuple[str, int]] = FairQueue(lambda k: k[0])
        q.put(("a", 1))
        q.put(("a", 2))
        assert q.remove(("a", 1))
        q.put(("a", 1))  # re-queued at the back of its lane
        return [q.pop(), q.pop(), q.pop()]

    assert asyncio.run(main()) == [("a", 2), ("a", 1), None]


@dataclass
class Step:
    """A deferred STS step that records when it ran."""

    key: Hashable
    log: list[Hashable]

    async def run(self) -> datetime.datetime | None:
        self.log.append(self.key)
        return None


def test_a_new_binding_is_served_within_one_turn_of_a_flood() -> None:
    async def main() -> tuple[float, int]:
        clock = FakeClock()
        sts_calls: list[Hashable] = []
        deleted: list[Hashable] = []

        async def run(key: Hashable) -> object:
            if key == ("team-b", "withdrawn"):
                deleted.append(key)  # a withdrawal needs no STS: done on the worker
                return None
            return Step(key, sts_calls)

        bucket = TokenBucket(rate=5.0, burst=1)
        scheduler = Scheduler(run, clock, workers=4, sts_gate=bucket.acquire, sts_concurrency=2)
        await scheduler.start()
        loop = asyncio.get_running_loop()
        for i in range(500):
            scheduler.trigger(("team-a", f"flood-{i}"))
        await asyncio.sleep(0.3)  # the flood is parked, waiting for STS turns
        started = loop.time()
        scheduler.trigger(("team-b", "new"))
        scheduler.trigger(("team-b", "withdrawn"))
        while ("team-b", "new") not in sts_calls:
            await asyncio.sleep(0.01)
            assert loop.time() - started < 5, "the new binding waited behind the flood"
        waited = loop.time() - started
        assert deleted == [("team-b", "withdrawn")]
        served_before = sts_calls.index(("team-b", "new"))
        await scheduler.stop()
        return waited, served_before

    waited, served_before = asyncio.run(main())
    # at 5 calls/s, FIFO would have made it wait ~100 s behind 500 calls
    assert waited < 1.5
    assert served_before < 10


def test_a_trigger_unparks_a_binding_waiting_for_sts() -> None:
    async def main() -> list[str]:
        clock = FakeClock()
        seen: list[str] = []
        sts_calls: list[Hashable] = []
        withdrawn = False

        async def run(key: Hashable) -> object:
            seen.append("decide")
            if withdrawn:
                return None  # its policy went away: no STS call at all
            return Step(key, sts_calls)

        gate = asyncio.Event()
        scheduler = Scheduler(run, clock, workers=1, sts_gate=gate.wait, sts_concurrency=1)
        await scheduler.start()
        scheduler.trigger(("ns", "b"))
        while scheduler.waiting_for_sts() == 0:
            await asyncio.sleep(0.01)
        withdrawn = True
        scheduler.trigger(("ns", "b"))  # the policy changed while it waited
        while not scheduler.idle_at(clock.now()):
            await asyncio.sleep(0.01)
        gate.set()
        await asyncio.sleep(0.05)
        await scheduler.stop()
        assert sts_calls == []
        return seen

    assert asyncio.run(main()) == ["decide", "decide"]


def test_a_key_never_runs_twice_at_once_whatever_the_triggers() -> None:
    """Triggers while a key waits for a worker, decides, waits for STS or is in its STS turn
    must never start a second run of it (that would call STS twice for one refresh)."""

    async def main() -> tuple[int, int]:
        clock = FakeClock()
        active: dict[Hashable, int] = {}
        worst = 0
        sts_calls = 0

        async def enter(key: Hashable) -> None:
            nonlocal worst
            active[key] = active.get(key, 0) + 1
            worst = max(worst, active[key])
            await asyncio.sleep(0.002)
            active[key] -= 1

        @dataclass
        class Slow:
            key: Hashable

            async def run(self) -> datetime.datetime | None:
                nonlocal sts_calls
                sts_calls += 1
                await enter(self.key)
                return None

        async def run(key: Hashable) -> object:
            await enter(key)
            return Slow(key)

        scheduler = Scheduler(run, clock, workers=4, sts_concurrency=4)
        await scheduler.start()
        keys = [("ns", f"k{i}") for i in range(3)]
        for i in range(600):
            for key in keys:
                scheduler.trigger(key)
            for _ in range(i % 4):
                await asyncio.sleep(0)  # every interleaving of dispatcher, workers and lane
            if i % 50 == 0:
                await asyncio.sleep(0.003)
        while not scheduler.idle_at(clock.now()):
            await asyncio.sleep(0.01)
        await scheduler.stop()
        return worst, sts_calls

    worst, calls = asyncio.run(main())
    assert worst == 1
    assert calls >= 1
