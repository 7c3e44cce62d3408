//! Decoding and validation of API input.
//!
//! Bodies are read from a [`serde_json::Value`] by hand rather than through
//! `#[derive(Deserialize)]`, so that every problem is reported as a
//! [`ValidationError`] naming the offending field (`items[2].quantity`), and
//! all problems in a body are reported at once.
//!
//! Conventions shared by every body parser:
//! - the body must be a JSON object (otherwise the error names `body`);
//! - unknown fields are rejected, each with the message `unknown field`;
//! - a field that is `null` counts as absent;
//! - integers must be JSON integers (no floats such as `1.0`, no strings)
//!   that fit in `i64`.

use core::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::money::Money;

/// Fewest characters in an email address.
pub const MIN_EMAIL_CHARS: usize = 3;
/// Most characters in an email address.
pub const MAX_EMAIL_CHARS: usize = 254;
/// Most characters in a sku.
pub const MAX_SKU_CHARS: usize = 64;
/// Largest quantity of one sku in an order (after merging duplicate lines).
pub const MAX_QUANTITY: u32 = 10_000;
/// Most lines in an order's `items`.
pub const MAX_ORDER_LINES: usize = 100;
/// Largest `value_cents` of a value-only order.
pub const MAX_ORDER_VALUE_CENTS: i64 = 100_000_000_000;
/// Most characters in a product name (after trimming).
pub const MAX_PRODUCT_NAME_CHARS: usize = 200;
/// Largest product price in cents.
pub const MAX_PRICE_CENTS: i64 = 100_000_000_000;
/// Largest product stock.
pub const MAX_STOCK: i64 = 1_000_000_000;
/// Largest balance credit in cents.
pub const MAX_CREDIT_CENTS: i64 = 100_000_000_000;
/// Largest `value` (whole units) of the legacy order route.
pub const MAX_COMPAT_VALUE_UNITS: i64 = 1_000_000_000;
/// Page size used when no `limit` is given.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size.
pub const MAX_LIMIT: u32 = 100;

/// One problem with the input, naming the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValidationError {
    /// Path of the offending field, e.g. `customer` or `items[0].sku`.
    pub field: String,
    /// What is wrong with it, e.g. `must be between 1 and 10000`.
    pub message: String,
}

impl ValidationError {
    /// Creates an error for `field` with `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ValidationError {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    /// Formats as `field: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// One line of an order: a quantity of one product.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product's sku.
    pub sku: String,
    /// How many units, 1..=[`MAX_QUANTITY`].
    pub quantity: u32,
}

/// What an order consists of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderContent {
    /// Products by sku; skus are unique (duplicates were merged).
    Items(Vec<OrderLine>),
    /// A plain amount with no products (value-only and legacy orders).
    Value(Money),
}

/// A validated request to place an order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// The customer's email address, lowercased.
    pub customer: String,
    /// The products or amount ordered.
    pub content: OrderContent,
}

/// A validated product to create or replace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProductInput {
    /// Display name, trimmed, 1..=[`MAX_PRODUCT_NAME_CHARS`] characters.
    pub name: String,
    /// Unit price, 0..=[`MAX_PRICE_CENTS`] cents.
    pub price_cents: Money,
    /// Units in stock, 0..=[`MAX_STOCK`].
    pub stock: i64,
}

