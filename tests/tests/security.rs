//! Security tests: what a hostile or careless party can and cannot do to shmbus, proven against
//! the real daemon process, real peer processes and real segments: each topic's two sealed
//! memory files (`memfd_create`, named `shmbus-control:<topic>` and `shmbus-data:<topic>`),
//! reached through the descriptors the daemon hands out and through `/proc/<pid>/fd`. Nothing
//! is ever created in /dev/shm (some tests check that too).
//!
//! docs/security.md is the threat model; every claim there names the test here that proves it.
//! Tests marked `#[ignore = "BUG: ..."]` show a missing protection: they fail today and pass once
//! it is fixed (run them with `cargo test -p bus-tests --test security -- --ignored`).
//!
//! Every wait is bounded; children are killed and reaped and temporary directories removed by
//! drop guards, even when a test fails; segments are freed by the kernel when their last
//! descriptor and mapping go. Tests that need a second uid (setuid to nobody, 65534) need root
//! and print a notice and return (or skip that part) when not root.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bus_client::{Bus, OpenError};
use bus_core::layout::{Geometry, Layout, Mode, SegmentHeader, TypeInfo, TYPE_NAME_MAX};
use bus_core::ring::{stamp, PublisherPort, RecvError, SendError, StartAt, SubscriberPort};
use bus_core::storage::{Region, Storage};
use bus_core::wait::WaitStrategy;
use bus_daemon::segment::{self as daemon_segment, Segment};
use bus_proto::fdpass;
use bus_proto::protocol::{ErrorCode, How, Request, Response, Role, PROTOCOL_VERSION};
use bus_proto::segment::{self, Access, MapError, Mapping, ShmRing, SEALS};
use bus_tests::{
    segment_file_names, strip_ansi, unique_topic, wait_until, Daemon, Peer, TempDir, TestMsg,
};

mod hostile;
use hostile::*;

// ------------------------------------------------------------------------------------------
// 1. Read-only subscriber mappings
// ------------------------------------------------------------------------------------------

#[test]
fn subscriber_mapping_is_read_only_a_write_through_a_sample_faults() {
    let d = Daemon::start(PEER, &[]);
    let topic = unique_topic("sec-ro");
    let bus = d.bus();
    let mut publisher = bus
        .publisher::<TestMsg>(&topic)
        .capacity(16)
        .open_or_create()
        .expect("publisher");
    let mut witness = bus
        .subscriber::<TestMsg>(&topic)
        .capacity(16)
        .open_or_create()
        .expect("witness subscriber");
    let mut writer = Peer::spawn(
        PEER,
        &[
            "write-through-sample",
            "--socket",
            d.socket_str(),
            "--topic",
            &topic,
        ],
    );
    writer.expect_line("ready", START);
    publisher
        .send_timeout(&TestMsg::new(1, 0), START)
        .expect("publish the first message");
    writer.expect_line("received", START);
    let status = writer.wait_exit(START);
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "the write through a sample did not fault (exit {status}); stderr:\n{}",
        writer.stderr_after_exit()
    );

    // The slot was not changed: the witness reads the message intact.
    let m = *witness.recv_timeout(START).expect("the witness reads it");
    assert!(m.is_intact() && m.publisher == 1 && m.seq == 0, "{m:?}");
    drop(witness);

    // The daemon released the dead subscriber, and keeps serving: a new subscriber process
    // gets 200 more messages, all intact and in order, through a ring of 16.
    let mut sub = Peer::spawn(
        PEER,
        &[
            "sub",
            "--socket",
            d.socket_str(),
            "--topic",
            &topic,
            "--count",
            "200",
        ],
    );
    sub.expect_line("ready", START);
    for seq in 1..=200 {
        publisher
            .send_timeout(&TestMsg::new(1, seq), TRANSFER)
            .unwrap_or_else(|e| panic!("publish {seq} after the fault: {e}"));
    }
    let summary = sub.finish(TRANSFER);
    assert_eq!(summary["received"], 200, "{summary}");
    assert_eq!(summary["error_count"], 0, "{summary}");
    assert!(daemon_alive(&d));
}

// ------------------------------------------------------------------------------------------
// 2. Corrupted headers
// ------------------------------------------------------------------------------------------

type Corruption = (&'static str, Box<dyn Fn(&mut SegmentHeader)>);

/// Every header field, each with values that no valid segment can have.
fn header_corruptions(good: &SegmentHeader) -> Vec<Corruption> {
    let mut v: Vec<Corruption> = Vec::new();
    let g = good.clone();
    macro_rules! each {
        ($field:literal, $f:ident, [$($val:expr),* $(,)?]) => {
            $( {
                let val = $val;
                v.push(($field, Box::new(move |h: &mut SegmentHeader| h.$f = val)));
            } )*
        };
    }
    v.push(("magic", Box::new(|h| h.magic = [0; 8])));
    v.push(("magic", Box::new(|h| h.magic[7] ^= 0x03)));
    v.push(("magic", Box::new(|h| h.magic = *b"shmbus\0\x01")));
    let version = bus_core::layout::LAYOUT_VERSION;
    each!(
        "layout_version",
        layout_version,
        [0, version - 1, version + 1, u32::MAX]
    );
    each!("header_len", header_len, [0, 255, 257, 4096, u32::MAX]);
    each!("mode", mode, [0, 3, u32::MAX]);
    each!(
        "capacity",
        capacity,
        [
            0,
            1,
            3,
            g.capacity + 1,
            g.capacity * 2,
            g.capacity / 2,
            1 << 31,
            u32::MAX
        ]
    );
    each!(
        "slot_size",
        slot_size,
        [
            0,
            g.slot_size + 64,
            g.slot_size * 4,
            (1 << 30) + 1,
            u32::MAX
        ]
    );
    each!("payload_offset", payload_offset, [0, 8, 17, 64, u32::MAX]);
    each!(
        "slot_stride",
        slot_stride,
        [0, 8, g.slot_stride - 64, g.slot_stride + 64, u64::MAX]
    );
    each!(
        "max_publishers",
        max_publishers,
        [0, g.max_publishers + 1, 257, u32::MAX]
    );
    each!(
        "max_subscribers",
        max_subscribers,
        [0, g.max_subscribers + 64, 257, u32::MAX]
    );
    each!("type_size", type_size, [g.slot_size + 1, u32::MAX]);
    each!("type_align", type_align, [0, 3, 64, 128, u32::MAX]);
    each!(
        "control_offset",
        control_offset,
        [0, g.control_offset + 8, u64::MAX]
    );
    each!(
        "publishers_offset",
        publishers_offset,
        [0, g.publishers_offset + 8, u64::MAX]
    );
    each!(
        "subscribers_offset",
        subscribers_offset,
        [0, g.subscribers_offset - 128, u64::MAX]
    );
    each!(
        "slots_offset",
        slots_offset,
        [0, g.slots_offset + 4096, g.slots_offset - 4096, u64::MAX]
    );
    each!(
        "total_len",
        total_len,
        [0, g.total_len + 4096, g.total_len - 4096, u64::MAX]
    );
    each!(
        "type_name_len",
        type_name_len,
        [0, TYPE_NAME_MAX as u32 + 1, u32::MAX]
    );
    for (at, byte) in [(0usize, 0u8), (1, 0x7f), (2, 0xff), (3, b'\n'), (0, 0x80)] {
        v.push((
            "type_name bytes",
            Box::new(move |h: &mut SegmentHeader| h.type_name[at] = byte),
        ));
    }
    v
}

#[test]
fn corrupted_header_fields_are_typed_errors() {
    for mode in [Mode::Lossless, Mode::Lossy] {
        let seg = TestSegment::create("hdr", &geometry(32, 200, mode));
        // A second, independent read-write mapping to corrupt through.
        let writable = seg.map_rw();
        let hdr = writable.as_ptr() as *mut SegmentHeader;
        // SAFETY: the mapping is page aligned, longer than the header, and plain data; nobody
        // holds a reference into the header (rings keep their own validated copy).
        let good = unsafe { std::ptr::read_volatile(hdr) };
        for access in [Access::Subscriber, Access::ReadWrite] {
            assert!(seg.open(access).is_ok(), "the intact segment opens");
        }
        let mut checked = 0;
        for (field, corrupt) in header_corruptions(&good) {
            let mut h = good.clone();
            corrupt(&mut h);
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile(hdr, h.clone()) };
            for access in [Access::Subscriber, Access::ReadWrite] {
                let r = catch_unwind(AssertUnwindSafe(|| seg.open(access)));
                match r {
                    Ok(Err(MapError::Invalid(_))) => {}
                    Ok(Err(e)) => panic!("{mode:?} {field} ({access:?}): untyped error {e}"),
                    Ok(Ok(_)) => panic!(
                        "{mode:?}: corrupted {field} was accepted ({access:?}); header {h:?}"
                    ),
                    Err(_) => panic!("{mode:?} {field} ({access:?}): open panicked"),
                }
            }
            checked += 1;
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile(hdr, good.clone()) };
        }
        assert!(checked >= 60, "only {checked} corruptions checked");
        assert!(
            seg.open(Access::Subscriber).is_ok(),
            "restored header opens"
        );

        // Segment files shorter than the header says, and empty ones. The daemon's files are
        // sealed, so nobody can shrink them (see
        // `a_client_truncating_its_segment_descriptor_cannot_kill_the_daemon`); short files
        // can only be handed over, and must be refused with a typed error: sealed copies of
        // the segment's two files, one of them cut short.
        let (control, data) = seg.fds(Access::ReadWrite);
        let (control_len, data_len) = (file_size(control), file_size(data));
        let open_copies = |control_len: usize, data_len: usize, access: Access| {
            let c = sealed_copy("shmbus-control:sectest/short", control, control_len);
            let d = sealed_copy("shmbus-data:sectest/short", data, data_len);
            catch_unwind(AssertUnwindSafe(|| {
                segment::open_ring(
                    c.as_fd(),
                    d.as_fd(),
                    access,
                    bus_proto::wake::WakeBell::new(),
                )
                .map(|_| "a ring")
            }))
        };
        for access in [Access::Subscriber, Access::ReadWrite] {
            // Whole copies open: what is refused below is refused for its length.
            assert!(
                matches!(open_copies(control_len, data_len, access), Ok(Ok(_))),
                "{mode:?}: whole sealed copies of the segment do not open ({access:?})"
            );
            for short in [data_len - 4096, 4096, 100, 0] {
                match open_copies(control_len, short, access) {
                    Ok(Err(MapError::Invalid(_))) => {}
                    other => panic!(
                        "{mode:?}: a data file cut to {short} of {data_len} bytes gave {other:?} ({access:?})"
                    ),
                }
            }
            // An empty control file cannot be laid out at all: refused before anything is
            // read (an error naming the sizes), never mapped, never a panic.
            match open_copies(0, data_len, access) {
                Ok(Err(MapError::Invalid(_))) => {}
                Ok(Err(MapError::Split(e))) if e.contains("not whole pages") => {}
                other => panic!("{mode:?}: an empty control file gave {other:?} ({access:?})"),
            }
        }
        // The real segment is intact and still opens.
        assert!(seg.open(Access::Subscriber).is_ok());
        drop(writable);
    }
}

#[test]
fn header_type_size_must_be_a_multiple_of_type_align() {
    let mut g = geometry(8, 64, Mode::Lossless);
    g.type_info = TypeInfo {
        name: "Pose".into(),
        size: 16,
        align: 8,
    };
    let seg = TestSegment::create("tsz", &g);
    let writable = seg.map_rw();
    let hdr = writable.as_ptr() as *mut SegmentHeader;
    // SAFETY: as in `corrupted_header_fields_are_typed_errors`.
    let mut h = unsafe { std::ptr::read_volatile(hdr) };
    h.type_size = 12; // no Rust type has size 12 and alignment 8
                      // SAFETY: as above.
    unsafe { std::ptr::write_volatile(hdr, h) };
    assert!(
        matches!(seg.open(Access::Subscriber), Err(MapError::Invalid(_))),
        "a header with type_size 12, type_align 8 was accepted"
    );
}

