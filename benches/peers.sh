#!/usr/bin/env bash
# benches/peers.sh: readyserve beside nginx, lighttpd and a `limit` probe, measured with wrk
# on loopback in one run. Everything it needs is in this repository; see usage() below.
#
# How it measures, and why:
# - wrk gets its own core (1) and the servers theirs (0), so they do not steal each other's
#   CPU. wrk -t1 saturates before a good server does on small files, so req/s alone says
#   little there: each server's own CPU time per request (utime + stime from /proc/PID/stat,
#   for nginx its worker) shows its efficiency even when the client is the bottleneck.
# - Within a repetition the servers take turns scenario by scenario, and the order rotates
#   from one repetition to the next, so slow drifts of the machine hit every server alike.
#   Figures are medians over repetitions; ratios are medians of per-repetition ratios.
# - Every process the script starts is recorded by PID and stopped on exit (trap), and every
#   wrk run is bounded by `timeout`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: benches/peers.sh [--quick] [--reps N] [--duration SECONDS] [--port-base N]
                        [--no-pin] [--only LIST] [--baseline BIN] [--out FILE] [--help]

Benchmarks readyserve's release build against peers, side by side, on 127.0.0.1 only:
  nginx        nginx, 1 worker, sendfile on, tcp_nopush on (the stock static setup)
  nginx-tuned  nginx, 1 worker, sendfile off, open_file_cache (better on small files)
  lighttpd     lighttpd, defaults (sendfile)
  limit        benches/limit-probe: a fixed-response mio loop with no parsing and no file
               I/O; its CPU per request is the floor for any server on this machine

Scenarios (wrk -t1; content is generated into a temporary directory):
  index-c64        index.html (805 B), 64 keep-alive connections; key figure: CPU/request
  index-c256       index.html, 256 connections, wrk --latency: p50 and p99 latency
  100k-c64         a 100 KiB file, 64 connections: MiB/s
  10m-c8           a 10 MiB file, 8 connections: MiB/s and CPU per response
  pipe16-c64       index.html, 16 requests per write (benches/pipeline.lua), 64 connections
  front-index-c64  behind one nginx front (1 worker, HTTP/1.1 keep-alive upstream pool of 64)
  front-10m-c8     the same for the 10 MiB file; upstreams: readyserve, lighttpd, nginx.
                   The CPU column is the UPSTREAM's; the front's is shown beside it.

Columns (per server and scenario, medians over repetitions):
  req/s, MiB/s     wrk's throughput (req/s also its min-max over repetitions)
  cpu us           the server's own CPU time per request (utime + stime from /proc; for
                   nginx its worker; behind the front, the upstream's)
  core us          core 0's busy time per request (/proc/stat): the server's core, with
                   the kernel's work done there for either side. On loopback the CPU that
                   transmits a segment also delivers it into the receiver's socket, and
                   that work is charged to whichever process was running: so "cpu us" can
                   rise while the server's core does less (see the README)
  front us         behind the front: the front nginx's CPU time per request
                   (utime + stime of its worker)
  wrk us           core 1's busy time per request (/proc/stat), less the front's: the
                   client's share, with the kernel's work done on its core
  wrk%             how busy core 1 was: near 100, the client sets the pace
  p50 ms, p99 ms   latency (index-c256)
  core us, wrk us, wrk% and the core/req, wrk/req and all/req ratios need pinning: "-"
  with --no-pin. They are the cores' whole busy time (/proc/stat): anything else running
  on a core counts too, so run on an otherwise idle machine.
Ratios, readyserve / peer (medians of per-repetition ratios): req/s, MiB/s, cpu/req,
  core/req, wrk/req, all/req (both cores' busy time per request: the whole machine's
  cost), p99.

