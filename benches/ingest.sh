#!/usr/bin/env bash
# Ingest benchmark: nagare (decode + enrichment + session folding + rollups) against
# nfcapd (nfdump) and nfacctd (pmacct), each driven by the same load generator at
# increasing rates: by default the neutral ../shared/tools/nfblast.c (NetFlow v9 or
# IPFIX, every record a new flow); with --generator site, `nagare gen`'s 500-VM data
# centre (ESXi hosts' IPFIX with VMware's elements, switches' NetFlow v9, flows that
# recur), whose generator tops out at a few ten thousand records/s on this machine.
#
# nagare enriches as a deployment does: with the site's inventory (`nagare gen
# --write-inventory`: 500 VMs on ESXi hosts, port groups, switches) and the real
# country database of ../shared/geoip, so every record's ends go through the subnet,
# VM/host and GeoIP tables.
#
# Every collector gets the same socket receive buffer (32 MiB requested; the kernel
# caps it at net.core.rmem_max). For every collector and rate: a fresh collector, a
# warm-up of WARMUP seconds at the rate (tables, buffers and caches filled, as in a
# running collector), then SECONDS of measured load. Reported: records sent and stored
# (all phases), kernel socket drops, and the collector's CPU time (user + system, all
# threads) during the measured phase and the drain after it, per million records, and
# its split into user and system time (the ticks of /proc/PID/stat: at 100 k records/s
# over 4 s, one tick is 0.025 s/1M). A rate is lossless when every record sent was
# stored.
#
# With --repeat N, every rate runs N times per collector, the collectors interleaved
# (this machine's speed drifts by tens of percent within minutes); a rate is lossless
# when every run of it was, and its CPU figure is the median of the runs.
#
# Usage: benches/ingest.sh [--generator nfblast|site] [--version 9] [--seconds 4]
#                          [--warmup 2] [--repeat 1] [--rates "100000 400000 ..."]
# Needs: gcc, nfcapd + nfdump, nfacctd (pmacct). Run from the repository root.
set -euo pipefail

VERSION=9
SECONDS_PER_RUN=4
WARMUP=2
RATES=""
RCVBUF=33554432
REPEAT=1
GENERATOR=nfblast
while [ $# -gt 0 ]; do
  case "$1" in
    --generator) GENERATOR=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# nfacctd's records are counted as its packet total (nfblast sends one packet per
# record); the site's records carry many packets, so nfacctd sits that one out
case $GENERATOR in
  nfblast) RATES=${RATES:-"100000 200000 400000 800000 1600000 3200000"}
    COLLECTORS="nagare nfcapd nfacctd" ;;
  site) RATES=${RATES:-"5000 10000 20000"}
    COLLECTORS="nagare nfcapd" ;;
  *) echo "unknown generator $GENERATOR (nfblast or site)" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${NAGARE_SHARED_DIR:-$ROOT/../shared}
WORK=$(mktemp -d /tmp/nagare-ingest.XXXXXX)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$WORK"' EXIT

for t in gcc nfcapd nfdump nfacctd; do
  command -v $t >/dev/null || { echo "ingest bench needs $t (.ci/run installs it)" >&2; exit 1; }
done
gcc -O2 -o "$WORK/nfblast" "$SHARED/tools/nfblast.c"
GEOIP=$SHARED/geoip/geo-whois-asn-country.mmdb
[ -r "$GEOIP" ] || { echo "ingest bench needs the country database $GEOIP" >&2; exit 1; }
echo "building nagare (release) ..." >&2
(cd "$ROOT" && cargo build --release --quiet)
NAGARE=$ROOT/target/release/nagare
INVENTORY=$WORK/inventory.toml
"$NAGARE" gen --to 127.0.0.1:9 --write-inventory "$INVENTORY" >/dev/null 2>"$WORK/gen.err" ||
  { cat "$WORK/gen.err" >&2; exit 1; }
TICK=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU ticks of processes, summed: "user system"
cpu_of() {
  local ut=0 st=0 p
  for p in "$@"; do
    [ -r /proc/$p/stat ] || continue
    local f; f=$(sed 's/.*) //' /proc/$p/stat)
    ut=$((ut + $(echo "$f" | awk '{print $12}')))
    st=$((st + $(echo "$f" | awk '{print $13}')))
  done
  echo "$ut $st"
}

