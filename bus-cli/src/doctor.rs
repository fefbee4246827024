//! `shmbus doctor`: check the machine and the daemon, and say what to do.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bus_client::Bus;
use bus_daemon::names::SEGMENT_PREFIX;
use clap::Args;
use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

use crate::error::CliError;
use crate::util::human_bytes;

#[derive(Debug, Args)]
#[command(
    long_about = "Check what the bus needs and print one line per check, OK, WARN or FAIL, \
with what to do: /dev/shm size and free space, the open-file and locked-memory limits, the socket \
directory's owner and permissions, whether a daemon answers on the socket (and its pid), and \
shmbus files in /dev/shm that no process holds open (left by a crash).

Exits 0 when nothing FAILed, 1 otherwise."
)]
pub struct DoctorArgs {}

const SHM_DIR: &str = "/dev/shm";
/// Free /dev/shm below this is worth a warning: a default byte topic needs 4 MiB.
const SHM_LOW: u64 = 64 << 20;
const NOFILE_LOW: u64 = 1024;
const MEMLOCK_LOW: u64 = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Check {
    level: Level,
    what: String,
}

fn ok(what: impl Into<String>) -> Check {
    Check {
        level: Level::Ok,
        what: what.into(),
    }
}

fn warn(what: impl Into<String>) -> Check {
    Check {
        level: Level::Warn,
        what: what.into(),
    }
}

fn fail(what: impl Into<String>) -> Check {
    Check {
        level: Level::Fail,
        what: what.into(),
    }
}

pub fn run(socket: &Path, _args: &DoctorArgs) -> Result<(), CliError> {
    println!(
        "shmbus {} (protocol v{}), socket {}",
        env!("CARGO_PKG_VERSION"),
        bus_daemon::protocol::PROTOCOL_VERSION,
        socket.display()
    );
    let checks = [
        check_shm(),
        check_nofile(),
        check_memlock(),
        check_socket_dir(socket),
        check_daemon(socket),
        check_stale_files(),
    ];
    for c in &checks {
        let tag = match c.level {
            Level::Ok => "OK  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        println!("{tag}  {}", c.what);
    }
    let failed = checks.iter().filter(|c| c.level == Level::Fail).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "doctor: {failed} check(s) failed; see the FAIL lines above"
        )))
    }
}

fn check_shm() -> Check {
    match nix::sys::statvfs::statvfs(SHM_DIR) {
        Err(e) => fail(format!(
            "{SHM_DIR}: unavailable ({e}); shared memory needs a tmpfs there: `mount -t tmpfs -o size=1G tmpfs {SHM_DIR}`"
        )),
        Ok(s) => {
            let frag = s.fragment_size();
            let size = s.blocks().saturating_mul(frag);
            let free = s.blocks_available().saturating_mul(frag);
            let what = format!(
                "{SHM_DIR}: {} free of {}",
                human_bytes(free as f64),
                human_bytes(size as f64)
            );
            if free < SHM_LOW {
                warn(format!(
                    "{what}: low; each topic takes about capacity x slot size (a default byte topic 4 MiB). Enlarge it: `sudo mount -o remount,size=1G {SHM_DIR}` (Docker: --shm-size=1g)"
                ))
            } else {
                ok(what)
            }
        }
    }
}

fn limit(n: u64) -> String {
    if n == RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        n.to_string()
    }
}

fn check_nofile() -> Check {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Err(e) => warn(format!("open-file limit: cannot read it ({e})")),
        Ok((soft, hard)) => {
            let what = format!("open-file limit: {} (hard {})", limit(soft), limit(hard));
            if soft < NOFILE_LOW {
                warn(format!(
                    "{what}: low; the daemon holds a descriptor per topic and per client. Raise it: `ulimit -n {}` (systemd: LimitNOFILE=)",
                    hard.min(65536)
                ))
            } else {
                ok(what)
            }
        }
    }
}

fn check_memlock() -> Check {
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Err(e) => warn(format!("locked-memory limit: cannot read it ({e})")),
        Ok((soft, hard)) => {
            let shown = |n: u64| {
                if n == RLIM_INFINITY {
                    "unlimited".to_string()
                } else {
                    human_bytes(n as f64)
                }
            };
            let what = format!(
                "locked-memory limit: {} (hard {})",
                shown(soft),
                shown(hard)
            );
            if soft < MEMLOCK_LOW {
                warn(format!(
                    "{what}: low; applications that mlock their rings for steady latency will fail. Raise it: `ulimit -l unlimited` (systemd: LimitMEMLOCK=, /etc/security/limits.conf: memlock)"
                ))
            } else {
                ok(format!("{what}: enough to mlock rings for steady latency"))
            }
        }
    }
}

