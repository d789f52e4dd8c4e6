#!/usr/bin/env bash
# The GeoDNS benchmark, in one run: dnsperf against Meridian's DNS server (inside `meridian
# serve`), gdnsd with its geoip plugin, and Knot with mod-geoip, on equivalent data, each
# server pinned to CPU 0 with one UDP worker and dnsperf on CPU 1. Every query carries an EDNS
# Client Subnet (198.51.100.0/24, placed in Germany by the benchmark's own GeoIP database).
# Prints queries/s and server CPU time per query, and Meridian's ratio to each peer; then
# Meridian again with 100,000 reserved domains (rate and resident memory).
#
#   bench/dns/run.sh [seconds per run, default 10] [rounds, default 3]
#
# Data: ten names dN.bench.example, even N global (nearest of eight PoPs), odd N pinned to
# us-cal-1 and eu. gdnsd and Meridian rank PoPs by distance from the client's coordinates; Knot
# can only map a country to a record, so it gets one rule per country. All three answer
# Frankfurt's address (127.0.1.3) to the German subnet, which the script checks with dig first.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
rounds=${2:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

say() { printf '\n==> %s\n' "$*" >&2; }
need=()
for tool in dnsperf:dnsperf gdnsd:gdnsd knotd:knot dig:bind9-dnsutils; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
[ -e /usr/lib/x86_64-linux-gnu/knot/modules-3.2/geoip.so ] || dpkg -s knot-module-geoip >/dev/null 2>&1 \
  || need+=(knot-module-geoip)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

say "building meridian (release) and the benchmark's helpers"
cargo build -q --release --locked -p meridian -p meridian-store -p meridian-dns --bins --examples
bin=$CARGO_TARGET_DIR/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

"$bin/examples/write_geoip" "$work/City.mmdb"
ECS="8:00011800c63364"          # family 1, source /24, scope 0, 198.51.100
pops=(us us-cal-1 eu au ap jp sa in)
lat=(39.96 37.34 50.11 -33.87 1.35 35.68 -23.55 19.08)
lon=(-83.00 -121.89 8.68 151.21 103.82 139.69 -46.63 72.88)
for n in $(seq 0 9); do echo "d$n.bench.example A"; done >"$work/q10.txt"

free_port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_dns() { # port: until the server answers
  for _ in $(seq 600); do
    dig +short +tries=1 +time=1 -p "$1" @127.0.0.1 d1.bench.example A 2>/dev/null | grep -q . && return 0
    sleep 0.05
  done
  echo "no DNS answer on port $1; logs in $work (KEEP=1 keeps them)" >&2; exit 1
}
check() { # name port: the German client must get Frankfurt for a pinned and a global name
  for q in d1 d0; do
    got=$(dig +short +tries=1 -p "$2" @127.0.0.1 "$q.bench.example" A +subnet=198.51.100.0/24)
    [ "$got" = 127.0.1.3 ] || { echo "$1 answered '$got' for $q, expected 127.0.1.3" >&2; exit 1; }
  done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# ---- gdnsd ----
gd=$work/gdnsd; mkdir -p "$gd/zones" "$gd/run" "$gd/state"
gd_port=$(free_port)
{
  echo "options => { listen => [ 127.0.0.1:$gd_port ], udp_threads => 1, tcp_threads => 1,"
  echo "  run_dir => $gd/run, state_dir => $gd/state }"
  echo "plugins => { geoip => { undefined_datacenters_ok => true,"
  echo "  maps => { world => { geoip2_db => $work/City.mmdb, datacenters => [${pops[*]}],"
  echo -n "    auto_dc_limit => 0, auto_dc_coords => {"
  for i in "${!pops[@]}"; do echo -n " ${pops[$i]} => [ ${lat[$i]}, ${lon[$i]} ],"; done
  echo " } } }"
  echo -n "  resources => { global => { map => world, dcmap => {"
  for i in "${!pops[@]}"; do echo -n " ${pops[$i]} => 127.0.1.$((i + 1)),"; done
  echo " } },"
  echo "    pinned => { map => world,"
  echo "      dcmap => { us-cal-1 => 127.0.1.2, eu => 127.0.1.3 } } }"
  echo "} }"
} >"$gd/config"
{
  echo '$TTL 30'
  echo '@ SOA ns1 hostmaster 1 3600 600 86400 30'
  echo '@ NS ns1'
  echo 'ns1 A 127.0.0.1'
  for n in $(seq 0 9); do
    if [ $((n % 2)) = 0 ]; then echo "d$n 30 DYNA geoip!global"; else echo "d$n 30 DYNA geoip!pinned"; fi
  done
} >"$gd/zones/bench.example"

# ---- Knot ----
kn=$work/knot; mkdir -p "$kn"
kn_port=$(free_port)
cat >"$kn/knot.conf" <<CONF
server:
    listen: 127.0.0.1@$kn_port
    rundir: $kn
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    edns-client-subnet: on
database:
    storage: $kn
mod-geoip:
  - id: geo
    config-file: $kn/geo.conf
    ttl: 30
    mode: geodb
    geodb-file: $work/City.mmdb
    geodb-key: [ country/iso_code ]
zone:
  - domain: bench.example
    storage: $kn
    file: bench.example.zone
    module: mod-geoip/geo
CONF
{
  echo '$TTL 30'
  echo '@ SOA ns1 hostmaster 1 3600 600 86400 30'
  echo '@ NS ns1'
  echo 'ns1 A 127.0.0.1'
  for n in $(seq 0 9); do echo "d$n A 127.0.1.1"; done
} >"$kn/bench.example.zone"
{
  for n in $(seq 0 9); do
    echo "d$n.bench.example:"
    if [ $((n % 2)) = 0 ]; then
      printf '  - geo: "DE"\n    A: 127.0.1.3\n  - geo: "JP"\n    A: 127.0.1.6\n  - geo: "US"\n    A: 127.0.1.2\n'
    else
      printf '  - geo: "DE"\n    A: 127.0.1.3\n  - geo: "JP"\n    A: 127.0.1.2\n  - geo: "US"\n    A: 127.0.1.2\n'
    fi
  done
} >"$kn/geo.conf"

# ---- Meridian ----
start_meridian() { # dir count port
  mkdir -p "$1"
  "$bin/examples/seed_domains" "sqlite://$1/meridian.db" "$2"
  RUST_LOG=warn taskset -c 0 "$bin/meridian" serve --data-dir "$1" --api-listen 127.0.0.1:0 \
    --agent-port 0 --http-port 0 --https-port 0 --dns-listen "127.0.0.1:$3" \
    --geoip "$work/City.mmdb" >"$1/out" 2>"$1/err" &
  pids+=($!)
  echo $! >"$1/pid"
}

say "starting gdnsd, Knot and Meridian on CPU 0"
taskset -c 0 gdnsd -c "$gd" start >"$gd/log" 2>&1 & pids+=($!); gd_pid=$!
taskset -c 0 knotd -c "$kn/knot.conf" -s "$kn/knot.sock" >"$kn/log" 2>&1 & pids+=($!); kn_pid=$!
m_port=$(free_port)
start_meridian "$work/m10" 10 "$m_port"; m_pid=$(cat "$work/m10/pid")
wait_dns "$gd_port"; wait_dns "$kn_port"; wait_dns "$m_port"
check gdnsd "$gd_port"; check knot "$kn_port"; check meridian "$m_port"

run() { # label pid port queryfile -> appends "label qps cpu_us_per_query" to results
  local before after out qps done_q
  before=$(cpu_ticks "$2")
  out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$3" -d "$4" -l "$secs" -c 4 -T 1 -q 200 -E "$ECS" 2>&1)
  after=$(cpu_ticks "$2")
  qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
  done_q=$(awk '/Queries completed/ {print $3}' <<<"$out")
  local lost; lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  local tck; tck=$(getconf CLK_TCK)
  local us; us=$(python3 -c "print(round(($after-$before)/$tck*1e6/max($done_q,1),2))")
  printf '%-18s %12.0f q/s  %6.2f us CPU/query  lost %s\n' "$1" "$qps" "$us" "$lost" >&2
  echo "$1 $qps $us" >>"$work/results"
}

for r in $(seq "$rounds"); do
  say "round $r of $rounds, ${secs}s each"
  run gdnsd "$gd_pid" "$gd_port" "$work/q10.txt"
  run knot "$kn_pid" "$kn_port" "$work/q10.txt"
  run meridian "$m_pid" "$m_port" "$work/q10.txt"
done
kill "$gd_pid" "$kn_pid" 2>/dev/null || true

say "Meridian with 100,000 reserved domains"
m100_port=$(free_port)
start_meridian "$work/m100k" 100000 "$m100_port"; m100_pid=$(cat "$work/m100k/pid")
wait_dns "$m100_port"; check meridian-100k "$m100_port"
rss_idle=$(awk '/VmRSS/ {print $2}' "/proc/$m100_pid/status")
python3 - "$work/q100k.txt" <<'PY'
import random, sys
random.seed(7)
with open(sys.argv[1], "w") as f:
    for _ in range(100000):
        f.write(f"d{random.randrange(100000)}.bench.example A\n")
PY
for r in $(seq "$rounds"); do
  run meridian-10 "$m_pid" "$m_port" "$work/q10.txt"
  run meridian-100k "$m100_pid" "$m100_port" "$work/q100k.txt"
done
rss_after=$(awk '/VmRSS/ {print $2}' "/proc/$m100_pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$m100_pid/status")

say "results (medians of $rounds rounds)"
python3 - "$work/results" "$rss_idle" "$rss_after" "$hwm" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, qps, us = line.split()
    rows.setdefault(label, []).append((float(qps), float(us)))
med = {k: (statistics.median(q for q, _ in v), statistics.median(u for _, u in v)) for k, v in rows.items()}
print(f"{'server':<16}{'queries/s':>12}{'CPU us/query':>14}")
for k in ["gdnsd", "knot", "meridian", "meridian-10", "meridian-100k"]:
    if k in med:
        print(f"{k:<16}{med[k][0]:>12,.0f}{med[k][1]:>14.2f}")
m = med["meridian"]
for peer in ["gdnsd", "knot"]:
    p = med[peer]
    print(f"meridian / {peer:<6} queries/s {m[0] / p[0]:.2f}x   CPU per query {m[1] / p[1]:.2f}x")
small, big = med["meridian-10"], med["meridian-100k"]
print(f"meridian 100k domains / 10 domains: queries/s {big[0] / small[0]:.2f}x   "
      f"CPU per query {big[1] / small[1]:.2f}x")
idle, after, hwm = (int(x) / 1024 for x in sys.argv[2:5])
print(f"meridian resident memory with 100k domains: {idle:.0f} MiB loaded, {after:.0f} MiB after load, peak {hwm:.0f} MiB")
PY
