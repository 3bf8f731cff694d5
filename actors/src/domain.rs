//! Domain values parsed once at the edge (parse, don't validate): SKUs, quantities, money,
//! ids. Handlers and actors only ever see these types, never unchecked strings.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

pub use iso_currency::Currency;

/// Why a raw value was refused; `field` names it for the 422 `details`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub message: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A stock-keeping unit: 1..=64 chars of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.chars().all(ok_char) {
            return Err(InvalidValue::new(
                "sku",
                "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> Self {
        sku.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Units of one cart line: 0..=10000 (0 removes the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 10_000;

    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        if !(0..=i64::from(Self::MAX)).contains(&raw) {
            return Err(InvalidValue::new(
                "quantity",
                "must be an integer from 0 to 10000",
            ));
        }
        Ok(Self(raw as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = InvalidValue;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> Self {
        q.0
    }
}

/// Parses an ISO 4217 alphabetic code ("EUR").
pub fn parse_currency(raw: &str) -> Result<Currency, InvalidValue> {
    Currency::from_code(raw)
        .ok_or_else(|| InvalidValue::new("currency", "must be an ISO 4217 code such as \"EUR\""))
}

/// The most a product may cost: 10^12 minor units (10 000 000 000.00 in a two-decimal
/// currency). With `Quantity::MAX` a line stays far inside i64, and every amount stays exact
/// as a JavaScript number (below 2^53).
pub const MAX_PRICE: i64 = 1_000_000_000_000;
/// The most a cart (and so an order) may total: 10^15 minor units, also below 2^53.
pub const MAX_TOTAL: i64 = 1_000_000_000_000_000;
/// The most lines one cart may hold. With the limits above, no sum can overflow i64.
pub const MAX_CART_LINES: usize = 250;

/// A price in integer minor units (`1999` = 19.99): 0..=`MAX_PRICE`.
pub fn parse_price(raw: i64) -> Result<i64, InvalidValue> {
    if !(0..=MAX_PRICE).contains(&raw) {
        return Err(InvalidValue::new(
            "price",
            format!("must be an integer in minor units from 0 to {MAX_PRICE}"),
        ));
    }
    Ok(raw)
}

/// `unit_price` times `quantity`, or `None` where i64 would overflow (never within the
/// limits above; only data stored before them could).
pub fn line_total(unit_price: i64, quantity: u32) -> Option<i64> {
    unit_price.checked_mul(i64::from(quantity))
}

/// `1999` EUR -> `19.99 EUR`: minor units in major units with the currency's ISO 4217
/// exponent (2 where it has none), then the code. For emails and logs.
pub fn format_money(amount: i64, currency: Currency) -> String {
    format!("{} {}", major_units(amount, currency), currency.code())
}

/// `1999` EUR -> `€19.99`, as a shopper reads a price: the currency's sign before the amount,
/// or the amount and the code where the sign is letters (`19.99 CHF`).
pub fn display_money(amount: i64, currency: Currency) -> String {
    let symbol = currency.symbol().to_string();
    let major = major_units(amount.saturating_abs(), currency);
    let sign = if amount < 0 { "-" } else { "" };
    if symbol.chars().any(char::is_alphabetic) || symbol == "¤" {
        format!("{sign}{major} {}", currency.code())
    } else {
        format!("{sign}{symbol}{major}")
    }
}

/// `1999` -> `19.99` with the currency's exponent.
fn major_units(amount: i64, currency: Currency) -> String {
    let exponent = u32::from(currency.exponent().unwrap_or(2));
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    match 10u64.checked_pow(exponent) {
        Some(scale) if exponent > 0 => format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = exponent as usize
        ),
        _ => format!("{sign}{abs}"),
    }
}

/// A product name: 1..=200 characters after trimming.
pub fn parse_product_name(raw: &str) -> Result<String, InvalidValue> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > 200 {
        return Err(InvalidValue::new("name", "must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
                Uuid::parse_str(raw)
                    .map(Self)
                    .map_err(|_| InvalidValue::new(stringify!($name), "must be a UUID"))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A cart's id.
    CartId
);
uuid_id!(
    /// An order's id; also the payment gateway's idempotency key.
    OrderId
);

impl OrderId {
    /// The order's number as shoppers and support staff read it: `K-` and ten characters of
    /// Crockford's base32 (no I, L, O or U to misread) in two groups, `K-7F3QX-9D2MA`. It is
    /// 50 bits mixed from the whole id, so it needs no storage and no coordination between
    /// replicas; two orders share a number with a chance of about 1 in 2,000 in a million
    /// orders (the id stays the key; the number is for people).
    pub fn number(&self) -> String {
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let bits = self.0.as_u128();
        let mut mixed = splitmix64((bits >> 64) as u64 ^ splitmix64(bits as u64));
        let mut chars = [0u8; 10];
        for c in &mut chars {
            *c = ALPHABET[(mixed & 31) as usize];
            mixed >>= 5;
        }
        let text = String::from_utf8_lossy(&chars);
        format!("K-{}-{}", &text[..5], &text[5..])
    }
}

/// SplitMix64's finaliser: a bijection of u64 whose every output bit depends on every input
/// bit (so ids a millisecond apart get unrelated numbers).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The authenticated user's id (the JWT `sub`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub String);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the catalog says about a SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductInfo {
    pub name: String,
    /// Minor units of `currency`.
    pub price: i64,
    pub currency: Currency,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_accepts_the_contract_alphabet_and_refuses_the_rest() {
        assert!(Sku::parse("tee-M_2.blue").is_ok());
        assert!(Sku::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn quantity_is_bounded_to_ten_thousand() {
        assert_eq!(Quantity::parse(0).map(Quantity::get), Ok(0));
        assert_eq!(Quantity::parse(10_000).map(Quantity::get), Ok(10_000));
        assert!(Quantity::parse(10_001).is_err());
        assert!(Quantity::parse(-1).is_err());
    }

    #[test]
    fn currency_must_be_iso_4217() {
        assert_eq!(parse_currency("EUR"), Ok(Currency::EUR));
        assert!(parse_currency("EURO").is_err());
        assert!(parse_currency("XYZ1").is_err());
    }

    #[test]
    fn names_and_prices_are_checked() {
        assert!(parse_product_name("  ").is_err());
        assert!(parse_product_name(&"x".repeat(201)).is_err());
        assert_eq!(parse_product_name(" Tee ").as_deref(), Ok("Tee"));
        assert!(parse_price(-1).is_err());
        assert_eq!(parse_price(0), Ok(0));
    }

    #[test]
    fn order_numbers_are_short_readable_and_differ_between_orders() {
        let number = OrderId::new().number();
        assert_eq!(number.len(), 13, "{number}");
        assert!(number.starts_with("K-") && number.as_bytes()[7] == b'-');
        assert!(
            number[2..]
                .chars()
                .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()),
            "{number}"
        );
        let id = OrderId::new();
        assert_eq!(id.number(), id.number(), "a number is a function of the id");
        let numbers: std::collections::HashSet<String> =
            (0..10_000).map(|_| OrderId::new().number()).collect();
        assert_eq!(numbers.len(), 10_000, "10,000 orders, no two numbers equal");
    }

    #[test]
    fn money_is_formatted_with_the_currency_exponent() {
        assert_eq!(format_money(1999, Currency::EUR), "19.99 EUR");
        assert_eq!(format_money(5, Currency::EUR), "0.05 EUR");
        assert_eq!(format_money(0, Currency::USD), "0.00 USD");
        assert_eq!(format_money(1999, Currency::JPY), "1999 JPY");
        assert_eq!(format_money(12345, Currency::BHD), "12.345 BHD");
        assert_eq!(format_money(-1999, Currency::EUR), "-19.99 EUR");
    }

    #[test]
    fn shoppers_see_the_currency_sign() {
        assert_eq!(display_money(1999, Currency::EUR), "€19.99");
        assert_eq!(display_money(2499, Currency::USD), "$24.99");
        assert_eq!(display_money(1999, Currency::JPY), "¥1999");
        assert_eq!(display_money(-500, Currency::GBP), "-£5.00");
        assert_eq!(display_money(1000, Currency::SEK), "10.00 SEK");
    }

    #[test]
    fn prices_are_bounded_so_no_line_can_overflow() {
        assert_eq!(parse_price(MAX_PRICE), Ok(MAX_PRICE));
        assert!(parse_price(MAX_PRICE + 1).is_err());
        assert!(parse_price(i64::MAX).is_err());
        assert_eq!(
            line_total(MAX_PRICE, Quantity::MAX),
            Some(MAX_PRICE * 10_000)
        );
        assert_eq!(line_total(i64::MAX, 2), None);
    }
}
