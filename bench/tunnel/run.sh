#!/usr/bin/env bash
# Side-by-side tunnel benchmark, in one go: nginx serving 1 KiB, 1 MiB and 200 MiB files,
# reached directly, through Meridian (an HTTP endpoint served by `meridian agent` over its
# TLS agent link), through rathole (plain TCP, and again over its TLS transport) and through
# bore. wrk with 32 connections for the small files and curl for the 200 MiB download. Prints
# requests/s, p99 and MB/s for each, Meridian's ratios to each peer, and the edge's memory with
# 1,000 idle agent sessions.
#
# CPU 0 plays the agent host (nginx, the agents, rathole's clients, bore local); CPU 1 plays
# the edge host and the internet (meridian serve, rathole's servers, bore server, wrk, curl).
# Loopback numbers on a shared 2-core VM swing by 2x from one run to the next, so every path is
# measured in interleaved rounds and the median is reported.
# Usage: bench/tunnel/run.sh [seconds per wrk run, default 10] [idle agents, default 1000]
#                            [rounds, default 3]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-10}
idle=${2:-1000}
rounds=${3:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d /tmp/meridian-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '==> %s\n' "$*" >&2; }

say "tools"
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
[ ${#need[@]} -eq 0 ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" libssl-dev pkg-config; }
# rathole 0.5.0's lock file pins a `time` release that no longer compiles on current Rust.
command -v rathole >/dev/null || cargo install rathole
command -v bore >/dev/null || cargo install --locked bore-cli
(cd "$root" && cargo build --release --locked -p meridian --example idle_agents --bin meridian)
meridian=$CARGO_TARGET_DIR/release/meridian
# 1,000 agent sessions need about 2,000 descriptors across the two processes.
ulimit -n "$(ulimit -Hn)"

say "upstream: nginx on CPU 0"
mkdir -p "$work/www" "$work/nginx"
# nginx's worker runs as www-data when started by root.
chmod 755 "$work" "$work/www"
head -c 1024 /dev/urandom >"$work/www/1k.bin"
head -c 1048576 /dev/urandom >"$work/www/1m.bin"
head -c 209715200 /dev/urandom >"$work/www/200m.bin"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1; worker_cpu_affinity 01; daemon off;
pid $work/nginx/nginx.pid; error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on;
  keepalive_requests 1000000; keepalive_timeout 65; default_type application/octet-stream;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
  server { listen 127.0.0.1:18080; root $work/www; } }
CONF
taskset -c 0 nginx -c "$work/nginx/nginx.conf" & pids+=($!)

wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing listens on $1:$2" >&2; exit 1; }
wait_port 127.0.0.1 18080

say "meridian serve on CPU 1, meridian agent on CPU 0"
RUST_LOG=warn,meridian=info,meridian_edge=info taskset -c 1 "$meridian" serve --data-dir "$work/m" \
  --api-listen 127.0.0.1:0 --agent-port 24443 --http-port 28080 --https-port 28443 --dns-listen 127.0.0.1:0 \
  >"$work/m.out" 2>"$work/m.err" & pids+=($!)
serve_pid=$!
for _ in $(seq 600); do grep -q "api listening on" "$work/m.err" 2>/dev/null && break; sleep 0.05; done
api=$(grep -o 'api listening on http://[0-9.:]*' "$work/m.err" | sed 's/api listening on //')
key=$(python3 -c "import json;print(json.load(open('$work/m/bootstrap.json'))['api_key'])")
token=$(python3 -c "import json;print(json.load(open('$work/m/bootstrap.json'))['authtoken'])")
curl -fsS -o /dev/null -X POST "$api/reserved_domains" -H "Authorization: Bearer $key" -H "ngrok-version: 2" \
  -H "Content-Type: application/json" -d '{"domain": "bench.example.test"}'
RUST_LOG=warn taskset -c 0 "$meridian" agent http 127.0.0.1:18080 --domain bench.example.test \
  --data-dir "$work/m" --server-addr 127.0.1.1:24443 >"$work/agent.out" 2>&1 & pids+=($!)
for _ in $(seq 600); do grep -q forwarding "$work/agent.out" 2>/dev/null && break; sleep 0.05; done

say "rathole and bore"
cat >"$work/rs.toml" <<CONF
[server]
bind_addr = "127.0.0.1:2333"
default_token = "bench-token"
[server.services.web]
bind_addr = "127.0.0.1:25202"
CONF
cat >"$work/rc.toml" <<CONF
[client]
remote_addr = "127.0.0.1:2333"
default_token = "bench-token"
[client.services.web]
local_addr = "127.0.0.1:18080"
CONF
RUST_LOG=warn taskset -c 1 rathole -s "$work/rs.toml" >/dev/null 2>&1 & pids+=($!)
wait_port 127.0.0.1 2333
RUST_LOG=warn taskset -c 0 rathole -c "$work/rc.toml" >/dev/null 2>&1 & pids+=($!)
# The same rathole over its TLS transport (native-tls: one TLS connection per visitor
# connection), the encrypted peer closest to Meridian's TLS agent link.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/rh-key.pem" -out "$work/rh-cert.pem" -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" 2>/dev/null
openssl pkcs12 -export -out "$work/rh-id.p12" -inkey "$work/rh-key.pem" -in "$work/rh-cert.pem" -passout pass:bench
cat >"$work/rst.toml" <<CONF
[server]
bind_addr = "127.0.0.1:2334"
default_token = "bench-token"
[server.transport]
type = "tls"
[server.transport.tls]
pkcs12 = "$work/rh-id.p12"
pkcs12_password = "bench"
[server.services.web]
bind_addr = "127.0.0.1:25204"
CONF
cat >"$work/rct.toml" <<CONF
[client]
remote_addr = "localhost:2334"
default_token = "bench-token"
[client.transport]
type = "tls"
[client.transport.tls]
trusted_root = "$work/rh-cert.pem"
hostname = "localhost"
[client.services.web]
local_addr = "127.0.0.1:18080"
CONF
RUST_LOG=warn taskset -c 1 rathole -s "$work/rst.toml" >/dev/null 2>&1 & pids+=($!)
wait_port 127.0.0.1 2334
RUST_LOG=warn taskset -c 0 rathole -c "$work/rct.toml" >/dev/null 2>&1 & pids+=($!)
RUST_LOG=warn taskset -c 1 bore server --bind-addr 127.0.0.1 --min-port 25203 --max-port 25203 >/dev/null 2>&1 & pids+=($!)
wait_port 127.0.0.1 7835
RUST_LOG=warn taskset -c 0 bore local 18080 --local-host 127.0.0.1 --to 127.0.0.1 --port 25203 >/dev/null 2>&1 & pids+=($!)
wait_port 127.0.0.1 25202
wait_port 127.0.0.1 25203
wait_port 127.0.0.1 25204

# name|url|Host header (Meridian routes by host; the others by port)
targets=(
  "direct|http://127.0.0.1:18080|"
  "meridian|http://127.0.1.1:28080|bench.example.test"
  "rathole|http://127.0.0.1:25202|"
  "rathole-tls|http://127.0.0.1:25204|"
  "bore|http://127.0.0.1:25203|"
)
declare -A rps p99 mbs
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v); print v} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000} else print v}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for round in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    IFS='|' read -r name url host <<<"$t"
    hdr=()
    [ -z "$host" ] || hdr=(-H "Host: $host")
    size=$(curl -fsS -o /dev/null -w '%{size_download}' "${hdr[@]}" "$url/1m.bin") || size=0
    [ "$size" = 1048576 ] || { echo "$name does not serve 1m.bin (got $size bytes)" >&2; exit 1; }
    for f in 1k 1m; do
      say "round $round/$rounds: $name $f.bin, wrk -c32 ${secs}s"
      taskset -c 1 wrk -t1 -c32 -d2s "${hdr[@]}" "$url/$f.bin" >/dev/null
      out=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" --latency "${hdr[@]}" "$url/$f.bin")
      # A fast error page is not a result: any non-2xx answer invalidates the run.
      if grep -q "Non-2xx" <<<"$out"; then echo "$name $f: $(grep Non-2xx <<<"$out")" >&2; exit 1; fi
      rps[$name.$f]+=" $(awk '/Requests\/sec/ {print $2}' <<<"$out")"
      p99[$name.$f]+=" $(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)"
    done
    say "round $round/$rounds: $name 200m.bin, curl"
    got=$(taskset -c 1 curl -fsS -o /dev/null "${hdr[@]}" -w '%{size_download} %{speed_download}' "$url/200m.bin")
    [ "${got% *}" = 209715200 ] || { echo "$name: short 200m.bin download ($got)" >&2; exit 1; }
    mbs[$name]+=" $(awk -v b="${got#* }" 'BEGIN {printf "%.0f", b / 1e6}')"
  done
done
printf '\nper-round values (req/s 1KiB | req/s 1MiB | MB/s 200MiB):\n'
for t in "${targets[@]}"; do
  name=${t%%|*}
  printf '  %-11s %s |%s |%s\n' "$name" "${rps[$name.1k]}" "${rps[$name.1m]}" "${mbs[$name]}"
  for k in 1k 1m; do
    rps[$name.$k]=$(median <<<"${rps[$name.$k]}")
    p99[$name.$k]=$(median <<<"${p99[$name.$k]}")
  done
  mbs[$name]=$(median <<<"${mbs[$name]}")
done

say "edge memory with $idle idle agent sessions"
rss() { awk '/VmRSS/ {print $2}' "/proc/$serve_pid/status"; }
before=$(rss)
taskset -c 0 "$CARGO_TARGET_DIR/release/examples/idle_agents" "$idle" 127.0.1.1:24443 "$work/m/ca.pem" "$token" \
  >"$work/idle.out" 2>&1 & pids+=($!)
for _ in $(seq 1200); do grep -q "^ready" "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
grep -q "^ready $idle" "$work/idle.out" || { echo "idle agents failed: $(tail -3 "$work/idle.out")" >&2; exit 1; }
after=$(rss)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
printf '\nmedians of %d rounds\n%-11s %12s %10s %12s %10s %12s\n' "$rounds" path "1KiB req/s" "p99 ms" "1MiB req/s" "p99 ms" "200MiB MB/s"
for t in "${targets[@]}"; do
  name=${t%%|*}
  printf '%-11s %12.0f %10.2f %12.0f %10.2f %12s\n' "$name" "${rps[$name.1k]}" "${p99[$name.1k]}" \
    "${rps[$name.1m]}" "${p99[$name.1m]}" "${mbs[$name]}"
done
printf '\nMeridian / peer (req/s 1KiB, req/s 1MiB, MB/s 200MiB; p99 1KiB as peer/Meridian is the inverse):\n'
for peer in rathole rathole-tls bore direct; do
  printf '  vs %-11s req/s 1KiB %s  req/s 1MiB %s  MB/s %s  p99 1KiB %s of the peer\n' "$peer" \
    "$(ratio "${rps[meridian.1k]}" "${rps[$peer.1k]}")" "$(ratio "${rps[meridian.1m]}" "${rps[$peer.1m]}")" \
    "$(ratio "${mbs[meridian]}" "${mbs[$peer]}")" "$(ratio "${p99[meridian.1k]}" "${p99[$peer.1k]}")"
done
printf '\nedge RSS: %d MiB before, %d MiB with %d idle agent sessions (+%d KiB per session)\n' \
  $((before / 1024)) $((after / 1024)) "$idle" $(((after - before) / idle))