#[test]
fn client_refuses_a_segment_whose_header_disagrees_with_the_daemon() {
    let d = Daemon::start(PEER, &[]);
    let topic = unique_topic("sec-forge");
    // A hostile publisher gets the segment (read-write, as every publisher does) ...
    let hostile = RawClient::hello(d.socket());
    let fds = hostile.attach(&topic, Some(bytes_spec(16, 48, Mode::Lossless)), true);
    let m = Mapping::map(fds.control.as_fd(), fds.data.as_fd(), Access::ReadWrite).expect("map");
    let hdr = m.as_ptr() as *mut SegmentHeader;
    // SAFETY: as in `corrupted_header_fields_are_typed_errors`.
    let mut h = unsafe { std::ptr::read_volatile(hdr) };
    // ... and rewrites the geometry into another self-consistent one of the same length:
    // 8 slots of 112 bytes (stride 128) instead of 16 of 48 (stride 64).
    let forged = Layout::compute(&Geometry {
        capacity: 8,
        slot_size: 112,
        mode: Mode::Lossless,
        max_publishers: 4,
        max_subscribers: 4,
        type_info: TypeInfo::bytes(),
    })
    .expect("forged layout");
    assert_eq!(
        forged.total_len, h.total_len,
        "same length, so it validates"
    );
    h = forged.header();
    // SAFETY: as above.
    unsafe { std::ptr::write_volatile(hdr, h) };
    // An honest client now opens the topic: the daemon says 16 slots of 48 bytes, the header
    // says 8 of 112. It must refuse rather than read and write at the forged offsets.
    let bus = d.bus();
    let r = bus.subscriber::<[u8]>(&topic).open_or_create();
    assert!(
        r.is_err(),
        "a subscriber opened a segment whose header disagrees with the daemon's spec"
    );
    let r = bus.publisher::<[u8]>(&topic).open_or_create();
    assert!(
        r.is_err(),
        "a publisher opened a segment whose header disagrees with the daemon's spec"
    );
}

/// Ways a segment file can fail to be a sealed segment file, each applied to a copy of a real
/// segment file (the same bytes, so that the seals are the only difference).
fn unsealed_copies(name: &str, fd: BorrowedFd<'_>, dir: &Path) -> Vec<(&'static str, OwnedFd)> {
    let bytes = file_bytes(fd);
    let len = bytes.len();
    vec![
        (
            "a memfd made without MFD_ALLOW_SEALING",
            memfd_with(name, &bytes, len, Sealing::NotSealable),
        ),
        (
            "a sealable memfd without seals",
            memfd_with(name, &bytes, len, Sealing::With(0)),
        ),
        (
            "a memfd sealed against shrinking only",
            memfd_with(name, &bytes, len, Sealing::With(libc::F_SEAL_SHRINK)),
        ),
        (
            "a memfd sealed against growing only",
            memfd_with(name, &bytes, len, Sealing::With(libc::F_SEAL_GROW)),
        ),
        (
            "a memfd sealed against resizing whose seals are not sealed",
            memfd_with(
                name,
                &bytes,
                len,
                Sealing::With(libc::F_SEAL_SHRINK | libc::F_SEAL_GROW),
            ),
        ),
        (
            "a regular file",
            regular_copy(dir, &format!("{}-copy", name.replace([':', '/'], "-")), fd),
        ),
    ]
}

