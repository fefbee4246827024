//! Runs real cross-process benchmark runs through the `busbench` binary
//! (each participant is a separate process), with tiny iteration counts.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bus_benches::contenders::find;
use bus_benches::coordinator::{Cell, Config, Coordinator};
use bus_benches::protocol::{RoleReport, Timing};
use bus_benches::stats::Hist;
use bus_benches::transport::{
    ChildCtx, Contender, Endpoint, Prepared, Role, RunSpec, Scenario, Support,
};

const TINY: Timing = Timing {
    warmup_ms: 2,
    measure_ms: 20,
    min_warmup: 5,
    min_iters: 10,
    max_iters: 300,
    wake_interval_us: 200,
};

fn coordinator() -> Coordinator {
    Coordinator::new(Config {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_busbench")),
        timing: TINY,
        pin: true,
        timeout: Duration::from_secs(20),
    })
    .expect("coordinator")
}

fn cell(scenario: Scenario, payload_bytes: usize, senders: usize, receivers: usize) -> Cell {
    Cell {
        scenario,
        payload_bytes,
        senders,
        receivers,
    }
}

fn report(reports: &[(Role, RoleReport)], role: Role) -> &RoleReport {
    &reports
        .iter()
        .find(|(r, _)| *r == role)
        .unwrap_or_else(|| panic!("no report from {role}"))
        .1
}

#[test]
fn pipe_and_raw_floor_pingpong_record_samples() {
    let coord = coordinator();
    for name in ["pipe", "raw_floor"] {
        let contender = find(name).expect("registered");
        let spec = coord.spec(&cell(Scenario::PingPong, 8, 1, 1));
        assert_eq!(contender.supports(&spec), Support::Yes);
        let reports = coord.run(contender.as_ref(), &spec).expect(name);
        let ping = report(&reports, Role::Ping);
        let hist = Hist::from_pairs(&ping.hist);
        let s = hist.summary().expect("samples recorded");
        assert!(s.samples >= TINY.min_iters, "{name}: {s:?}");
        assert!(s.p50 > 0 && s.p50 <= s.max, "{name}: {s:?}");
        assert_eq!(ping.measured, s.samples);
        assert!(ping.window_ns > 0);
        // The pong echoed every warm-up and measured message.
        assert_eq!(report(&reports, Role::Pong).total, ping.total, "{name}");
        assert!(
            !spec.rendezvous.dir.exists(),
            "{name}: rendezvous left behind"
        );
    }
}

#[test]
fn one_way_scenarios_deliver_everything_and_clean_up() {
    let coord = coordinator();
    let runs = [
        ("fifo", cell(Scenario::PingPong, 4096 + 8, 1, 1)),
        ("unix_stream", cell(Scenario::Throughput, 64, 1, 1)),
        ("unix_seqpacket", cell(Scenario::FanOut, 64, 1, 2)),
        ("mqueue", cell(Scenario::FanIn, 64, 3, 1)),
        ("tcp_loopback", cell(Scenario::Wakeup, 64, 1, 1)),
        ("spsc_floor", cell(Scenario::Throughput, 64, 1, 1)),
        ("spsc_floor", cell(Scenario::PingPong, 1024, 1, 1)),
        ("shm_sem", cell(Scenario::Throughput, 1024, 1, 1)),
        ("shm_sem", cell(Scenario::Wakeup, 64, 1, 1)),
        ("signal", cell(Scenario::Throughput, 64, 1, 1)),
        ("signal", cell(Scenario::Wakeup, 64, 1, 1)),
    ];
    for (name, cell) in runs {
        let contender = find(name).expect("registered");
        let spec = coord.spec(&cell);
        let reports = coord
            .run(contender.as_ref(), &spec)
            .unwrap_or_else(|e| panic!("{name} {:?}: {e}", cell.scenario));
        assert_eq!(reports.len(), spec.roles().len());
        let sent: u64 = reports
            .iter()
            .filter(|(r, _)| matches!(r, Role::Sender { .. }))
            .map(|(_, r)| r.total)
            .sum();
        for (role, rep) in &reports {
            if let Role::Receiver { .. } = role {
                let expected = if cell.scenario == Scenario::FanOut {
                    report(&reports, Role::Sender { index: 0 }).total
                } else {
                    sent
                };
                assert_eq!(rep.total, expected, "{name} {role}");
                assert_eq!(rep.lost, 0, "{name} {role}");
            }
        }
        if cell.scenario == Scenario::Wakeup {
            let rx = report(&reports, Role::Receiver { index: 0 });
            assert!(Hist::from_pairs(&rx.hist).len() >= TINY.min_iters);
        }
        assert!(
            !spec.rendezvous.dir.exists(),
            "{name}: rendezvous left behind"
        );
        if name == "mqueue" {
            let queue = format!("/{}-q0", spec.rendezvous.tag);
            let reopened = nix::mqueue::mq_open(
                queue.as_str(),
                nix::mqueue::MQ_OFlag::O_RDONLY,
                nix::sys::stat::Mode::empty(),
                None,
            );
            assert_eq!(
                reopened.err(),
                Some(nix::errno::Errno::ENOENT),
                "{queue} left behind"
            );
        }
    }
}

