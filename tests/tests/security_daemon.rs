//! Threat: a peer against the daemon itself. A uid that may connect (a member of
//! `--socket-group`) but holds no grant tries to freeze the daemon or run it out of descriptors
//! with what it can send on its connection; and a daemon that hangs for any reason must not hang
//! its clients. Every test runs a real `shmbusd` process and, where the machine allows (root),
//! speaks as uid 65534 through a connection that uid made.
//!
//! docs/security.md names these tests beside the claims they prove.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Once;
use std::time::Duration;

use bus_client::{Bus, ConnectError, RequestError};
use bus_proto::fdpass;
use bus_proto::protocol::{ErrorCode, Request, Response, Role, PROTOCOL_VERSION};
use bus_tests::{unique_topic, wait_until, Daemon, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod hostile;
use hostile::*;

/// The control timeout of every client in this test process: short, so that a regression (a
/// frozen daemon) fails a test instead of hanging it, and long enough for a loaded machine.
const CONTROL_TIMEOUT_MS: &str = "5000";

/// How long an honest party may take for a whole round (connect, create, send, receive) while
/// the daemon is under attack.
const HONEST_BOUND: Duration = Duration::from_secs(20);

fn set_control_timeout() {
    static ONCE: Once = Once::new();
    // Set before any client in this process reads it (it is read once per process).
    ONCE.call_once(|| std::env::set_var("SHMBUS_CONTROL_TIMEOUT_MS", CONTROL_TIMEOUT_MS));
}

/// A daemon whose socket uid 65534 may reach (`--socket-group 65534`), with no rule for it.
fn daemon_open_to_nobody(tag: &str) -> (TempDir, Daemon) {
    let dir = TempDir::new(tag);
    // A rule for another uid only: nobody is granted nothing.
    let rules = write_rules(
        dir.path(),
        "[[rule]]\ntopics = \"other/**\"\nsubscribe = { uids = [4242] }\n",
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
    (dir, d)
}

/// An honest party's whole round, in a thread bounded by [`HONEST_BOUND`]: connect, create a
/// byte topic, subscribe, send `n` messages and receive them in order. Panics if the round
/// fails or does not finish in time.
fn honest_round(d: &Daemon, tag: &str, n: u32) {
    let socket = d.socket().to_path_buf();
    let topic = unique_topic(tag);
    let (outcome, handle) = bounded(HONEST_BOUND, move || -> Result<(), String> {
        let bus = Bus::connect_to(&socket).map_err(|e| format!("connect: {e}"))?;
        let mut publisher = bus
            .publisher::<[u8]>(&topic)
            .slot_size(64)
            .create()
            .map_err(|e| format!("create: {e}"))?;
        let mut subscriber = bus
            .subscriber::<[u8]>(&topic)
            .open()
            .map_err(|e| format!("subscribe: {e}"))?;
        for i in 0..n {
            publisher
                .publish(&i.to_le_bytes())
                .map_err(|e| format!("send {i}: {e}"))?;
            let s = subscriber
                .recv_timeout(HONEST_BOUND)
                .map_err(|e| format!("recv {i}: {e}"))?;
            if s[..] != i.to_le_bytes() {
                return Err(format!("message {i} arrived as {:?}", &s[..]));
            }
        }
        Ok(())
    });
    match outcome {
        Outcome::Done(Ok(())) => {}
        Outcome::Done(Err(e)) => panic!("the honest party failed: {e}; daemon log:\n{}", d.log()),
        Outcome::Panicked(p) => panic!("the honest party panicked: {p}"),
        Outcome::Hung => panic!(
            "the honest party did not finish within {HONEST_BOUND:?}: the daemon is frozen; its log:\n{}",
            d.log()
        ),
    }
    assert!(join_within(handle, Duration::from_secs(5)));
}

/// A TCP connection on the loopback whose peer never reads, with `unsent` bytes queued in its
/// send buffer and `SO_LINGER` set to `linger_s` seconds: its last close blocks until the data
/// leaves or the linger time passes. Returns the connection and the listener (which must stay
/// open, never accepting).
fn lingering_tcp(linger_s: i32) -> (TcpStream, TcpListener, usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind on the loopback");
    let stream = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    stream.set_nonblocking(true).expect("non-blocking");
    let chunk = vec![0x5au8; 64 * 1024];
    let mut queued = 0usize;
    while queued < 4 * 1024 * 1024 {
        match (&stream).write(&chunk) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the TCP connection: {e}"),
        }
    }
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: linger_s,
    };
    // SAFETY: a live socket; the option value is a `linger` on this stack, of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    (stream, listener, queued)
}

