//! Presence for Python: `pub.subscriber_count`, `pub.wait_for_subscribers(n, timeout=)`,
//! `sub.publisher_count`, `sub.wait_for_publishers(n, timeout=)`. The counts come from the
//! topic's shared memory (bus-client's `Presence`, kept apart from the port, so they can be
//! read while a sample or a loan is held or another thread waits in the port).

use std::time::{Duration, Instant};

use bus_client::{Presence, PresenceError};
use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;

use crate::errors::ClosedError;
use crate::subscriber::SLICE;

/// Wait (with the GIL released, in slices with a look for Ctrl-C between them) until at least
/// `n` peers are attached; `timeout` in seconds, None for as long as it takes.
pub(crate) fn wait_for(
    py: Python<'_>,
    presence: &Presence,
    n: usize,
    timeout: Option<f64>,
    what: &str,
) -> PyResult<usize> {
    let deadline = match timeout {
        Some(t) if t.is_finite() && t >= 0.0 => {
            Some(Instant::now() + Duration::from_secs_f64(t.min(1e9)))
        }
        Some(t) => {
            return Err(PyValueError::new_err(format!(
                "timeout {t} is not a number of seconds >= 0"
            )))
        }
        None => None,
    };
    loop {
        let slice = deadline.map_or(SLICE, |d| {
            d.saturating_duration_since(Instant::now()).min(SLICE)
        });
        match py.detach(|| presence.wait_for(n, Some(slice))) {
            Ok(count) => return Ok(count),
            Err(PresenceError::Timeout { count }) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(PyTimeoutError::new_err(format!(
                        "{count} {what} attached, not {n}, within {} s",
                        timeout.unwrap_or(0.0)
                    )));
                }
                py.check_signals()?;
            }
            Err(e) => return Err(ClosedError::new_err(e.to_string())),
        }
    }
}
