//! The daemon's topic records, `<socket>.topics`: for every topic, its spec, its owner and the
//! identities (device, inode) of its two segment files.
//!
//! Segments are anonymous sealed files, so a daemon that restarts after a crash cannot find
//! them by name. It reads these records instead, and when a port re-attaches and hands the
//! files back, it takes them only if they are exactly the files recorded for that topic (and
//! its own, 0600 and sealed; see `segment::adopt_segment`). A client cannot forge a file with
//! the recorded identity, so it cannot slip its own memory in as someone else's topic.
//!
//! The file lives in the daemon's socket directory, mode 0600, and is replaced atomically
//! (written beside, then renamed) on every change. A daemon that stops cleanly removes it.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use bus_core::layout::Geometry;
use bus_proto::paths::topics_path_for;

use crate::segment::FileId;

/// Bumped whenever a record's form changes (version 2: the spec is a `Geometry`).
const VERSION: u32 = 2;

/// One topic as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRecord {
    /// The topic name.
    pub name: String,
    /// Its geometry and payload type.
    pub spec: Geometry,
    /// The uid that created it (limits and delete permission).
    pub owner_uid: u32,
    /// The control file and the data file.
    pub files: [FileId; 2],
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Records {
    version: u32,
    topics: Vec<TopicRecord>,
}

/// The records a previous daemon on `socket` left. Missing: none. Unreadable or of another
/// version: none, with a warning (the topics cannot be adopted; their ports attach afresh).
pub fn load(socket: &Path) -> Vec<TopicRecord> {
    let path = topics_path_for(socket);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the topic records; no topic will be adopted");
            return Vec::new();
        }
    };
    match serde_json::from_str::<Records>(&text) {
        Ok(r) if r.version == VERSION => r.topics,
        Ok(r) => {
            tracing::warn!(path = %path.display(), version = r.version, "topic records of another version; no topic will be adopted");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the topic records do not parse; no topic will be adopted");
            Vec::new()
        }
    }
}

/// Replace the records of `socket` with `topics`.
pub fn save(socket: &Path, topics: Vec<TopicRecord>) -> io::Result<()> {
    let path = topics_path_for(socket);
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec(&Records {
        version: VERSION,
        topics,
    })
    .map_err(io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(&body)?;
    drop(f);
    std::fs::rename(&tmp, &path)
}

/// Remove the records of `socket` (a daemon that stops cleanly: its topics are gone).
pub fn remove(socket: &Path) {
    let _ = std::fs::remove_file(topics_path_for(socket));
}