/// The frame of a `hello`.
fn hello() -> Request {
    Request::Hello {
        version: PROTOCOL_VERSION,
        client_name: "attacker".into(),
    }
}

/// Attack: a uid with no grant connects and sends `hello` with a loopback TCP socket attached
/// that has megabytes unsent and a 600 s linger (its own copy closed, so the daemon's close is
/// the last). Before the fix the daemon closed it on its event loop and sat in `close` for ten
/// minutes. Now honest clients connect, create, publish and receive while that socket is still
/// open somewhere in the daemon, and the attacker's connection is answered too.
#[test]
fn a_lingering_socket_sent_with_hello_does_not_freeze_the_daemon() {
    if skip_unless_root("a_lingering_socket_sent_with_hello_does_not_freeze_the_daemon") {
        return;
    }
    set_control_timeout();
    let (_dir, d) = daemon_open_to_nobody("sec-linger");
    let attacker = connect_as(NOBODY, NOBODY, d.socket());
    attacker
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut held = Vec::new();
    for _ in 0..4 {
        let (tcp, listener, queued) = lingering_tcp(600);
        assert!(queued > 0, "nothing could be queued on the TCP connection");
        fdpass::write_frame_with_fds(&attacker, &hello(), &[tcp.as_raw_fd()])
            .expect("send hello with the socket");
        // The daemon's copy is now the last one that matters.
        drop(tcp);
        held.push(listener);
    }
    // Its first hello is answered (once, see below), whatever came with it.
    match fdpass::read_frame_with_fds::<Response>(&attacker, 2) {
        Ok((Response::HelloOk { .. }, _)) => {}
        other => panic!("the attacker's hello: {other:?}"),
    }
    // A second connection carrying the same kind of socket, dropped at once: closing the
    // connection must not close the socket still queued in it on the daemon's loop either.
    let second = connect_as(NOBODY, NOBODY, d.socket());
    let (tcp, listener, _) = lingering_tcp(600);
    fdpass::write_frame_with_fds(&second, &hello(), &[tcp.as_raw_fd()]).expect("send");
    drop(tcp);
    held.push(listener);
    drop(second);
    honest_round(&d, "sec-linger", 100);
    assert!(daemon_alive(&d));
    drop(held);
}

