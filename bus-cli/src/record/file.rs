//! One MCAP file of a recording: the writer, its chunks, and what is left when the disk fails.
//!
//! Chunks are closed by the recorder (every `chunk_size` bytes of records, and at least once a
//! second), and each closed chunk is handed to the kernel at once: a recorder killed at any
//! moment leaves a file whose every closed chunk is complete. When a write fails (a full disk,
//! a file-size limit) the file is cut back to the end of its last closed chunk and closed with
//! a footer without summary, which every MCAP reader accepts.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bus_client::Geometry;
use mcap::records::{op, MessageHeader, Metadata};
use mcap::{Compression, McapError, WriteOptions, Writer};

use crate::recording::{channel_metadata, LIBRARY, MESSAGE_ENCODING, PROFILE};

/// Bytes of a message record besides its payload: opcode, length, channel, sequence, times.
pub const MESSAGE_OVERHEAD: u64 = 1 + 8 + 2 + 4 + 8 + 8;

/// The file under the MCAP writer: buffered, and counting where it is (an atomic only so that
/// the writer can move to its thread; one thread uses it).
struct Out {
    file: BufWriter<fs::File>,
    pos: Arc<AtomicU64>,
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Out {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let at = self.file.seek(to)?;
        self.pos.store(at, Ordering::Relaxed);
        Ok(at)
    }
}

/// Why writing a file failed, and what was kept.
#[derive(Debug)]
pub struct WriteFailure {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub error: McapError,
    /// What was done about it.
    pub kept: String,
    /// Whether the file holds what was written before the failure (it was cut back or
    /// closed), rather than nothing.
    pub file_left: bool,
}

impl WriteFailure {
    /// One sentence for the user.
    pub fn message(&self) -> String {
        let cause = match &self.error {
            McapError::Io(e) if is_disk_full(e) => format!("the disk is full ({e})"),
            e => e.to_string(),
        };
        format!("writing {}: {cause}; {}", self.path.display(), self.kept)
    }
}

/// Whether `e` says the file cannot grow: no space, over quota, over the file-size limit.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::ENOSPC | libc_errno::EDQUOT | libc_errno::EFBIG)
    )
}

/// The errno values of a file that cannot grow (nix re-exports them without libc).
mod libc_errno {
    use nix::errno::Errno;
    pub const ENOSPC: i32 = Errno::ENOSPC as i32;
    pub const EDQUOT: i32 = Errno::EDQUOT as i32;
    pub const EFBIG: i32 = Errno::EFBIG as i32;
}

/// An open recording file.
pub struct File {
    writer: Writer<Out>,
    path: PathBuf,
    pos: Arc<AtomicU64>,
    /// The end of the last closed chunk (everything before it is in the kernel).
    last_good: u64,
    /// Record bytes in the open chunk.
    chunk_bytes: u64,
    chunk_opened: Option<Instant>,
    /// The first message's log time.
    pub first_log_time: Option<u64>,
    /// Messages written.
    pub messages: u64,
    /// Messages written before the last closed chunk's end.
    messages_closed: u64,
}

impl File {
    /// Create `path` (replacing it) and write the MCAP header.
    pub fn create(path: &Path, compression: Option<Compression>) -> Result<File, WriteFailure> {
        let fail = |error: McapError| WriteFailure {
            path: path.to_path_buf(),
            error,
            kept: "nothing was written".into(),
            file_left: false,
        };
        let file = fs::File::create(path).map_err(|e| fail(e.into()))?;
        let pos = Arc::new(AtomicU64::new(0));
        let out = Out {
            file: BufWriter::with_capacity(256 * 1024, file),
            pos: pos.clone(),
        };
        let mut writer = WriteOptions::new()
            .profile(PROFILE)
            .library(LIBRARY)
            .compression(compression)
            // The recorder closes chunks itself, to hand each one to the kernel when closed.
            .chunk_size(None)
            // Compress on the writer thread: the readers and the publishers need the cores.
            .compression_threads(0)
            .create(out)
            .map_err(fail)?;
        writer.flush().map_err(fail)?;
        let last_good = pos.load(Ordering::Relaxed);
        Ok(File {
            writer,
            path: path.to_path_buf(),
            pos,
            last_good,
            chunk_bytes: 0,
            chunk_opened: None,
            first_log_time: None,
            messages: 0,
            messages_closed: 0,
        })
    }

