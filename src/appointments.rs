//! Appointments on a request, booked, moved and cancelled by staff, and their
//! reminders.
//!
//! Booking writes the appointment, its timeline entry, its audit entry and its
//! reminders (outbox messages, due at the service's offsets before the start or at
//! the times the booking names) in one transaction; the scheduler is told after the
//! commit. Moving cancels the reminders not yet sent and schedules the new version's,
//! so only the new times ever send. Cancelling cancels them. A reminder goes on the
//! resident's preferred channel (else a phone, else an email address), needs their
//! consent to service messages, and is never scheduled for a time already past.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::configuration::{ReminderSettings, Settings};
use crate::domain::message::{MessagePurpose, Occurrence, ReminderOf};
use crate::domain::request::TimelineKind;
use crate::domain::{Actor, Reference, Timestamp};
use crate::outbound::{Outbound, OutboundError, OutboundMessage, Recipient, html_from_text};
use crate::scheduler::Clock;
use crate::store::appointments::{self, Appointment};
use crate::store::audit::{self, Action, Entity};
use crate::store::requests::{self, Event, SpecialCategoryAccess};
use crate::store::{Store, StoreError, customers};

/// When a reminder is sent: before the start, or at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderTime {
    Before(Duration),
    At(Timestamp),
}

/// What staff book or move an appointment to.
#[derive(Debug, Clone)]
pub struct Booking {
    pub starts_at: Timestamp,
    pub place: String,
    pub notes: Option<String>,
    /// Replaces the configured offsets for this booking.
    pub reminders: Option<Vec<ReminderTime>>,
}

/// An appointment and its reminders (message ids and due times).
#[derive(Debug, Clone)]
pub struct Booked {
    pub appointment: Appointment,
    pub reminders: Vec<(String, Timestamp)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppointmentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone)]
pub struct Appointments {
    store: Store,
    outbound: Outbound,
    settings: ReminderSettings,
    /// Services whose reminders go at offsets of their own (minutes before).
    service_offsets: Arc<HashMap<String, Vec<u32>>>,
    clock: Arc<dyn Clock>,
}

impl Appointments {
    pub fn new(
        store: Store,
        outbound: Outbound,
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Appointments {
            store,
            outbound,
            settings: settings.reminders.clone(),
            service_offsets: Arc::new(
                settings
                    .services
                    .iter()
                    .filter_map(|s| {
                        let offsets = s.appointment_offsets_minutes.clone()?;
                        Some((s.code.as_str().to_string(), offsets))
                    })
                    .collect(),
            ),
            clock,
        }
    }

    pub async fn book(
        &self,
        actor: &Actor,
        reference: Reference,
        access: SpecialCategoryAccess,
        booking: &Booking,
    ) -> Result<Booked, AppointmentError> {
        self.check(booking)?;
        self.store
            .authorise_change(actor, reference, access)
            .await?;
        let mut tx = self.store.begin().await?;
        let request_id = requests::lock(&mut tx, reference).await?;
        let appointment = appointments::insert(
            &mut tx,
            &request_id,
            booking.starts_at,
            &booking.place,
            booking.notes.as_deref(),
            &actor.label(),
        )
        .await?;
        let what = format!("Appointment booked: {}", describe(&appointment));
        self.record(&mut tx, actor, &request_id, &what).await?;
        let reminders = self
            .queue_reminders(&mut tx, actor, &appointment, booking)
            .await?;
        tx.commit().await?;
        self.scheduled(&reminders, &[]).await;
        Ok(Booked {
            appointment,
            reminders,
        })
    }

    pub async fn reschedule(
        &self,
        actor: &Actor,
        id: &str,
        access: SpecialCategoryAccess,
        booking: &Booking,
    ) -> Result<Booked, AppointmentError> {
        self.check(booking)?;
        let reference = self.reference_of(id).await?;
        self.store
            .authorise_change(actor, reference, access)
            .await?;
        let mut tx = self.store.begin().await?;
        let request_id = requests::lock(&mut tx, reference).await?;
        let cancelled = appointments::cancel_reminders(&mut tx, id).await?;
        let appointment = appointments::reschedule(
            &mut tx,
            id,
            booking.starts_at,
            &booking.place,
            booking.notes.as_deref(),
        )
        .await?;
        let what = format!("Appointment moved: {}", describe(&appointment));
        self.record(&mut tx, actor, &request_id, &what).await?;
        let reminders = self
            .queue_reminders(&mut tx, actor, &appointment, booking)
            .await?;
        tx.commit().await?;
        self.scheduled(&reminders, &cancelled).await;
        Ok(Booked {
            appointment,
            reminders,
        })
    }