Options:
  --quick          one repetition of 2 s per run (about 1 min 15 s)
  --reps N         repetitions (default 3); the table gives medians
  --duration S     seconds per wrk run (default 5)
  --port-base N    ports N+1 .. N+14 on 127.0.0.1 are used (default 18200)
  --no-pin         do not pin processes to cores (default: servers on core 0, wrk on core 1;
                   behind the front: upstream on core 0, front nginx and wrk on core 1)
  --only LIST      run only these scenarios (comma-separated names from the list above)
  --baseline BIN   also run another readyserve binary (e.g. the main branch's build) as
                   the server "baseline", in the same rotation (behind the front too):
                   the ratios table then gives new / baseline, measured in the same minutes
  --out FILE       also save the raw per-run results (TSV) to FILE
  --help           this text

Needs cargo; installs wrk, nginx-light, lighttpd and curl with apt-get when they are missing.
A full run (3 x 5 s) takes about 9 minutes after the builds.
EOF
}

REPS=3
DUR=5
PIN=1
OUT=""
ONLY=""
BASELINE=""
PORT_BASE=18200
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) REPS=1; DUR=2; shift ;;
    --reps) REPS=${2:?--reps needs a number}; shift 2 ;;
    --duration) DUR=${2:?--duration needs seconds}; shift 2 ;;
    --port-base) PORT_BASE=${2:?--port-base needs a port}; shift 2 ;;
    --no-pin) PIN=0; shift ;;
    --out) OUT=${2:?--out needs a file}; shift 2 ;;
    --only) ONLY=${2:?--only needs scenario names}; shift 2 ;;
    --baseline) BASELINE=${2:?--baseline needs a binary}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "peers.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$REPS" "$DUR" "$PORT_BASE"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "peers.sh: not a positive number: $n" >&2; exit 2; }
done
if [ "$PORT_BASE" -lt 1024 ] || [ "$PORT_BASE" -gt $((65535 - 14)) ]; then
  echo "peers.sh: --port-base must be 1024..$((65535 - 14)) (ports N+1..N+14 are used)" >&2
  exit 2
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$BASELINE" ]; then
  [ -x "$BASELINE" ] || { echo "peers.sh: --baseline: not an executable: $BASELINE" >&2; exit 2; }
  BASELINE=$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")
fi
say() { printf '%s\n' "$*"; }
die() { printf 'peers.sh: %s\n' "$*" >&2; exit 1; }

# Scenario table: NAME|CONNECTIONS|PATH|WHO|WRK-EXTRA. WHO: all (with limit), files (no
# limit: it serves one page), front (each upstream behind its nginx front).
SCENARIOS=(
  "index-c64|64|/index.html|all|"
  "index-c256|256|/index.html|all|--latency"
  "100k-c64|64|/100k.bin|files|"
  "10m-c8|8|/10m.bin|files|"
  "pipe16-c64|64|/|all|pipeline"
  "front-index-c64|64|/index.html|front|"
  "front-10m-c8|8|/10m.bin|front|"
)
ALL=(readyserve ${BASELINE:+baseline} nginx nginx-tuned lighttpd limit)
FILES=(readyserve ${BASELINE:+baseline} nginx nginx-tuned lighttpd)
if [ -n "$ONLY" ]; then   # checked now, before a minute of building
  IFS=',' read -r -a wanted <<<"$ONLY"
  for w in "${wanted[@]}"; do
    found=0
    for sc in "${SCENARIOS[@]}"; do [ "${sc%%|*}" = "$w" ] && found=1; done
    [ $found = 1 ] || die "--only: no such scenario: $w (see --help)"
  done
  picked=()
  for sc in "${SCENARIOS[@]}"; do
    case ",$ONLY," in *",${sc%%|*},"*) picked+=("$sc") ;; esac
  done
  SCENARIOS=("${picked[@]}")
fi

# --- tools ------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo is needed (https://rustup.rs)"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v lighttpd >/dev/null || [ -x /usr/sbin/lighttpd ] || missing+=(lighttpd)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing: ${missing[*]} (and no apt-get to install them)"
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  say "installing: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin
for tool in wrk nginx lighttpd curl taskset timeout; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
if [ "$PIN" = 1 ] && [ "$(nproc)" -lt 2 ]; then
  say "only one core: not pinning"
  PIN=0
fi

