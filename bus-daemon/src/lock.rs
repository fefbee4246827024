//! The socket's directory, and the lock that makes one daemon per socket.
//!
//! The socket's directory is created with mode 0700 and must never be
//! world-writable or owned by another user ([`ensure_socket_dir`]). To let
//! other users' clients in (access rules by uid/gid), an administrator may open
//! it to 0711 or 0755; it still may not be world-writable.
//!
//! [`DaemonLock`] takes an exclusive `flock` on `<socket path>.lock`. The lock,
//! not a connect probe, decides which daemon owns a socket, so two daemons
//! started at once cannot both win; the winner may then unlink a stale socket.
//! Where the socket is found is client knowledge too: `bus_proto::paths`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bus_proto::paths::{lock_path_for, SOCKET_ENV};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

fn socket_dir(socket_path: &Path) -> &Path {
    match socket_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates the socket's parent directory (mode 0700) if missing, and checks it.
///
/// Refuses (an error naming the directory and the fix) when it is not a
/// directory, is owned by another uid, is a symlink owned by another uid, or
/// is world-writable.
pub fn ensure_socket_dir(socket_path: &Path) -> io::Result<()> {
    let dir = socket_dir(socket_path);
    if fs::symlink_metadata(dir).is_err() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create the socket directory {}: {e}; create it with mode 0700 or choose another path with --socket or {SOCKET_ENV}",
                        dir.display()
                    ),
                )
            })?;
    }
    check_socket_dir(dir, nix::unistd::geteuid().as_raw())
}

fn check_socket_dir(dir: &Path, uid: u32) -> io::Result<()> {
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing socket directory {}: {why}; fix it or choose another path with --socket or {SOCKET_ENV}",
                dir.display()
            ),
        ))
    };
    let link = fs::symlink_metadata(dir)?;
    if link.file_type().is_symlink() && link.uid() != uid {
        return refuse(format!(
            "it is a symlink owned by uid {}, not by us (uid {uid})",
            link.uid()
        ));
    }
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return refuse("it is not a directory".into());
    }
    if meta.uid() != uid {
        return refuse(format!(
            "it is owned by uid {}, not by us (uid {uid})",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        return refuse(format!(
            "it is world-writable (mode {mode:04o}); run `chmod o-w {}`",
            dir.display()
        ));
    }
    if mode & 0o020 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format_args!("{mode:04o}"),
            "socket directory is group-writable: group members can replace the daemon's socket"
        );
    }
    Ok(())
}

/// Why [`DaemonLock::acquire`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds the lock for this socket.
    #[error("{}", already_running_message(*pid))]
    AlreadyRunning {
        /// The other daemon's pid, when its lock file names one.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot use lock file {}: {source}; check that its directory is ours and writable", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn already_running_message(pid: Option<u32>) -> String {
    let who = match pid {
        Some(pid) => format!("another shmbusd (pid {pid})"),
        None => "another shmbusd".to_string(),
    };
    format!("{who} already serves this socket; stop it first, or start this one with another --socket or {SOCKET_ENV}")
}

