"""Config loading (docs/configuration.md): keys and defaults, TERO_* overrides, ${VAR} substitution, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge import config as cfg


def test_defaults() -> None:
    """Every documented default, with logs/metrics URLs and max_decoded_bytes derived."""
    c = cfg.build({}, env={})
    assert (c.listen_address, c.listen_port, c.upstream_url) == ("127.0.0.1", 8080, "http://127.0.0.1:80")
    assert c.logs_url == c.metrics_url == c.upstream_url
    assert c.log_level == "info" and c.max_body_size == 20 << 20 and c.max_decoded_bytes == 20 << 20
    assert c.unfiltered == "forward"
    assert (c.otlp.logs_path, c.otlp.metrics_path, c.otlp.traces_path) == ("/v1/logs", "/v1/metrics", "/v1/traces")
    assert c.max_connections == 256 and c.workers >= 1
    assert (c.service.name, c.service.namespace) == ("tero-edge", "tero") and c.service.instance_id
    assert c.prometheus.max_input_bytes_per_scrape == c.prometheus.max_output_bytes_per_scrape == 10_485_760
    assert c.policy_providers == ()


def test_env_overrides_file_and_cli_overrides_env() -> None:
    """Precedence: CLI > env > file > defaults, for top-level and nested scalar keys."""
    env = {"TERO_LOG_LEVEL": "DEBUG", "TERO_LISTEN_PORT": "9001", "TERO_SERVICE_NAME": "from-env",
           "TERO_PROMETHEUS_MAX_INPUT_BYTES_PER_SCRAPE": "0"}
    c = cfg.build({"log_level": "err", "listen_port": 7000, "service": {"name": "from-file"}}, env=env,
                  overrides={"listen_port": 9100})
    assert c.log_level == "debug" and c.listen_port == 9100 and c.service.name == "from-env"
    assert c.prometheus.max_input_bytes_per_scrape == 0


def test_prometheus_scrape_url_is_its_own_key_overridable_from_the_environment() -> None:
    """Empty by default (scrapes go to `metrics_url`); TERO_PROMETHEUS_SCRAPE_URL sets it; checked like a URL."""
    assert cfg.build({}, env={}).prometheus.scrape_url == ""
    env = {"TERO_PROMETHEUS_SCRAPE_URL": "http://exporter:9100/"}
    assert cfg.build({"prometheus": {"scrape_url": "http://x:1"}}, env=env).prometheus.scrape_url == "http://exporter:9100"
    with pytest.raises(cfg.ConfigError, match="prometheus.scrape_url"):
        cfg.build({"prometheus": {"scrape_url": "ftp://nope"}}, env={})


def test_decoded_limit_follows_a_larger_body_limit_and_unfiltered_has_an_env_override() -> None:
    """A raw limit above 20 MiB lifts the decoded one with it (a smaller one leaves 20 MiB: a gzip body of
    1 MiB may hold 20); `TERO_UNFILTERED` and `TERO_OTLP_LOGS_PATH` override like every scalar key."""
    assert cfg.build({"max_body_size": 64 << 20}, env={}).max_decoded_bytes == 64 << 20
    assert cfg.build({"max_body_size": 1 << 20}, env={}).max_decoded_bytes == 20 << 20
    c = cfg.build({"unfiltered": "forward"}, env={"TERO_UNFILTERED": "Reject", "TERO_OTLP_LOGS_PATH": "/p/v1/logs"})
    assert c.unfiltered == "reject" and c.otlp.logs_path == "/p/v1/logs"


@pytest.mark.parametrize(("level", "expected"), [("WARN", "warn"), ("warning", "warn"), ("err", "err"),
                                               ("error", "err"), ("Info", "info"), ("TRACE", "trace")])
def test_log_level_spellings(level: str, expected: str) -> None:
    """Stored as documented (trace, debug, info, warn, err), whichever accepted spelling the file uses."""
    assert cfg.build({"log_level": level}, env={}).log_level == expected


def test_variable_substitution() -> None:
    """${VAR} in every string, unset -> empty, $${ -> literal ${."""
    doc = {"upstream_url": "http://${HOST}:4318", "service": {"name": "a${UNSET}b"},
           "policy_providers": [{"id": "h", "type": "http", "url": "http://p:1/sync",
                                 "headers": [{"name": "Authorization", "value": "Bearer ${TOKEN}"},
                                             {"name": "X-Lit", "value": "$${NOT}"}]}]}
    c = cfg.build(doc, env={"HOST": "collector", "TOKEN": "abc"})
    assert c.upstream_url == "http://collector:4318" and c.service.name == "ab"
    assert c.policy_providers[0].headers == (("Authorization", "Bearer abc"), ("X-Lit", "${NOT}"))


def test_provider_poll_interval_spellings() -> None:
    c = cfg.build({"policy_providers": [{"id": "a", "type": "file", "path": "p.json", "poll_interval": 5},
                                        {"id": "b", "type": "http", "url": "https://x/s", "poll_interval_secs": 7}]},
                  env={})
    assert [p.poll_interval for p in c.policy_providers] == [5.0, 7.0]


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"listen_port": "eighty"}, "listen_port"),
    ({"listen_port": 70000}, "listen_port"),
    ({"log_level": "loud"}, "log_level"),
    ({"upstream_url": "ftp://x"}, "upstream_url"),
    ({"max_body_size": 0}, "max_body_size"),
    ({"max_connections": -1}, "max_connections"),
    ({"unfiltered": "drop"}, "config key unfiltered: expected forward or reject, got 'drop'"),
    ({"otlp": {"logs_path": "v1/logs"}}, "config key otlp.logs_path: expected a path starting with /, got 'v1/logs'"),
    ({"otlp": {"traces_path": "/v1/logs"}},
     "config key otlp: logs_path, metrics_path and traces_path must differ, "
     "got ['/v1/logs', '/v1/metrics', '/v1/logs']"),
    ({"service": "x"}, "service"),
    ({"policy_providers": [{"type": "s3"}]}, "policy_providers[0].type"),
    ({"policy_providers": [{"type": "file"}]}, "policy_providers[0].path"),
    ({"policy_providers": [{"type": "http", "url": "nope"}]}, "policy_providers[0].url"),
    ({"upstream_url": "http://${BAD-NAME}"}, "upstream_url"),
    ({"upstream_url": "http://${"}, "upstream_url"),
])
def test_bad_values_name_the_key(doc: dict, fragment: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        cfg.build(doc, env={})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unknown_keys_warn() -> None:
    c = cfg.build({"listen_port": 1, "frobnicate": True, "service": {"colour": "red"}}, env={})
    assert c.warnings == ("config key frobnicate: unknown, ignored", "config key service.colour: unknown, ignored")


def test_round_trip_for_workers() -> None:
    c = cfg.build({"policy_providers": [{"id": "a", "type": "http", "url": "http://x/s",
                                         "headers": [{"name": "k", "value": "v"}]}]}, env={})
    assert cfg.from_json(c.to_json()) == c


def test_relative_provider_path_resolves_next_to_the_config(tmp_path) -> None:
    (tmp_path / "pol.json").write_text('{"policies": []}')
    (tmp_path / "c.json").write_text(json.dumps({"policy_providers": [{"type": "file", "path": "pol.json"}]}))
    c = cfg.load(tmp_path / "c.json", env={})
    assert c.policy_providers[0].path == str(tmp_path / "pol.json")


@pytest.mark.parametrize("content", ["{not json", '{"listen_port": "x"}'])
def test_edge_exits_2_with_one_line(tmp_path, content: str) -> None:
    """A bad config is one clear line on stderr and exit status 2, no traceback."""
    path = tmp_path / "config.json"
    path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "supervisor.main", str(path)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("edge: ")
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "supervisor.main", str(tmp_path / "absent.json")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "absent.json" in result.stderr
