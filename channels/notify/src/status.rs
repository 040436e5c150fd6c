//! Notification statuses as Notify reports them, and their order: receipts arrive
//! late, twice or out of order, and a message's status never moves backwards.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyStatus {
    Created,
    Sending,
    /// SMS: the network is still trying.
    Pending,
    /// SMS to a number abroad: some networks never say more.
    Sent,
    /// Final states.
    Delivered,
    PermanentFailure,
    TemporaryFailure,
    TechnicalFailure,
}

impl NotifyStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => NotifyStatus::Created,
            "sending" => NotifyStatus::Sending,
            "pending" => NotifyStatus::Pending,
            "sent" => NotifyStatus::Sent,
            "delivered" => NotifyStatus::Delivered,
            "permanent-failure" => NotifyStatus::PermanentFailure,
            "temporary-failure" => NotifyStatus::TemporaryFailure,
            "technical-failure" => NotifyStatus::TechnicalFailure,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyStatus::Created => "created",
            NotifyStatus::Sending => "sending",
            NotifyStatus::Pending => "pending",
            NotifyStatus::Sent => "sent",
            NotifyStatus::Delivered => "delivered",
            NotifyStatus::PermanentFailure => "permanent-failure",
            NotifyStatus::TemporaryFailure => "temporary-failure",
            NotifyStatus::TechnicalFailure => "technical-failure",
        }
    }

    /// Later states rank higher, on the same scale as Twilio's (1 to 5); the final
    /// states share the top rank, so the first final report stands.
    pub fn rank(self) -> i64 {
        match self {
            NotifyStatus::Created => 1,
            NotifyStatus::Sending => 3,
            NotifyStatus::Pending | NotifyStatus::Sent => 4,
            NotifyStatus::Delivered
            | NotifyStatus::PermanentFailure
            | NotifyStatus::TemporaryFailure
            | NotifyStatus::TechnicalFailure => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_and_finals_share_the_top_rank() {
        for s in [
            "created",
            "sending",
            "pending",
            "sent",
            "delivered",
            "permanent-failure",
            "temporary-failure",
            "technical-failure",
        ] {
            assert_eq!(NotifyStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(NotifyStatus::Created.rank() < NotifyStatus::Sending.rank());
        assert_eq!(
            NotifyStatus::Delivered.rank(),
            NotifyStatus::TechnicalFailure.rank()
        );
        assert_eq!(NotifyStatus::parse("Delivered"), None);
    }
}
