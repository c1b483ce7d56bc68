"""Local services and the Spark session: jars, metastore, Kafka broker, SQL endpoint."""
