//! `shmbus info`: what a recording holds, from its summary, or by reading it through when it
//! has none (a recorder that was killed, or a disk that filled up).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use mcap::read::ChunkReader;
use mcap::records::{Metadata, Record};
use mcap::sans_io::{
    LinearReadEvent, LinearReader, LinearReaderOptions, SummaryReadEvent, SummaryReader,
    SummaryReaderOptions,
};
use mcap::{McapError, McapResult, Summary};
use serde::Serialize;

use crate::error::{is_broken_pipe, CliError};
use crate::recording::{self, geometry_from_metadata, TopicCounts, STATS_METADATA};
use crate::util::{self, Table};

/// Summary records are small; a larger one is damage.
const SUMMARY_RECORD_LIMIT: usize = 64 << 20;

#[derive(Debug, Args)]
#[command(
    long_about = "Show what a recording holds: its time span, topics with their message counts, \
types and geometry, payload bytes, messages the recorder lost or dropped, chunks and their \
compression. A finished file is described from its summary; a file without one (its recorder was \
killed, or the disk filled up) is read through up to its last complete chunk.",
    after_help = "Examples:
  shmbus info run1.mcap
  shmbus info run1.mcap --json | jq '.topics[].messages'"
)]
pub struct InfoArgs {
    /// The recording.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What `info` reports about one file.
#[derive(Debug, Default, Serialize)]
pub struct FileInfo {
    path: PathBuf,
    size: u64,
    /// Ends with the MCAP magic (the recorder finished it).
    finished: bool,
    /// Described from the summary section (else read through).
    from_summary: bool,
    profile: String,
    library: String,
    recorder: Option<String>,
    overflow: Option<String>,
    start_ns: Option<u64>,
    end_ns: Option<u64>,
    duration_ns: u64,
    messages: u64,
    chunks: u64,
    compression: BTreeMap<String, ChunkBytes>,
    topics: Vec<TopicEntry>,
    /// Where reading stopped early, and why.
    damage: Option<String>,
}

/// Chunk bytes per compression.
#[derive(Debug, Default, Serialize, Clone, Copy)]
struct ChunkBytes {
    chunks: u64,
    compressed: u64,
    uncompressed: u64,
}

/// One channel.
#[derive(Debug, Default, Serialize)]
struct TopicEntry {
    topic: String,
    messages: u64,
    /// Payload bytes (from the recorder's counts, or counted while reading through).
    bytes: Option<u64>,
    lost: Option<u64>,
    dropped: Option<u64>,
    mode: Option<String>,
    capacity: Option<u32>,
    slot_size: Option<u32>,
    type_name: Option<String>,
    type_size: Option<u32>,
    type_align: Option<u32>,
    message_encoding: String,
}

pub fn run(args: &InfoArgs) -> Result<(), CliError> {
    recording::quiet_reader_panics();
    let info = inspect(&args.file)?;
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&info)
            .map_err(|e| CliError::failure(format!("encoding JSON: {e}")))?;
        s.push('\n');
        s
    } else {
        render(&info)
    };
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if !is_broken_pipe(&e) => return Err(CliError::io(e, "writing to standard output")),
        _ => {}
    }
    match &info.damage {
        Some(d) if info.finished => Err(CliError::failure(format!(
            "{} is damaged: {d}",
            info.path.display()
        ))),
        _ => Ok(()),
    }
}

