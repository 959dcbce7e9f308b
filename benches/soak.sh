#!/usr/bin/env bash
# Soak: nagare under a long stretch of the VMware site's traffic with junk mixed in and
# queries running, as on a bad day in production. For MINUTES (default 30):
#   - `nagare gen`'s 500-VM site (ESXi hosts' IPFIX with VMware's elements, switches'
#     NetFlow v9) at RATE records/s (default 10 000: half of 20 000, the highest rate
#     the site's generator reaches here, at which nagare was lossless in
#     benches/ingest.sh --generator site);
#   - junk: about 1% of the datagrams, from 250 other loopback sources (random bytes,
#     header-only IPFIX in random observation domains, templates with random ids and
#     no data, cut v9 datagrams);
#   - one query a second over HTTP (the seed queries in turn).
# nagare runs with the site's inventory and the real country database (../shared/geoip).
#
# Reported: RSS, RssAnon and the rollup store's row memory (nagare_rollup_memory_bytes:
# the history kept in the heap) every 10 s (to soak.csv); the slopes after the warm-up
# (least squares over the samples after WARMUP minutes, in % of the mean RSS per 10
# minutes), also of RSS less the store's rows, which growing history does not explain;
# records sent and stored, kernel drops, decode errors, panics, and query latency
# p50/p99/max with the count of failed queries.
#
# Usage: benches/soak.sh [--minutes 30] [--warmup 5] [--rate 10000] [--out DIR]
# Needs: python3, curl; ../shared/geoip. Run from the repository root.
set -euo pipefail

