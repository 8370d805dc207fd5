# The edge container image.
#
#   docker build -t tero-edge .                                     # runs `edge` (all routes)
#   docker build --build-arg DISTRIBUTION=otlp -t tero-edge-otlp .  # edge-otlp; also datadog, prometheus, tail
#   docker run -p 8080:8080 -p 4317:4317 -e TERO_UPSTREAM_URL=http://collector:4318 tero-edge
#   docker run -v /var/log/app:/logs:ro -e LOG_PATHS='/logs/*.log' -e GATEWAY_URL=http://edge:8080 tero-edge-tail
#                                        # DISTRIBUTION=tail: files from LOG_PATHS or the arguments; none: stdin
#
# Config: `edge` with no argument reads ./config.json, /app/config.json, /etc/edge/config.json, the first
# that exists. The working directory is /app, so /app/config.json (where Tero Edge's image reads it) wins
# over /etc/edge/config.json, where the image ships its default (edge/examples/container-config.json:
# 0.0.0.0:8080 and OTLP/gRPC on 0.0.0.0:4317, no policies, so nothing is dropped or sampled until a config names policies). Mount your
# config at /app/config.json, or your own /etc/edge (the Helm chart mounts a ConfigMap there and passes
# /etc/edge/config.json as the argument). Every image holds every console script: only the entrypoint
# differs, so `--entrypoint edge-tail` works on any of them.
#
# Dependencies come from requirements.lock (every runtime dependency pinned with `==` and its hashes);
# the project itself is installed on top with --no-deps, so a build never resolves anything anew.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV VIRTUAL_ENV=/opt/edge \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /src
COPY requirements.lock ./
RUN "$VIRTUAL_ENV/bin/pip" install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY edge ./edge
COPY supervisor ./supervisor
COPY workers ./workers
RUN "$VIRTUAL_ENV/bin/pip" install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
# edge, otlp, datadog, prometheus or tail: the console script the image runs.
ARG DISTRIBUTION=edge
ENV VIRTUAL_ENV=/opt/edge \
    PATH=/opt/edge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=builder /opt/edge /opt/edge
# Exec-form ENTRYPOINT cannot expand a build argument, so the choice becomes a symlink.
RUN case "$DISTRIBUTION" in \
      edge) command=edge ;; \
      otlp|datadog|prometheus|tail) command="edge-$DISTRIBUTION" ;; \
      *) echo "DISTRIBUTION must be edge, otlp, datadog, prometheus or tail, not '$DISTRIBUTION'" >&2; exit 1 ;; \
    esac \
    && if [ ! -x "$VIRTUAL_ENV/bin/$command" ]; then echo "$command is not installed" >&2; exit 1; fi \
    && ln -s "$command" "$VIRTUAL_ENV/bin/edge-entrypoint"
COPY edge/examples/container-config.json /etc/edge/config.json
# `edge` with no argument reads ./config.json first: /app/config.json, as in Tero Edge's image.
WORKDIR /app
# edge-tail keeps its checkpoints in --state-dir, .tero in the working directory by default: it must be
# writable by the image's user (mount a volume there, or pass --state-dir, to keep them across containers).
RUN mkdir .tero && chown 10001:10001 .tero
USER 10001:10001
# 8080: HTTP (OTLP/HTTP, Datadog, Prometheus, admin); 4317: OTLP/gRPC (distributions edge and otlp)
EXPOSE 8080 4317
# edge-healthcheck asks GET /_health on the port the config names (the slim image has no curl);
# edge-tail serves no HTTP, so the tail image is healthy while it runs.
ENV EDGE_IMAGE_DISTRIBUTION=$DISTRIBUTION
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD [ "$EDGE_IMAGE_DISTRIBUTION" = tail ] || edge-healthcheck
ENTRYPOINT ["/opt/edge/bin/edge-entrypoint"]
