//! The wait set's C API, called from Rust exactly as C calls it, against an embedded daemon:
//! ready ids, the queue for ids that did not fit, the descriptor and the timeout hint, and the
//! contract (NULLs, a subscriber holding a sample, an unknown id, a double free).

use std::ffi::{c_char, c_int, CStr};
use std::ptr::{null, null_mut};

use shmbus::bus::*;
use shmbus::options::*;
use shmbus::publisher::*;
use shmbus::status::*;
use shmbus::subscriber::*;
use shmbus::waitset::*;

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated, valid until the next failure on this thread.
    unsafe { CStr::from_ptr(shmbus_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn ok(status: ShmbusStatus) {
    assert_eq!(status, SHMBUS_OK, "{status}: {}", last_error());
}

fn open(
    bus: *mut ShmbusBus,
    t: &CStr,
    capacity: u32,
) -> (*mut ShmbusPublisher, *mut ShmbusSubscriber) {
    let topic: *const c_char = t.as_ptr();
    let mut options = std::mem::MaybeUninit::uninit();
    // SAFETY: every pointer is live or writable; NULL only where the API allows it.
    unsafe {
        ok(shmbus_topic_options_init(options.as_mut_ptr()));
        let mut options = options.assume_init();
        options.capacity = capacity;
        options.slot_size = 64;
        let (mut p, mut s) = (null_mut(), null_mut());
        ok(shmbus_publisher_open(
            bus,
            topic,
            SHMBUS_CREATE,
            null(),
            &options,
            &mut p,
        ));
        ok(shmbus_subscriber_open(
            bus,
            topic,
            SHMBUS_OPEN,
            null(),
            null(),
            &mut s,
        ));
        (p, s)
    }
}

/// `try_wait` into an array of `cap` ids.
fn try_wait(ws: *mut ShmbusWaitset, cap: usize) -> Vec<u64> {
    let mut ids = vec![0u64; cap.max(1)];
    let mut n = usize::MAX;
    // SAFETY: `ids` holds `cap` ids; `n` is writable.
    ok(unsafe { shmbus_waitset_try_wait(ws, ids.as_mut_ptr(), cap, &mut n) });
    ids.truncate(n);
    ids
}

fn hint(ws: *mut ShmbusWaitset) -> i64 {
    let mut ms = i64::MIN;
    // SAFETY: live handle, writable out.
    ok(unsafe { shmbus_waitset_timeout_hint_ms(ws, &mut ms) });
    ms
}

#[test]
fn a_waitset_reports_ready_subscribers_through_its_descriptor_and_queues_what_did_not_fit() {
    // SAFETY: (the whole test) handles come from the API and stay live until closed; every
    // out-pointer is a writable local.
    unsafe {
        let mut bus = null_mut();
        ok(shmbus_connect_embedded(&mut bus));
        let (pa, sa) = open(bus, c"ffi/ws/a", 8);
        let (pb, sb) = open(bus, c"ffi/ws/b", 8);
        let mut ws = null_mut();
        ok(shmbus_waitset_new(&mut ws));
        assert_eq!(hint(ws), -1, "nothing attached: poll forever");
        let (mut ida, mut idb) = (0u64, 0u64);
        ok(shmbus_waitset_attach_subscriber(ws, sa, &mut ida));
        ok(shmbus_waitset_attach_subscriber(ws, sb, &mut idb));
        assert!(ida != 0 && idb != 0 && ida != idb);
        assert_eq!(hint(ws), 0, "before the first try_wait");
        assert!(try_wait(ws, 4).is_empty());
        assert_eq!(hint(ws), -1, "armed, the daemon alive: poll forever");

        let mut fd: c_int = -1;
        ok(shmbus_waitset_fd(ws, &mut fd));
        let readable = |fd: c_int, ms: c_int| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut p, 1, ms) == 1
        };
        assert!(!readable(fd, 0), "quiet: not readable");
        ok(shmbus_publisher_publish(pa, b"x".as_ptr(), 1, null_mut()));
        ok(shmbus_publisher_publish(pb, b"y".as_ptr(), 1, null_mut()));
        assert!(
            readable(fd, 5000),
            "a publish makes the descriptor readable"
        );

        // Two ready, room for one: the other comes first from the next call.
        let first = try_wait(ws, 1);
        assert_eq!(first.len(), 1);
        assert_eq!(hint(ws), 0, "an id is queued");
        let second = try_wait(ws, 1);
        let mut both = [first[0], second[0]];
        both.sort();
        assert_eq!(both, [ida.min(idb), ida.max(idb)]);
        // Once per change: not again until something new.
        assert!(try_wait(ws, 4).is_empty());
        assert!(!readable(fd, 50));

        // A subscriber holding a sample cannot be attached; detached ids are unknown.
        let mut sample = ShmbusSample {
            data: null(),
            len: 0,
            sequence: 0,
            lagged: 0,
        };
        ok(shmbus_subscriber_try_recv(sa, &mut sample));
        let mut id = 0;
        assert_eq!(
            shmbus_waitset_attach_subscriber(ws, sa, &mut id),
            SHMBUS_ERR_STATE
        );
        assert!(last_error().contains("holds a sample"), "{}", last_error());
        ok(shmbus_subscriber_release(sa));
        ok(shmbus_waitset_detach(ws, ida));
        assert_eq!(shmbus_waitset_detach(ws, ida), SHMBUS_ERR_INVALID_ARGUMENT);

        // The blocking wait: an interval, and the remaining subscriber.
        let mut tick = 0;
        ok(shmbus_waitset_attach_interval(ws, 20_000, &mut tick));
        let mut ids = [0u64; 4];
        let mut n = 0;
        ok(shmbus_waitset_wait(ws, 5000, ids.as_mut_ptr(), 4, &mut n));
        assert_eq!(&ids[..n], [tick]);
        ok(shmbus_publisher_publish(pb, b"z".as_ptr(), 1, null_mut()));
        ok(shmbus_waitset_wait(ws, 5000, ids.as_mut_ptr(), 4, &mut n));
        assert!(ids[..n].contains(&idb), "{:?}", &ids[..n]);
        ok(shmbus_waitset_detach(ws, tick));
        ok(shmbus_waitset_wait(ws, 0, ids.as_mut_ptr(), 4, &mut n));

        // The contract.
        assert_eq!(
            shmbus_waitset_try_wait(ws, null_mut(), 4, &mut n),
            SHMBUS_ERR_NULL
        );
        assert_eq!(
            shmbus_waitset_try_wait(ws, ids.as_mut_ptr(), 4, null_mut()),
            SHMBUS_ERR_NULL
        );
        ok(shmbus_waitset_try_wait(ws, null_mut(), 0, &mut n));
        assert_eq!(shmbus_waitset_fd(ws, null_mut()), SHMBUS_ERR_NULL);
        // A subscriber is no wait set.
        assert_eq!(
            shmbus_waitset_attach_subscriber(sb.cast(), sb, &mut id),
            SHMBUS_ERR_BAD_HANDLE
        );
        ok(shmbus_waitset_free(ws));
        assert_eq!(shmbus_waitset_free(ws), SHMBUS_ERR_BAD_HANDLE);
        assert_eq!(shmbus_waitset_fd(ws, &mut fd), SHMBUS_ERR_BAD_HANDLE);
        ok(shmbus_waitset_free(null_mut()));
        for s in [sa, sb] {
            ok(shmbus_subscriber_close(s));
        }
        for p in [pa, pb] {
            ok(shmbus_publisher_close(p));
        }
        ok(shmbus_bus_close(bus));
    }
}
