"""Tailed log lines (raw, JSON, logfmt) as a batch view for edge-tail."""
