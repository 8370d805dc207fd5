"""Tail sampling: its parts one by one, then the sampler process end to end."""
