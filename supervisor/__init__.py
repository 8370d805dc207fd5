"""The supervisor process: config, policy providers, snapshot compilation and publication, gunicorn."""
