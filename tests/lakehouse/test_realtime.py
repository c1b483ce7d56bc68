"""The real-time lane (pipelines/realtime.py) on a real broker: Kafka in, trigger topic out.

The query runs on Spark's real-time trigger: one long-running task per partition that handles
each record as it arrives. It must publish well-formed transactions of the trigger types, keyed
by customer, and nothing else: not other types, not a malformed message, not a record missing
a required field.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.kafka

PREFIX = "rttest."


def _txn(event_id: str, customer: str, txn_type: str, **changes: object) -> str:
    record = {
        "event_id": event_id,
        "event_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "schema_version": 1,
        "customer_number": customer,
        "account_id": f"A-{customer}",
        "txn_type": txn_type,
        "amount": -12.5,
        "currency": "GBP",
        "merchant_category": None,
        "counterparty": "TEST",
        "balance_after": 40.0,
    }
    record.update(changes)
    return json.dumps(record)


def test_the_real_time_lane_publishes_trigger_transactions_and_nothing_else(
    spark, jl_config, kafka_broker, tmp_path
):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipelines.lakehouse.realtime import TRIGGERS_TOPIC, start_transaction_triggers

    cfg = jl_config.model_copy(
        update={
            "kafka": jl_config.kafka.model_copy(
                update={"bootstrap_servers": kafka_broker, "topic_prefix": PREFIX}
            )
        }
    )
    source, triggers = f"{PREFIX}transactions", f"{PREFIX}{TRIGGERS_TOPIC}"
    admin = AdminClient({"bootstrap.servers": kafka_broker, "log_level": 3})
    # one partition: real-time mode holds a task slot per partition for as long as it runs
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in (source, triggers)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": kafka_broker, "acks": "all", "log_level": 3})
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker,
            "group.id": "rttest",
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    consumer.subscribe([triggers])
    received: dict[str, tuple[bytes, dict]] = {}

    def send(key: str | None, value: str) -> None:
        producer.produce(source, value.encode(), key=key.encode() if key else None)
        producer.flush(10)

    def wait_for(event_id: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                body = json.loads(message.value())
                received[body["event_id"]] = (message.key(), body)
            if event_id in received:
                return True
        return False

    query = start_transaction_triggers(spark, cfg, tmp_path / "checkpoint")
    try:
        # the query reads from the latest offset once its task runs: probe until it answers
        for n in range(60):
            send("C-probe", _txn(f"probe-{n}", "C-probe", "salary", amount=2500.0))
            if wait_for(f"probe-{n}", 2.0):
                break
        else:
            pytest.fail(f"the real-time query published nothing within 2 minutes: {query.lastProgress}")
        received.clear()
        send("C1", _txn("rt-failed", "C1", "failed_payment"))
        send("C1", _txn("rt-purchase", "C1", "card_spend"))
        send(None, '{"event_id": "rt-broken", ')
        send("C2", _txn("rt-no-account", "C2", "fee", account_id=None))
        send("C2", _txn("rt-fee", "C2", "fee", amount=-5.0))
        send("C3", _txn("rt-last", "C3", "salary", amount=1800.0))  # one partition: after all the others
        assert wait_for("rt-last", 60), f"no trigger within a minute; got {sorted(received)}"
    finally:
        query.stop()
        consumer.close()

    assert sorted(received) == ["rt-failed", "rt-fee", "rt-last"]
    key, body = received["rt-failed"]
    assert key == b"C1"
    assert body["customer_number"] == "C1" and body["account_id"] == "A-C1"
    assert body["trigger"] == "failed_payment" and body["amount"] == -12.5
    assert body["produced_at"] is not None  # the broker's timestamp: where the latency clock starts
    assert received["rt-fee"][1]["trigger"] == "fee" and received["rt-last"][0] == b"C3"