/// A file that can be resized under a mapping would let whoever holds it kill the mapper with
/// SIGBUS; clients (and the daemon, which maps with the same code) refuse to map a segment
/// unless both files carry the daemon's seals: `Mapping::map` and `open_ring` answer
/// `OpenError::Unsealed` for a plain memfd, a memfd with some seals or none, and a regular file,
/// in place of either file and for both kinds of mapping. Sealed copies of the same bytes open.
#[test]
fn client_refuses_unsealed_segment_descriptors() {
    let dir = TempDir::new("sec-unsealed");
    for mode in [Mode::Lossless, Mode::Lossy] {
        let seg = TestSegment::create("unsealed", &geometry(8, 64, mode));
        let (control, data) = seg.fds(Access::ReadWrite);
        let good_control = sealed_copy("shmbus-control:sectest/copy", control, file_size(control));
        let good_data = sealed_copy("shmbus-data:sectest/copy", data, file_size(data));
        for access in [Access::Subscriber, Access::ReadWrite] {
            assert!(
                segment::open_ring(
                    good_control.as_fd(),
                    good_data.as_fd(),
                    access,
                    bus_proto::wake::WakeBell::new()
                )
                .is_ok(),
                "{mode:?}: sealed copies of the segment do not open ({access:?})"
            );
        }
        let bad_controls = unsealed_copies("shmbus-control:sectest/copy", control, dir.path());
        let bad_data = unsealed_copies("shmbus-data:sectest/copy", data, dir.path());
        let mut checked = 0;
        for (file, bads) in [("control", &bad_controls), ("data", &bad_data)] {
            for (what, bad) in bads {
                let (c, d) = if file == "control" {
                    (bad.as_fd(), good_data.as_fd())
                } else {
                    (good_control.as_fd(), bad.as_fd())
                };
                for access in [Access::Subscriber, Access::ReadWrite] {
                    let case = format!("{mode:?}, {access:?}: the {file} file is {what}");
                    match catch_unwind(AssertUnwindSafe(|| Mapping::map(c, d, access))) {
                        Ok(Err(MapError::NotSealed(msg))) => {
                            assert!(msg.contains(file), "{case}: {msg}")
                        }
                        other => panic!(
                            "{case}: Mapping::map gave {:?}",
                            other.map(|r| r.map(|_| "a mapping"))
                        ),
                    }
                    match catch_unwind(AssertUnwindSafe(|| {
                        segment::open_ring(c, d, access, bus_proto::wake::WakeBell::new())
                    })) {
                        Ok(Err(MapError::NotSealed(_))) => {}
                        other => panic!(
                            "{case}: open_ring gave {:?}",
                            other.map(|r| r.map(|_| "a ring"))
                        ),
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 24, "cases checked");
    }
}

/// A fake daemon on `listener`, for one client connection: it answers `Hello` with `HelloOk`
/// and a status page, an attach with `Attached` for the spec asked for and the two
/// descriptors `segment_fds` makes from a fresh segment of that spec, a `Detach` with
/// `Detached`, anything else with an error. Returns the requests it served, in order.
fn fake_daemon(
    listener: std::os::unix::net::UnixListener,
    status: OwnedFd,
    segment_fds: impl Fn(&Segment) -> [OwnedFd; 2] + Send + 'static,
) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let Ok((stream, _)) = listener.accept() else {
            return seen;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        // The segments handed out live as long as the connection.
        let mut segments = Vec::new();
        while let Ok((req, _)) = fdpass::read_frame_with_fds::<Request>(&stream, 0) {
            let (resp, fds): (Response, Vec<OwnedFd>) = match &req {
                Request::Hello { .. } => (
                    Response::HelloOk {
                        version: PROTOCOL_VERSION,
                        daemon_version: "fake".into(),
                        daemon_pid: std::process::id(),
                        epoch: 1,
                    },
                    vec![status.try_clone().expect("dup the status page")],
                ),
                Request::Attach {
                    topic,
                    role,
                    how: How::Create { spec, .. },
                    ..
                } => {
                    let layout = Layout::compute(spec).expect("layout");
                    let seg = daemon_segment::create_segment(topic, &layout).expect("segment");
                    // Activate the port's table entry, as the daemon does.
                    let pid = std::process::id();
                    let (index, generation) = if *role == Role::Publisher {
                        seg.ring.attach_any_publisher(pid)
                    } else {
                        seg.ring.attach_any_subscriber(pid, StartAt::Latest)
                    }
                    .expect("a free table entry");
                    let fds = segment_fds(&seg).into();
                    segments.push(seg);
                    (
                        Response::Attached {
                            topic: topic.clone(),
                            spec: spec.clone(),
                            index: index as u32,
                            generation,
                            segment_len: layout.total_len,
                            created: true,
                        },
                        fds,
                    )
                }
                Request::Detach { .. } => (Response::Detached, Vec::new()),
                _ => (
                    Response::error(ErrorCode::BadRequest, "the fake daemon does not do that"),
                    Vec::new(),
                ),
            };
            seen.push(
                format!("{req:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string(),
            );
            let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
            if fdpass::write_frame_with_fds(&stream, &resp, &raw).is_err() {
                break;
            }
        }
        seen
    })
}

/// A status page as the daemon writes it (magic, epoch 1, pid), read-only.
fn fake_status_page(dir: &Path) -> OwnedFd {
    let mut page = vec![0u8; bus_proto::status::STATUS_LEN];
    page[..8].copy_from_slice(b"SHMBUSST");
    page[8..12].copy_from_slice(&1u32.to_ne_bytes());
    page[12..16].copy_from_slice(&std::process::id().to_ne_bytes());
    let path = dir.join("fake.status");
    std::fs::write(&path, page).expect("write the status page");
    OwnedFd::from(std::fs::File::open(&path).expect("open the status page"))
}

/// The same refusal end to end, in the client library: a daemon (here a fake one) that hands
/// a client an unsealed copy of either segment file gets `OpenError::Map(MapError::NotSealed)`
/// from `open()`, for publishers and subscribers, and the client detaches. The same fake
/// handing the sealed files is accepted, so the refusal is the seals'.
#[test]
fn client_library_refuses_unsealed_segment_descriptors_from_its_daemon() {
    fn own_files(s: &Segment) -> [OwnedFd; 2] {
        [
            s.fds.control.try_clone().expect("dup"),
            s.fds.data.try_clone().expect("dup"),
        ]
    }
    fn unsealed_control(s: &Segment) -> [OwnedFd; 2] {
        let c = s.fds.control.as_fd();
        let copy = memfd_with(
            "shmbus-control:fake",
            &file_bytes(c),
            file_size(c),
            Sealing::With(0),
        );
        [copy, s.fds.data.try_clone().expect("dup")]
    }
    fn unsealed_data(s: &Segment) -> [OwnedFd; 2] {
        let d = s.fds.data.as_fd();
        let copy = memfd_with(
            "shmbus-data:fake",
            &file_bytes(d),
            file_size(d),
            Sealing::NotSealable,
        );
        [s.fds.control.try_clone().expect("dup"), copy]
    }
    let dir = TempDir::new("sec-fake");
    type MakeFds = fn(&Segment) -> [OwnedFd; 2];
    let cases: [(&str, bool, MakeFds); 3] = [
        ("the daemon's own sealed files", true, own_files),
        (
            "an unsealed copy of the control file",
            false,
            unsealed_control,
        ),
        ("an unsealed copy of the data file", false, unsealed_data),
    ];
    for (n, (what, accepted, make)) in cases.into_iter().enumerate() {
        for publisher in [true, false] {
            let role = if publisher { "publisher" } else { "subscriber" };
            let socket = dir.path().join(format!("fake-{n}-{role}.sock"));
            let listener =
                std::os::unix::net::UnixListener::bind(&socket).expect("bind the fake daemon");
            let fake = fake_daemon(listener, fake_status_page(dir.path()), make);
            let bus = Bus::connect_to(&socket).expect("connect to the fake daemon");
            let topic = format!("fake/t{n}");
            let r = if publisher {
                bus.publisher::<[u8]>(&topic)
                    .capacity(8)
                    .slot_size(64)
                    .open_or_create()
                    .map(drop)
            } else {
                bus.subscriber::<[u8]>(&topic)
                    .capacity(8)
                    .slot_size(64)
                    .open_or_create()
                    .map(drop)
            };
            drop(bus);
            let seen = fake.join().expect("the fake daemon");
            match (accepted, r) {
                (true, Ok(())) => {}
                (
                    false,
                    Err(OpenError::Map {
                        source: MapError::NotSealed(_),
                        ..
                    }),
                ) => {
                    assert_eq!(
                        seen.last().map(String::as_str),
                        Some("Detach"),
                        "{what}, {role}: the client did not detach: {seen:?}"
                    );
                }
                (_, r) => panic!("{what}, {role}: open gave {r:?} (requests {seen:?})"),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// 3. Corrupted slots, counters and cursors
// ------------------------------------------------------------------------------------------

type Sub = SubscriberPort<bus_core::storage::RawStorage<Mapping>, bus_proto::wake::WakeBell>;
type Pub = PublisherPort<bus_core::storage::RawStorage<Mapping>, bus_proto::wake::WakeBell>;

/// A segment with one publisher port (its own read-write mapping) and one subscriber port (its
/// own subscriber mapping), and the creator's ring to corrupt things through.
struct Rig {
    seg: TestSegment,
    publisher: Option<Pub>,
    subscriber: Option<Sub>,
    slot_size: usize,
    capacity: u64,
}

impl Rig {
    fn new(mode: Mode) -> Rig {
        Rig::with(mode, |_| {})
    }

    /// `before_attach` may corrupt the ring before the subscriber attaches.
    fn with(mode: Mode, before_attach: impl FnOnce(&ShmRing)) -> Rig {
        let seg = TestSegment::create("slots", &geometry(8, 64, mode));
        let pub_ring = seg.open(Access::ReadWrite).expect("publisher mapping");
        let sub_ring = seg.open(Access::Subscriber).expect("subscriber mapping");
        let (pi, pg) = seg.ring().attach_any_publisher(1).expect("publisher entry");
        let publisher = PublisherPort::new(pub_ring, pi, pg).expect("publisher port");
        before_attach(seg.ring());
        let (si, sg) = seg
            .ring()
            .attach_any_subscriber(2, StartAt::Latest)
            .expect("subscriber entry");
        let subscriber = SubscriberPort::new(sub_ring, si, sg).expect("subscriber port");
        Rig {
            seg,
            publisher: Some(publisher),
            subscriber: Some(subscriber),
            slot_size: 64,
            capacity: 8,
        }
    }

    fn ring(&self) -> &ShmRing {
        self.seg.ring()
    }

    fn claim(&self) -> u64 {
        self.ring().storage().control().claim.load(Ordering::SeqCst)
    }

    fn set_claim(&self, v: u64) {
        self.ring()
            .storage()
            .control()
            .claim
            .store(v, Ordering::SeqCst);
    }

    fn slot_of(&self, seq: u64) -> usize {
        (seq % self.capacity) as usize
    }

    fn set_stamp(&self, slot: usize, v: u64) {
        self.ring()
            .storage()
            .slot(slot)
            .stamp
            .store(v, Ordering::SeqCst);
    }

    fn set_len(&self, slot: usize, v: u32) {
        self.ring()
            .storage()
            .slot(slot)
            .len
            .store(v, Ordering::SeqCst);
    }

    fn set_cursor(&self, index: usize, v: u64) {
        if let Some(e) = self.ring().storage().subscriber(index) {
            e.cursor.store(v, Ordering::SeqCst);
        }
    }

    /// Runs one subscriber call (copying out) under the watchdog; panics on a hang, a panic, or
    /// a message longer than the slot. Returns the outcome.
    fn recv_into(&mut self, what: &str) -> Result<(u64, usize), RecvError> {
        let mut sub = self.subscriber.take().expect("the subscriber");
        let slot_size = self.slot_size;
        let (outcome, handle) = bounded(CALL_BOUND, move || {
            let mut buf = vec![0u8; slot_size];
            let r = sub.try_recv_into(&mut buf);
            (sub, r)
        });
        match outcome {
            Outcome::Done((sub, r)) => {
                let _ = handle.join();
                self.subscriber = Some(sub);
                if let Ok((_, len)) = r {
                    assert!(
                        len <= slot_size,
                        "{what}: a {len}-byte message from a {slot_size}-byte slot"
                    );
                }
                r
            }
            Outcome::Panicked(p) => panic!("{what}: the subscriber panicked: {p}"),
            Outcome::Hung => {
                panic!("{what}: the subscriber call did not return within {CALL_BOUND:?}")
            }
        }
    }

    /// Like `recv_into` for the zero-copy path (lossless): `try_recv` and the sample's length
    /// and sequence.
    fn recv_in_place(&mut self, what: &str) -> Result<(u64, usize), RecvError> {
        let mut sub = self.subscriber.take().expect("the subscriber");
        let slot_size = self.slot_size;
        let (outcome, handle) = bounded(CALL_BOUND, move || {
            let r = sub
                .try_recv()
                .map(|s| (s.sequence(), s.bytes().len(), s.len()));
            (sub, r)
        });
        match outcome {
            Outcome::Done((sub, r)) => {
                let _ = handle.join();
                self.subscriber = Some(sub);
                r.map(|(seq, bytes, len)| {
                    assert!(
                        bytes <= slot_size && len <= slot_size,
                        "{what}: oversize sample {len}"
                    );
                    (seq, bytes)
                })
            }
            Outcome::Panicked(p) => panic!("{what}: the subscriber panicked: {p}"),
            Outcome::Hung => {
                panic!("{what}: the subscriber call did not return within {CALL_BOUND:?}")
            }
        }
    }

    /// Runs `try_send` under the watchdog. On a hang, `unwedge` is called (to repair the state
    /// so the thread can finish) and `Err(description)` returned.
    fn try_send(
        &mut self,
        what: &str,
        unwedge: impl FnOnce(&Rig),
    ) -> Result<Result<u64, SendError>, String> {
        self.publish(what, None, unwedge)
    }

    /// Runs `try_send` (`timeout` None) or `send` with `timeout` (busy-polling) under the
    /// watchdog. On a hang, `unwedge` is called (to repair the state so the thread can finish)
    /// and `Err(description)` returned.
    fn publish(
        &mut self,
        what: &str,
        timeout: Option<Duration>,
        unwedge: impl FnOnce(&Rig),
    ) -> Result<Result<u64, SendError>, String> {
        let mut publisher = self.publisher.take().expect("the publisher");
        let op = if timeout.is_some() {
            "send(timeout)"
        } else {
            "try_send"
        };
        let (outcome, handle) = bounded(CALL_BOUND, move || {
            let r = match timeout {
                None => publisher.try_send(b"payload"),
                Some(t) => publisher.send(b"payload", WaitStrategy::BusyPoll, Some(t)),
            };
            (publisher, r)
        });
        match outcome {
            Outcome::Done((p, r)) => {
                let _ = handle.join();
                self.publisher = Some(p);
                Ok(r)
            }
            Outcome::Panicked(p) => Err(format!("{what}: {op} panicked: {p}")),
            Outcome::Hung => {
                unwedge(self);
                let joined = join_within(handle, Duration::from_secs(5));
                Err(format!(
                    "{what}: {op} did not return within {CALL_BOUND:?} (unwedged: {joined})"
                ))
            }
        }
    }

    fn send_ok(&mut self, what: &str) -> u64 {
        match self.try_send(what, |_| {}) {
            Ok(Ok(seq)) => seq,
            other => panic!("{what}: an honest send failed: {other:?}"),
        }
    }
}

#[test]
fn corrupted_slots_never_panic_hang_or_read_out_of_bounds() {
    // --- slot lengths beyond the slot: skipped and counted, never read ---
    for mode in [Mode::Lossless, Mode::Lossy] {
        for bad_len in [65u32, 4096, u32::MAX / 2, u32::MAX] {
            let mut rig = Rig::new(mode);
            let seq = rig.claim();
            rig.send_ok("first");
            rig.send_ok("second");
            rig.set_len(rig.slot_of(seq), bad_len);
            let what = format!("{mode:?} len {bad_len}");
            let r = if mode == Mode::Lossless {
                rig.recv_in_place(&what)
            } else {
                rig.recv_into(&what)
            };
            // The corrupted message is skipped; the next one is delivered.
            assert!(matches!(r, Ok((1, 7))), "{what}: got {r:?}");
            assert_eq!(
                rig.subscriber.as_ref().map(|s| s.corrupt()),
                Some(1),
                "{what}"
            );
            assert_eq!(rig.recv_into(&what), Err(RecvError::Empty), "{what}");
        }
    }

    // --- stamps: random, from the future, from the past ---
    for mode in [Mode::Lossless, Mode::Lossy] {
        let mut rng = Rng(7);
        for case in 0..300 {
            let mut rig = Rig::new(mode);
            let base = rig.claim();
            rig.send_ok("honest");
            let slot = rig.slot_of(base);
            let v = match case % 6 {
                0 => rng.next(),
                1 => stamp::pack(base + 1 + rng.below(1 << 20), rng.below(4)),
                2 => stamp::pack(base.saturating_sub(1 + rng.below(16)), rng.below(4)),
                3 => stamp::pack(base, stamp::WRITING),
                4 => u64::MAX - rng.below(8),
                _ => rng.below(64),
            };
            rig.set_stamp(slot, v);
            let what = format!("{mode:?} stamp {v:#x} for seq {base}");
            let r = rig.recv_into(&what);
            match r {
                Err(RecvError::Empty) | Err(RecvError::Lagged(_)) | Ok(_) => {}
                other => panic!("{what}: {other:?}"),
            }
            // Calls keep returning (no hang) whatever comes next.
            for _ in 0..3 {
                let _ = rig.recv_into(&what);
            }
        }
    }

    // --- the claim counter: 0, below the capacity, and on lossless topics u64::MAX ---
    for mode in [Mode::Lossless, Mode::Lossy] {
        for claim in [0u64, 1, 7] {
            let mut rig = Rig::new(mode);
            rig.send_ok("honest");
            rig.set_claim(claim);
            let what = format!("{mode:?} claim {claim}");
            assert_eq!(
                rig.try_send(&what, |_| {}),
                Ok(Err(SendError::Corrupted)),
                "{what}"
            );
            // The subscriber still gets what was committed, then nothing.
            assert!(matches!(rig.recv_into(&what), Ok((0, 7))), "{what}");
            for _ in 0..3 {
                match rig.recv_into(&what) {
                    Err(RecvError::Empty) | Err(RecvError::Lagged(_)) => {}
                    other => panic!("{what}: {other:?}"),
                }
            }
        }
    }
    {
        let mut rig = Rig::new(Mode::Lossless);
        rig.set_claim(u64::MAX);
        assert_eq!(
            rig.try_send("lossless claim u64::MAX", |_| {}),
            Ok(Err(SendError::Corrupted))
        );
        for _ in 0..3 {
            match rig.recv_into("lossless claim u64::MAX") {
                Err(RecvError::Empty) | Err(RecvError::Lagged(_)) => {}
                other => panic!("lossless claim u64::MAX: {other:?}"),
            }
        }
    }

    // --- subscriber cursors in the shared table ---
    {
        // A cursor written back to 0 holds the lossless ring: publishers get `Full` (typed, and
        // the daemon evicts such a subscriber after --stuck-timeout-ms) at their next rescan,
        // although the subscriber has read everything.
        let mut rig = Rig::new(Mode::Lossless);
        rig.send_ok("honest");
        assert!(matches!(rig.recv_into("read it"), Ok((0, 7))));
        let index = rig.subscriber.as_ref().map_or(0, |s| s.index());
        rig.set_cursor(index, 0);
        let mut sent = 0;
        let full = loop {
            match rig.try_send("cursor 0", |_| {}) {
                Ok(Ok(_)) if sent < 16 => sent += 1,
                other => break other,
            }
        };
        assert_eq!(
            full,
            Ok(Err(SendError::Full)),
            "a cursor of 0 holds every slot"
        );
        assert_eq!(sent, 7, "the cached limit ran out after 7 more sends");
        // A cursor of u64::MAX protects nothing: publishers go on; this subscriber's own
        // reads (its private cursor) are unaffected.
        rig.set_cursor(index, u64::MAX);
        for n in 0..20 {
            let r = rig.try_send("cursor u64::MAX", |_| {});
            assert!(
                matches!(r, Ok(Ok(_))),
                "send {n} with cursor u64::MAX: {r:?}"
            );
        }
        match rig.recv_in_place("cursor u64::MAX") {
            Ok(_) | Err(RecvError::Empty) | Err(RecvError::Lagged(_)) => {}
            other => panic!("cursor u64::MAX: {other:?}"),
        }
    }

    // --- a storm: random corruption of every shared word between honest calls ---
    for mode in [Mode::Lossless, Mode::Lossy] {
        let mut rng = Rng(42 + mode as u64);
        let mut rig = Rig::new(mode);
        for round in 0..400 {
            let base = rig.claim();
            let slot = rng.below(8) as usize;
            match rng.below(4) {
                0 => rig.set_len(slot, rng.next() as u32),
                1 => rig.set_stamp(
                    slot,
                    stamp::pack(
                        base.wrapping_add(rng.below(32)).wrapping_sub(16),
                        rng.below(4),
                    ),
                ),
                2 => rig.set_stamp(slot, rng.next()),
                _ => rig.set_len(slot, rng.below(80) as u32),
            }
            let what = format!("{mode:?} storm round {round}");
            for _ in 0..2 {
                if mode == Mode::Lossless {
                    let _ = rig.recv_in_place(&what);
                } else {
                    let _ = rig.recv_into(&what);
                }
            }
        }
    }
}

/// The unbounded wait in `begin_write`: a garbage stamp in the slot a publisher claims.
#[test]
fn publisher_does_not_hang_on_a_stale_slot_stamp() {
    let mut problems = Vec::new();
    for mode in [Mode::Lossless, Mode::Lossy] {
        for (stale, timeout) in [
            (0u64, None),
            (stamp::pack(0, stamp::COMMITTED), None),
            (stamp::pack(0, stamp::SKIPPED), None),
            (0, Some(Duration::from_millis(100))),
        ] {
            let mut rig = Rig::new(mode);
            rig.send_ok("honest");
            let next = rig.claim();
            let slot = rig.slot_of(next);
            // The claimant of `next` waits for the slot to show `next - capacity` finished;
            // the slot says sequence 0 instead, which is older still and never changes.
            rig.set_stamp(slot, stale);
            let what = format!("{mode:?}: claim {next}, slot {slot} stamp {stale:#x}");
            let capacity = rig.capacity;
            let r = rig.publish(&what, timeout, move |rig| {
                rig.set_stamp(slot, stamp::pack(next - capacity, stamp::SKIPPED))
            });
            if let Err(e) = r {
                problems.push(e);
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The same unbounded wait, reached through the claim counter: a lossy publisher (or a
/// lossless one with no subscriber) claims a sequence whose predecessor will never be written.
#[test]
fn lossy_publisher_does_not_hang_when_the_claim_jumps_ahead() {
    let mut problems = Vec::new();
    for jump in [9u64, 64, 1 << 40] {
        let mut rig = Rig::new(Mode::Lossy);
        rig.send_ok("honest");
        let s = rig.claim() + jump;
        rig.set_claim(s);
        let slot = rig.slot_of(s);
        let capacity = rig.capacity;
        let what = format!("lossy: claim advanced by {jump} to {s}");
        let r = rig.try_send(&what, move |rig| {
            rig.set_stamp(slot, stamp::pack(s - capacity, stamp::SKIPPED))
        });
        if let Err(e) = r {
            problems.push(e);
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn lossy_publisher_survives_a_claim_of_u64_max() {
    let mut rig = Rig::new(Mode::Lossy);
    rig.set_claim(u64::MAX);
    let slot = rig.slot_of(u64::MAX);
    let capacity = rig.capacity;
    let r = rig.try_send("lossy claim u64::MAX", move |rig| {
        rig.set_stamp(slot, stamp::pack(u64::MAX - capacity, stamp::SKIPPED));
        rig.set_claim(capacity);
    });
    assert!(
        matches!(r, Ok(Err(SendError::Corrupted)) | Ok(Err(SendError::Full))),
        "{r:?}"
    );
}

#[test]
fn subscriber_survives_a_sequence_below_the_first() {
    for mode in [Mode::Lossless, Mode::Lossy] {
        // A hostile publisher wrote claim = 0 before an honest subscriber joined (the daemon
        // then sets its cursor to 0), and stamps slot 0 as "message 0, committed".
        let mut rig = Rig::with(mode, |ring| {
            ring.storage().control().claim.store(0, Ordering::SeqCst);
        });
        rig.set_len(0, 4);
        rig.set_stamp(0, stamp::pack(0, stamp::COMMITTED));
        let what = format!("{mode:?}: claim 0 at attach, stamp of seq 0 committed");
        let mut sub = rig.subscriber.take().expect("subscriber");
        let (outcome, handle) = bounded(CALL_BOUND, move || {
            let mut buf = [0u8; 64];
            match mode {
                Mode::Lossless => sub.try_recv().map(|s| s.sequence()),
                Mode::Lossy => sub.try_recv_into(&mut buf).map(|r| r.0),
            }
        });
        let _ = handle.join();
        match outcome {
            Outcome::Done(_) => {}
            Outcome::Panicked(p) => panic!("{what}: panicked: {p}"),
            Outcome::Hung => panic!("{what}: hung"),
        }
    }
}

#[test]
fn subscriber_survives_a_cursor_at_u64_max() {
    for state in [stamp::SKIPPED, stamp::COMMITTED] {
        let mut rig = Rig::with(Mode::Lossless, |ring| {
            ring.storage()
                .control()
                .claim
                .store(u64::MAX, Ordering::SeqCst);
        });
        let slot = rig.slot_of(u64::MAX);
        rig.set_len(slot, 4);
        rig.set_stamp(slot, stamp::pack(u64::MAX, state));
        let what = format!("cursor u64::MAX, stamp state {state}");
        let mut sub = rig.subscriber.take().expect("subscriber");
        let (outcome, handle) = bounded(CALL_BOUND, move || {
            let mut buf = [0u8; 64];
            let _ = sub.try_recv_into(&mut buf);
            let _ = sub.try_recv_into(&mut buf);
        });
        let _ = handle.join();
        match outcome {
            Outcome::Done(()) => {}
            Outcome::Panicked(p) => panic!("{what}: panicked: {p}"),
            Outcome::Hung => panic!("{what}: hung"),
        }
    }
}

/// An honest subscriber process and publisher process on `topic` (lossless, `count` messages,
/// one every millisecond), both ready when this returns.
fn honest_pair(d: &Daemon, topic: &str, count: &str, timeout_ms: &str) -> (Peer, Peer) {
    let common = [
        "--socket",
        d.socket_str(),
        "--topic",
        topic,
        "--count",
        count,
    ];
    let mut sub = Peer::spawn(
        PEER,
        &[&["sub"], &common[..], &["--timeout-ms", timeout_ms]].concat(),
    );
    sub.expect_line("ready", START);
    let mut publ = Peer::spawn(
        PEER,
        &[&["pub"], &common[..], &["--interval-us", "1000", "--ready"]].concat(),
    );
    publ.expect_line("ready", START);
    (sub, publ)
}

/// Every client of a topic receives descriptors of its two segment files (a publisher both
/// read-write). Were the files resizable, `ftruncate` on one would pull the memory from under
/// every mapping, and the next access by anyone (the daemon touches every lossless topic every
/// 10 ms) would be a SIGBUS. The files are sealed against shrinking and growing, the seals
/// themselves sealed, and a subscriber's data descriptor and every client's status page
/// descriptor are read-only: every attempt fails, and the daemon and the honest peers go on.
#[test]
fn a_client_truncating_its_segment_descriptor_cannot_kill_the_daemon() {
    const N: u64 = 1500;
    let mut d = Daemon::start(PEER, &[]);
    let topic = unique_topic("sec-trunc");
    let count = N.to_string();
    // An honest subscriber and publisher process exchange messages (lossless) the whole time.
    let (mut sub, mut publ) = honest_pair(&d, &topic, &count, "60000");

    // A hostile publisher: both files, read-write.
    let hostile = RawClient::hello(d.socket());
    let fds = hostile.attach(&topic, None, true);
    let files = [("control", fds.control.as_fd()), ("data", fds.data.as_fd())];
    let sizes: Vec<usize> = files.iter().map(|(_, fd)| file_size(*fd)).collect();
    for ((what, fd), &size) in files.iter().zip(&sizes) {
        // Read-write: what stops it below is the seals, not the access mode.
        assert_eq!(
            access_mode(*fd),
            libc::O_RDWR,
            "the publisher's {what} descriptor"
        );
        let seals = segment::seals(*fd).expect("F_GET_SEALS");
        assert_eq!(seals & SEALS, SEALS, "{what} file seals {seals:#x}");
        let size = size as libc::off_t;
        for len in [0, 1, size - 4096, size + 4096, 1 << 30] {
            assert_eq!(
                ftruncate_errno(*fd, len),
                libc::EPERM,
                "the publisher's {what} file ({size} bytes) was resized to {len}"
            );
        }
        // Growing by fallocate is refused too (F_SEAL_GROW).
        // SAFETY: a valid descriptor; growing it is the attack under test.
        let rc = unsafe { libc::fallocate(fd.as_raw_fd(), 0, size, 4096) };
        assert_eq!(rc_errno(rc), libc::EPERM, "fallocate grew the {what} file");
        // And the seals cannot be changed: F_SEAL_SEAL.
        assert_eq!(
            add_seals_errno(*fd, libc::F_SEAL_WRITE),
            libc::EPERM,
            "{what}: a seal was added"
        );
    }

    // A hostile subscriber: the control file read-write (sealed), the data file read-only.
    let hostile_sub = RawClient::hello(d.socket());
    let (sfds, (index, generation)) = hostile_sub.attach_port(&topic, None, false);
    assert_eq!(access_mode(sfds.data.as_fd()), libc::O_RDONLY);
    for len in [0, 1 << 30] {
        assert_eq!(
            ftruncate_errno(sfds.control.as_fd(), len),
            libc::EPERM,
            "the subscriber's control file was resized to {len}"
        );
        // Not open for writing: EINVAL, before the seals are even looked at.
        assert_eq!(
            ftruncate_errno(sfds.data.as_fd(), len),
            libc::EINVAL,
            "the subscriber's read-only data descriptor was resized to {len}"
        );
    }
    // Release the hostile subscriber so that it does not hold the lossless ring.
    match hostile_sub.request(&Request::Detach {
        topic: topic.clone(),
        role: Role::Subscriber,
        index,
        generation,
    }) {
        Ok((Response::Detached, _)) => {}
        other => panic!("detach the hostile subscriber: {other:?}"),
    }
    // The status page (which the daemon maps read-write) comes read-only with every hello.
    for client in [&hostile, &hostile_sub] {
        let status = client.status.as_ref().expect("a status page descriptor");
        assert_eq!(access_mode(status.as_fd()), libc::O_RDONLY);
        assert_eq!(ftruncate_errno(status.as_fd(), 0), libc::EINVAL);
    }

    // The files kept their sizes, and this process can map them without fear of a SIGBUS.
    for ((what, fd), &size) in files.iter().zip(&sizes) {
        assert_eq!(file_size(*fd), size, "the {what} file changed size");
    }
    let ring = segment::open_ring(
        fds.control.as_fd(),
        fds.data.as_fd(),
        Access::ReadWrite,
        bus_proto::wake::WakeBell::new(),
    )
    .expect("the hostile publisher maps its segment");
    assert!(!ring.is_closed());

    // The daemon looks at every lossless topic's subscribers every 10 ms: give it 100 passes.
    let died = d.wait_exit(Duration::from_secs(1));
    assert!(
        died.is_none(),
        "the daemon died ({:?}, signal {:?}) after clients tried to resize their segment files; log:\n{}",
        died,
        died.and_then(|s| s.signal()),
        d.log()
    );
    // It still answers, and lists the topic.
    let c = RawClient::hello(d.socket());
    match c.request(&Request::List) {
        Ok((Response::Topics { topics, .. }, _)) => {
            assert!(topics.iter().any(|t| t.name == topic), "{topics:?}")
        }
        other => panic!("list: {other:?}"),
    }
    // The honest peers got through every message, lossless, in order, intact.
    let sent = publ.finish(TRANSFER);
    assert_eq!(sent["sent"], N, "{sent}");
    let summary = sub.finish(TRANSFER);
    assert_eq!(summary["received"], N, "{summary}");
    assert_eq!(summary["error_count"], 0, "{summary}");
    assert!(daemon_alive(&d), "the daemon died; log:\n{}", d.log());
}

// ------------------------------------------------------------------------------------------
// 4. Garbage on the socket
// ------------------------------------------------------------------------------------------

fn assert_error_then_closed(what: &str, answer: &[u8], eof: bool, code: ErrorCode) {
    assert!(eof, "{what}: the daemon did not close the connection");
    let frames = decode_frames(answer);
    assert!(
        matches!(frames.as_slice(), [Response::Error { code: c, .. }] if *c == code),
        "{what}: expected one {code:?} error, got {frames:?}"
    );
}

#[test]
fn garbage_on_the_socket_is_refused_and_the_daemon_keeps_serving() {
    let d = Daemon::start(PEER, &[]);
    let topic = unique_topic("sec-garbage");
    let pid = d.pid();
    let count: u64 = 3000;

    // A legitimate pair of processes exchanges messages the whole time.
    let (mut sub, mut publ) = honest_pair(&d, &topic, &count.to_string(), "90000");
    let fds_before = fd_count(pid);
    // The daemon's threads are fixed (its event loop and its topic-creation workers): garbage
    // must not leave any behind.
    let threads_before = thread_count(pid);
    let started = Instant::now();

    // Random bytes (a random length prefix, almost surely above the limit).
    let mut rng = Rng(1);
    for n in 0..20 {
        let len = 1 + rng.below(2000) as usize;
        let junk = rng.bytes(len);
        let (answer, eof) = RawClient::connect(d.socket()).garbage(&junk);
        assert!(eof, "random bytes {n}: the connection was not closed");
        for r in decode_frames(&answer) {
            assert!(
                matches!(r, Response::Error { .. }),
                "random bytes {n}: {r:?}"
            );
        }
    }
    // A truncated frame, then close: dropped without an answer.
    let (answer, eof) = RawClient::connect(d.socket()).garbage(&frame(100, b"{\"op\":\"li"));
    assert!(eof && answer.is_empty(), "truncated frame: {answer:?}");
    let (answer, eof) = RawClient::connect(d.socket()).garbage(&[5, 0]);
    assert!(eof && answer.is_empty(), "truncated header: {answer:?}");
    // A length of 0, of 2^31 and of u32::MAX.
    let (a, eof) = RawClient::connect(d.socket()).garbage(&frame(0, b""));
    assert_error_then_closed("length 0", &a, eof, ErrorCode::BadRequest);
    for len in [1u32 << 31, u32::MAX, 64 * 1024 + 1] {
        let (a, eof) = RawClient::connect(d.socket()).garbage(&frame(len, b"{}"));
        assert_error_then_closed(&format!("length {len}"), &a, eof, ErrorCode::BadRequest);
    }
    // Not JSON, deeply nested JSON, unknown ops, invalid UTF-8.
    for body in [
        &b"hello"[..],
        &[b'['; 60_000][..],
        br#"{"op":"format_disk"}"#,
        b"{\"op\":\"hello\",\"version\":1,\"client_name\":\"\xff\"}",
        br#"{"op":"list","extra":1}"#,
    ] {
        let (a, eof) = RawClient::connect(d.socket()).garbage(&frame(body.len() as u32, body));
        assert_error_then_closed("malformed body", &a, eof, ErrorCode::BadRequest);
    }
    // Requests before hello are refused (and the connection stays usable).
    {
        let c = RawClient::connect(d.socket());
        // (Shutdown before hello is in `shutdown_before_hello_does_not_stop_the_daemon`.)
        for req in [
            Request::List,
            Request::Stats { topic: None },
            Request::Attach {
                topic: "x".into(),
                role: Role::Publisher,
                how: How::Open { type_info: None },
                start: StartAt::Latest,
            },
        ] {
            match c.request(&req) {
                Ok((Response::Error { code, message }, fds)) => {
                    assert_eq!(code, ErrorCode::BadRequest, "{message}");
                    assert!(message.contains("hello"), "{message}");
                    assert!(fds.is_empty());
                }
                other => panic!("{req:?} before hello: {other:?}"),
            }
        }
        // A hello with the wrong version: VersionMismatch, then a right one works.
        for version in [0, PROTOCOL_VERSION + 1, u32::MAX] {
            match c.request(&Request::Hello {
                version,
                client_name: "v".into(),
            }) {
                Ok((Response::Error { code, .. }, _)) => {
                    assert_eq!(code, ErrorCode::VersionMismatch)
                }
                other => panic!("hello v{version}: {other:?}"),
            }
        }
        match c.request(&Request::List) {
            Ok((Response::Error { code, .. }, _)) => assert_eq!(code, ErrorCode::BadRequest),
            other => panic!("list after a refused hello: {other:?}"),
        }
    }
    // Descriptors sent to the daemon are not kept: 50 frames with 200 descriptors each.
    {
        let c = RawClient::hello(d.socket());
        let devnull = std::fs::File::open("/dev/null").expect("/dev/null");
        let fds = vec![devnull.as_raw_fd(); 200];
        let frame = bus_proto::frame::encode_frame(&Request::List).expect("encode");
        for _ in 0..50 {
            fdpass::send_with_fds(&c.stream, &frame, &fds).expect("send with fds");
            let r: Result<(Response, Vec<OwnedFd>), _> = fdpass::read_frame_with_fds(&c.stream, 0);
            assert!(matches!(r, Ok((Response::Topics { .. }, _))), "{r:?}");
        }
    }
    // 1000 attach requests for invalid names, on one connection: each refused, by name.
    {
        let c = RawClient::hello(d.socket());
        let long = "x".repeat(300);
        for i in 0..1000 {
            let name = match i % 10 {
                0 => format!("../etc{i}"),
                1 => format!("a//b{i}"),
                2 => format!("a/./b{i}"),
                3 => format!("{long}{i}"),
                4 => format!("a b{i}"),
                5 => format!("/abs{i}"),
                6 => format!("trail{i}/"),
                7 => format!("a/../b{i}"),
                8 => format!("nul\0{i}"),
                _ => format!("ü{i}"),
            };
            let req = if i % 2 == 0 {
                Request::Attach {
                    topic: name.clone(),
                    role: Role::Subscriber,
                    how: How::Create {
                        spec: bytes_spec(2, 64, Mode::Lossy),
                        exact: true,
                    },
                    start: StartAt::Latest,
                }
            } else {
                Request::Attach {
                    topic: name.clone(),
                    role: Role::Publisher,
                    how: How::Open { type_info: None },
                    start: StartAt::Latest,
                }
            };
            match c.request(&req) {
                Ok((Response::Error { code, .. }, fds)) => {
                    assert_eq!(code, ErrorCode::InvalidTopicName, "{name:?}");
                    assert!(fds.is_empty());
                }
                other => panic!("attach {name:?}: {other:?}"),
            }
        }
    }
    // A flood: 500 connections, 4 at a time, each sending garbage (bounded time).
    {
        let socket = d.socket().to_path_buf();
        let flood_started = Instant::now();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    let mut rng = Rng(1000 + t);
                    let mut closed = 0;
                    for _ in 0..125 {
                        let junk = match rng.below(3) {
                            0 => {
                                let n = 1 + rng.below(64) as usize;
                                rng.bytes(n)
                            }
                            1 => frame(rng.next() as u32 | 0x8000_0000, b"x"),
                            _ => frame(8, b"not json"),
                        };
                        let (_, eof) = RawClient::connect(&socket).garbage(&junk);
                        closed += u32::from(eof);
                    }
                    closed
                })
            })
            .collect();
        let closed: u32 = threads.into_iter().map(|t| t.join().expect("flood")).sum();
        assert_eq!(
            closed, 500,
            "every garbage connection was closed by the daemon"
        );
        assert!(
            flood_started.elapsed() < Duration::from_secs(60),
            "the flood took {:?}",
            flood_started.elapsed()
        );
    }
    let garbage_time = started.elapsed();

    // The legitimate pair finished, lossless, in order, nothing torn.
    let sent = publ.finish(TRANSFER);
    assert_eq!(sent["sent"], count, "{sent}");
    let summary = sub.finish(TRANSFER);
    assert_eq!(summary["received"], count, "{summary}");
    assert_eq!(summary["error_count"], 0, "{summary}");
    assert_eq!(summary["lagged"], 0, "{summary}");

    // A new client can still connect and attach; the daemon lives; nothing leaked.
    let bus = d.bus();
    let fresh = unique_topic("sec-after-garbage");
    let mut p = bus
        .publisher::<TestMsg>(&fresh)
        .open_or_create()
        .expect("attach after the garbage");
    let mut s = bus
        .subscriber::<TestMsg>(&fresh)
        .open_or_create()
        .expect("subscribe after");
    p.send_timeout(&TestMsg::new(9, 0), START)
        .expect("send after");
    assert!(s.recv_timeout(START).expect("recv after").is_intact());
    assert!(daemon_alive(&d), "the daemon died");
    drop((p, s, bus));
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            fd_count(pid) <= fds_before + 2
        }),
        "the daemon holds {} descriptors, {fds_before} before the garbage",
        fd_count(pid)
    );
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            thread_count(pid) <= threads_before
        }),
        "the daemon runs {} threads, {threads_before} before the garbage",
        thread_count(pid)
    );
    eprintln!("garbage phase took {garbage_time:?}");
}

#[test]
fn shutdown_before_hello_does_not_stop_the_daemon() {
    let mut d = Daemon::start(PEER, &[]);
    let c = RawClient::connect(d.socket());
    match c.request(&Request::Shutdown) {
        Ok((Response::Error { code, message }, _)) => {
            assert_eq!(code, ErrorCode::BadRequest, "{message}");
            assert!(message.contains("hello"), "{message}");
        }
        other => panic!("shutdown before hello: {other:?}"),
    }
    // Refused, so the daemon must go on serving.
    let exited = d.wait_exit(Duration::from_millis(500));
    assert!(
        exited.is_none(),
        "the daemon stopped after refusing a Shutdown sent before hello; log:\n{}",
        d.log()
    );
    let c = RawClient::hello(d.socket());
    assert!(matches!(
        c.request(&Request::List),
        Ok((Response::Topics { .. }, _))
    ));
}

// ------------------------------------------------------------------------------------------
// 5. Limits
// ------------------------------------------------------------------------------------------

#[test]
fn limits_are_enforced_with_clear_errors() {
    let dir = TempDir::new("sec-limits");
    let rules = write_rules(
        dir.path(),
        &format!(
            "[[rule]]\ntopics = \"**\"\npublish = {{ uids = [{uid}] }}\nsubscribe = {{ uids = [{uid}] }}\n\n\
             [limits]\nmax_topics = 3\nmax_clients_per_uid = 5\nmax_bytes_per_uid = 200000\n",
            uid = euid()
        ),
    );
    let d = Daemon::start(PEER, &["--", "--rules", rules.to_str().expect("utf-8")]);
    let topics: Vec<String> = (0..5)
        .map(|i| unique_topic(&format!("sec-lim{i}")))
        .collect();
    let bus = d.bus();

    // A topic too large for max_bytes_per_uid.
    let e = bus
        .publisher::<[u8]>(&topics[0])
        .capacity(1024)
        .slot_size(4096)
        .open_or_create()
        .expect_err("a 4 MiB topic under a 200 kB limit");
    assert_eq!(refused_code(&e), Some(ErrorCode::LimitReached), "{e}");
    assert!(e.to_string().contains("max_bytes_per_uid"), "{e}");

    // Three small topics fit; the fourth is refused, naming max_topics.
    let mut held = Vec::new();
    for t in &topics[..3] {
        held.push(
            bus.publisher::<[u8]>(t)
                .capacity(2)
                .slot_size(64)
                .open_or_create()
                .unwrap_or_else(|e| panic!("topic {t}: {e}")),
        );
    }
    let e = bus
        .publisher::<[u8]>(&topics[3])
        .capacity(2)
        .slot_size(64)
        .open_or_create()
        .expect_err("a 4th topic");
    assert_eq!(refused_code(&e), Some(ErrorCode::LimitReached), "{e}");
    assert!(e.to_string().contains("max_topics"), "{e}");
    // Deleting one makes room.
    drop(held.pop());
    bus.delete(&topics[2]).expect("delete");
    bus.publisher::<[u8]>(&topics[3])
        .capacity(2)
        .slot_size(64)
        .open_or_create()
        .expect("a topic after a delete");

    // Five connections (`bus` is one), the sixth is refused, naming max_clients_per_uid.
    let mut conns = vec![bus];
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            while conns.len() < 5 {
                match Bus::connect_to(d.socket()) {
                    Ok(b) => conns.push(b),
                    Err(_) => return false,
                }
            }
            true
        }),
        "five connections were not accepted"
    );
    for _ in 0..3 {
        // The daemon answers a 6th connection at once with the limit, and closes it.
        let c = RawClient::connect(d.socket());
        match fdpass::read_frame_with_fds::<Response>(&c.stream, 0) {
            Ok((Response::Error { code, message }, _)) => {
                assert_eq!(code, ErrorCode::LimitReached, "{message}");
                assert!(message.contains("max_clients_per_uid"), "{message}");
            }
            other => panic!("a 6th connection: {other:?}"),
        }
        // The client library refuses too (whether it shows the daemon's reason is
        // `client_reports_the_connection_limit_clearly`).
        assert!(Bus::connect_to(d.socket()).is_err(), "a 6th Bus connected");
    }
    conns.pop();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            Bus::connect_to(d.socket()).map(|b| conns.push(b)).is_ok()
        }),
        "a connection was not accepted after one closed"
    );

    // Invalid topic names are refused, by name, before anything else.
    let long = "a".repeat(300);
    for name in [
        "../etc",
        "a//b",
        "a/./b",
        long.as_str(),
        "a b",
        "",
        "/a",
        "a/",
        "a/..",
    ] {
        let e = conns[0]
            .publisher::<[u8]>(name)
            .open_or_create()
            .expect_err("an invalid name");
        assert_eq!(
            refused_code(&e),
            Some(ErrorCode::InvalidTopicName),
            "{name:?}: {e}"
        );
        let e = conns[0]
            .subscriber::<[u8]>(name)
            .open_or_create()
            .expect_err("an invalid name");
        assert_eq!(
            refused_code(&e),
            Some(ErrorCode::InvalidTopicName),
            "{name:?}: {e}"
        );
    }
    drop(held);
}

