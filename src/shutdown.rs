//! Shutdown: one token that every task listens to. SIGTERM or SIGINT cancels it; the
//! HTTP server then stops accepting and drains, bounded by the grace period.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = token.cancelled() => return,
        };
        tracing::info!(
            signal = name,
            "shutting down: no new connections, finishing in-flight work"
        );
        token.cancel();
    });
    Ok(())
}
