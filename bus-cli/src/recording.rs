//! What a shmbus recording holds, shared by `record`, `play` and `info`: how a topic becomes an
//! MCAP channel and back, the clock of `log_time`, and the names of the files of a split
//! recording. `docs/recording.md` describes the same for users.
//!
//! A channel per topic: `topic` is the topic name, `message_encoding` is
//! [`MESSAGE_ENCODING`] (the slot's bytes as they are), and the metadata carries the topic's
//! geometry under the keys of [`keys`]. A byte topic's channel has no schema; a typed topic's
//! channel has a schema named after the type with an empty encoding and no data (MCAP's "no
//! schema available"), so that MCAP tools show the type.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bus_client::{Geometry, Mode, TypeInfo};
use mcap::io::MessageReader;
use mcap::sans_io::LinearReaderOptions;

/// The MCAP header's profile.
pub const PROFILE: &str = "shmbus";
/// The MCAP header's library.
pub const LIBRARY: &str = concat!("shmbus ", env!("CARGO_PKG_VERSION"));
/// Every channel's message encoding: the payload bytes as the slot held them.
pub const MESSAGE_ENCODING: &str = "application/octet-stream";
/// The name of the metadata record that closes each file with the recorder's counts.
pub const STATS_METADATA: &str = "shmbus.recording";
/// The largest record `play` and `info` accept: a slot (1 GiB at most) and its record header.
pub const RECORD_LIMIT: usize = (1 << 30) + 4096;

/// The largest record `play` and `info` accept in a file of `file_size` bytes: no record
/// (nor a message decompressed from a chunk, at a ratio of 256 or less) is larger than the
/// file allows, with a floor of 16 MiB. A damaged length then fails at once instead of making
/// the reader fill a gigabyte first.
pub fn record_limit(file_size: u64) -> usize {
    let by_size = usize::try_from(file_size.saturating_mul(256)).unwrap_or(usize::MAX);
    by_size.clamp(16 << 20, RECORD_LIMIT)
}

/// The channel metadata keys.
pub mod keys {
    /// `lossless` or `lossy`.
    pub const MODE: &str = "mode";
    /// Ring capacity in slots.
    pub const CAPACITY: &str = "capacity";
    /// Largest message in bytes.
    pub const SLOT_SIZE: &str = "slot_size";
    /// Publisher table size.
    pub const MAX_PUBLISHERS: &str = "max_publishers";
    /// Subscriber table size.
    pub const MAX_SUBSCRIBERS: &str = "max_subscribers";
    /// The payload type's name (`bytes` for byte topics).
    pub const TYPE_NAME: &str = "type_name";
    /// The payload type's size (0 for byte topics).
    pub const TYPE_SIZE: &str = "type_size";
    /// The payload type's alignment.
    pub const TYPE_ALIGN: &str = "type_align";
}

/// The channel metadata of a topic with this geometry.
pub fn channel_metadata(spec: &Geometry) -> BTreeMap<String, String> {
    let t = &spec.type_info;
    [
        (keys::MODE, spec.mode.to_string()),
        (keys::CAPACITY, spec.capacity.to_string()),
        (keys::SLOT_SIZE, spec.slot_size.to_string()),
        (keys::MAX_PUBLISHERS, spec.max_publishers.to_string()),
        (keys::MAX_SUBSCRIBERS, spec.max_subscribers.to_string()),
        (keys::TYPE_NAME, t.name.clone()),
        (keys::TYPE_SIZE, t.size.to_string()),
        (keys::TYPE_ALIGN, t.align.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The geometry recorded in a channel's metadata; the error names the missing or bad key.
pub fn geometry_from_metadata(md: &BTreeMap<String, String>) -> Result<Geometry, String> {
    fn get<'a>(md: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, String> {
        md.get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("no '{key}' in the channel metadata"))
    }
    fn num(md: &BTreeMap<String, String>, key: &str) -> Result<u32, String> {
        let v = get(md, key)?;
        v.parse()
            .map_err(|_| format!("channel metadata '{key}' is {v:?}, not a number"))
    }
    let mode = match get(md, keys::MODE)? {
        "lossless" => Mode::Lossless,
        "lossy" => Mode::Lossy,
        other => return Err(format!("channel metadata 'mode' is {other:?}")),
    };
    Ok(Geometry {
        capacity: num(md, keys::CAPACITY)?,
        slot_size: num(md, keys::SLOT_SIZE)?,
        mode,
        max_publishers: num(md, keys::MAX_PUBLISHERS)?,
        max_subscribers: num(md, keys::MAX_SUBSCRIBERS)?,
        type_info: TypeInfo {
            name: get(md, keys::TYPE_NAME)?.to_string(),
            size: num(md, keys::TYPE_SIZE)?,
            align: num(md, keys::TYPE_ALIGN)?,
        },
    })
}

/// Counts per topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Messages written.
    pub messages: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Messages the recorder never saw (sequence gaps: lag, eviction).
    pub lost: u64,
    /// Messages dropped because the queue was full (`--overflow drop`).
    pub dropped: u64,
}

impl Counts {
    /// Add `o` to these counts.
    pub fn add(&mut self, o: &Counts) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.lost += o.lost;
        self.dropped += o.dropped;
    }
}

/// A topic's counts in one file's metadata record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TopicCounts {
    /// The topic.
    pub topic: String,
    /// Its counts in this file.
    #[serde(flatten)]
    pub counts: Counts,
}

/// The clock of `log_time`: nanoseconds since the Unix epoch, read once from the wall clock at
/// start and advanced by the monotonic clock, so that times never go backwards within a
/// recording even if the wall clock is stepped.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_ns: u64,
    start: Instant,
}

