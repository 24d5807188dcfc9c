//! Reading request fields into domain types, refusing what does not fit with the field's name.

use financing_domain::Money;
use uuid::Uuid;

use crate::{ApiError, v1};

/// The id in a required `UUID` field, e.g. `required_id::<InvestorId>("investor_id", ..)`.
pub fn required_id<T: From<Uuid>>(field: &str, id: Option<&v1::Uuid>) -> Result<T, ApiError> {
    let id = id.ok_or_else(|| ApiError::invalid(field, "is required"))?;
    Uuid::parse_str(&id.value).map(T::from).map_err(|_| {
        ApiError::invalid(
            format!("{field}.value"),
            format!("{:?} is not a UUID", id.value),
        )
    })
}

/// The amount in a required `Money` field: finite, positive, two decimals at most, 1e12 at
/// most.
pub fn required_amount(field: &str, money: Option<&v1::Money>) -> Result<Money, ApiError> {
    let money = money.ok_or_else(|| ApiError::invalid(field, "is required"))?;
    Money::positive_from_f64(money.amount)
        .map_err(|reason| ApiError::invalid(format!("{field}.amount"), reason.to_string()))
}

pub fn to_proto_id(id: impl Into<Uuid>) -> v1::Uuid {
    v1::Uuid {
        value: id.into().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use financing_domain::InvestorId;

    use super::*;

    fn invalid_field(error: ApiError) -> String {
        match error {
            ApiError::InvalidArgument { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_id_names_its_field() {
        let error = required_id::<InvestorId>("investor_id", None).unwrap_err();
        assert_eq!(error.to_string(), "investor_id: is required");
    }

    #[test]
    fn an_id_that_is_not_a_uuid_names_its_field() {
        let id = v1::Uuid {
            value: "nope".into(),
        };
        let error = required_id::<InvestorId>("investor_id", Some(&id)).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"investor_id.value: "nope" is not a UUID"#
        );
    }

    #[test]
    fn a_valid_id_and_amount_are_read() {
        let id = Uuid::new_v4();
        let read = required_id::<InvestorId>("investor_id", Some(&to_proto_id(id)));
        assert_eq!(read.unwrap(), InvestorId::from(id));
        let money = v1::Money { amount: 12.5 };
        assert_eq!(
            required_amount("bid", Some(&money)).unwrap(),
            Money::from_cents(1250)
        );
    }

    #[test]
    fn every_bad_amount_is_refused_naming_the_field() {
        for amount in [f64::NAN, f64::INFINITY, -1.0, 0.0, 10.001, 2e12] {
            let money = v1::Money { amount };
            let error = required_amount("bid", Some(&money)).unwrap_err();
            assert_eq!(invalid_field(error), "bid.amount", "{amount}");
        }
        assert_eq!(
            invalid_field(required_amount("bid", None).unwrap_err()),
            "bid"
        );
    }
}
