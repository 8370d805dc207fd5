# The edge container image.
#
#   docker build -t tero-edge .                                     # runs `edge` (all routes)
#   docker build --build-arg DISTRIBUTION=otlp -t tero-edge-otlp .  # edge-otlp; also datadog, prometheus, tail
#   docker run -p 8080:8080 -e TERO_UPSTREAM_URL=http://collector:4318 tero-edge
#
# The default config (/etc/edge/config.json, from edge/examples/container-config.json) listens on
# 0.0.0.0:8080 and applies edge/examples/policies.json; mount your own /etc/edge to replace both
# (the Helm chart mounts a ConfigMap there). Every image holds every console script: only the
# entrypoint differs, so `--entrypoint edge-tail` works on any of them.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV VIRTUAL_ENV=/opt/edge \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv "$VIRTUAL_ENV"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edge ./edge
COPY supervisor ./supervisor
COPY workers ./workers
RUN "$VIRTUAL_ENV/bin/pip" install .

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
COPY edge/examples/policies.json /etc/edge/policies.json
# `edge` with no argument reads ./config.json.
WORKDIR /etc/edge
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/opt/edge/bin/edge-entrypoint"]