fn check_socket_dir(socket: &Path) -> Check {
    let dir = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return warn(format!(
                "socket directory {}: does not exist; `shmbusd` creates it (mode 0700) when it starts",
                dir.display()
            ))
        }
        Err(e) => {
            return fail(format!(
                "socket directory {}: cannot inspect it ({e}); check its parent's permissions or choose another --socket",
                dir.display()
            ))
        }
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o7777;
    let what = format!(
        "socket directory {}: mode {mode:04o}, owner uid {}",
        dir.display(),
        meta.uid()
    );
    if !meta.is_dir() {
        fail(format!(
            "{what}: not a directory; remove it or choose another --socket"
        ))
    } else if meta.uid() != uid {
        fail(format!(
            "{what}: owned by another user (we are uid {uid}); shmbusd refuses it. Use a directory of your own (--socket or SHMBUS_SOCKET)"
        ))
    } else if mode & 0o002 != 0 {
        fail(format!(
            "{what}: world-writable, anyone could replace the socket; shmbusd refuses it. Run `chmod o-w {}`",
            dir.display()
        ))
    } else if mode & 0o020 != 0 {
        warn(format!(
            "{what}: group-writable, group members could replace the socket. Run `chmod g-w {}`",
            dir.display()
        ))
    } else {
        ok(what)
    }
}

fn check_daemon(socket: &Path) -> Check {
    match Bus::connect_to(socket) {
        Ok(bus) => {
            let topics = match bus.list() {
                Ok(t) => format!(", {} topic(s) visible", t.len()),
                Err(e) => format!(", but listing topics failed: {e}"),
            };
            ok(format!(
                "daemon: shmbusd (pid {}) answers on {}{topics}",
                bus.daemon_pid(),
                socket.display()
            ))
        }
        Err(bus_client::Error::Connect { source, .. }) => {
            let stale = fs::symlink_metadata(socket).is_ok();
            let hint = if stale {
                " The socket file is there but no one listens: the daemon died; starting `shmbusd` replaces it."
            } else {
                ""
            };
            fail(format!(
                "daemon: none answers on {} ({source}).{hint} Start it with `shmbusd` (or `shmbusd --socket {}`)",
                socket.display(),
                socket.display()
            ))
        }
        Err(e) => fail(format!(
            "daemon: something answers on {} but the handshake failed: {e}",
            socket.display()
        )),
    }
}

/// shmbus files in /dev/shm that no process we can inspect has open or mapped.
fn check_stale_files() -> Check {
    let Ok(dir) = fs::read_dir(SHM_DIR) else {
        return ok(format!("stale files: {SHM_DIR} cannot be listed"));
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mut ours = Vec::new();
    let mut others = 0usize;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(SEGMENT_PREFIX) {
            continue;
        }
        match entry.metadata() {
            Ok(m) if m.uid() == uid => ours.push((name.to_string(), m.len())),
            _ => others += 1,
        }
    }
    let of_others = if others > 0 {
        format!(" ({others} of other users not checked)")
    } else {
        String::new()
    };
    if ours.is_empty() {
        return ok(format!(
            "stale files: no shmbus files of ours in {SHM_DIR}{of_others}"
        ));
    }
    let in_use = open_shm_files();
    let (stale, live): (Vec<_>, Vec<_>) = ours
        .into_iter()
        .partition(|(name, _)| !in_use.contains(&format!("{SHM_DIR}/{name}")));
    if stale.is_empty() {
        return ok(format!(
            "stale files: none; {} shmbus file(s) in {SHM_DIR}, all in use{of_others}",
            live.len()
        ));
    }
    let bytes: u64 = stale.iter().map(|(_, len)| len).sum();
    let mut names: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).take(5).collect();
    if stale.len() > names.len() {
        names.push("...");
    }
    warn(format!(
        "stale files: {} shmbus file(s) in {SHM_DIR} ({}) that no process holds open, left by a crash: {}. A restarted shmbusd removes its own; else `rm {SHM_DIR}/<name>`{of_others}",
        stale.len(),
        human_bytes(bytes as f64),
        names.join(", ")
    ))
}

/// Paths under /dev/shm that some process has open (`/proc/*/fd`) or mapped (`/proc/*/maps`).
fn open_shm_files() -> HashSet<String> {
    let mut set = HashSet::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return set;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let base = p.path();
        if let Ok(fds) = fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                if let Ok(target) = fs::read_link(fd.path()) {
                    if let Some(t) = target.to_str() {
                        if t.starts_with(SHM_DIR) {
                            set.insert(t.to_string());
                        }
                    }
                }
            }
        }
        if let Ok(maps) = fs::read_to_string(base.join("maps")) {
            for line in maps.lines() {
                if let Some(at) = line.find("/dev/shm/") {
                    set.insert(line[at..].trim_end().to_string());
                }
            }
        }
    }
    set
}