#[test]
fn client_reports_the_connection_limit_clearly() {
    let dir = TempDir::new("sec-climit");
    let rules = write_rules(dir.path(), "[limits]\nmax_clients_per_uid = 1\n");
    let d = Daemon::start(PEER, &["--", "--rules", rules.to_str().expect("utf-8")]);
    let mut first = None;
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            first = Bus::connect_to(d.socket()).ok();
            first.is_some()
        }),
        "the first connection was not accepted"
    );
    let mut unclear = Vec::new();
    for _ in 0..20 {
        match Bus::connect_to(d.socket()) {
            Err(e) if refused_code(&e) == Some(ErrorCode::LimitReached) => {}
            Err(e) => unclear.push(e.to_string()),
            Ok(_) => panic!("a second connection under max_clients_per_uid = 1"),
        }
    }
    // The daemon wrote its reason and closed before the client's hello; the hello then fails
    // with EPIPE and the client never reads the answer waiting in its socket.
    assert!(
        unclear.is_empty(),
        "{} of 20 refusals were unclear: {unclear:?}",
        unclear.len()
    );
}

// ------------------------------------------------------------------------------------------
// 6. Another uid
// ------------------------------------------------------------------------------------------

#[test]
fn another_uid_cannot_open_or_map_a_topic_it_is_not_granted() {
    if skip_unless_root("another_uid_cannot_open_or_map_a_topic_it_is_not_granted") {
        return;
    }
    // Variant 1: no rules, no socket group. Nobody cannot reach the socket, finds no segment
    // file in /dev/shm, and cannot open the daemon's segment files through /proc.
    {
        let d = Daemon::start(PEER, &[]);
        let topic = unique_topic("sec-uid");
        let bus = d.bus();
        let _p = bus
            .publisher::<TestMsg>(&topic)
            .open_or_create()
            .expect("publisher");
        let connect = connect_probe(d.socket());
        assert_eq!(
            in_child_as(NOBODY, NOBODY, &connect),
            libc::EACCES,
            "uid {NOBODY} reached the daemon socket"
        );
        // The same probe as root succeeds, so the probes themselves work.
        assert_eq!(connect(), 0, "the connect probe works for root");
        assert_no_dev_shm_entry_for(&topic);
        assert_nobody_cannot_open_daemon_segment_files(&d, &topic);
    }

    // Variant 2: rules grant nobody `granted/**` (subscribe), and the socket is opened to its
    // group with --socket-group.
    let (_dir, d) = daemon_granting_nobody("sec-uid-rules", true);
    let suffix = unique_suffix();
    let granted = format!("granted/x{suffix}");
    let secret = format!("secret/x{suffix}");
    let bus = d.bus();
    let mut gp = bus
        .publisher::<TestMsg>(&granted)
        .capacity(16)
        .open_or_create()
        .expect("granted");
    let _sp = bus
        .publisher::<TestMsg>(&secret)
        .capacity(16)
        .open_or_create()
        .expect("secret");

    // Not world-accessible: a uid outside the group still cannot connect.
    let connect = connect_probe(d.socket());
    assert_eq!(
        in_child_as(NOBODY - 1, NOBODY - 1, &connect),
        libc::EACCES,
        "a uid outside the socket group reached the socket"
    );
    let (v, mut probe) = probe_as_nobody(&d, &[&granted, &secret], true);
    assert_eq!(v["connect"], "ok", "{v}");
    assert_eq!(topic_result(&v, &granted), "ok", "{v}");
    let denied = topic_result(&v, &secret);
    assert!(denied.starts_with("permission_denied"), "{v}");
    assert!(denied.contains(&format!("uid {NOBODY}")), "{denied}");
    // The granted subscriber really receives through the mapping it was handed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::SeqCst) && seq < 2000 {
                let _ = gp.send_timeout(&TestMsg::new(5, seq), Duration::from_millis(20));
                seq += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let got = probe.json(START);
    stop.store(true, Ordering::SeqCst);
    let _ = feeder.join();
    assert!(got.get("received_seq").is_some(), "{got}");
    // The segments themselves stay closed to nobody: nothing in /dev/shm, and the daemon's
    // descriptors of both topics' files cannot be opened through /proc.
    for t in [&granted, &secret] {
        assert_no_dev_shm_entry_for(t);
        assert_nobody_cannot_open_daemon_segment_files(&d, t);
    }
}

