"""journeylake streaming pipelines: sources -> bronze -> silver -> gold -> decisions."""

__version__ = "0.1.0"