/// Attack: a uid with no grant repeats `hello` thousands of times on many connections without
/// reading the answers. Before the fix each answer carried a new descriptor (the status page)
/// and 50 connections filled the daemon's 20,000-descriptor table in 0.3 s. Now `hello` is
/// answered once per connection (a repeat is `BadRequest`, without a descriptor), answers left
/// unread are bounded in descriptors as well as bytes, and the daemon's descriptor count stays
/// within a few of one per connection; honest clients are served throughout.
#[test]
fn repeated_hellos_pile_up_no_descriptors_in_the_daemon() {
    if skip_unless_root("repeated_hellos_pile_up_no_descriptors_in_the_daemon") {
        return;
    }
    set_control_timeout();
    let (_dir, d) = daemon_open_to_nobody("sec-hellos");
    let before = fd_count(d.pid());
    let hello_frame = bus_proto::frame::encode_frame(&hello()).expect("encode");
    let burst: Vec<u8> = hello_frame.repeat(2_000);
    let mut conns: Vec<UnixStream> = Vec::new();
    for _ in 0..20 {
        let c = connect_as(NOBODY, NOBODY, d.socket());
        c.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("write timeout");
        // The daemon may drop the connection part-way (too much left unread): that is fine.
        let _ = (&c).write_all(&burst);
        conns.push(c);
    }
    // Let the daemon work through what it was sent: its descriptor count settles.
    let settled = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        fd_count(d.pid()) <= before + conns.len() + 8
    });
    let after = fd_count(d.pid());
    assert!(
        settled,
        "the daemon holds {after} descriptors, {before} before 20 connections sent 40,000 hellos"
    );
    honest_round(&d, "sec-hellos", 10);

    // One connection, answers read: the first hello has the status page, a repeat is refused
    // without any descriptor.
    let c = RawClient::from_stream(connect_as(NOBODY, NOBODY, d.socket()));
    match c.request(&hello()) {
        Ok((Response::HelloOk { .. }, fds)) => assert_eq!(fds.len(), 1, "the status page"),
        other => panic!("first hello: {other:?}"),
    }
    match c.request(&hello()) {
        Err(bus_proto::protocol::ProtocolError::Closed) => {}
        Ok((Response::Error { code, message }, fds)) => {
            assert_eq!(code, ErrorCode::BadRequest, "{message}");
            assert!(message.contains("already"), "{message}");
            assert!(
                fds.is_empty(),
                "a repeated hello carried {} descriptors",
                fds.len()
            );
        }
        other => panic!("second hello: {other:?}"),
    }
    drop(conns);
}

/// Attack: descriptors of every kind sent with requests that take none, and far more than a
/// frame may carry. The daemon keeps serving; none of them stays open in it once the sender's
/// connections are gone.
#[test]
fn descriptors_sent_with_any_request_are_closed_and_never_pile_up() {
    if skip_unless_root("descriptors_sent_with_any_request_are_closed_and_never_pile_up") {
        return;
    }
    set_control_timeout();
    let (_dir, d) = daemon_open_to_nobody("sec-fds");
    let before = fd_count(d.pid());
    let c = connect_as(NOBODY, NOBODY, d.socket());
    let (a, _b) = UnixStream::pair().expect("pair");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let efd = nix::sys::eventfd::EventFd::new().expect("eventfd");
    let efd: OwnedFd = efd.into();
    let many: Vec<i32> = std::iter::repeat_n(a.as_raw_fd(), 200)
        .chain([listener.as_raw_fd(), efd.as_raw_fd()])
        .collect();
    // A few descriptors with each request: answered as if none had come.
    for req in [hello(), Request::List, Request::Status] {
        fdpass::write_frame_with_fds(&c, &req, &many[198..]).expect("send with descriptors");
        let (resp, fds) = fdpass::read_frame_with_fds::<Response>(&c, 4).expect("an answer");
        assert!(!matches!(resp, Response::Error { .. }), "{resp:?}");
        drop(fds);
    }
    // Hundreds at once: more than the daemon takes to close at a time from one uid; it may
    // drop the connection (an answer or a close are both fine), and must keep serving.
    for _ in 0..5 {
        if fdpass::write_frame_with_fds(&c, &Request::List, &many).is_err() {
            break;
        }
        if fdpass::read_frame_with_fds::<Response>(&c, 4).is_err() {
            break;
        }
    }
    drop(c);
    let settled = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        fd_count(d.pid()) <= before
    });
    assert!(
        settled,
        "the daemon holds {} descriptors, {before} before",
        fd_count(d.pid())
    );
    honest_round(&d, "sec-fds", 10);
}

