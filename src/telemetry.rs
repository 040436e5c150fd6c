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
