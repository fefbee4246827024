//! # bus-python: the Python module `shmbus`
//!
//! PyO3 bindings over `bus-client`'s raw ports (no second implementation of the protocol or
//! the ring), built into a wheel by maturin (`pip install ./bus-python`).
//!
//! * `bus`: `shmbus.Bus` (`connect`, `embedded`, `publisher`, `subscriber`).
//! * `publisher`: `Publisher` (`publish`, `loan`) and `Loan` (a writable view of a slot).
//! * `subscriber`: `Subscriber` (`recv`, iteration) and `Sample` (a read-only, zero-copy
//!   view of a slot); its module doc explains how long a sample lives.
//! * `errors`: one exception per kind of failure; `exports`: buffers shared with Python.
//!
//! The GIL is released whenever a call may wait. `docs/python.md` is the guide.

#![deny(unsafe_op_in_unsafe_fn)]

mod bus;
mod errors;
mod exports;
mod presence;
mod publisher;
mod subscriber;

use pyo3::prelude::*;

/// shmbus: a lock-free shared-memory message bus; zero-copy publish and subscribe.
#[pymodule]
fn _shmbus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<bus::Bus>()?;
    m.add_function(wrap_pyfunction!(bus::remove_embedded_files, m)?)?;
    m.add_class::<publisher::Publisher>()?;
    m.add_class::<publisher::Loan>()?;
    m.add_class::<subscriber::Subscriber>()?;
    m.add_class::<subscriber::Sample>()?;
    errors::register(m)?;
    Ok(())
}
