//! Fuzzes what the gateway runs on request input before forwarding anything:
//! the JSON body decode (`service_kit::http::Request::json`), the domain validators of
//! every JSON body it accepts (place order, batch, product, credit) and of path and
//! query values (email, sku, limit, cursor, the legacy `?email=&value=` order), and the
//! problem+json answer built from their errors. The gateway's own routing code is in the
//! `gateway` component (wasm only); these are the functions it calls.
//!
//! Checks: nothing panics; every rejection becomes a 4xx `application/problem+json`;
//! every accepted value satisfies the documented limits and decodes again to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use service_kit::http::{Request, Response, percent_decode, query_pairs};
use shop_domain::validation::{
    MAX_CREDIT_CENTS, MAX_ORDER_LINES, MAX_ORDER_VALUE_CENTS, MAX_PRICE_CENTS,
    MAX_PRODUCT_NAME_CHARS, MAX_QUANTITY, MAX_STOCK, OrderContent, PlaceOrder, ValidationError,
    parse_compat_order, parse_credit, parse_email, parse_limit, parse_place_order, parse_product,
    parse_sku,
};
use shop_domain::{decode_cursor, encode_cursor};

fuzz_target!(|data: &[u8]| {
    let request = Request {
        method: "POST".into(),
        path: "/api/v1/orders".into(),
        query: String::from_utf8_lossy(data).into_owned(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: data.to_vec(),
    };
    match request.json() {
        Ok(body) => decode_bodies(&body),
        Err(problem) => assert_problem(&problem, 400),
    }
    decode_path_and_query(&request);
});

/// Runs every body validator the gateway uses on `body`.
fn decode_bodies(body: &Value) {
    check_place_order(body);
    let batch = match body {
        Value::Array(orders) => orders.as_slice(),
        Value::Object(map) => map
            .get("orders")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice),
        _ => &[],
    };
    for order in batch {
        check_place_order(order);
    }
    match parse_product(body) {
        Ok(product) => {
            let chars = product.name.chars().count();
            assert!((1..=MAX_PRODUCT_NAME_CHARS).contains(&chars));
            assert_eq!(product.name.trim(), product.name);
            assert!((0..=MAX_PRICE_CENTS).contains(&product.price_cents.cents()));
            assert!((0..=MAX_STOCK).contains(&product.stock));
            let again = json!({"name": product.name, "price_cents": product.price_cents, "stock": product.stock});
            assert_eq!(parse_product(&again), Ok(product));
        }
        Err(errors) => assert_invalid(&errors),
    }
    match parse_credit(body) {
        Ok(amount) => {
            assert!((1..=MAX_CREDIT_CENTS).contains(&amount.cents()));
            assert_eq!(parse_credit(&json!({"amount_cents": amount})), Ok(amount));
        }
        Err(errors) => assert_invalid(&errors),
    }
}

/// Validates one place-order body and checks what an accepted order looks like.
fn check_place_order(body: &Value) {
    let order = match parse_place_order(body) {
        Ok(order) => order,
        Err(errors) => return assert_invalid(&errors),
    };
    assert_eq!(
        parse_email("customer", &order.customer).as_ref(),
        Ok(&order.customer)
    );
    let again = match &order.content {
        OrderContent::Items(lines) => {
            assert!((1..=MAX_ORDER_LINES).contains(&lines.len()));
            for (index, line) in lines.iter().enumerate() {
                assert!((1..=MAX_QUANTITY).contains(&line.quantity), "{line:?}");
                assert_eq!(parse_sku("sku", &line.sku).as_ref(), Ok(&line.sku));
                assert!(lines[..index].iter().all(|earlier| earlier.sku != line.sku));
            }
            json!({"customer": order.customer, "items": lines})
        }
        OrderContent::Value(value) => {
            assert!((1..=MAX_ORDER_VALUE_CENTS).contains(&value.cents()));
            json!({"customer": order.customer, "value_cents": value})
        }
    };
    assert_eq!(
        parse_place_order(&again),
        Ok::<_, Vec<ValidationError>>(order)
    );
}

/// Runs the path-segment and query-parameter validators on the input read as text.
fn decode_path_and_query(request: &Request) {
    let segment = percent_decode(&request.query);
    if let Ok(email) = parse_email("email", &segment) {
        assert_eq!(parse_email("email", &email).as_ref(), Ok(&email));
    }
    if let Ok(sku) = parse_sku("sku", &segment) {
        assert_eq!(parse_sku("sku", &sku).as_ref(), Ok(&sku));
    }
    for (_, value) in query_pairs(&request.query) {
        if let Ok(limit) = parse_limit(Some(&value)) {
            assert!((1..=100).contains(&limit));
        }
        if let Ok(key) = decode_cursor(&value) {
            assert_eq!(decode_cursor(&encode_cursor(&key)), Ok(key));
        }
    }
    let email = request.query_param("email");
    let value = request.query_param("value");
    match parse_compat_order(email.as_deref(), value.as_deref()) {
        Ok(PlaceOrder {
            content: OrderContent::Value(amount),
            ..
        }) => assert!(amount.is_positive() && amount.cents() % 100 == 0),
        Ok(other) => panic!("the legacy route only makes value orders: {other:?}"),
        Err(errors) => assert_invalid(&errors),
    }
}

/// Validation errors name fields and become a 422 problem.
fn assert_invalid(errors: &[ValidationError]) {
    assert!(!errors.is_empty(), "a rejection names at least one field");
    assert_problem(&Response::invalid(errors), 422);
}

fn assert_problem(response: &Response, status: u16) {
    assert_eq!(response.status, status);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let body: Value = serde_json::from_slice(&response.body).expect("problem bodies are JSON");
    assert_eq!(body["status"], json!(status));
}
