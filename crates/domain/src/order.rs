//! Order states, the actions that move an order between them, and the
//! reasons an order can be rejected.
//!
//! The transition table:
//!
//! | from        | action    | to          |
//! |-------------|-----------|-------------|
//! | `placed`    | `confirm` | `confirmed` |
//! | `placed`    | `reject`  | `rejected`  |
//! | `placed`    | `cancel`  | `cancelled` |
//! | `confirmed` | `ship`    | `shipped`   |
//! | `confirmed` | `cancel`  | `cancelled` |
//! | `shipped`   | `deliver` | `delivered` |
//!
//! Every other combination is a [`TransitionError`]. `delivered`,
//! `rejected` and `cancelled` are terminal.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;

/// Where an order is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Accepted from the customer; balance and stock checks are pending.
    Placed,
    /// Balance and stock checks passed.
    Confirmed,
    /// Handed to the carrier.
    Shipped,
    /// Received by the customer (terminal).
    Delivered,
    /// Refused by a check (terminal).
    Rejected,
    /// Withdrawn by the customer before shipping (terminal).
    Cancelled,
}

impl OrderStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ];

    /// Returns the lowercase wire name, e.g. `"placed"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a lowercase wire name; `None` for anything else.
    pub fn parse(name: &str) -> Option<OrderStatus> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
    }

    /// Returns true for states no action can leave: delivered, rejected, cancelled.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered | OrderStatus::Rejected | OrderStatus::Cancelled
        )
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when a string is not an order status name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOrderStatus(pub String);

impl fmt::Display for UnknownOrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown order status: {:?}", self.0)
    }
}

impl std::error::Error for UnknownOrderStatus {}

impl FromStr for OrderStatus {
    type Err = UnknownOrderStatus;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        OrderStatus::parse(name).ok_or_else(|| UnknownOrderStatus(name.to_owned()))
    }
}

/// Something that happens to an order and may change its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderAction {
    /// All checks passed.
    Confirm,
    /// A check failed.
    Reject,
    /// Staff handed the order to the carrier.
    Ship,
    /// The carrier delivered the order.
    Deliver,
    /// The customer withdrew the order.
    Cancel,
}

impl OrderAction {
    /// Every action.
    pub const ALL: [OrderAction; 5] = [
        OrderAction::Confirm,
        OrderAction::Reject,
        OrderAction::Ship,
        OrderAction::Deliver,
        OrderAction::Cancel,
    ];

    /// Returns the lowercase verb, e.g. `"ship"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderAction::Confirm => "confirm",
            OrderAction::Reject => "reject",
            OrderAction::Ship => "ship",
            OrderAction::Deliver => "deliver",
            OrderAction::Cancel => "cancel",
        }
    }

    /// The status this action leaves an order in. An order already there has had the
    /// action applied: asking again (a client whose answer was lost) changes nothing.
    pub const fn outcome(self) -> OrderStatus {
        match self {
            OrderAction::Confirm => OrderStatus::Confirmed,
            OrderAction::Reject => OrderStatus::Rejected,
            OrderAction::Ship => OrderStatus::Shipped,
            OrderAction::Deliver => OrderStatus::Delivered,
            OrderAction::Cancel => OrderStatus::Cancelled,
        }
    }

    /// Parses a lowercase verb; `None` for anything else.
    pub fn parse(name: &str) -> Option<OrderAction> {
        OrderAction::ALL
            .into_iter()
            .find(|action| action.as_str() == name)
    }
}

impl fmt::Display for OrderAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action that is not allowed in the order's current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransitionError {
    /// The status the order was in.
    pub from: OrderStatus,
    /// The action that was refused.
    pub action: OrderAction,
}

impl fmt::Display for TransitionError {
    /// Formats as e.g. `cannot ship an order that is placed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} an order that is {}", self.action, self.from)
    }
}

impl std::error::Error for TransitionError {}

