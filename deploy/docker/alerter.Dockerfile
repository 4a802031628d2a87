# syntax=docker/dockerfile:1
# pfactory alerter: the alert router (python -m pfactory.alerter).
# Build from the repository root (see deploy/docker/README.md):
#   docker build -f deploy/docker/alerter.Dockerfile -t pfactory-alerter .

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- builder: resolve pfactory-alerter and its workspace libraries from uv.lock into /app/.venv ----
FROM python:3.11.14-slim-bookworm AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# third-party dependencies first: this layer is rebuilt only when the lockfile changes
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package pfactory-alerter
# then the workspace members it needs, installed as regular (non-editable) packages
COPY libs/contracts/ libs/contracts/
COPY libs/bus/ libs/bus/
COPY libs/telemetry/ libs/telemetry/
COPY workers/alerter/ workers/alerter/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package pfactory-alerter

# ---- runtime: the venv (which holds the sources) on a slim Python, as a non-root user ----
FROM python:3.11.14-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 pfactory \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home pfactory \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=builder /app/.venv /app/.venv
COPY deploy/docker/healthcheck.py /opt/pfactory/healthcheck.py
ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data
# relative state folders (./.pfactory by default) land in the writable /data
WORKDIR /data
USER 10001:10001
EXPOSE 8107
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/pfactory/healthcheck.py", "PF_ALERTER_HEALTH_PORT=8107"]
ENTRYPOINT ["python", "-m", "pfactory.alerter"]