impl Clock {
    /// A clock anchored at the wall time now.
    pub fn start() -> Clock {
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            wall_ns,
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch, now.
    pub fn now_ns(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wall_ns.saturating_add(elapsed)
    }

    /// The wall time at start, in nanoseconds since the epoch.
    pub fn start_ns(&self) -> u64 {
        self.wall_ns
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS.mmm UTC`.
pub fn utc(epoch_ns: u64) -> String {
    let secs = epoch_ns / 1_000_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60,
        epoch_ns / 1_000_000 % 1000
    )
}

/// The default file name: `shmbus_YYYYMMDD-HHMMSS.mcap` (UTC).
pub fn default_file_name(epoch_ns: u64) -> PathBuf {
    let secs = epoch_ns / 1_000_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    PathBuf::from(format!(
        "shmbus_{y:04}{m:02}{d:02}-{:02}{:02}{:02}.mcap",
        s / 3600,
        s / 60 % 60,
        s % 60
    ))
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The name of part `n` of a split recording: `rec.mcap` gives `rec_0.mcap`, `rec_1.mcap`...
pub fn split_file_name(base: &Path, n: u32) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "shmbus".into());
    let ext = base
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mcap".into());
    base.with_file_name(format!("{stem}_{n}.{ext}"))
}

/// Nanoseconds as seconds with millisecond precision: `12.345 s`.
pub fn seconds(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// The messages of an MCAP file in file order (a shmbus recording's file order is receive-time
/// order), read as a stream: memory holds one chunk at a time. Records larger than
/// [`record_limit`] are refused, so a damaged length cannot make the reader allocate without
/// bound.
pub fn read_messages(path: &Path) -> std::io::Result<MessageReader<BufReader<File>>> {
    let file = File::open(path)?;
    let limit = record_limit(file.metadata()?.len());
    Ok(MessageReader::new_with_options(
        BufReader::with_capacity(1 << 20, file),
        LinearReaderOptions::default().with_record_length_limit(limit),
    ))
}

/// Run a step of an MCAP reader, turning a panic into an error. The `mcap` crate (0.26) can
/// still panic on some damaged files (an arithmetic overflow on a record longer than its
/// uncompressed chunk, in builds with overflow checks); a damaged file must give a message,
/// never a crash. After a panic the reader is not used again.
pub fn guarded<T>(step: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).map_err(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        format!("the MCAP reader failed on damaged data ({why})")
    })
}

/// Keep panics inside the `mcap` crate off standard error (they are caught by [`guarded`] and
/// reported as damage); every other panic is printed as usual.
pub fn quiet_reader_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_reader = info.location().is_some_and(|l| l.file().contains("/mcap-"));
        if !in_reader {
            default(info);
        }
    }));
}

/// Whether `path` ends with the MCAP magic, as a finished file does (a recorder that was killed
/// leaves a file without it, readable up to its last complete chunk).
pub fn is_finished(path: &Path) -> std::io::Result<bool> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let magic = mcap::MAGIC;
    if len < 2 * magic.len() as u64 {
        return Ok(false);
    }
    let mut tail = vec![0u8; magic.len()];
    file.seek(SeekFrom::End(-(magic.len() as i64)))?;
    file.read_exact(&mut tail)?;
    Ok(tail == magic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_survives_channel_metadata() {
        for spec in [
            Geometry {
                capacity: 1024,
                slot_size: 64,
                mode: Mode::Lossy,
                max_publishers: 4,
                max_subscribers: 16,
                type_info: TypeInfo::bytes(),
            },
            Geometry {
                capacity: 8,
                slot_size: 32,
                mode: Mode::Lossless,
                max_publishers: 1,
                max_subscribers: 2,
                type_info: TypeInfo {
                    name: "my::Odom".into(),
                    size: 32,
                    align: 8,
                },
            },
        ] {
            assert_eq!(geometry_from_metadata(&channel_metadata(&spec)), Ok(spec));
        }
    }

    #[test]
    fn bad_channel_metadata_names_the_key() {
        let mut md = channel_metadata(&Geometry {
            capacity: 8,
            slot_size: 8,
            mode: Mode::Lossless,
            max_publishers: 1,
            max_subscribers: 1,
            type_info: TypeInfo::bytes(),
        });
        md.insert(keys::CAPACITY.into(), "many".into());
        assert!(geometry_from_metadata(&md)
            .unwrap_err()
            .contains("capacity"));
        md.remove(keys::MODE);
        assert!(geometry_from_metadata(&md).unwrap_err().contains("mode"));
        assert!(geometry_from_metadata(&BTreeMap::new()).is_err());
    }

    #[test]
    fn utc_times() {
        assert_eq!(
            utc(1_709_211_909 * 1_000_000_000 + 7_000_000),
            "2024-02-29 13:05:09.007 UTC"
        );
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
    }

    #[test]
    fn file_names() {
        // 2024-02-29 13:05:09 UTC
        assert_eq!(
            default_file_name(1_709_211_909 * 1_000_000_000),
            PathBuf::from("shmbus_20240229-130509.mcap")
        );
        assert_eq!(
            split_file_name(Path::new("/x/rec.mcap"), 3),
            PathBuf::from("/x/rec_3.mcap")
        );
        assert_eq!(
            split_file_name(Path::new("rec"), 0),
            PathBuf::from("rec_0.mcap")
        );
    }

    #[test]
    fn clock_never_goes_back() {
        let c = Clock::start();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a && a >= c.start_ns());
    }
}
