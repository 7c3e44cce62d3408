//! Property tests of the domain rules.

use proptest::prelude::*;
use serde_json::{Value, json};
use shop_domain::envelope::{self, SignatureError};
use shop_domain::money;
use shop_domain::order::allowed_actions;
use shop_domain::validation::{MAX_ORDER_LINES, MAX_QUANTITY};
use shop_domain::{
    Claims, Envelope, Money, OrderAction, OrderContent, OrderStatus, RetryPolicy, Role,
    decode_cursor, encode_cursor, mint_token, parse_email, parse_place_order, rfc3339_from_millis,
    transition, verify_token,
};

// ---------- strategies ----------

/// Any JSON value, including floats, huge integers and unicode strings.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn arb_status() -> impl Strategy<Value = OrderStatus> {
    prop::sample::select(OrderStatus::ALL.to_vec())
}

fn arb_action() -> impl Strategy<Value = OrderAction> {
    prop::sample::select(OrderAction::ALL.to_vec())
}

fn arb_role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Customer), Just(Role::Staff), Just(Role::Admin)]
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        ".{0,20}",
        ".{0,20}",
        ".{0,20}",
        ".{0,30}",
        ".{0,20}",
        1u32..100,
        arb_json(),
    )
        .prop_map(
            |(id, event_type, subject, time, correlation_id, attempt, data)| Envelope {
                attempt,
                ..Envelope::new(id, event_type, subject, time, correlation_id, data)
            },
        )
}

/// Values that look like an order line, valid or not.
fn arb_line_field() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[A-Za-z0-9._-]{0,6}".prop_map(Value::String),
        (-5i64..10_005).prop_map(Value::from),
        Just(json!(MAX_QUANTITY)),
        arb_json(),
    ]
}

/// JSON bodies close to a place-order request, to reach deep validation paths.
fn arb_order_body() -> impl Strategy<Value = Value> {
    let line = prop::collection::btree_map(
        prop_oneof![
            Just("sku".to_owned()),
            Just("quantity".to_owned()),
            ".{0,4}"
        ],
        arb_line_field(),
        0..4,
    )
    .prop_map(|map| Value::Object(map.into_iter().collect()))
    .boxed();
    let items = prop_oneof![
        prop::collection::vec(line.clone(), 0..8).prop_map(Value::Array),
        prop::collection::vec(line, 95..105).prop_map(Value::Array),
        arb_json(),
    ];
    (
        prop::option::of(prop_oneof![
            "[a-zA-Z]{1,5}@[a-z]{1,5}\\.[a-z]{2,3}".prop_map(Value::String),
            arb_json(),
        ]),
        prop::option::of(items),
        prop::option::of(prop_oneof![any::<i64>().prop_map(Value::from), arb_json()]),
        prop::option::of(arb_json()),
    )
        .prop_map(|(customer, items, value_cents, extra)| {
            let mut body = serde_json::Map::new();
            if let Some(customer) = customer {
                body.insert("customer".into(), customer);
            }
            if let Some(items) = items {
                body.insert("items".into(), items);
            }
            if let Some(value_cents) = value_cents {
                body.insert("value_cents".into(), value_cents);
            }
            if let Some(extra) = extra {
                body.insert("extra".into(), extra);
            }
            Value::Object(body)
        })
}

/// Reference transition table, written independently of `transition`.
const TABLE: [(OrderStatus, OrderAction, OrderStatus); 6] = [
    (
        OrderStatus::Placed,
        OrderAction::Confirm,
        OrderStatus::Confirmed,
    ),
    (
        OrderStatus::Placed,
        OrderAction::Reject,
        OrderStatus::Rejected,
    ),
    (
        OrderStatus::Placed,
        OrderAction::Cancel,
        OrderStatus::Cancelled,
    ),
    (
        OrderStatus::Confirmed,
        OrderAction::Ship,
        OrderStatus::Shipped,
    ),
    (
        OrderStatus::Confirmed,
        OrderAction::Cancel,
        OrderStatus::Cancelled,
    ),
    (
        OrderStatus::Shipped,
        OrderAction::Deliver,
        OrderStatus::Delivered,
    ),
];

