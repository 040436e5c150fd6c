#!/usr/bin/env bash
# Bridged, recorded calls: callers through contactd's menu and queue to advisors'
# phones, and the same calls relayed by the anchor (Kamailio + rtpengine, recording
# on), one after the other in the same run (see BENCHMARKS.md).
#   benches/bridged_load.sh BRIDGED [contactd|anchor|both]     e.g. benches/bridged_load.sh 1000
# BRIDGED is the number of calls meant to be bridged at once at the peak. Every caller
# keys "*1" after the recording notice (a new request for the first service), then
# sends a 440 Hz tone for TONE_S seconds and hangs up; each advisor's phone (sipp,
# registered with digest authentication) answers at once and sends a 1 kHz tone, one
# phone in PCMA_SHARE answering PCMA only (contactd transcodes it; rtpengine is asked
# to as well). Needs a release build (cargo build --release), sipp, sox, and for the
# anchor Debian's kamailio and rtpengine-daemon.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bridged=${1:?how many calls bridged at once}
which=${2:-both}
tone_s=${TONE_S:-40}
pcma_share=${PCMA_SHARE:-5}
# Callers arrive for ARRIVAL_S seconds at the rate that keeps BRIDGED calls bridged
# (about tone_s - 10 s of each call is bridged through contactd: the menu, intake and
# the reference read back come first).
arrival_s=${ARRIVAL_S:-60}
rate=$(python3 -c "print(round($bridged / ($tone_s - 10), 3))")
calls=$(python3 -c "print(int($bridged / ($tone_s - 10) * $arrival_s))")
advisors=$(python3 -c "print(int($bridged * 1.25))")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

cp "$here/sip/uac_bridged.xml" "$here/sip/advisor_register.xml" "$work/"
for pt in 0 8; do
  name=$([ $pt = 0 ] && echo PCMU || echo PCMA)
  sed "s/CODEC_PT/$pt/g; s/CODEC_NAME/$name/g" "$here/sip/advisor_answer.xml" > "$work/answer_$pt.xml"
done
sox -n -r 8000 -c 1 -e u-law -t raw "$work/tone440.ulaw" synth 10 sine 440 vol 0.25
sox -n -r 8000 -c 1 -e u-law -t raw "$work/tone1000.0" synth 10 sine 1000 vol 0.25
sox -n -r 8000 -c 1 -e a-law -t raw "$work/tone1000.8" synth 10 sine 1000 vol 0.25

# CPU seconds (user + system) of the processes named, summed.
cpu() { for p in "$@"; do awk '{print ($14 + $15) / 100}' "/proc/$p/stat" 2> /dev/null || echo 0; done | paste -sd+ | bc; }
rss_mb() { for p in "$@"; do awk '/VmRSS/ {print $2 / 1024}' "/proc/$p/status" 2> /dev/null || echo 0; done | paste -sd+ | bc; }

# The advisors' phones: two answering sipps (PCMU on 5090, PCMA on 5091).
# (sipp -bg exits 99 once the background copy runs.)
start_phones() {
  (cd "$work" && sipp -sf answer_0.xml -i 127.0.0.1 -mi 127.0.0.1 -p 5090 -mp 31000 \
    -buff_size 4194304 -nostdin -bg -trace_stat -stf phones0.csv -fd 1 > /dev/null) || [ $? = 99 ]
  (cd "$work" && sipp -sf answer_8.xml -i 127.0.0.1 -mi 127.0.0.1 -p 5091 -mp 36000 \
    -buff_size 4194304 -nostdin -bg -trace_stat -stf phones8.csv -fd 1 > /dev/null) || [ $? = 99 ]
}
stop_phones() { pkill -f "sipp -sf answer_" || true; }
# Peak of the answering phones' calls in progress together (sipp's CurrentCall,
# column 14, one row a second in each phone's statistics).
peak_bridged() {
  paste -d';' <(cut -d';' -f14 "$work/phones0.csv") <(cut -d';' -f14 "$work/phones8.csv") |
    awk -F';' 'NR > 1 {print $1 + $2}' | sort -n | tail -1
}

