//! State-machine property test of the order pipeline's rules.
//!
//! Arbitrary command sequences (place, the two checkers' answers in any order,
//! staff ship/deliver/cancel, time-outs, credits, the checkers' hold/commit/release
//! of credit and stock, voucher issuing; any of them duplicated or early) run against a
//! small in-memory pipeline. Every decision goes through the domain's real API:
//! `parse_place_order` decodes the order, `Money` and `money::sum` price it,
//! `transition` allows or refuses each status change, `RejectReason` names rejections,
//! `VoucherPolicy` and `voucher_code` issue vouchers. The credit and stock bookkeeping
//! mirrors the balance-checker and stock-checker components (hold on `order.placed`,
//! commit on `order.confirmed`, release on `order.rejected`/`order.cancelled`, a release
//! that overtakes the placement leaves a tombstone), since that code lives there.
//!
//! After every step: statuses only move along the transition table, terminal states
//! stay terminal, credit and stock are conserved to the cent and unit and never
//! negative, and at most one voucher exists per order, only for delivered orders at or
//! above the threshold. After delivering every outstanding message, no credit or stock
//! stays held and exactly the confirmed, shipped and delivered orders are paid for.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use shop_domain::money;
use shop_domain::validation::OrderLine;
use shop_domain::{
    Money, OrderAction, OrderContent, OrderStatus, RejectReason, VoucherPolicy, parse_place_order,
    transition, voucher_code,
};

const CUSTOMERS: [&str; 2] = ["alice@example.com", "bob@example.com"];
const SKUS: [&str; 3] = ["SKU-A", "SKU-B", "SKU-C"];
/// Unit prices of [`SKUS`]; 49.99 makes totals straddle the 100.00 voucher threshold.
const PRICES_CENTS: [i64; 3] = [4_999, 1_250, 10_000];
const INITIAL_STOCK: [i64; 3] = [6, 10, 2];
/// What staff and customers may ask for; confirm and reject come only from the saga.
const STAFF_ACTIONS: [OrderAction; 3] =
    [OrderAction::Ship, OrderAction::Deliver, OrderAction::Cancel];
const VOUCHER_SECRET: &[u8] = b"voucher-secret";

/// The transition table written out independently of `shop_domain::transition`.
const LEGAL_STEPS: [(OrderStatus, OrderStatus); 6] = [
    (OrderStatus::Placed, OrderStatus::Confirmed),
    (OrderStatus::Placed, OrderStatus::Rejected),
    (OrderStatus::Placed, OrderStatus::Cancelled),
    (OrderStatus::Confirmed, OrderStatus::Shipped),
    (OrderStatus::Confirmed, OrderStatus::Cancelled),
    (OrderStatus::Shipped, OrderStatus::Delivered),
];

/// The two services that check a placed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Checker {
    Balance,
    Stock,
}

/// Events the orders service publishes to both checkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckerEvent {
    Placed,
    Confirmed,
    Rejected,
    Cancelled,
}

/// A command of the generated sequence; indices pick among existing orders.
#[derive(Debug, Clone)]
enum Command {
    Credit {
        customer: usize,
        cents: i64,
    },
    Place {
        customer: usize,
        lines: Vec<(usize, u32)>,
    },
    CheckerReceives {
        checker: Checker,
        event: CheckerEvent,
        order: prop::sample::Index,
    },
    OrdersReceiveAnswer {
        checker: Checker,
        order: prop::sample::Index,
    },
    Staff {
        action: OrderAction,
        order: prop::sample::Index,
    },
    TimeOut {
        order: prop::sample::Index,
    },
    VouchersReceiveDelivered {
        order: prop::sample::Index,
    },
}

/// Where a checker's hold for one order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldState {
    Held,
    Committed,
    Released,
    Refused,
}

/// A checker's answer to `order.placed`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Held,
    Rejected(RejectReason),
}

#[derive(Debug)]
struct Account {
    credited: Money,
    balance: Money,
    held: Money,
    spent: Money,
}

