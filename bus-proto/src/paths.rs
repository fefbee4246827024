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
}
