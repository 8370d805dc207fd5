"""deploy/sidecar/pod.yaml: a valid Kubernetes Pod whose edge-tail container works as configured.

The manifest is validated against the Kubernetes API's own JSON schemas (the
`kubernetes-validate` package bundles them; strict: an unknown or misspelt field fails),
then its sidecar's essentials are checked (the shared volume, the downward API, resources,
the non-root read-only container with a writable state dir), and finally the real
`edge-tail` runs with the container's environment, as the kubelet would set it, and
forwards a log line with the resource the manifest promises.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from edge.tail.multiline import Multiline
from edge.tail.settings import from_command_line
from tests.proxy_fixtures import RecordingUpstream
from tests.tail.tail_helpers import REPO, Tailer, clean_env, wait_until, write_lines
from tests.tail.test_parsed_records import records

MANIFEST = REPO / "deploy" / "sidecar" / "pod.yaml"
KUBERNETES_VERSION = "1.30"  # the oldest release still in common use that the manifest targets
DOWNWARD = {"metadata.name": "checkout-7d9f", "metadata.namespace": "shop"}  # what the kubelet fills in


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def environment(pod: dict[str, Any]) -> dict[str, str]:
    """The sidecar's environment as the kubelet sets it: literal values and the downward API's."""
    out = {}
    for item in container(pod, "edge-tail")["env"]:
        out[item["name"]] = item["value"] if "value" in item else DOWNWARD[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return out


def test_the_manifest_is_a_valid_pod_for_the_kubernetes_api(pod: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    broken = yaml.safe_load(MANIFEST.read_text())
    container(broken, "edge-tail")["resources"]["limit"] = {"cpu": "1"}  # a typo the API server would refuse
    with pytest.raises(kubernetes_validate.ValidationError, match="'limit' was unexpected"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_sidecar_shares_the_log_volume_and_runs_unprivileged_on_a_small_budget(pod: dict[str, Any]) -> None:
    app, tail = container(pod, "app"), container(pod, "edge-tail")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    app_mounts = {m["name"]: m for m in app["volumeMounts"]}
    tail_mounts = {m["name"]: m for m in tail["volumeMounts"]}
    shared = set(app_mounts) & set(tail_mounts)
    assert shared and all("emptyDir" in volumes[name] for name in shared)
    assert tail["resources"] == {"requests": {"cpu": "25m", "memory": "64Mi"},
                                 "limits": {"cpu": "100m", "memory": "128Mi"}}
    security = tail["securityContext"]
    assert security["runAsUser"] == 10001 and security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    env = environment(pod)
    state = next(m for m in tail["volumeMounts"] if m["mountPath"] == env["TERO_STATE_DIR"])
    assert not state.get("readOnly") and "emptyDir" in volumes[state["name"]]  # the one writable path
    assert pod["spec"]["securityContext"]["fsGroup"] == 10001  # which the emptyDir is made writable for
    logs = os.path.dirname(env["LOG_PATHS"])
    assert any(m["mountPath"] == logs for m in app["volumeMounts"] if m["name"] in shared)
    fields = {i["name"]: i["valueFrom"]["fieldRef"]["fieldPath"] for i in tail["env"] if "valueFrom" in i}
    assert fields == {"POD_NAME": "metadata.name", "NAMESPACE": "metadata.namespace"}


def test_edge_tail_reads_the_containers_environment_as_intended(pod: dict[str, Any]) -> None:
    env = environment(pod)
    settings = from_command_line([], env=env)
    assert settings.paths == (env["LOG_PATHS"],)
    assert settings.forward_url == env["GATEWAY_URL"] + "/v1/logs"
    assert (settings.format, settings.read_from, settings.state_dir) == ("auto", "checkpoint", "/var/lib/edge-tail")
    assert (settings.batch_lines, settings.batch_interval_ms, settings.max_buffer_records) == (1000, 1000, 4000)
    assert (settings.max_retries, settings.retry_backoff_ms, settings.http_timeout_s) == (10, 100, 30)
    assert not settings.no_trace_correlation
    Multiline.compile(settings.multiline_start, settings.multiline_timeout_ms)  # RE2 takes the pattern


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def test_the_real_edge_tail_forwards_with_the_manifests_environment(pod: dict[str, Any], tmp_path: Path,
                                                                   upstream: RecordingUpstream) -> None:
    """The container's variables, with the volume paths and the gateway moved to this machine."""
    logs = tmp_path / "var-log-app"
    logs.mkdir()
    env = environment(pod) | {"LOG_PATHS": str(logs / "*.log"), "GATEWAY_URL": upstream.url,
                              "TERO_STATE_DIR": str(tmp_path / "state")}
    write_lines(logs / "app.log", ['{"level": "error", "msg": "card declined"}', "2024-05-01 12:00:00 boom",
                                   "  at checkout.pay"])
    with Tailer(tmp_path, [], env=clean_env(**env)) as tailer:
        write_lines(logs / "app.log", ["2024-05-01 12:00:01 next"])  # ends the multi-line record before it
        assert wait_until(lambda: len(records(upstream)) >= 2), tailer.stderr()
        tailer.stop()
    got = records(upstream)[:2]  # a third, "next", follows once its multi-line timeout passes
    assert [(r.body.string_value, r.severity_text) for r in got] == [
        ("card declined", "error"), ("2024-05-01 12:00:00 boom\n  at checkout.pay", "")]
    assert resources(upstream) == [{"service.name": "checkout", "k8s.pod.name": "checkout-7d9f",
                                    "k8s.namespace.name": "shop"}]


def resources(upstream: RecordingUpstream) -> list[dict[str, str]]:
    """The distinct resources of the requests received."""
    out: list[dict[str, str]] = []
    for request in upstream.received("/v1/logs"):
        message = ExportLogsServiceRequest.FromString(gzip.decompress(request.body))
        for resource_logs in message.resource_logs:
            attributes = {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes}
            if attributes not in out:
                out.append(attributes)
    return out