# --- builds -------------------------------------------------------------------------------
say "building readyserve (release) and benches/limit-probe ..."
(cd "$REPO" && cargo build --release --quiet)
CARGO_TARGET_DIR="$REPO/target/limit-probe" \
  cargo build --release --quiet --manifest-path "$REPO/benches/limit-probe/Cargo.toml"
READYSERVE="$REPO/target/release/readyserve"
PROBE="$REPO/target/limit-probe/release/limit-probe"

# --- processes and cleanup ----------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/readyserve-peers.XXXXXX")
ROOT="$WORK/public"
RES="$WORK/results.tsv"
declare -A PORT=() PID=() CPUPID=()
STARTED=()   # every PID we started (server processes, nginx workers), for cleanup
WRK_PID=""   # the wrk run in progress, if any

# State of a process ("" if it is gone). Fields are counted after the ")" that ends the
# command name, which may itself contain spaces.
proc_state() { sed -n 's/^.*) \([A-Za-z]\).*$/\1/p' "/proc/$1/stat" 2>/dev/null || true; }
alive() { local s; s=$(proc_state "$1"); [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]; }

cleanup() {
  local p i
  trap - EXIT INT TERM
  if [ -n "$WRK_PID" ]; then kill -TERM "$WRK_PID" 2>/dev/null || true; fi
  for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 50); do   # up to 5 s for a graceful stop
    local any=0
    for p in "${STARTED[@]}"; do if alive "$p"; then any=1; fi; done
    [ $any = 0 ] && break
    sleep 0.1
  done
  for p in "${STARTED[@]}"; do if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SRV_PIN=()
FRONT_PIN=()
WRK_CMD=(wrk)
if [ "$PIN" = 1 ]; then
  SRV_PIN=(taskset -c 0)
  FRONT_PIN=(taskset -c 1)
  WRK_CMD=(taskset -c 1 wrk)
fi

port_free() { # curl exit code 7: nothing listens there
  local rc=0
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" || rc=$?
  [ $rc = 7 ]
}

# start NAME PORT CMD...: CMD must exec the server itself, so that $! is the server's PID.
start() {
  local name=$1 port=$2 i
  shift 2
  port_free "$port" || die "127.0.0.1:$port is in use; try --port-base"
  "$@" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  STARTED+=("$!")
  PORT[$name]=$port
  CPUPID[$name]=$!
  for i in $(seq 100); do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/index.html"; then
      return 0
    fi
    alive "${PID[$name]}" || break
    sleep 0.1
  done
  sed 's/^/    /' "$WORK/$name.log" >&2
  die "$name did not come up on 127.0.0.1:$port (its log is above)"
}

# nginx's master forks the worker that does the work: CPU and memory are measured there.
adopt_nginx_worker() {
  local name=$1 master=${PID[$1]} worker
  worker=$(awk '{print $1}' "/proc/$master/task/$master/children" 2>/dev/null || true)
  [ -n "$worker" ] || die "$name: no worker process found"
  CPUPID[$name]=$worker
  STARTED+=("$worker")
}

# nginx_conf NAME PORT DIRECTIVES...: a one-worker nginx whose files all live under $WORK.
nginx_conf() {
  local name=$1 port=$2 dir="$WORK/$1"
  shift 2
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
user $(id -un) $(id -gn);
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log off;
  # wrk keeps its connections for the whole run: do not make nginx close them every 1000
  # requests (its default), which no other server here does.
  keepalive_requests 10000000;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  $*
}
EOF
  printf '%s' "$dir/nginx.conf"
}

# --- content ------------------------------------------------------------------------------
mkdir -p "$ROOT"
{
  printf '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
  printf '<title>readyserve peer benchmark</title>\n</head>\n<body>\n<h1>A small page</h1>\n'
  for i in 1 2 3 4 5 6 7 8; do
    printf '<p>Paragraph %d: a line of text, so that the page has about 800 bytes in all.</p>\n' "$i"
  done
  printf '</body>\n</html>\n'
} >"$ROOT/index.html"
head -c 102400 /dev/urandom >"$ROOT/100k.bin"
head -c 10485760 /dev/urandom >"$ROOT/10m.bin"

