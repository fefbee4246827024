//! `shmbus doctor`: check the machine and the daemon, and say what to do.
//!
//! (About 690 lines of checks and 60 of unit tests: each check is small and independent, and
//! one file keeps the list of what the doctor looks at in one place.)

use std::collections::HashSet;
use std::fs;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use bus_client::Bus;
use bus_proto::segment::{sealed_file, seals, SealStep, SEALS};
use clap::Args;
use nix::libc;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
use nix::sys::uio::pread;

use crate::error::CliError;
use crate::util::human_bytes;
use bus_client::DaemonStatus;

#[derive(Debug, Args)]
#[command(
    long_about = "Check what the bus needs and print one line per check, OK, WARN or FAIL, \
with what to do: that sealed shared memory works (a small memfd_create file is reserved, sealed, \
mapped shared and written, as shmbusd does for every topic; segments are such anonymous memory \
files, never files in /dev/shm, so the size of /dev/shm does not matter), the memory limit of \
this process's cgroup (topic memory counts against the limit of shmbusd's cgroup), the open-file \
and locked-memory limits, the socket directory's owner and permissions, whether a daemon answers \
on the socket (and its pid), and shmbus files in /dev/shm that no process holds open (only an \
older shmbus version made files there; such files are safe to remove).

Exits 0 when nothing FAILed, 1 otherwise."
)]
pub struct DoctorArgs {}

const SHM_DIR: &str = "/dev/shm";
/// Files in /dev/shm whose names start with this were made by an older shmbus, whose segments
/// were named `shmbus-<uid>-<topic>-<instance>` there. This version never makes any.
const OLD_SEGMENT_PREFIX: &str = "shmbus-";
/// The size of the sealed memory file the shared-memory check makes.
const PROBE_LEN: usize = 64 << 10;
/// A cgroup memory limit below this is worth a warning: topic memory counts against it.
const MEMORY_MAX_LOW: u64 = 256 << 20;
/// cgroup v1 writes "no limit" as a huge number (about 2^63 rounded down to a page).
const CGROUP_V1_UNLIMITED: u64 = 1 << 62;
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
        bus_proto::protocol::PROTOCOL_VERSION,
        socket.display()
    );
    let mut checks = vec![
        check_shared_memory(),
        check_memory_limit(),
        check_nofile(),
        check_memlock(),
        check_socket_dir(socket),
    ];
    checks.extend(check_daemon(socket));
    checks.push(check_stale_files());
    checks.push(check_embedded_leftovers(socket));
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

fn check_shared_memory() -> Check {
    match probe_sealed_memory() {
        Ok(()) => ok(format!(
            "shared memory: sealed memory files work; segments do not use {SHM_DIR} \
             (memfd_create, fallocate of {}, seals, a shared read-write mapping)",
            human_bytes(PROBE_LEN as f64)
        )),
        Err(e) => fail(format!(
            "shared memory: sealed memory files do not work: {e}. shmbusd keeps every topic \
             in such files, so it cannot create topics here"
        )),
    }
}

