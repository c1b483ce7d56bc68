"""What a Kafka cluster keeps: the retention of journeylake's topics, for erasure's record.

A topic cannot be rewritten without the person's records, so what erasure can promise about
Kafka is the date by which retention deletes them. This reads each topic's ``retention.ms``
(the cluster's own value, whoever created the topic) and says it in words.
"""

from __future__ import annotations

import datetime as dt

from pipelines.config import Config

KEEP_FOREVER = -1  # retention.ms of a topic that never deletes by age


def topic_retention(cfg: Config, timeout: float = 10.0, prefix: str | None = None) -> dict[str, int]:
    """retention.ms per topic under ``prefix`` (``kafka.topic_prefix`` when None; Kafka's internal
    ``__*`` topics never); raises when the cluster cannot be asked."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    from pipelines.lakehouse.bronze import kafka_options

    admin = AdminClient(
        {"bootstrap.servers": cfg.kafka.bootstrap_servers, **kafka_options(cfg), "log_level": 0}
    )
    start = cfg.kafka.topic_prefix if prefix is None else prefix
    topics = sorted(
        t for t in admin.list_topics(timeout=timeout).topics if t.startswith(start) and not t.startswith("__")
    )
    if not topics:
        return {}
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics])
    out: dict[str, int] = {}
    for resource, future in futures.items():
        entry = future.result(timeout=timeout).get("retention.ms")
        out[resource.name] = (
            int(entry.value) if entry is not None and entry.value is not None else KEEP_FOREVER
        )
    return out


def retention_note(cfg: Config, now: dt.datetime) -> str:
    """One line for the erasure record: until when the person may still be in Kafka, and where."""
    try:
        retention = topic_retention(cfg)
    except Exception as exc:  # noqa: BLE001 - any failure to ask is reported, never hidden
        return (
            f"kafka: the topics' retention could not be read from {cfg.kafka.bootstrap_servers} "
            f"({str(exc).splitlines()[0][:200]}); records already in them stay until it deletes them"
        )
    if not retention:
        return f"kafka: no {cfg.kafka.topic_prefix}* topic on {cfg.kafka.bootstrap_servers}"
    forever = sorted(t for t, ms in retention.items() if ms < 0)
    if forever:
        return (
            f"kafka: {', '.join(forever)} keep records forever (retention.ms=-1): the person stays "
            f"there; set retention.ms (kafka.retention_days is {cfg.kafka.retention_days})"
        )
    longest = max(retention.values())
    until = (now + dt.timedelta(milliseconds=longest)).date().isoformat()
    return (
        f"kafka: records already in {len(retention)} topic(s) leave with their retention, "
        f"at most {longest / 86_400_000:g} days (by {until})"
    )