# --- servers ------------------------------------------------------------------------------
P_READYSERVE=$((PORT_BASE + 1)) P_NGINX=$((PORT_BASE + 2)) P_TUNED=$((PORT_BASE + 3))
P_LIGHTTPD=$((PORT_BASE + 4)) P_LIMIT=$((PORT_BASE + 5)) P_BASELINE=$((PORT_BASE + 6))

start readyserve "$P_READYSERVE" "${SRV_PIN[@]}" "$READYSERVE" --listen "127.0.0.1:$P_READYSERVE" \
  --root "$ROOT" --access-log off --log-level warn

if [ -n "$BASELINE" ]; then
  start baseline "$P_BASELINE" "${SRV_PIN[@]}" "$BASELINE" --listen "127.0.0.1:$P_BASELINE" \
    --root "$ROOT" --access-log off --log-level warn
fi

start nginx "$P_NGINX" "${SRV_PIN[@]}" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$(
  nginx_conf nginx "$P_NGINX" "sendfile on; tcp_nopush on;
  server { listen 127.0.0.1:$P_NGINX backlog=4096; root $ROOT; }")"
adopt_nginx_worker nginx

start nginx-tuned "$P_TUNED" "${SRV_PIN[@]}" nginx -p "$WORK/nginx-tuned" \
  -e "$WORK/nginx-tuned/error.log" -c "$(
  nginx_conf nginx-tuned "$P_TUNED" "sendfile off;
  open_file_cache max=1000 inactive=60s; open_file_cache_valid 60s;
  server { listen 127.0.0.1:$P_TUNED backlog=4096; root $ROOT; }")"
adopt_nginx_worker nginx-tuned

cat >"$WORK/lighttpd.conf" <<EOF
server.document-root = "$ROOT"
server.bind = "127.0.0.1"
server.port = $P_LIGHTTPD
server.errorlog = "$WORK/lighttpd-error.log"
server.max-keep-alive-requests = 10000000
server.max-connections = 4096
server.max-fds = 8192
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html", ".bin" => "application/octet-stream" )
EOF
start lighttpd "$P_LIGHTTPD" "${SRV_PIN[@]}" lighttpd -D -f "$WORK/lighttpd.conf"

start limit "$P_LIMIT" "${SRV_PIN[@]}" "$PROBE" "127.0.0.1:$P_LIMIT" "$ROOT/index.html"

# One nginx front per upstream, all started now (an idle front costs nothing); only one
# carries load at a time. Upstream connections are HTTP/1.1 and kept alive (a pool of 64),
# as in a tuned reverse-proxy setup. proxy_max_temp_file_size 0: a large response streams
# through the front's buffers instead of being spooled to disk.
FRONT_UPSTREAMS=(readyserve ${BASELINE:+baseline} lighttpd nginx)
fp=$((PORT_BASE + 11))
for up in "${FRONT_UPSTREAMS[@]}"; do
  start "front-$up" "$fp" "${FRONT_PIN[@]}" nginx -p "$WORK/front-$up" \
    -e "$WORK/front-$up/error.log" -c "$(
    nginx_conf "front-$up" "$fp" "sendfile off;
  upstream origin { server 127.0.0.1:${PORT[$up]}; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$fp backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_max_temp_file_size 0;
    }
  }")"
  adopt_nginx_worker "front-$up"
  fp=$((fp + 1))
done

# --- sanity: every server returns the exact bytes -----------------------------------------
BAD=""
check() { # NAME PORT FILE
  local code=""
  code=$(curl -s --max-time 20 -o "$WORK/check.body" -w '%{http_code}' \
    "http://127.0.0.1:$2/$3") || true
  if [ "$code" != 200 ] || ! cmp -s "$WORK/check.body" "$ROOT/$3"; then
    say "BYTES DIFFER: $1 /$3 (HTTP ${code:-none})" >&2
    BAD="$BAD $1"
  fi
  rm -f "$WORK/check.body"
}
for name in readyserve ${BASELINE:+baseline} nginx nginx-tuned lighttpd; do
  for f in index.html 100k.bin 10m.bin; do check "$name" "${PORT[$name]}" "$f"; done