/// Describe `path`. Errors only when it cannot be read at all or is not MCAP.
pub fn inspect(path: &Path) -> Result<FileInfo, CliError> {
    let cannot = |e: &dyn std::fmt::Display| {
        CliError::failure(format!("cannot read {}: {e}", path.display()))
    };
    let mut file = File::open(path).map_err(|e| cannot(&e))?;
    let size = file.metadata().map_err(|e| cannot(&e))?.len();
    let mut info = FileInfo {
        path: path.to_path_buf(),
        size,
        finished: recording::is_finished(path).map_err(|e| cannot(&e))?,
        ..FileInfo::default()
    };
    let (profile, library) = read_header(&mut file).map_err(|e| {
        CliError::failure(format!(
            "{} is not a readable MCAP file: {e}",
            path.display()
        ))
    })?;
    info.profile = profile;
    info.library = library;
    let summary = if info.finished {
        let damaged = |e: &dyn std::fmt::Display| {
            CliError::failure(format!("{} has a damaged summary: {e}", path.display()))
        };
        recording::guarded(|| read_summary(&mut file, size))
            .map_err(|e| damaged(&e))?
            .map_err(|e| damaged(&e))?
    } else {
        None
    };
    let read = match summary {
        Some(summary) => recording::guarded(|| from_summary(&mut info, &summary, &mut file, size)),
        None => match file.seek(SeekFrom::Start(0)) {
            Ok(_) => recording::guarded(|| read_through(&mut info, file)),
            Err(e) => return Err(cannot(&e)),
        },
    };
    if let Err(panicked) = read {
        info.damage = Some(panicked);
    }
    info.duration_ns = match (info.start_ns, info.end_ns) {
        (Some(s), Some(e)) => e.saturating_sub(s),
        _ => 0,
    };
    info.topics.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(info)
}

fn read_header(file: &mut File) -> McapResult<(String, String)> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = LinearReader::new_with_options(
        LinearReaderOptions::default().with_record_length_limit(1 << 20),
    );
    while let Some(event) = reader.next_event() {
        match event? {
            LinearReadEvent::ReadRequest(n) => {
                let got = file.read(reader.insert(n))?;
                reader.notify_read(got);
            }
            LinearReadEvent::Record { opcode, data } => {
                return match mcap::parse_record(opcode, data)? {
                    Record::Header(h) => Ok((h.profile, h.library)),
                    _ => Err(McapError::BadMagic),
                };
            }
        }
    }
    Err(McapError::UnexpectedEof)
}

fn read_summary(file: &mut File, size: u64) -> McapResult<Option<Summary>> {
    let mut reader = SummaryReader::new_with_options(
        SummaryReaderOptions::default()
            .with_file_size(size)
            .with_record_length_limit(SUMMARY_RECORD_LIMIT),
    );
    while let Some(event) = reader.next_event() {
        match event? {
            SummaryReadEvent::ReadRequest(n) => {
                let got = file.read(reader.insert(n))?;
                reader.notify_read(got);
            }
            SummaryReadEvent::SeekRequest(to) => {
                let at = file.seek(to)?;
                reader.notify_seeked(at);
            }
        }
    }
    Ok(reader.finish())
}

fn entry_for(channel: &mcap::Channel<'_>) -> TopicEntry {
    let mut t = TopicEntry {
        topic: channel.topic.clone(),
        message_encoding: channel.message_encoding.clone(),
        ..TopicEntry::default()
    };
    match geometry_from_metadata(&channel.metadata) {
        Ok(g) => {
            t.mode = Some(g.mode.to_string());
            t.capacity = Some(g.capacity);
            t.slot_size = Some(g.slot_size);
            t.type_name = Some(g.type_info.name);
            t.type_size = Some(g.type_info.size);
            t.type_align = Some(g.type_info.align);
        }
        Err(_) => t.type_name = channel.schema.as_ref().map(|s| s.name.clone()),
    }
    t
}

fn from_summary(info: &mut FileInfo, summary: &Summary, file: &mut File, size: u64) {
    info.from_summary = true;
    let counts = summary
        .stats
        .as_ref()
        .map(|s| s.channel_message_counts.clone())
        .unwrap_or_default();
    if let Some(stats) = &summary.stats {
        info.messages = stats.message_count;
        if stats.message_count > 0 {
            info.start_ns = Some(stats.message_start_time);
            info.end_ns = Some(stats.message_end_time);
        }
    }
    let mut ids: Vec<&u16> = summary.channels.keys().collect();
    ids.sort();
    for id in ids {
        let channel = &summary.channels[id];
        let mut t = entry_for(channel);
        t.messages = counts.get(id).copied().unwrap_or(0);
        info.topics.push(t);
    }
    for c in &summary.chunk_indexes {
        info.chunks += 1;
        let b = info.compression.entry(name_of(&c.compression)).or_default();
        b.chunks += 1;
        b.compressed += c.compressed_size;
        b.uncompressed += c.uncompressed_size;
    }
    for index in &summary.metadata_indexes {
        if index.name != STATS_METADATA || index.length > SUMMARY_RECORD_LIMIT as u64 {
            continue;
        }
        match read_record(file, size, index.offset, index.length) {
            Ok(Record::Metadata(m)) => add_recorder_counts(info, &m),
            Ok(_) => info.damage = Some("a metadata index points at another record".into()),
            Err(e) => info.damage = Some(format!("reading the recorder's counts: {e}")),
        }
    }
}