/// Do what shmbusd does for every topic segment, with the very same code
/// (`bus_proto::segment::sealed_file`), on a small scale: a memory file that allows sealing,
/// mode 0600, fallocated, sealed against shrinking and growing; then map it shared read-write,
/// write it and read it back. The file is freed when this returns.
fn probe_sealed_memory() -> Result<(), String> {
    let seccomp = "(Docker: --security-opt seccomp=<profile>, systemd: SystemCallFilter=)";
    let fd = sealed_file("shmbus-doctor", PROBE_LEN as u64).map_err(|e| {
        let errno = e.source.raw_os_error();
        let hint = match (e.step, errno) {
            (SealStep::Create, Some(libc::ENOSYS)) => format!(
                "this kernel lacks memfd_create (Linux 3.17 or newer has it), or a seccomp \
                 profile blocks it; update the kernel or allow memfd_create in the profile \
                 {seccomp}"
            ),
            (SealStep::Create, Some(libc::EPERM | libc::EACCES)) => format!(
                "a seccomp profile or security module blocks memfd_create; allow it {seccomp}"
            ),
            (SealStep::Create, Some(libc::EINVAL)) => "this kernel does not know \
                 MFD_ALLOW_SEALING (Linux 3.17 or newer has it); update the kernel"
                .to_string(),
            (SealStep::Create, Some(libc::EMFILE | libc::ENFILE)) => {
                "out of file descriptors; raise the open-file limit (`ulimit -n`)".to_string()
            }
            (SealStep::Reserve(_), Some(libc::ENOSPC | libc::ENOMEM)) => {
                "no memory left, on the machine or under this cgroup's memory limit; free memory \
                 or raise the limit (systemd: MemoryMax=, Docker: --memory)"
                    .to_string()
            }
            (SealStep::Reserve(_), Some(libc::ENOSYS | libc::EPERM)) => {
                format!("a seccomp profile blocks fallocate; allow it {seccomp}")
            }
            (SealStep::Reserve(_), Some(libc::EOPNOTSUPP)) => {
                "this kernel cannot reserve memory-file pages; update the kernel".to_string()
            }
            (SealStep::Seal, Some(libc::EINVAL)) => "this kernel does not support file sealing \
                 (Linux 3.17 or newer does); update the kernel"
                .to_string(),
            (SealStep::Seal, Some(libc::EPERM | libc::ENOSYS)) => format!(
                "sealing is refused, perhaps by a seccomp profile filtering fcntl {seccomp}"
            ),
            _ => String::new(),
        };
        if hint.is_empty() {
            e.to_string()
        } else {
            format!("{e}: {hint}")
        }
    })?;
    match seals(fd.as_fd()) {
        Ok(s) if s.contains(SEALS) => {}
        got => {
            return Err(format!(
                "the seals did not hold (asked for {:#x}, the file has {got:?}); a segment \
                 could be shrunk under its readers. Update the kernel",
                SEALS.bits()
            ))
        }
    }
    let len = NonZeroUsize::new(PROBE_LEN).ok_or("empty probe")?;
    // SAFETY: a new mapping (the kernel picks the address, so it overlaps nothing of ours) of
    // PROBE_LEN bytes of a descriptor we own that is PROBE_LEN bytes long and sealed against
    // shrinking, so every page of the mapping stays backed while it exists.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd.as_fd(),
            0,
        )
    }
    .map_err(|e| {
        let hint = match e {
            nix::Error::EPERM | nix::Error::EACCES => {
                ": a security policy refuses shared writable mappings of memory files"
            }
            nix::Error::ENOMEM => ": out of address space or mappings (sysctl vm.max_map_count)",
            _ => "",
        };
        format!("mmap(MAP_SHARED, read-write) failed ({e}){hint}")
    })?;
    // The last byte: it is on the last page fallocate reserved.
    let at = PROBE_LEN - 1;
    let byte = 0xa5u8;
    // SAFETY: `at` < PROBE_LEN, inside the live read-write mapping made above, every page of
    // which is backed; the memory file is fresh and held by no other process or thread, so
    // nothing else reads or writes it. The mapping is unmapped right after, and nothing
    // references it any more then.
    let back = unsafe {
        let p = ptr.cast::<u8>().as_ptr().add(at);
        p.write_volatile(byte);
        let back = p.read_volatile();
        let _ = munmap(ptr, PROBE_LEN);
        back
    };
    // Read it through the file too: a shared mapping writes the file's own pages.
    let mut through_file = [0u8; 1];
    let n = pread(fd.as_fd(), &mut through_file, at as i64).unwrap_or(0);
    if back != byte || n != 1 || through_file[0] != byte {
        return Err(format!(
            "a byte written to the shared mapping read back as {back:#04x} from it and \
             {:#04x} from the file (wrote {byte:#04x}); shared memory is broken on this machine",
            through_file[0]
        ));
    }
    Ok(())
}

