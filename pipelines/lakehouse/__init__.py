"""The lakehouse's streaming stages: landing -> bronze -> silver -> gold, their quality gates and writes."""
