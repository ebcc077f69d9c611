# syntax=docker/dockerfile:1
# goodhart-agent container image. Build from the repository root:
#   docker build -t goodhart-agent:0.1.0 .
# Stage 1 builds wheels for the agent and all its dependencies; stage 2 installs them offline into
# a virtualenv, so no build backend, source tree or wheel file ends up in the final image.
# tests/test_dockerfile.py lints this file with hadolint and replays both install steps in a clean
# virtualenv: keep the two `pip` commands in step with it.

# Pinned by version; pin by digest too (python:3.12.12-slim-bookworm@sha256:...) for builds that
# must be reproducible byte for byte.
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY agent ./agent
# The models, schemas and report extras: learned proxies (skops), JSON Schema checks and the report
# (matplotlib, served at /report) work in the image.
RUN pip wheel --wheel-dir /wheels '.[models,schemas,report]'

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="goodhart-agent" \
      org.opencontainers.image.description="Alarms when an AI system's proxy metrics stop tracking its audited quality." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONUNBUFFERED: log lines reach stdout at once. HOME and TMPDIR point into the state volume, the
# only place the agent writes, so the image runs with a read-only root filesystem; bytecode is
# compiled at install time and never written at run time.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/goodhart-agent \
    PATH=/opt/goodhart-agent/bin:$PATH \
    HOME=/var/lib/goodhart-agent \
    TMPDIR=/var/lib/goodhart-agent

# The wheels are bind-mounted from stage 1 for this one step: they never become a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/goodhart-agent \
 && /opt/goodhart-agent/bin/pip install --no-index --find-links=/wheels 'goodhart-agent[models,schemas,report]' \
 && groupadd --system --gid 10001 goodhart \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/goodhart-agent --shell /usr/sbin/nologin goodhart \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/goodhart-agent \
 && install -d -m 0755 /etc/goodhart-agent

# The agent's SQLite state (state_dir); mount an emptyDir or a PersistentVolumeClaim here.
VOLUME ["/var/lib/goodhart-agent"]
WORKDIR /var/lib/goodhart-agent
USER 10001:10001

# /metrics, /healthz, /readyz (config key `listen`); the http_push source listens on 10101.
EXPOSE 10100

# For `docker run`; Kubernetes uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('GOODHART_HEALTH_URL', 'http://127.0.0.1:10100/healthz'), timeout=2)"]

# Exec form: the agent is PID 1 and gets SIGTERM itself.
ENTRYPOINT ["goodhart-agent"]
CMD ["run", "--config", "/etc/goodhart-agent/config.yaml"]
