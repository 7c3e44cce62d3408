//! Bounds on work in flight across instances. Spin and wasmCloud make a fresh instance for
//! every request and share no memory between them, so "how many are doing this now" is
//! counted in the key-value store: two counters that only ever count up (wasmCloud's draft
//! `increment` takes no negative delta), the slots taken and the slots given back. Taking
//! a slot counts one taken and reads the given back (an increment by 0); more in flight
//! than the limit gives the slot straight back and refuses the work.
//!
//! Counters live in fixed windows of [`WINDOW_MS`]: a slot whose instance died before
//! giving it back (a trap) is forgotten when its window ends, so a leak never outlives one
//! window. Just after a window turns, the slots still held from the last one are not
//! counted: for that moment at most twice the limit run.

use crate::ports::{KeyValue, PortError};

/// How long one counting window lasts, in milliseconds.
pub const WINDOW_MS: i64 = 10_000;

/// One kind of work of which at most `limit` run at once.
pub struct Slots<'a> {
    kv: &'a dyn KeyValue,
    name: &'static str,
    limit: i64,
}

/// A slot taken by [`Slots::take`]; give it back with [`Slot::release`].
#[derive(Debug, PartialEq, Eq)]
pub struct Slot {
    key: String,
}

impl<'a> Slots<'a> {
    /// At most `limit` of the work called `name` at once, counted in `kv`. A limit of 0 or
    /// less turns the bound off.
    pub fn new(kv: &'a dyn KeyValue, name: &'static str, limit: i64) -> Self {
        Slots { kv, name, limit }
    }

    /// Takes a slot at `now_ms`: `Ok(Some)` when fewer than the limit were in flight (or
    /// the bound is off, then without counting), `Ok(None)` when all are taken, `Err` when
    /// the store failed.
    pub fn take(&self, now_ms: i64) -> Result<Option<Slot>, PortError> {
        if self.limit <= 0 {
            return Ok(Some(Slot { key: String::new() }));
        }
        let window = now_ms.div_euclid(WINDOW_MS);
        let key = self.key(window);
        let taken = self.kv.increment(&format!("{key}_taken"), 1)?;
        if taken == 1 {
            // The window's first slot: two windows back, every slot has been given back
            // or forgotten.
            let old = self.key(window - 2);
            let _ = self.kv.delete(&format!("{old}_taken"));
            let _ = self.kv.delete(&format!("{old}_given"));
        }
        let slot = Slot { key };
        let given = match self.kv.increment(&format!("{}_given", slot.key), 0) {
            Ok(given) => given,
            Err(e) => {
                // Counted as taken but not handed out: give it back, or it stays taken
                // until its window ends.
                slot.release(self.kv);
                return Err(e);
            }
        };
        if taken - given > self.limit {
            slot.release(self.kv);
            return Ok(None);
        }
        Ok(Some(slot))
    }

    /// The counters' key of `window`, without its `_taken` / `_given` suffix. Only
    /// characters every store accepts in a key (NATS key-value allows `[-/_=.a-zA-Z0-9]`).
    fn key(&self, window: i64) -> String {
        format!("slots_{}_{window}", self.name)
    }
}

impl Slot {
    /// Gives the slot back to the store `kv` it was taken in (no limit needed). A store
    /// that fails keeps it taken until its window ends.
    pub fn release(self, kv: &dyn KeyValue) {
        if !self.key.is_empty() {
            let _ = kv.increment(&format!("{}_given", self.key), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// A key-value store in memory that counts up only, as wasmCloud's does.
    #[derive(Default)]
    struct MemoryKeyValue(RefCell<HashMap<String, i64>>);

    impl KeyValue for MemoryKeyValue {
        fn increment(&self, key: &str, delta: i64) -> Result<i64, PortError> {
            assert!(delta >= 0, "counted down");
            let mut map = self.0.borrow_mut();
            let value = map.entry(key.to_owned()).or_default();
            *value += delta;
            Ok(*value)
        }

        fn delete(&self, key: &str) -> Result<(), PortError> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
    }

    #[test]
    fn refuses_beyond_the_limit_until_a_slot_is_given_back() {
        let kv = MemoryKeyValue::default();
        let slots = Slots::new(&kv, "work", 2);
        let first = slots.take(0).unwrap().unwrap();
        let _second = slots.take(1).unwrap().unwrap();
        assert_eq!(slots.take(2).unwrap(), None);
        assert_eq!(
            slots.take(3).unwrap(),
            None,
            "a refusal gives its count back"
        );
        first.release(&kv);
        assert!(slots.take(4).unwrap().is_some());
        let counters = kv.0.borrow();
        assert_eq!(
            counters["slots_work_0_taken"] - counters["slots_work_0_given"],
            2
        );
    }

    #[test]
    fn a_slot_never_given_back_is_forgotten_when_its_window_ends() {
        let kv = MemoryKeyValue::default();
        let slots = Slots::new(&kv, "work", 1);
        let _leaked = slots.take(0).unwrap().unwrap();
        assert_eq!(slots.take(WINDOW_MS - 1).unwrap(), None);
        let next = slots.take(WINDOW_MS).unwrap().unwrap();
        next.release(&kv);
        let _ = slots.take(2 * WINDOW_MS).unwrap().unwrap();
        assert!(
            !kv.0
                .borrow()
                .keys()
                .any(|key| key.starts_with("slots_work_0_")),
            "the counter two windows back is removed"
        );
    }

    /// A store whose increments of the given-back counter by 0 fail (keyvalue-nats gives
    /// up after five compare-and-swap attempts on a busy key).
    struct FailingReads(MemoryKeyValue);

    impl KeyValue for FailingReads {
        fn increment(&self, key: &str, delta: i64) -> Result<i64, PortError> {
            if delta == 0 {
                return Err(PortError("busy".into()));
            }
            self.0.increment(key, delta)
        }

        fn delete(&self, key: &str) -> Result<(), PortError> {
            self.0.delete(key)
        }
    }

    #[test]
    fn a_slot_counted_but_not_handed_out_is_given_back() {
        let kv = FailingReads(MemoryKeyValue::default());
        let slots = Slots::new(&kv, "work", 1);
        assert!(slots.take(0).is_err());
        let counters = kv.0.0.borrow();
        assert_eq!(
            counters["slots_work_0_taken"],
            counters["slots_work_0_given"]
        );
    }

    #[test]
    fn a_limit_of_zero_turns_the_bound_off() {
        let kv = MemoryKeyValue::default();
        let slots = Slots::new(&kv, "work", 0);
        for at in 0..5 {
            assert!(slots.take(at).unwrap().is_some());
        }
        assert!(kv.0.borrow().is_empty(), "nothing is counted");
    }
}
