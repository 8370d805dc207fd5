"""What crosses process boundaries inside one edge instance: policy snapshots (shared memory
with a generation counter), match statistics (a spool directory), rate-limit windows (a
shared table), and the run directory that names them all for the workers."""
