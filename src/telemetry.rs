//! Structured logs (tracing) and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::configuration::{LogFormat, LogSettings};

/// Installs the log subscriber once per process; RUST_LOG overrides the level.
///
/// The SIP stack logs whole messages (callers' numbers, keyed digits) at info, so it
/// is held to warnings unless `log.personal_data` is on; RUST_LOG cannot lift that
/// by accident, since the cap is added to whatever RUST_LOG says.
pub fn init_logging(settings: &LogSettings) {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| format!("{},tower_http=warn,sqlx=warn", settings.level));
    let directives = if settings.personal_data {
        base
    } else {
        format!("{base},rsipstack=warn")
    };
    let filter =
        EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info,rsipstack=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The process-wide metrics recorder (metrics' macros need a global one); in tests
/// several daemons in one process share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("the metrics recorder is installed once, here")
        })
        .clone()
}

/// The limits the night shift compares the live counts against.
pub struct Limits {
    pub calls: usize,
    pub sip_tcp_connections: usize,
    pub http_connections: usize,
}

/// Describes every metric the daemon keeps and starts its counters at zero, so that a
/// scrape shows them all from the start (an alert on a counter that does not exist
/// yet never fires), and publishes the configured limits beside the live counts.
pub fn describe_metrics(limits: &Limits) {
    use metrics::{describe_counter, describe_gauge};
    // The recorder first: metrics touched before it exists are lost.
    metrics_handle();
    type Labels = &'static [(&'static str, &'static str)];
    let counters: &[(&str, &str, Labels)] = &[
        (
            "contactd_calls_total",
            "Calls ended or refused, by outcome",
            &[
                ("outcome", "completed"),
                ("outcome", "caller_hung_up"),
                ("outcome", "never_confirmed"),
                ("outcome", "media_timeout"),
                ("outcome", "rate_limited"),
                ("outcome", "call_limit"),
            ],
        ),
        (
            "contactd_sip_refused_total",
            "SIP requests refused, by reason",
            &[("reason", "not_trunk")],
        ),
        (
            "contactd_sip_tcp_refused_total",
            "SIP TCP connections refused at accept",
            &[
                ("reason", "not_trunk"),
                ("reason", "total_limit"),
                ("reason", "source_limit"),
            ],
        ),
        (
            "contactd_imap_signin_failures_total",
            "Sign-ins to the polled mailbox refused (an expired password or token): alert on it",
            &[],
        ),
        (
            "contactd_imap_fetched_total",
            "Messages fetched from the polled mailbox and stored",
            &[],
        ),
        (
            "contactd_sip_tcp_idle_closed_total",
            "Idle SIP TCP connections closed",
            &[],
        ),
        (
            "contactd_rtp_packets_received_total",
            "RTP packets taken from callers",
            &[],
        ),
        (
            "contactd_rtp_packets_lost_total",
            "RTP packets that never came (played as silence)",
            &[],
        ),
        (
            "contactd_rtp_packets_dropped_total",
            "RTP packets dropped, by reason",
            &[("reason", "wrong_source")],
        ),
        (
            "contactd_recordings_started_total",
            "Recordings started",
            &[],
        ),
        (
            "contactd_recordings_written_total",
            "Recordings finished",
            &[],
        ),
        (
            "contactd_recordings_failed_total",
            "Recording failures, by stage",
            &[
                ("stage", "create"),
                ("stage", "write"),
                ("stage", "finish"),
                ("stage", "repair"),
            ],
        ),
        (
            "contactd_recordings_repaired_total",
            "Recordings repaired after a crash",
            &[],
        ),
        (
            "contactd_recordings_swept_total",
            "Expired recordings deleted",
            &[],
        ),
        (
            "contactd_recordings_sweep_errors_total",
            "Expired recordings the sweep could not delete",
            &[],
        ),
        (
            "contactd_intake_failures_total",
            "Contacts that could not be stored",
            &[("channel", "phone"), ("channel", "sms")],
        ),
        (
            "contactd_http_connections_refused_total",
            "HTTP connections refused at a limit",
            &[],
        ),
        (
            "contactd_outbox_claimed_total",
            "Outbox messages claimed from the scheduler",
            &[],
        ),
        (
            "contactd_renewal_reminders_queued_total",
            "Renewal reminders queued by renewal runs",
            &[],
        ),
    ];
    describe_counter!(
        "contactd_messages_sent_total",
        "Outbox messages settled, by channel and outcome (sent, failed, dead, unknown, suppressed, no_consent, expired)"
    );
    metrics::describe_histogram!(
        "contactd_outbox_lateness_seconds",
        "How long after its due time a reminder or notice was handed over"
    );
    for (name, help, labels) in counters {
        describe_counter!(*name, *help);
        if labels.is_empty() {
            metrics::counter!(*name).increment(0);
        }
        for (k, v) in *labels {
            metrics::counter!(*name, *k => *v).increment(0);
        }
    }
    describe_gauge!("contactd_calls_active", "Calls up now");
    describe_gauge!(
        "contactd_sip_tcp_connections",
        "SIP TCP connections open now"
    );
    describe_gauge!("contactd_http_connections", "HTTP connections open now");
    describe_gauge!(
        "contactd_recorder_healthy",
        "1 when recordings can be written"
    );
    metrics::gauge!("contactd_calls_active").increment(0.0);
    metrics::gauge!("contactd_sip_tcp_connections").increment(0.0);
    metrics::gauge!("contactd_http_connections").increment(0.0);
    metrics::gauge!("contactd_calls_limit").set(limits.calls as f64);
    metrics::gauge!("contactd_sip_tcp_connections_limit").set(limits.sip_tcp_connections as f64);
    metrics::gauge!("contactd_http_connections_limit").set(limits.http_connections as f64);
}
