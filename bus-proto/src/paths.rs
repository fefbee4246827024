//! Where the daemon's socket lives, and the names of the files beside it.
//!
//! The socket path is, in order: `$SHMBUS_SOCKET` (when set and non-empty);
//! `$XDG_RUNTIME_DIR/shmbus/shmbusd.sock` (when that variable names an existing absolute
//! directory); else `/tmp/shmbus-$UID/shmbusd.sock`.
//!
//! Beside the socket the daemon keeps, each named after it so that every file of the bus has
//! `shmbus` in its path: the lock (`.lock`), the status page (`.status`, see
//! [`crate::status`]) and the topic records a restarted daemon reads (`.topics`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the socket path.
pub const SOCKET_ENV: &str = "SHMBUS_SOCKET";

/// File name of the socket inside its directory.
pub const SOCKET_FILE_NAME: &str = "shmbusd.sock";

/// Appended to the socket path to name the lock file.
pub const LOCK_SUFFIX: &str = ".lock";

/// Appended to the socket path to name the status page.
pub const STATUS_SUFFIX: &str = ".status";

/// Appended to the socket path to name the topic records.
pub const TOPICS_SUFFIX: &str = ".topics";

/// How the socket of a daemon embedded in a process (`Bus::embedded()`) is named, in the
/// directory of the default socket: `shmbus-embedded-<pid>-<n>.sock`, `n` counting the
/// process's embedded daemons from 0.
pub fn embedded_socket_name(pid: u32, n: u64) -> String {
    format!("{EMBEDDED_PREFIX}{pid}-{n}.sock")
}

const EMBEDDED_PREFIX: &str = "shmbus-embedded-";

/// The process id in an embedded daemon's file name (its socket, or a file beside it), if
/// `name` is one.
pub fn embedded_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(EMBEDDED_PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, suffix) = rest.split_once(".sock")?;
    let known = ["", LOCK_SUFFIX, STATUS_SUFFIX, TOPICS_SUFFIX].contains(&suffix);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (known && digits(n) && digits(pid)).then(|| pid.parse().ok())?
}

/// The files in `dir` left by embedded daemons whose process is gone (no process has the pid
/// in the name), sorted. A process that exits without stopping its embedded daemon (a thread
/// still held a port, or it was killed) leaves them; a live process's files are never listed.
pub fn stale_embedded_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stale: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(embedded_pid)
                .is_some_and(|pid| !process_exists(pid))
        })
        .map(|e| e.path())
        .collect();
    stale.sort();
    stale
}

/// Whether a process with this pid exists (a zombie, or a process of another user, counts).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return true; // never a real process's pid: not ours to judge
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Remove `socket` and the files beside it (lock, status page, topic records), ignoring any
/// that are missing.
pub fn remove_socket_files(socket: &Path) {
    for path in [
        socket.to_path_buf(),
        lock_path_for(socket),
        status_path_for(socket),
        topics_path_for(socket),
    ] {
        let _ = std::fs::remove_file(path);
    }
}

/// The socket path this process should use (see the module docs for the order).
pub fn default_socket_path() -> PathBuf {
    socket_path_from(
        std::env::var_os(SOCKET_ENV),
        std::env::var_os("XDG_RUNTIME_DIR"),
        nix::unistd::getuid().as_raw(),
    )
}

/// [`default_socket_path`] with its inputs given explicitly (testable).
pub fn socket_path_from(
    shmbus_socket: Option<OsString>,
    xdg_runtime_dir: Option<OsString>,
    uid: u32,
) -> PathBuf {
    if let Some(p) = shmbus_socket.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(dir) = xdg_runtime_dir
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
    {
        return dir.join("shmbus").join(SOCKET_FILE_NAME);
    }
    PathBuf::from(format!("/tmp/shmbus-{uid}")).join(SOCKET_FILE_NAME)
}

/// `socket` with `suffix` appended: the name of a file that belongs to that socket's daemon.
pub fn beside(socket: &Path, suffix: &str) -> PathBuf {
    let mut s = socket.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The lock file path for a socket path: `<socket path>.lock`.
pub fn lock_path_for(socket: &Path) -> PathBuf {
    beside(socket, LOCK_SUFFIX)
}

/// The status page path for a socket path: `<socket path>.status`.
pub fn status_path_for(socket: &Path) -> PathBuf {
    beside(socket, STATUS_SUFFIX)
}

/// The topic records path for a socket path: `<socket path>.topics`.
pub fn topics_path_for(socket: &Path) -> PathBuf {
    beside(socket, TOPICS_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_override_wins_when_non_empty() {
        let p = socket_path_from(Some("/x/y.sock".into()), Some("/tmp".into()), 5);
        assert_eq!(p, PathBuf::from("/x/y.sock"));
        let p = socket_path_from(Some("".into()), None, 5);
        assert_eq!(p, PathBuf::from("/tmp/shmbus-5/shmbusd.sock"));
    }

    #[test]
    fn xdg_runtime_dir_used_only_when_it_exists() {
        let d = std::env::temp_dir().join(format!("shmbus-test-xdg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = socket_path_from(None, Some(d.clone().into()), 5);
        assert_eq!(p, d.join("shmbus/shmbusd.sock"));
        let p = socket_path_from(None, Some(d.join("missing").into()), 5);
        assert_eq!(p, PathBuf::from("/tmp/shmbus-5/shmbusd.sock"));
        let p = socket_path_from(None, Some("relative".into()), 5);
        assert_eq!(p, PathBuf::from("/tmp/shmbus-5/shmbusd.sock"));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn files_beside_the_socket_keep_its_shmbus_name() {
        let s = Path::new("/run/user/1/shmbus/shmbusd.sock");
        assert_eq!(
            lock_path_for(s),
            PathBuf::from("/run/user/1/shmbus/shmbusd.sock.lock")
        );
        assert_eq!(
            status_path_for(s),
            PathBuf::from("/run/user/1/shmbus/shmbusd.sock.status")
        );
        assert_eq!(
            topics_path_for(s),
            PathBuf::from("/run/user/1/shmbus/shmbusd.sock.topics")
        );
    }

    #[test]
    fn embedded_file_names_give_their_pid() {
        assert_eq!(embedded_socket_name(42, 3), "shmbus-embedded-42-3.sock");
        for name in [
            "shmbus-embedded-42-3.sock",
            "shmbus-embedded-42-0.sock.lock",
            "shmbus-embedded-42-10.sock.status",
            "shmbus-embedded-42-1.sock.topics",
        ] {
            assert_eq!(embedded_pid(name), Some(42), "{name}");
        }
        for name in [
            "shmbusd.sock",
            "shmbus-embedded-42-3.sock.other",
            "shmbus-embedded-x-3.sock",
            "shmbus-embedded-42-.sock",
            "shmbus-embedded-42.sock",
            "other-embedded-42-3.sock",
        ] {
            assert_eq!(embedded_pid(name), None, "{name}");
        }
    }
}