/// Validates and normalises (lowercases) an email address.
///
/// Rules: 3..=254 characters, no whitespace or control characters, exactly
/// one `@` with a non-empty part on each side, and a `.` in the domain.
pub fn parse_email(field: &str, input: &str) -> Result<String, ValidationError> {
    let email = input.to_lowercase();
    let length = email.chars().count();
    if !(MIN_EMAIL_CHARS..=MAX_EMAIL_CHARS).contains(&length) {
        return Err(ValidationError::new(
            field,
            format!("must be between {MIN_EMAIL_CHARS} and {MAX_EMAIL_CHARS} characters"),
        ));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    if email.matches('@').count() != 1 {
        return Err(ValidationError::new(field, "must contain exactly one '@'"));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(ValidationError::new(field, "must contain exactly one '@'"));
    };
    if local.is_empty() {
        return Err(ValidationError::new(field, "must have a name before '@'"));
    }
    if domain.is_empty() {
        return Err(ValidationError::new(field, "must have a domain after '@'"));
    }
    if !domain.contains('.') {
        return Err(ValidationError::new(field, "must have a '.' in the domain"));
    }
    Ok(email)
}

/// Validates a sku: 1..=64 characters of `A-Z a-z 0-9 . _ -` (case kept).
pub fn parse_sku(field: &str, input: &str) -> Result<String, ValidationError> {
    if input.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if !input
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(ValidationError::new(
            field,
            "must contain only letters, digits, '.', '_' and '-'",
        ));
    }
    // Only ASCII remains, so bytes are characters.
    if input.len() > MAX_SKU_CHARS {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_SKU_CHARS} characters"),
        ));
    }
    Ok(input.to_owned())
}

/// Validates a request to place an order.
///
/// The body holds `customer` (an email) and exactly one of
/// - `items`: 1..=100 lines `{"sku", "quantity"}`; lines with the same sku
///   are merged by summing their quantities, which must stay within
///   [`MAX_QUANTITY`]; or
/// - `value_cents`: an integer 1..=[`MAX_ORDER_VALUE_CENTS`].
pub fn parse_place_order(body: &Value) -> Result<PlaceOrder, Vec<ValidationError>> {
    let object = body_object(body)?;
    let mut errors = Vec::new();

    let customer = keep(&mut errors, required_email(object, "customer"));

    let content = match (present(object, "items"), present(object, "value_cents")) {
        (Some(_), Some(_)) => {
            errors.push(ValidationError::new(
                "value_cents",
                "must not be given together with items",
            ));
            None
        }
        (None, None) => {
            errors.push(ValidationError::new(
                "items",
                "either items or value_cents is required",
            ));
            None
        }
        (Some(items), None) => match parse_items(items) {
            Ok(lines) => Some(OrderContent::Items(lines)),
            Err(mut item_errors) => {
                errors.append(&mut item_errors);
                None
            }
        },
        (None, Some(value)) => keep(
            &mut errors,
            integer_in_range(value, "value_cents", 1, MAX_ORDER_VALUE_CENTS),
        )
        .map(|cents| OrderContent::Value(Money::from_cents(cents))),
    };

    reject_unknown_fields(
        object,
        &["customer", "items", "value_cents"],
        "",
        &mut errors,
    );

    match (customer, content) {
        (Some(customer), Some(content)) if errors.is_empty() => {
            Ok(PlaceOrder { customer, content })
        }
        _ => Err(errors),
    }
}

/// Validates a product body: `name` (trimmed, 1..=200 characters),
/// `price_cents` (0..=[`MAX_PRICE_CENTS`]) and `stock` (0..=[`MAX_STOCK`]).
pub fn parse_product(body: &Value) -> Result<ProductInput, Vec<ValidationError>> {
    let object = body_object(body)?;
    let mut errors = Vec::new();

    let name = keep(
        &mut errors,
        required(object, "name", "name")
            .and_then(|value| string_value(value, "name"))
            .and_then(parse_product_name),
    );
    let price_cents = keep(
        &mut errors,
        required(object, "price_cents", "price_cents")
            .and_then(|value| integer_in_range(value, "price_cents", 0, MAX_PRICE_CENTS)),
    );
    let stock = keep(
        &mut errors,
        required(object, "stock", "stock")
            .and_then(|value| integer_in_range(value, "stock", 0, MAX_STOCK)),
    );

    reject_unknown_fields(object, &["name", "price_cents", "stock"], "", &mut errors);

    match (name, price_cents, stock) {
        (Some(name), Some(price_cents), Some(stock)) if errors.is_empty() => Ok(ProductInput {
            name,
            price_cents: Money::from_cents(price_cents),
            stock,
        }),
        _ => Err(errors),
    }
}