fn read_record(
    file: &mut File,
    size: u64,
    offset: u64,
    length: u64,
) -> McapResult<Record<'static>> {
    if offset.checked_add(length).is_none_or(|end| end > size) || length < 9 {
        return Err(McapError::BadIndex);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; length as usize];
    file.read_exact(&mut buf)?;
    let record = mcap::parse_record(buf[0], &buf[9..])?;
    Ok(record.into_owned())
}

fn name_of(compression: &str) -> String {
    if compression.is_empty() {
        "none".into()
    } else {
        compression.to_string()
    }
}

/// Fold a recorder's counts record into the topics.
fn add_recorder_counts(info: &mut FileInfo, m: &Metadata) {
    info.recorder = m.metadata.get("recorder").cloned();
    info.overflow = m.metadata.get("overflow").cloned();
    let Some(topics) = m.metadata.get("topics") else {
        return;
    };
    let Ok(topics) = serde_json::from_str::<Vec<TopicCounts>>(topics) else {
        info.damage = Some("the recorder's counts are not readable".into());
        return;
    };
    for tc in topics {
        if let Some(t) = info.topics.iter_mut().find(|t| t.topic == tc.topic) {
            // Counted while reading through wins over the recorder's count.
            t.bytes.get_or_insert(tc.counts.bytes);
            *t.lost.get_or_insert(0) += tc.counts.lost;
            *t.dropped.get_or_insert(0) += tc.counts.dropped;
        }
    }
}

/// Read every record up to the end or the first damage, counting as we go.
fn read_through(info: &mut FileInfo, file: File) {
    let mut source = BufReader::with_capacity(1 << 20, file);
    let mut reader = LinearReader::new_with_options(
        LinearReaderOptions::default()
            .with_emit_chunks(true)
            .with_skip_end_magic(!info.finished)
            .with_record_length_limit(recording::record_limit(info.size)),
    );
    let mut channels: HashMap<u16, usize> = HashMap::new();
    let mut metadata = Vec::new();
    let mut damage = None;
    'read: while let Some(event) = reader.next_event() {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                damage = Some(e.to_string());
                break;
            }
        };
        let (opcode, data) = match event {
            LinearReadEvent::ReadRequest(n) => match source.read(reader.insert(n)) {
                Ok(got) => {
                    reader.notify_read(got);
                    continue;
                }
                Err(e) => {
                    damage = Some(e.to_string());
                    break;
                }
            },
            LinearReadEvent::Record { opcode, data } => (opcode, data),
        };
        let record = match mcap::parse_record(opcode, data) {
            Ok(r) => r,
            Err(e) => {
                damage = Some(e.to_string());
                break;
            }
        };
        let mut records = vec![Ok(record.into_owned())];
        if let Some(Ok(Record::Chunk { header, data })) = records.first() {
            info.chunks += 1;
            let b = info
                .compression
                .entry(name_of(&header.compression))
                .or_default();
            b.chunks += 1;
            b.compressed += header.compressed_size;
            b.uncompressed += header.uncompressed_size;
            if header.uncompressed_size > 2 * recording::record_limit(info.size) as u64 {
                damage = Some(format!(
                    "a chunk claims {} uncompressed bytes",
                    header.uncompressed_size
                ));
                break;
            }
            let inner: Vec<McapResult<Record<'static>>> =
                match ChunkReader::new(header.clone(), data) {
                    Ok(r) => r.map(|r| r.map(Record::into_owned)).collect(),
                    Err(e) => vec![Err(e)],
                };
            records = inner;
        }
        for record in records {
            match record {
                Ok(Record::Channel(c)) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = channels.entry(c.id) {
                        let channel = mcap::Channel {
                            id: c.id,
                            topic: c.topic,
                            schema: None,
                            message_encoding: c.message_encoding,
                            metadata: c.metadata,
                        };
                        slot.insert(info.topics.len());
                        info.topics.push(entry_for(&channel));
                    }
                }
                Ok(Record::Message { header, data }) => {
                    let Some(t) = channels
                        .get(&header.channel_id)
                        .and_then(|&i| info.topics.get_mut(i))
                    else {
                        damage = Some(format!(
                            "a message of unknown channel {}",
                            header.channel_id
                        ));
                        break 'read;
                    };
                    t.messages += 1;
                    *t.bytes.get_or_insert(0) += data.len() as u64;
                    info.messages += 1;
                    info.start_ns = Some(
                        info.start_ns
                            .map_or(header.log_time, |s| s.min(header.log_time)),
                    );
                    info.end_ns = Some(
                        info.end_ns
                            .map_or(header.log_time, |e| e.max(header.log_time)),
                    );
                }
                Ok(Record::Metadata(m)) if m.name == STATS_METADATA => metadata.push(m),
                Ok(_) => {}
                Err(e) => {
                    damage = Some(e.to_string());
                    break 'read;
                }
            }
        }
    }
    for m in &metadata {
        add_recorder_counts(info, m);
    }
    if damage.is_some() {
        info.damage = damage;
    }
}

