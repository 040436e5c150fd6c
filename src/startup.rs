//! Start-up and the serving loop: connect and migrate the store, sync the catalogue,
//! bind the listener, tell systemd we are ready, serve until shutdown, then drain
//! in-flight requests for at most the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use contactd_sip::SipListen;

use crate::api::{self, AppState};
use crate::channels::email::EmailChannel;
use crate::channels::sms::SmsChannel;
use crate::channels::voice::VoiceChannel;
use crate::channels::voice::prompts::PromptError;
use crate::channels::{self, Hub, Running};
use crate::configuration::{Settings, redact};
use crate::domain::thread::ReplyTokens;
use crate::intake::Intake;
use crate::outbound::Outbound;
use crate::recordings::{Recorder, RecorderError};
use crate::scheduler::{
    Clock, EmbeddedScheduler, RedisScheduler, Scheduler, SchedulerError, SchedulerLink, SystemClock,
};
use crate::store::{Store, StoreError};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database.url: cannot use {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error("data_dir: cannot create {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what}: cannot listen on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("recordings.dir: {0}")]
    Recordings(#[from] RecorderError),
    #[error(transparent)]
    Prompts(#[from] PromptError),
    #[error(transparent)]
    Sip(#[from] contactd_sip::SipError),
    #[error("{0}")]
    Outbound(String),
    #[error("{0}")]
    Email(String),
    #[error("{0}")]
    OpenFiles(String),
}

/// Connects to the configured database and brings its schema up to date.
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let fail = |source| StartupError::Database {
        url: redact(settings.database.url.expose()),
        source,
    };
    let store = Store::connect(&settings.database).await.map_err(fail)?;
    store.migrate().await.map_err(fail)?;
    store
        .sync_services(&settings.services)
        .await
        .map_err(fail)?;
    Ok(store)
}

/// The key that signs reply tokens, shared by every instance through the database.
/// The scheduler the outbox claims from: Redis when a link was made, else the
/// database itself.
pub fn open_scheduler(
    settings: &Settings,
    store: &Store,
    redis: Option<&SchedulerLink>,
) -> Arc<dyn Scheduler> {
    open_scheduler_with_clock(settings, store, redis, Arc::new(SystemClock))
}

pub fn open_scheduler_with_clock(
    settings: &Settings,
    store: &Store,
    redis: Option<&SchedulerLink>,
    clock: Arc<dyn Clock>,
) -> Arc<dyn Scheduler> {
    match redis {
        Some(link) => Arc::new(RedisScheduler::new(
            link,
            &settings.scheduler.redis_prefix,
            clock,
        )),
        None => Arc::new(EmbeddedScheduler::new(store.clone(), clock)),
    }
}

pub async fn reply_tokens(store: &Store) -> Result<ReplyTokens, StartupError> {
    let key = store
        .hub_secret("reply_tokens")
        .await
        .map_err(|source| StartupError::Database {
            url: "(the configured database)".into(),
            source,
        })?;
    Ok(ReplyTokens::new(&key))
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
    recorder: Recorder,
    voice: Option<VoiceChannel>,
    email: Option<EmailChannel>,
    channels: Running,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// `build`, with the clock the outbox, the scheduler and reminders read (a
    /// test's, which it moves forward instead of waiting).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        private_dir(&settings.data_dir).map_err(|source| StartupError::DataDir {
            dir: settings.data_dir.display().to_string(),
            source,
        })?;
        // A recordings directory that cannot be made is reported by the recorder's
        // check (not ready), not fatal.
        if let Err(e) = private_dir(&settings.recordings.dir) {
            tracing::error!(dir = %settings.recordings.dir.display(), error = %e, "recordings.dir cannot be used");
        }
        let store = open_store(&settings).await?;
        let redis = match settings.scheduler.redis_url.get() {
            Some(url) => {
                let link = SchedulerLink::connect(url).await?;
                tracing::info!(url = %redact(url.as_str()), "scheduler: redis");
                Some(link)
            }
            None => {
                tracing::info!("scheduler: embedded (on the database); no redis_url configured");
                None
            }
        };
        let listener = TcpListener::bind(settings.http.listen)
            .await
            .map_err(|source| StartupError::Bind {
                addr: settings.http.listen,
                source,
            })?;
        let tokens = reply_tokens(&store).await?;
        let scheduler = open_scheduler_with_clock(&settings, &store, redis.as_ref(), clock.clone());
        let notify = crate::notify::NotifySender::new(&settings).map_err(StartupError::Outbound)?;
        if let Some(n) = &notify {
            n.check_templates().await.map_err(StartupError::Outbound)?;
        }
        let outbound = Outbound::new(
            store.clone(),
            &settings,
            tokens,
            scheduler,
            clock.clone(),
            notify,
        )
        .map_err(StartupError::Outbound)?;
        let intake = Intake::new(store.clone(), &settings, outbound.clone());
        let recorder = Recorder::new(
            store.clone(),
            &settings.recordings.dir,
            settings.recordings.retention_days,
        )
        .with_min_free_bytes(settings.recordings.min_free_mb * 1024 * 1024);
        let repaired = recorder.repair_unfinished().await?;
        if repaired > 0 {
            tracing::warn!(
                repaired,
                "recordings left unfinished by a crash were repaired"
            );
        }
        ensure_open_files(&settings)?;
        telemetry::describe_metrics(&telemetry::Limits {
            calls: settings.sip.max_calls,
            sip_tcp_connections: settings.sip.max_tcp_connections,
            http_connections: settings.http.max_connections,
        });
        let daemon =
            crate::advisors::DaemonId::of_data_dir(&settings.data_dir).map_err(|source| {
                StartupError::DataDir {
                    dir: settings.data_dir.display().to_string(),
                    source,
                }
            })?;
        let advisors =
            crate::advisors::Advisors::new(store.clone(), &settings, clock.clone(), daemon);
        let interrupted = advisors
            .recover()
            .await
            .map_err(|source| StartupError::Database {
                url: "(the configured database)".into(),
                source,
            })?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "legs with advisors left open by a crash were ended as interrupted"
            );
        }
        let shutdown = CancellationToken::new();
        let hub = Hub {
            stopping: shutdown.clone(),
            store: store.clone(),
            intake: intake.clone(),
            outbound: outbound.clone(),
            recorder: recorder.clone(),
            advisors: advisors.clone(),
        };
        let voice = channels::start::<VoiceChannel>(&hub, &settings).await?;
        let sms = channels::start::<SmsChannel>(&hub, &settings).await?;
        let email = channels::start::<EmailChannel>(&hub, &settings).await?;
        if settings.email.sending() {
            tracing::info!(
                "email: sending through {} as {}",
                match settings.email.provider {
                    crate::configuration::EmailProvider::Relay => "the relay",
                    crate::configuration::EmailProvider::Notify => "GOV.UK Notify",
                },
                settings.email.from
            );
        }
        let notify = crate::notify::NotifyCallbacks::new(store.clone(), &settings, sms.clone());
        let mut running = Running::default();
        running.add(&voice);
        running.add(&sms);
        running.add(&email);
        let appointments = crate::appointments::Appointments::new(
            store.clone(),
            outbound.clone(),
            &settings,
            clock.clone(),
        );
        let notices = crate::notices::Notices::new(store.clone(), outbound.clone(), &settings);
        let renewals =
            crate::renewals::Renewals::new(store.clone(), outbound.clone(), &settings, clock);
        let state = AppState {
            advisors,
            intake,
            store,
            recordings: recorder.dir().clone(),
            appointments,
            renewals,
            notices,
            outbound,
            sms,
            notify,
            metrics: telemetry::metrics_handle(),
            redis,
            shutdown,
            http_connections: crate::http::HttpConnections::new(crate::http::HttpLimits {
                max_connections: settings.http.max_connections,
                max_per_source: settings.http.max_connections_per_source,
                header_read_timeout: Duration::from_secs(settings.http.header_read_timeout_seconds),
            }),
            recorder: recorder.health().clone(),
            metrics_token: (!settings.http.metrics_token.is_empty())
                .then(|| settings.http.metrics_token.expose().to_string()),
            sip: voice.as_ref().map(VoiceChannel::status),
        };
        Ok(Application {
            listener,
            state,
            settings,
            recorder,
            voice,
            email,
            channels: running,
        })
    }

    /// Where the voice channel listens (empty when it is off).
    pub fn sip_listening(&self) -> Vec<SipListen> {
        self.voice
            .as_ref()
            .map(|v| v.listening().to_vec())
            .unwrap_or_default()
    }

    /// Where the SMTP receiver listens, when the email channel is on.
    pub fn smtp_addr(&self) -> Option<SocketAddr> {
        self.email.as_ref().and_then(EmailChannel::smtp_addr)
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Cancelling this token starts a graceful shutdown (signals cancel it too).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn intake(&self) -> &Intake {
        &self.state.intake
    }

    pub fn renewals(&self) -> &crate::renewals::Renewals {
        &self.state.renewals
    }

    /// Serves until the shutdown token is cancelled, then gives in-flight requests the
    /// grace period to finish. Returns once everything is closed.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let token = self.state.shutdown.clone();
        let addr = self.local_addr();
        let store = self.state.store.clone();
        let grace = self.settings.grace_period();
        let channels = self.channels;
        let dispatcher = tokio::spawn(self.state.outbound.clone().dispatch(token.clone()));
        let renewal_runs = tokio::spawn(self.state.renewals.clone().run_on_schedule(token.clone()));
        let http_connections = self.state.http_connections.clone();
        let sweeper = tokio::spawn(sweep_periodically(
            self.recorder,
            Duration::from_secs(self.settings.recordings.sweep_interval_minutes.max(1) * 60),
            self.settings.sip.enabled(),
            token.clone(),
        ));
        let router = api::router(
            self.state,
            self.settings.http.max_body_bytes,
            Duration::from_secs(self.settings.http.request_timeout_seconds),
        );
        let mut server = tokio::spawn(crate::http::serve(
            self.listener,
            router,
            http_connections,
            token.clone(),
            grace,
        ));

        tracing::info!(backend = ?store.backend(), "http listening on {addr}");
        systemd_ready(token.clone());

        tokio::select! {
            result = &mut server => {
                // The server stopped by itself: only a panic does that.
                if let Err(e) = result {
                    tracing::error!(error = %e, "http server failed");
                }
            }
            _ = token.cancelled() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                // The HTTP server drains itself within the grace period; every channel
                // stops accepting at once, then drains within the same period.
                let http = async {
                    let _ = (&mut server).await;
                };
                tokio::join!(http, channels.stop(grace));
            }
        }
        sweeper.abort();
        // The dispatcher finishes the send in hand, then stops; what is still
        // pending waits in the outbox for the next start.
        let _ = dispatcher.await;
        // A renewal run stops between subscriptions; each is its own transaction.
        let _ = renewal_runs.await;
        store.close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Creates `dir` if needed and makes it (and, for SQLite, the database files in it)