/// A memory limit as written in `memory.max` (v2) or `memory.limit_in_bytes` (v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemLimit {
    Unlimited,
    Bytes(u64),
}

fn parse_memory_limit(text: &str) -> Option<MemLimit> {
    let text = text.trim();
    if text == "max" {
        return Some(MemLimit::Unlimited);
    }
    let n: u64 = text.parse().ok()?;
    Some(if n >= CGROUP_V1_UNLIMITED {
        MemLimit::Unlimited
    } else {
        MemLimit::Bytes(n)
    })
}

/// From `/proc/<pid>/cgroup`: the cgroup v2 path (`0::<path>`) and the path in the cgroup v1
/// memory hierarchy (`<n>:...memory...:<path>`), each if present.
fn parse_proc_cgroup(text: &str) -> (Option<&str>, Option<&str>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    (v2, v1)
}

/// The cgroup `path` and its ancestors, as directories under `root`. None for a path outside
/// our cgroup namespace (with `..` parts) or not absolute.
fn cgroup_dirs(root: &Path, path: &str) -> Option<Vec<PathBuf>> {
    let path = Path::new(path);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    Some(
        path.ancestors()
            .map(|a| root.join(a.strip_prefix("/").unwrap_or(a)))
            .collect(),
    )
}

/// The tightest memory limit on this process's cgroup and its ancestors, with the file that
/// sets it: Ok(None) when every limit readable is "max", Err when none is readable.
fn cgroup_memory_limit() -> Result<Option<(u64, PathBuf)>, String> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup ({e})"))?;
    let (v2, v1) = parse_proc_cgroup(&text);
    // cgroup v2 (unified, or the unified part of a hybrid setup), then the v1 memory hierarchy.
    let mut places = Vec::new();
    if let Some(p) = v2 {
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            places.push((root, p, "memory.max"));
        }
    }
    if let Some(p) = v1 {
        places.push(("/sys/fs/cgroup/memory", p, "memory.limit_in_bytes"));
    }
    let mut read_any = false;
    let mut tightest: Option<(u64, PathBuf)> = None;
    for (root, path, file) in places {
        for dir in cgroup_dirs(Path::new(root), path).unwrap_or_default() {
            let file = dir.join(file);
            let Some(limit) = fs::read_to_string(&file)
                .ok()
                .and_then(|t| parse_memory_limit(&t))
            else {
                continue;
            };
            read_any = true;
            if let MemLimit::Bytes(n) = limit {
                if tightest.as_ref().is_none_or(|(t, _)| n < *t) {
                    tightest = Some((n, file));
                }
            }
        }
    }
    if read_any {
        Ok(tightest)
    } else {
        Err(format!(
            "no memory.max or memory.limit_in_bytes readable for cgroup {}",
            v2.or(v1).unwrap_or("?")
        ))
    }
}

