"""`edge-policy`: apply policies to one OTLP batch offline, and check policy files.

`eval` is also how the conformance harness drives the engine: with `--server` it performs
one sync to fetch policies, evaluates, and a final sync reporting match statistics and errors.
The texts a user reads (`--help`, messages) live here; what the engine does lives elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from edge import __version__
from edge.cli.sniff import encoding_of, json_signal
from edge.engine.engine import Engine
from edge.engine.stats import MatchStats
from edge.formats.errors import UndecodableBody
from edge.formats.otlp.body import evaluate_body
from edge.memory import tune_gc
from edge.policy.compiler import compile_policies
from edge.policy.loader import PolicyFileError, load_file
from edge.policy.snapshot import Snapshot
from edge.policy.sync import JSON, PROTOBUF, SyncClient, SyncError, statuses


def _fail(message: str, code: int = 2) -> int:
    print(f"edge-policy: {message}", file=sys.stderr)
    return code


def _stats_document(stats: MatchStats, errors: dict[str, list[str]]) -> dict:
    counts = stats.snapshot()
    rows = []
    for pid in sorted(set(counts) | set(errors)):
        c = counts.get(pid)
        hits, misses = (c.hits, c.misses) if c else (0, 0)
        if not (hits or misses or errors.get(pid)):
            continue
        row: dict = {"policy_id": pid, "hits": hits}
        if misses:
            row["misses"] = misses
        if errors.get(pid):
            row["errors"] = errors[pid]
        rows.append(row)
    return {"policies": rows}


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _write_output(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(path).write_bytes(data)


def _load(args: argparse.Namespace) -> tuple[Snapshot, SyncClient | None] | int:
    """The compiled policies (and the sync client in --server mode), or an exit status."""
    if args.server:
        client = SyncClient(args.server, wire=PROTOBUF if args.sync_format == "protobuf" else JSON,
                            timeout=args.timeout)
        try:
            result = client.sync([])
        except (SyncError, PolicyFileError) as exc:  # PolicyFileError: the answer repeats a policy id
            return _fail(str(exc), 1)
        return compile_policies(result.policies, version=result.hash, load_errors=result.decode_errors), client
    try:
        loaded = load_file(args.policies)
    except PolicyFileError as exc:
        return _fail(str(exc))
    return compile_policies(loaded.policies, load_errors=loaded.errors), None


def _report_invalid(snapshot: Snapshot) -> bool:
    """Print every load and compile error to stderr; True when there was any."""
    problems = list(snapshot.load_errors)
    problems += [f"policy {pid}: {message}" for pid, messages in snapshot.errors().items() for message in messages]
    for message in problems:
        print(f"edge-policy: {message}", file=sys.stderr)
    return bool(problems)


def _check_input(args: argparse.Namespace, body: bytes) -> str | int:
    """The input's encoding (`json` or `protobuf`), or exit status 2 for protobuf bound for a terminal."""
    encoding = args.format or encoding_of(body)
    if encoding == "protobuf" and args.format is None and args.output == "-" and sys.stdout.isatty():
        return _fail("refusing to write protobuf to a terminal; use --output FILE, redirect stdout, "
                     "or pass --format protobuf")
    if encoding == "json":
        found = json_signal(body)
        if found is not None and found != args.signal:
            print(f"edge-policy: warning: the input is an OTLP {found} batch but --signal is {args.signal}; "
                  f"no {args.signal} policy applies to it", file=sys.stderr)
    return encoding


def _final_sync(client: SyncClient, engine: Engine, snapshot: Snapshot) -> int:
    drained = engine.stats.drain()
    try:
        client.sync(statuses(drained, snapshot.errors()))
    except SyncError as exc:
        engine.stats.merge(drained)
        return _fail(f"final sync failed: {exc}", 1)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    tune_gc()
    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    snapshot, client = loaded
    engine = Engine(snapshot)
    if _report_invalid(snapshot) and not args.allow_invalid:
        print("edge-policy: invalid policies; fix them, or pass --allow-invalid to evaluate with the valid ones",
              file=sys.stderr)
        if client is not None:
            _final_sync(client, engine, snapshot)  # the server hears about the errors either way
        return 1
    try:
        body = _read_input(args.input)
    except OSError as exc:
        return _fail(f"{args.input}: {exc.strerror or exc}")
    encoding = _check_input(args, body)
    if isinstance(encoding, int):
        return encoding
    try:
        output = evaluate_body(engine, args.signal, body, PROTOBUF if encoding == "protobuf" else JSON)
    except UndecodableBody as exc:
        print(f"edge-policy: {exc}; passing the input through unchanged", file=sys.stderr)
        output = body
    try:
        _write_output(args.output, output)
        if args.stats:
            Path(args.stats).write_bytes(orjson.dumps(_stats_document(engine.stats, snapshot.errors()),
                                                      option=orjson.OPT_INDENT_2))
    except OSError as exc:
        return _fail(f"cannot write: {exc}")
    return _final_sync(client, engine, snapshot) if client is not None else 0