MINUTES=30
WARMUP=5
RATE=10000
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${NAGARE_SHARED_DIR:-$ROOT/../shared}
WORK=$(mktemp -d /tmp/nagare-soak.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
trap 'pkill -P $$ 2>/dev/null || true; [ -n "${NPID:-}" ] && kill -TERM $NPID 2>/dev/null; rm -rf "$WORK/state"' EXIT
for t in python3 curl; do
  command -v $t >/dev/null || { echo "soak needs $t" >&2; exit 1; }
done
GEOIP=$SHARED/geoip/geo-whois-asn-country.mmdb
[ -r "$GEOIP" ] || { echo "soak needs the country database $GEOIP" >&2; exit 1; }
echo "building nagare (release) ..." >&2
(cd "$ROOT" && cargo build --release --quiet)
NAGARE=$ROOT/target/release/nagare
INVENTORY=$WORK/inventory.toml
"$NAGARE" gen --to 127.0.0.1:9 --write-inventory "$INVENTORY" >/dev/null 2>"$WORK/gen.err" ||
  { cat "$WORK/gen.err" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s+=$2} END {printf "%d\n", s}'; }

PORT=$(free_port)
HTTP=$(free_tcp_port)
"$NAGARE" serve --listen 127.0.0.1:$PORT --http 127.0.0.1:$HTTP --state-dir "$WORK/state" \
  --inventory "$INVENTORY" --geoip "$GEOIP" --log warn 2>"$OUT/nagare.log" >/dev/null &
NPID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done
SECS=$((MINUTES * 60))
echo "== soak: ${MINUTES} min of the site at $RATE records/s, ~1% junk, a query a second; nagare pid $NPID ==" >&2

# traffic
"$NAGARE" gen --to 127.0.0.1:$PORT --rate "$RATE" --duration "$SECS" --seed 7 >"$OUT/gen.out" 2>&1 &
GPID=$!

# junk: ~1% of the site's datagrams (about 10-25 records each)
JUNK_PER_S=$(( RATE / 15 / 100 + 1 ))
python3 - "$PORT" "$SECS" "$JUNK_PER_S" >"$OUT/junk.out" 2>&1 <<'EOF' &
import os, random, socket, struct, sys, time
port, secs, per_s = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(11)
socks = []
for i in range(250):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((f"127.0.0.{i + 2}", 0))
    socks.append(s)
def junk():
    k = rng.randrange(4)
    now = int(time.time())
    if k == 0:
        return os.urandom(rng.randrange(1, 1400))
    if k == 1:  # header-only IPFIX, random domain
        return struct.pack("!HHIII", 10, 16, now, rng.randrange(1 << 32), rng.randrange(1 << 32))
    if k == 2:  # a template with a random id (and random lengths), no data
        tid = rng.randrange(256, 65536)
        fields = b"".join(struct.pack("!HH", rng.randrange(1, 500), rng.choice([1, 2, 4, 8, 16])) for _ in range(4))
        tset = struct.pack("!HH", tid, 4) + fields
        body = struct.pack("!HH", 2, 4 + len(tset)) + tset
        return struct.pack("!HHIII", 10, 16 + len(body), now, 0, rng.randrange(1 << 32)) + body
    d = struct.pack("!HHIIII", 9, 5, 1000, now, 1, 7) + os.urandom(rng.randrange(0, 200))
    return d[: rng.randrange(4, len(d) + 1)]
sent, t0 = 0, time.time()
while time.time() - t0 < secs:
    for _ in range(per_s):
        rng.choice(socks).sendto(junk(), ("127.0.0.1", port))
        sent += 1
    time.sleep(1)
print(f"junk: sent {sent}")
EOF
JPID=$!

# queries: one a second, the seeds in turn; latency of each (or FAIL)
python3 - "$HTTP" "$SECS" "$ROOT/tests/seeds.rs" >"$OUT/queries.out" 2>&1 <<'EOF' &
import json, re, sys, time, urllib.request
http, secs, seeds = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = open(seeds).read()
queries = re.findall(r'\(\s*"[A-Z0-9a-z]+",\s*"((?:[^"\\]|\\.)*)"', text)
queries = [q.encode().decode("unicode_escape") for q in queries] or ["flows"]
t0, i = time.time(), 0
while time.time() - t0 < secs:
    q = queries[i % len(queries)]
    i += 1
    req = urllib.request.Request(f"http://127.0.0.1:{http}/api/v1/query",
        data=json.dumps({"query": q}).encode(), headers={"Content-Type": "application/json"})
    s = time.time()
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        print(f"{(time.time() - s) * 1000:.1f}")
    except Exception as e:
        print(f"FAIL {e}")
    time.sleep(max(0.0, 1.0 - (time.time() - s)))
EOF
QPID=$!

# RSS every 10 s
echo "t_s,rss_kib,rss_anon_kib,store_kib" >"$OUT/soak.csv"
T0=$(date +%s)
while kill -0 $GPID 2>/dev/null; do
  t=$(( $(date +%s) - T0 ))
  rss=$(awk '/^VmRSS:/ {print $2}' /proc/$NPID/status)
  anon=$(awk '/^RssAnon:/ {print $2}' /proc/$NPID/status)
  store=$(( $(metric nagare_rollup_memory_bytes) / 1024 ))
  echo "$t,$rss,$anon,$store" >>"$OUT/soak.csv"
  if [ $((t % 300)) -lt 10 ]; then echo "  ${t}s: RSS $((rss / 1024)) MiB" >&2; fi
  sleep 10
done
wait $JPID $QPID 2>/dev/null || true
sleep 5
SENT=$(awk '/^gen: sent/ {print $3}' "$OUT/gen.out")
STORED=$(metric nagare_rollup_records_total)
DROPS=$(awk -v p=":$(printf '%04X' "$PORT")" '$2 ~ p"$" {d+=$NF} END {print d+0}' /proc/net/udp)
QDROP=$(metric nagare_rollup_queue_dropped_records_total)
DERR=$(metric nagare_decode_errors_total)
PANICS=$(( $(metric nagare_listener_panics_total) + $(metric nagare_rollup_panics_total) ))
kill -TERM $NPID; wait $NPID 2>/dev/null || true
NPID=""

python3 - "$OUT/soak.csv" "$WARMUP" "$OUT/queries.out" <<EOF
import sys, statistics
rows = [l.strip().split(",") for l in open(sys.argv[1]).readlines()[1:]]
pts = [(int(t), int(r), int(a), int(r) - int(m)) for t, r, a, m in rows if r and a and m]
warm = int(sys.argv[2]) * 60
after = [p for p in pts if p[0] >= warm]
def slope(idx):
    xs = [p[0] for p in after]; ys = [p[idx] for p in after]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    rss = statistics.mean(p[1] for p in after)
    return b * 600 / rss * 100, my / 1024
lat = [l.strip() for l in open(sys.argv[3])]
ok = sorted(float(l) for l in lat if not l.startswith("FAIL"))
fail = sum(1 for l in lat if l.startswith("FAIL"))
q = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))] if ok else float("nan")
print()
print("== soak results ==")
if len(after) >= 3:
    for name, idx in (("RSS", 1), ("RssAnon", 2), ("RSS less the store's rows", 3)):
        s, m = slope(idx)
        print(f"{name} after {sys.argv[2]} min warm-up: mean {m:.0f} MiB, slope {s:+.2f}% of RSS per 10 min")
print(f"RSS first/last sample: {pts[0][1] // 1024} / {pts[-1][1] // 1024} MiB")
print(f"queries: {len(ok) + fail} run, {fail} failed; latency p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {ok[-1] if ok else float('nan'):.1f} ms")
EOF
echo "records: sent ${SENT:-?}, stored $STORED (lost $(( ${SENT:-0} - STORED ))); kernel drops $DROPS; queue drops $QDROP"
echo "decode errors (junk) $DERR; panics $PANICS; $(cat "$OUT/junk.out")"
echo "samples: $OUT/soak.csv, log: $OUT/nagare.log"
