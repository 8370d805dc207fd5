"""`edge-lambda`: edge as an AWS Lambda extension serving the Datadog routes on 127.0.0.1.

Process model: one process, no gunicorn, no supervisor. The ASGI app every worker runs
(`edge.protocols.app`, distribution `datadog`) is served by uvicorn in a thread of this
process; snapshots, match statistics and rate-limit windows stay in memory
(`runtime.LocalRuntime`). Why not the supervisor plus one gunicorn worker:

- Lambda has no `/dev/shm`, and the supervisor hands snapshots and rate-limit windows to
  workers through POSIX shared memory;
- one process instead of three (supervisor, gunicorn master, worker) saves tens of MB in
  functions that may have 128 MB, and a cold start imports edge once instead of twice;
- flushing on an INVOKE event is a function call, not a signal or a private HTTP route.

Policy providers do not run their own threads here (`policies.EventDrivenPolicies`): a
Lambda environment is frozen between invocations, and a sync frozen halfway through fails
on thaw. They are driven by the Extensions API events instead (`main`): loaded at start,
refreshed on INVOKE when due, and a final sync reports the last statistics on SHUTDOWN.
"""
