//! Requests opened and moved by staff, and the notice each sends the resident.
//!
//! When staff open a request for a resident, or a request is resolved, cancelled or
//! reopened, the resident is told on their preferred channel, from the service's
//! own words or `[notices]`. The notice is a service update: it needs the resident's
//! consent to service messages (checked when it is written and again when it is
//! sent) and is written to the outbox in the same transaction as the change, so a
//! change is never made without its notice, nor a notice sent for a change that
//! rolled back. Requests opened by a resident's own text, email or call are
//! acknowledged by intake instead.

use std::collections::HashMap;

use sqlx::AnyConnection;

use crate::configuration::{NoticeSettings, ServiceNotices, Settings};
use crate::domain::message::MessagePurpose;
use crate::domain::request::{NewRequest, ServiceRequest};
use crate::domain::{Actor, RequestStatus, Timestamp};
use crate::outbound::{Outbound, OutboundError, OutboundMessage, Recipient, html_from_text};
use crate::store::requests::{self, SpecialCategoryAccess};
use crate::store::{Store, StoreResult, customers};

/// Which notice a change sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    Opened,
    Resolved,
    Cancelled,
    Reopened,
}

impl Notice {
    fn of_change(from: RequestStatus, to: RequestStatus) -> Option<Notice> {
        match to {
            RequestStatus::Resolved => Some(Notice::Resolved),
            RequestStatus::Cancelled => Some(Notice::Cancelled),
            RequestStatus::Open if from.is_closed() => Some(Notice::Reopened),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Notices {
    store: Store,
    outbound: Outbound,
    defaults: NoticeSettings,
    /// Each service's name and its own words.
    services: HashMap<String, (String, ServiceNotices)>,
}

impl Notices {
    pub fn new(store: Store, outbound: Outbound, settings: &Settings) -> Self {
        Notices {
            store,
            outbound,
            defaults: settings.notices.clone(),
            services: settings
                .services
                .iter()
                .map(|s| {
                    (
                        s.code.as_str().to_string(),
                        (s.name.clone(), s.notices.clone()),
                    )
                })
                .collect(),
        }
    }

    /// Staff open a request for a resident, who is told its reference.
    pub async fn open_request(
        &self,
        actor: &Actor,
        new: &NewRequest,
    ) -> StoreResult<ServiceRequest> {
        let mut tx = self.store.begin().await?;
        let request = requests::create(&mut tx, actor, new).await?;
        let queued = self.queue(&mut tx, actor, &request, Notice::Opened).await?;
        tx.commit().await?;
        self.scheduled(queued).await;
        Ok(request)
    }

    /// Moves a request along its life-cycle; resolving, cancelling and reopening
    /// tell the resident.
    pub async fn change_status(
        &self,
        actor: &Actor,
        reference: crate::domain::Reference,
        to: RequestStatus,
        note: Option<&str>,
        access: SpecialCategoryAccess,
    ) -> StoreResult<ServiceRequest> {
        self.store
            .authorise_change(actor, reference, access)
            .await?;
        let mut tx = self.store.begin().await?;
        let (before, after) = requests::change_status(&mut tx, actor, reference, to, note).await?;
        let queued = match Notice::of_change(before.status, after.status) {
            Some(notice) => self.queue(&mut tx, actor, &after, notice).await?,
            None => None,
        };
        tx.commit().await?;
        self.scheduled(queued).await;
        Ok(after)
    }

    /// The notice's text for this request's service; `None` when it sends none.
    fn text(&self, service: &str, notice: Notice) -> Option<(String, String)> {
        let (name, own) = self.services.get(service)?;
        let d = &self.defaults;
        let (own, default) = match notice {
            Notice::Opened => (&own.opened, &d.opened),
            Notice::Resolved => (&own.resolved, &d.resolved),
            Notice::Cancelled => (&own.cancelled, &d.cancelled),
            Notice::Reopened => (&own.reopened, &d.reopened),
        };
        let text = own.as_ref().unwrap_or(default);
        (!text.is_empty()).then(|| (name.clone(), text.clone()))
    }

    async fn queue(
        &self,
        tx: &mut AnyConnection,
        actor: &Actor,
        request: &ServiceRequest,
        notice: Notice,
    ) -> StoreResult<Option<(String, Timestamp)>> {
        let Some(customer_id) = &request.customer_id else {
            return Ok(None);
        };
        let Some((service, template)) = self.text(request.service.as_str(), notice) else {
            return Ok(None);
        };
        let customer = customers::read(tx, customer_id).await?;
        let Some(to) = self.outbound.recipient_for(&customer.details) else {
            return Ok(None);
        };
        let reference = request.reference.to_string();
        let fill = |t: &str| {
            t.replace("{reference}", &reference)
                .replace("{service}", &service)
        };
        let body = fill(&template);
        let (subject, html) = match to {
            Recipient::Email(_) => (
                Some(fill(&self.defaults.subject)),
                Some(html_from_text(&body)),
            ),
            Recipient::Sms(_) => (None, None),
        };
        let now = self.outbound.clock().now();
        let message = OutboundMessage {
            to,
            subject,
            body,
            html,
            purpose: MessagePurpose::ServiceUpdate,
            request: Some((request.id.clone(), request.reference)),
            customer_id: Some(customer_id.clone()),
            occurrence: None,
        };
        match self.outbound.queue(tx, actor, &message, now).await {
            Ok(id) => Ok(Some((id, now))),
            Err(OutboundError::Store(e)) => Err(e),
            // recipient_for only picks a channel that can send.
            Err(OutboundError::ChannelOff(_)) => Ok(None),
        }
    }

    async fn scheduled(&self, queued: Option<(String, Timestamp)>) {
        if let Some((id, due)) = queued {
            self.outbound.scheduled(&id, due).await;
        }
    }
}