/// private to the daemon's user: 0700 directories, 0600 files, whatever the umask
/// or an earlier version left.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type().is_ok_and(|t| t.is_file())
            && (name.ends_with(".db") || name.ends_with(".db-wal") || name.ends_with(".db-shm"))
        {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Each call holds two RTP sockets and a recording file, each connection a socket:
/// the configured limits need more descriptors than the usual soft limit of 1024, so
/// take what the hard limit allows, and refuse to start if even that is too few —
/// descriptors must never run out before the configured limits are reached.
fn ensure_open_files(settings: &Settings) -> Result<(), StartupError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(());
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => tracing::warn!(error = %e, soft, "could not raise the open-files limit"),
        }
    }
    let available = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    let sip = if settings.sip.enabled() {
        settings.sip.max_calls as u64 * 3
            + settings.sip.max_tcp_connections as u64
            + settings.sip.listen.len() as u64
    } else {
        0
    };
    // Database connections, logs, the listeners and the runtime's own.
    let reserve = u64::from(settings.database.max_connections) + 64;
    let smtp = if settings.email.receiving() {
        settings.email.max_connections as u64 + 1
    } else {
        0
    };
    let needed = settings.http.max_connections as u64 + sip + smtp + reserve;
    if needed > available {
        return Err(StartupError::OpenFiles(format!(
            "http.max_connections, sip.max_calls, sip.max_tcp_connections and email.max_connections need {needed} open files, \
             but the limit is {available}: lower them or raise LimitNOFILE"
        )));
    }
    Ok(())
}

