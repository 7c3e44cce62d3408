//! Fault injection for tests: make the next events a component's handler receives run
//! with a failing database (`spin:sqlite` on the Spin flavour, `wasmcloud:postgres` on the
//! wasmCloud lattice).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The path whose requests [`Faults::fail_event_handler`] targets.
const EVENT_HANDLER_PATH: &str = "/internal/events";

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
}

impl Faults {
    fn rules(&self) -> MutexGuard<'_, HashMap<String, Rule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// On Spin, the next `times` requests to `component` whose path is
    /// `/internal/events` run with every `spin:sqlite` `execute` of that instance failing
    /// with `error::io("injected fault")`; on the wasmCloud lattice, the next `times`
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

    /// Stops injecting faults into every component. Counts reported by
    /// [`Faults::injected_count`] are kept.
    pub fn clear(&self) {
        for rule in self.rules().values_mut() {
            rule.active = false;
        }
    }

    /// How many requests to `component` have been run with injected faults so far.
    pub fn injected_count(&self, component: &str) -> u32 {
        self.rules().get(component).map_or(0, |rule| rule.injected)
    }

    /// Decides, as a request to `component` for `path` arrives, whether its instance
    /// gets a failing SQLite; consumes one unit of the budget if so.
    pub(crate) fn take(&self, component: &str, path: &str) -> bool {
        path == EVENT_HANDLER_PATH && self.take_message(component)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_and_clears() {
        let faults = Faults::default();
        assert!(!faults.take("orders", EVENT_HANDLER_PATH));
        faults.fail_event_handler("orders", Some(2));
        assert!(!faults.take("orders", "/other"));
        assert!(!faults.take("stock", EVENT_HANDLER_PATH));
        assert!(faults.take("orders", EVENT_HANDLER_PATH));
        assert!(faults.take("orders", EVENT_HANDLER_PATH));
        assert!(!faults.take("orders", EVENT_HANDLER_PATH));
        assert_eq!(faults.injected_count("orders"), 2);

        faults.fail_event_handler("orders", None);
        for _ in 0..5 {
            assert!(faults.take("orders", EVENT_HANDLER_PATH));
        }
        faults.clear();
        assert!(!faults.take("orders", EVENT_HANDLER_PATH));
        assert_eq!(faults.injected_count("orders"), 7);
        assert_eq!(faults.injected_count("stock"), 0);
    }
}