# kernel drops of the UDP socket bound to a port (all sockets on it)
drops_of() {
  local hex; hex=$(printf '%04X' "$1")
  awk -v p=":$hex" '$2 ~ p"$" {d+=$NF} END {print d+0}' /proc/net/udp
}

nagare_stored() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^nagare_rollup_records_total/ {s+=$2} END {printf "%d\n", s}'
}

# send PORT RATE SECONDS SEED -> sends that much traffic, prints the records sent
send() {
  if [ "$GENERATOR" = site ]; then
    "$NAGARE" gen --to 127.0.0.1:$1 --rate "$2" --duration "$3" --seed "$4" 2>&1 |
      awk '/^gen: sent/ {print $3}'
  else
    "$WORK/nfblast" -p $1 -v "$VERSION" -r "$2" -n $(($2 * $3)) -s "$4" >/dev/null
    echo $(($2 * $3))
  fi
}

# run_one COLLECTOR RATE RUN -> prints "sent stored drops user_ticks system_ticks measured_records"
run_one() {
  local c=$1 rate=$2 port pids dir n w=0
  port=$(free_port)
  dir=$WORK/$c-$rate-$3
  mkdir -p "$dir"
  case $c in
    nagare)
      local http; http=$(free_tcp_port)
      "$NAGARE" serve --listen 127.0.0.1:$port --http 127.0.0.1:$http --state-dir "$dir" \
        --inventory "$INVENTORY" --geoip "$GEOIP" --log error >/dev/null 2>&1 &
      pids=$!
      for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.1; done
      ;;
    nfcapd)
      nfcapd -w "$dir" -b 127.0.0.1 -p $port -t 3600 -B $RCVBUF >/dev/null 2>&1 &
      pids=$!
      sleep 1
      ;;
    nfacctd)
      cat > "$dir/nfacctd.conf" <<EOF
daemonize: false
nfacctd_port: $port
nfacctd_ip: 127.0.0.1
plugins: print[p]
aggregate[p]: proto
print_output[p]: csv
print_output_file[p]: $dir/out.csv
print_output_file_append[p]: true
print_refresh_time[p]: 1
nfacctd_pipe_size: $RCVBUF
EOF
      nfacctd -f "$dir/nfacctd.conf" >/dev/null 2>&1 &
      pids=$!
      sleep 1
      ;;
  esac
  if [ "$WARMUP" -gt 0 ]; then
    w=$(send $port "$rate" "$WARMUP" 1)
    sleep 1
  fi
  local all; all="$pids $({ pgrep -P "$pids" || true; } | tr '\n' ' ')"
  local cpu0; cpu0=$(cpu_of $all)
  n=$(send $port "$rate" "$SECONDS_PER_RUN" 2)
  # drain: until the stored count stops moving (nagare) or a fixed settle time
  local stored=0
  if [ "$c" = nagare ]; then
    local last=-1
    for _ in $(seq 1 60); do
      stored=$(nagare_stored "$http")
      [ "$stored" = "$last" ] && [ "$stored" -gt 0 ] && break
      last=$stored; sleep 0.5
    done
  else
    sleep 3
  fi
  all="$pids $({ pgrep -P "$pids" || true; } | tr '\n' ' ')"
  local cpu1; cpu1=$(cpu_of $all)
  local drops; drops=$(drops_of $port)
  case $c in
    nagare) kill -TERM $pids; wait $pids 2>/dev/null || true ;;
    nfcapd)
      kill -TERM $pids; wait $pids 2>/dev/null || true
      stored=$(nfdump -R "$dir" -I 2>/dev/null | awk '/^Flows:/ {print $2}')
      ;;
    nfacctd)
      sleep 1
      kill -INT $pids; wait $pids 2>/dev/null || true
      stored=$(awk -F, '$1!="PROTOCOL" {s+=$2} END {printf "%d\n", s}' "$dir/out.csv" 2>/dev/null)
      ;;
  esac
  local u0 s0 u1 s1
  read -r u0 s0 <<< "$cpu0"
  read -r u1 s1 <<< "$cpu1"
  echo "$((n + w)) ${stored:-0} $drops $((u1 - u0)) $((s1 - s0)) $n"
}

