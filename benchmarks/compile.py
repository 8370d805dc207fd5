"""Policy compile + publish time and peak memory as the policy set grows.

    python benchmarks/compile.py [--max 10000] [--sets mixed,regex,exact,starts_with]
                                 [--timeout 120] [--repeat 1]

For N = 10, 100, 1,000, 10,000 (up to `--max`) generates a policy set and measures what
the supervisor does before workers see a new policy set: `compile_policies` plus the
serialisation `SnapshotPublisher.publish` writes to shared memory (`Snapshot.to_bytes`).
The `load` column is what each worker then does once per snapshot (`Snapshot.from_bytes`
plus loading every Hyperscan database), reported for completeness.

Sets:
  mixed        regex, contains, exact, starts_with and ends_with on the log body,
               severity and attributes; some case-insensitive, some negated, some
               policies with two matchers, as hand-written policy sets look
  regex        one regex per policy on the body
  exact        one `exact` value per policy on one attribute (allow/deny lists)
  starts_with  one `starts_with` prefix per policy on the body (route prefixes)

Every (set, N) runs in a child process so its peak RSS is its own, and a child that
exceeds `--timeout` seconds is stopped and reported as such: the benchmark is bounded.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = (10, 100, 1_000, 10_000)
WORDS = ["timeout", "refused", "checkout", "payment", "cart", "login", "token", "retry", "upstream",
         "shard", "replica", "cache", "queue", "worker", "tenant", "invoice", "search", "export"]
ATTRIBUTES = ["http.route", "tenant", "user.id", "k8s.pod.name", "error.type"]
SEVERITIES = ["DEBUG", "INFO", "WARN", "ERROR", "FATAL", "TRACE", "NOTICE"]


# Shapes of regexes as log policies write them; `i` keeps every pattern distinct. Some take
# in whitespace (`\s`) or "anything but" classes, which can span lines, most do not.
REGEX_SHAPES = [
    "{w}-{i}[0-9]+ failed",
    "^(GET|POST) /api/v{m}/{w}/\\d+",
    "{w}\\s+after\\s+\\d{{2,4}}ms \\(id={i}\\)",
    "user_id=\\d+ {w}_{i}$",
    "[a-z]+@{w}{i}\\.example\\.com",
    "client=\\d{{1,3}}\\.\\d{{1,3}}\\.\\d{{1,3}}\\.{b} {w}",
    "{w}_id=[0-9a-f]{{8}}-[0-9a-f]{{4}}-{i:04x}",
    "\\b(ERROR|FATAL)\\b.*{w}{i}",
    "status=5\\d\\d path=/{w}/{i}",
    "{w}=[^ ]+ code={i}",
    "latency_ms=\\d{{4,}} {w}{i}",
]


def _regex(rng: random.Random, i: int) -> str:
    return rng.choice(REGEX_SHAPES).format(w=rng.choice(WORDS), i=i, m=i % 7, b=i % 256)


def _mixed_matcher(rng: random.Random, i: int) -> dict:
    """One matcher of a realistic hand-written policy: the kind, field and value vary with i."""
    kind = rng.choice(["regex", "regex", "contains", "contains", "exact", "starts_with", "ends_with"])
    field = rng.choice(["body", "body", "body", "severity", "attribute"])
    word = rng.choice(WORDS)
    if field == "severity":
        kind = rng.choice(["exact", "exact", "starts_with", "regex"])
        value = {"exact": rng.choice(SEVERITIES), "starts_with": rng.choice(SEVERITIES)[:2],
                 "regex": f"^({rng.choice(SEVERITIES)}|{rng.choice(SEVERITIES)})$"}[kind]
        selector = {"log_field": "severity_text"}
    else:
        value = {"regex": _regex(rng, i), "contains": f"{word} #{i}", "exact": f"{word}-{i}",
                 "starts_with": f"/{word}/{i}/", "ends_with": f" {word}={i}"}[kind]
        selector = {"log_field": "body"} if field == "body" else {"log_attribute": rng.choice(ATTRIBUTES)}
    matcher = {**selector, kind: value}
    if rng.random() < 0.2:
        matcher["case_insensitive"] = True
    if rng.random() < 0.05:
        matcher["negate"] = True
    return matcher


def make_policies(kind: str, count: int, seed: int = 11) -> dict:
    """A policy document of `count` generated policies of the given set."""
    rng = random.Random(seed)
    policies = []
    for i in range(count):
        if kind == "exact":
            match = [{"log_attribute": "tenant", "exact": f"tenant-{i:05d}"}]
        elif kind == "starts_with":
            match = [{"log_field": "body", "starts_with": f"GET /api/v{i % 9}/{rng.choice(WORDS)}/{i}"}]
        elif kind == "regex":
            match = [{"log_field": "body", "regex": _regex(rng, i)}]
        else:
            match = [_mixed_matcher(rng, i) for _ in range(2 if rng.random() < 0.3 else 1)]
        keep = rng.choice(["none", "none", "10%", "100/s", "all"])
        policies.append({"id": f"{kind}-{i:05d}", "log": {"match": match, "keep": keep}})
    return {"policies": policies}


def run_case(kind: str, count: int, repeat: int) -> dict:
    """Compile + serialise in this process; the best of `repeat` runs, and this process's peak RSS."""
    from edge.policy.compiler import compile_policies
    from edge.policy.loader import load_document
    from edge.policy.snapshot import Snapshot

    loaded = load_document(make_policies(kind, count))
    best_compile = best_publish = best_load = float("inf")
    size = 0
    for _ in range(repeat):
        started = time.perf_counter()
        snapshot = compile_policies(loaded.policies)
        compiled = time.perf_counter()
        data = snapshot.to_bytes()
        published = time.perf_counter()
        loaded_snapshot = Snapshot.from_bytes(data)
        for signal, plan in loaded_snapshot.plans.items():
            for key in plan.fields:
                loaded_snapshot.databases(signal, key)
        done = time.perf_counter()
        best_compile = min(best_compile, compiled - started)
        best_publish = min(best_publish, published - started)
        best_load = min(best_load, done - published)
        size = len(data)
    invalid = sum(1 for p in snapshot.policies if not p.valid)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"compile": best_compile, "publish": best_publish, "load": best_load, "bytes": size,
            "rss_mb": rss_mb, "invalid": invalid}