def _validate_file(name: str) -> bool:
    """Print every problem of one file (or its OK line); True when it has none."""
    try:
        loaded = load_file(name)
    except PolicyFileError as exc:
        print(f"{exc}")
        return False
    snapshot = compile_policies(loaded.policies)
    problems = [f"{name}: {message}" for message in loaded.errors]
    problems += [f"{name}: policy {policy.id}: {error}" for policy in snapshot.policies for error in policy.errors]
    for line in problems:
        print(line)
    if not problems:
        print(f"{name}: {len(snapshot.policies)} policies OK")
    return not problems


def cmd_validate(args: argparse.Namespace) -> int:
    results = [_validate_file(name) for name in args.files]
    return 0 if all(results) else 1


DESCRIPTION = """\
Apply telemetry policies to one OTLP batch offline (eval), or check policy files (validate).
Policy files are JSON or YAML holding {"policies": [...]}; see docs/policies.md."""

EXAMPLES = """\
examples:
  edge-policy validate policies.yaml
  edge-policy eval --policies policies.yaml --signal logs --input batch.json
  edge-policy eval --policies policies.json --signal traces --input spans.pb --output kept.pb
  cat batch.json | edge-policy eval --policies policies.json --signal logs --input - --stats stats.json
  edge-policy eval --server http://127.0.0.1:9000/v1/policy/sync --signal metrics --input m.json

exit status: 0 success, 1 invalid policies (eval, validate) or a failed sync, 2 bad usage or unreadable files"""

EVAL_DESCRIPTION = """\
Evaluate one OTLP batch (JSON or protobuf) with the policies of a file or of a policy server and
write what is left. Every policy error is printed on stderr; any invalid policy makes eval exit 1
without evaluating, unless --allow-invalid is given (invalid policies then never match)."""

_SIGNAL_NAMES = {"log": "log", "logs": "log", "metric": "metric", "metrics": "metric",
                 "trace": "trace", "traces": "trace"}


def _signal(text: str) -> str:
    try:
        return _SIGNAL_NAMES[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"invalid signal {text!r}; choose logs, metrics or traces") from None


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="apply policies to one OTLP batch", description=EVAL_DESCRIPTION,
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--policies", metavar="FILE", help="policy file (JSON or YAML)")
    source.add_argument("--server", metavar="URL", help="policy sync URL: fetch once, report statistics at exit")
    ev.add_argument("--signal", required=True, type=_signal, metavar="SIGNAL",
                    help="logs, metrics or traces (log, metric, trace also work)")
    ev.add_argument("--input", required=True, metavar="FILE", help="OTLP batch file, - for stdin")
    ev.add_argument("--output", default="-", metavar="FILE", help="where the filtered batch goes (default: stdout)")
    ev.add_argument("--stats", metavar="FILE", help="write match statistics here (JSON)")
    ev.add_argument("--format", choices=("json", "protobuf"),
                    help="OTLP encoding of input and output (default: guessed from the input)")
    ev.add_argument("--allow-invalid", action="store_true",
                    help="evaluate with the valid policies even when some are invalid (errors are still printed)")
    ev.add_argument("--sync-format", choices=("json", "protobuf"), default="json",
                    help="wire format of the policy server (default: json)")
    ev.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                    help="policy server timeout (default: 10)")
    ev.set_defaults(run=cmd_eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-policy", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edge-policy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{eval,validate}")
    _eval_parser(sub)
    va = sub.add_parser("validate", help="check policy files; exit 1 when any policy has errors",
                        description="Check policy files: print every problem, or one OK line per file.",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    va.add_argument("files", nargs="+", metavar="FILE")
    va.set_defaults(run=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