done
check limit "$P_LIMIT" index.html
for up in "${FRONT_UPSTREAMS[@]}"; do
  for f in index.html 10m.bin; do check "front-$up" "${PORT[front-$up]}" "$f"; done
done
[ -z "$BAD" ] || say "WARNING: some servers returned wrong bytes:$BAD (flagged in the table)"

# --- measuring ----------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime, fields 14 and 15 of /proc/PID/stat (12 and 13 after the ")")
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
# Busy time of core N (user + nice + system + irq + softirq, from /proc/stat), in ticks. On
# loopback the kernel delivers a segment into the receiver's socket on the CPU that transmits
# it, so which side does that work depends on the server's pacing: wrk's core shows the
# client's share of each response.
core_ticks() {
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}

# wrk_run OUTFILE WRK-ARGS...: one bounded wrk run; a signal ends it at once (see cleanup).
wrk_run() {
  local out=$1 rc=0
  shift
  timeout -k 5 $((DUR + 30)) "${WRK_CMD[@]}" "$@" >"$out" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  return $rc
}

# Pulls the figures out of wrk's report: requests, req/s, MiB/s, socket errors, non-2xx/3xx,
# p50 and p99 in ms. wrk prints sizes in units of 1024 and times with their own unit.
parse_wrk() {
  awk '
    function mib(v,  n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "KB") n /= 1024; else if (u == "GB") n *= 1024; else if (u == "TB") n *= 1048576
      else if (u == "B") n /= 1048576; return n }
    function ms(v,  n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
      return n }
    / requests in / { req = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /^Transfer\/sec:/ { mb = mib($2) }
    /Socket errors:/ { gsub(/,/, ""); se = $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { nx = $NF }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%d\t%.0f\t%.1f\t%d\t%d\t%.3f\t%.3f\n", req, rps, mb, se, nx, p50, p99 }' "$1"
}


rotate() { # K ITEMS...: the items, starting from the K-th (mod count)
  local k=$1
  shift
  local n=$#
  local items=("$@") i
  for ((i = 0; i < n; i++)); do printf '%s\n' "${items[$(((i + k) % n))]}"; done
}

say ""
say "readyserve peer benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
  "kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "peers: $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(lighttpd -v | cut -d' ' -f1)," \
  "$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
if [ "$PIN" = 1 ]; then
  say "pinning: servers on core 0, wrk on core 1; behind the front: upstream on core 0," \
    "front nginx and wrk share core 1"
else
  say "pinning: none (--no-pin)"
fi
say "runs: $REPS repetition(s) of ${DUR} s per server and scenario, wrk -t1"
say ""

# Warm-up: page caches, nginx's open_file_cache, readyserve's memory cache, upstream pools.
for name in "${ALL[@]}"; do
  wrk_run "$WORK/warm.out" -t1 -c16 -d1s "http://127.0.0.1:${PORT[$name]}/index.html" || true
done
for up in "${FRONT_UPSTREAMS[@]}"; do
  wrk_run "$WORK/warm.out" -t1 -c64 -d1s "http://127.0.0.1:${PORT[front-$up]}/index.html" || true
done

: >"$RES"
for rep in $(seq "$REPS"); do
  for sc in "${SCENARIOS[@]}"; do
    IFS='|' read -r sname conns path who extra <<<"$sc"
    case $who in
      all) members=("${ALL[@]}") ;;
      files) members=("${FILES[@]}") ;;
      front) members=("${FRONT_UPSTREAMS[@]}") ;;
    esac
    mapfile -t order < <(rotate $((rep - 1)) "${members[@]}")
    for name in "${order[@]}"; do
      port=${PORT[$name]}
      front_pid=""
      if [ "$who" = front ]; then
        port=${PORT[front-$name]}
        front_pid=${CPUPID[front-$name]}
      fi
      args=(-t1 "-c$conns" "-d${DUR}s")
      url="http://127.0.0.1:$port$path"
      case $extra in
        --latency) args+=(--latency "$url") ;;
        pipeline) args+=(-s "$REPO/benches/pipeline.lua" "$url" -- 16) ;;
        *) args+=("$url") ;;
      esac
      pid=${CPUPID[$name]}
      c0=$(cpu_ticks "$pid")
      k0=$(core_ticks 0)
      w0=$(core_ticks 1)
      t0=$(date +%s%N)
      f0=0
      [ -z "$front_pid" ] || f0=$(cpu_ticks "$front_pid")
      wrk_run "$WORK/wrk.out" "${args[@]}" || true
      c1=$(cpu_ticks "$pid")
      k1=$(core_ticks 0)
      w1=$(core_ticks 1)
      t1=$(date +%s%N)
      f1=0
      [ -z "$front_pid" ] || f1=$(cpu_ticks "$front_pid")
      IFS=$'\t' read -r req rps mib se nx p50 p99 < <(parse_wrk "$WORK/wrk.out")
      if [ "$req" = 0 ]; then   # nothing measured: show wrk's complaint
        sed 's/^/    wrk: /' "$WORK/wrk.out" | head -5 >&2
        se=$((se + 1))
      fi
      # wcpu: core 1's busy time less the front's (which shares that core): wrk and the
      # kernel's work there. all: both cores' busy time, the whole machine's. busy: how
      # much of the run core 1 was busy; near 100% the client sets the pace.
      # core: core 0's busy time, the server's core: its own CPU and the kernel's work done
      # there, for whichever socket.
      read -r cpu fcpu wcpu allcpu busy core < <(awk -v a="$c0" -v b="$c1" -v fa="$f0" \
        -v fb="$f1" -v ka="$k0" -v kb="$k1" -v wa="$w0" -v wb="$w1" -v n="$req" \
        -v hz="$CLK_TCK" -v ns="$((t1 - t0))" 'BEGIN { if (n > 0)
          printf "%.2f %.2f %.2f %.2f %.0f %.2f\n", (b - a) * 1e6 / hz / n,
            (fb - fa) * 1e6 / hz / n, ((wb - wa) - (fb - fa)) * 1e6 / hz / n,
            ((kb - ka) + (wb - wa)) * 1e6 / hz / n, (wb - wa) * 100 / hz / (ns / 1e9),
            (kb - ka) * 1e6 / hz / n; else print "0 0 0 0 0 0" }')
      # Ticks are 10 ms and the two readings are not taken at the same instant as the
      # clock: a core busy all the time can read 101%.
      [ "${busy:-0}" -le 100 ] 2>/dev/null || busy=100
      [ "$who" = front ] || fcpu=-
      if [ "$PIN" != 1 ]; then wcpu=-; allcpu=-; busy=-; core=-; fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sname" "$name" "$rep" \
        "$req" "$rps" "$mib" "$cpu" "$fcpu" "$p50" "$p99" "$se" "$nx" "$wcpu" "$allcpu" "$busy" \
        "$core" >>"$RES"
      flag=""
      if [ "$se" != 0 ] || [ "$nx" != 0 ]; then flag="  ERRORS: $se socket, $nx non-2xx/3xx"; fi
      printf '  rep %d/%d  %-16s %-12s %9s req/s %9s MiB/s %9s us/req%s\n' "$rep" "$REPS" \
        "$sname" "$name" "$rps" "$mib" "$cpu" "$flag"
    done
  done