/// A daemon whose rules grant uid nobody `subscribe` on `granted/**`; with `socket_group`,
/// nobody's group may also reach the socket. The directory holding the rules comes along.
fn daemon_granting_nobody(tag: &str, socket_group: bool) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    let rules = write_rules(
        dir.path(),
        &format!("[[rule]]\ntopics = \"granted/**\"\nsubscribe = {{ uids = [{NOBODY}] }}\n"),
    );
    let group = NOBODY.to_string();
    let mut args = vec!["--", "--rules", rules.to_str().expect("utf-8")];
    if socket_group {
        args.extend(["--socket-group", group.as_str()]);
    }
    let d = Daemon::start(PEER, &args);
    (dir, d)
}

/// A suffix that keeps topic names of this process and moment apart.
fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), bus_tests::now_ns() % 1_000_000)
}

#[test]
fn topic_existence_does_not_leak_to_a_uid_without_access() {
    if skip_unless_root("topic_existence_does_not_leak_to_a_uid_without_access") {
        return;
    }
    let (_dir, d) = daemon_granting_nobody("sec-oracle", true);
    let suffix = unique_suffix();
    let (exists, missing) = (format!("secret/a{suffix}"), format!("secret/b{suffix}"));
    let bus = d.bus();
    let _p = bus
        .publisher::<TestMsg>(&exists)
        .open_or_create()
        .expect("secret topic");
    let uid = NOBODY.to_string();
    let mut p = Peer::spawn(
        PEER,
        &[
            "probe-as",
            "--socket",
            d.socket_str(),
            "--uid",
            &uid,
            "--gid",
            &uid,
            "--try-topic",
            &exists,
            "--try-topic",
            &missing,
            "--stats-delete",
        ],
    );
    let v = p.json(START);
    // Attaching already answers the same for both (the rules are checked first) ...
    assert_eq!(
        topic_result(&v, &exists).split(':').next(),
        topic_result(&v, &missing).split(':').next(),
        "{v}"
    );
    // ... Stats and Delete must too.
    assert_eq!(v["stats"][&exists], v["stats"][&missing], "stats: {v}");
    assert_eq!(v["delete"][&exists], v["delete"][&missing], "delete: {v}");
}

