"""The Helm chart (deploy/helm/edge), rendered by the real `helm` binary and read back as objects.

`helm` comes from `$HELM`, the PATH or `.ci/bin/helm` (which `.ci/run` installs). Without it
the tests skip, unless `EDGE_REQUIRE_HELM=1` (set by `.ci/run`) turns the skip into a failure.
Each render is one subprocess (~50 ms), so renders are shared by module-scoped fixtures.
The rendered edge config and policies are loaded with edge's own loaders, and the tail
sidecar's arguments are parsed by edge-tail's own command-line parser.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import edge
from edge.config import load as load_config
from edge.policy.loader import load_document
from edge.tailsampling.membership import DnsMembers
from edge.tailsampling.peers import peers_from_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "edge"
NAMESPACE = "observability"
RELEASE = "rel"
FULLNAME = "rel-edge"

POLICIES = [{"id": "drop-debug", "name": "Drop debug logs",
             "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}}]

# Daemonset mode with most options on: chart Secret, policies, tail sidecar, ServiceMonitor, extras.
DAEMONSET_FULL: dict[str, Any] = {
    "image": {"repository": "registry.example/edge", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "config": {"upstream_url": "http://collector.observability:4318", "log_level": "debug"},
    "policies": POLICIES,
    "tero": {"url": "https://policies.example/v1/policy/sync", "apiKey": "k-chart-secret", "pollInterval": 30},
    "tail": {"enabled": True, "batchLines": 500, "batchIntervalMs": 250, "forwardFormat": "json"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "extraEnv": [{"name": "EXTRA", "value": "1"}],
    "extraVolumes": [{"name": "certs", "secret": {"secretName": "edge-certs"}}],
    "extraVolumeMounts": [{"name": "certs", "mountPath": "/etc/certs", "readOnly": True}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["obs"]}]}]}}},
    "priorityClassName": "system-node-critical",
    "podAnnotations": {"team": "observability"},
    "podLabels": {"tier": "telemetry"},
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
}

# Gateway mode: an existing Secret, memory scaling, the tail worker DaemonSet.
GATEWAY_FULL: dict[str, Any] = {
    "mode": "gateway",
    "tero": {"url": "https://policies.example/v1/policy/sync", "existingSecret": "tero-credentials",
             "existingSecretKey": "token"},
    "gateway": {"autoscaling": {"maxReplicas": 6, "targetMemoryUtilizationPercentage": 80}},
    "tail": {"enabled": True},
    "serviceMonitor": {"enabled": True},
}

TAIL_POLICIES = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                 {"name": "baseline", "type": "probabilistic", "probabilistic": {"sampling_percentage": 5}}]

# Gateway mode with tail sampling: a StatefulSet, a WAL claim per pod, section keys under config.tail_sampling.
TAIL_SAMPLING: dict[str, Any] = {
    "mode": "gateway",
    "tailSampling": {"enabled": True, "policies": TAIL_POLICIES,
                     "wal": {"persistence": {"enabled": True, "size": "5Gi", "storageClass": "fast"}}},
    "config": {"tail_sampling": {"decision_wait": "10s", "peers": {"interval": "2s"}}},
    "serviceMonitor": {"enabled": True},
}


# ── helm ──


def find_helm() -> str | None:
    """$HELM, then the PATH, then what .ci/run installs."""
    candidates = [os.environ.get("HELM"), shutil.which("helm"), str(ROOT / ".ci" / "bin" / "helm")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def helm() -> str:
    found = find_helm()
    if found is None:
        reason = "helm not found ($HELM, PATH, .ci/bin/helm); .ci/run installs it"
        if os.environ.get("EDGE_REQUIRE_HELM") == "1":
            pytest.fail(f"EDGE_REQUIRE_HELM=1 but {reason}")
        pytest.skip(reason)
    return found


class StrictLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys (the API server rejects them too; PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def run_helm(helm: str, tmp: Path, command: str, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    values_file = tmp / f"values-{len(list(tmp.iterdir()))}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    argv = [helm, command]
    if command == "template":
        argv.append(RELEASE)
    argv += [str(CHART), "--namespace", NAMESPACE, "-f", str(values_file)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


class Rendered:
    """The objects of one `helm template`, looked up by kind (and component)."""

    def __init__(self, text: str) -> None:
        self.objects = [o for o in yaml.load_all(text, Loader=StrictLoader) if o]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind)
                 if component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component]
        assert len(found) == 1, f"expected one {kind} ({component}), got {len(found)}"
        return found[0]

    def workload(self) -> dict[str, Any]:
        """The DaemonSet, Deployment or StatefulSet that runs edge."""
        found = [o for o in self.objects if o["kind"] in ("DaemonSet", "Deployment", "StatefulSet")
                 and o["metadata"]["labels"]["app.kubernetes.io/component"] == "edge"]
        assert len(found) == 1
        return found[0]

    def pod(self) -> dict[str, Any]:
        return self.workload()["spec"]["template"]

    def container(self, name: str = "edge") -> dict[str, Any]:
        return next(c for c in self.pod()["spec"]["containers"] if c["name"] == name)

    def config_files(self) -> dict[str, str]:
        return self.one("ConfigMap")["data"]


@pytest.fixture(scope="module")
def render(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, Any]], Rendered]:
    tmp = tmp_path_factory.mktemp("helm")

    def rendered(values: dict[str, Any]) -> Rendered:
        result = run_helm(helm, tmp, "template", values)
        assert result.returncode == 0, result.stderr
        return Rendered(result.stdout)
    return rendered


@pytest.fixture(scope="module")
def default(render: Callable[[dict[str, Any]], Rendered]) -> Rendered:
    return render({})


@pytest.fixture(scope="module")
def daemonset(render: Callable[[dict[str, Any]], Rendered]) -> Rendered:
    return render(DAEMONSET_FULL)


@pytest.fixture(scope="module")
def gateway(render: Callable[[dict[str, Any]], Rendered]) -> Rendered:
    return render(GATEWAY_FULL)


@pytest.fixture(scope="module")
def tail_sampling(render: Callable[[dict[str, Any]], Rendered]) -> Rendered:
    return render(TAIL_SAMPLING)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["spec"]["volumes"]}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def load_rendered_config(rendered: Rendered, tmp_path: Path, env: dict[str, str]) -> Any:
    """Write the ConfigMap's files as the pod sees them and load config.json with edge's loader."""
    for name, text in rendered.config_files().items():
        (tmp_path / name).write_text(text)
    return load_config(tmp_path / "config.json", env=env)


# ── daemonset mode ──


def test_default_install_is_a_daemonset(default: Rendered) -> None:
    assert default.kinds() == ["ConfigMap", "DaemonSet", "ServiceAccount"]
    ds = default.workload()
    assert ds["kind"] == "DaemonSet" and ds["metadata"]["name"] == FULLNAME
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert selects(ds["spec"]["selector"]["matchLabels"], default.pod()["metadata"]["labels"])
    spec = default.pod()["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["serviceAccountName"] == default.one("ServiceAccount")["metadata"]["name"]
    assert [c["name"] for c in spec["containers"]] == ["edge"]


def test_daemonset_listens_on_a_host_port(default: Rendered) -> None:
    port, grpc = default.container()["ports"]
    assert port["name"] == "http" and port["containerPort"] == 8080 and port["hostPort"] == 8080
    assert grpc == {"name": "grpc", "containerPort": 4317, "hostPort": 4317, "protocol": "TCP"}
    assert "hostNetwork" not in default.pod()["spec"]


def test_probes_use_the_health_route(default: Rendered, gateway: Rendered) -> None:
    for rendered in (default, gateway):
        container = rendered.container()
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/_health", "port": "http"}


def test_config_is_mounted_at_etc_edge(default: Rendered, gateway: Rendered) -> None:
    for rendered in (default, gateway):
        container = rendered.container()
        assert container["args"] == ["/etc/edge/config.json"]
        mount = mounts_of(container)["/etc/edge"]
        assert mount["readOnly"] is True
        volume = volumes_of(rendered.pod())[mount["name"]]
        assert volume["configMap"]["name"] == rendered.one("ConfigMap")["metadata"]["name"]
        assert "config.json" in rendered.config_files()


def test_pods_run_non_root_on_a_read_only_root(default: Rendered) -> None:
    pod_security = default.pod()["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] > 0
    container = default.container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The supervisor's run directory lives in /tmp and policy snapshots in /dev/shm: both must be writable.
    volumes = volumes_of(default.pod())
    mounts = mounts_of(container)
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert not mounts["/tmp"].get("readOnly") and not mounts["/dev/shm"].get("readOnly")


def test_workers_follow_the_cpu_limit(default: Rendered, render: Callable[[dict[str, Any]], Rendered]) -> None:
    workers = env_of(default.container())["TERO_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert workers == {"containerName": "edge", "resource": "limits.cpu", "divisor": "1"}
    pinned = render({"config": {"workers": 3}})
    assert "TERO_WORKERS" not in env_of(pinned.container())  # the env would override the file's value


# ── config, policies and the policy server ──


def test_rendered_config_loads_with_edges_loader(daemonset: Rendered, tmp_path: Path) -> None:
    config = load_rendered_config(daemonset, tmp_path, env={"TERO_API_KEY": "k-from-secret"})
    assert (config.listen_address, config.listen_port) == ("0.0.0.0", 8080)
    assert config.upstream_url == "http://collector.observability:4318" and config.log_level == "debug"
    assert daemonset.container()["ports"][0]["containerPort"] == config.listen_port
    providers = {p.id: p for p in config.policy_providers}
    assert providers["chart-policies"].type == "file"
    assert providers["chart-policies"].path == "/etc/edge/policies.json"
    tero = providers["tero"]
    assert (tero.type, tero.url, tero.poll_interval) == ("http", "https://policies.example/v1/policy/sync", 30.0)
    assert tero.headers == (("Authorization", "Bearer k-from-secret"),)
    policies = load_document(yaml.safe_load(daemonset.config_files()["policies.json"]))
    assert policies.errors == [] and [p.id for p in policies.policies] == ["drop-debug"]


def test_defaults_load_without_providers(default: Rendered, tmp_path: Path) -> None:
    assert set(default.config_files()) == {"config.json"}
    config = load_rendered_config(default, tmp_path, env={})
    assert config.policy_providers == () and config.warnings == ()


def test_api_key_from_the_charts_secret(daemonset: Rendered) -> None:
    secret = daemonset.one("Secret")
    assert base64.b64decode(secret["data"]["api-key"]).decode() == "k-chart-secret"
    ref = env_of(daemonset.container())["TERO_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "api-key"}
    assert "checksum/secret" in daemonset.pod()["metadata"]["annotations"]


def test_api_key_from_an_existing_secret(gateway: Rendered, tmp_path: Path) -> None:
    assert gateway.all("Secret") == []
    ref = env_of(gateway.container())["TERO_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "tero-credentials", "key": "token"}
    config = load_rendered_config(gateway, tmp_path, env={"TERO_API_KEY": "existing"})
    assert config.policy_providers[0].headers == (("Authorization", "Bearer existing"),)


def test_policy_server_without_a_key_sends_no_header(render: Callable[[dict[str, Any]], Rendered],
                                                     tmp_path: Path) -> None:
    rendered = render({"tero": {"url": "https://policies.example/sync"}})
    assert "TERO_API_KEY" not in env_of(rendered.container()) and rendered.all("Secret") == []
    (tero,) = load_rendered_config(rendered, tmp_path, env={}).policy_providers
    assert tero.headers == ()


def test_config_checksum_rolls_pods_only_when_config_changes(
        default: Rendered, render: Callable[[dict[str, Any]], Rendered]) -> None:
    def checksum(rendered: Rendered) -> str:
        return rendered.pod()["metadata"]["annotations"]["checksum/config"]
    base = checksum(default)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum(render({"config": {"log_level": "debug"}})) != base
    assert checksum(render({"policies": POLICIES})) != base
    assert checksum(render({"resources": {"requests": {"cpu": "1"}}})) == base


def test_extra_options_reach_the_pod(daemonset: Rendered) -> None:
    pod = daemonset.pod()
    spec = pod["spec"]
    container = daemonset.container()
    assert container["image"] == "registry.example/edge:1.2.3" and container["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "pull"}]
    assert env_of(container)["EXTRA"] == {"name": "EXTRA", "value": "1"}
    assert mounts_of(container)["/etc/certs"] == {"name": "certs", "mountPath": "/etc/certs", "readOnly": True}
    assert volumes_of(pod)["certs"] == {"name": "certs", "secret": {"secretName": "edge-certs"}}
    assert spec["nodeSelector"] == DAEMONSET_FULL["nodeSelector"]
    assert spec["affinity"] == DAEMONSET_FULL["affinity"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert pod["metadata"]["annotations"]["team"] == "observability"
    assert pod["metadata"]["labels"]["tier"] == "telemetry"
    assert container["resources"] == DAEMONSET_FULL["resources"]


# ── gateway mode ──


def test_gateway_kinds(gateway: Rendered) -> None:
    assert gateway.kinds() == ["ConfigMap", "DaemonSet", "Deployment", "HorizontalPodAutoscaler",
                               "PodDisruptionBudget", "Service", "ServiceAccount", "ServiceMonitor"]
    assert gateway.workload()["kind"] == "Deployment"
    assert gateway.one("DaemonSet", component="tail")  # the only DaemonSet is the tail worker


def test_gateway_service_hpa_and_pdb_select_the_edge_pods(gateway: Rendered) -> None:
    deployment = gateway.workload()
    labels = gateway.pod()["metadata"]["labels"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
    assert "hostPort" not in gateway.container()["ports"][0]
    assert "tolerations" not in gateway.pod()["spec"]
    service = gateway.one("Service")
    assert selects(service["spec"]["selector"], labels)
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
                                        {"name": "grpc", "port": 4317, "targetPort": "grpc", "protocol": "TCP"}]
    assert "internalTrafficPolicy" not in service["spec"]
    hpa = gateway.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": {"type": "Utilization", "averageUtilization": 70},
                       "memory": {"type": "Utilization", "averageUtilization": 80}}
    pdb = gateway.one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and selects(pdb["spec"]["selector"]["matchLabels"], labels)


def test_otlp_grpc_disabled_has_no_grpc_port(render: Callable[[dict[str, Any]], Rendered]) -> None:
    rendered = render({"mode": "gateway", "config": {"grpc": {"enabled": False}}})
    assert [p["name"] for p in rendered.container()["ports"]] == ["http"]
    assert [p["name"] for p in rendered.one("Service")["spec"]["ports"]] == ["http"]


def test_gateway_with_fixed_replicas(render: Callable[[dict[str, Any]], Rendered]) -> None:
    rendered = render({"mode": "gateway", "gateway": {"replicas": 3, "autoscaling": {"enabled": False},
                                                      "podDisruptionBudget": {"minAvailable": 2}}})
    assert rendered.workload()["spec"]["replicas"] == 3
    assert rendered.all("HorizontalPodAutoscaler") == []
    assert rendered.one("PodDisruptionBudget")["spec"] == {
        "minAvailable": 2, "selector": rendered.workload()["spec"]["selector"]}


# ── tail sampling ──


def peers_service(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("Service", component="peers")


def test_tail_sampling_runs_the_gateway_as_a_statefulset(tail_sampling: Rendered) -> None:
    assert tail_sampling.kinds() == ["ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service",
                                     "Service", "ServiceAccount", "ServiceMonitor", "StatefulSet"]
    statefulset = tail_sampling.workload()
    assert statefulset["kind"] == "StatefulSet" and statefulset["metadata"]["name"] == FULLNAME
    spec = statefulset["spec"]
    assert spec["serviceName"] == peers_service(tail_sampling)["metadata"]["name"]
    assert spec["podManagementPolicy"] == "Parallel" and spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert "replicas" not in spec  # the HPA owns the replica count
    labels = tail_sampling.pod()["metadata"]["labels"]
    assert selects(spec["selector"]["matchLabels"], labels)
    assert tail_sampling.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": FULLNAME}
    assert selects(tail_sampling.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert selects(tail_sampling.one("Service", component="edge")["spec"]["selector"], labels)


def test_tail_sampling_peers_find_each_other_through_a_headless_service(tail_sampling: Rendered) -> None:
    service = peers_service(tail_sampling)
    assert service["metadata"]["name"] == f"{FULLNAME}-peers"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert selects(service["spec"]["selector"], tail_sampling.pod()["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http" and port["port"] == tail_sampling.container()["ports"][0]["containerPort"]
    # Not scraped twice: the ServiceMonitor selects the client Service only.
    monitor = tail_sampling.one("ServiceMonitor")
    assert not selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    pod_ip = env_of(tail_sampling.container())["POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_tail_sampling_config_loads_with_edges_loader(tail_sampling: Rendered, tmp_path: Path) -> None:
    config = load_rendered_config(tail_sampling, tmp_path, env={"POD_IP": "10.4.0.7"})
    tail = config.tail_sampling
    assert tail.enabled is True and tail.decision_wait == 10.0
    assert [p["name"] for p in tail.policies] == ["errors", "baseline"]
    peers = tail.peers
    assert peers.dns == f"{FULLNAME}-peers.{NAMESPACE}.svc" and peers.static == ()
    assert (peers.port, peers.interval, peers.advertise) == (config.listen_port, 2.0, "10.4.0.7:8080")
    router = peers_from_config(peers)  # the pod's router: resolves the headless Service, knows itself by POD_IP
    assert isinstance(router.membership, DnsMembers) and router.membership.name == peers.dns
    assert router.address == "10.4.0.7:8080"
    wal_mount = next(m for m in tail_sampling.container()["volumeMounts"] if m["name"] == "wal")
    assert wal_mount["mountPath"] == tail.wal_dir == "/var/lib/edge/wal"


def test_tail_sampling_wal_on_a_claim_per_pod(tail_sampling: Rendered) -> None:
    (claim,) = tail_sampling.workload()["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "wal"
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                             "resources": {"requests": {"storage": "5Gi"}}}
    assert "wal" not in volumes_of(tail_sampling.pod())  # the claim is the volume


def test_tail_sampling_wal_on_an_empty_dir(render: Callable[[dict[str, Any]], Rendered]) -> None:
    base = {"enabled": True, "policies": TAIL_POLICIES}
    rendered = render({"mode": "gateway", "tailSampling": base})
    assert "volumeClaimTemplates" not in rendered.workload()["spec"]
    assert volumes_of(rendered.pod())["wal"] == {"name": "wal", "emptyDir": {}}
    limited = render({"mode": "gateway", "tailSampling": {**base, "wal": {"sizeLimit": "3Gi"}}})
    assert volumes_of(limited.pod())["wal"] == {"name": "wal", "emptyDir": {"sizeLimit": "3Gi"}}


def test_tail_sampling_claim_without_a_storage_class(render: Callable[[dict[str, Any]], Rendered]) -> None:
    rendered = render({"mode": "gateway", "tailSampling": {"enabled": True, "policies": TAIL_POLICIES, "wal": {
        "persistence": {"enabled": True, "storageClass": "-"}}}})
    (claim,) = rendered.workload()["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == ""  # "-": no dynamic provisioning
    assert claim["spec"]["resources"] == {"requests": {"storage": "2Gi"}}


def test_tail_sampling_policies_may_come_from_the_config(render: Callable[[dict[str, Any]], Rendered],
                                                         tmp_path: Path) -> None:
    rendered = render({"mode": "gateway", "tailSampling": {"enabled": True},
                       "config": {"tail_sampling": {"policies": TAIL_POLICIES[:1],
                                                    "peers": {"static": ["10.0.0.1:8080"]}}}})
    tail = load_rendered_config(rendered, tmp_path, env={"POD_IP": "10.4.0.7"}).tail_sampling
    assert [p["name"] for p in tail.policies] == ["errors"]
    assert tail.peers.static == () and tail.peers.dns  # the chart's Service replaces a static list


def test_tail_sampling_off_keeps_the_deployment(gateway: Rendered) -> None:
    assert gateway.workload()["kind"] == "Deployment"
    assert [s["metadata"]["name"] for s in gateway.all("Service")] == [FULLNAME]
    assert "POD_IP" not in env_of(gateway.container())
    assert "tail_sampling" not in yaml.safe_load(gateway.config_files()["config.json"])


@pytest.mark.parametrize(("values", "message"), [
    ({"tailSampling": {"enabled": True, "policies": TAIL_POLICIES}}, "tailSampling.enabled needs mode: gateway"),
    ({"mode": "gateway", "tailSampling": {"enabled": True}}, "tailSampling.enabled needs tailSampling.policies"),
], ids=["daemonset", "no-policy"])
def test_tail_sampling_misconfigurations_are_refused(helm: str, tmp_path: Path, values: dict[str, Any],
                                                     message: str) -> None:
    result = run_helm(helm, tmp_path, "template", values)
    assert result.returncode != 0 and message in result.stderr


# ── ServiceMonitor ──


def test_service_monitor_scrapes_edge_metrics(daemonset: Rendered, gateway: Rendered) -> None:
    for rendered in (daemonset, gateway):
        monitor = rendered.one("ServiceMonitor")
        (endpoint,) = monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("http", "/_edge/metrics")
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        service = rendered.one("Service")
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert any(p["name"] == endpoint["port"] for p in service["spec"]["ports"])
    assert daemonset.one("ServiceMonitor")["metadata"]["labels"]["release"] == "prom"
    # In daemonset mode the Service exists for the monitor and keeps traffic on the caller's node.
    assert daemonset.one("Service")["spec"]["internalTrafficPolicy"] == "Local"


# ── edge-tail ──


def tail_host_mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """mountPath -> (host path, read-only) for every hostPath volume the container mounts."""
    volumes = volumes_of(pod)
    return {m["mountPath"]: (volumes[m["name"]]["hostPath"]["path"], bool(m.get("readOnly")))
            for m in container["volumeMounts"] if "hostPath" in volumes[m["name"]]}


def flag_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_tail_sidecar_reads_host_logs_read_only(daemonset: Rendered) -> None:
    pod = daemonset.pod()
    tail = daemonset.container("tail")
    assert tail["command"] == ["edge-tail"] and tail["image"] == daemonset.container()["image"]
    args = tail["args"]
    assert flag_value(args, "--read-from") == "checkpoint"
    assert flag_value(args, "--state-dir") == "/var/lib/edge-tail"
    assert flag_value(args, "--forward-url") == "http://127.0.0.1:8080/v1/logs"
    assert args[-1] == "/var/log/containers/*.log"
    mounts = tail_host_mounts(pod, tail)
    state_host_path, state_read_only = mounts.pop("/var/lib/edge-tail")
    assert state_host_path == f"/var/lib/edge-tail/{FULLNAME}" and not state_read_only
    state_volume = next(v for v in pod["spec"]["volumes"] if v.get("hostPath", {}).get("path") == state_host_path)
    assert state_volume["hostPath"]["type"] == "DirectoryOrCreate"
    assert mounts == {"/var/log/containers": ("/var/log/containers", True), "/var/log/pods": ("/var/log/pods", True)}
    assert fnmatch.fnmatch("/var/log/containers/app_ns_app-0123.log", args[-1])
    assert os.path.dirname(args[-1]) in mounts
    assert tail_host_mounts(pod, daemonset.container()) == {}  # edge itself sees no host files


def test_tail_worker_forwards_to_the_gateway_service(gateway: Rendered) -> None:
    worker = gateway.one("DaemonSet", component="tail")
    pod = worker["spec"]["template"]
    assert selects(worker["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert not selects(gateway.one("Service")["spec"]["selector"], pod["metadata"]["labels"])
    (tail,) = pod["spec"]["containers"]
    service = gateway.one("Service")
    expected = f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}/v1/logs"
    assert flag_value(tail["args"], "--forward-url") == expected
    assert pod["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert all(read_only for path, (_, read_only) in tail_host_mounts(pod, tail).items()
               if path != "/var/lib/edge-tail")


def kubelet_expand(args: list[str], env: dict[str, str]) -> list[str]:
    """What the kubelet does to container args: $(VAR) becomes the container's variable."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def test_tail_arguments_parse_with_edge_tail(daemonset: Rendered) -> None:
    settings_module = pytest.importorskip("edge.tail.settings", reason="edge-tail is not part of this tree")
    args = kubelet_expand(daemonset.container("tail")["args"], {"K8S_NODE_NAME": "node-7"})
    settings = settings_module.from_command_line(args, env={})
    assert (settings.read_from, settings.state_dir) == ("checkpoint", "/var/lib/edge-tail")
    assert (settings.forward_url, settings.forward_format) == ("http://127.0.0.1:8080/v1/logs", "json")
    assert (settings.batch_lines, settings.batch_interval_ms) == (500, 250)
    assert settings.resource == (("k8s.node.name", "node-7"),)
    assert settings.paths == ("/var/log/containers/*.log",)


