//! Exact money in integer cents. Never negative: subtraction that would go below zero fails.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// An exact, non-negative amount of money, held as integer cents.
///
/// It travels as a decimal string with two places (`"20.00"`) in every message the system
/// writes, and is read back from such a string or, for events from other systems, from a JSON
/// number that passes the same rules as an amount arriving on the gRPC edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(u64);

/// Why a number cannot be an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be a finite number")]
    NotFinite,
    #[error("must not be negative")]
    Negative,
    #[error("must be positive")]
    NotPositive,
    #[error("must have at most two decimal places")]
    TooPrecise,
    #[error("must not exceed {}", Money::MAX_AMOUNT)]
    TooLarge,
    #[error("is not a decimal number")]
    Malformed,
}

impl Money {
    pub const ZERO: Money = Money(0);
    /// The largest single amount accepted from outside, on any path (gRPC, Kafka, text): 1e12
    /// (in cents below).
    pub const MAX_AMOUNT: Money = Money(100_000_000_000_000);
    /// The most a sum of amounts may reach: what a BIGINT of cents holds, so that every store
    /// takes it.
    pub const MAX_TOTAL: Money = Money(i64::MAX as u64);

    pub const fn from_cents(cents: u64) -> Money {
        Money(cents)
    }

    /// Whole units, for tests and examples: `Money::units(20)` is 20.00.
    pub const fn units(units: u64) -> Money {
        Money(units * 100)
    }

    pub const fn cents(self) -> u64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `None` past [`Money::MAX_TOTAL`].
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0
            .checked_add(other.0)
            .filter(|cents| *cents <= Money::MAX_TOTAL.0)
            .map(Money)
    }

    /// `None` when the result would be negative.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    /// Reads an amount as the original API sends it, a `double`: it must be finite, not
    /// negative, at most [`Money::MAX_AMOUNT`], and have at most two decimal places in its
    /// shortest exact decimal form (so `0.1 + 0.2`, which is `0.30000000000000004`, is refused).
    pub fn from_f64(amount: f64) -> Result<Money, AmountError> {
        if !amount.is_finite() {
            return Err(AmountError::NotFinite);
        }
        if amount.is_sign_negative() && amount != 0.0 {
            return Err(AmountError::Negative);
        }
        if amount > Money::MAX_AMOUNT.to_f64() {
            return Err(AmountError::TooLarge);
        }
        // Rust prints the shortest decimal that reads back as the same double, never in
        // exponent form: counting its decimal places is exact.
        format!("{}", amount.abs()).parse()
    }

    /// Like [`Money::from_f64`], and zero is refused too: what a bid or a price must be.
    pub fn positive_from_f64(amount: f64) -> Result<Money, AmountError> {
        let money = Money::from_f64(amount)?;
        if money.is_zero() {
            return Err(AmountError::NotPositive);
        }
        Ok(money)
    }

    /// The nearest `double`, for the wire; exact for every amount below 2^53 cents.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Parses `"12"`, `"12.3"` or `"12.34"`, up to [`Money::MAX_AMOUNT`]; any sign, exponent or
/// third decimal is refused.
impl FromStr for Money {
    type Err = AmountError;

    fn from_str(text: &str) -> Result<Money, AmountError> {
        if text.starts_with('-') {
            return Err(AmountError::Negative);
        }
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(AmountError::Malformed);
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > 2 {
            return Err(AmountError::TooPrecise);
        }
        let whole: u64 = whole.parse().map_err(|_| AmountError::TooLarge)?;
        let fraction_cents = format!("{fraction:0<2}")
            .parse::<u64>()
            .map_err(|_| AmountError::Malformed)?;
        whole
            .checked_mul(100)
            .and_then(|cents| cents.checked_add(fraction_cents))
            .map(Money)
            .filter(|money| *money <= Money::MAX_AMOUNT)
            .ok_or(AmountError::TooLarge)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        struct MoneyVisitor;

        impl de::Visitor<'_> for MoneyVisitor {
            type Value = Money;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount as a decimal string or a number with two decimals at most")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Money, E> {
                text.parse()
                    .map_err(|e| E::custom(format_args!("amount {text:?} {e}")))
            }

            fn visit_u64<E: de::Error>(self, units: u64) -> Result<Money, E> {
                self.visit_f64(units as f64)
            }

            fn visit_i64<E: de::Error>(self, units: i64) -> Result<Money, E> {
                self.visit_f64(units as f64)
            }

