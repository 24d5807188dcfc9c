//! The issuer, as far as Financing knows it: registered (with a name) or not.

use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::{Aggregate, ImpossibleEvent, IssuerId, Rejection};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Issuer {
    name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IssuerCommand {
    /// From the `IssuerRegistered` integration event.
    Create { name: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum IssuerEvent {
    IssuerCreated { issuer_id: IssuerId, name: String },
}

impl Issuer {
    pub fn is_registered(&self) -> bool {
        self.name.is_some()
    }
}

impl Aggregate for Issuer {
    const TYPE: &'static str = "Issuer";
    type Id = IssuerId;
    type Command = IssuerCommand;
    type Event = IssuerEvent;

    fn decide(&self, id: IssuerId, command: &IssuerCommand) -> Result<Vec<IssuerEvent>, Rejection> {
        match command {
            IssuerCommand::Create { .. } if self.is_registered() => {
                Err(Rejection::already_exists::<Issuer>(id))
            }
            IssuerCommand::Create { name } => Ok(vec![IssuerEvent::IssuerCreated {
                issuer_id: id,
                name: name.clone(),
            }]),
        }
    }

    fn apply(&mut self, event: &IssuerEvent) -> Result<(), ImpossibleEvent> {
        match event {
            IssuerEvent::IssuerCreated { .. } if self.name.is_some() => {
                Err(ImpossibleEvent::new(event, "the issuer already exists"))
            }
            IssuerEvent::IssuerCreated { name, .. } => {
                self.name = Some(name.clone());
                Ok(())
            }
        }
    }
}

impl Message for IssuerEvent {
    fn type_name(&self) -> &'static str {
        match self {
            IssuerEvent::IssuerCreated { .. } => "IssuerCreated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn created(id: IssuerId) -> IssuerEvent {
        IssuerEvent::IssuerCreated {
            issuer_id: id,
            name: "ACME".into(),
        }
    }

    #[test]
    fn a_registered_issuer_is_created() {
        let id = IssuerId::new_random();
        let issuer = given::<Issuer>(id, [])
            .when(IssuerCommand::Create {
                name: "ACME".into(),
            })
            .then([created(id)]);
        assert!(issuer.is_registered());
    }

    #[test]
    fn an_issuer_is_created_only_once() {
        let id = IssuerId::new_random();
        given::<Issuer>(id, [created(id)])
            .when(IssuerCommand::Create {
                name: "ACME".into(),
            })
            .then_rejected(Rejection::already_exists::<Issuer>(id));
    }

    #[test]
    fn a_second_creation_event_is_impossible() {
        let id = IssuerId::new_random();
        let mut issuer = Issuer::replay(&[created(id)]).unwrap();
        assert!(issuer.apply(&created(id)).is_err());
    }
}