echo
if [ "$GENERATOR" = site ]; then
  what="nagare gen's 500-VM site (IPFIX with VMware's elements, NetFlow v9)"
else
  what="NetFlow v$VERSION from nfblast"
fi
echo "== ingest: $what, ${WARMUP}s warm-up + ${SECONDS_PER_RUN}s measured per run, $REPEAT run(s) per rate, $(nproc) cores =="
printf "%-8s %10s %10s %10s %8s %12s %18s\n" collector "rate/s" sent stored drops "CPU s/1M rec" "(user + system)"
declare -A BEST CPU_AT RUNS LOST
for rate in $RATES; do
  for k in $(seq 1 "$REPEAT"); do
    for c in $COLLECTORS; do
      read -r sent stored drops uticks sticks measured < <(run_one $c $rate $k)
      per_m=$(awk -v t=$((uticks + sticks)) -v hz=$TICK -v n=$measured 'BEGIN {if (n > 0) printf "%.3f", (t / hz) / (n / 1e6); else print "-"}')
      split=$(awk -v u=$uticks -v s=$sticks -v hz=$TICK -v n=$measured 'BEGIN {if (n > 0) printf "(%.3f + %.3f)", (u / hz) / (n / 1e6), (s / hz) / (n / 1e6); else print "-"}')
      mark=""
      if [ "$stored" = "$sent" ]; then
        RUNS[$c,$rate]="${RUNS[$c,$rate]:-} $per_m"
      else
        LOST[$c,$rate]=1
        mark=" (loss)"
      fi
      printf "%-8s %10s %10s %10s %8s %12s %18s%s\n" $c $rate $sent $stored $drops $per_m "$split" "$mark"
    done
  done
  for c in $COLLECTORS; do
    if [ -z "${LOST[$c,$rate]:-}" ] && [ -n "${RUNS[$c,$rate]:-}" ]; then
      BEST[$c]=$rate
      CPU_AT[$c,$rate]=$(echo ${RUNS[$c,$rate]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
    fi
  done
done

echo
echo "== summary =="
common=""
for rate in $RATES; do
  all_lossless=1
  for c in $COLLECTORS; do [ -n "${CPU_AT[$c,$rate]:-}" ] || all_lossless=""; done
  [ -n "$all_lossless" ] && common=$rate
done
printf "%-8s %22s %28s\n" collector "highest lossless rate" "CPU s/1M rec at ${common:-?}/s"
for c in $COLLECTORS; do
  printf "%-8s %22s %28s\n" $c "${BEST[$c]:-none}" "${CPU_AT[$c,$common]:--}"
done
if [ -n "${BEST[nagare]:-}" ] && [ -n "${BEST[nfcapd]:-}" ]; then
  awk -v a=${BEST[nagare]} -v b=${BEST[nfcapd]} 'BEGIN {printf "nagare / nfcapd lossless rate: %.2f\n", a / b}'
fi
if [ -n "$common" ]; then
  awk -v a=${CPU_AT[nagare,$common]} -v b=${CPU_AT[nfcapd,$common]} 'BEGIN {printf "nagare / nfcapd CPU per record at %s/s: %s\n", "'$common'", (b > 0 ? sprintf("%.2f", a / b) : "n/a (no tick counted)")}'
fi
echo
echo "== CPU per record (median of $REPEAT), nagare / nfcapd, at every rate both stored losslessly =="
for rate in $RATES; do
  if [ -n "${CPU_AT[nagare,$rate]:-}" ] && [ -n "${CPU_AT[nfcapd,$rate]:-}" ]; then
    awk -v r=$rate -v a=${CPU_AT[nagare,$rate]} -v b=${CPU_AT[nfcapd,$rate]} \
      'BEGIN {printf "%10s/s  nagare %6.3f  nfcapd %6.3f  ratio %s\n", r, a, b, (b > 0 ? sprintf("%.2f", a / b) : "n/a")}'
  fi
done