#[test]
fn a_rule_for_a_group_admits_its_supplementary_members() {
    if skip_unless_root("a_rule_for_a_group_admits_its_supplementary_members") {
        return;
    }
    const TEAM: u32 = 4242;
    let dir = TempDir::new("sec-suppl");
    let rules = write_rules(
        dir.path(),
        &format!("[[rule]]\ntopics = \"team/**\"\nsubscribe = {{ gids = [{TEAM}] }}\n"),
    );
    let group = NOBODY.to_string();
    let d = Daemon::start(
        PEER,
        &[
            "--",
            "--rules",
            rules.to_str().expect("utf-8"),
            "--socket-group",
            &group,
        ],
    );
    let topic = format!("team/x{}", std::process::id());
    let _p = d
        .bus()
        .publisher::<TestMsg>(&topic)
        .open_or_create()
        .expect("topic");
    let (uid, team) = (NOBODY.to_string(), TEAM.to_string());
    let mut p = Peer::spawn(
        PEER,
        &[
            "probe-as",
            "--socket",
            d.socket_str(),
            "--uid",
            &uid,
            "--gid",
            &uid,
            "--extra-gid",
            &team,
            "--try-topic",
            &topic,
        ],
    );
    let v = p.json(START);
    assert_eq!(
        topic_result(&v, &topic),
        "ok",
        "a member of gid {TEAM} (supplementary) was refused: {v}"
    );
}

