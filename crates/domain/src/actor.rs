//! Who asked for a change: a party (an issuer or an investor, acting for itself) or an operator,
//! as the edge authenticated it. A client's command carries it, the saga's reactions carry their
//! cause's, and every event and outcome records it: the audit trail.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an authenticated party may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Issuer,
    Investor,
    /// Support: may approve or reverse any financing and read everything, never sells or bids.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Issuer => "issuer",
            Role::Investor => "investor",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "issuer" => Ok(Role::Issuer),
            "investor" => Ok(Role::Investor),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "{other:?} is not a role (issuer, investor or operator)"
            )),
        }
    }
}

/// An authenticated party and the role it acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub party: Uuid,
    pub role: Role,
}

impl Actor {
    pub fn new(party: impl Into<Uuid>, role: Role) -> Actor {
        Actor {
            party: party.into(),
            role,
        }
    }

    /// Whether it is `party` acting as `role`.
    pub fn is(&self, role: Role, party: impl Into<Uuid>) -> bool {
        self.role == role && self.party == party.into()
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.party)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_reads_back_from_its_name_and_nothing_else_is_a_role() {
        for role in [Role::Issuer, Role::Investor, Role::Operator] {
            assert_eq!(role.as_str().parse(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
        assert!("Issuer".parse::<Role>().is_err());
    }
}