            fn visit_f64<E: de::Error>(self, amount: f64) -> Result<Money, E> {
                Money::from_f64(amount).map_err(|e| E::custom(format_args!("amount {amount} {e}")))
            }
        }

        deserializer.deserialize_any(MoneyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amount_with_two_decimals_is_exact() {
        assert_eq!(Money::from_f64(10.25), Ok(Money::from_cents(1025)));
        assert_eq!(Money::from_f64(0.01), Ok(Money::from_cents(1)));
        assert_eq!(Money::from_f64(100.0), Ok(Money::units(100)));
        assert_eq!(Money::from_f64(1e12), Ok(Money::MAX_AMOUNT));
    }

    #[test]
    fn an_amount_is_refused_for_each_broken_rule() {
        assert_eq!(Money::from_f64(f64::NAN), Err(AmountError::NotFinite));
        assert_eq!(Money::from_f64(f64::INFINITY), Err(AmountError::NotFinite));
        assert_eq!(Money::from_f64(-1.0), Err(AmountError::Negative));
        assert_eq!(Money::from_f64(10.001), Err(AmountError::TooPrecise));
        assert_eq!(Money::from_f64(0.1 + 0.2), Err(AmountError::TooPrecise));
        assert_eq!(Money::from_f64(1e12 + 0.01), Err(AmountError::TooLarge));
        assert_eq!(Money::from_f64(1e300), Err(AmountError::TooLarge));
        assert_eq!(Money::positive_from_f64(0.0), Err(AmountError::NotPositive));
    }

    #[test]
    fn money_goes_through_text_and_back() {
        for cents in [0, 1, 10, 99, 100, 12_345, Money::MAX_AMOUNT.cents()] {
            let money = Money::from_cents(cents);
            assert_eq!(money.to_string().parse::<Money>(), Ok(money));
            assert_eq!(Money::from_f64(money.to_f64()), Ok(money));
        }
        assert_eq!(Money::from_cents(1205).to_string(), "12.05");
        assert_eq!("7.5".parse::<Money>(), Ok(Money::from_cents(750)));
        assert_eq!("7.50000".parse::<Money>(), Ok(Money::from_cents(750)));
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in ["", ".5", "1.2.3", "1e3", "+1", "abc", "1.x"] {
            assert_eq!(
                text.parse::<Money>(),
                Err(AmountError::Malformed),
                "{text:?}"
            );
        }
        assert_eq!("-1".parse::<Money>(), Err(AmountError::Negative));
        assert_eq!(
            "99999999999999999999".parse::<Money>(),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn text_past_the_largest_amount_is_refused_like_a_number() {
        assert_eq!("1000000000000".parse::<Money>(), Ok(Money::MAX_AMOUNT));
        assert_eq!(
            "1000000000000.01".parse::<Money>(),
            Err(AmountError::TooLarge)
        );
        // The balance that once froze the projector.
        assert_eq!(
            "100000000000000000".parse::<Money>(),
            Err(AmountError::TooLarge)
        );
        assert!(serde_json::from_str::<Money>(r#""100000000000000000""#).is_err());
    }

    #[test]
    fn a_sum_past_what_a_bigint_of_cents_holds_is_refused() {
        assert_eq!(Money::MAX_TOTAL.checked_add(Money::from_cents(1)), None);
        assert_eq!(
            Money::MAX_TOTAL.checked_add(Money::ZERO),
            Some(Money::MAX_TOTAL)
        );
    }

    #[test]
    fn subtraction_below_zero_fails_instead_of_going_negative() {
        assert_eq!(Money::units(5).checked_sub(Money::units(6)), None);
        assert_eq!(
            Money::units(5).checked_sub(Money::units(5)),
            Some(Money::ZERO)
        );
    }

    #[test]
    fn json_is_a_decimal_string_and_numbers_are_read_too() {
        assert_eq!(
            serde_json::to_string(&Money::from_cents(2000)).unwrap(),
            r#""20.00""#
        );
        let read = |json: &str| serde_json::from_str::<Money>(json);
        assert_eq!(read(r#""20.00""#).unwrap(), Money::units(20));
        assert_eq!(read("100").unwrap(), Money::units(100));
        assert_eq!(read("12.5").unwrap(), Money::from_cents(1250));
        assert!(read("12.345").is_err());
        assert!(read("-3").is_err());
    }
}
