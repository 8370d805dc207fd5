"""edge-tail: tail files or stdin through the policy engine (see `edge.tail.pipeline`)."""
