"""`edge-policy`: evaluate OTLP batches offline and validate policy files.

    edge-policy eval --policies P.json --input I.json --output O.json --stats S.json --signal log
    edge-policy eval --server URL/v1/policy/sync --input I.json --output O.json --signal log
    edge-policy validate FILE...

`eval` is the conformance runner interface: in `--server` mode it performs one sync to
fetch policies, evaluates, and a final sync reporting match statistics and errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from edge.engine.engine import Engine
from edge.engine.stats import MatchStats
from edge.formats.errors import UndecodableBody
from edge.formats.otlp.body import evaluate_body
from edge.memory import tune_gc
from edge.policy.compiler import compile_policies
from edge.policy.loader import PolicyFileError, load_file
from edge.policy.sync import JSON, PROTOBUF, SyncClient, SyncError, statuses

SIGNALS = ("log", "metric", "trace")


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


def cmd_eval(args: argparse.Namespace) -> int:
    tune_gc()
    content_type = PROTOBUF if args.format == "protobuf" else JSON
    client = None
    if args.server:
        client = SyncClient(args.server, wire=PROTOBUF if args.sync_format == "protobuf" else JSON,
                            timeout=args.timeout)
        try:
            result = client.sync([])
        except (SyncError, PolicyFileError) as exc:  # PolicyFileError: the answer repeats a policy id
            return _fail(str(exc), 1)
        snapshot = compile_policies(result.policies, version=result.hash, load_errors=result.decode_errors)
    else:
        try:
            loaded = load_file(args.policies)
        except PolicyFileError as exc:
            return _fail(str(exc))
        snapshot = compile_policies(loaded.policies, load_errors=loaded.errors)
    for message in snapshot.load_errors:
        print(f"edge-policy: {message}", file=sys.stderr)
    try:
        body = _read_input(args.input)
    except OSError as exc:
        return _fail(f"{args.input}: {exc.strerror or exc}")
    engine = Engine(snapshot)
    try:
        output = evaluate_body(engine, args.signal, body, content_type)
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
    if client is not None:
        drained = engine.stats.drain()
        try:
            client.sync(statuses(drained, snapshot.errors()))
        except SyncError as exc:
            engine.stats.merge(drained)
            return _fail(f"final sync failed: {exc}", 1)
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-policy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="apply policies to one OTLP batch")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--policies", help="policy file (JSON or YAML)")
    source.add_argument("--server", help="policy sync URL (fetch once, report stats at exit)")
    ev.add_argument("--input", required=True, help="OTLP batch file, - for stdin")
    ev.add_argument("--output", required=True, help="where the filtered batch goes, - for stdout")
    ev.add_argument("--stats", help="write match statistics here (JSON)")
    ev.add_argument("--signal", required=True, choices=SIGNALS)
    ev.add_argument("--format", choices=("json", "protobuf"), default="json", help="OTLP encoding of input/output")
    ev.add_argument("--sync-format", choices=("json", "protobuf"), default="json", help="sync wire format")
    ev.add_argument("--timeout", type=float, default=10.0, help="sync timeout in seconds")
    ev.set_defaults(run=cmd_eval)
    va = sub.add_parser("validate", help="check policy files; exit 1 when any policy has errors")
    va.add_argument("files", nargs="+")
    va.set_defaults(run=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