/// Validates a balance credit body `{"amount_cents"}` (1..=[`MAX_CREDIT_CENTS`]).
pub fn parse_credit(body: &Value) -> Result<Money, Vec<ValidationError>> {
    let object = body_object(body)?;
    let mut errors = Vec::new();

    let amount = keep(
        &mut errors,
        required(object, "amount_cents", "amount_cents")
            .and_then(|value| integer_in_range(value, "amount_cents", 1, MAX_CREDIT_CENTS)),
    );

    reject_unknown_fields(object, &["amount_cents"], "", &mut errors);

    match amount {
        Some(cents) if errors.is_empty() => Ok(Money::from_cents(cents)),
        _ => Err(errors),
    }
}

/// Validates the query of the legacy `POST /api/v1/order?email=&value=` route.
///
/// `email` is the customer's email; `value` is the order amount in whole
/// units as a decimal integer string 1..=[`MAX_COMPAT_VALUE_UNITS`]. The
/// result is a value-only order.
pub fn parse_compat_order(
    email: Option<&str>,
    value: Option<&str>,
) -> Result<PlaceOrder, Vec<ValidationError>> {
    let mut errors = Vec::new();

    let customer = keep(
        &mut errors,
        email
            .ok_or_else(|| ValidationError::new("email", "is required"))
            .and_then(|email| parse_email("email", email)),
    );
    let amount = keep(
        &mut errors,
        value
            .ok_or_else(|| ValidationError::new("value", "is required"))
            .and_then(|value| decimal_in_range(value, "value", 1, MAX_COMPAT_VALUE_UNITS))
            .and_then(|units| {
                Money::from_whole_units(units)
                    .ok_or_else(|| ValidationError::new("value", "is too large"))
            }),
    );

    match (customer, amount) {
        (Some(customer), Some(amount)) if errors.is_empty() => Ok(PlaceOrder {
            customer,
            content: OrderContent::Value(amount),
        }),
        _ => Err(errors),
    }
}

/// Validates the `limit` query parameter: absent means [`DEFAULT_LIMIT`];
/// otherwise a decimal integer 1..=[`MAX_LIMIT`].
pub fn parse_limit(input: Option<&str>) -> Result<u32, ValidationError> {
    let Some(input) = input else {
        return Ok(DEFAULT_LIMIT);
    };
    let limit = decimal_in_range(input, "limit", 1, i64::from(MAX_LIMIT))?;
    u32::try_from(limit).map_err(|_| range_error("limit", 1, i64::from(MAX_LIMIT)))
}

/// Validates a whole `items` array, merging lines with the same sku.
fn parse_items(items: &Value) -> Result<Vec<OrderLine>, Vec<ValidationError>> {
    let Some(array) = items.as_array() else {
        return Err(vec![ValidationError::new("items", "must be an array")]);
    };
    if array.is_empty() {
        return Err(vec![ValidationError::new(
            "items",
            "must contain at least one line",
        )]);
    }
    if array.len() > MAX_ORDER_LINES {
        return Err(vec![ValidationError::new(
            "items",
            format!("must contain at most {MAX_ORDER_LINES} lines"),
        )]);
    }

    let mut errors = Vec::new();
    let mut merged: Vec<OrderLine> = Vec::with_capacity(array.len());
    for (index, line) in array.iter().enumerate() {
        let path = format!("items[{index}]");
        let line = match parse_order_line(line, &path) {
            Ok(line) => line,
            Err(mut line_errors) => {
                errors.append(&mut line_errors);
                continue;
            }
        };
        match merged.iter_mut().find(|existing| existing.sku == line.sku) {
            Some(existing) => {
                let combined = existing.quantity.saturating_add(line.quantity);
                // Report once per sku: when the running total first crosses the limit.
                if existing.quantity <= MAX_QUANTITY && combined > MAX_QUANTITY {
                    errors.push(ValidationError::new(
                        format!("{path}.quantity"),
                        format!(
                            "combined quantity of sku {} must be at most {MAX_QUANTITY}",
                            line.sku
                        ),
                    ));
                }
                existing.quantity = combined;
            }
            None => merged.push(line),
        }
    }

    if errors.is_empty() {
        Ok(merged)
    } else {
        Err(errors)
    }
}