/// A daemon that stops answering (here: stopped with SIGSTOP) makes every call fail with a
/// named timeout after the control timeout, instead of hanging the caller: a new connection,
/// and a request on a connection made before. After SIGCONT the same `Bus` works again.
#[test]
fn a_hung_daemon_makes_calls_fail_with_a_timeout_instead_of_hanging() {
    set_control_timeout();
    let d = Daemon::start(PEER, &[]);
    let bus = d.bus();
    bus.list().expect("list while the daemon runs");
    let pid = Pid::from_raw(d.pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP the daemon");
    struct Cont(Pid);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGCONT);
        }
    }
    let cont = Cont(pid);

    let socket = d.socket().to_path_buf();
    let (outcome, handle) = bounded(Duration::from_secs(60), move || {
        let list = bus.list().map(|_| ());
        let connect = Bus::connect_to(&socket).map(|_| ());
        (list, connect, bus)
    });
    let (list, connect, bus) = match outcome {
        Outcome::Done(v) => v,
        Outcome::Panicked(p) => panic!("{p}"),
        Outcome::Hung => panic!("calls on a stopped daemon hung past 60 s"),
    };
    assert!(join_within(handle, Duration::from_secs(5)));
    match list {
        Err(RequestError::TimedOut { after }) => {
            assert_eq!(after, Duration::from_millis(5000));
        }
        other => panic!("list on a stopped daemon: {other:?}"),
    }
    match connect {
        Err(e @ ConnectError::TimedOut { .. }) => {
            assert!(e.to_string().contains("did not answer"), "{e}");
        }
        other => panic!("connect to a stopped daemon: {other:?}"),
    }
    drop(cont);
    // The next call connects anew and is answered.
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        bus.list().is_ok()
    });
    assert!(ok, "the bus did not recover after SIGCONT");
}

/// Attack: a uid with no grant probes which topics exist with every request about a port
/// (`Detach`, `AddWaker`, `RemoveWaker`, `Reattach`). Before the fix they answered
/// `BadRequest` or `PermissionDenied` for a topic that exists and `NoSuchTopic` for one that
/// does not. Now each answers a topic it may not see exactly as a missing one (same code, same
/// message but for the name), and no descriptor comes back.
#[test]
fn port_requests_do_not_tell_a_uid_without_access_which_topics_exist() {
    if skip_unless_root("port_requests_do_not_tell_a_uid_without_access_which_topics_exist") {
        return;
    }
    set_control_timeout();
    let (_dir, d) = daemon_open_to_nobody("sec-port-oracle");
    let exists = unique_topic("secret/exists");
    let missing = unique_topic("secret/missing");
    let bus = d.bus();
    let _publisher = bus
        .publisher::<[u8]>(&exists)
        .slot_size(64)
        .create()
        .expect("the topic that exists");
    let _subscriber = bus
        .subscriber::<[u8]>(&exists)
        .open()
        .expect("a subscriber on it");
    let c = RawClient::from_stream(connect_as(NOBODY, NOBODY, d.socket())).say_hello();
    let requests = |topic: &str| -> Vec<Request> {
        let topic = topic.to_string();
        let mut all = Vec::new();
        for role in [Role::Publisher, Role::Subscriber] {
            all.push(Request::Detach {
                topic: topic.clone(),
                role,
                index: 0,
                generation: 1,
            });
            all.push(Request::AddWaker {
                topic: topic.clone(),
                role,
                index: 0,
                generation: 1,
                presence: false,
            });
            all.push(Request::Reattach {
                topic: topic.clone(),
                role,
                index: 0,
                generation: 1,
            });
        }
        all.push(Request::RemoveWaker {
            topic,
            slot: 0,
            generation: 1,
        });
        all
    };
    for (a, b) in requests(&exists).into_iter().zip(requests(&missing)) {
        let (ra, fa) = c.request(&a).expect("an answer");
        let (rb, fb) = c.request(&b).expect("an answer");
        assert!(
            fa.is_empty() && fb.is_empty(),
            "{a:?}: descriptors came back"
        );
        let text = |r: &Response, name: &str| format!("{r:?}").replace(name, "TOPIC");
        assert_eq!(
            text(&ra, &exists),
            text(&rb, &missing),
            "{a:?} tells an existing topic from a missing one"
        );
        assert!(
            matches!(
                ra,
                Response::Error {
                    code: ErrorCode::NoSuchTopic,
                    ..
                }
            ),
            "{a:?}: {ra:?}"
        );
    }
}