callers() { # TARGET
  (cd "$work" && sipp "$1" -sf uac_bridged.xml -s 1001 -i 127.0.0.1 -mi 127.0.0.1 -p 5080 \
    -mp 26000 -r "$rate" -l $((calls)) -m "$calls" -d $((tone_s * 1000)) -buff_size 4194304 \
    -nostdin -timeout $((arrival_s + tone_s + 120))s -timeout_error -trace_stat -stf callers.csv \
    -fd 1 > callers.out 2>&1) || true
  tail -1 "$work/callers.csv" | awk -F';' '{print "callers: successful " $16 ", failed " $18}'
}

# Bridged call-seconds: each phone's answered calls times their mean length
# (sipp's SuccessfulCall(C), column 16, and CallLength(C), column 70, HH:MM:SS:us).
bridged_seconds() {
  for f in "$work"/phones*.csv; do tail -1 "$f"; done |
    awk -F';' '{split($70, t, ":"); s += $16 * (t[1] * 3600 + t[2] * 60 + t[3] + t[4] / 1e6)} END {print s}'
}

report() { # NAME START END CPU_BEFORE CPU_AFTER RSS
  python3 - "$@" "$(peak_bridged)" "$calls" "$(bridged_seconds)" << 'EOF'
import sys
name, start, end, before, after, rss, peak, calls, bridged = sys.argv[1:]
cpu, wall, bridged = float(after) - float(before), float(end) - float(start), float(bridged)
print(f"{name}: {calls} calls, peak bridged {peak}, wall {wall:.0f} s, CPU {cpu:.1f} s "
      f"({cpu / wall * 100:.0f} % of a core on average), {cpu / int(calls) * 1000:.0f} ms CPU "
      f"per call, {bridged:.0f} bridged call-seconds: {cpu / bridged * 100:.2f} % of a core "
      f"per bridged call in progress; RSS at the end {float(rss):.0f} MB")
EOF
}

run_contactd() {
  local data="$work/contactd"
  mkdir -p "$data"
  export CONTACTD__DATA_DIR="$data" CONTACTD__DATABASE__URL="sqlite://$data/contactd.db"
  export CONTACTD__RECORDINGS__DIR="$data/recordings" CONTACTD__HTTP__LISTEN=127.0.0.1:0
  export CONTACTD__SIP__REGISTRAR=true CONTACTD__SIP__MAX_CALLS=$((calls + 100))
  export CONTACTD__SIP__INVITES_PER_SECOND=1000 CONTACTD__SIP__MAX_PENDING_PER_SOURCE=5000
  # All the advisors' phones are sipp on one address, registering at 200/s.
  export CONTACTD__SIP__REGISTERS_PER_SECOND=1000
  export CONTACTD__SIP__RTP_PORTS=40000-50000 CONTACTD__SIP__DEVICES_PER_ADVISOR=1
  export CONTACTD__QUEUES__WRAP_UP_SECONDS=1 CONTACTD__LOG__LEVEL=warn
  # sipp cannot answer an OPTIONS outside a call without starting a scenario that then
  # waits for an INVITE forever (its calls in progress would count them): the checks
  # of phones are off here (their cost: one OPTIONS per phone per 15 s).
  export CONTACTD__SIP__PHONE_CHECK_SECONDS=0
  sed 's/^\[queues.services\]$/[queues.services]\nwaste = { max_wait_seconds = 300, max_length = 5000 }/' \
    "$repo/config/contactd.toml" > "$work/contactd.toml"
  local bin="$repo/target/release/contactd"
  "$bin" --config "$work/contactd.toml" migrate > /dev/null
  echo "adding $advisors advisors..."
  : > "$work/advisors0.csv"
  : > "$work/advisors8.csv"
  echo SEQUENTIAL | tee "$work/advisors0.csv" > "$work/advisors8.csv"
  for i in $(seq 1 "$advisors"); do
    password=$("$bin" --config "$work/contactd.toml" advisors add "Advisor $i" \
      --sip-username "adv$i" --skill waste --digest-algorithm MD5 | tail -1)
    if ((i % pcma_share == 0)); then f=8; else f=0; fi
    echo "adv$i;[authentication username=adv$i password=$password]" >> "$work/advisors$f.csv"
  done
  "$bin" --config "$work/contactd.toml" serve 2> "$work/contactd.log" &
  local daemon=$!
  pids+=("$daemon")
  for _ in $(seq 100); do ss -lun | grep -q '127.0.0.1:5060 ' && break; sleep 0.1; done
  for pt in 0 8; do
    n=$(($(wc -l < "$work/advisors$pt.csv") - 1))
    (cd "$work" && sipp 127.0.0.1:5060 -sf advisor_register.xml -inf "advisors$pt.csv" \
      -i 127.0.0.1 -p $((5090 + pt / 8)) -r 200 -m "$n" -nostdin -timeout 60s -timeout_error \
      -trace_stat -stf register$pt.csv -fd 1 > register$pt.out 2>&1) || true
    tail -1 "$work/register$pt.csv" | awk -F';' -v n="$n" '{print "registered " $16 " of " n ", failed " $18}'
  done
  start_phones
  local before start end after rss
  before=$(cpu "$daemon")
  start=$(date +%s.%N)
  callers 127.0.0.1:5060
  end=$(date +%s.%N)
  after=$(cpu "$daemon")
  rss=$(rss_mb "$daemon")
  stop_phones
  kill "$daemon"
  wait "$daemon" || true
  report contactd "$start" "$end" "$before" "$after" "$rss"
  "$here/check_recordings.py" "$data/recordings" --right-hz 1000 --right-tail $((tone_s - 12)) || true
}

