//! An embedded daemon's socket and side files do not outlive its process: they are removed when
//! `main` returns while a thread still holds a port (the daemon is still running then), and
//! files a killed process left are removed by the next embedded start in that directory.
//! Real processes (`shmbus-peer embedded-exit`) in a fresh directory each.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PEER: &str = env!("CARGO_BIN_EXE_shmbus-peer");

/// A fresh 0700 directory with "shmbus" in its name, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("shmbus-embedded-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Dir(dir)
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn peer(dir: &Path, wait: bool) -> Command {
    let mut c = Command::new(PEER);
    c.arg("embedded-exit")
        .env("SHMBUS_SOCKET", dir.join("shmbusd.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if wait {
        c.arg("--wait");
    }
    c
}

/// The embedded daemon's files, as the peer listed them while it ran.
fn files_seen(stdout: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("files "))
        .unwrap_or_else(|| panic!("no file list in {stdout:?}"));
    line.split(' ').map(str::to_string).collect()
}

#[test]
fn main_returning_with_a_live_port_leaves_no_file() {
    let dir = Dir::new("return");
    let out = peer(&dir.0, false).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid_files = files_seen(&stdout);
    // While it ran, the daemon had its socket, lock and status page there...
    for suffix in [".sock", ".sock.lock", ".sock.status"] {
        assert!(
            pid_files.iter().any(|f| f.ends_with(suffix)),
            "{suffix} missing from {pid_files:?}"
        );
    }
    // ... and none is left, though the daemon still ran when main returned.
    assert_eq!(dir.files(), Vec::<String>::new());
}

#[test]
fn a_killed_process_files_are_removed_by_the_next_embedded_start() {
    let dir = Dir::new("killed");
    let mut child = peer(&dir.0, true).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.contains("\nfiles ") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "peer ended: {text}"
        );
        text.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = dir.files();
    assert!(
        left.iter().any(|f| f.ends_with(".sock.lock")),
        "SIGKILL runs no clean-up, so files stay: {left:?}"
    );

    // The next embedded start sweeps them; its own go when it exits.
    let out = peer(&dir.0, false).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let seen = files_seen(&String::from_utf8_lossy(&out.stdout));
    for f in &left {
        assert!(
            !seen.contains(f),
            "{f} of the killed process still there: {seen:?}"
        );
    }
    assert_eq!(dir.files(), Vec::<String>::new());
}
