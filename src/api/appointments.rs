//! Appointments on a request: `POST /requests/{reference}/appointments` books one
//! (with reminders at the configured offsets, or at the times given),
//! `PATCH /appointments/{id}` moves it (only the new times send),
//! `POST /appointments/{id}/cancel` cancels it and its reminders.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Authorized, can};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{Body, RefPath};
use crate::appointments::{AppointmentError, Booked, Booking, ReminderTime};
use crate::domain::Timestamp;
use crate::store::appointments::Appointment;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppointmentInput {
    /// RFC 3339, in the future.
    pub starts_at: String,
    pub place: String,
    pub notes: Option<String>,
    /// When to remind the resident, replacing the service's defaults: minutes
    /// before the start, or times.
    pub reminders: Option<Vec<ReminderInput>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ReminderInput {
    Before { minutes_before: u32 },
    At { at: String },
}

/// An appointment and the reminders scheduled for it now.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentOutput {
    #[serde(flatten)]
    pub appointment: Appointment,
    pub reminders: Vec<ScheduledReminder>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledReminder {
    pub message_id: String,
    pub due_at: Timestamp,
}

impl From<Booked> for AppointmentOutput {
    fn from(b: Booked) -> Self {
        AppointmentOutput {
            appointment: b.appointment,
            reminders: b
                .reminders
                .into_iter()
                .map(|(message_id, due_at)| ScheduledReminder { message_id, due_at })
                .collect(),
        }
    }
}

fn booking(input: AppointmentInput) -> Result<Booking, ApiError> {
    let starts_at =
        Timestamp::parse(&input.starts_at).map_err(|e| ApiError::invalid_field("starts_at", e))?;
    let reminders = match input.reminders {
        None => None,
        Some(times) => Some(
            times
                .into_iter()
                .map(|t| match t {
                    ReminderInput::Before { minutes_before } => Ok(ReminderTime::Before(
                        std::time::Duration::from_secs(u64::from(minutes_before) * 60),
                    )),
                    ReminderInput::At { at } => Timestamp::parse(&at)
                        .map(ReminderTime::At)
                        .map_err(|e| ApiError::invalid_field("reminders", e)),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Booking {
        starts_at,
        place: input.place.trim().to_string(),
        notes: input
            .notes
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        reminders,
    })
}

impl From<AppointmentError> for ApiError {
    fn from(e: AppointmentError) -> Self {
        match e {
            AppointmentError::Store(e) => e.into(),
            AppointmentError::Invalid(why) => match why.split_once(": ") {
                Some((field, message)) => ApiError::invalid_field(field, message),
                None => ApiError::invalid_field("appointment", why),
            },
        }
    }
}

/// Books an appointment and schedules its reminders.
#[utoipa::path(post, path = "/requests/{reference}/appointments", tag = "appointments",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    request_body = AppointmentInput,
    responses((status = 201, body = AppointmentOutput), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn book(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    RefPath(reference): RefPath,
    Body(input): Body<AppointmentInput>,
) -> ApiResult<(StatusCode, Json<AppointmentOutput>)> {
    let booking = booking(input)?;
    let booked = state
        .appointments
        .book(&auth.actor, reference, auth.special_category(), &booking)
        .await?;
    Ok((StatusCode::CREATED, Json(booked.into())))
}

/// A request's appointments, booked and cancelled.
#[utoipa::path(get, path = "/requests/{reference}/appointments", tag = "appointments",
    params(("reference" = String, Path, description = "e.g. SR-1000002")),
    responses((status = 200, body = Vec<Appointment>)),
    security(("bearer" = [])))]
pub async fn of_request(
    State(state): State<AppState>,
    auth: Authorized<can::ReadRequest>,
    RefPath(reference): RefPath,
) -> ApiResult<Json<Vec<Appointment>>> {
    let list = state
        .appointments
        .of_request(&auth.actor, reference, auth.special_category())
        .await?;
    Ok(Json(list))
}

/// Moves an appointment: the reminders not yet sent are cancelled, and the new
/// time's scheduled.
#[utoipa::path(patch, path = "/appointments/{id}", tag = "appointments",
    params(("id" = String, Path)),
    request_body = AppointmentInput,
    responses((status = 200, body = AppointmentOutput), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reschedule(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    Path(id): Path<String>,
    Body(input): Body<AppointmentInput>,
) -> ApiResult<Json<AppointmentOutput>> {
    let booking = booking(input)?;
    let booked = state
        .appointments
        .reschedule(&auth.actor, &id, auth.special_category(), &booking)
        .await?;
    Ok(Json(booked.into()))
}

/// Cancels an appointment and the reminders not yet sent.
#[utoipa::path(post, path = "/appointments/{id}/cancel", tag = "appointments",
    params(("id" = String, Path)),
    responses((status = 200, body = Appointment), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Authorized<can::WriteRequest>,
    Path(id): Path<String>,
) -> ApiResult<Json<Appointment>> {
    let appointment = state
        .appointments
        .cancel(&auth.actor, &id, auth.special_category())
        .await?;
    Ok(Json(appointment))
}