#[derive(Debug)]
struct Product {
    price: Money,
    free: i64,
    reserved: i64,
    sold: i64,
}

#[derive(Debug)]
struct Order {
    id: String,
    customer: usize,
    lines: Vec<OrderLine>,
    total: Money,
    history: Vec<OrderStatus>,
    reason: Option<String>,
    balance_check: Option<Answer>,
    stock_check: Option<Answer>,
    /// Events published to the checkers, in order.
    published: Vec<CheckerEvent>,
    delivered_published: bool,
    voucher: Option<(String, Money)>,
}

impl Order {
    fn status(&self) -> OrderStatus {
        *self.history.last().expect("an order has a status")
    }
}

#[derive(Debug)]
struct Pipeline {
    policy: VoucherPolicy,
    accounts: Vec<Account>,
    products: Vec<Product>,
    orders: Vec<Order>,
    balance_holds: BTreeMap<usize, (Money, HoldState)>,
    stock_holds: BTreeMap<usize, (Vec<(usize, i64)>, HoldState)>,
    answers: BTreeMap<(usize, Checker), Answer>,
    /// Every voucher the vouchers service issued, as `(order, code, value)`.
    issued_vouchers: Vec<(usize, String, Money)>,
}

impl Pipeline {
    fn new() -> Pipeline {
        Pipeline {
            policy: VoucherPolicy::default(),
            accounts: CUSTOMERS
                .iter()
                .map(|_| Account {
                    credited: Money::ZERO,
                    balance: Money::ZERO,
                    held: Money::ZERO,
                    spent: Money::ZERO,
                })
                .collect(),
            products: PRICES_CENTS
                .iter()
                .zip(INITIAL_STOCK)
                .map(|(price, stock)| Product {
                    price: Money::from_cents(*price),
                    free: stock,
                    reserved: 0,
                    sold: 0,
                })
                .collect(),
            orders: Vec::new(),
            balance_holds: BTreeMap::new(),
            stock_holds: BTreeMap::new(),
            answers: BTreeMap::new(),
            issued_vouchers: Vec::new(),
        }
    }

    fn pick(&self, index: &prop::sample::Index) -> Option<usize> {
        (!self.orders.is_empty()).then(|| index.index(self.orders.len()))
    }

    fn apply(&mut self, command: &Command) {
        match command {
            Command::Credit { customer, cents } => {
                let account = &mut self.accounts[*customer];
                let amount = Money::from_cents(*cents);
                account.credited = account.credited.checked_add(amount).expect("no overflow");
                account.balance = account.balance.checked_add(amount).expect("no overflow");
            }
            Command::Place { customer, lines } => self.place(*customer, lines),
            Command::CheckerReceives {
                checker,
                event,
                order,
            } => {
                if let Some(order) = self.pick(order) {
                    self.checker_receives(*checker, *event, order);
                }
            }
            Command::OrdersReceiveAnswer { checker, order } => {
                if let Some(order) = self.pick(order) {
                    self.orders_receive_answer(*checker, order);
                }
            }
            Command::Staff { action, order } => {
                if let Some(order) = self.pick(order) {
                    self.act(order, *action);
                }
            }
            Command::TimeOut { order } => {
                if let Some(order) = self.pick(order)
                    && self.orders[order].status() == OrderStatus::Placed
                {
                    self.reject(order, &RejectReason::ChecksTimedOut.to_string());
                }
            }
            Command::VouchersReceiveDelivered { order } => {
                if let Some(order) = self.pick(order)
                    && self.orders[order].delivered_published
                {
                    self.issue_voucher(order);
                }
            }
        }
    }

