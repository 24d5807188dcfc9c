//! Typed identifiers, and the deterministic ids that make retries and redeliveries harmless.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for every name-based (v5) id this system derives.
const NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_2a7e_94b3_4d0c_8e55_f1a0_3b2d_9c47);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            pub const fn from_u128(value: u128) -> Self {
                Self(Uuid::from_u128(value))
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(text).map(Self)
            }
        }
    };
}

uuid_id!(
    /// An issuer, registered in the Registering context.
    IssuerId
);
uuid_id!(
    /// An investor, registered in the Registering context.
    InvestorId
);
uuid_id!(
    /// An invoice put on sale by an issuer.
    InvoiceId
);
uuid_id!(
    /// A command: the handler applies each command id at most once.
    CommandId
);

impl CommandId {
    /// The id of the command a policy issues in reaction to the event at `version` of
    /// `aggregate_id`: the same on every redelivery of that event. `purpose` tells apart
    /// several commands issued for one event.
    pub fn for_reaction(aggregate_id: Uuid, version: u64, purpose: &str) -> CommandId {
        CommandId(derive(&format!(
            "reaction/{aggregate_id}/{version}/{purpose}"
        )))
    }

    /// The id of the command a policy issues for an integration event about `subject`.
    pub fn for_integration_event(event_type: &str, subject: Uuid) -> CommandId {
        CommandId(derive(&format!("integration/{event_type}/{subject}")))
    }

    /// The id of a client command sent with an idempotency key: the same kind of request with
    /// the same key and the same content (`body`, its encoded form) is the same command; a key
    /// reused for different content makes a different command, never a silent duplicate.
    pub fn for_idempotency_key(request: &str, key: &str, body: &[u8]) -> CommandId {
        let name = [
            format!("client/{request}/{}/{key}/", key.len()).as_bytes(),
            body,
        ]
        .concat();
        CommandId(Uuid::new_v5(&NAMESPACE, &name))
    }
}

impl InvoiceId {
    /// The id of the invoice a `SellInvoice` command creates: a retried command (same command
    /// id) names the same invoice.
    pub fn for_sale(command: CommandId) -> InvoiceId {
        InvoiceId(derive(&format!("invoice/{command}")))
    }
}

fn derive(name: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaction_id_depends_only_on_the_triggering_event_and_purpose() {
        let aggregate = Uuid::new_v4();
        let id = CommandId::for_reaction(aggregate, 3, "release");
        assert_eq!(id, CommandId::for_reaction(aggregate, 3, "release"));
        assert_ne!(id, CommandId::for_reaction(aggregate, 4, "release"));
        assert_ne!(id, CommandId::for_reaction(aggregate, 3, "commit"));
    }

    #[test]
    fn a_retried_sale_names_the_same_invoice() {
        let command = CommandId::new_random();
        assert_eq!(InvoiceId::for_sale(command), InvoiceId::for_sale(command));
        assert_ne!(
            InvoiceId::for_sale(command),
            InvoiceId::for_sale(CommandId::new_random())
        );
    }

    #[test]
    fn an_idempotency_key_names_one_command_per_kind_of_request_and_content() {
        let sell = CommandId::for_idempotency_key("SellInvoice", "k1", b"body");
        assert_eq!(
            sell,
            CommandId::for_idempotency_key("SellInvoice", "k1", b"body")
        );
        assert_ne!(
            sell,
            CommandId::for_idempotency_key("BidOnInvoice", "k1", b"body")
        );
        assert_ne!(
            sell,
            CommandId::for_idempotency_key("SellInvoice", "k1", b"other")
        );
        assert_ne!(
            sell,
            CommandId::for_idempotency_key("SellInvoice", "k2", b"body")
        );
        // The key's length is part of the name: a key cannot absorb the start of a body.
        assert_ne!(
            CommandId::for_idempotency_key("SellInvoice", "k", b"/xbody"),
            CommandId::for_idempotency_key("SellInvoice", "k/x", b"body"),
        );
    }
}
