"""Erasure in the online store (a real redis-server): every form of a person's ids goes."""

from __future__ import annotations


def test_erasing_a_customer_removes_every_id_leading_to_them_whatever_its_form(
    online_store, jl_config
) -> None:
    from pipelines.serving.store import IDS, StoreWriter, connect

    client = connect(jl_config)
    writer = StoreWriter(client, jl_config.online_store.contact_history_days)
    theirs = {
        "CERASE1": "CERASE1",
        "obERASE1": "CERASE1",
        "device_id:DERASE1": "CERASE1",  # gold.identity_map's typed key, not named by the request
        "UC-ERASE1": "CERASE1",
    }
    others = {"CERASE2": "CERASE2", "device_id:DERASE2": "CERASE2"}
    writer.put_identities([*theirs.items(), *others.items()])
    removed = writer.erase(["CERASE1"], ["obERASE1"])
    assert removed["identities"] == len(theirs)
    assert client.hmget(IDS, list(theirs)) == [None] * len(theirs)
    assert [v.decode() for v in client.hmget(IDS, list(others))] == list(others.values())
    client.hdel(IDS, *others)
