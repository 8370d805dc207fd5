"""Generated protobuf code lives here; regenerate with ``python -m edge.proto.generate``."""