run_anchor() {
  local rec="$work/rtpengine"
  mkdir -p "$rec"
  cd "$work"
  rtpengine --foreground --log-stderr --log-level=4 --table=-1 --interface=127.0.0.1 \
    --listen-ng=127.0.0.1:22222 --port-min=50000 --port-max=60000 --num-threads=2 \
    --recording-dir="$rec" --recording-method=pcap --recording-format=raw \
    --pidfile="$work/rtpengine.pid" 2> "$work/rtpengine.log" &
  local rtpengine=$!
  pids+=("$rtpengine")
  sed "s/KAMAILIO_PORT/5070/; s/RTPENGINE_NG/127.0.0.1:22222/; s/PCMU_PHONE/127.0.0.1:5090/;
       s/PCMA_PHONE/127.0.0.1:5091/; s/PCMA_SHARE/$pcma_share/" "$here/anchor/kamailio.cfg" \
    > "$work/kamailio.cfg"
  kamailio -f "$work/kamailio.cfg" -P "$work/kamailio.pid" -m 512 -M 64 -w "$work" \
    2> "$work/kamailio.log"
  for _ in $(seq 100); do [ -s "$work/kamailio.pid" ] && ss -lun | grep -q '127.0.0.1:5070 ' && break; sleep 0.1; done
  local main
  main=$(cat "$work/kamailio.pid")
  # Kamailio's processes are the main one and its children.
  local kam=("$main" $(pgrep -P "$main"))
  start_phones
  local before start end after rss
  before=$(cpu "$rtpengine" "${kam[@]}")
  start=$(date +%s.%N)
  callers 127.0.0.1:5070
  end=$(date +%s.%N)
  after=$(cpu "$rtpengine" "${kam[@]}")
  rss=$(rss_mb "$rtpengine" "${kam[@]}")
  stop_phones
  report "kamailio + rtpengine" "$start" "$end" "$before" "$after" "$rss"
  echo "rtpengine: $(find "$rec" -name '*.pcap' | wc -l) pcap recordings"
  "$here/check_pcaps.py" "$rec" || true
  kill "$main" "$rtpengine" || true
}

case "$which" in
  contactd) run_contactd ;;
  anchor) run_anchor ;;
  both) run_contactd; rm -f "$work"/phones*.csv "$work"/callers.csv; run_anchor ;;
esac
