"""edge: a telemetry policy proxy."""

__version__ = "0.1.0"
