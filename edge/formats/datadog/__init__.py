"""Datadog logs (JSON array) and v2 series (JSON): batch views and the body codec."""