/// A subscriber gets the control file read-write (it writes its cursor) but the data file
/// (header and slots) only through a **read-only** descriptor. The read-only mapping is then
/// not just a guard against mistakes: a hostile subscriber cannot map the slots writable, nor
/// `mprotect` its mapping writable, nor resize or seal the files, nor reopen the data file
/// read-write through `/proc/self/fd` (the file is 0600 and the daemon's). Honest subscribers
/// keep receiving exactly what was published.
///
/// As root the hostile subscriber is uid nobody (granted `subscribe` by the rules, over
/// `--socket-group`); otherwise it is this uid and the reopening part is skipped (the daemon's
/// own uid may reopen its files, by design).
#[test]
fn a_subscribers_data_descriptor_is_read_only() {
    let root = is_root();
    if !root {
        eprintln!("NOTICE: the read-only subscriber test runs as this uid; the uid {NOBODY} part needs root");
    }
    let (_dir, d) = daemon_granting_nobody("sec-ro-fd", root);
    let topic = format!("granted/ro{}", unique_suffix());
    let bus = d.bus();
    let mut publisher = bus
        .publisher::<[u8]>(&topic)
        .capacity(8)
        .slot_size(64)
        .open_or_create()
        .expect("publisher");
    let mut honest = bus
        .subscriber::<[u8]>(&topic)
        .open_or_create()
        .expect("subscriber");

    let hostile = if root {
        let h = RawClient::from_stream(connect_as(NOBODY, NOBODY, d.socket())).say_hello();
        // The daemon serves this connection as nobody: a topic the rules do not grant is
        // refused, naming the uid.
        match h.request(&Request::Attach {
            topic: format!("secret/ro{}", std::process::id()),
            role: Role::Subscriber,
            how: How::Create {
                spec: bytes_spec(8, 64, Mode::Lossless),
                exact: true,
            },
            start: StartAt::Latest,
        }) {
            Ok((Response::Error { code, message }, _)) => {
                assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
                assert!(message.contains(&format!("uid {NOBODY}")), "{message}");
            }
            other => panic!("nobody attached to a topic it is not granted: {other:?}"),
        }
        h
    } else {
        RawClient::hello(d.socket())
    };
    let fds = hostile.attach(&topic, None, false);
    let (control, data) = (fds.control.as_fd(), fds.data.as_fd());
    assert_eq!(access_mode(control), libc::O_RDWR, "the control descriptor");
    assert_eq!(access_mode(data), libc::O_RDONLY, "the data descriptor");
    let data_len = file_size(data);

    // Mapping the data file writable (shared) is refused; read-only works.
    for (prot, expect) in [
        (libc::PROT_READ | libc::PROT_WRITE, libc::EACCES),
        (libc::PROT_WRITE, libc::EACCES),
        (libc::PROT_READ, 0),
    ] {
        // SAFETY: a fresh mapping the kernel places; unmapped at once if it is made.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                data_len,
                prot,
                libc::MAP_SHARED,
                data.as_raw_fd(),
                0,
            )
        };
        let got = if p == libc::MAP_FAILED {
            errno()
        } else {
            // SAFETY: exactly the mapping just made.
            unsafe { libc::munmap(p, data_len) };
            0
        };
        assert_eq!(got, expect, "mmap of the data file with prot {prot:#x}");
    }

    // The subscriber mapping: header and slots read-only, and they stay so.
    let m = Mapping::map(control, data, Access::Subscriber).expect("subscriber mapping");
    // SAFETY: the header at offset 0 of a validated mapping is plain data.
    let h = unsafe { std::ptr::read_volatile(m.as_ptr() as *const SegmentHeader) };
    let slots_at = h.slots_offset as usize;
    let header_len = h.slots_offset as usize - file_size(control);
    for (what, at, len) in [
        ("the header", 0, header_len),
        ("the slots", slots_at, m.len() - slots_at),
        ("the whole mapping", 0, m.len()),
    ] {
        // SAFETY: a page-aligned range inside the mapping; making it writable is the attack.
        let rc = unsafe {
            libc::mprotect(
                m.as_ptr().add(at).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        assert_eq!(rc_errno(rc), libc::EACCES, "mprotect of {what} to writable");
    }

    // Resizing: the read-only descriptor is not open for writing (EINVAL), the control file
    // is sealed (EPERM).
    let control_len = file_size(control) as libc::off_t;
    for len in [0, 4096, (data_len + 4096) as libc::off_t] {
        assert_eq!(
            ftruncate_errno(data, len),
            libc::EINVAL,
            "ftruncate data to {len}"
        );
    }
    for len in [0, control_len / 2, control_len + 4096] {
        assert_eq!(
            ftruncate_errno(control, len),
            libc::EPERM,
            "ftruncate control to {len}"
        );
    }
    // Sealing the files against writes (which would freeze the topic): refused, the data
    // descriptor because it is read-only, both because the seals are sealed (F_SEAL_SEAL).
    for seal in [libc::F_SEAL_WRITE, libc::F_SEAL_FUTURE_WRITE] {
        assert_eq!(
            add_seals_errno(data, seal),
            libc::EPERM,
            "data: seal {seal:#x}"
        );
        assert_eq!(
            add_seals_errno(control, seal),
            libc::EPERM,
            "control: seal {seal:#x}"
        );
    }
    let seals = segment::seals(control).expect("F_GET_SEALS");
    assert_eq!(seals & SEALS, SEALS, "control seals {seals:#x}");

    // Reopening the data file read-write through /proc/self/fd, as uid nobody: EACCES. The
    // probe is shown to work on a file nobody owns, reopened read-write first.
    if root {
        let canary = memfd_with("sectest-canary", b"", 4096, Sealing::With(0));
        // SAFETY: a valid descriptor we own.
        let rc = unsafe { libc::fchown(canary.as_raw_fd(), NOBODY, NOBODY) };
        assert_eq!(rc, 0, "chown the canary");
        let reopen_canary = open_probe(
            &format!("/proc/self/fd/{}", canary.as_raw_fd()),
            libc::O_RDWR,
        );
        let reopen_data = open_probe(&format!("/proc/self/fd/{}", data.as_raw_fd()), libc::O_RDWR);
        let reopen_data_ro = open_probe(
            &format!("/proc/self/fd/{}", data.as_raw_fd()),
            libc::O_RDONLY,
        );
        let probe = move || {
            if reopen_canary() != 0 {
                return 250;
            }
            reopen_data()
        };
        assert_eq!(
            in_child_as(NOBODY, NOBODY, &probe),
            libc::EACCES,
            "uid {NOBODY} reopened its read-only data descriptor read-write"
        );
        // Not even read-only: the file is the daemon's, 0600; the descriptor is all it has.
        assert_eq!(in_child_as(NOBODY, NOBODY, &reopen_data_ro), libc::EACCES);
    }

    // Nothing changed: a message is published and reaches the honest subscriber intact, and
    // the hostile subscriber reads it (it is granted that) through its read-only mapping.
    publisher.try_send(b"honest message").expect("send");
    let got = honest.recv_timeout(START).expect("recv").to_vec();
    assert_eq!(got, b"honest message");
    let seen = (0..u64::from(h.capacity)).any(|i| {
        let at = h.slots_offset + i * h.slot_stride + u64::from(h.payload_offset);
        // SAFETY: inside the mapping (offsets from its validated header); read-only access.
        let bytes = unsafe { std::slice::from_raw_parts(m.as_ptr().add(at as usize), 14) };
        bytes == b"honest message"
    });
    assert!(seen, "the message is not in the subscriber's mapping");
    assert!(daemon_alive(&d));
}

// ------------------------------------------------------------------------------------------
// 7. SIGHUP reloads
// ------------------------------------------------------------------------------------------

fn count_in_log(d: &Daemon, needle: &str) -> usize {
    d.log().matches(needle).count()
}

fn sighup(d: &Daemon) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    );
}

#[test]
fn sighup_reloads_rules_and_a_bad_file_keeps_the_old_rules() {
    let dir = TempDir::new("sec-hup");
    let rules_a = format!(
        "[[rule]]\ntopics = \"hupa/**\"\nsubscribe = {{ uids = [{NOBODY}] }}\ncreate = {{ uids = [{NOBODY}] }}\n[limits]\nmax_topics = 1\n"
    );
    let rules_b = format!(
        "[[rule]]\ntopics = \"hupb/**\"\nsubscribe = {{ uids = [{NOBODY}] }}\ncreate = {{ uids = [{NOBODY}] }}\n[limits]\nmax_topics = 2\n"
    );
    let path = write_rules(dir.path(), &rules_a);
    let group = NOBODY.to_string();
    let mut args = vec!["--", "--rules", path.to_str().expect("utf-8")];
    if is_root() {
        args.extend(["--socket-group", group.as_str()]);
    }
    let d = Daemon::start(PEER, &args);
    let t: Vec<String> = (0..3)
        .map(|i| unique_topic(&format!("sec-hup{i}")))
        .collect();
    let suffix = format!("{}-{}", std::process::id(), bus_tests::now_ns() % 1_000_000);
    let (ta, tb) = (format!("hupa/x{suffix}"), format!("hupb/x{suffix}"));
    let bus = d.bus();
    let open = |name: &str| {
        bus.publisher::<[u8]>(name)
            .capacity(2)
            .slot_size(64)
            .open_or_create()
    };

    // Rules A: one topic per uid; nobody may subscribe under hupa/ only.
    let _t0 = open(&t[0]).expect("first topic");
    let e = open(&t[1]).expect_err("second topic under max_topics = 1");
    assert_eq!(refused_code(&e), Some(ErrorCode::LimitReached), "{e}");
    if is_root() {
        let (v, _p) = probe_as_nobody(&d, &[&ta, &tb], false);
        assert_eq!(topic_result(&v, &ta), "ok", "{v}");
        assert!(
            topic_result(&v, &tb).starts_with("permission_denied"),
            "{v}"
        );
    }

    // Rules B, SIGHUP: two topics; hupb/ instead of hupa/.
    write_rules(dir.path(), &rules_b);
    sighup(&d);
    assert!(
        wait_until(START, Duration::from_millis(10), || {
            count_in_log(&d, "access rules reloaded") >= 1
        }),
        "no reload logged:\n{}",
        d.log()
    );
    let _t1 = open(&t[1]).expect("second topic under max_topics = 2");
    let e = open(&t[2]).expect_err("third topic under max_topics = 2");
    assert_eq!(refused_code(&e), Some(ErrorCode::LimitReached), "{e}");
    if is_root() {
        let (v, _p) = probe_as_nobody(&d, &[&ta, &tb], false);
        assert!(
            topic_result(&v, &ta).starts_with("permission_denied"),
            "{v}"
        );
        assert_eq!(topic_result(&v, &tb), "ok", "{v}");
    }

    // An invalid file, then a world-writable one: both refused, rules B stay.
    for (bad, mode) in [
        (
            "[[rule]]\ntopics = \"a*\"\n[limits]\nmax_topics = 50\n",
            0o600,
        ),
        ("[limits]\nmax_topic = 50\n", 0o600),
        ("this is not toml [", 0o600),
        ("[limits]\nmax_topics = 50\n", 0o666),
    ] {
        let before = count_in_log(&d, "NOT reloaded");
        let p = write_rules(dir.path(), bad);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        sighup(&d);
        assert!(
            wait_until(START, Duration::from_millis(10), || {
                count_in_log(&d, "NOT reloaded") > before
            }),
            "a bad rules file ({bad:?}, mode {mode:o}) was not refused:\n{}",
            d.log()
        );
        let e = open(&t[2]).expect_err("max_topics = 2 still applies");
        assert_eq!(
            refused_code(&e),
            Some(ErrorCode::LimitReached),
            "{bad:?}: {e}"
        );
        assert!(daemon_alive(&d));
    }
    if is_root() {
        let (v, _p) = probe_as_nobody(&d, &[&ta, &tb], false);
        assert!(
            topic_result(&v, &ta).starts_with("permission_denied"),
            "{v}"
        );
        assert_eq!(topic_result(&v, &tb), "ok", "{v}");
    } else {
        eprintln!("NOTICE: sighup test checked limits only; grants need root (setuid {NOBODY})");
    }
}