/// Validates one `{"sku", "quantity"}` line found at `path` (e.g. `items[3]`).
fn parse_order_line(line: &Value, path: &str) -> Result<OrderLine, Vec<ValidationError>> {
    let Some(object) = line.as_object() else {
        return Err(vec![ValidationError::new(path, "must be an object")]);
    };
    let mut errors = Vec::new();
    let sku_field = format!("{path}.sku");
    let quantity_field = format!("{path}.quantity");

    let sku = keep(
        &mut errors,
        required(object, "sku", &sku_field)
            .and_then(|value| string_value(value, &sku_field))
            .and_then(|sku| parse_sku(&sku_field, sku)),
    );
    let quantity = keep(
        &mut errors,
        required(object, "quantity", &quantity_field)
            .and_then(|value| integer_in_range(value, &quantity_field, 1, i64::from(MAX_QUANTITY)))
            .and_then(|quantity| {
                u32::try_from(quantity)
                    .map_err(|_| range_error(&quantity_field, 1, i64::from(MAX_QUANTITY)))
            }),
    );

    reject_unknown_fields(object, &["sku", "quantity"], path, &mut errors);

    match (sku, quantity) {
        (Some(sku), Some(quantity)) if errors.is_empty() => Ok(OrderLine { sku, quantity }),
        _ => Err(errors),
    }
}

/// Trims a product name and checks its length.
fn parse_product_name(name: &str) -> Result<String, ValidationError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new("name", "must not be blank"));
    }
    if trimmed.chars().count() > MAX_PRODUCT_NAME_CHARS {
        return Err(ValidationError::new(
            "name",
            format!("must be at most {MAX_PRODUCT_NAME_CHARS} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Returns the body as an object, or an error naming `body`.
fn body_object(body: &Value) -> Result<&Map<String, Value>, Vec<ValidationError>> {
    body.as_object()
        .ok_or_else(|| vec![ValidationError::new("body", "must be a JSON object")])
}

/// Reads a required email field.
fn required_email(object: &Map<String, Value>, key: &str) -> Result<String, ValidationError> {
    required(object, key, key)
        .and_then(|value| string_value(value, key))
        .and_then(|email| parse_email(key, email))
}

/// Returns the value of `key`, treating `null` as absent.
fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// Returns the value of `key`, or an `is required` error for `field`.
fn required<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a Value, ValidationError> {
    present(object, key).ok_or_else(|| ValidationError::new(field, "is required"))
}

/// Returns the value as a string, or a `must be a string` error.
fn string_value<'a>(value: &'a Value, field: &str) -> Result<&'a str, ValidationError> {
    value
        .as_str()
        .ok_or_else(|| ValidationError::new(field, "must be a string"))
}

/// Returns the value as an integer in `min..=max`.
///
/// Floats (including `1.0`), strings and other types are `must be an
/// integer`; integers too large for `i64` are out of range.
fn integer_in_range(
    value: &Value,
    field: &str,
    min: i64,
    max: i64,
) -> Result<i64, ValidationError> {
    let Value::Number(number) = value else {
        return Err(ValidationError::new(field, "must be an integer"));
    };
    let integer = match number.as_i64() {
        Some(integer) => integer,
        // A u64 beyond i64::MAX is an integer, just too large.
        None if number.is_u64() => return Err(range_error(field, min, max)),
        None => return Err(ValidationError::new(field, "must be an integer")),
    };
    if (min..=max).contains(&integer) {
        Ok(integer)
    } else {
        Err(range_error(field, min, max))
    }
}

/// Parses a string of ASCII digits (no sign, no spaces) in `min..=max`.
fn decimal_in_range(input: &str, field: &str, min: i64, max: i64) -> Result<i64, ValidationError> {
    if input.is_empty() || !input.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(
            field,
            format!("must be an integer between {min} and {max}"),
        ));
    }
    match input.parse::<i64>() {
        Ok(integer) if (min..=max).contains(&integer) => Ok(integer),
        _ => Err(range_error(field, min, max)),
    }
}

