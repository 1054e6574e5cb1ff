#!/usr/bin/env bash
# The benchmark's own tools, from Debian's packages: wrk (the load generator) and
# nginx with the geoip2 module (the peer). Needs root (or sudo); installs only what is missing.
set -euo pipefail
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_http_geoip2_module.so ] || need+=(libnginx-mod-http-geoip2)
if [ ${#need[@]} -eq 0 ]; then echo "bench tools present"; exit 0; fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
# Debian starts nginx on port 80 after installing it; the benchmark runs its own.
$sudo systemctl disable --now nginx 2>/dev/null || $sudo nginx -s stop 2>/dev/null || true
