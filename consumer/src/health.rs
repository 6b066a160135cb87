//! What `/readyz` reports: ready while the queue consumer is open and neither the sink nor the
//! queue is failing. The pipeline updates it; the admin listener reads it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct Health {
    consumer_open: AtomicBool,
    /// The last sink error, until a sink operation succeeds again.
    sink_failure: Mutex<Option<String>>,
    /// The last queue error (poll or commit), until a queue operation succeeds again.
    queue_failure: Mutex<Option<String>>,
}

impl Health {
    pub fn set_consumer_open(&self, open: bool) {
        self.consumer_open.store(open, Ordering::Release);
    }

    pub fn sink_failed(&self, reason: impl Into<String>) {
        set(&self.sink_failure, Some(reason.into()));
    }

    pub fn sink_recovered(&self) {
        set(&self.sink_failure, None);
    }

    pub fn queue_failed(&self, reason: impl Into<String>) {
        set(&self.queue_failure, Some(reason.into()));
    }

    pub fn queue_recovered(&self) {
        set(&self.queue_failure, None);
    }

    /// `Ok` when the consumer can do its work; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.consumer_open.load(Ordering::Acquire) {
            return Err("the queue consumer is not open".to_owned());
        }
        if let Some(reason) = get(&self.sink_failure) {
            return Err(format!("the sink is failing: {reason}"));
        }
        if let Some(reason) = get(&self.queue_failure) {
            return Err(format!("the queue is failing: {reason}"));
        }
        Ok(())
    }
}

// A panic elsewhere while holding the lock leaves a plain Option behind, still meaningful.
fn set(slot: &Mutex<Option<String>>, value: Option<String>) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = value;
}

fn get(slot: &Mutex<Option<String>>) -> Option<String> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_open_and_nothing_fails() {
        let health = Health::default();
        assert!(
            health.readiness().is_err(),
            "not ready before the consumer opens"
        );
        health.set_consumer_open(true);
        assert_eq!(health.readiness(), Ok(()));

        health.sink_failed("disk full");
        let reason = health
            .readiness()
            .expect_err("not ready while the sink fails");
        assert!(reason.contains("disk full"), "{reason}");
        health.sink_recovered();
        assert_eq!(health.readiness(), Ok(()));

        health.queue_failed("I/O error");
        assert!(health.readiness().is_err());
        health.queue_recovered();
        health.set_consumer_open(false);
        assert!(health.readiness().is_err(), "not ready once closing");
    }
}
