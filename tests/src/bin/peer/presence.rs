//! `shmbus-peer presence`: a port that waits for its peers, then reports every change of
//! their number that a `WaitSet` wakes it for.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use bus_client::{Bus, PresencePort, WaitSet};
use bus_tests::TestMsg;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::json;

use super::{fail, say, TopicArgs};

/// Open a publisher (or, with `subscriber`, a subscriber) of `TestMsg` on the topic, print
/// `ready`, wait for `wait` peers and print `{"count": n}`; a publisher then publishes one
/// message (for `hold` peers to hold). Then watch the peer count with a `WaitSet`, print
/// `watching`, and print `{"count": n}` at every change until the count is zero.
pub(crate) fn presence(t: &TopicArgs, subscriber: bool, wait: usize) -> ExitCode {
    const PATIENCE: Option<Duration> = Some(Duration::from_secs(60));
    let bus = match Bus::connect_to(&t.socket) {
        Ok(b) => b,
        Err(e) => return fail("connect", e),
    };
    let mut set = match WaitSet::new() {
        Ok(s) => s,
        Err(e) => return fail("wait set", e),
    };
    // The wait set's descriptor, as a foreign event loop waits for it: it becomes readable only
    // when a ringer takes the presence bell's armed bit (no periodic check makes it so), so
    // every report below proves the daemon rang.
    let watch = |port: &dyn Fn() -> usize, set: &mut WaitSet, id| -> ExitCode {
        say("watching");
        loop {
            match set.try_wait() {
                Ok([]) => {}
                Ok(ready) if ready == [id] => {
                    let count = port();
                    say(&json!({ "count": count }).to_string());
                    if count == 0 {
                        return ExitCode::SUCCESS;
                    }
                    continue;
                }
                Ok(ready) => return fail("wait", format!("woke for {ready:?}")),
                Err(e) => return fail("wait", e),
            }
            let mut fds = [PollFd::new(set.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(60_000u16)) {
                Ok(0) => return fail("wait", "no change of the peer count within 60 s"),
                Ok(_) => {}
                Err(e) => return fail("poll", e),
            }
        }
    };
    if subscriber {
        let sub = match bus.subscriber::<TestMsg>(&t.topic).open_or_create() {
            Ok(s) => s,
            Err(e) => return fail("open subscriber", e),
        };
        say("ready");
        match sub.wait_for_publishers(wait, PATIENCE) {
            Ok(n) => say(&json!({ "count": n, "direct": sub.publisher_count() }).to_string()),
            Err(e) => return fail("wait for publishers", e),
        }
        let attachment = match set.attach_presence(&sub) {
            Ok(a) => a,
            Err(e) => return fail("attach presence", e),
        };
        watch(&|| sub.peer_count(), &mut set, attachment.id())
    } else {
        let mut publisher = match bus.publisher::<TestMsg>(&t.topic).open_or_create() {
            Ok(p) => p,
            Err(e) => return fail("open publisher", e),
        };
        say("ready");
        match publisher.wait_for_subscribers(wait, PATIENCE) {
            Ok(n) => {
                say(&json!({ "count": n, "direct": publisher.subscriber_count() }).to_string())
            }
            Err(e) => return fail("wait for subscribers", e),
        }
        if let Err(e) = publisher.publish(&TestMsg::new(0, 0)) {
            return fail("publish", e);
        }
        let attachment = match set.attach_presence(&publisher) {
            Ok(a) => a,
            Err(e) => return fail("attach presence", e),
        };
        watch(&|| publisher.peer_count(), &mut set, attachment.id())
    }
}
