//! Fault injection for tests: make the next events a component's handler receives fail on
//! its database (`spin:sqlite` on the Spin flavour, `wasmcloud:postgres` on the wasmCloud
//! lattice), and, on the Spin flavour, a seeded chaos mode ([`ChaosSettings`]) that traps
//! instances anywhere (an API request is the gateway composed with the services, which
//! relays their events in the same instance: a trap lands before, inside or after any
//! service's transaction, losing an event batch before or after its receiver applied it),
//! fails PostgreSQL statements, and takes the database away for a while ([`Outage`]). On
//! Spin nothing travels between services over a network, so there are no messages to lose,
//! duplicate or delay there; on the lattice (NATS) there are. On the lattice it also
//! loses request bodies and outgoing calls as wasmCloud 1.9.2's wRPC transport does under
//! load ([`crate::BodyLoss`]).

use crate::wasmcloud::BodyLoss;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The path of a service's event handler (a private component's, on Spin).
pub(crate) const EVENT_HANDLER_PATH: &str = "/internal/events";
/// The largest number of database calls (`spin:sqlite` `execute`, `spin:postgres` `query`
/// and `execute`) after which a chaos fault fires; the call is picked uniformly in
/// `1..=FAULT_WINDOW`, so a fault lands before, inside or after the instance's transaction
/// (or not at all when the instance makes fewer calls).
const FAULT_WINDOW: u64 = 12;
/// The gateway's tick of every service (`infra/spin/ticker.sh` posts it on Spin).
const ADMIN_TICK_PATH: &str = "/api/v1/admin/tick";

#[derive(Debug, Default)]
struct Rule {
    active: bool,
    /// Requests still to fail; `None` means until cleared.
    remaining: Option<u32>,
    injected: u32,
}

/// Fault injection shared between a [`TestHost`](crate::TestHost) (or a
/// [`Lattice`](crate::Lattice)) and the test that drives it. A fault is scoped to one request's instance: the flag is decided when
/// the request arrives and lives in that request's store, so concurrent requests to
/// other paths or components are unaffected.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<HashMap<String, Rule>>,
    chaos: Mutex<Option<Chaos>>,
    outages: Mutex<HashMap<Outage, Instant>>,
    figures: Mutex<ChaosFigures>,
    body_losses: Mutex<HashMap<String, VecDeque<BodyLoss>>>,
    lost_calls: Mutex<HashMap<String, u32>>,
    aborted_call_bodies: Mutex<HashMap<String, u32>>,
    cut_answers: Mutex<HashMap<String, u32>>,
    hung_messages: Mutex<HashMap<String, u32>>,
}

/// How chaos mode misbehaves. Every decision is drawn from one PRNG seeded with `seed`:
/// the sequence of draws is reproducible, while which message gets which draw depends on
/// the order in which concurrent requests reach the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosSettings {
    /// The PRNG seed.
    pub seed: u64,
    /// Share of service instances that trap, whatever they serve (an event batch, a call,
    /// a tick): a database call chosen at random returns a trap instead of running, so the
    /// instance dies mid-request, before, inside or after its transaction.
    pub trap_rate: f64,
    /// The same share for instances serving a tick: ticks are fewer than calls and events
    /// (one every 50 ms or so), so a run gives them a rate of their own, high enough that
    /// every run traps some.
    pub tick_trap_rate: f64,
    /// Share of service instances on PostgreSQL one of whose statements, chosen at random,
    /// fails with a serialization failure (SQLSTATE 40001), as under concurrent writers.
    pub serialization_failure_rate: f64,
    /// Share of service instances on PostgreSQL whose connection the server ends
    /// (`pg_terminate_backend`) just before one of its statements, chosen at random: an open
    /// transaction is rolled back, and the statement fails as the connection is gone.
    pub disconnect_rate: f64,
}

impl ChaosSettings {
    /// No faults at all, with `seed`; set the rates you want.
    pub fn quiet(seed: u64) -> Self {
        Self {
            seed,
            trap_rate: 0.0,
            tick_trap_rate: 0.0,
            serialization_failure_rate: 0.0,
            disconnect_rate: 0.0,
        }
    }
}