const RECORDER_CHECK: Duration = Duration::from_secs(30);

/// Deletes expired recordings every `every`, and checks the recorder, until shutdown.
async fn sweep_periodically(
    recorder: Recorder,
    every: Duration,
    check_health: bool,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    // Whether recordings can be written is checked twice a minute: a disk that fills
    // (or is freed) between calls is noticed before the next call is answered.
    let mut health = tokio::time::interval(RECORDER_CHECK);
    health.tick().await;
    loop {
        tokio::select! {
            _ = health.tick(), if check_health => {
                recorder.check().await;
            }
            _ = tick.tick() => match recorder.sweep(false).await {
                Ok(r) if !r.purged.is_empty() || !r.failed.is_empty() => {
                    tracing::info!(purged = r.purged.len(), failed = r.failed.len(), kept_on_hold = r.kept_on_hold, "recordings sweep");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "recordings sweep failed"),
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// READY=1 once listening; WATCHDOG=1 at half the watchdog interval while the runtime
/// is alive. Without NOTIFY_SOCKET (not under systemd) these do nothing.
fn systemd_ready(token: CancellationToken) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tokio::select! {
                    _ = tick.tick() => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                    _ = token.cancelled() => return,
                }
            }
        });
    }
}

/// `contactd serve`: signals wired, run to completion.
pub async fn serve(settings: Settings) -> Result<(), StartupError> {
    let app = Application::build(settings).await?;
    crate::shutdown::cancel_on_signals(app.shutdown_token()).map_err(StartupError::Signals)?;
    app.run_until_stopped().await
}
