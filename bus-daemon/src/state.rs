//! The daemon's topic records, `<socket>.topics`: for every topic, its spec, its owner, the
//! identities (device, inode) of its two segment files, and the ports it handed out (which
//! process of which uid holds which table entry, in which role).
//!
//! Segments are anonymous sealed files, so a daemon that restarts after a crash cannot find
//! them by name. It reads these records instead, and when a port re-attaches and hands the
//! files back, it takes them only if they are exactly the files recorded for that topic (and
//! its own, 0600 and sealed; see `segment::adopt_segment`). A client cannot forge a file with
//! the recorded identity, so it cannot slip its own memory in as someone else's topic.
//!
//! The file is a **journal**, one JSON object per line, so that recording a change costs the
//! same with ten thousand topics as with one:
//!
//! ```text
//! {"version":4}
//! {"add":{"name":"robot/odom","spec":{...},"owner_uid":1000,"files":[...]}}
//! {"port":{"topic":"robot/odom","role":"publisher","index":0,"generation":1,"pid":4711,"uid":1000}}
//! {"remove":"robot/odom"}
//! ```
//!
//! The port lines are what a restarted daemon trusts about who may re-attach to what: a port
//! comes back only as recorded here (its role, entry and generation, by the recorded process and
//! uid), never as the topic's control file says, which its subscribers can write. A port that
//! goes away is not recorded as gone; the record only narrows what may come back, and the next
//! compaction writes the ports that are live then.
//!
//! Replaying it gives the live records (a later `add` of a name replaces an earlier one). When
//! the lines outnumber twice the live records (and some), it is compacted: the live records are
//! written beside it and renamed over it. It lives in the daemon's socket directory, mode 0600,
//! and a daemon that stops cleanly removes it. A line cut short by a crash ends the replay
//! (with a warning); what came before it counts.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use bus_core::layout::Geometry;
use bus_proto::paths::topics_path_for;
use bus_proto::protocol::Role;

use crate::segment::FileId;

/// Bumped whenever the record's form changes (version 2: the spec is a `Geometry`; version 3:
/// a journal of lines; version 4: port lines).
const VERSION: u32 = 4;

/// The oldest version still read: version 3 journals have no port lines, so their topics are
/// adopted but none of their ports may re-attach (they attach anew).
const OLDEST_READ: u32 = 3;

/// Compact once the journal has this many lines more than twice the live records.
const SLACK: usize = 256;

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
    /// The ports handed out on it (after a compaction: those live then; later `port` lines
    /// add to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRecord>,
}

/// A port as the daemon handed it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRecord {
    /// The topic (in a `port` line; empty inside a topic's own record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic: String,
    /// Publisher or subscriber.
    pub role: Role,
    /// Its entry in the topic's table.
    pub index: u32,
    /// The entry's generation when it was handed out.
    pub generation: u64,
    /// The process it was handed to.
    pub pid: u32,
    /// That process's uid.
    pub uid: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Add(TopicRecord),
    Remove(String),
    Port(PortRecord),
}

/// The records a previous daemon on `socket` left, by name. Missing: none. Unreadable or of
/// another version: none, with a warning (the topics cannot be adopted; their ports attach
/// afresh).
pub fn load(socket: &Path) -> BTreeMap<String, TopicRecord> {
    let path = topics_path_for(socket);
    let mut live = BTreeMap::new();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return live,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the topic records; no topic will be adopted");
            return live;
        }
    };
    let mut lines = text.lines();
    match lines.next().map(serde_json::from_str::<Header>) {
        Some(Ok(h)) if (OLDEST_READ..=VERSION).contains(&h.version) => {}
        Some(Ok(h)) => {
            tracing::warn!(path = %path.display(), version = h.version, "topic records of another version; no topic will be adopted");
            return live;
        }
        _ => {
            tracing::warn!(path = %path.display(), "the topic records do not start with a version line; no topic will be adopted");
            return live;
        }
    }
    for (n, line) in lines.enumerate() {
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Add(r)) => {
                live.insert(r.name.clone(), r);
            }
            Ok(Line::Remove(name)) => {
                live.remove(&name);
            }
            Ok(Line::Port(mut port)) => {
                if let Some(r) = live.get_mut(&port.topic) {
                    port.topic.clear();
                    r.ports.push(port);
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), line = n + 2, error = %e, "a topic record does not parse (cut short by a crash?); the records after it are ignored");
                break;
            }
        }
    }
    live
}

/// Remove the records of `socket` (a daemon that stops cleanly: its topics are gone).
pub fn remove(socket: &Path) {
    let _ = std::fs::remove_file(topics_path_for(socket));
}

/// The open journal of a running daemon.
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    lines: usize,
}

