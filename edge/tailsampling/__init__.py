"""Tail sampling: whole-trace decisions taken by the sampler process after `decision_wait`.

The parts and who uses them are declared in `interfaces`; gunicorn and gRPC workers split
each filtered traces batch by trace id and hand the pieces to the sampler process, which
logs them to its write-ahead log, buffers them, decides, exports what is sampled and rolls
up what is not.
"""