/// A contender the participants cannot find in the registry: every
/// participant fails in start-up, which must not leak anything.
struct Broken;

impl Contender for Broken {
    fn name(&self) -> &'static str {
        "broken_for_test"
    }
    fn description(&self) -> &'static str {
        "fails in every participant"
    }
    fn supports(&self, _spec: &RunSpec) -> Support {
        Support::Yes
    }
    fn prepare(&self, spec: &RunSpec) -> io::Result<Prepared> {
        let mut p = Prepared::new();
        let marker = std::env::temp_dir().join(format!("{}-marker", spec.rendezvous.tag));
        std::fs::write(&marker, b"x")?;
        p.on_cleanup(move || {
            let _ = std::fs::remove_file(&marker);
        });
        Ok(p)
    }
    fn connect(&self, _: &RunSpec, _: Role, _: &mut ChildCtx) -> io::Result<Box<dyn Endpoint>> {
        unreachable!("the participants never find this contender")
    }
}

#[test]
fn a_failing_run_reports_the_error_and_cleans_up() {
    let coord = coordinator();
    let spec = coord.spec(&cell(Scenario::PingPong, 64, 1, 1));
    let err = coord.run(&Broken, &spec).expect_err("must fail");
    assert!(err.to_string().contains("unknown contender"), "{err}");
    assert!(!spec.rendezvous.dir.exists());
    let marker = std::env::temp_dir().join(format!("{}-marker", spec.rendezvous.tag));
    assert!(!marker.exists(), "prepared cleanup did not run");
}

#[test]
fn a_run_past_its_timeout_is_killed_and_cleaned_up() {
    let coord = Coordinator::new(Config {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_busbench")),
        timing: Timing {
            measure_ms: 60_000,
            max_iters: u64::MAX,
            ..TINY
        },
        pin: false,
        timeout: Duration::from_millis(700),
    })
    .expect("coordinator");
    let contender = find("unix_stream").expect("registered");
    let spec = coord.spec(&cell(Scenario::PingPong, 64, 1, 1));
    let started = std::time::Instant::now();
    let err = coord
        .run(contender.as_ref(), &spec)
        .expect_err("must time out");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!spec.rendezvous.dir.exists());
}

/// The issue 12 scenarios: every opt-in contender runs, the paced ones deliver everything in
/// order and record a wake-up latency, the `waiters` sender records batches.
#[test]
fn issue12_scenarios_run_their_contenders() {
    let coord = coordinator();
    let runs = [
        ("shmbus_async_ct", Scenario::AsyncWake),
        ("shmbus_async_mt", Scenario::AsyncWake),
        ("tokio_unix_ct", Scenario::AsyncWake),
        ("tokio_unix_mt", Scenario::AsyncWake),
        ("shmbus_block", Scenario::AsyncWake),
        ("shmbus_waitset8", Scenario::WaitSet8),
        ("shmbus_waitset1", Scenario::WaitSet8),
        ("shmbus_waiters0", Scenario::Waiters),
        ("shmbus_waiters8", Scenario::Waiters),
    ];
    for (name, scenario) in runs {
        let contender = find(name).expect("registered");
        assert!(contender.runs(scenario), "{name} opts in to {scenario}");
        let spec = coord.spec(&cell(scenario, 64, 1, 1));
        assert_eq!(contender.supports(&spec), Support::Yes, "{name}");
        let reports = coord
            .run(contender.as_ref(), &spec)
            .unwrap_or_else(|e| panic!("{name} {scenario}: {e}"));
        let tx = report(&reports, Role::Sender { index: 0 });
        let rx = report(&reports, Role::Receiver { index: 0 });
        if scenario == Scenario::Waiters {
            assert!(tx.measured >= TINY.min_iters, "{name}: {}", tx.measured);
            assert!(!Hist::from_pairs(&tx.hist).is_empty(), "{name}");
        } else {
            assert_eq!(rx.total, tx.total, "{name}");
            assert_eq!(rx.lost, 0, "{name}");
            assert!(Hist::from_pairs(&rx.hist).len() >= TINY.min_iters, "{name}");
        }
        assert!(
            !spec.rendezvous.dir.exists(),
            "{name}: rendezvous left behind"
        );
    }
    // The other contenders do not take part in them.
    for name in ["pipe", "shmbus_busy", "raw_floor"] {
        let contender = find(name).expect("registered");
        for scenario in [Scenario::AsyncWake, Scenario::WaitSet8, Scenario::Waiters] {
            assert!(!contender.runs(scenario), "{name} {scenario}");
        }
    }
}