// ------------------------------------------------------------------------------------------
// 8. File modes
// ------------------------------------------------------------------------------------------

fn assert_mode(path: &Path, uid: u32, forbidden: u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mode = m.mode() & 0o7777;
    assert_eq!(
        mode & 0o002,
        0,
        "{} is world-writable ({mode:o})",
        path.display()
    );
    assert_eq!(
        mode & forbidden,
        0,
        "{} has mode {mode:o} (must not have {forbidden:o})",
        path.display()
    );
    assert_eq!(
        m.uid(),
        uid,
        "{} is owned by uid {}",
        path.display(),
        m.uid()
    );
}

#[test]
fn file_modes_are_never_world_writable() {
    let me = euid();
    let mut variants: Vec<Vec<String>> = vec![vec![]];
    if is_root() {
        variants.push(vec![
            "--".into(),
            "--socket-group".into(),
            NOBODY.to_string(),
        ]);
    } else {
        eprintln!("NOTICE: --socket-group variant of the file-mode test needs root; skipped");
    }
    for extra in variants {
        let args: Vec<&str> = extra.iter().map(String::as_str).collect();
        let d = Daemon::start(PEER, &args);
        let (tl, ty) = (unique_topic("sec-mode-l"), unique_topic("sec-mode-y"));
        let bus = d.bus();
        let _a = bus
            .publisher::<TestMsg>(&tl)
            .open_or_create()
            .expect("lossless");
        let _b = bus
            .publisher::<TestMsg>(&ty)
            .lossy()
            .open_or_create()
            .expect("lossy");
        let grouped = !extra.is_empty();
        let socket = d.socket().to_path_buf();
        let dir = socket.parent().expect("socket dir").to_path_buf();
        let lock = bus_proto::paths::lock_path_for(&socket);
        // Without a group: nothing for group or others. With one: nothing for others.
        let others = if grouped { 0o007 } else { 0o077 };
        assert_mode(&socket, me, others);
        assert_mode(&dir, me, if grouped { 0o027 } else { 0o077 });
        assert_mode(&lock, me, 0o077);
        // Each topic's two segment files, through the daemon's own descriptors of them (two per
        // topic: the read-only data descriptor a subscriber gets is reopened for it on
        // attach): regular memory files of the daemon's uid, 0600, sealed. Nothing in /dev/shm.
        for t in [&tl, &ty] {
            segment_fd_pair(d.pid(), t);
            let held = segment_fd_paths(d.pid(), t);
            assert_eq!(held.len(), 2, "{t}: {held:?}");
            for (path, link) in &held {
                assert!(link.starts_with("/memfd:shmbus-"), "{link}");
                let fd = open_path(path, libc::O_RDONLY)
                    .unwrap_or_else(|e| panic!("{} -> {link}: {e}", path.display()));
                let st = fstat(fd.as_fd());
                assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFREG, "{link}");
                assert_eq!(
                    st.st_mode & 0o7777,
                    0o600,
                    "{link} has mode {:o}",
                    st.st_mode & 0o7777
                );
                assert_eq!(st.st_uid, me, "{link} is owned by uid {}", st.st_uid);
                let seals = segment::seals(fd.as_fd()).expect("F_GET_SEALS");
                assert_eq!(seals & SEALS, SEALS, "{link}: seals {seals:#x}");
                assert!(
                    daemon_segment::check_owned(fd.as_fd(), me).is_ok(),
                    "{link} fails the daemon's own check"
                );
            }
            assert_no_dev_shm_entry_for(t);
        }
        // The status page and the topic records beside the socket: the daemon's, 0600.
        assert_mode(&bus_proto::paths::status_path_for(&socket), me, 0o077);
        assert_mode(&bus_proto::paths::topics_path_for(&socket), me, 0o077);
        if grouped {
            let m = std::fs::metadata(&socket).expect("socket");
            assert_eq!(m.gid(), NOBODY, "the socket's group");
        }
    }
}

// ------------------------------------------------------------------------------------------
// 9. Segment files handed back after a restart
// ------------------------------------------------------------------------------------------

fn signal_pid(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
        .unwrap_or_else(|e| panic!("{signal} to {pid}: {e}"));
}

/// After a crash, the restarted daemon gets each topic's files back from the first port that
/// re-attaches (`Reattach` with the two descriptors). A client that hands back files of its
/// own making must not have them taken for the topic: not faithful copies (the same names,
/// sizes, bytes, seals, mode and owner: only the file identities differ from what the daemon
/// recorded), not a real file paired with a copy, not unsealed copies, not copies of another
/// mode or owner. Each is refused with an error and logged, nothing is adopted, the daemon
/// keeps serving, and then the real publisher's own re-attach takes the real files: messages
/// flow through them, and `stats` shows the topic with that publisher.
#[test]
fn a_forged_hand_back_after_a_restart_is_refused() {
    const REFUSED: &str = "refused segment files handed back";
    let mut d = Daemon::start(PEER, &[]);
    let topic = unique_topic("sec-forged");
    let mut publ = Peer::spawn(
        PEER,
        &[
            "pub",
            "--socket",
            d.socket_str(),
            "--topic",
            &topic,
            "--count",
            "1000000",
            "--interval-us",
            "2000",
            "--ready",
        ],
    );
    publ.expect_line("ready", START);
    let ppid = publ.pid();
    // The real files, through the publisher's descriptors; the daemon holds the same ones.
    let (pc, pd) = segment_fd_pair(ppid, &topic);
    let real_c = open_path(&pc, libc::O_RDONLY).expect("the publisher's control file");
    let real_d = open_path(&pd, libc::O_RDONLY).expect("the publisher's data file");
    let real_ids = [
        daemon_segment::file_id(real_c.as_fd()).expect("file id"),
        daemon_segment::file_id(real_d.as_fd()).expect("file id"),
    ];
    let daemon_ids = |d: &Daemon| {
        let (c, dd) = segment_fd_pair(d.pid(), &topic);
        [c, dd].map(|p| {
            let fd = open_path(&p, libc::O_RDONLY).expect("the daemon's segment file");
            daemon_segment::file_id(fd.as_fd()).expect("file id")
        })
    };
    assert_eq!(daemon_ids(&d), real_ids);

    // The publisher is frozen, so that it cannot hand the files back before the forger does;
    // the daemon dies and a new one starts (with a long grace, so the topic stays pending).
    signal_pid(ppid, nix::sys::signal::Signal::SIGSTOP);
    d.kill();
    d.restart(&["--", "--adopt-grace-ms", "30000"]);
    let [control_name, data_name] = segment_file_names(&topic);
    let memfd_name = |link: &str| {
        link.trim_start_matches("/memfd:")
            .trim_end_matches(" (deleted)")
            .to_string()
    };
    let (cname, dname) = (memfd_name(&control_name), memfd_name(&data_name));
    let copy = |name: &str, fd: &OwnedFd, sealing: Sealing| {
        memfd_with(
            name,
            &file_bytes(fd.as_fd()),
            file_size(fd.as_fd()),
            sealing,
        )
    };
    let chmod = |fd: OwnedFd, mode: libc::mode_t| {
        // SAFETY: a valid descriptor we own.
        assert_eq!(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }, 0);
        fd
    };
    let mut forgeries: Vec<(&str, OwnedFd, OwnedFd)> = vec![
        (
            "faithful sealed copies",
            copy(&cname, &real_c, Sealing::With(SEALS.bits())),
            copy(&dname, &real_d, Sealing::With(SEALS.bits())),
        ),
        (
            "the real control file and a faithful copy of the data file",
            real_c.try_clone().expect("dup"),
            copy(&dname, &real_d, Sealing::With(SEALS.bits())),
        ),
        (
            "unsealed copies",
            copy(&cname, &real_c, Sealing::With(0)),
            copy(&dname, &real_d, Sealing::NotSealable),
        ),
        (
            "sealed copies of mode 0644",
            chmod(copy(&cname, &real_c, Sealing::With(SEALS.bits())), 0o644),
            chmod(copy(&dname, &real_d, Sealing::With(SEALS.bits())), 0o644),
        ),
    ];
    if is_root() {
        let chown = |fd: OwnedFd| {
            // SAFETY: a valid descriptor we own.
            assert_eq!(unsafe { libc::fchown(fd.as_raw_fd(), NOBODY, NOBODY) }, 0);
            fd
        };
        forgeries.push((
            "sealed copies owned by another uid",
            chown(copy(&cname, &real_c, Sealing::With(SEALS.bits()))),
            chown(copy(&dname, &real_d, Sealing::With(SEALS.bits()))),
        ));
    }
    for (n, (what, control, data)) in forgeries.iter().enumerate() {
        let forger = RawClient::hello(d.socket());
        let r = forger.request_with_fds(
            &Request::Reattach {
                topic: topic.clone(),
                role: Role::Publisher,
                index: 0,
                generation: 1 + n as u64,
            },
            &[control.as_raw_fd(), data.as_raw_fd()],
        );
        match r {
            Ok((Response::Error { code, message }, fds)) => {
                assert_eq!(code, ErrorCode::BadRequest, "{what}: {message}");
                assert!(
                    message.contains("are not the segment of"),
                    "{what}: {message}"
                );
                assert!(fds.is_empty(), "{what}: descriptors came with the refusal");
            }
            other => panic!("{what}: the forged hand-back was answered {other:?}"),
        }
        assert!(
            wait_until(START, Duration::from_millis(5), || {
                count_in_log(&d, REFUSED) == n + 1
            }),
            "{what}: not logged as refused ({} refusals logged); log:\n{}",
            count_in_log(&d, REFUSED),
            d.log()
        );
        // The daemon keeps serving.
        let c = RawClient::hello(d.socket());
        assert!(
            matches!(c.request(&Request::List), Ok((Response::Topics { .. }, _))),
            "{what}: the daemon stopped answering"
        );
        assert!(
            daemon_alive(&d),
            "{what}: the daemon died; log:\n{}",
            d.log()
        );
    }
    assert_eq!(
        count_in_log(&d, "adopted a topic handed back"),
        0,
        "a forged hand-back was adopted; log:\n{}",
        d.log()
    );
    drop(forgeries);

    // The real publisher wakes up, notices the new daemon and hands the real files back.
    signal_pid(ppid, nix::sys::signal::Signal::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(5), || {
            strip_ansi(&d.log()).lines().any(|l| {
                l.contains("port re-attached after a daemon restart")
                    && l.contains(&format!("pid={ppid}"))
            })
        }),
        "the publisher did not re-attach; its stderr:\n{}\nlog:\n{}",
        publ.stderr(),
        d.log()
    );
    assert_eq!(
        count_in_log(&d, "adopted a topic handed back"),
        1,
        "{}",
        d.log()
    );
    // The daemon took exactly the recorded files.
    assert_eq!(
        daemon_ids(&d),
        real_ids,
        "the daemon holds other files than the real ones"
    );
    let bus = d.bus();
    let stats = bus.stats(Some(&topic)).expect("stats");
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(
        stats[0]
            .publishers
            .iter()
            .map(|p| p.pid)
            .collect::<Vec<_>>(),
        vec![ppid],
        "{stats:?}"
    );
    // Messages flow: a new subscriber gets the publisher's messages, intact and in order.
    let mut sub = bus
        .subscriber::<TestMsg>(&topic)
        .open_or_create()
        .expect("subscribe after");
    let mut last = None;
    for _ in 0..20 {
        let m = *sub
            .recv_timeout(START)
            .expect("a message after the restart");
        assert!(m.is_intact() && m.publisher == 1, "{m:?}");
        assert!(last.is_none_or(|l| m.seq == l + 1), "{m:?} after {last:?}");
        last = Some(m.seq);
    }
    publ.terminate();
    let sent = publ.finish(TRANSFER);
    assert!(
        sent["sent"].as_u64().unwrap_or(0) > last.unwrap_or(0),
        "{sent}"
    );
}
