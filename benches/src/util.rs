//! Clocks and CPU affinity.

use std::io;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;

use crate::error::Context;

fn clock_ns(id: ClockId) -> u64 {
    // clock_gettime only fails for an unsupported clock id or a bad pointer;
    // both clocks used here exist on every Linux since 2.6.12 and nix passes
    // a valid pointer, so a failure is a broken system, not an ordinary error.
    let ts =
        clock_gettime(id).expect("CLOCK_MONOTONIC/CLOCK_PROCESS_CPUTIME_ID are always available");
    // tv_sec and tv_nsec are non-negative for these clocks.
    (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64
}

/// `CLOCK_MONOTONIC` in nanoseconds. All processes of the machine share this
/// clock, so a timestamp taken by a sender can be compared by a receiver.
#[inline]
pub fn monotonic_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// CPU time consumed by this process (all threads), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    clock_ns(ClockId::CLOCK_PROCESS_CPUTIME_ID)
}

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
    Ok((0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect())
}

/// Restricts the calling process to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} is out of range"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to CPU {cpu}"))
}

/// Which CPU each participant of a run is pinned to: the hub (index 0) gets
/// the first allowed CPU, the others share the remaining ones round-robin.
/// Returns all `None` when fewer than two CPUs are available (pinning two
/// busy-polling processes onto one CPU would only hurt).
pub fn cpu_plan(allowed: &[usize], participants: usize) -> Vec<Option<usize>> {
    if allowed.len() < 2 {
        return vec![None; participants];
    }
    (0..participants)
        .map(|i| {
            if i == 0 {
                Some(allowed[0])
            } else {
                Some(allowed[1 + (i - 1) % (allowed.len() - 1)])
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_plan_puts_hub_alone_on_first_cpu() {
        assert_eq!(cpu_plan(&[0, 1], 3), vec![Some(0), Some(1), Some(1)]);
        assert_eq!(
            cpu_plan(&[2, 5, 7], 4),
            vec![Some(2), Some(5), Some(7), Some(5)]
        );
        assert_eq!(cpu_plan(&[0], 2), vec![None, None]);
    }

    #[test]
    fn clocks_advance() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
        assert!(process_cpu_ns() > 0);
        assert!(!allowed_cpus().unwrap().is_empty());
    }
}