def _child(kind: str, count: int, repeat: int, timeout: float) -> dict | None:
    """Run one case in a fresh interpreter; None when it did not finish within `timeout`."""
    command = [sys.executable, __file__, "--case", f"{kind}:{count}", "--repeat", str(repeat)]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode:
        raise SystemExit(f"{kind}:{count} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max", type=int, default=10_000, help="largest policy count to run")
    parser.add_argument("--sets", default="mixed,regex,exact,starts_with")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one (set, N) may take")
    parser.add_argument("--repeat", type=int, default=1, help="compiles per case; the best is shown")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # set:N, run in this process (child mode)
    args = parser.parse_args()
    if args.case:
        kind, count = args.case.split(":")
        print(json.dumps(run_case(kind, int(count), args.repeat)))
        return 0
    print(f"{'set':12} {'policies':>8} {'compile s':>9} {'+publish s':>10} {'load s':>7} {'snapshot KB':>11} "
          f"{'peak RSS MB':>11} {'invalid':>7}")
    for kind in args.sets.split(","):
        for count in (n for n in SIZES if n <= args.max):
            result = _child(kind, count, args.repeat, args.timeout)
            if result is None:
                print(f"{kind:12} {count:8d} {'timeout (>' + format(args.timeout, 'g') + ' s)':>29}")
            else:
                print(f"{kind:12} {count:8d} {result['compile']:9.2f} {result['publish']:10.2f} "
                      f"{result['load']:7.2f} {result['bytes'] / 1024:11,.0f} {result['rss_mb']:11.0f} "
                      f"{result['invalid']:7d}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
