"""The Prometheus text exposition (and OpenMetrics): a streaming filter with cached verdicts
per sample name, family and label set."""
