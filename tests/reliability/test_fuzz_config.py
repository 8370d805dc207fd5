"""Fuzzing the config: `edge.config.build` with arbitrary documents and `TERO_*` environments.

Property: a config is either built or refused with one `ConfigError` line naming a key (the
`edge` command prints it and exits 2); never another exception. A built config round-trips
through the JSON the supervisor hands to workers.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import ConfigError, build, from_json

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["listen_address", "listen_port", "upstream_url", "logs_url", "metrics_url", "log_level", "max_body_size",
        "max_decoded_bytes", "max_connections", "workers", "upstream_timeout", "tls_insecure_skip_verify",
        "service", "policy_providers", "prometheus", "s3_dump", "tail", "unknown_key"]
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10, 70_000), st.floats(allow_nan=False),
                   st.sampled_from(["http://127.0.0.1:4318", "https://x:99999", "ftp://x", "${HOME}", "$${X}", "${",
                                    "debug", "WARN", "8080", "true", "-1", ""]), st.text(max_size=8))
provider = st.fixed_dictionaries({}, optional={
    "id": scalar, "type": st.sampled_from(["file", "http", "s3"]) | scalar, "path": scalar,
    "url": scalar, "poll_interval": scalar, "poll_interval_secs": scalar,
    "headers": st.lists(st.fixed_dictionaries({"name": scalar}, optional={"value": scalar}) | scalar, max_size=2)})
value = st.one_of(scalar, st.dictionaries(st.sampled_from(["name", "instance_id", "max_input_bytes_per_scrape", "x"]),
                                          scalar, max_size=3),
                  st.lists(provider, max_size=3))
documents = st.one_of(st.dictionaries(st.sampled_from(KEYS), value, max_size=8), scalar, st.lists(scalar, max_size=2))
environments = st.dictionaries(st.sampled_from(["TERO_LISTEN_PORT", "TERO_LOG_LEVEL", "TERO_MAX_BODY_SIZE",
                                                "TERO_UPSTREAM_TIMEOUT", "TERO_TLS_INSECURE_SKIP_VERIFY",
                                                "TERO_SERVICE_NAME", "TERO_PROMETHEUS_MAX_INPUT_BYTES_PER_SCRAPE",
                                                "HOME", "X"]), st.text(max_size=8), max_size=4)


@FUZZ
@given(doc=documents, env=environments)
def test_config_is_built_or_refused_with_one_line(doc: Any, env: dict[str, str]) -> None:
    try:
        config = build(doc, env=env)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("config") and "\n" not in message, message
        return
    assert from_json(config.to_json()) == config
    assert config.max_decoded_bytes > 0 and config.workers > 0 and config.upstream_timeout > 0