    /// Bytes in the file so far, counting the open chunk's records uncompressed.
    pub fn size(&self) -> u64 {
        self.last_good + self.chunk_bytes
    }

    /// Add the channel of `topic` (and the schema naming its type, for a typed topic).
    pub fn add_channel(&mut self, topic: &str, spec: &Geometry) -> Result<u16, McapError> {
        let schema = if spec.type_info.is_bytes() {
            0
        } else {
            // A named type without a schema: MCAP's empty encoding and no data.
            self.writer.add_schema(&spec.type_info.name, "", &[])?
        };
        let id =
            self.writer
                .add_channel(schema, topic, MESSAGE_ENCODING, &channel_metadata(spec))?;
        self.opened_chunk(64 + topic.len() as u64);
        Ok(id)
    }

    /// Write one message; returns whether the open chunk reached `chunk_size` and was closed.
    pub fn write(
        &mut self,
        channel_id: u16,
        sequence: u64,
        log_time: u64,
        payload: &[u8],
        chunk_size: u64,
    ) -> Result<bool, McapError> {
        let header = MessageHeader {
            channel_id,
            // MCAP's sequence is 32 bits: the bus sequence's low 32 bits.
            sequence: sequence as u32,
            log_time,
            // The slot carries no publish time yet: see docs/recording.md.
            publish_time: log_time,
        };
        self.writer.write_to_known_channel(&header, payload)?;
        self.first_log_time.get_or_insert(log_time);
        self.messages += 1;
        self.opened_chunk(MESSAGE_OVERHEAD + payload.len() as u64);
        if self.chunk_bytes >= chunk_size {
            self.close_chunk()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn opened_chunk(&mut self, bytes: u64) {
        self.chunk_bytes += bytes;
        self.chunk_opened.get_or_insert_with(Instant::now);
    }

    /// When the open chunk was opened, if one is.
    pub fn chunk_opened(&self) -> Option<Instant> {
        self.chunk_opened
    }

    /// Close the open chunk and hand the file's buffer to the kernel.
    pub fn close_chunk(&mut self) -> Result<(), McapError> {
        self.writer.flush()?;
        self.last_good = self.pos.load(Ordering::Relaxed);
        self.messages_closed = self.messages;
        self.chunk_bytes = 0;
        self.chunk_opened = None;
        Ok(())
    }

    /// Write the recorder's metadata record, the summary and the footer, and sync the file.
    pub fn finish(mut self, metadata: BTreeMap<String, String>) -> Result<PathBuf, WriteFailure> {
        let result = (|| {
            self.writer.write_metadata(&Metadata {
                name: crate::recording::STATS_METADATA.into(),
                metadata,
            })?;
            self.close_chunk()?;
            self.writer.finish()?;
            Ok(())
        })();
        if let Err(error) = result {
            return Err(self.salvage(error));
        }
        let path = self.path.clone();
        let out = self.writer.into_inner();
        let file = out.file.into_inner().map_err(|e| WriteFailure {
            path: path.clone(),
            error: e.into_error().into(),
            kept: "the file may lack its summary".into(),
            file_left: true,
        })?;
        let _ = file.sync_data();
        Ok(path)
    }

    /// After a failed write: cut the file back to its last closed chunk and end it with a
    /// footer without summary (a valid MCAP file), or leave it cut if even that fails.
    pub fn salvage(self, error: McapError) -> WriteFailure {
        let File {
            writer,
            path,
            last_good,
            messages_closed,
            ..
        } = self;
        // Without flushing: what the buffer holds is past the last closed chunk.
        let (mut file, _) = writer.into_inner().file.into_parts();
        let ended = file
            .set_len(last_good)
            .and_then(|()| file.seek(SeekFrom::Start(last_good)))
            .and_then(|_| file.write_all(&end_without_summary()))
            .and_then(|()| file.sync_data());
        let kept = match ended {
            Ok(()) => format!(
                "the file was closed at its last complete chunk ({last_good} bytes, {messages_closed} messages) and is a valid MCAP file"
            ),
            Err(e) => format!(
                "the file was cut at its last complete chunk ({last_good} bytes) but could not be closed ({e}); MCAP readers read it up to there"
            ),
        };
        WriteFailure {
            path,
            error,
            kept,
            file_left: true,
        }
    }
}

/// Data End (no CRC), a Footer without summary, and the closing magic.
fn end_without_summary() -> Vec<u8> {
    let mut v = Vec::with_capacity(50);
    v.push(op::DATA_END);
    v.extend_from_slice(&4u64.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes()); // data section CRC: not computed
    v.push(op::FOOTER);
    v.extend_from_slice(&20u64.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes()); // summary start: no summary
    v.extend_from_slice(&0u64.to_le_bytes()); // summary offset start
    v.extend_from_slice(&0u32.to_le_bytes()); // summary CRC
    v.extend_from_slice(mcap::MAGIC);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_client::{Mode, TypeInfo};

    /// A small finished recording of two topics, in `dir`.
    fn sample(dir: &Path, compression: Option<Compression>) -> Vec<u8> {
        let path = dir.join(format!("sample-{compression:?}.mcap"));
        let mut f = File::create(&path, compression).unwrap();
        let spec = |type_info| Geometry {
            capacity: 8,
            slot_size: 64,
            mode: Mode::Lossless,
            max_publishers: 1,
            max_subscribers: 1,
            type_info,
        };
        let a = f.add_channel("a/bytes", &spec(TypeInfo::bytes())).unwrap();
        let typed = TypeInfo {
            name: "u64".into(),
            size: 8,
            align: 8,
        };
        let b = f.add_channel("b/typed", &spec(typed)).unwrap();
        for i in 0..200u64 {
            f.write(a, i, 1000 + i, format!("m{i}").as_bytes(), 512)
                .unwrap();
            f.write(b, i, 1000 + i, &i.to_le_bytes(), 512).unwrap();
        }
        f.finish(BTreeMap::new()).unwrap();
        std::fs::read(&path).unwrap()
    }

    /// Both reading paths over `bytes` (`info`'s, and `play`'s guarded message stream), in
    /// a file; a panic that escapes fails the test.
    fn read_all_ways(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
        let _ = crate::info::inspect(path);
        if let Ok(mut reader) = crate::recording::read_messages(path) {
            while let Ok(Some(Ok(_))) = crate::recording::guarded(|| reader.next()) {}
        }
    }

    #[test]
    fn damaged_recordings_are_errors_never_panics() {
        let dir = std::env::temp_dir().join(format!("shmbus-test-damage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("damaged.mcap");
        crate::recording::quiet_reader_panics();
        for compression in [None, Some(Compression::Lz4), Some(Compression::Zstd)] {
            let good = sample(&dir, compression);
            // Cut anywhere.
            for len in (0..good.len()).step_by(37) {
                read_all_ways(&target, &good[..len]);
            }
            // One byte changed anywhere, to a few values (lengths become huge or zero).
            for at in (0..good.len()).step_by(17) {
                for v in [0xff, good[at] ^ 0x01] {
                    let mut bad = good.clone();
                    bad[at] = v;
                    read_all_ways(&target, &bad);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn salvage_leaves_a_file_that_ends_like_mcap() {
        let dir = std::env::temp_dir().join(format!("shmbus-test-salvage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("salvaged.mcap");
        let mut f = File::create(&path, None).unwrap();
        let c = f
            .add_channel(
                "t",
                &Geometry {
                    capacity: 8,
                    slot_size: 64,
                    mode: Mode::Lossy,
                    max_publishers: 1,
                    max_subscribers: 1,
                    type_info: TypeInfo::bytes(),
                },
            )
            .unwrap();
        for i in 0..10u64 {
            f.write(c, i, i, b"closed", 1 << 20).unwrap();
        }
        f.close_chunk().unwrap();
        f.write(c, 10, 10, b"open chunk", 1 << 20).unwrap();
        let failure = f.salvage(McapError::Io(io::Error::from_raw_os_error(
            libc_errno::ENOSPC,
        )));
        assert!(
            failure.message().contains("the disk is full"),
            "{}",
            failure.message()
        );
        let info = crate::info::inspect(&path).unwrap();
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["finished"], true, "{v}");
        assert_eq!(v["damage"], serde_json::Value::Null, "{v}");
        assert_eq!(v["messages"], 10, "the closed chunk's messages only: {v}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