impl Journal {
    /// Start a journal for `socket` holding exactly `live` (the records loaded at start, which
    /// a restarted daemon keeps until their topics come back or are forgotten).
    pub fn create<'a>(
        socket: &Path,
        live: impl IntoIterator<Item = &'a TopicRecord>,
    ) -> io::Result<Journal> {
        let mut j = Journal {
            path: topics_path_for(socket),
            file: None,
            lines: 0,
        };
        j.rewrite(live)?;
        Ok(j)
    }

    /// Record that `record` exists (created, or created anew).
    pub fn add(&mut self, record: &TopicRecord) -> io::Result<()> {
        self.append(&Line::Add(record.clone()))
    }

    /// Record that a port of `topic` was handed out.
    pub fn port(&mut self, topic: &str, port: &PortRecord) -> io::Result<()> {
        self.append(&Line::Port(PortRecord {
            topic: topic.to_string(),
            ..port.clone()
        }))
    }

    /// Record that the topic `name` is gone.
    pub fn remove(&mut self, name: &str) -> io::Result<()> {
        self.append(&Line::Remove(name.to_string()))
    }

    /// Whether the journal has grown enough past `live` records to be worth compacting.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.lines > live.saturating_mul(2).saturating_add(SLACK)
    }

    /// Replace the journal with exactly `live`: written beside it, then renamed over it.
    pub fn rewrite<'a>(
        &mut self,
        live: impl IntoIterator<Item = &'a TopicRecord>,
    ) -> io::Result<()> {
        let mut tmp = self.path.as_os_str().to_os_string();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let mut body =
            serde_json::to_vec(&Header { version: VERSION }).map_err(io::Error::other)?;
        body.push(b'\n');
        let mut lines = 0;
        for r in live {
            serde_json::to_writer(&mut body, &Line::Add(r.clone())).map_err(io::Error::other)?;
            body.push(b'\n');
            lines += 1;
        }
        let mut f = open(&tmp, true)?;
        f.write_all(&body)?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        self.file = Some(open(&self.path, false)?);
        self.lines = lines;
        Ok(())
    }

    fn append(&mut self, line: &Line) -> io::Result<()> {
        let mut text = serde_json::to_vec(line).map_err(io::Error::other)?;
        text.push(b'\n');
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open(&self.path, false)?),
        };
        // One write of a whole line (O_APPEND): a crash cuts at most this line short.
        file.write_all(&text)?;
        self.lines += 1;
        Ok(())
    }
}

fn open(path: &Path, truncate: bool) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    if truncate {
        o.write(true).create(true).truncate(true);
    } else {
        o.append(true).create(true);
    }
    o.mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_core::layout::{Mode, TypeInfo};

    fn record(name: &str, ino: u64) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            spec: Geometry {
                capacity: 8,
                slot_size: 64,
                mode: Mode::Lossless,
                max_publishers: 1,
                max_subscribers: 4,
                type_info: TypeInfo::bytes(),
            },
            owner_uid: 1000,
            files: [
                FileId { dev: 1, ino },
                FileId {
                    dev: 1,
                    ino: ino + 1,
                },
            ],
            ports: Vec::new(),
        }
    }

    fn port(role: Role, index: u32, generation: u64) -> PortRecord {
        PortRecord {
            topic: String::new(),
            role,
            index,
            generation,
            pid: 4711,
            uid: 1000,
        }
    }

    #[test]
    fn port_lines_add_to_their_topic_and_go_with_it() {
        let s = socket("ports");
        let mut j = Journal::create(&s, []).unwrap();
        let a = record("a", 10);
        j.add(&a).unwrap();
        j.port("a", &port(Role::Publisher, 0, 1)).unwrap();
        j.port("a", &port(Role::Subscriber, 2, 3)).unwrap();
        // A port of a topic not recorded (a line for a name removed meanwhile) is dropped.
        j.port("gone", &port(Role::Subscriber, 0, 1)).unwrap();
        let live = load(&s);
        let ports = &live["a"].ports;
        assert_eq!(
            ports,
            &vec![port(Role::Publisher, 0, 1), port(Role::Subscriber, 2, 3)]
        );
        // Compacted with its ports, then replayed the same.
        j.rewrite(live.values()).unwrap();
        assert_eq!(load(&s), live);
        // Created anew: the old ports are not its ports.
        j.add(&a).unwrap();
        assert!(load(&s)["a"].ports.is_empty());
        j.remove("a").unwrap();
        assert!(load(&s).is_empty());
        let _ = std::fs::remove_dir_all(s.parent().unwrap());
    }

    fn socket(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shmbus-journal-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("shmbusd.sock")
    }

    #[test]
    fn the_journal_replays_adds_and_removes_and_compacts() {
        let s = socket("replay");
        let kept = record("kept", 10);
        let mut j = Journal::create(&s, [&kept]).unwrap();
        for i in 0..600u64 {
            let r = record(&format!("t{i}"), 100 + 2 * i);
            j.add(&r).unwrap();
            if i % 2 == 0 {
                j.remove(&r.name).unwrap();
            }
        }
        let again = record("t1", 7);
        j.add(&again).unwrap();
        let live = load(&s);
        assert_eq!(live.len(), 301);
        assert_eq!(live.get("kept"), Some(&kept));
        assert_eq!(
            live.get("t1"),
            Some(&again),
            "a later add replaces an earlier one"
        );
        assert!(!live.contains_key("t0"));
        assert!(j.wants_compaction(live.len()));
        j.rewrite(live.values()).unwrap();
        assert!(!j.wants_compaction(live.len()));
        assert_eq!(load(&s), live);
        let lines = std::fs::read_to_string(topics_path_for(&s))
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, 302);
        remove(&s);
        assert!(load(&s).is_empty());
        let _ = std::fs::remove_dir_all(s.parent().unwrap());
    }

    #[test]
    fn a_line_cut_short_ends_the_replay() {
        let s = socket("cut");
        let mut j = Journal::create(&s, []).unwrap();
        j.add(&record("a", 1)).unwrap();
        drop(j);
        let path = topics_path_for(&s);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"add":{"name":"b","sp"#).unwrap();
        let live = load(&s);
        assert_eq!(live.keys().collect::<Vec<_>>(), ["a"]);
        std::fs::write(&path, "{\"version\":2,\"topics\":[]}").unwrap();
        assert!(load(&s).is_empty(), "another version is not adopted");
        remove(&s);
        let _ = std::fs::remove_dir_all(s.parent().unwrap());
    }
}
