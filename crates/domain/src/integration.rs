//! Integration events from the Registering context, read from `registering.events`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::Message;
use crate::{InvestorId, IssuerId, Money};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum IntegrationEvent {
    IssuerRegistered {
        id: IssuerId,
        name: String,
    },
    InvestorRegistered {
        id: InvestorId,
        name: String,
        balance: Money,
    },
}

impl IntegrationEvent {
    /// The issuer or investor the event is about.
    pub fn subject_id(&self) -> Uuid {
        match self {
            IntegrationEvent::IssuerRegistered { id, .. } => id.as_uuid(),
            IntegrationEvent::InvestorRegistered { id, .. } => id.as_uuid(),
        }
    }
}

impl Message for IntegrationEvent {
    fn type_name(&self) -> &'static str {
        match self {
            IntegrationEvent::IssuerRegistered { .. } => "IssuerRegistered",
            IntegrationEvent::InvestorRegistered { .. } => "InvestorRegistered",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_investor_registered_by_another_system_may_carry_a_numeric_balance() {
        let id = InvestorId::new_random();
        let payload = serde_json::json!({ "id": id, "name": "Ada", "balance": 100 });
        assert_eq!(
            IntegrationEvent::from_payload("InvestorRegistered", payload),
            Ok(IntegrationEvent::InvestorRegistered {
                id,
                name: "Ada".into(),
                balance: Money::units(100),
            })
        );
    }

    #[test]
    fn a_balance_with_three_decimals_does_not_decode() {
        let payload =
            serde_json::json!({ "id": InvestorId::new_random(), "name": "Ada", "balance": 1.005 });
        assert!(IntegrationEvent::from_payload("InvestorRegistered", payload).is_err());
    }
}