# ── the chart as a whole ──


@pytest.mark.parametrize("values", [DAEMONSET_FULL, GATEWAY_FULL, TAIL_SAMPLING],
                         ids=["daemonset", "gateway", "tail-sampling"])
def test_helm_lint_is_clean(helm: str, tmp_path: Path, values: dict[str, Any]) -> None:
    result = run_helm(helm, tmp_path, "lint", values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_an_unknown_mode_is_refused(helm: str, tmp_path: Path) -> None:
    result = run_helm(helm, tmp_path, "template", {"mode": "sidecar"})
    assert result.returncode != 0
    assert 'mode must be daemonset or gateway, not "sidecar"' in result.stderr


# Values that are Kubernetes objects (or free-form maps) passed through whole: one README row each.
WHOLE_VALUES = {"livenessProbe", "readinessProbe", "resources", "podSecurityContext", "securityContext",
                "daemonset.updateStrategy", "gateway.updateStrategy", "tail.resource", "tail.resources",
                "tail.securityContext", "tail.podSecurityContext", "tailSampling.updateStrategy"}


def leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the values a user sets (maps are walked, lists and scalars are leaves)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in WHOLE_VALUES:
            yield from leaf_keys(value, path + ".")
        else:
            yield path


def test_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = set(re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), re.MULTILINE))
    missing = [key for key in leaf_keys(values) if key not in documented]
    assert missing == []


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == edge.__version__
