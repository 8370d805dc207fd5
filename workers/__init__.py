"""Worker processes: the gunicorn/Falcon HTTP workers (and, later, the tail worker)."""
