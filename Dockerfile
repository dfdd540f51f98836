# syntax=docker/dockerfile:1.7
#
# ConvoHub images, built from the repository root. Two targets:
#
#   service  one service's image: the `convohub` CLI, contracts, runtime and ONLY the service
#            named by the SERVICE build argument (the other four are not installed, so the
#            image can run nothing else). `docker build --target service --build-arg
#            SERVICE=router -t convohub/router .`
#   cli      every service and the CLI: the one-shot setup job (`convohub topics apply`,
#            `convohub migrate`), `convohub up`, `convohub dlq`, `convohub replay`.
#            `docker build --target cli -t convohub/cli .`
#
# Layers: third-party dependencies are installed from uv.lock with only the pyproject files
# copied (`--no-install-workspace`), so editing source code reuses that layer; the sources
# come after. The final stage holds the virtual environment only (non-editable installs), no
# build tools and no source tree, and runs as the unprivileged user 10001.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# --- builder: resolves and installs into /app/.venv ------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# SERVICE: one of ingest, router, sla, crm, feedback; or "all" (the cli target).
ARG SERVICE=all
# Installing the root package pulls every service in; for one service's image the other
# four are left out with --no-install-package (the CLI finds services by entry point, so it
# then serves only the one installed).
RUN echo "--no-dev --locked --package convohub" > /tmp/uv-args \
 && if [ "$SERVICE" != "all" ]; then \
      case " ingest router sla crm feedback " in *" $SERVICE "*) ;; \
        *) echo "unknown SERVICE=$SERVICE" >&2; exit 1;; esac; \
      for other in ingest router sla crm feedback; do \
        [ "$other" = "$SERVICE" ] || printf ' --no-install-package convohub-%s' "$other" >> /tmp/uv-args; \
      done; \
    fi
# 1. dependencies only: the lock file and every workspace member's pyproject.toml.
COPY uv.lock pyproject.toml README.md ./
COPY contracts/pyproject.toml contracts/
COPY runtime/pyproject.toml runtime/
COPY services/ingest/pyproject.toml services/ingest/
COPY services/router/pyproject.toml services/router/
COPY services/sla/pyproject.toml services/sla/
COPY services/crm/pyproject.toml services/crm/
COPY services/feedback/pyproject.toml services/feedback/
COPY examples/line-channel/pyproject.toml examples/line-channel/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --no-install-workspace $(cat /tmp/uv-args | tr -d '\n')
# 2. the sources (all members are copied; only the selected ones are installed).
COPY contracts/src contracts/src
COPY runtime/src runtime/src
COPY services services
COPY src src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --no-editable $(cat /tmp/uv-args | tr -d '\n')

# --- the runtime image base -----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
RUN groupadd --system --gid 10001 convohub \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin convohub
COPY --from=builder --chown=10001:10001 /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVOHUB_MODE=distributed \
    CONVOHUB_HTTP_HOST=0.0.0.0 \
    CONVOHUB_HTTP_PORT=8000 \
    CONVOHUB_LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
EXPOSE 8000

# --- service: one service, `convohub serve $SERVICE` ----------------------------------------
FROM runtime-base AS service
ARG SERVICE
ENV CONVOHUB_SERVICE=${SERVICE} \
    CONVOHUB_SERVICE_NAME=convohub-${SERVICE}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CONVOHUB_HTTP_PORT', '8000') + '/healthz', timeout=2)"]
# exec: the server is PID 1 and gets SIGTERM itself (it finishes the batch and commits).
CMD ["/bin/sh", "-c", "exec convohub serve \"$CONVOHUB_SERVICE\""]

# --- cli: every service and the whole CLI ---------------------------------------------------
FROM runtime-base AS cli
ENV CONVOHUB_SERVICE_NAME=convohub-cli
ENTRYPOINT ["convohub"]
CMD ["--help"]
