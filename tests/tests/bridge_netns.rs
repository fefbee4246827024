//! The bridge between two network namespaces joined by a veth pair: as close to two machines
//! as one box gets. Each bridge runs in its own namespace (its only interfaces: `lo` and one
//! end of the veth pair, addressed in the documentation range 192.0.2.0/24), so the only way
//! between them is the veth link. The daemons stay in the test's namespace (Unix sockets with
//! a path and memfds do not belong to a network namespace).
//!
//! Needs root and `ip` (iproute2; `.ci/run` installs it). Without either the test prints a
//! NOTICE and returns; with both, any failure fails.

use std::process::Command;
use std::time::{Duration, Instant};

use bus_tests::bridge::Bridge;
use bus_tests::{Checker, Daemon, TestMsg};

const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");

/// Two namespaces and the veth pair between them; deleted on drop (deleting a namespace
/// deletes its end of the pair, and with it the pair).
struct Netns {
    names: [String; 2],
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// `a` gets 192.0.2.1, `b` 192.0.2.2.
    fn new() -> Result<Netns, String> {
        let id = std::process::id() % 100_000;
        let ns = Netns {
            names: [format!("shmbus-it-a{id}"), format!("shmbus-it-b{id}")],
        };
        let [a, b] = &ns.names;
        let (va, vb) = (format!("shba{id}"), format!("shbb{id}"));
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", a])?;
        ip(&["link", "set", &vb, "netns", b])?;
        for (n, v, addr) in [(a, &va, "192.0.2.1/24"), (b, &vb, "192.0.2.2/24")] {
            ip(&["-n", n, "addr", "add", addr, "dev", v])?;
            ip(&["-n", n, "link", "set", v, "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

#[test]
fn bridges_in_two_network_namespaces_carry_a_topic_over_veth_and_survive_a_kill() {
    // Skip only where it cannot run: not root, or no `ip`. Where it can, a failure to set
    // the namespaces up is a failure.
    let have_ip = Command::new("ip").arg("-V").output().is_ok();
    if !nix::unistd::Uid::effective().is_root() || !have_ip {
        println!("NOTICE: skipping the network-namespace bridge test (needs root and iproute2)");
        return;
    }
    let ns = Netns::new().unwrap_or_else(|e| panic!("setting up the namespaces: {e}"));
    let topic = "it/netns/odom";
    let (a, b) = (Daemon::start(PEER, &[]), Daemon::start(PEER, &[]));
    let (bus_a, bus_b) = (a.bus(), b.bus());
    let mut publisher = bus_a
        .publisher::<TestMsg>(topic)
        .capacity(256)
        .create()
        .unwrap();
    let [ns_a, ns_b] = &ns.names;
    let mut bridge_a = Bridge::start_in(
        &["ip", "netns", "exec", ns_a],
        PEER,
        &a,
        "tcp/192.0.2.1:7447",
        &["--export", "it/netns/**"],
    );
    let mut bridge_b = Bridge::start_in(
        &["ip", "netns", "exec", ns_b],
        PEER,
        &b,
        "tcp/192.0.2.2:7447",
        &["--connect", "tcp/192.0.2.1:7447", "--import", "it/netns/**"],
    );
    bridge_a.wait_exported_and_matched(topic);
    bridge_b.wait_imported(topic);
    let mut sub = bus_b.subscriber::<TestMsg>(topic).open().unwrap();

    // 1,000 lossless messages, complete and in order.
    let mut checker = Checker::new(true);
    std::thread::scope(|s| {
        let rx = s.spawn(|| {
            for _ in 0..1_000 {
                let m = sub
                    .recv_timeout(Duration::from_secs(30))
                    .expect("a message");
                checker.check(&m, m.sequence());
            }
        });
        for i in 0..1_000 {
            publisher.publish(&TestMsg::new(1, i)).unwrap();
        }
        rx.join().expect("receiver");
    });
    assert!(checker.errors.is_empty(), "{:?}", checker.errors);
    assert_eq!(checker.count.get(&1), Some(&1_000));

    // kill -9 the exporting bridge; the publisher goes on; after the restart in its
    // namespace, traffic resumes within 5 s.
    bridge_a.kill();
    for i in 1_000..1_100 {
        publisher.publish(&TestMsg::new(1, i)).unwrap();
    }
    let restarted = Instant::now();
    bridge_a.restart();
    let mut seq = 1_100;
    loop {
        publisher.publish(&TestMsg::new(1, seq)).unwrap();
        seq += 1;
        if let Ok(m) = sub.recv_timeout(Duration::from_millis(10)) {
            assert!(m.is_intact() && m.seq >= 1_000, "{:?}", *m);
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "no traffic within 5 s of the restart"
        );
    }
    drop(bridge_b);
    drop(bridge_a);
}