/// Applies `action` to an order in status `from`, returning the new status
/// or a [`TransitionError`] if the table (see the module docs) forbids it.
pub fn transition(from: OrderStatus, action: OrderAction) -> Result<OrderStatus, TransitionError> {
    use OrderAction as A;
    use OrderStatus as S;
    match (from, action) {
        (S::Placed, A::Confirm) => Ok(S::Confirmed),
        (S::Placed, A::Reject) => Ok(S::Rejected),
        (S::Placed | S::Confirmed, A::Cancel) => Ok(S::Cancelled),
        (S::Confirmed, A::Ship) => Ok(S::Shipped),
        (S::Shipped, A::Deliver) => Ok(S::Delivered),
        _ => Err(TransitionError { from, action }),
    }
}

/// Returns the actions [`transition`] accepts in status `from`.
pub fn allowed_actions(from: OrderStatus) -> Vec<OrderAction> {
    OrderAction::ALL
        .into_iter()
        .filter(|action| transition(from, *action).is_ok())
        .collect()
}

/// Why an order was rejected.
///
/// Serializes as its reason string (see [`RejectReason::to_reason_string`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum RejectReason {
    /// The customer's balance does not cover the order.
    InsufficientBalance,
    /// A product does not have enough stock.
    OutOfStock {
        /// The product that ran out.
        sku: String,
    },
    /// The balance or stock check did not answer in time.
    ChecksTimedOut,
}

/// Reason-string prefix of [`RejectReason::OutOfStock`], followed by the sku.
const OUT_OF_STOCK_PREFIX: &str = "out_of_stock: ";

impl RejectReason {
    /// Returns the machine-readable code: `insufficient_balance`,
    /// `out_of_stock` or `checks_timed_out`.
    pub const fn code(&self) -> &'static str {
        match self {
            RejectReason::InsufficientBalance => "insufficient_balance",
            RejectReason::OutOfStock { .. } => "out_of_stock",
            RejectReason::ChecksTimedOut => "checks_timed_out",
        }
    }

    /// Returns the stored reason: the code, plus `: <sku>` for out-of-stock
    /// (`out_of_stock: ABC-1`).
    pub fn to_reason_string(&self) -> String {
        self.to_string()
    }

    /// Parses a reason string produced by [`RejectReason::to_reason_string`];
    /// `None` if it is not one. A bare `out_of_stock` yields an empty sku.
    pub fn parse_reason(reason: &str) -> Option<RejectReason> {
        match reason {
            "insufficient_balance" => Some(RejectReason::InsufficientBalance),
            "checks_timed_out" => Some(RejectReason::ChecksTimedOut),
            "out_of_stock" => Some(RejectReason::OutOfStock { sku: String::new() }),
            _ => reason
                .strip_prefix(OUT_OF_STOCK_PREFIX)
                .map(|sku| RejectReason::OutOfStock {
                    sku: sku.to_owned(),
                }),
        }
    }
}

/// Parses a reason string; same as [`RejectReason::parse_reason`].
pub fn parse_reason(reason: &str) -> Option<RejectReason> {
    RejectReason::parse_reason(reason)
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::OutOfStock { sku } => write!(f, "{OUT_OF_STOCK_PREFIX}{sku}"),
            other => f.write_str(other.code()),
        }
    }
}

impl From<RejectReason> for String {
    fn from(reason: RejectReason) -> String {
        reason.to_reason_string()
    }
}

/// Error returned when a string is not a reject reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRejectReason(pub String);

impl fmt::Display for UnknownRejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown reject reason: {:?}", self.0)
    }
}

impl std::error::Error for UnknownRejectReason {}

impl TryFrom<String> for RejectReason {
    type Error = UnknownRejectReason;

    fn try_from(reason: String) -> Result<Self, Self::Error> {
        RejectReason::parse_reason(&reason).ok_or(UnknownRejectReason(reason))
    }
}

impl FromStr for RejectReason {
    type Err = UnknownRejectReason;

    fn from_str(reason: &str) -> Result<Self, Self::Err> {
        RejectReason::parse_reason(reason).ok_or_else(|| UnknownRejectReason(reason.to_owned()))
    }
}

/// How many times the first wait for the checkers' answers the wait may grow to.
pub const CHECK_WAIT_GROWTH: u64 = 4;

