"""Datadog logs (JSON array) and v2 series (JSON or the agent's protobuf): batch views and the body codec."""
