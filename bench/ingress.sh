#!/usr/bin/env bash
# bench/ingress.sh: the ingress benchmark (issue 17), Flotilla's ingress and
# Debian's nginx side by side in one run, printed as Markdown for
# bench/RESULTS.md.
#
# Two backends (HAProxy answering 1 KiB itself, one process each, on
# 127.0.0.2:8080 and 127.0.0.3:8080) stand for two pods. One master holds a
# selector-less Service with those two endpoints and an Ingress routing
# bench.test/ to it; `flotilla ingress` serves it on 127.0.0.1:18080 and
# nginx, configured with the same route to the same two backends
# (upstream keep-alive, as ingress-nginx does), on 127.0.0.1:18081. wrk
# measures keep-alive and new-connection-per-request against each, and
# against one backend directly. Both proxies log no requests (nginx
# access_log off, the ingress's access target off).
#
# Needs: wrk, haproxy, nginx (scripts/install-deps), the release build of
# flotilla and flt in $CARGO_TARGET_DIR (default target). Loopback only;
# everything is stopped and removed on exit.
set -euo pipefail

DUR=${DUR:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
B=${CARGO_TARGET_DIR:-target}/release
for b in flotilla flt; do [[ -x $B/$b ]] || { echo "build it: cargo build --release -p flotilla -p flt" >&2; exit 1; }; done
for t in wrk haproxy nginx; do command -v $t >/dev/null || { echo "missing $t (scripts/install-deps)" >&2; exit 1; }; done
tmp=$(mktemp -d)
pids=()
stop() { kill -TERM "$1" 2>/dev/null || true; timeout 10 tail --pid="$1" -f /dev/null || kill -KILL "$1" 2>/dev/null || true; }
cleanup() {
  for p in "${pids[@]}"; do stop "$p"; done
  [[ -f $tmp/nginx.pid ]] && stop "$(cat "$tmp/nginx.pid")"
  rm -rf "$tmp"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CP=$(port) PP=$(port)
SERVER=127.0.0.1:$CP
head -c 1024 /dev/zero | tr '\0' 'x' >"$tmp/1k"

for ip in 127.0.0.2 127.0.0.3; do
  cat >"$tmp/be-$ip.cfg" <<CFG
global
  maxconn 4000
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend web
  bind $ip:8080
  http-request return status 200 content-type text/plain file $tmp/1k
CFG
  haproxy -f "$tmp/be-$ip.cfg" & pids+=($!)
done

RUST_LOG=warn "$B/flotilla" master --name b1 --data-dir "$tmp/m" --client-addr "$SERVER" \
  --peer-addr 127.0.0.1:$PP --initial-cluster b1=127.0.0.1:$PP 2>"$tmp/master.log" & pids+=($!)
for _ in $(seq 300); do "$B/flt" --server $SERVER get ns >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$tmp/objects.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets:
  - addresses: [{ip: 127.0.0.2}, {ip: 127.0.0.3}]
    ports: [{name: http, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
    - host: bench.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
YAML
"$B/flt" --server $SERVER apply -f "$tmp/objects.yaml" >/dev/null

RUST_LOG=warn,flotilla_ingress::access=off "$B/flotilla" ingress --server $SERVER --node-name bench \
  --http-addr 127.0.0.1:18080 2>"$tmp/ingress.log" & pids+=($!)

cat >"$tmp/nginx.conf" <<CONF
worker_processes auto;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream web { server 127.0.0.2:8080; server 127.0.0.3:8080; keepalive 320; }
  server {
    listen 127.0.0.1:18081 reuseport;
    server_name bench.test;
    location / {
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
CONF
nginx -c "$tmp/nginx.conf" -p "$tmp" -e "$tmp/nginx-error.log"

ready() { curl -sf -o /dev/null -H 'Host: bench.test' "http://$1/"; }
for _ in $(seq 300); do ready 127.0.0.1:18080 && ready 127.0.0.1:18081 && break; sleep 0.1; done
ready 127.0.0.1:18080 || { echo "ingress does not answer"; tail "$tmp/ingress.log"; exit 1; }
ready 127.0.0.1:18081 || { echo "nginx does not answer"; cat "$tmp/nginx-error.log"; exit 1; }

# wrk's summary: requests/s, p50, p99, errors.
run() {
  local url=$1; shift
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency -H 'Host: bench.test' "$@" "$url" 2>&1)
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
  printf '%s | %s | %s | %s' "$rps" "$p50" "$p99" "${errs:-0}"
}

echo "## Ingress (issue 17): run of $(date -u '+%Y-%m-%d %H:%M:%S') UTC"
echo
echo "\`DUR=$DUR CONNS=$CONNS THREADS=$THREADS bench/ingress.sh\` on $(nproc) cores ($(uptime | sed 's/.*load average/load average/')),"
echo "wrk $THREADS threads, $CONNS connections, ${DUR} s each; responses of 1 KiB from two HAProxy backends."
echo
echo "| case | target | requests/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|---|"
for mode in keep-alive new-connection; do
  extra=()
  [[ $mode == new-connection ]] && extra=(-H 'Connection: close')
  echo "| $mode | direct (one backend) | $(run http://127.0.0.2:8080/ "${extra[@]}") |"
  echo "| $mode | nginx $(nginx -v 2>&1 | sed 's/.*\///') | $(run http://127.0.0.1:18081/ "${extra[@]}") |"
  echo "| $mode | flotilla ingress | $(run http://127.0.0.1:18080/ "${extra[@]}") |"
done
