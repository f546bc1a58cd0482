"""The managed Secret's write protocol: a compare-and-swap on its owner, against a fake API.

A hostile namespace admin can create, edit and delete Secrets at any moment; these cases
are the races the security review found (a foreign Secret created during the STS call, two
AssumedRoles naming one Secret, a Secret replaced between read and delete).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from rolecall.kube import AlreadyExists, Conflict, NotFound
from rolecall.managed_secret import SecretTaken, SecretWriter, differs, owned_by, replacement

NS = "team-a"


def ref(uid: str, kind: str = "AssumedRole") -> dict[str, Any]:
    return {"apiVersion": "rolecall.dev/v1alpha1", "kind": kind, "name": "s3", "uid": uid, "controller": True}


def secret(uid: str = "sec-1", owner: str | None = "ar-1", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "s3", "namespace": NS, "uid": uid, "resourceVersion": "1"}
    if owner is not None:
        meta["ownerReferences"] = [ref(owner)]
    meta.update(extra)
    return {"metadata": meta, "data": {"k": "dg=="}}


def desired(owner: str = "ar-1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "s3",
            "namespace": NS,
            "labels": {"app.kubernetes.io/managed-by": "rolecall"},
            "annotations": {"rolecall.dev/spec-hash": "h"},
            "ownerReferences": [ref(owner)],
        },
        "data": {"k": "bmV3"},
    }


@pytest.mark.parametrize(
    ("stored", "owner_uid", "known_uid", "expected"),
    [
        pytest.param(secret(), "ar-1", "", True, id="controller reference names the AssumedRole's UID"),
        pytest.param(secret(owner="ar-2"), "ar-1", "", False, id="another AssumedRole's Secret is not ours"),
        pytest.param(
            secret(
                owner=None,
                labels={"app.kubernetes.io/managed-by": "rolecall", "rolecall.dev/assumed-role": "s3"},
            ),
            "ar-1",
            "",
            False,
            id="rolecall's labels alone (forgeable) never adopt a Secret",
        ),
        pytest.param(
            secret(owner=None),
            "ar-1",
            "sec-1",
            True,
            id="the object we wrote, owner reference removed by hand",
        ),
        pytest.param(
            secret(uid="sec-2", owner=None), "ar-1", "sec-1", False, id="a Secret recreated by someone else"
        ),
        pytest.param(
            secret(owner="ar-2"), "ar-1", "sec-1", False, id="the object we wrote, now controlled by another"
        ),
    ],
)
def test_ownership_is_by_uid_only(
    stored: dict[str, Any], owner_uid: str, known_uid: str, expected: bool
) -> None:
    assert owned_by(stored, owner_uid, known_uid) is expected


def test_replacement_keeps_foreign_labels_and_checks_the_read_version() -> None:
    current = secret(labels={"team": "a"}, annotations={"reloader": "x"})
    body = replacement(current, desired())
    assert body["metadata"]["resourceVersion"] == "1"
    assert body["metadata"]["labels"] == {"team": "a", "app.kubernetes.io/managed-by": "rolecall"}
    assert body["metadata"]["annotations"]["reloader"] == "x"
    assert body["data"] == {"k": "bmV3"}


def test_differs_sees_data_labels_annotations_and_owner() -> None:
    want = desired()
    same = copy.deepcopy(want)
    assert not differs(same, want)
    for change in (
        lambda s: s["data"].update(k="eA=="),
        lambda s: s["metadata"]["labels"].clear(),
        lambda s: s["metadata"]["annotations"].clear(),
        lambda s: s["metadata"].update(ownerReferences=[]),
    ):
        edited = copy.deepcopy(want)
        change(edited)
        assert differs(edited, want)


class FakeSecrets:
    """An API server's Secret semantics: UIDs, resourceVersions, 409s, delete preconditions.
    ``before`` hooks let a test act as a concurrent tenant between the writer's calls."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self._rv = itertools.count(10)
        self._uid = itertools.count(1)
        self.before: dict[str, Callable[[], None]] = {}

    def _hook(self, verb: str) -> None:
        hook = self.before.pop(verb, None)
        if hook is not None:
            hook()

    def put_foreign(self, owner: str | None = None) -> None:
        body = secret(uid=f"foreign-{next(self._uid)}", owner=owner)
        body["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects["s3"] = body

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._hook("get")
        found = self.objects.get(name)
        return copy.deepcopy(found) if found else None

    def create_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        self._hook("create")
        name = body["metadata"]["name"]
        if name in self.objects:
            raise AlreadyExists(409, "AlreadyExists", f"secrets {name!r} already exists")
        stored = copy.deepcopy(body)
        stored["metadata"].update(uid=f"sec-{next(self._uid)}", resourceVersion=str(next(self._rv)))
        self.objects[name] = stored
        return copy.deepcopy(stored)

    def replace_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        self._hook("replace")
        name = body["metadata"]["name"]
        current = self.objects.get(name)
        if current is None:
            raise NotFound(404, "NotFound", name)
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        stored = copy.deepcopy(body)
        stored["metadata"].update(uid=current["metadata"]["uid"], resourceVersion=str(next(self._rv)))
        self.objects[name] = stored
        return copy.deepcopy(stored)

    def delete_secret(
        self, namespace: str, name: str, uid: str | None = None, resource_version: str | None = None
    ) -> bool:
        self._hook("delete")
        current = self.objects.get(name)
        if current is None:
            return False
        if (uid and uid != current["metadata"]["uid"]) or (
            resource_version and resource_version != current["metadata"]["resourceVersion"]
        ):
            raise Conflict(409, "Conflict", "Precondition failed")
        del self.objects[name]
        return True


async def direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def writer(api: FakeSecrets) -> SecretWriter:
    return SecretWriter(api, direct)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_creates_when_absent() -> None:
    api = FakeSecrets()
    written = run(writer(api).write(desired(), None, "ar-1"))
    assert written["metadata"]["ownerReferences"][0]["uid"] == "ar-1"


def test_a_foreign_secret_created_during_the_sts_call_is_never_overwritten() -> None:
    api = FakeSecrets()
    api.before["create"] = lambda: api.put_foreign(owner=None)  # the tenant wins the race
    with pytest.raises(SecretTaken):
        run(writer(api).write(desired(), None, "ar-1"))
    assert api.objects["s3"]["data"] == {"k": "dg=="}, "the tenant's data must survive"


def test_two_bindings_naming_one_secret_the_first_owner_keeps_it() -> None:
    api = FakeSecrets()
    run(writer(api).write(desired("ar-1"), None, "ar-1"))
    with pytest.raises(SecretTaken):
        run(writer(api).write(desired("ar-2"), None, "ar-2"))
    assert api.objects["s3"]["metadata"]["ownerReferences"][0]["uid"] == "ar-1"


def test_after_a_conflict_the_owner_is_checked_again() -> None:
    api = FakeSecrets()
    first = run(writer(api).write(desired(), None, "ar-1"))

    # between our read and our PUT the tenant deletes it and creates their own under the name
    def swap() -> None:
        del api.objects["s3"]
        api.put_foreign(owner=None)

    api.before["replace"] = swap
    with pytest.raises(SecretTaken):
        run(writer(api).write(desired(), first, "ar-1", first["metadata"]["uid"]))
    assert "foreign" in api.objects["s3"]["metadata"]["uid"]


def test_a_conflict_on_our_own_secret_is_retried_on_a_fresh_read() -> None:
    api = FakeSecrets()
    first = run(writer(api).write(desired(), None, "ar-1"))
    api.before["replace"] = lambda: api.objects["s3"]["metadata"].update(resourceVersion="99")
    written = run(writer(api).write(desired(), first, "ar-1"))
    assert written["data"] == {"k": "bmV3"}


def test_delete_only_what_is_ours_and_unchanged() -> None:
    api = FakeSecrets()
    api.put_foreign(owner=None)
    assert run(writer(api).delete(NS, "s3", "ar-1")) is False
    assert "s3" in api.objects, "a foreign Secret is never deleted"
    api.objects.clear()
    run(writer(api).write(desired(), None, "ar-1"))

    # replaced by a foreign Secret between our read and our DELETE: the precondition saves it
    def swap() -> None:
        del api.objects["s3"]
        api.put_foreign(owner=None)

    api.before["delete"] = swap
    assert run(writer(api).delete(NS, "s3", "ar-1")) is False
    assert "foreign" in api.objects["s3"]["metadata"]["uid"]