/// The error for an integer outside `min..=max`.
fn range_error(field: &str, min: i64, max: i64) -> ValidationError {
    ValidationError::new(field, format!("must be between {min} and {max}"))
}

/// Adds an `unknown field` error for each key of `object` not in `allowed`.
fn reject_unknown_fields(
    object: &Map<String, Value>,
    allowed: &[&str],
    path: &str,
    errors: &mut Vec<ValidationError>,
) {
    for key in object.keys() {
        if !allowed.contains(&key.as_str()) {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            errors.push(ValidationError::new(field, "unknown field"));
        }
    }
}

/// Moves an error into `errors`, keeping a success value.
fn keep<T>(errors: &mut Vec<ValidationError>, result: Result<T, ValidationError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: &[ValidationError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
        }
    }

    // ---- ValidationError ----

    #[test]
    fn validation_error_display() {
        let error = ValidationError::new("items[0].sku", "must not be empty");
        assert_eq!(error.to_string(), "items[0].sku: must not be empty");
    }

    // ---- email ----

    #[test]
    fn email_accepts_and_lowercases() {
        assert_eq!(
            parse_email("customer", "Ada.Lovelace@Example.COM"),
            Ok("ada.lovelace@example.com".into())
        );
        assert_eq!(parse_email("customer", "a@b.c"), Ok("a@b.c".into()));
        assert_eq!(
            parse_email("customer", "x+tag@mail.example.org"),
            Ok("x+tag@mail.example.org".into())
        );
    }

    #[test]
    fn email_rejections_name_the_field() {
        for bad in [
            "",
            "ab",
            "no-at-sign.example.com",
            "two@@example.com",
            "a@b@example.com",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada @example.com",
            " ada@example.com",
            "ada@example.com\n",
            "ada@exa\tmple.com",
            "ada\u{0}@example.com",
        ] {
            let error = parse_email("customer", bad).expect_err(bad);
            assert_eq!(error.field, "customer", "{bad:?}");
        }
    }

    #[test]
    fn email_length_limits() {
        let domain = "@example.com";
        let longest = format!("{}{domain}", "a".repeat(MAX_EMAIL_CHARS - domain.len()));
        assert_eq!(longest.len(), 254);
        assert!(parse_email("e", &longest).is_ok());
        let too_long = format!("a{longest}");
        assert_eq!(
            parse_email("e", &too_long).unwrap_err().message,
            "must be between 3 and 254 characters"
        );
        assert!(parse_email("e", "a@b").is_err()); // no dot in domain
    }

    // ---- sku ----

    #[test]
    fn sku_accepts_allowed_characters() {
        assert_eq!(parse_sku("sku", "ABC-123_x.y"), Ok("ABC-123_x.y".into()));
        assert_eq!(parse_sku("sku", "a"), Ok("a".into()));
        let longest = "Z".repeat(MAX_SKU_CHARS);
        assert_eq!(parse_sku("sku", &longest), Ok(longest.clone()));
    }

    #[test]
    fn sku_rejects_bad_input() {
        assert_eq!(parse_sku("s", "").unwrap_err().message, "must not be empty");
        assert!(parse_sku("s", &"Z".repeat(MAX_SKU_CHARS + 1)).is_err());
        for bad in ["a b", "a/b", "é", "abc!", "a\n", "ü".repeat(40).as_str()] {
            let error = parse_sku("items[1].sku", bad).expect_err(bad);
            assert_eq!(error.field, "items[1].sku");
        }
    }

    // ---- place order ----

    #[test]
    fn place_order_with_items() {
        let body = json!({
            "customer": "Ada@Example.com",
            "items": [{"sku": "A-1", "quantity": 2}, {"sku": "B-2", "quantity": 1}]
        });
        assert_eq!(
            parse_place_order(&body),
            Ok(PlaceOrder {
                customer: "ada@example.com".into(),
                content: OrderContent::Items(vec![line("A-1", 2), line("B-2", 1)]),
            })
        );
    }

    #[test]
    fn place_order_with_value() {
        let body = json!({"customer": "ada@example.com", "value_cents": 12_345});
        assert_eq!(
            parse_place_order(&body),
            Ok(PlaceOrder {
                customer: "ada@example.com".into(),
                content: OrderContent::Value(Money::from_cents(12_345)),
            })
        );
        let max = json!({"customer": "ada@example.com", "value_cents": MAX_ORDER_VALUE_CENTS});
        assert!(parse_place_order(&max).is_ok());
    }

    #[test]
    fn place_order_value_range_and_type() {
        for bad in [
            json!(0),
            json!(-1),
            json!(MAX_ORDER_VALUE_CENTS + 1),
            json!(1.5),
            json!(100.0),
            json!("100"),
            json!(u64::MAX),
            json!(true),
            json!([1]),
        ] {
            let body = json!({"customer": "ada@example.com", "value_cents": bad});
            let errors = parse_place_order(&body).expect_err(&bad.to_string());
            assert_eq!(fields(&errors), vec!["value_cents"], "{bad}");
        }
        let body = json!({"customer": "ada@example.com", "value_cents": 1.0});
        assert_eq!(
            parse_place_order(&body).unwrap_err()[0].message,
            "must be an integer"
        );
        let body = json!({"customer": "ada@example.com", "value_cents": u64::MAX});
        assert_eq!(
            parse_place_order(&body).unwrap_err()[0].message,
            "must be between 1 and 100000000000"
        );
    }

    #[test]
    fn place_order_merges_duplicate_skus_in_first_seen_order() {
        let body = json!({
            "customer": "ada@example.com",
            "items": [
                {"sku": "A", "quantity": 2},
                {"sku": "B", "quantity": 1},
                {"sku": "A", "quantity": 3}
            ]
        });
        let order = parse_place_order(&body).expect("valid");
        assert_eq!(
            order.content,
            OrderContent::Items(vec![line("A", 5), line("B", 1)])
        );
    }

    #[test]
    fn place_order_skus_are_case_sensitive() {
        let body = json!({
            "customer": "ada@example.com",
            "items": [{"sku": "a", "quantity": 1}, {"sku": "A", "quantity": 1}]
        });
        let order = parse_place_order(&body).expect("valid");
        assert_eq!(
            order.content,
            OrderContent::Items(vec![line("a", 1), line("A", 1)])
        );
    }

    #[test]
    fn place_order_merged_quantity_limit() {
        let at_limit = json!({
            "customer": "ada@example.com",
            "items": [{"sku": "A", "quantity": 9_999}, {"sku": "A", "quantity": 1}]
        });
        assert_eq!(
            parse_place_order(&at_limit).expect("valid").content,
            OrderContent::Items(vec![line("A", MAX_QUANTITY)])
        );
        let over = json!({
            "customer": "ada@example.com",
            "items": [
                {"sku": "A", "quantity": 6_000},
                {"sku": "A", "quantity": 5_000},
                {"sku": "A", "quantity": 5_000}
            ]
        });
        let errors = parse_place_order(&over).unwrap_err();
        assert_eq!(fields(&errors), vec!["items[1].quantity"]);
        assert!(errors[0].message.contains("sku A"));
    }

    #[test]
    fn place_order_quantity_rules() {
        for bad in [
            json!(0),
            json!(-3),
            json!(10_001),
            json!(2.5),
            json!(1.0),
            json!("2"),
            json!(null),
            json!(u64::MAX),
        ] {
            let body = json!({
                "customer": "ada@example.com",
                "items": [{"sku": "A", "quantity": bad}]
            });
            let errors = parse_place_order(&body).expect_err(&bad.to_string());
            assert_eq!(fields(&errors), vec!["items[0].quantity"], "{bad}");
        }
        let body = json!({
            "customer": "ada@example.com",
            "items": [{"sku": "A", "quantity": 10_000}]
        });
        assert!(parse_place_order(&body).is_ok());
    }

    #[test]
    fn place_order_line_count_limits() {
        let empty = json!({"customer": "ada@example.com", "items": []});
        let errors = parse_place_order(&empty).unwrap_err();
        assert_eq!(fields(&errors), vec!["items"]);

        let lines: Vec<Value> = (0..MAX_ORDER_LINES)
            .map(|i| json!({"sku": format!("S{i}"), "quantity": 1}))
            .collect();
        let body = json!({"customer": "ada@example.com", "items": lines});
        assert!(parse_place_order(&body).is_ok());

        let lines: Vec<Value> = (0..=MAX_ORDER_LINES)
            .map(|i| json!({"sku": format!("S{i}"), "quantity": 1}))
            .collect();
        let body = json!({"customer": "ada@example.com", "items": lines});
        let errors = parse_place_order(&body).unwrap_err();
        assert_eq!(fields(&errors), vec!["items"]);
        assert_eq!(errors[0].message, "must contain at most 100 lines");
    }

    #[test]
    fn place_order_needs_exactly_one_content_kind() {
        let both = json!({
            "customer": "ada@example.com",
            "items": [{"sku": "A", "quantity": 1}],
            "value_cents": 100
        });
        assert_eq!(
            fields(&parse_place_order(&both).unwrap_err()),
            vec!["value_cents"]
        );

        let neither = json!({"customer": "ada@example.com"});
        assert_eq!(
            fields(&parse_place_order(&neither).unwrap_err()),
            vec!["items"]
        );

        // null counts as absent
        let null_value = json!({
            "customer": "ada@example.com",
            "items": [{"sku": "A", "quantity": 1}],
            "value_cents": null
        });
        assert!(parse_place_order(&null_value).is_ok());
    }

    #[test]
    fn place_order_collects_all_errors() {
        let body = json!({
            "customer": "not-an-email",
            "items": [
                {"sku": "", "quantity": 0},
                "oops",
                {"sku": "ok", "quantity": 1, "colour": "red"}
            ],
            "coupon": "FREE"
        });
        let errors = parse_place_order(&body).unwrap_err();
        assert_eq!(
            fields(&errors),
            vec![
                "customer",
                "items[0].sku",
                "items[0].quantity",
                "items[1]",
                "items[2].colour",
                "coupon"
            ]
        );
        assert_eq!(errors[5].message, "unknown field");
    }

    #[test]
    fn place_order_requires_object_body_and_customer() {
        for body in [json!(null), json!([]), json!("x"), json!(1)] {
            assert_eq!(fields(&parse_place_order(&body).unwrap_err()), vec!["body"]);
        }
        let no_customer = json!({"value_cents": 1});
        let errors = parse_place_order(&no_customer).unwrap_err();
        assert_eq!(
            errors,
            vec![ValidationError::new("customer", "is required")]
        );
        let bad_type = json!({"customer": 5, "value_cents": 1});
        assert_eq!(
            parse_place_order(&bad_type).unwrap_err(),
            vec![ValidationError::new("customer", "must be a string")]
        );
        let items_not_array = json!({"customer": "a@b.c", "items": {"sku": "A"}});
        assert_eq!(
            parse_place_order(&items_not_array).unwrap_err(),
            vec![ValidationError::new("items", "must be an array")]
        );
    }

    #[test]
    fn place_order_missing_line_fields() {
        let body = json!({"customer": "a@b.c", "items": [{}]});
        assert_eq!(
            parse_place_order(&body).unwrap_err(),
            vec![
                ValidationError::new("items[0].sku", "is required"),
                ValidationError::new("items[0].quantity", "is required"),
            ]
        );
    }

    #[test]
    fn order_content_serde_shape() {
        let items = OrderContent::Items(vec![line("A", 2)]);
        assert_eq!(
            serde_json::to_value(&items).expect("serializes"),
            json!({"items": [{"sku": "A", "quantity": 2}]})
        );
        let value = OrderContent::Value(Money::from_cents(500));
        assert_eq!(
            serde_json::to_value(&value).expect("serializes"),
            json!({"value": 500})
        );
    }

    // ---- product ----

    #[test]
    fn product_valid_and_trimmed() {
        let body = json!({"name": "  Blue mug ", "price_cents": 1299, "stock": 10});
        assert_eq!(
            parse_product(&body),
            Ok(ProductInput {
                name: "Blue mug".into(),
                price_cents: Money::from_cents(1299),
                stock: 10
            })
        );
        let free = json!({"name": "Sticker", "price_cents": 0, "stock": 0});
        assert!(parse_product(&free).is_ok());
        let max = json!({
            "name": "x".repeat(MAX_PRODUCT_NAME_CHARS),
            "price_cents": MAX_PRICE_CENTS,
            "stock": MAX_STOCK
        });
        assert!(parse_product(&max).is_ok());
    }

    #[test]
    fn product_rejections() {
        let body = json!({
            "name": "   ",
            "price_cents": -1,
            "stock": MAX_STOCK + 1,
            "colour": "blue"
        });
        assert_eq!(
            fields(&parse_product(&body).unwrap_err()),
            vec!["name", "price_cents", "stock", "colour"]
        );
        let long = json!({
            "name": "x".repeat(MAX_PRODUCT_NAME_CHARS + 1),
            "price_cents": 1.5,
            "stock": "3"
        });
        assert_eq!(
            fields(&parse_product(&long).unwrap_err()),
            vec!["name", "price_cents", "stock"]
        );
        assert_eq!(
            fields(&parse_product(&json!({})).unwrap_err()),
            vec!["name", "price_cents", "stock"]
        );
        assert_eq!(
            fields(&parse_product(&json!([])).unwrap_err()),
            vec!["body"]
        );
    }

    // ---- credit ----

    #[test]
    fn credit_rules() {
        assert_eq!(
            parse_credit(&json!({"amount_cents": 500})),
            Ok(Money::from_cents(500))
        );
        assert!(parse_credit(&json!({"amount_cents": MAX_CREDIT_CENTS})).is_ok());
        for bad in [
            json!(0),
            json!(-5),
            json!(MAX_CREDIT_CENTS + 1),
            json!(5.0),
            json!("5"),
        ] {
            let errors = parse_credit(&json!({"amount_cents": bad})).unwrap_err();
            assert_eq!(fields(&errors), vec!["amount_cents"]);
        }
        assert_eq!(
            fields(&parse_credit(&json!({"amount_cents": 1, "note": "x"})).unwrap_err()),
            vec!["note"]
        );
        assert_eq!(
            fields(&parse_credit(&json!({})).unwrap_err()),
            vec!["amount_cents"]
        );
    }

    // ---- legacy route ----

    #[test]
    fn compat_order_valid() {
        assert_eq!(
            parse_compat_order(Some("Ada@Example.com"), Some("25")),
            Ok(PlaceOrder {
                customer: "ada@example.com".into(),
                content: OrderContent::Value(Money::from_cents(2_500)),
            })
        );
        assert_eq!(
            parse_compat_order(Some("a@b.c"), Some("1000000000")).map(|o| o.content),
            Ok(OrderContent::Value(Money::from_cents(100_000_000_000)))
        );
    }

    #[test]
    fn compat_order_rejections() {
        assert_eq!(
            fields(&parse_compat_order(None, None).unwrap_err()),
            vec!["email", "value"]
        );
        for bad in [
            "0",
            "-5",
            "+5",
            "1.5",
            "",
            " 5",
            "abc",
            "1000000001",
            "99999999999999999999999",
        ] {
            let errors = parse_compat_order(Some("a@b.c"), Some(bad)).expect_err(bad);
            assert_eq!(fields(&errors), vec!["value"], "{bad:?}");
        }
        assert_eq!(
            fields(&parse_compat_order(Some("nope"), Some("5")).unwrap_err()),
            vec!["email"]
        );
    }

    // ---- limit ----

    #[test]
    fn limit_rules() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("100")), Ok(100));
        assert_eq!(parse_limit(Some("007")), Ok(7));
        for bad in [
            "0",
            "101",
            "-1",
            "",
            "ten",
            "1e2",
            "5 ",
            "18446744073709551616",
        ] {
            let error = parse_limit(Some(bad)).expect_err(bad);
            assert_eq!(error.field, "limit");
        }
    }
}