/// What chaos mode and outages have done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChaosFigures {
    /// Instances serving an event batch sent to a service's own handler that trapped.
    pub traps: u64,
    /// Instances serving a call (not an event or a tick) that trapped: on Spin, an API
    /// request, with the events it caused relayed in the same instance.
    pub call_traps: u64,
    /// Instances serving a tick (a worker's, or the gateway's admin tick) that trapped.
    pub tick_traps: u64,
    /// PostgreSQL statements failed with an injected serialization failure.
    pub serialization_failures: u64,
    /// PostgreSQL connections ended by the server before one of their statements.
    pub disconnects: u64,
    /// `spin:sqlite` calls refused because the database was away.
    pub database_outage_failures: u64,
}

/// A shared resource an outage takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outage {
    /// The SQLite database: every `spin:sqlite` `open` and `execute` fails with an I/O error.
    Database,
}

/// The faults one request's instance runs with.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InstanceFaults {
    /// The database call (counted from 1) chaos mode makes fail, and how.
    pub(crate) fault_at_call: Option<(u64, DatabaseFault)>,
    /// What the instance serves, for counting its trap.
    pub(crate) serving: Serving,
}

/// How chaos mode makes one database call fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatabaseFault {
    /// The call traps: the instance dies.
    Trap,
    /// The statement fails with SQLSTATE 40001 (PostgreSQL only).
    SerializationFailure,
    /// The server ends the connection first (PostgreSQL only).
    Disconnect,
}

/// What a request asks of a service instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Serving {
    /// A batch of events (`/internal/events`).
    Events,
    /// A tick (a worker's `/internal/tick`, or the gateway's admin tick).
    Tick,
    /// Anything else: an API call.
    #[default]
    Call,
}

impl Serving {
    /// What a request for `path` asks.
    pub(crate) fn of(path: &str) -> Serving {
        match path {
            EVENT_HANDLER_PATH => Serving::Events,
            crate::ticker::TICK_PATH | ADMIN_TICK_PATH => Serving::Tick,
            _ => Serving::Call,
        }
    }
}

#[derive(Debug)]
struct Chaos {
    settings: ChaosSettings,
    rng: SplitMix64,
}

/// SplitMix64 (Steele, Lea, Flood 2014): the small, fast, well-distributed PRNG behind
/// chaos mode, public so that tests draw their plans from the same seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `rate`.
    pub fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.unit() < rate
    }

    /// A uniform draw in `low..=high` (`low` when `high < low`).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        match high.checked_sub(low) {
            Some(span) if span < u64::MAX => low + self.next_u64() % (span + 1),
            Some(_) => self.next_u64(),
            None => low,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes one from `component`'s budget in `budgets`; false when none is left.
fn take_one(budgets: &Mutex<HashMap<String, u32>>, component: &str) -> bool {
    match lock(budgets).get_mut(component) {
        Some(left) if *left > 0 => {
            *left -= 1;
            true
        }
        _ => false,
    }
}

