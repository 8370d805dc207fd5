"""Tail sampling: its parts one by one (real files, real loopback servers), then the sampler process end to end."""
