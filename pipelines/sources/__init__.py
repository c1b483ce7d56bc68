"""Where events come from: the event contracts' producers (the bank simulator, Kafka)."""
