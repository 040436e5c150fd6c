//! The hub side of each channel: its business rules, between the channel crate that
//! speaks the protocol and [`intake`](crate::intake) / [`outbound`](crate::outbound).
//!
//! - [`voice`]: what happens on a call (notice, menus, routing through intake)
//! - [`sms`]: texts from Twilio's webhooks: keywords, the reply window, TwiML answers
//! - [`email`]: mail from the SMTP receiver: threading hints, loop protection
//!
//! Every channel starts and stops through one contract, [`Lifecycle`]: startup calls
//! [`start`] for each, and at shutdown tells every running one to stop accepting, then
//! lets each drain within the grace period. A channel that is not configured is off,
//! and says so once at start.

pub mod email;
pub mod sms;
pub mod voice;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::configuration::Settings;
use crate::intake::Intake;
use crate::outbound::Outbound;
use crate::recordings::Recorder;
use crate::startup::StartupError;
use crate::store::Store;

/// What a channel may use of the hub.
#[derive(Clone)]
pub struct Hub {
    pub store: Store,
    pub intake: Intake,
    pub outbound: Outbound,
    pub recorder: Recorder,
    pub advisors: crate::advisors::Advisors,
    /// Cancelled the instant the daemon begins to stop: from then a channel refuses
    /// new contacts (before its own drain has even begun).
    pub stopping: tokio_util::sync::CancellationToken,
}

/// A channel's life: started from the settings, stopped in two steps.
pub trait Lifecycle: Send + Sync + 'static {
    /// The section that configures it, as the start-up log names it.
    const NAME: &'static str;

    /// Starts the channel, or says why it is off (`Ok(Err(why))`).
    fn start(
        hub: &Hub,
        settings: &Settings,
    ) -> impl Future<Output = Result<Result<Self, &'static str>, StartupError>> + Send
    where
        Self: Sized;

    /// From now on, refuse new contacts (calls, connections).
    fn stop_accepting(&self);

    /// Lets contacts in progress finish within `grace`, then ends them.
    fn drain(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Starts channel `C`, logging whether it is on.
pub async fn start<C: Lifecycle>(
    hub: &Hub,
    settings: &Settings,
) -> Result<Option<C>, StartupError> {
    Ok(match C::start(hub, settings).await? {
        Ok(channel) => Some(channel),
        Err(why) => {
            tracing::info!("{}: off ({why})", C::NAME);
            None
        }
    })
}

/// The running channels, stopped together.
#[derive(Default)]
pub struct Running(Vec<Box<dyn Stoppable>>);

/// [`Lifecycle`] without its constructor, so running channels can share one list.
pub trait Stoppable: Send + Sync {
    fn name(&self) -> &'static str;
    fn stop_accepting(&self);
    fn drain(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<C: Lifecycle> Stoppable for C {
    fn name(&self) -> &'static str {
        C::NAME
    }
    fn stop_accepting(&self) {
        Lifecycle::stop_accepting(self)
    }
    fn drain(&self, grace: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Lifecycle::drain(self, grace)
    }
}

impl Running {
    pub fn add<C: Lifecycle + Clone>(&mut self, channel: &Option<C>) {
        if let Some(c) = channel {
            self.0.push(Box::new(c.clone()));
        }
    }

    /// Stops every channel accepting, then drains them all at once.
    pub async fn stop(self, grace: Duration) {
        for c in &self.0 {
            c.stop_accepting();
        }
        let drains = self.0.iter().map(|c| async move {
            c.drain(grace).await;
            tracing::info!("{}: drained", c.name());
        });
        futures_util::future::join_all(drains).await;
    }
}
