"""The HTTP side of the proxy: routes, content encodings, upstream forwarding and metrics.

`edge.protocols.app.create_app(runtime)` builds the Falcon ASGI application that each
gunicorn worker serves (see `workers/app.py`).
"""
