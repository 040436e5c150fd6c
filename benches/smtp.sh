#!/usr/bin/env bash
# The SMTP receiving benchmark (BENCHMARKS.md): messages per second received and
# durably stored, with the time from the end of DATA to the 250, for contactd on
# SQLite and on PostgreSQL, and in the same run for Postfix delivering to a Maildir
# (the anchor), all driven by the same load generator (`contactd bench smtp`).
#
#   benches/smtp.sh [MESSAGES] [CONCURRENCY]
#
# It configures this machine's Postfix for the run (loopback only, port 2526, every
# message for council.bench.invalid to one Maildir) and a dnsmasq on loopback that
# answers every sender check at once: run it on a development machine, as root.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES="${1:-5000}"
CONCURRENCY="${2:-16}"
PG=postgres://postgres@127.0.0.1:5432
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; postfix stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

command -v postfix >/dev/null || {
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
}
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || apt-get install -y -qq dnsmasq-base >/dev/null

cargo build --release --quiet
BIN=target/release/contactd

dnsmasq --keep-in-foreground --no-resolv --no-hosts --no-poll --bind-interfaces \
  --listen-address=127.0.0.1 --port=15353 --log-facility=/dev/null --user=root \
  --pid-file= --local=/#/ &
export CONTACTD__EMAIL__DNS_RESOLVER=127.0.0.1:15353
export CONTACTD__DATA_DIR="$WORK/data"

echo "== contactd, SQLite (WAL, synchronous=FULL)"
CONTACTD__DATABASE__URL="sqlite://$WORK/bench.db" \
  "$BIN" bench smtp --messages "$MESSAGES" --concurrency "$CONCURRENCY"

echo "== contactd, PostgreSQL"
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS contactd_bench_smtp" -c "CREATE DATABASE contactd_bench_smtp"
CONTACTD__DATABASE__URL="$PG/contactd_bench_smtp" CONTACTD__DATABASE__MAX_CONNECTIONS=16 \
  "$BIN" bench smtp --messages "$MESSAGES" --concurrency "$CONCURRENCY"

echo "== Postfix, to a Maildir"
id benchbox >/dev/null 2>&1 || useradd --create-home benchbox
cat > /etc/postfix/main.cf <<CONF
compatibility_level = 3.6
myhostname = mx.bench.invalid
mydestination = council.bench.invalid, \$myhostname, localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
local_recipient_maps =
luser_relay = benchbox
alias_maps =
alias_database =
home_mailbox = Maildir/
maillog_file = /var/log/postfix-bench.log
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
CONF
sed -i 's/^smtp      inet  n       -       y       -       -       smtpd$/2526      inet  n       -       y       -       -       smtpd/' /etc/postfix/master.cf
grep -q '^2526 ' /etc/postfix/master.cf || echo "2526      inet  n       -       y       -       -       smtpd" >> /etc/postfix/master.cf
postfix start >/dev/null 2>&1 || postfix reload >/dev/null
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/2526) 2>/dev/null && break; sleep 0.2; done
"$BIN" bench smtp --messages "$MESSAGES" --concurrency "$CONCURRENCY" --target 127.0.0.1:2526