/// How long orders waits for the checkers' answers to its `asked`-th question about an
/// order (1: the first), in ms: `timeout_ms`, doubled with each question asked again, up to
/// [`CHECK_WAIT_GROWTH`] times `timeout_ms`. A checker that is slow because it is busy is
/// asked again less and less often, so asking again adds little to its load, while a lost
/// question is still asked again after `timeout_ms`.
pub fn check_wait_ms(timeout_ms: u64, asked: u32) -> u64 {
    RetryPolicy {
        max_attempts: u32::MAX,
        base_delay_ms: timeout_ms,
        max_delay_ms: timeout_ms.saturating_mul(CHECK_WAIT_GROWTH),
    }
    .backoff_ceiling_ms(asked)
}

/// Status changes `(order, seq, at_ms)` in the order they happened: by time, except that
/// each order's changes stay in `seq` order even when the clocks of different instances
/// disagree about their times. Ties go by order key.
pub fn in_history_order<K: Ord + Clone>(changes: Vec<(K, i64, i64)>) -> Vec<(K, i64)> {
    use std::collections::{BTreeMap, VecDeque};
    let mut per_order: BTreeMap<K, VecDeque<(i64, i64)>> = BTreeMap::new();
    for (order, seq, at) in changes {
        per_order.entry(order).or_default().push_back((seq, at));
    }
    for queue in per_order.values_mut() {
        queue.make_contiguous().sort_unstable();
    }
    let mut ordered = Vec::new();
    while let Some(order) = per_order
        .iter()
        .filter_map(|(order, queue)| queue.front().map(|(_, at)| (*at, order)))
        .min()
        .map(|(_, order)| order.clone())
    {
        let Some(queue) = per_order.get_mut(&order) else {
            break;
        };
        if let Some((seq, _)) = queue.pop_front() {
            ordered.push((order.clone(), seq));
        }
        if queue.is_empty() {
            per_order.remove(&order);
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wait_for_checks_doubles_with_each_question_up_to_four_times_the_first() {
        let waits: Vec<u64> = (1..=6)
            .map(|asked| super::check_wait_ms(5_000, asked))
            .collect();
        assert_eq!(waits, [5_000, 10_000, 20_000, 20_000, 20_000, 20_000]);
        assert_eq!(super::check_wait_ms(u64::MAX, 3), u64::MAX);
        assert_eq!(super::check_wait_ms(0, 9), 0);
    }

    #[test]
    fn every_allowed_transition_ends_in_its_actions_outcome() {
        use super::{OrderAction, OrderStatus, transition};
        for from in OrderStatus::ALL {
            for action in OrderAction::ALL {
                if let Ok(to) = transition(from, action) {
                    assert_eq!(to, action.outcome(), "{action} from {from}");
                }
            }
        }
    }

    #[test]
    fn changes_go_by_time_but_each_order_keeps_its_history_order() {
        let changes = vec![("b", 1, 10), ("a", 2, 5), ("a", 1, 20), ("b", 2, 30)];
        assert_eq!(
            in_history_order(changes),
            vec![("b", 1), ("a", 1), ("a", 2), ("b", 2)]
        );
        assert!(in_history_order(Vec::<(&str, i64, i64)>::new()).is_empty());
    }

    use super::*;
    use OrderAction as A;
    use OrderStatus as S;

    #[test]
    fn status_names_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            let json = serde_json::to_string(&status).expect("serializes");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            let back: OrderStatus = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, status);
        }
        assert_eq!(OrderStatus::parse("Placed"), None);
        assert_eq!(OrderStatus::parse(""), None);
        assert!("shipping".parse::<OrderStatus>().is_err());
        assert!(serde_json::from_str::<OrderStatus>("\"PLACED\"").is_err());
    }

    #[test]
    fn action_names_round_trip() {
        for action in OrderAction::ALL {
            assert_eq!(OrderAction::parse(action.as_str()), Some(action));
            let json = serde_json::to_string(&action).expect("serializes");
            assert_eq!(json, format!("\"{action}\""));
        }
        assert_eq!(OrderAction::parse("Ship"), None);
    }

    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, vec![S::Delivered, S::Rejected, S::Cancelled]);
    }

    #[test]
    fn allowed_transitions() {
        assert_eq!(transition(S::Placed, A::Confirm), Ok(S::Confirmed));
        assert_eq!(transition(S::Placed, A::Reject), Ok(S::Rejected));
        assert_eq!(transition(S::Placed, A::Cancel), Ok(S::Cancelled));
        assert_eq!(transition(S::Confirmed, A::Ship), Ok(S::Shipped));
        assert_eq!(transition(S::Confirmed, A::Cancel), Ok(S::Cancelled));
        assert_eq!(transition(S::Shipped, A::Deliver), Ok(S::Delivered));
    }

    #[test]
    fn exactly_six_transitions_are_allowed() {
        let allowed = OrderStatus::ALL
            .into_iter()
            .flat_map(|s| OrderAction::ALL.into_iter().map(move |a| (s, a)))
            .filter(|(s, a)| transition(*s, *a).is_ok())
            .count();
        assert_eq!(allowed, 6);
    }

    #[test]
    fn forbidden_transitions_report_from_and_action() {
        assert_eq!(
            transition(S::Placed, A::Ship),
            Err(TransitionError {
                from: S::Placed,
                action: A::Ship
            })
        );
        assert!(transition(S::Shipped, A::Cancel).is_err());
        assert!(transition(S::Confirmed, A::Confirm).is_err());
        assert!(transition(S::Confirmed, A::Reject).is_err());
        assert!(transition(S::Placed, A::Deliver).is_err());
    }

    #[test]
    fn terminal_states_accept_no_action() {
        for status in OrderStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(allowed_actions(status).is_empty(), "{status}");
        }
        assert_eq!(
            allowed_actions(S::Placed),
            vec![A::Confirm, A::Reject, A::Cancel]
        );
        assert_eq!(allowed_actions(S::Confirmed), vec![A::Ship, A::Cancel]);
        assert_eq!(allowed_actions(S::Shipped), vec![A::Deliver]);
    }

    #[test]
    fn transition_error_message() {
        let error = transition(S::Placed, A::Ship).unwrap_err();
        assert_eq!(error.to_string(), "cannot ship an order that is placed");
        let error = transition(S::Delivered, A::Cancel).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot cancel an order that is delivered"
        );
    }

    #[test]
    fn reject_reason_codes_and_strings() {
        let out_of_stock = RejectReason::OutOfStock {
            sku: "ABC-1".into(),
        };
        assert_eq!(
            RejectReason::InsufficientBalance.code(),
            "insufficient_balance"
        );
        assert_eq!(out_of_stock.code(), "out_of_stock");
        assert_eq!(RejectReason::ChecksTimedOut.code(), "checks_timed_out");
        assert_eq!(
            RejectReason::InsufficientBalance.to_reason_string(),
            "insufficient_balance"
        );
        assert_eq!(out_of_stock.to_reason_string(), "out_of_stock: ABC-1");
        assert_eq!(out_of_stock.to_string(), "out_of_stock: ABC-1");
        assert_eq!(
            RejectReason::ChecksTimedOut.to_reason_string(),
            "checks_timed_out"
        );
    }

    #[test]
    fn reject_reason_parses_its_own_strings() {
        for reason in [
            RejectReason::InsufficientBalance,
            RejectReason::ChecksTimedOut,
            RejectReason::OutOfStock { sku: "X".into() },
            RejectReason::OutOfStock {
                sku: "a b: c".into(),
            },
            RejectReason::OutOfStock { sku: String::new() },
        ] {
            assert_eq!(
                parse_reason(&reason.to_reason_string()),
                Some(reason.clone())
            );
            assert_eq!(
                reason.to_reason_string().parse::<RejectReason>(),
                Ok(reason)
            );
        }
        assert_eq!(
            parse_reason("out_of_stock"),
            Some(RejectReason::OutOfStock { sku: String::new() })
        );
        assert_eq!(parse_reason("out_of_stock:X"), None);
        assert_eq!(parse_reason("Insufficient_balance"), None);
        assert_eq!(parse_reason(""), None);
        assert_eq!(parse_reason("timeout"), None);
    }

    #[test]
    fn reject_reason_serializes_as_string() {
        let reason = RejectReason::OutOfStock { sku: "S1".into() };
        let json = serde_json::to_string(&reason).expect("serializes");
        assert_eq!(json, "\"out_of_stock: S1\"");
        let back: RejectReason = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, reason);
        assert!(serde_json::from_str::<RejectReason>("\"nope\"").is_err());
    }
}