done

# Peak resident memory of each server over the whole run (for nginx: its worker).
RSS="$WORK/rss.tsv"
: >"$RSS"
for name in "${ALL[@]}"; do
  printf '%s\t%s\n' "$name" "$(awk '/^VmHWM:/ {print $2}' "/proc/${CPUPID[$name]}/status" \
    2>/dev/null || echo 0)" >>"$RSS"
done
if [ -n "$OUT" ]; then
  { printf 'scenario\tserver\trep\trequests\treq_s\tmib_s\tcpu_us\tfront_us\tp50_ms\tp99_ms'
    printf '\tsocket_errors\tnon_2xx\twrk_us\tall_us\twrk_core_busy_pct\tserver_core_us\n'
    cat "$RES"; } >"$OUT"
fi

# --- tables -------------------------------------------------------------------------------
say ""
awk -F'\t' -v scen_order="$(printf '%s\n' "${SCENARIOS[@]}" | cut -d'|' -f1 | tr '\n' ' ')" \
  -v servers="${ALL[*]}" -v bad="$BAD" -v rssfile="$RSS" '
  function median(list,   v, n, i, j, t) {   # list: space-separated numbers
    n = split(list, v, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  function minmax(list,   v, n, i, lo, hi) {
    n = split(list, v, " "); lo = hi = v[1] + 0
    for (i = 2; i <= n; i++) { if (v[i] + 0 < lo) lo = v[i] + 0; if (v[i] + 0 > hi) hi = v[i] + 0 }
    return sprintf("%.0f-%.0f", lo, hi)
  }
  function add(key, val) { acc[key] = (key in acc) ? acc[key] " " val : val }
  function fmt(v, f) { return (v == "" || v == "-") ? "-" : sprintf(f, v) }
  # CPU figures come from 10 ms ticks: no more digits than they carry.
  function us(v) { return (v == "" || v == "-") ? "-" : sprintf(v >= 1000 ? "%.0f" : v >= 100 ? "%.1f" : "%.2f", v) }
  {
    s = $1; n = $2; r = $3
    if (!((s SUBSEP n) in seen)) { seen[s, n] = 1; who[s] = who[s] " " n }
    add(s SUBSEP n SUBSEP "rps", $5); add(s SUBSEP n SUBSEP "mib", $6)
    add(s SUBSEP n SUBSEP "cpu", $7); if ($8 != "-") add(s SUBSEP n SUBSEP "fcpu", $8)
    if ($13 != "-") { add(s SUBSEP n SUBSEP "wcpu", $13); wcpu[s, n, r] = $13
                      all[s, n, r] = $14; add(s SUBSEP n SUBSEP "busy", $15)
                      add(s SUBSEP n SUBSEP "core", $16); core[s, n, r] = $16 }
    if ($10 > 0) { add(s SUBSEP n SUBSEP "p50", $9); add(s SUBSEP n SUBSEP "p99", $10) }
    err[s, n] += $11 + $12
    rps[s, n, r] = $5; mib[s, n, r] = $6; cpu[s, n, r] = $7; p99[s, n, r] = $10; reps[s] = reps[s] " " r
  }
  END {
    while ((getline line < rssfile) > 0) { split(line, f, "\t"); rss[f[1]] = f[2] }
    ns = split(scen_order, sc, " ")
    print "Figures: medians over repetitions (req/s also min-max). cpu = the server'"'"'s own CPU"
    print "time per request (behind the front: the upstream'"'"'s; front = the front nginx'"'"'s)."
    print "wrk = the client'"'"'s share: core 1'"'"'s busy time per request, less the front'"'"'s; it"
    print "includes the kernel'"'"'s work there (on loopback a segment is delivered on the CPU that"
    print "transmits it, so a server'"'"'s pacing moves work between the cores). wrk% = how busy"
    print "core 1 was: near 100 the client sets the pace, and req/s says more about wrk than"
    print "about the server. core = core 0'"'"'s busy time per request: the server'"'"'s core, with the"
    print "kernel'"'"'s work done there for either side. (Needs pinning: \"-\" with --no-pin.)"
    printf "%-16s %-17s %9s %-15s %8s %8s %8s %8s %8s %4s %7s %7s  %s\n", "scenario", "server", "req/s",
      "(min-max)", "MiB/s", "cpu us", "core us", "front us", "wrk us", "wrk%", "p50 ms", "p99 ms",
      "errors"
    for (i = 1; i <= ns; i++) {
      s = sc[i]; m = split(who[s], members, " ")
      for (j = 1; j <= m; j++) {
        n = members[j]; k = s SUBSEP n SUBSEP
        e = err[s, n] ? err[s, n] " ERRORS" : "0"
        if (index(" " bad " ", " " n " ") || (s ~ /^front/ && index(" " bad " ", " front-" n " ")))
          e = e " BYTES-DIFFER"
        label = (s ~ /^front/) ? "nginx>" n : n
        printf "%-16s %-17s %9.0f %-15s %8.1f %8s %8s %8s %8s %4s %7s %7s  %s\n", s, label,
          median(acc[k "rps"]), "(" minmax(acc[k "rps"]) ")", median(acc[k "mib"]), us(median(acc[k "cpu"])),
          us(median(acc[k "core"])), us(median(acc[k "fcpu"])), us(median(acc[k "wcpu"])),
          fmt(median(acc[k "busy"]), "%.0f"),
          fmt(median(acc[k "p50"]), "%.2f"),
          fmt(median(acc[k "p99"]), "%.2f"), e
      }
    }
    print ""
    print "Ratios, readyserve / peer: medians of the per-repetition ratios. req/s and MiB/s:"
    print "above 1 = readyserve is faster. cpu/req and p99: below 1 = readyserve spends less;"
    print "wrk/req: below 1 = the client spends less on readyserve'"'"'s responses (where wrk% is"
    print "near 100 for both, it is about 1 / the req/s ratio); all/req: both cores'"'"' busy time"
    print "per request, the whole machine'"'"'s cost (server, front, wrk and the kernel'"'"'s work);"
    print "core/req: the server'"'"'s core alone."
    print "(limit sends a shorter head than the others, so MiB/s against it compares unlike bytes.)"
    printf "%-16s %-17s %7s %7s %8s %8s %8s %8s %7s\n", "scenario", "vs", "req/s", "MiB/s", "cpu/req",
      "core/req", "wrk/req", "all/req", "p99"
    for (i = 1; i <= ns; i++) {
      s = sc[i]; m = split(who[s], members, " "); nr = split(reps[s], rl, " ")
      for (j = 1; j <= m; j++) {
        n = members[j]; if (n == "readyserve") continue
        delete seenrep; a = b = c = d = w = t = o = ""
        for (q = 1; q <= nr; q++) {
          r = rl[q]; if (r in seenrep) continue; seenrep[r] = 1
          if (rps[s, n, r] > 0) a = a " " rps[s, "readyserve", r] / rps[s, n, r]
          if (mib[s, n, r] > 0) b = b " " mib[s, "readyserve", r] / mib[s, n, r]
          if (cpu[s, n, r] > 0) c = c " " cpu[s, "readyserve", r] / cpu[s, n, r]
          if (p99[s, n, r] > 0) d = d " " p99[s, "readyserve", r] / p99[s, n, r]
          if (wcpu[s, n, r] > 0) w = w " " wcpu[s, "readyserve", r] / wcpu[s, n, r]
          if (all[s, n, r] > 0) t = t " " all[s, "readyserve", r] / all[s, n, r]
          if (core[s, n, r] > 0) o = o " " core[s, "readyserve", r] / core[s, n, r]
        }
        label = (s ~ /^front/) ? "nginx>" n : n
        printf "%-16s %-17s %7s %7s %8s %8s %8s %8s %7s\n", s, label, fmt(median(a), "%.2f"),
          fmt(median(b), "%.2f"), fmt(median(c), "%.2f"), fmt(median(o), "%.2f"), fmt(median(w), "%.2f"),
          fmt(median(t), "%.2f"), fmt(median(d), "%.2f")
      }
    }
    print ""
    printf "Peak RSS (VmHWM) over the run, KiB:"
    ns = split(servers, sv, " ")
    for (i = 1; i <= ns; i++) printf "  %s %s", sv[i], rss[sv[i]]
    print ""
  }' "$RES"
say ""
say "finished in $((SECONDS / 60)) min $((SECONDS % 60)) s (builds included)"
