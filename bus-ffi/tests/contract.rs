//! The C API's contract, called from Rust exactly as C calls it: NULL pointers, double
//! closes, handles of the wrong kind, calls out of order, wrong lengths and a handle used by
//! two threads at once are status codes with a message, never a crash.

use std::ffi::{c_char, CStr};
use std::ptr::{null, null_mut};
use std::time::Duration;

use shmbus::bus::*;
use shmbus::options::*;
use shmbus::publisher::*;
use shmbus::status::*;
use shmbus::subscriber::*;

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated, valid until the next failure on this thread.
    unsafe { CStr::from_ptr(shmbus_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

fn name(status: ShmbusStatus) -> String {
    // SAFETY: a static NUL-terminated string.
    unsafe { CStr::from_ptr(shmbus_status_name(status)) }
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn ok(status: ShmbusStatus) {
    assert_eq!(status, SHMBUS_OK, "{}: {}", name(status), last_error());
}

fn embedded() -> *mut ShmbusBus {
    let mut bus = null_mut();
    // SAFETY: `bus` is writable.
    ok(unsafe { shmbus_connect_embedded(&mut bus) });
    bus
}

fn topic(s: &CStr) -> *const c_char {
    s.as_ptr()
}

fn empty_sample() -> ShmbusSample {
    ShmbusSample {
        data: null(),
        len: 0,
        sequence: 0,
        lagged: 0,
    }
}

/// A byte topic with a small ring: a publisher (creates it) and a subscriber.
fn pair(bus: *mut ShmbusBus, t: &CStr) -> (*mut ShmbusPublisher, *mut ShmbusSubscriber) {
    let mut options = std::mem::MaybeUninit::uninit();
    // SAFETY: writable; all pointers below are live or NULL where allowed.
    unsafe {
        ok(shmbus_topic_options_init(options.as_mut_ptr()));
        let mut options = options.assume_init();
        options.capacity = 2;
        options.slot_size = 64;
        let (mut p, mut s) = (null_mut(), null_mut());
        ok(shmbus_publisher_open(
            bus,
            topic(t),
            SHMBUS_CREATE,
            null(),
            &options,
            &mut p,
        ));
        ok(shmbus_subscriber_open(
            bus,
            topic(t),
            SHMBUS_OPEN,
            null(),
            null(),
            &mut s,
        ));
        (p, s)
    }
}

#[test]
fn null_pointers_are_errors() {
    // SAFETY: every pointer is NULL or valid; NULLs are what is being tested.
    unsafe {
        assert_eq!(shmbus_connect(null_mut()), SHMBUS_ERR_NULL);
        assert!(last_error().contains("out is NULL"), "{}", last_error());
        assert_eq!(shmbus_connect_to(null(), &mut null_mut()), SHMBUS_ERR_NULL);
        let bus = embedded();
        let mut p = null_mut();
        assert_eq!(
            shmbus_publisher_open(
                null_mut(),
                c"t".as_ptr(),
                SHMBUS_CREATE,
                null(),
                null(),
                &mut p
            ),
            SHMBUS_ERR_NULL
        );
        assert_eq!(
            shmbus_publisher_open(bus, null(), SHMBUS_CREATE, null(), null(), &mut p),
            SHMBUS_ERR_NULL
        );
        assert_eq!(
            shmbus_publisher_publish(null_mut(), null(), 0, null_mut()),
            SHMBUS_ERR_NULL
        );
        assert_eq!(
            shmbus_subscriber_recv(null_mut(), &mut empty_sample()),
            SHMBUS_ERR_NULL
        );
        let (p, s) = pair(bus, c"contract/null");
        assert_eq!(
            shmbus_publisher_publish(p, null(), 3, null_mut()),
            SHMBUS_ERR_NULL
        );
        assert_eq!(
            shmbus_publisher_loan(p, null_mut(), &mut 0),
            SHMBUS_ERR_NULL
        );
        assert_eq!(shmbus_subscriber_try_recv(s, null_mut()), SHMBUS_ERR_NULL);
        assert_eq!(shmbus_topic_options_init(null_mut()), SHMBUS_ERR_NULL);
        // Close accepts NULL, like free().
        ok(shmbus_publisher_close(null_mut()));
        ok(shmbus_publisher_close(p));
        ok(shmbus_subscriber_close(s));
        ok(shmbus_bus_close(bus));
    }
}

#[test]
fn double_close_and_wrong_kind_are_detected() {
    // SAFETY: handles are live until closed; the double close is what is tested (it is
    // looked up before the memory is touched).
    unsafe {
        let bus = embedded();
        let (p, s) = pair(bus, c"contract/close");
        // A subscriber passed where a publisher belongs.
        assert_eq!(shmbus_publisher_close(s.cast()), SHMBUS_ERR_BAD_HANDLE);
        assert_eq!(
            shmbus_publisher_set_wait(s.cast(), SHMBUS_WAIT_BLOCK),
            SHMBUS_ERR_BAD_HANDLE
        );
        assert_eq!(
            shmbus_publisher_publish(s.cast(), c"x".as_ptr().cast(), 1, null_mut()),
            SHMBUS_ERR_BAD_HANDLE
        );
        assert!(
            last_error().contains("shmbus_publisher"),
            "{}",
            last_error()
        );
        ok(shmbus_publisher_close(p));
        assert_eq!(shmbus_publisher_close(p), SHMBUS_ERR_BAD_HANDLE);
        assert!(last_error().contains("double close"), "{}", last_error());
        ok(shmbus_subscriber_close(s));
        assert_eq!(shmbus_subscriber_close(s), SHMBUS_ERR_BAD_HANDLE);
        ok(shmbus_bus_close(bus));
        assert_eq!(shmbus_bus_close(bus), SHMBUS_ERR_BAD_HANDLE);
        assert!(shmbus_bus_socket_path(bus).is_null());
        // A pointer that never was a handle, at close.
        let mut not_a_handle = [0u64; 8];
        assert_eq!(
            shmbus_subscriber_close(not_a_handle.as_mut_ptr().cast()),
            SHMBUS_ERR_BAD_HANDLE
        );
    }
}

#[test]
fn loans_and_samples_go_in_order() {
    // SAFETY: all handles live; data pointers used only while their loan or sample is held.
    unsafe {
        let bus = embedded();
        let (p, s) = pair(bus, c"contract/order");
        assert_eq!(shmbus_publisher_send(p, null_mut()), SHMBUS_ERR_STATE);
        assert_eq!(shmbus_publisher_set_len(p, 1), SHMBUS_ERR_STATE);
        assert_eq!(shmbus_publisher_discard(p), SHMBUS_ERR_STATE);
        let (mut data, mut capacity) = (null_mut(), 0usize);
        ok(shmbus_publisher_loan(p, &mut data, &mut capacity));
        assert_eq!(capacity, 64);
        assert_eq!(
            shmbus_publisher_loan(p, &mut data, &mut capacity),
            SHMBUS_ERR_STATE
        );
        assert_eq!(
            shmbus_publisher_publish(p, c"x".as_ptr().cast(), 1, null_mut()),
            SHMBUS_ERR_STATE
        );
        assert_eq!(shmbus_publisher_set_len(p, 65), SHMBUS_ERR_TOO_LARGE);
        data.copy_from_nonoverlapping(b"hello".as_ptr(), 5);
        ok(shmbus_publisher_set_len(p, 5));
        let mut seq = u64::MAX;
        ok(shmbus_publisher_send(p, &mut seq));
        assert_eq!(seq, 0);
        assert_eq!(
            shmbus_publisher_publish(p, [0u8; 65].as_ptr(), 65, null_mut()),
            SHMBUS_ERR_TOO_LARGE
        );
        ok(shmbus_publisher_publish(
            p,
            c"world".as_ptr().cast(),
            5,
            &mut seq,
        ));
        assert_eq!(seq, 1);

        assert_eq!(shmbus_subscriber_release(s), SHMBUS_ERR_STATE);
        let mut sample = empty_sample();
        ok(shmbus_subscriber_try_recv(s, &mut sample));
        assert_eq!(
            std::slice::from_raw_parts(sample.data, sample.len),
            b"hello"
        );
        assert_eq!(sample.sequence, 0);
        // The ring (2 slots) is full and its oldest slot is held: the publisher must wait.
        assert_eq!(
            shmbus_publisher_try_loan(p, &mut data, &mut capacity),
            SHMBUS_ERR_FULL
        );
        assert_eq!(shmbus_subscriber_try_recv(s, &mut sample), SHMBUS_ERR_STATE);
        assert!(last_error().contains("release"), "{}", last_error());
        ok(shmbus_subscriber_release(s));
        ok(shmbus_subscriber_recv(s, &mut sample));
        assert_eq!(
            std::slice::from_raw_parts(sample.data, sample.len),
            b"world"
        );
        ok(shmbus_subscriber_release(s));
        assert_eq!(shmbus_subscriber_try_recv(s, &mut sample), SHMBUS_ERR_EMPTY);
        assert_eq!(
            shmbus_subscriber_recv_timeout(s, 1000, &mut sample),
            SHMBUS_ERR_TIMEOUT
        );
        assert!(sample.data.is_null());
        // A loan closed unsent is never delivered.
        ok(shmbus_publisher_loan(p, &mut data, &mut capacity));
        ok(shmbus_publisher_close(p));
        assert_eq!(shmbus_subscriber_try_recv(s, &mut sample), SHMBUS_ERR_EMPTY);
        ok(shmbus_subscriber_close(s));
        ok(shmbus_bus_close(bus));
    }
}

#[test]
fn typed_topics_check_the_type_and_the_size() {
    // SAFETY: all handles live.
    unsafe {
        let bus = embedded();
        let point = ShmbusType {
            name: c"point".as_ptr(),
            size: 16,
            align: 8,
        };
        let other = ShmbusType {
            name: c"other".as_ptr(),
            size: 16,
            align: 8,
        };
        let (mut p, mut s) = (null_mut(), null_mut());
        let t = c"contract/typed".as_ptr();
        assert_eq!(
            shmbus_subscriber_open(bus, t, SHMBUS_OPEN, &point, null(), &mut s),
            SHMBUS_ERR_NOT_FOUND
        );
        assert!(last_error().contains("contract/typed"), "{}", last_error());
        ok(shmbus_subscriber_open(
            bus,
            t,
            SHMBUS_OPEN_OR_CREATE,
            &point,
            null(),
            &mut s,
        ));
        assert_eq!(
            shmbus_publisher_open(bus, t, SHMBUS_OPEN, &other, null(), &mut p),
            SHMBUS_ERR_TYPE_MISMATCH
        );
        assert_eq!(
            shmbus_publisher_open(bus, t, 7, &point, null(), &mut p),
            SHMBUS_ERR_INVALID_ARGUMENT
        );
        let mut bad_options = std::mem::zeroed::<ShmbusTopicOptions>();
        assert_eq!(
            shmbus_publisher_open(bus, t, SHMBUS_CREATE, &point, &bad_options, &mut p),
            SHMBUS_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("shmbus_topic_options_init"),
            "{}",
            last_error()
        );
        ok(shmbus_topic_options_init(&mut bad_options));
        bad_options.mode = 9;
        assert_eq!(
            shmbus_publisher_open(bus, t, SHMBUS_CREATE, &point, &bad_options, &mut p),
            SHMBUS_ERR_INVALID_ARGUMENT
        );
        ok(shmbus_publisher_open(
            bus,
            t,
            SHMBUS_OPEN,
            &point,
            null(),
            &mut p,
        ));
        assert_eq!(
            shmbus_publisher_publish(p, [0u8; 8].as_ptr(), 8, null_mut()),
            SHMBUS_ERR_TOO_LARGE
        );
        let (mut data, mut capacity) = (null_mut(), 0usize);
        ok(shmbus_publisher_loan(p, &mut data, &mut capacity));
        assert_eq!(capacity, 16);
        assert_eq!(data as usize % 8, 0, "a typed slot is aligned for its type");
        assert_eq!(shmbus_publisher_set_len(p, 8), SHMBUS_ERR_TOO_LARGE);
        ok(shmbus_publisher_discard(p));
        ok(shmbus_publisher_close(p));
        ok(shmbus_subscriber_close(s));
        ok(shmbus_bus_close(bus));
    }
}

#[test]
fn a_subscriber_entered_by_two_threads_at_once_refuses_the_second() {
    struct Send<T>(T);
    // SAFETY: the handle is used by the other thread while this one only calls in to be
    // refused; that refusal is what is tested.
    unsafe impl<T> std::marker::Send for Send<T> {}
    // SAFETY: all handles live until closed at the end, after the thread is joined.
    unsafe {
        let bus = embedded();
        let (p, s) = pair(bus, c"contract/threads");
        let handle = Send(s);
        let waiter = std::thread::spawn(move || {
            let handle = handle;
            let mut sample = empty_sample();
            // The main thread's probes below may hold the handle for an instant just as this
            // thread enters: then this one is the refused one, and tries again.
            let status = loop {
                match shmbus_subscriber_recv_timeout(handle.0, 10_000_000, &mut sample) {
                    SHMBUS_ERR_STATE => std::thread::sleep(Duration::from_millis(1)),
                    status => break status,
                }
            };
            let got = if status == SHMBUS_OK {
                std::slice::from_raw_parts(sample.data, sample.len).to_vec()
            } else {
                Vec::new()
            };
            (status, got, Send(handle.0))
        });
        // Wait until the other thread is inside its receive. Give it a head start first, so
        // that the two rarely enter at the same instant (the busy flag is a detector, not a
        // lock: two calls entering at the very same instant can both pass).
        std::thread::sleep(Duration::from_millis(20));
        let mut sample = empty_sample();
        let mut refused = false;
        for _ in 0..5000 {
            match shmbus_subscriber_try_recv(s, &mut sample) {
                SHMBUS_ERR_STATE => {
                    refused = true;
                    break;
                }
                SHMBUS_ERR_EMPTY => std::thread::sleep(Duration::from_millis(1)),
                other => panic!("{}: {}", name(other), last_error()),
            }
        }
        assert!(refused, "the second thread was never refused");
        assert!(last_error().contains("another thread"), "{}", last_error());
        assert_eq!(shmbus_subscriber_close(s), SHMBUS_ERR_STATE);
        ok(shmbus_publisher_publish(
            p,
            c"go".as_ptr().cast(),
            2,
            null_mut(),
        ));
        let (status, got, _) = waiter.join().expect("the waiting thread");
        ok(status);
        assert_eq!(got, b"go");
        ok(shmbus_subscriber_release(s));
        ok(shmbus_subscriber_close(s));
        ok(shmbus_publisher_close(p));
        ok(shmbus_bus_close(bus));
    }
}

#[test]
fn errors_are_per_thread_and_named() {
    // SAFETY: NULL is what is tested.
    assert_eq!(unsafe { shmbus_connect(null_mut()) }, SHMBUS_ERR_NULL);
    let here = last_error();
    let there = std::thread::spawn(last_error).join().expect("thread");
    assert!(here.contains("NULL"));
    assert_eq!(there, "");
    assert_eq!(name(SHMBUS_ERR_FULL), "SHMBUS_ERR_FULL");
    assert_eq!(name(12345), "SHMBUS_UNKNOWN");
}

#[test]
fn the_socket_path_reaches_the_embedded_daemon() {
    // SAFETY: handles live; the path is read while its bus is open.
    unsafe {
        let bus = embedded();
        let path = shmbus_bus_socket_path(bus);
        assert!(!path.is_null());
        let mut other = null_mut();
        ok(shmbus_connect_to(path, &mut other));
        ok(shmbus_bus_close(other));
        ok(shmbus_bus_close(bus));
        let mut none = null_mut();
        assert_eq!(
            shmbus_connect_to(c"/nonexistent/shmbus.sock".as_ptr(), &mut none),
            SHMBUS_ERR_CONNECT
        );
        assert!(none.is_null());
        // The suggestion names the C call, not the Rust one.
        let message = last_error();
        assert!(
            message.contains("or use shmbus_connect_embedded() to run one"),
            "{message}"
        );
        assert!(!message.contains("Bus::"), "{message}");
    }
}

#[test]
fn a_lagging_lossy_subscriber_learns_how_many_it_lost_and_reads_on() {
    // SAFETY: all handles live; sample data read only while held.
    unsafe {
        let bus = embedded();
        let mut options = std::mem::zeroed::<ShmbusTopicOptions>();
        ok(shmbus_topic_options_init(&mut options));
        options.capacity = 2;
        options.slot_size = 8;
        options.mode = SHMBUS_LOSSY;
        let (mut p, mut s) = (null_mut(), null_mut());
        let t = c"contract/lossy".as_ptr();
        ok(shmbus_publisher_open(
            bus,
            t,
            SHMBUS_CREATE,
            null(),
            &options,
            &mut p,
        ));
        ok(shmbus_subscriber_open(
            bus,
            t,
            SHMBUS_OPEN,
            null(),
            null(),
            &mut s,
        ));
        for i in 0u8..6 {
            ok(shmbus_publisher_try_publish(p, &i, 1, null_mut()));
        }
        let mut sample = empty_sample();
        assert_eq!(
            shmbus_subscriber_try_recv(s, &mut sample),
            SHMBUS_ERR_LAGGED
        );
        let lost = sample.lagged;
        assert!(lost > 0 && sample.data.is_null());
        // Reading goes on at the oldest message still in the ring (message i is byte i).
        ok(shmbus_subscriber_try_recv(s, &mut sample));
        assert_eq!(sample.lagged, 0);
        assert_eq!(u64::from(*sample.data), sample.sequence);
        assert!(sample.sequence >= lost);
        ok(shmbus_subscriber_release(s));
        ok(shmbus_publisher_close(p));
        ok(shmbus_subscriber_close(s));
        ok(shmbus_bus_close(bus));
    }
}