    pub async fn cancel(
        &self,
        actor: &Actor,
        id: &str,
        access: SpecialCategoryAccess,
    ) -> Result<Appointment, AppointmentError> {
        let reference = self.reference_of(id).await?;
        self.store
            .authorise_change(actor, reference, access)
            .await?;
        let mut tx = self.store.begin().await?;
        let request_id = requests::lock(&mut tx, reference).await?;
        let cancelled = appointments::cancel_reminders(&mut tx, id).await?;
        let appointment = appointments::cancel(&mut tx, id).await?;
        let what = format!("Appointment cancelled: {}", describe(&appointment));
        self.record(&mut tx, actor, &request_id, &what).await?;
        let text = self.settings.appointment_cancelled_text.clone();
        let mut notice = Vec::new();
        if !text.is_empty()
            && appointment.starts_at > self.clock.now()
            && let Some((message, _)) = self
                .message_about(&mut tx, &appointment, &text, MessagePurpose::ServiceUpdate)
                .await?
        {
            let now = self.clock.now();
            notice.push((self.queue(&mut tx, actor, &message, now).await?, now));
        }
        tx.commit().await?;
        self.scheduled(&notice, &cancelled).await;
        Ok(appointment)
    }

    /// A request's appointments, read (and audited) as the request is.
    pub async fn of_request(
        &self,
        actor: &Actor,
        reference: Reference,
        access: SpecialCategoryAccess,
    ) -> Result<Vec<Appointment>, AppointmentError> {
        let request = self.store.get_request(actor, reference, access).await?;
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        Ok(appointments::of_request(&mut conn, &request.id).await?)
    }

    fn check(&self, booking: &Booking) -> Result<(), AppointmentError> {
        let place = booking.place.trim();
        if place.is_empty() || place.chars().count() > 200 || place.chars().any(char::is_control) {
            return Err(AppointmentError::Invalid(
                "place: 1 to 200 characters of text".into(),
            ));
        }
        if booking.starts_at <= self.clock.now() {
            return Err(AppointmentError::Invalid(
                "starts_at: must be in the future".into(),
            ));
        }
        if let Some(notes) = &booking.notes
            && notes.chars().count() > 2000
        {
            return Err(AppointmentError::Invalid(
                "notes: at most 2,000 characters".into(),
            ));
        }
        if let Some(times) = &booking.reminders
            && times.len() > 10
        {
            return Err(AppointmentError::Invalid("reminders: at most 10".into()));
        }
        Ok(())
    }

    async fn reference_of(&self, id: &str) -> Result<Reference, AppointmentError> {
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        let appointment = appointments::read(&mut conn, id).await?;
        Ok(requests::read(&mut conn, &appointment.request_id)
            .await?
            .reference)
    }

    async fn record(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        request_id: &str,
        what: &str,
    ) -> Result<(), StoreError> {
        requests::append(
            tx,
            request_id,
            &Event {
                kind: TimelineKind::Note,
                actor,
                contact_id: None,
                body: Some(what),
                from: None,
                to: None,
                message_id: None,
            },
        )
        .await?;
        audit::record(
            tx,
            actor,
            Action::Update,
            Entity::Request,
            request_id,
            Some(what),
        )
        .await
    }