impl Faults {
    fn rules(&self) -> MutexGuard<'_, HashMap<String, Rule>> {
        lock(&self.rules)
    }

    /// Turns chaos mode on (Spin flavour) with `settings`, restarting its PRNG from the
    /// seed. Figures keep counting from where they were.
    pub fn start_chaos(&self, settings: ChaosSettings) {
        let rng = SplitMix64::new(settings.seed);
        *lock(&self.chaos) = Some(Chaos { settings, rng });
    }

    /// Turns chaos mode off; messages and handlers run untouched again. Outages are not
    /// affected (see [`Faults::end_outages`]).
    pub fn stop_chaos(&self) {
        *lock(&self.chaos) = None;
    }

    /// Takes `what` away for `duration` from now (Spin flavour); it comes back by itself.
    pub fn begin_outage(&self, what: Outage, duration: Duration) {
        lock(&self.outages).insert(what, Instant::now() + duration);
    }

    /// Brings every resource taken away by [`Faults::begin_outage`] back now.
    pub fn end_outages(&self) {
        lock(&self.outages).clear();
    }

    /// Whether `what` is away now.
    pub fn is_away(&self, what: Outage) -> bool {
        lock(&self.outages)
            .get(&what)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// What chaos mode and outages have done so far.
    pub fn chaos_figures(&self) -> ChaosFigures {
        *lock(&self.figures)
    }

    /// Refuses a use of `what` if it is away now, counting the refusal.
    pub(crate) fn refuse_during_outage(&self, what: Outage) -> bool {
        if !self.is_away(what) {
            return false;
        }
        let mut figures = lock(&self.figures);
        match what {
            Outage::Database => figures.database_outage_failures += 1,
        }
        true
    }

    /// Decides the faults of one request for `path` as it arrives: in chaos mode, whether
    /// the instance traps and at which database call.
    pub(crate) fn for_request(&self, path: &str) -> InstanceFaults {
        let serving = Serving::of(path);
        let fault_at_call = lock(&self.chaos)
            .as_mut()
            .and_then(|Chaos { settings, rng }| {
                let trap_rate = match serving {
                    Serving::Tick => settings.tick_trap_rate,
                    Serving::Events | Serving::Call => settings.trap_rate,
                };
                let fault = if rng.chance(trap_rate) {
                    DatabaseFault::Trap
                } else if rng.chance(settings.serialization_failure_rate) {
                    DatabaseFault::SerializationFailure
                } else if rng.chance(settings.disconnect_rate) {
                    DatabaseFault::Disconnect
                } else {
                    return None;
                };
                Some((rng.between(1, FAULT_WINDOW), fault))
            });
        InstanceFaults {
            fault_at_call,
            serving,
        }
    }

    /// Counts a `fault` chaos mode made a database call of an instance serving `serving`
    /// take.
    pub(crate) fn count_database_fault(&self, fault: DatabaseFault, serving: Serving) {
        let mut figures = lock(&self.figures);
        match (fault, serving) {
            (DatabaseFault::Trap, Serving::Events) => figures.traps += 1,
            (DatabaseFault::Trap, Serving::Tick) => figures.tick_traps += 1,
            (DatabaseFault::Trap, Serving::Call) => figures.call_traps += 1,
            (DatabaseFault::SerializationFailure, _) => figures.serialization_failures += 1,
            (DatabaseFault::Disconnect, _) => figures.disconnects += 1,
        }
    }

    /// On Spin, `component`'s event handler fails the next `times` deliveries: its read of
    /// its inbox (`SELECT ... FROM <service>_inbox`, the first statement of a delivery's
    /// transaction) fails with `error::io("injected fault")` (the gateway relays events
    /// within its instance, so the handler is told by what it reads, not by a request);
    /// on the wasmCloud lattice, the next `times`
    /// messages its `wasmcloud:messaging` handler receives run with every
    /// `wasmcloud:postgres` call failing with `unexpected("failed to perform query:
    /// injected fault")`. Either way the real handler fails and answers an error.
    /// `None` fails them until [`Faults::clear`] is called. Replaces any earlier
    /// setting for `component`.
    pub fn fail_event_handler(&self, component: &str, times: Option<u32>) {
        let mut rules = self.rules();
        let rule = rules.entry(component.to_owned()).or_default();
        rule.active = times != Some(0);
        rule.remaining = times;
    }

    /// Stops injecting faults into every component, chaos mode and outages included.
    /// Counts reported by [`Faults::injected_count`] and [`Faults::chaos_figures`] are kept.
    pub fn clear(&self) {
        for rule in self.rules().values_mut() {
            rule.active = false;
        }
        self.stop_chaos();
        self.end_outages();
    }

    /// How many requests to `component` have been run with injected faults so far.
    pub fn injected_count(&self, component: &str) -> u32 {
        self.rules().get(component).map_or(0, |rule| rule.injected)
    }

    /// Whether `statement` (a `spin:sqlite` one) is an event handler's read of its inbox
    /// that [`Faults::fail_event_handler`] makes fail; consumes one unit of that service's
    /// budget if so.
    pub(crate) fn fails_inbox_read(&self, statement: &str) -> bool {
        let statement = statement.trim_start();
        if !statement
            .get(..6)
            .is_some_and(|keyword| keyword.eq_ignore_ascii_case("SELECT"))
        {
            return false;
        }
        let service = self
            .rules()
            .iter()
            .filter(|(_, rule)| rule.active)
            .map(|(service, _)| service.clone())
            .find(|service| {
                statement.contains(&format!(
                    "FROM {} ",
                    crate::messaging_table(service, "inbox")
                ))
            });
        service.is_some_and(|service| self.take_message(&service))
    }

    /// Decides, as a message for `component`'s `wasmcloud:messaging` handler arrives on the
    /// wasmCloud lattice, whether its instance gets a failing `wasmcloud:postgres`;
    /// consumes one unit of the budget if so.
    pub(crate) fn take_message(&self, component: &str) -> bool {
        let mut rules = self.rules();
        let Some(rule) = rules.get_mut(component) else {
            return false;
        };
        if !rule.active {
            return false;
        }
        rule.injected += 1;
        if let Some(remaining) = &mut rule.remaining {
            *remaining = remaining.saturating_sub(1);
            rule.active = *remaining > 0;
        }
        true
    }

    /// On the lattice, the next requests served to `component` lose their body as `losses`
    /// lists, one each, in order (see [`BodyLoss`]): a cut applies to the next request
    /// that declares a body, a stall to the next request of any kind (the transport can
    /// lose the end of an empty body too).
    pub fn lose_request_bodies(&self, component: &str, losses: &[BodyLoss]) {
        lock(&self.body_losses)
            .entry(component.to_owned())
            .or_default()
            .extend(losses);
    }

    /// On the lattice, the next `times` outgoing HTTP calls of `component` are lost before
    /// they leave the host: no answer ever comes.
    pub fn lose_calls(&self, component: &str, times: u32) {
        *lock(&self.lost_calls)
            .entry(component.to_owned())
            .or_default() += times;
    }

    /// On the lattice, the next `times` outgoing HTTP calls of `component` that carry a
    /// body lose it on the way to the http-client provider, which aborts them: the caller
    /// gets `HTTP-protocol-error`, the receiver nothing.
    pub fn abort_call_bodies(&self, component: &str, times: u32) {
        *lock(&self.aborted_call_bodies)
            .entry(component.to_owned())
            .or_default() += times;
    }

    /// On the lattice, the next `times` answers of `component` lose their body on the way
    /// out (the head, `content-length` included, arrives): the component did its work, its
    /// caller never learns the outcome.
    pub fn cut_answers(&self, component: &str, times: u32) {
        *lock(&self.cut_answers)
            .entry(component.to_owned())
            .or_default() += times;
    }

    /// On the lattice, the next `times` messages `component`'s handler receives hang, as an
    /// instance does on wasmCloud 1.9.2 when the result of one of its calls to a provider is
    /// lost: each holds its instance slot until the max execution time drops it.
    pub fn hang_messages(&self, component: &str, times: u32) {
        *lock(&self.hung_messages)
            .entry(component.to_owned())
            .or_default() += times;
    }

    /// How many of the messages [`Faults::hang_messages`] asked for have not arrived yet.
    pub fn hung_messages_left(&self, component: &str) -> u32 {
        lock(&self.hung_messages)
            .get(component)
            .copied()
            .unwrap_or(0)
    }

    /// Whether the message `component`'s handler receives now hangs.
    pub(crate) fn take_hung_message(&self, component: &str) -> bool {
        take_one(&self.hung_messages, component)
    }

    /// Whether the answer `component` gives now loses its body.
    pub(crate) fn take_cut_answer(&self, component: &str) -> bool {
        take_one(&self.cut_answers, component)
    }

    /// How the request arriving now at `component` (declaring a body or not, `has_body`)
    /// loses its body, if it does.
    pub(crate) fn take_body_loss(&self, component: &str, has_body: bool) -> Option<BodyLoss> {
        let mut losses = lock(&self.body_losses);
        let queue = losses.get_mut(component)?;
        match queue.front()? {
            BodyLoss::Cut if !has_body => None,
            _ => queue.pop_front(),
        }
    }

    /// Whether the outgoing call `component` makes now is lost.
    pub(crate) fn take_lost_call(&self, component: &str) -> bool {
        take_one(&self.lost_calls, component)
    }

    /// Whether the outgoing call with a body that `component` makes now is aborted.
    pub(crate) fn take_aborted_call_body(&self, component: &str) -> bool {
        take_one(&self.aborted_call_bodies, component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INBOX_READ: &str = "SELECT event_id FROM orders_inbox WHERE event_id = $1";

    #[test]
    fn counts_down_and_clears() {
        let faults = Faults::default();
        assert!(!faults.fails_inbox_read(INBOX_READ));
        faults.fail_event_handler("orders", Some(2));
        assert!(!faults.fails_inbox_read("SELECT id FROM orders WHERE id = $1"));
        assert!(!faults.fails_inbox_read(
            "INSERT INTO orders_inbox (event_id, event_type, processed_at) VALUES ($1, $2, $3)"
        ));
        assert!(
            !faults
                .fails_inbox_read("SELECT event_id FROM stock_checker_inbox WHERE event_id = $1")
        );
        assert!(faults.fails_inbox_read(INBOX_READ));
        assert!(faults.fails_inbox_read(INBOX_READ));
        assert!(!faults.fails_inbox_read(INBOX_READ));
        assert_eq!(faults.injected_count("orders"), 2);

        faults.fail_event_handler("orders", None);
        for _ in 0..5 {
            assert!(faults.fails_inbox_read(INBOX_READ));
        }
        faults.clear();
        assert!(!faults.fails_inbox_read(INBOX_READ));
        assert_eq!(faults.injected_count("orders"), 7);
        assert_eq!(faults.injected_count("stock-checker"), 0);
    }

    fn trap_calls(seed: u64, n: usize) -> Vec<Option<u64>> {
        let faults = Faults::default();
        faults.start_chaos(ChaosSettings {
            trap_rate: 0.1,
            ..ChaosSettings::quiet(seed)
        });
        (0..n)
            .map(|_| {
                faults
                    .for_request("/orders")
                    .fault_at_call
                    .map(|(at, _)| at)
            })
            .collect()
    }

    #[test]
    fn chaos_is_reproducible_by_seed_and_near_its_rates() {
        let first = trap_calls(7, 5000);
        assert_eq!(first, trap_calls(7, 5000));
        assert_ne!(first, trap_calls(8, 5000));
        let share = first.iter().filter(|at| at.is_some()).count() as f64 / first.len() as f64;
        assert!((share - 0.1).abs() < 0.02, "{share}");
    }

    #[test]
    fn chaos_counts_and_stops() {
        let faults = Faults::default();
        faults.start_chaos(ChaosSettings {
            trap_rate: 1.0,
            tick_trap_rate: 1.0,
            ..ChaosSettings::quiet(1)
        });
        for (path, serving) in [
            (EVENT_HANDLER_PATH, Serving::Events),
            ("/internal/tick", Serving::Tick),
            (ADMIN_TICK_PATH, Serving::Tick),
            ("/orders", Serving::Call),
        ] {
            let instance = faults.for_request(path);
            assert!(
                instance
                    .fault_at_call
                    .is_some_and(|(at, fault)| (1..=FAULT_WINDOW).contains(&at)
                        && fault == DatabaseFault::Trap),
                "{path}: {instance:?}"
            );
            assert_eq!(instance.serving, serving, "{path}");
            faults.count_database_fault(DatabaseFault::Trap, instance.serving);
        }
        let figures = faults.chaos_figures();
        assert_eq!(
            (figures.traps, figures.tick_traps, figures.call_traps),
            (1, 2, 1)
        );
        faults.clear();
        assert_eq!(faults.for_request("/orders").fault_at_call, None);
    }

    #[test]
    fn outages_end_by_themselves_or_when_ended() {
        let faults = Faults::default();
        assert!(!faults.refuse_during_outage(Outage::Database));
        faults.begin_outage(Outage::Database, Duration::from_millis(30));
        assert!(faults.refuse_during_outage(Outage::Database));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!faults.is_away(Outage::Database));
        faults.begin_outage(Outage::Database, Duration::from_secs(60));
        faults.end_outages();
        assert!(!faults.is_away(Outage::Database));
        assert_eq!(faults.chaos_figures().database_outage_failures, 1);
    }
}