/// An exclusive `flock` on `<socket path>.lock`, holding this process's pid.
///
/// Dropping it removes the lock file and releases the lock.
#[derive(Debug)]
pub struct DaemonLock {
    file: Option<Flock<File>>,
    lock_path: PathBuf,
    socket_path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock for `socket_path` without blocking.
    ///
    /// Fails with [`LockError::AlreadyRunning`] (naming the holder's pid when
    /// known) if another process holds it. The socket directory should have
    /// been checked with [`ensure_socket_dir`] first.
    pub fn acquire(socket_path: &Path) -> Result<DaemonLock, LockError> {
        let lock_path = lock_path_for(socket_path);
        let io_err = |source: io::Error| LockError::Io {
            path: lock_path.clone(),
            source,
        };
        // The holder unlinks the file before unlocking; a process that opened
        // the old file may then lock an unlinked inode. Checking that the path
        // still names the locked inode closes that race; retry if it doesn't.
        for _ in 0..16 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&lock_path)
                .map_err(io_err)?;
            let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    return Err(LockError::AlreadyRunning {
                        pid: read_pid(&mut file),
                    })
                }
                Err((_, errno)) => return Err(io_err(errno.into())),
            };
            let ours = locked.metadata().map_err(io_err)?;
            match fs::symlink_metadata(&lock_path) {
                Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(e)),
            }
            locked
                .set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io_err)?;
            locked.set_len(0).map_err(io_err)?;
            locked.seek(SeekFrom::Start(0)).map_err(io_err)?;
            writeln!(&mut *locked, "{}", std::process::id()).map_err(io_err)?;
            return Ok(DaemonLock {
                file: Some(locked),
                lock_path,
                socket_path: socket_path.to_path_buf(),
            });
        }
        Err(io_err(io::Error::other(
            "the lock file kept changing while locking it",
        )))
    }

    /// The lock file's path.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The socket path this lock guards.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Removes a stale socket left by a daemon that died. Safe only because we
    /// hold the lock. Returns whether a socket was removed; anything at the
    /// path that is not a socket is left alone and reported as an error.
    pub fn remove_stale_socket(&self) -> io::Result<bool> {
        match fs::symlink_metadata(&self.socket_path) {
            Ok(m) if m.file_type().is_socket() => {
                fs::remove_file(&self.socket_path)?;
                Ok(true)
            }
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; remove it yourself or choose another path with --socket or {SOCKET_ENV}",
                    self.socket_path.display()
                ),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Unlink while still holding the lock, and only if the path is still our file.
            if let (Ok(ours), Ok(now)) = (file.metadata(), fs::symlink_metadata(&self.lock_path)) {
                if ours.dev() == now.dev() && ours.ino() == now.ino() {
                    let _ = fs::remove_file(&self.lock_path);
                }
            }
            drop(file);
        }
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut buf = [0u8; 32];
    let n = file.read(&mut buf).ok()?;
    std::str::from_utf8(buf.get(..n)?).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "shmbus-test-paths-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn socket_dir_created_with_mode_0700() {
        let d = temp_dir("create");
        let sock = d.join("a/b/shmbusd.sock");
        ensure_socket_dir(&sock).unwrap();
        let mode = fs::metadata(d.join("a/b")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Idempotent.
        ensure_socket_dir(&sock).unwrap();
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn socket_dir_refused_when_world_writable() {
        let d = temp_dir("ww");
        let s = d.join("s");
        fs::create_dir(&s).unwrap();
        fs::set_permissions(&s, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_socket_dir(&s.join("shmbusd.sock")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("world-writable"), "{err}");
        fs::set_permissions(&s, fs::Permissions::from_mode(0o711)).unwrap();
        ensure_socket_dir(&s.join("shmbusd.sock")).unwrap();
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn socket_dir_refused_when_not_a_directory() {
        let d = temp_dir("file");
        let f = d.join("f");
        fs::write(&f, b"x").unwrap();
        let err = ensure_socket_dir(&f.join("shmbusd.sock")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn socket_dir_refused_when_owned_by_another_uid() {
        let d = temp_dir("owner");
        let me = nix::unistd::geteuid().as_raw();
        let err = check_socket_dir(&d, me.wrapping_add(1)).unwrap_err();
        assert!(err.to_string().contains("owned by uid"), "{err}");
        check_socket_dir(&d, me).unwrap();
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn second_daemon_lock_is_refused_with_first_pid() {
        let d = temp_dir("lock");
        let sock = d.join("shmbusd.sock");
        let first = DaemonLock::acquire(&sock).unwrap();
        let mode = fs::metadata(first.lock_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        match DaemonLock::acquire(&sock) {
            Err(LockError::AlreadyRunning { pid }) => {
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        let msg = LockError::AlreadyRunning { pid: Some(7) }.to_string();
        assert!(msg.contains("pid 7"), "{msg}");
        drop(first);
        assert!(!lock_path_for(&sock).exists(), "drop removes the lock file");
        let again = DaemonLock::acquire(&sock).unwrap();
        drop(again);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn lock_file_symlink_is_not_followed() {
        let d = temp_dir("symlink");
        let sock = d.join("shmbusd.sock");
        let target = d.join("victim");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, lock_path_for(&sock)).unwrap();
        assert!(matches!(
            DaemonLock::acquire(&sock),
            Err(LockError::Io { .. })
        ));
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn stale_socket_removed_but_other_files_kept() {
        let d = temp_dir("stale");
        let sock = d.join("shmbusd.sock");
        let lock = DaemonLock::acquire(&sock).unwrap();
        assert!(!lock.remove_stale_socket().unwrap());
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(listener);
        assert!(lock.remove_stale_socket().unwrap());
        assert!(!sock.exists());
        fs::write(&sock, b"not a socket").unwrap();
        assert!(lock.remove_stale_socket().is_err());
        assert!(sock.exists());
        drop(lock);
        fs::remove_dir_all(d).unwrap();
    }
}