    /// A message about `appointment` to its resident, from `text` (and the reminder
    /// subject), on their preferred channel; `None` when there is nobody to tell.
    async fn message_about(
        &self,
        tx: &mut sqlx::AnyConnection,
        appointment: &Appointment,
        text: &str,
        purpose: MessagePurpose,
    ) -> Result<Option<(OutboundMessage, crate::domain::request::ServiceRequest)>, AppointmentError>
    {
        let request = requests::read(tx, &appointment.request_id).await?;
        let Some(customer_id) = request.customer_id.clone() else {
            return Ok(None);
        };
        let customer = customers::read(tx, &customer_id).await?;
        let Some(to) = self.outbound.recipient_for(&customer.details) else {
            return Ok(None);
        };
        let (date, time) = appointment.starts_at.in_london();
        let fill = |template: &str| {
            template
                .replace("{reference}", &request.reference.to_string())
                .replace("{date}", &date)
                .replace("{time}", &time)
                .replace("{place}", &appointment.place)
        };
        let body = fill(text);
        let (subject, html) = match to {
            Recipient::Email(_) => (
                Some(fill(&self.settings.appointment_subject)),
                Some(html_from_text(&body)),
            ),
            Recipient::Sms(_) => (None, None),
        };
        let message = OutboundMessage {
            to,
            subject,
            body,
            html,
            purpose,
            request: Some((request.id.clone(), request.reference)),
            customer_id: Some(customer_id),
            occurrence: None,
        };
        Ok(Some((message, request)))
    }

    async fn queue(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        message: &OutboundMessage,
        at: Timestamp,
    ) -> Result<String, AppointmentError> {
        self.outbound
            .queue(tx, actor, message, at)
            .await
            .map_err(|e| match e {
                OutboundError::Store(e) => AppointmentError::Store(e),
                other => AppointmentError::Invalid(other.to_string()),
            })
    }

    /// The reminders of this version of the appointment, into the outbox.
    async fn queue_reminders(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        appointment: &Appointment,
        booking: &Booking,
    ) -> Result<Vec<(String, Timestamp)>, AppointmentError> {
        let text = self.settings.appointment_text.clone();
        let Some((message, request)) = self
            .message_about(tx, appointment, &text, MessagePurpose::Reminder)
            .await?
        else {
            return Ok(Vec::new());
        };
        let times = match &booking.reminders {
            Some(times) => times.clone(),
            None => self
                .service_offsets
                .get(request.service.as_str())
                .unwrap_or(&self.settings.appointment_offsets_minutes)
                .iter()
                .map(|m| ReminderTime::Before(Duration::from_secs(u64::from(*m) * 60)))
                .collect(),
        };
        let start = appointment.starts_at.millis();
        let now = self.clock.now().millis();
        let mut due: Vec<i64> = times
            .iter()
            .map(|t| match t {
                ReminderTime::Before(d) => start - d.as_millis() as i64,
                ReminderTime::At(at) => at.millis(),
            })
            // A time already past, or not before the appointment, is no reminder.
            .filter(|at| *at > now && *at < start)
            .collect();
        due.sort_unstable();
        due.dedup();
        let mut queued = Vec::with_capacity(due.len());
        for at in due {
            let at = Timestamp::from_millis(at);
            let key = format!(
                "appointment:{}:v{}:{}",
                appointment.id,
                appointment.version,
                at.millis()
            );
            let reminder = OutboundMessage {
                occurrence: Some(Occurrence {
                    of: ReminderOf::Appointment(appointment.id.clone()),
                    key,
                }),
                ..message.clone()
            };
            queued.push((self.queue(tx, actor, &reminder, at).await?, at));
        }
        Ok(queued)
    }

    /// After the commit: the scheduler told of new reminders and of cancelled ones.
    async fn scheduled(&self, new: &[(String, Timestamp)], cancelled: &[String]) {
        for (id, at) in new {
            self.outbound.scheduled(id, *at).await;
        }
        for id in cancelled {
            self.outbound.cancelled(id).await;
        }
    }
}

/// The appointment in words, for the timeline.
fn describe(a: &Appointment) -> String {
    let (date, time) = a.starts_at.in_london();
    format!("{date} at {time}, {}", a.place)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_london_time_across_the_clock_change() {
        // 14:00 UTC in July is 3pm BST; in December 2pm GMT.
        let summer = Timestamp::parse("2026-07-14T14:00:00Z").unwrap();
        assert_eq!(
            summer.in_london(),
            ("Tuesday 14 July 2026".into(), "3:00pm".into())
        );
        let winter = Timestamp::parse("2026-12-01T14:00:00Z").unwrap();
        assert_eq!(
            winter.in_london(),
            ("Tuesday 1 December 2026".into(), "2:00pm".into())
        );
    }
}
