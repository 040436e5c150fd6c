#!/usr/bin/env bash
# Concurrent recorded calls against a running contactd (see BENCHMARKS.md).
#   benches/sip_load.sh CONCURRENCY [TARGET]      e.g. benches/sip_load.sh 1000
# Runs CONCURRENCY*3 calls of 7 s at CONCURRENCY/7 calls per second (about 7 s of
# ramp-up, 7 s at full concurrency, 7 s of drain), prints sipp's summary, and the
# daemon's CPU time over the run if CONTACTD_PID is set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
limit=${1:?concurrency}
target=${2:-127.0.0.1:5060}
rate=$(python3 -c "print(round($limit / 7, 3))")
calls=$((limit * 3))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/sip/uac_load.xml" "$work/"
sox -n -r 8000 -c 1 -e u-law -t raw "$work/tone440.ulaw" synth 3 sine 440 vol 0.25
ulimit -n "$(ulimit -Hn)"
cpu() { [ -n "${CONTACTD_PID:-}" ] && awk '{print ($14 + $15) / 100}' "/proc/$CONTACTD_PID/stat" || echo 0; }
before=$(cpu)
start=$(date +%s.%N)
(cd "$work" && sipp "$target" -sf uac_load.xml -i 127.0.0.1 -mi 127.0.0.1 -bind_local \
  -p 5080 -mp 26000 -ci 127.0.0.1 -cp 8880 -r "$rate" -l "$limit" -m "$calls" \
  -buff_size 4194304 -nostdin -timeout 120s -timeout_error -trace_stat -stf stat.csv -fd 1 \
  > sipp.out 2>&1) || true
end=$(date +%s.%N)
after=$(cpu)
grep -E "Successful call|Failed call|Peak was" "$work/sipp.out" "$work"/*screen* 2>/dev/null | head -5 || true
tail -1 "$work/stat.csv" | awk -F';' '{print "successful " $16 ", failed " $18}' 2>/dev/null || true
python3 -c "print(f'wall {float($end) - float($start):.1f} s, daemon cpu {float($after) - float($before):.1f} s')"
