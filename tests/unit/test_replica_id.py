"""A replica's worker id in the lease table (esm.leases.replica_id)."""

from __future__ import annotations

from esm.leases import replica_id


def test_the_pod_name_with_a_random_suffix() -> None:
    first, second = replica_id({"POD_NAME": "esm-7d9f-abcde"}), replica_id({"POD_NAME": "esm-7d9f-abcde"})
    assert first.startswith("esm-7d9f-abcde-")
    assert second.startswith("esm-7d9f-abcde-")
    assert first != second  # a restarted pod with the same name is a new worker


def test_the_explicit_name_wins_then_the_pod_name_then_the_host_name() -> None:
    assert replica_id({"ESM_REPLICA_NAME": "a", "POD_NAME": "b", "HOSTNAME": "c"}).rsplit("-", 1)[0] == "a"
    assert replica_id({"POD_NAME": "b", "HOSTNAME": "c"}).rsplit("-", 1)[0] == "b"
    assert replica_id({"HOSTNAME": "c"}).rsplit("-", 1)[0] == "c"
    assert replica_id({}).rsplit("-", 1)[0] == "esm"
