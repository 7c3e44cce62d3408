//! Host-agnostic business rules of the shop's order pipeline.
//!
//! This crate has no WebAssembly, host or I/O dependency and never reads a
//! clock or a random number generator: the current time and any randomness
//! are passed in by the caller. It compiles for native targets and for
//! `wasm32-wasip2` alike.
//!
//! Modules:
//! - [`money`]: integer amounts of cents with checked arithmetic.
//! - [`order`]: order states, the transition table and rejection reasons.
//! - [`validation`]: decoding and validating API input, naming every bad field.
//! - [`voucher`]: who earns a voucher and the voucher's deterministic code.
//! - [`retry`]: exponential backoff with caller-supplied jitter.
//! - [`envelope`]: the HMAC-signed event envelope exchanged between services.
//! - [`internal_call`]: the gateway's signature on the calls it makes for a caller.
//! - [`auth`]: HS256 JSON Web Tokens and roles.
//! - [`time`]: RFC 3339 timestamps from Unix milliseconds.
//! - [`cursor`]: opaque pagination cursors.
//! - [`rate_limit`]: per-caller request limits in one-minute windows.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod cursor;
pub mod envelope;
mod hmac_key;
pub mod internal_call;
pub mod money;
pub mod order;
pub mod rate_limit;
pub mod retry;
pub mod time;
pub mod validation;
pub mod voucher;

pub use auth::{AuthError, Claims, Role, mint_token, verify_token};
pub use cursor::{decode_cursor, encode_cursor};
pub use envelope::{Envelope, EnvelopeError, SignatureError, event_types};
pub use internal_call::{CallSignatureError, InternalCall};
pub use money::Money;
pub use order::{OrderAction, OrderStatus, RejectReason, TransitionError, transition};
pub use retry::RetryPolicy;
pub use time::rfc3339_from_millis;
pub use validation::{
    OrderContent, OrderLine, PlaceOrder, ProductInput, ValidationError, parse_compat_order,
    parse_credit, parse_email, parse_limit, parse_place_order, parse_product, parse_sku,
};
pub use voucher::{VoucherPolicy, voucher_code};