fn table_lookup(from: OrderStatus, action: OrderAction) -> Option<OrderStatus> {
    TABLE
        .iter()
        .find(|(f, a, _)| *f == from && *a == action)
        .map(|(_, _, to)| *to)
}

/// States reachable from `start` through the reference table (including `start`).
fn reachable_from(start: OrderStatus) -> Vec<OrderStatus> {
    let mut reached = vec![start];
    let mut index = 0;
    while let Some(&status) = reached.get(index) {
        for (from, _, to) in TABLE {
            if from == status && !reached.contains(&to) {
                reached.push(to);
            }
        }
        index += 1;
    }
    reached
}

/// Replaces the character at `index` of `text` by a different base64url character.
fn tamper_char(text: &str, index: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let position = index % bytes.len();
    bytes[position] = match bytes[position] {
        b'A' => b'B',
        b'.' => b'A',
        _ => b'A',
    };
    String::from_utf8(bytes).expect("ascii token")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // ---------- money ----------

    #[test]
    fn money_checked_arithmetic_agrees_with_i128(a in any::<i64>(), b in any::<i64>(), factor in any::<u32>()) {
        let (x, y) = (Money::from_cents(a), Money::from_cents(b));
        let fits = |wide: i128| i64::try_from(wide).ok().map(Money::from_cents);
        prop_assert_eq!(x.checked_add(y), fits(i128::from(a) + i128::from(b)));
        prop_assert_eq!(x.checked_sub(y), fits(i128::from(a) - i128::from(b)));
        prop_assert_eq!(x.checked_mul(factor), fits(i128::from(a) * i128::from(factor)));
        prop_assert_eq!(Money::from_whole_units(a), fits(i128::from(a) * 100));
    }

    #[test]
    fn money_sum_agrees_with_stepwise_i128(amounts in prop::collection::vec(any::<i64>(), 0..8), small in prop::collection::vec(-1_000_000i64..1_000_000, 0..50)) {
        for list in [amounts, small] {
            let mut expected: Option<i128> = Some(0);
            for cents in &list {
                expected = expected
                    .map(|total| total + i128::from(*cents))
                    .filter(|total| i64::try_from(*total).is_ok());
            }
            let expected = expected.and_then(|total| i64::try_from(total).ok()).map(Money::from_cents);
            prop_assert_eq!(money::sum(list.iter().copied().map(Money::from_cents)), expected);
        }
    }

    #[test]
    fn money_display_round_trips(cents in any::<i64>()) {
        let text = Money::from_cents(cents).to_string();
        let (whole, fraction) = text.rsplit_once('.').expect("has a decimal point");
        prop_assert_eq!(fraction.len(), 2);
        let negative = whole.starts_with('-');
        let whole: i128 = whole.trim_start_matches('-').parse().expect("digits");
        let fraction: i128 = fraction.parse().expect("digits");
        let magnitude = whole * 100 + fraction;
        prop_assert_eq!(if negative { -magnitude } else { magnitude }, i128::from(cents));
        prop_assert_eq!(negative, cents < 0);
    }

    // ---------- order states ----------

    #[test]
    fn transitions_follow_the_table(start in arb_status(), actions in prop::collection::vec(arb_action(), 0..20)) {
        let reachable = reachable_from(start);
        let mut status = start;
        for action in actions {
            let was_terminal = status.is_terminal();
            match transition(status, action) {
                Ok(next) => {
                    prop_assert!(!was_terminal, "left terminal state {}", status);
                    prop_assert_eq!(Some(next), table_lookup(status, action));
                    status = next;
                }
                Err(error) => {
                    prop_assert_eq!(table_lookup(status, action), None);
                    prop_assert_eq!(error.from, status);
                    prop_assert_eq!(error.action, action);
                }
            }
            prop_assert!(reachable.contains(&status));
            if was_terminal {
                prop_assert!(status.is_terminal());
            }
        }
    }

    #[test]
    fn terminal_states_have_no_actions(status in arb_status()) {
        prop_assert_eq!(status.is_terminal(), allowed_actions(status).is_empty());
    }

    // ---------- envelope ----------

    #[test]
    fn envelope_sign_verify_round_trip(envelope in arb_envelope(), secret in prop::collection::vec(any::<u8>(), 0..80)) {
        let signed = envelope.signed(&secret);
        prop_assert_eq!(signed.verify(&secret), Ok(()));
        let decoded = envelope::decode(&signed.encode()).expect("decodes");
        prop_assert_eq!(decoded.verify(&secret), Ok(()));
        prop_assert_eq!(&decoded, &signed);
    }

    #[test]
    fn envelope_tampering_fails_but_attempt_does_not(
        envelope in arb_envelope(),
        secret in prop::collection::vec(any::<u8>(), 1..40),
        other_secret in prop::collection::vec(any::<u8>(), 1..40),
        suffix in ".{1,4}",
        other_data in arb_json(),
        attempt in any::<u32>(),
    ) {
        let signed = envelope.signed(&secret);
        let with = |change: &dyn Fn(&mut Envelope)| {
            let mut copy = signed.clone();
            change(&mut copy);
            copy
        };
        let tampered = [
            with(&|e| e.id.push_str(&suffix)),
            with(&|e| e.event_type.push_str(&suffix)),
            with(&|e| e.subject.push_str(&suffix)),
            with(&|e| e.time.push_str(&suffix)),
            with(&|e| e.correlation_id.push_str(&suffix)),
            with(&|e| e.data = json!([e.data.clone()])),
        ];
        for envelope in &tampered {
            prop_assert_eq!(envelope.verify(&secret), Err(SignatureError::Mismatch));
        }
        if other_data != signed.data {
            let replaced = with(&|e| e.data = other_data.clone());
            prop_assert_eq!(replaced.verify(&secret), Err(SignatureError::Mismatch));
        }
        if other_secret != secret {
            prop_assert_eq!(signed.verify(&other_secret), Err(SignatureError::Mismatch));
        }
        prop_assert_eq!(signed.with_attempt(attempt).verify(&secret), Ok(()));
    }

    #[test]
    fn envelope_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), value in arb_json()) {
        let _ = envelope::decode(&bytes);
        let _ = envelope::decode(value.to_string().as_bytes());
    }

    // ---------- tokens ----------

    #[test]
    fn token_round_trip(sub in ".{1,40}", role in arb_role(), now in -1_000_000_000_000i64..1_000_000_000_000, lifetime in 1i64..1_000_000, secret in prop::collection::vec(any::<u8>(), 0..80)) {
        let claims = Claims { sub, role, exp: now + lifetime };
        let token = mint_token(&claims, &secret);
        prop_assert_eq!(verify_token(&token, &secret, now), Ok(claims.clone()));
        prop_assert!(verify_token(&token, &secret, claims.exp).is_err());
    }

    #[test]
    fn token_tampering_fails(sub in ".{1,20}", role in arb_role(), index in any::<usize>(), secret in prop::collection::vec(any::<u8>(), 1..40), other_secret in prop::collection::vec(any::<u8>(), 1..40)) {
        let claims = Claims { sub, role, exp: 2_000_000_000 };
        let token = mint_token(&claims, &secret);
        let tampered = tamper_char(&token, index);
        prop_assert_ne!(&tampered, &token);
        prop_assert!(verify_token(&tampered, &secret, 0).is_err());
        if other_secret != secret {
            prop_assert!(verify_token(&token, &other_secret, 0).is_err());
        }
    }

    #[test]
    fn token_verify_never_panics(token in ".{0,200}", now in any::<i64>()) {
        let _ = verify_token(&token, b"secret", now);
    }

    // ---------- retry ----------

    #[test]
    fn retry_delay_within_bounds(base in any::<u64>(), max in any::<u64>(), attempt in any::<u32>(), jitter in any::<u64>()) {
        let policy = RetryPolicy { max_attempts: 5, base_delay_ms: base, max_delay_ms: max };
        let delay = policy.delay_ms(attempt, jitter);
        let ceiling = policy.backoff_ceiling_ms(attempt);
        prop_assert!(delay <= max);
        prop_assert!(delay <= ceiling && delay >= ceiling / 2);
        prop_assert!(ceiling <= policy.backoff_ceiling_ms(attempt.saturating_add(1)));
    }

    #[test]
    fn retry_default_delay_within_bounds(attempt in 0u32..200, jitter in any::<u64>()) {
        let policy = RetryPolicy::default();
        let delay = policy.delay_ms(attempt, jitter);
        prop_assert!(delay <= policy.max_delay_ms);
        if attempt > 1 {
            prop_assert!(policy.backoff_ceiling_ms(attempt - 1) <= policy.backoff_ceiling_ms(attempt));
        }
    }

    // ---------- validation ----------

    #[test]
    fn parse_place_order_never_panics_on_any_json(body in arb_json()) {
        let _ = parse_place_order(&body);
    }

    #[test]
    fn parse_place_order_results_respect_the_rules(body in arb_order_body()) {
        match parse_place_order(&body) {
            Ok(order) => {
                prop_assert_eq!(&order.customer, &order.customer.to_lowercase());
                match order.content {
                    OrderContent::Items(lines) => {
                        prop_assert!(!lines.is_empty() && lines.len() <= MAX_ORDER_LINES);
                        for (index, line) in lines.iter().enumerate() {
                            prop_assert!((1..=MAX_QUANTITY).contains(&line.quantity));
                            prop_assert!(lines[..index].iter().all(|other| other.sku != line.sku));
                        }
                    }
                    OrderContent::Value(amount) => prop_assert!(amount.is_positive()),
                }
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(errors.iter().all(|e| !e.field.is_empty() && !e.message.is_empty()));
            }
        }
    }

    #[test]
    fn email_normalisation_is_idempotent(input in ".{0,30}", shaped in "[A-Za-z0-9.]{1,10}@[A-Za-z0-9]{1,10}\\.[A-Za-z]{2,4}") {
        for candidate in [input, shaped] {
            if let Ok(email) = parse_email("customer", &candidate) {
                prop_assert_eq!(parse_email("customer", &email), Ok(email.clone()));
            }
        }
    }

    // ---------- cursor ----------

    #[test]
    fn cursor_round_trip(key in ".{0,40}", junk in ".{0,40}") {
        prop_assert_eq!(decode_cursor(&encode_cursor(&key)), Ok(key));
        let _ = decode_cursor(&junk);
    }

    // ---------- time ----------

    #[test]
    fn rfc3339_shape_and_order(a in -62_167_219_200_000i64..253_402_300_800_000, b in -62_167_219_200_000i64..253_402_300_800_000) {
        let (x, y) = (rfc3339_from_millis(a), rfc3339_from_millis(b));
        prop_assert_eq!(x.len(), 24);
        prop_assert!(x.ends_with('Z'));
        // Fixed-width text sorts like the instants it names.
        prop_assert_eq!(x.cmp(&y), a.cmp(&b));
    }

    #[test]
    fn rfc3339_never_panics(ms in any::<i64>()) {
        let text = rfc3339_from_millis(ms);
        prop_assert!(text.ends_with('Z'));
    }
}

#[test]
fn rfc3339_known_vectors() {
    for (ms, expected) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_795_404_399_123, "2026-11-23T03:26:39.123Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1_234_567_890_000, "2009-02-13T23:31:30.000Z"),
        (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
        (1_709_164_800_000, "2024-02-29T00:00:00.000Z"),
    ] {
        assert_eq!(rfc3339_from_millis(ms), expected, "{ms}");
    }
}

#[test]
fn envelope_float_data_survives_the_wire() {
    let secret = b"s";
    let data =
        json!({"ratio": 0.1, "big": 1.7976931348623157e308, "tiny": 5e-324, "third": 1.0 / 3.0});
    let signed = Envelope::new("i", "t", "s", "tm", "c", data).signed(secret);
    let decoded = envelope::decode(&signed.encode()).expect("decodes");
    assert_eq!(decoded.verify(secret), Ok(()));
}
