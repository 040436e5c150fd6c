//! The staff API (JSON under `/api/v1`) and the operations endpoints.
//!
//! - [`auth`]: bearer tokens, roles and the permission table
//! - [`extract`]: body, query and reference extractors that parse into domain types
//! - [`error`]: JSON errors with stable codes
//! - [`customers`], [`requests`], [`contacts`], [`attachments`], [`recordings`],
//!   [`audit`]: the routes
//! - [`webhooks`]: Twilio's signed SMS and status webhooks (HTTP only)
//! - [`messages`]: staff write to residents by SMS or email
//! - [`appointments`], [`subscriptions`]: what residents are reminded of
//! - [`advisors`]: advisors and their phones' credentials and registrations
//! - [`callbacks`]: voicemails and callback requests staff owe callers
//! - [`ops`]: health, readiness, metrics, OpenAPI, the service catalogue
//!
//! Every route is registered through utoipa-axum's `routes!`, which will not compile a
//! handler without its `#[utoipa::path]`: the OpenAPI document cannot miss a route.

pub mod advisors;
pub mod appointments;
pub mod attachments;
pub mod audit;
pub mod auth;
pub mod callbacks;
pub mod contacts;
pub mod customers;
pub mod error;
pub mod extract;
pub mod messages;
pub mod ops;
pub mod pagination;
pub mod recordings;
pub mod requests;
pub mod subscriptions;
pub mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::intake::Intake;
use crate::scheduler::SchedulerLink;
use crate::store::Store;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub advisors: crate::advisors::Advisors,
    pub intake: Intake,
    pub metrics: PrometheusHandle,
    pub redis: Option<SchedulerLink>,
    pub recordings: contactd_recordings::RecordingsDir,
    pub outbound: crate::outbound::Outbound,
    pub appointments: crate::appointments::Appointments,
    pub renewals: crate::renewals::Renewals,
    pub notices: crate::notices::Notices,
    /// Present when the SMS channel is configured.
    pub sms: Option<crate::channels::sms::SmsChannel>,
    /// Present when a channel sends through GOV.UK Notify.
    pub notify: Option<crate::notify::NotifyCallbacks>,
    /// Cancelled when the daemon starts shutting down (readiness turns 503).
    pub shutdown: CancellationToken,
    /// Open HTTP connections against their limit (readiness turns 503 at the limit).
    pub http_connections: Arc<crate::http::HttpConnections>,
    /// The voice channel's load, when it is on.
    pub sip: Option<contactd_sip::SipStatus>,
    /// Whether call recordings can be written.
    pub recorder: crate::recordings::RecorderHealth,
    /// When set, `/metrics` needs it as a bearer token.
    pub metrics_token: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "contactd", description = "A council contact centre: the central customer record, service requests and contacts."),
    modifiers(&BearerAuth),
    tags(
        (name = "customers", description = "The central customer record"),
        (name = "requests", description = "Service requests"),
        (name = "contacts", description = "Residents' contacts through intake"),
        (name = "recordings", description = "Call recordings"),
        (name = "webhooks", description = "Twilio's signed webhooks"),
        (name = "audit", description = "The audit log (admins)"),
        (name = "advisors", description = "Advisors and their phones"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Builds the router and its OpenAPI document from the same route list.
pub fn router(state: AppState, max_body_bytes: usize, request_timeout: Duration) -> Router {
    let v1 = OpenApiRouter::new()
        .routes(routes!(customers::create, customers::search))
        .routes(routes!(customers::get, customers::update))
        .routes(routes!(customers::record_consent))
        .routes(routes!(customers::history))
        .routes(routes!(customers::contacts))
        .routes(routes!(customers::merge))
        .routes(routes!(requests::create, requests::list))
        .routes(routes!(requests::get))
        .routes(routes!(requests::change_status))
        .routes(routes!(requests::cancel))
        .routes(routes!(requests::reopen))
        .routes(routes!(requests::add_note))
        .routes(routes!(requests::timeline))
        .routes(routes!(requests::assign_customer))
        .routes(routes!(attachments::of_request))
        .routes(routes!(attachments::download))
        .routes(routes!(recordings::of_request))
        .routes(routes!(recordings::download))
        .routes(routes!(recordings::legal_hold))
        .routes(routes!(messages::send_sms))
        .routes(routes!(messages::send_email))
        .routes(routes!(messages::of_customer))
        .routes(routes!(messages::attention))
        .routes(routes!(appointments::book, appointments::of_request))
        .routes(routes!(appointments::reschedule))
        .routes(routes!(appointments::cancel))
        .routes(routes!(subscriptions::record, subscriptions::of_customer))
        .routes(routes!(subscriptions::renew))
        .routes(routes!(subscriptions::cancel))
        .routes(routes!(contacts::record))
        .routes(routes!(audit::list))
        .routes(routes!(advisors::list, advisors::create))
        .routes(routes!(advisors::rotate_credential))
        .routes(routes!(advisors::set_state))
        .routes(routes!(advisors::call_events))
        .routes(routes!(advisors::queues))
        .routes(routes!(callbacks::list))
        .routes(routes!(callbacks::close));
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .routes(routes!(ops::openapi))
        .routes(routes!(ops::services))
        .routes(routes!(webhooks::inbound_sms))
        .routes(routes!(webhooks::status_callback))
        .routes(routes!(webhooks::notify_receipt))
        .routes(routes!(webhooks::notify_inbound))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .split_for_parts();
    router
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::Extension(Arc::new(doc)))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(count_requests))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Request counts and latencies by route template (never by raw path, which would
/// put references and ids into metric labels).
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("contactd_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("contactd_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