fn render(info: &FileInfo) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<12} {v}\n"));
    line(
        "file:",
        format!(
            "{} ({})",
            info.path.display(),
            util::human_bytes(info.size as f64)
        ),
    );
    line(
        "state:",
        match (info.finished, info.from_summary, &info.damage) {
            (true, true, None) => "finished (summary and index)".to_string(),
            (true, false, None) => "closed without summary (read through; e.g. the disk filled up)".to_string(),
            (true, _, Some(d)) => format!("DAMAGED: {d}"),
            (false, _, d) => format!(
                "not finished (its recorder was killed); read through up to its last complete chunk{}",
                d.as_ref().map(|d| format!(" (stopped at: {d})")).unwrap_or_default()
            ),
        },
    );
    line(
        "recorder:",
        format!(
            "{}{}",
            info.recorder.as_deref().unwrap_or(&info.library),
            info.overflow
                .as_ref()
                .map(|o| format!(", --overflow {o}"))
                .unwrap_or_default()
        ),
    );
    if let (Some(start), Some(end)) = (info.start_ns, info.end_ns) {
        line("start:", recording::utc(start));
        line("end:", recording::utc(end));
    }
    line("duration:", recording::seconds(info.duration_ns));
    line("messages:", info.messages.to_string());
    let compression: Vec<String> = info
        .compression
        .iter()
        .map(|(name, b)| {
            format!(
                "{name} {} -> {}",
                util::human_bytes(b.uncompressed as f64),
                util::human_bytes(b.compressed as f64)
            )
        })
        .collect();
    line(
        "chunks:",
        format!(
            "{}{}",
            info.chunks,
            if compression.is_empty() {
                String::new()
            } else {
                format!(" ({})", compression.join(", "))
            }
        ),
    );
    let mut t = Table::new(&[
        ("TOPIC", false),
        ("MESSAGES", true),
        ("BYTES", true),
        ("TYPE", false),
        ("MODE", false),
        ("SLOT", true),
        ("CAPACITY", true),
        ("LOST", true),
        ("DROPPED", true),
    ]);
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for topic in &info.topics {
        t.row(vec![
            topic.topic.clone(),
            topic.messages.to_string(),
            topic
                .bytes
                .map_or("-".into(), |b| util::human_bytes(b as f64)),
            match (&topic.type_name, topic.type_size) {
                (Some(n), Some(0)) | (Some(n), None) => n.clone(),
                (Some(n), Some(size)) => format!("{n} ({size} B)"),
                _ => "-".into(),
            },
            topic.mode.clone().unwrap_or_else(|| "-".into()),
            topic
                .slot_size
                .map_or("-".into(), |v| util::human_bytes(f64::from(v))),
            opt(topic.capacity.map(u64::from)),
            opt(topic.lost),
            opt(topic.dropped),
        ]);
    }
    s.push_str("topics:\n");
    s.push_str(&t.render());
    s
}