fn check_memory_limit() -> Check {
    // Shared memory is charged to the cgroup of the process that allocates it: shmbusd.
    let elsewhere = "if shmbusd runs in another cgroup, that one's limit counts instead";
    match cgroup_memory_limit() {
        Ok(Some((n, file))) => {
            let what = format!(
                "memory limit: {} ({}); topic memory counts against it",
                human_bytes(n as f64),
                file.display()
            );
            if n < MEMORY_MAX_LOW {
                warn(format!(
                    "{what}, and it is low: each topic takes about capacity x slot size of it, \
                     and a topic that does not fit cannot be created. Raise it (systemd: \
                     MemoryMax=, Docker: --memory); {elsewhere}"
                ))
            } else {
                ok(format!("{what} ({elsewhere})"))
            }
        }
        Ok(None) => ok(format!(
            "memory limit: none on this process's cgroup; topic memory is bounded by the \
             machine's memory ({elsewhere})"
        )),
        Err(e) => ok(format!(
            "memory limit: unknown ({e}); topic memory is bounded by the machine's memory and \
             by the memory limit of shmbusd's cgroup, if it has one"
        )),
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

/// Usage at or above this share of a limit is worth a warning.
const NEAR_LIMIT: f64 = 0.8;

/// One limit: `used` of `max`, named as the rules file names it.
fn limit_check(what: &str, used: u64, max: u64, bytes: bool, name: &str, raise: &str) -> Check {
    let show = |n: u64| {
        if bytes {
            human_bytes(n as f64)
        } else {
            n.to_string()
        }
    };
    let line = format!("limit: {what}: {} of {} ({name})", show(used), show(max));
    if max > 0 && used as f64 >= max as f64 * NEAR_LIMIT {
        warn(format!("{line}: near the limit; {raise}"))
    } else {
        ok(line)
    }
}

/// The daemon answers, its totals, and every limit it enforces with this uid's usage.
fn check_daemon(socket: &Path) -> Vec<Check> {
    let failed = match Bus::connect_to(socket) {
        Ok(bus) => {
            let topics = match bus.list() {
                Ok(t) => format!(", {} topic(s) visible", t.len()),
                Err(e) => format!(", but listing topics failed: {e}"),
            };
            let mut checks = vec![ok(format!(
                "daemon: shmbusd (pid {}) answers on {}{topics}",
                bus.daemon_pid(),
                socket.display()
            ))];
            match bus.status() {
                Ok(s) => checks.extend(status_checks(&s)),
                Err(e) => checks.push(warn(format!(
                    "daemon: cannot read its totals and limits ({e}); an older shmbusd?"
                ))),
            }
            return checks;
        }
        Err(bus_client::ConnectError::Unreachable { source, .. }) => {
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
    };
    vec![failed]
}

fn status_checks(s: &DaemonStatus) -> Vec<Check> {
    let t = &s.totals;
    let l = &s.limits;
    let u = &s.usage;
    let rules = "raise it in the daemon's rules file ([limits]) and send it SIGHUP";
    vec![
        ok(format!(
            "daemon totals: {} topic(s) committing {} of shared memory, {} client(s), {} topic(s) with a held-back publisher",
            t.topics,
            human_bytes(t.bytes as f64),
            t.clients,
            t.watched
        )),
        limit_check(
            &format!("shared memory of uid {}", s.uid),
            u.bytes,
            l.max_bytes_per_uid,
            true,
            "limits.max_bytes_per_uid",
            rules,
        ),
        limit_check(
            &format!("topics of uid {}", s.uid),
            u.topics,
            l.max_topics,
            false,
            "limits.max_topics",
            rules,
        ),
        limit_check(
            &format!("connections of uid {}", s.uid),
            u.clients,
            l.max_clients_per_uid,
            false,
            "limits.max_clients_per_uid",
            rules,
        ),
        limit_check(
            "descriptors of shmbusd (2 per topic, 1 per client)",
            t.open_files,
            l.max_open_files,
            false,
            "its RLIMIT_NOFILE",
            "raise shmbusd's open-file limit (systemd: LimitNOFILE=, shell: ulimit -n)",
        ),
        ok(format!(
            "limit: {} publishers and {} subscribers per topic at most (the topic's max_publishers and max_subscribers, fixed when it is created); control frames up to {}",
            l.max_publishers_per_topic,
            l.max_subscribers_per_topic,
            human_bytes(l.max_frame as f64)
        )),
    ]
}

/// shmbus files in /dev/shm that no process we can inspect has open or mapped. Only an older
/// shmbus, whose segments were named files there, made such files: this version's segments
/// are sealed memory files, freed by the kernel with their last holder.
fn check_stale_files() -> Check {
    let Ok(dir) = fs::read_dir(SHM_DIR) else {
        return ok(format!(
            "stale files: {SHM_DIR} cannot be listed (this shmbus does not use it)"
        ));
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mut ours = Vec::new();
    let mut others = 0usize;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(OLD_SEGMENT_PREFIX) {
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
            "stale files: no shmbus files of ours in {SHM_DIR}; this version never makes \
             any{of_others}"
        ));
    }
    let in_use = open_shm_files();
    let (mut stale, live): (Vec<_>, Vec<_>) = ours
        .into_iter()
        .partition(|(name, _)| !in_use.contains(&format!("{SHM_DIR}/{name}")));
    if stale.is_empty() {
        return ok(format!(
            "stale files: {} shmbus file(s) in {SHM_DIR}, all held open by a process \
             (presumably an older shmbus still running); leave them{of_others}",
            live.len()
        ));
    }
    stale.sort();
    let bytes: u64 = stale.iter().map(|(_, len)| len).sum();
    let mut names: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).take(5).collect();
    if stale.len() > names.len() {
        names.push("...");
    }
    let held = if live.is_empty() {
        String::new()
    } else {
        format!(" ({} more are held by a process: leave those)", live.len())
    };
    warn(format!(
        "stale files: {} shmbus file(s) in {SHM_DIR} ({}) that no process holds: {}. Only an older \
         shmbus version (before segments were sealed memory files) made files there; these are \
         left from it and safe to remove: `rm {SHM_DIR}/<name>`{held}{of_others}",
        stale.len(),
        human_bytes(bytes as f64),
        names.join(", ")
    ))
}

/// Files of embedded daemons (`Bus::embedded()`) whose process is gone, in the socket's
/// directory: a process killed by a signal leaves them (the next embedded start there removes
/// them).
fn check_embedded_leftovers(socket: &Path) -> Check {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stale = bus_proto::paths::stale_embedded_files(dir);
    if stale.is_empty() {
        return ok(format!(
            "embedded daemons: no files left by exited processes in {}",
            dir.display()
        ));
    }
    let mut names: Vec<String> = stale
        .iter()
        .take(8)
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if stale.len() > names.len() {
        names.push("...".into());
    }
    warn(format!(
        "embedded daemons: {} file(s) in {} left by processes that are gone (killed while \
         running an embedded daemon): {}. The next embedded start there removes them, or \
         remove them now: `rm {}/shmbus-embedded-<pid>-*`",
        stale.len(),
        dir.display(),
        names.join(", "),
        dir.display()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memory_probe_works_here() {
        assert_eq!(probe_sealed_memory(), Ok(()));
    }

    #[test]
    fn memory_limits_parse() {
        assert_eq!(parse_memory_limit("max\n"), Some(MemLimit::Unlimited));
        assert_eq!(
            parse_memory_limit("268435456\n"),
            Some(MemLimit::Bytes(256 << 20))
        );
        // cgroup v1's "no limit".
        assert_eq!(
            parse_memory_limit("9223372036854771712\n"),
            Some(MemLimit::Unlimited)
        );
        assert_eq!(parse_memory_limit(""), None);
        assert_eq!(parse_memory_limit("lots"), None);
    }

    #[test]
    fn proc_cgroup_parses_v2_v1_and_hybrid() {
        assert_eq!(
            parse_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n"),
            (Some("/user.slice/user-1000.slice/session-2.scope"), None)
        );
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(hybrid),
            (Some("/"), Some("/process_api/abc"))
        );
        assert_eq!(parse_proc_cgroup("garbage\n"), (None, None));
    }

    #[test]
    fn cgroup_dirs_walk_up_and_stay_under_the_root() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroup_dirs(root, "/a/b").unwrap(),
            [
                PathBuf::from("/sys/fs/cgroup/a/b"),
                PathBuf::from("/sys/fs/cgroup/a"),
                PathBuf::from("/sys/fs/cgroup"),
            ]
        );
        assert_eq!(
            cgroup_dirs(root, "/").unwrap(),
            [PathBuf::from("/sys/fs/cgroup")]
        );
        // Outside our cgroup namespace, or not absolute: nothing to read.
        assert_eq!(cgroup_dirs(root, "/../../x"), None);
        assert_eq!(cgroup_dirs(root, "x"), None);
    }
}