    /// A checker handles `event` about `order`, if the orders service published it.
    fn checker_receives(&mut self, checker: Checker, event: CheckerEvent, order: usize) {
        if !self.orders[order].published.contains(&event) {
            return;
        }
        match (checker, event) {
            (Checker::Balance, CheckerEvent::Placed) => self.hold_balance(order),
            (Checker::Stock, CheckerEvent::Placed) => self.reserve_stock(order),
            (Checker::Balance, CheckerEvent::Confirmed) => self.commit_balance(order),
            (Checker::Stock, CheckerEvent::Confirmed) => self.commit_stock(order),
            (Checker::Balance, _) => self.release_balance(order),
            (Checker::Stock, _) => self.release_stock(order),
        }
    }

    /// The orders service handles `checker`'s answer about `order`, if it was sent.
    fn orders_receive_answer(&mut self, checker: Checker, order: usize) {
        if let Some(answer) = self.answers.get(&(order, checker)).cloned() {
            self.receive_answer(order, checker, answer);
        }
    }

    /// Decodes a place-order body (duplicate skus included) and prices it.
    fn place(&mut self, customer: usize, lines: &[(usize, u32)]) {
        let items: Vec<Value> = lines
            .iter()
            .map(|(sku, quantity)| json!({"sku": SKUS[*sku], "quantity": quantity}))
            .collect();
        let body = json!({"customer": CUSTOMERS[customer].to_uppercase(), "items": items});
        let order = parse_place_order(&body).expect("generated bodies are valid");
        assert_eq!(order.customer, CUSTOMERS[customer], "emails are lowercased");
        let OrderContent::Items(lines) = order.content else {
            panic!("an items body decodes to items");
        };
        let mut skus: Vec<&str> = lines.iter().map(|line| line.sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        assert_eq!(skus.len(), lines.len(), "duplicate skus are merged");
        let line_totals = lines.iter().map(|line| {
            self.products[sku_index(&line.sku)]
                .price
                .checked_mul(line.quantity)
                .expect("no overflow")
        });
        let total = money::sum(line_totals).expect("no overflow");
        let index = self.orders.len();
        self.orders.push(Order {
            id: format!("ord_{index}"),
            customer,
            lines,
            total,
            history: vec![OrderStatus::Placed],
            reason: None,
            balance_check: None,
            stock_check: None,
            published: vec![CheckerEvent::Placed],
            delivered_published: false,
            voucher: None,
        });
    }

    /// Moves an order with `action` if the domain allows it; a refusal changes nothing.
    fn step(&mut self, order: usize, action: OrderAction) -> bool {
        let Ok(next) = transition(self.orders[order].status(), action) else {
            return false;
        };
        self.orders[order].history.push(next);
        true
    }

    fn act(&mut self, order: usize, action: OrderAction) {
        if !self.step(order, action) {
            return;
        }
        match self.orders[order].status() {
            OrderStatus::Cancelled => self.orders[order].published.push(CheckerEvent::Cancelled),
            OrderStatus::Delivered => self.orders[order].delivered_published = true,
            _ => {}
        }
    }

    /// The saga: both checks held confirms a placed order, any refusal rejects it.
    fn receive_answer(&mut self, order: usize, checker: Checker, answer: Answer) {
        let slot = match checker {
            Checker::Balance => &mut self.orders[order].balance_check,
            Checker::Stock => &mut self.orders[order].stock_check,
        };
        *slot = Some(answer.clone());
        match answer {
            Answer::Rejected(reason) => self.reject(order, &reason.to_string()),
            Answer::Held => {
                let both_held = self.orders[order].balance_check == Some(Answer::Held)
                    && self.orders[order].stock_check == Some(Answer::Held);
                if both_held
                    && self.orders[order].status() == OrderStatus::Placed
                    && self.step(order, OrderAction::Confirm)
                {
                    self.orders[order].published.push(CheckerEvent::Confirmed);
                }
            }
        }
    }

    fn reject(&mut self, order: usize, reason: &str) {
        if self.step(order, OrderAction::Reject) {
            self.orders[order].reason = Some(reason.to_owned());
            self.orders[order].published.push(CheckerEvent::Rejected);
        }
    }

    fn hold_balance(&mut self, order: usize) {
        if self.balance_holds.contains_key(&order) {
            return;
        }
        let (customer, total) = (self.orders[order].customer, self.orders[order].total);
        let account = &mut self.accounts[customer];
        let answer = if account.balance >= total {
            account.balance = account.balance.checked_sub(total).expect("no overflow");
            account.held = account.held.checked_add(total).expect("no overflow");
            self.balance_holds.insert(order, (total, HoldState::Held));
            Answer::Held
        } else {
            self.balance_holds
                .insert(order, (Money::ZERO, HoldState::Refused));
            Answer::Rejected(RejectReason::InsufficientBalance)
        };
        self.answers.insert((order, Checker::Balance), answer);
    }

    fn commit_balance(&mut self, order: usize) {
        let customer = self.orders[order].customer;
        let hold = self
            .balance_holds
            .get_mut(&order)
            .expect("order.confirmed comes after both holds");
        if hold.1 != HoldState::Held {
            return;
        }
        let account = &mut self.accounts[customer];
        account.held = account.held.checked_sub(hold.0).expect("no overflow");
        account.spent = account.spent.checked_add(hold.0).expect("no overflow");
        hold.1 = HoldState::Committed;
    }

    fn release_balance(&mut self, order: usize) {
        let customer = self.orders[order].customer;
        let hold = self
            .balance_holds
            .entry(order)
            .or_insert((Money::ZERO, HoldState::Released));
        let account = &mut self.accounts[customer];
        let from = match hold.1 {
            HoldState::Held => &mut account.held,
            HoldState::Committed => &mut account.spent,
            HoldState::Released | HoldState::Refused => return,
        };
        *from = from.checked_sub(hold.0).expect("no overflow");
        account.balance = account.balance.checked_add(hold.0).expect("no overflow");
        hold.1 = HoldState::Released;
    }

    fn reserve_stock(&mut self, order: usize) {
        if self.stock_holds.contains_key(&order) {
            return;
        }
        let lines: Vec<(usize, i64)> = self.orders[order]
            .lines
            .iter()
            .map(|line| (sku_index(&line.sku), i64::from(line.quantity)))
            .collect();
        let short = lines
            .iter()
            .find(|(sku, quantity)| self.products[*sku].free < *quantity);
        let answer = match short {
            Some((sku, _)) => {
                self.stock_holds
                    .insert(order, (Vec::new(), HoldState::Refused));
                Answer::Rejected(RejectReason::OutOfStock {
                    sku: SKUS[*sku].to_owned(),
                })
            }
            None => {
                for (sku, quantity) in &lines {
                    self.products[*sku].free -= quantity;
                    self.products[*sku].reserved += quantity;
                }
                self.stock_holds.insert(order, (lines, HoldState::Held));
                Answer::Held
            }
        };
        self.answers.insert((order, Checker::Stock), answer);
    }

    fn commit_stock(&mut self, order: usize) {
        let hold = self
            .stock_holds
            .get_mut(&order)
            .expect("order.confirmed comes after both holds");
        if hold.1 != HoldState::Held {
            return;
        }
        for (sku, quantity) in &hold.0 {
            self.products[*sku].reserved -= quantity;
            self.products[*sku].sold += quantity;
        }
        hold.1 = HoldState::Committed;
    }

    fn release_stock(&mut self, order: usize) {
        let hold = self
            .stock_holds
            .entry(order)
            .or_insert((Vec::new(), HoldState::Released));
        for (sku, quantity) in &hold.0 {
            let product = &mut self.products[*sku];
            match hold.1 {
                HoldState::Held => product.reserved -= quantity,
                HoldState::Committed => product.sold -= quantity,
                HoldState::Released | HoldState::Refused => return,
            }
            product.free += quantity;
        }
        hold.1 = HoldState::Released;
    }

    /// The vouchers service on `order.delivered`: one voucher per order id, if earned.
    fn issue_voucher(&mut self, order: usize) {
        if self.issued_vouchers.iter().any(|(o, _, _)| *o == order) {
            return;
        }
        let Some(value) = self.policy.voucher_for(self.orders[order].total) else {
            return;
        };
        let code = voucher_code(&self.orders[order].id, VOUCHER_SECRET);
        self.issued_vouchers.push((order, code.clone(), value));
        self.orders[order].voucher = Some((code, value));
    }

    /// Delivers every published message to every consumer until nothing changes.
    fn drain(&mut self) {
        loop {
            let before = format!("{self:?}");
            for order in 0..self.orders.len() {
                for event in self.orders[order].published.clone() {
                    for checker in [Checker::Balance, Checker::Stock] {
                        self.checker_receives(checker, event, order);
                    }
                }
                for checker in [Checker::Balance, Checker::Stock] {
                    self.orders_receive_answer(checker, order);
                }
                if self.orders[order].delivered_published {
                    self.issue_voucher(order);
                }
            }
            if format!("{self:?}") == before {
                return;
            }
        }
    }

    fn check_invariants(&self) {
        for order in &self.orders {
            for pair in order.history.windows(2) {
                assert!(
                    LEGAL_STEPS.contains(&(pair[0], pair[1])),
                    "illegal step {} -> {} of {}",
                    pair[0],
                    pair[1],
                    order.id
                );
            }
            if let Some(first_terminal) = order.history.iter().position(|s| s.is_terminal()) {
                assert_eq!(
                    first_terminal,
                    order.history.len() - 1,
                    "{} left a terminal state",
                    order.id
                );
            }
            match (&order.reason, order.status()) {
                (Some(reason), OrderStatus::Rejected) => assert!(
                    RejectReason::parse_reason(reason).is_some(),
                    "unknown reason {reason}"
                ),
                (None, OrderStatus::Rejected) => panic!("{} rejected without a reason", order.id),
                (Some(_), _) => panic!("{} has a reason but is not rejected", order.id),
                (None, _) => {}
            }
        }

        for (customer, account) in self.accounts.iter().enumerate() {
            for amount in [account.balance, account.held, account.spent] {
                assert!(!amount.is_negative(), "negative credit {account:?}");
            }
            let total = money::sum([account.balance, account.held, account.spent]);
            assert_eq!(total, Some(account.credited), "credit not conserved");
            let held_for = |state: HoldState| {
                money::sum(
                    self.balance_holds
                        .iter()
                        .filter(|(order, (_, s))| {
                            *s == state && self.orders[**order].customer == customer
                        })
                        .map(|(_, (amount, _))| *amount),
                )
            };
            assert_eq!(held_for(HoldState::Held), Some(account.held));
            assert_eq!(held_for(HoldState::Committed), Some(account.spent));
        }

        for (sku, product) in self.products.iter().enumerate() {
            assert!(
                product.free >= 0 && product.reserved >= 0 && product.sold >= 0,
                "negative stock {product:?}"
            );
            assert_eq!(
                product.free + product.reserved + product.sold,
                INITIAL_STOCK[sku],
                "stock not conserved"
            );
            let units_in = |state: HoldState| -> i64 {
                self.stock_holds
                    .values()
                    .filter(|(_, s)| *s == state)
                    .flat_map(|(lines, _)| lines.iter())
                    .filter(|(line_sku, _)| *line_sku == sku)
                    .map(|(_, quantity)| quantity)
                    .sum()
            };
            assert_eq!(units_in(HoldState::Held), product.reserved);
            assert_eq!(units_in(HoldState::Committed), product.sold);
        }

        for (position, (order, code, value)) in self.issued_vouchers.iter().enumerate() {
            let order = &self.orders[*order];
            assert!(
                self.issued_vouchers[position + 1..]
                    .iter()
                    .all(|(other, _, _)| self.orders[*other].id != order.id),
                "two vouchers for {}",
                order.id
            );
            assert_eq!(order.status(), OrderStatus::Delivered);
            assert!(order.total >= self.policy.threshold);
            assert_eq!(*value, self.policy.value);
            assert_eq!(*code, voucher_code(&order.id, VOUCHER_SECRET));
            assert_eq!(order.voucher.as_ref(), Some(&(code.clone(), *value)));
        }
        for order in &self.orders {
            if order.voucher.is_some() {
                assert!(
                    self.issued_vouchers
                        .iter()
                        .any(|(o, _, _)| self.orders[*o].id == order.id)
                );
            }
        }
    }

    /// Once every message is delivered: nothing stays held or placed, and exactly the
    /// confirmed, shipped and delivered orders are paid for and their units sold.
    fn check_settled(&self) {
        let is_paid = |order: &Order| {
            matches!(
                order.status(),
                OrderStatus::Confirmed | OrderStatus::Shipped | OrderStatus::Delivered
            )
        };
        for order in &self.orders {
            assert_ne!(
                order.status(),
                OrderStatus::Placed,
                "{} left placed",
                order.id
            );
            if order.status() == OrderStatus::Delivered {
                assert_eq!(
                    order.voucher.is_some(),
                    self.policy.voucher_for(order.total).is_some(),
                    "voucher of {}",
                    order.id
                );
            }
        }
        for (customer, account) in self.accounts.iter().enumerate() {
            assert!(account.held.is_zero(), "credit still held: {account:?}");
            let paid = money::sum(
                self.orders
                    .iter()
                    .filter(|order| order.customer == customer && is_paid(order))
                    .map(|order| order.total),
            );
            assert_eq!(paid, Some(account.spent));
        }
        for (sku, product) in self.products.iter().enumerate() {
            assert_eq!(product.reserved, 0, "stock still reserved: {product:?}");
            let sold: i64 = self
                .orders
                .iter()
                .filter(|order| is_paid(order))
                .flat_map(|order| order.lines.iter())
                .filter(|line| sku_index(&line.sku) == sku)
                .map(|line| i64::from(line.quantity))
                .sum();
            assert_eq!(sold, product.sold);
        }
    }
}

fn sku_index(sku: &str) -> usize {
    SKUS.iter()
        .position(|known| *known == sku)
        .expect("orders only name known skus")
}

fn arb_checker() -> impl Strategy<Value = Checker> {
    prop_oneof![Just(Checker::Balance), Just(Checker::Stock)]
}

fn arb_command() -> impl Strategy<Value = Command> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        1 => (0..CUSTOMERS.len(), 1i64..15_000).prop_map(|(customer, cents)| Command::Credit { customer, cents }),
        2 => (
            0..CUSTOMERS.len(),
            prop::collection::vec((0..SKUS.len(), 1u32..4), 1..4)
        )
            .prop_map(|(customer, lines)| Command::Place { customer, lines }),
        6 => (
            arb_checker(),
            prop_oneof![
                3 => Just(CheckerEvent::Placed),
                1 => Just(CheckerEvent::Confirmed),
                1 => Just(CheckerEvent::Rejected),
                1 => Just(CheckerEvent::Cancelled),
            ],
            index()
        )
            .prop_map(|(checker, event, order)| Command::CheckerReceives { checker, event, order }),
        4 => (arb_checker(), index()).prop_map(|(checker, order)| Command::OrdersReceiveAnswer { checker, order }),
        3 => (prop::sample::select(STAFF_ACTIONS.to_vec()), index())
            .prop_map(|(action, order)| Command::Staff { action, order }),
        1 => index().prop_map(|order| Command::TimeOut { order }),
        1 => index().prop_map(|order| Command::VouchersReceiveDelivered { order }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn command_sequences_keep_the_pipeline_invariants(
        commands in prop::collection::vec(arb_command(), 1..80),
    ) {
        let mut pipeline = Pipeline::new();
        for command in &commands {
            pipeline.apply(command);
            pipeline.check_invariants();
        }
        pipeline.drain();
        pipeline.check_invariants();
        pipeline.check_settled();
    }
}
