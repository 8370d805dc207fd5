"""The test suite, a package so every test imports its helpers as `tests.<module>`."""
