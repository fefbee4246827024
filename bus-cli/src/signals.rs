//! Ctrl-C and SIGTERM as a flag, without a signal handler: the signals are blocked in every
//! thread and one thread takes them with `sigwait`. A first signal asks the work to stop and
//! finish cleanly; a second one exits at once (code 130).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};

use crate::error::CliError;

/// Set once SIGINT or SIGTERM arrived (or the work itself asked to stop).
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Ask every thread that watches this flag to stop.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Block SIGINT and SIGTERM (and SIGXFSZ, so that a write past a file-size limit fails with
/// `EFBIG` instead of killing the process) in the calling thread, which every thread it spawns
/// inherits, and start the thread that turns them into the returned flag. Call before spawning
/// any thread. `say` is printed on the first signal.
pub fn on_stop(say: &'static str) -> Result<StopFlag, CliError> {
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGINT);
    blocked.add(Signal::SIGTERM);
    blocked.add(Signal::SIGXFSZ);
    blocked
        .thread_block()
        .map_err(|e| CliError::failure(format!("blocking signals: {e}")))?;
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGINT);
    waited.add(Signal::SIGTERM);
    let stop = StopFlag::default();
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first = true;
            while let Ok(signal) = waited.wait() {
                if first {
                    eprintln!("shmbus: {signal}: {say} (again to quit at once)");
                    flag.set();
                    first = false;
                } else {
                    std::process::exit(130);
                }
            }
        })
        .map_err(|e| CliError::failure(format!("starting the signal thread: {e}")))?;
    Ok(stop)
}
