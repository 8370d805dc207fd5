"""OTLP logs, metrics and traces: JSON views over orjson dicts, protobuf views over upb messages,
and `body`, which turns request bytes into a view, evaluates it and encodes what is left."""
