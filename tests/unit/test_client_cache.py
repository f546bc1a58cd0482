"""The STS client cache: keyed on all of the key material, built once, bounded (no I/O)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rolecall.sts import ClientCache, StaticKeys


class Builder:
    """A fake client factory that counts builds and can block or fail on demand."""

    def __init__(self) -> None:
        self.built: list[tuple[str, StaticKeys | None]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self.lock = threading.Lock()

    def __call__(self, region: str, keys: StaticKeys | None) -> Any:
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("build failed")
        with self.lock:
            self.built.append((region, keys))
            return object()


def test_a_key_id_with_another_secret_or_token_is_another_client() -> None:
    cache = ClientCache(Builder())
    real = cache.get("us-east-1", StaticKeys("AKIAVICTIM", "real"), operator=False)
    assert cache.get("us-east-1", StaticKeys("AKIAVICTIM", "garbage"), operator=False) is not real
    assert cache.get("us-east-1", StaticKeys("AKIAVICTIM", "real", "tok"), operator=False) is not real
    assert cache.get("us-east-1", StaticKeys("AKIAVICTIM", "real"), operator=False) is real
    assert cache.get("eu-west-1", StaticKeys("AKIAVICTIM", "real"), operator=False) is not real


def test_tenant_keys_never_share_the_operator_entry() -> None:
    cache = ClientCache(Builder())
    operator_keys = StaticKeys("AKIAOPERATOR", "secret")
    mine = cache.get("us-east-1", operator_keys, operator=True)
    assert cache.get("us-east-1", operator_keys, operator=False) is not mine
    assert cache.get("us-east-1", None, operator=True) is not mine


def test_one_build_per_key_under_concurrency_and_nothing_half_built() -> None:
    builder = Builder()
    builder.gate.clear()
    cache = ClientCache(builder)
    keys = StaticKeys("AKIA1", "s")
    got: list[Any] = []
    threads = [
        threading.Thread(target=lambda: got.append(cache.get("us-east-1", keys, operator=False)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    assert not cache.holds(cache.key("us-east-1", keys, operator=False)), "a pending entry is visible"
    builder.gate.set()
    for t in threads:
        t.join(10)
    assert len(builder.built) == 1 and len(got) == 8 and all(g is got[0] for g in got)


def test_a_failed_build_is_not_cached() -> None:
    builder = Builder()
    cache = ClientCache(builder)
    builder.fail = True
    with pytest.raises(RuntimeError):
        cache.get("us-east-1", None, operator=True)
    builder.fail = False
    assert cache.get("us-east-1", None, operator=True) is not None and len(cache) == 1


def test_tenant_flood_never_evicts_the_operator_client() -> None:
    cache = ClientCache(Builder(), max_tenant_clients=4, max_operator_clients=2, pinned_region="us-east-1")
    operator = cache.get("us-east-1", None, operator=True)
    for i in range(300):
        cache.get("us-east-1", StaticKeys(f"AKIAFAKE{i}", "x"), operator=False)
    for region in ("xx-bogus-1", "xx-bogus-2", "xx-bogus-3"):  # regions are the tenants' choice too
        cache.get(region, None, operator=True)
    assert cache.get("us-east-1", None, operator=True) is operator
    assert len(cache) == 4 + 2
