//! Message statuses as Twilio reports them (the council's own — suppressed, no
//! consent — are the hub's), and their order: callbacks arrive late,
//! twice or out of order, and a message's status must never move backwards.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    Accepted,
    Scheduled,
    Queued,
    Sending,
    Sent,
    /// Final states.
    Delivered,
    Undelivered,
    Failed,
    Canceled,
}

impl MessageStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "accepted" => MessageStatus::Accepted,
            "scheduled" => MessageStatus::Scheduled,
            "queued" => MessageStatus::Queued,
            "sending" => MessageStatus::Sending,
            "sent" => MessageStatus::Sent,
            "delivered" => MessageStatus::Delivered,
            "undelivered" => MessageStatus::Undelivered,
            "failed" => MessageStatus::Failed,
            "canceled" => MessageStatus::Canceled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Accepted => "accepted",
            MessageStatus::Scheduled => "scheduled",
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Undelivered => "undelivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Canceled => "canceled",
        }
    }

    /// Later states rank higher; a report only ever raises a message's rank. The
    /// final states share the top rank: the first final report stands.
    pub fn rank(self) -> i64 {
        match self {
            MessageStatus::Accepted | MessageStatus::Scheduled => 1,
            MessageStatus::Queued => 2,
            MessageStatus::Sending => 3,
            MessageStatus::Sent => 4,
            MessageStatus::Delivered
            | MessageStatus::Undelivered
            | MessageStatus::Failed
            | MessageStatus::Canceled => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order() {
        assert!(MessageStatus::Queued.rank() < MessageStatus::Sent.rank());
        assert!(MessageStatus::Sent.rank() < MessageStatus::Delivered.rank());
        assert_eq!(
            MessageStatus::Delivered.rank(),
            MessageStatus::Failed.rank()
        );
        assert_eq!(
            MessageStatus::parse("DELIVERED"),
            Some(MessageStatus::Delivered)
        );
        assert_eq!(MessageStatus::parse("lost"), None);
    }
}
