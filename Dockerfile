# syntax=docker/dockerfile:1
#
# esm container image: `esm run` as an unprivileged user on a slim Python base.
#
#   docker build -t esm:0.1.0 .
#   docker run --rm --read-only --tmpfs /var/lib/esm:uid=10001,gid=10001 \
#     -v "$PWD/esm.yaml:/etc/esm/config.yaml:ro" -p 9100:9100 esm:0.1.0
#
# The builder stage builds the esm wheel and the wheels of its dependencies; the runtime stage
# installs them from a bind mount (BuildKit, the default builder since Docker 23), so neither the
# source tree nor the wheel files end up in the image. The image writes nothing outside the
# state directory: point `state.sqlite` at /var/lib/esm/esm-state.db and mount a writable volume
# (an emptyDir in Kubernetes) there; the root filesystem can then be read-only. In the container,
# `http.listen` must be 0.0.0.0:9100 for probes and Prometheus to reach /healthz, /readyz and /metrics.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (tests/packaging/test_wheel.py builds from exactly these).
COPY pyproject.toml README.md ./
COPY esm ./esm
RUN pip wheel --no-deps --wheel-dir /dist . \
    && pip wheel --wheel-dir /wheels /dist/esm-*.whl


FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="esm" \
      org.opencontainers.image.description="Self-hosted AWS Lambda event source mappings: SQS, Kinesis and DynamoDB Streams pollers with Lambda's exact semantics." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# The wheel (not the source tree) and its dependencies' wheels, from the builder stage only.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/esm-*.whl \
    && groupadd --system --gid 10001 esm \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin esm \
    && mkdir -p /etc/esm /var/lib/esm \
    && chown 10001:10001 /var/lib/esm

WORKDIR /app
USER 10001:10001

# /metrics, /healthz and /readyz (set `http.listen: 0.0.0.0:9100` in the configuration).
EXPOSE 9100
# esm drains on SIGTERM (the default stop signal) and exits 0; a second signal forces the exit.
STOPSIGNAL SIGTERM

ENTRYPOINT ["esm"]
CMD ["run", "--config", "/etc/esm/config.yaml"]
