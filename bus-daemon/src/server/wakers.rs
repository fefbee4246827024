//! Wake slots: waiters that sleep on an eventfd of their own (wait sets, async code, C event
//! loops). The daemon hands a slot out for one of the caller's ports, keeps the eventfd in the
//! topic ring's doorbell, and hands duplicates to the ports that ring the slot's bell. The
//! slots of a port go with it (detach, or the client's connection closing).

use std::os::fd::OwnedFd;

use bus_core::entries::wake_bell;
use bus_proto::protocol::{ErrorCode, Response, Role};

use super::dispatch::no_topic;
use super::registry::{Caller, State, Waker};
use super::{error, Answer};

/// Wake slots one port may hold: a port watched by a wait set or two and an async waiter needs
/// no more, and no port can take a topic's whole table.
pub(super) const MAX_PER_PORT: usize = 4;

/// `add_waker`: a wake slot for the caller's port `(role, index, generation)` on `topic`, with
/// the eventfd that came beside the request.
pub(super) fn add(
    state: &mut State,
    caller: &Caller,
    topic: &str,
    (role, index, generation): (Role, u32, u64),
    fds: Vec<OwnedFd>,
) -> Answer {
    let Some(t) = state.topics.get_mut(topic) else {
        return no_topic(topic);
    };
    if !t
        .attachments
        .iter()
        .any(|a| a.client == caller.id && a.is(role, index, generation))
    {
        return error(
            ErrorCode::BadRequest,
            format!(
                "this connection holds no {role} {index} (generation {generation}) on '{topic}'"
            ),
        );
    }
    let held = t
        .wakers
        .iter()
        .filter(|w| w.client == caller.id && w.port == (role, index, generation))
        .count();
    if held >= MAX_PER_PORT {
        return error(
            ErrorCode::LimitReached,
            format!(
                "{role} {index} on '{topic}' already has {held} wake slots, the most one port may hold; drop a wait set or async waiter of it first"
            ),
        );
    }
    let Some(fd) = fds.into_iter().next() else {
        return error(
            ErrorCode::BadRequest,
            "add_waker needs the waiter's eventfd beside the request",
        );
    };
    let bell = match role {
        Role::Subscriber => wake_bell::DATA,
        Role::Publisher => wake_bell::SPACE,
    };
    let (slot, slot_generation) = match t.ring.attach_waker(bell, caller.cred.pid) {
        Ok(s) => s,
        Err(_) => {
            return error(
                ErrorCode::TableFull,
                format!(
                    "topic '{topic}' already has {} waiters on descriptors, its maximum; close some wait sets or async receivers",
                    bus_core::entries::WAKE_SLOTS
                ),
            )
        }
    };
    if t.ring.doorbell().insert(slot, slot_generation, fd).is_err() {
        let _ = t.ring.release_waker(slot, slot_generation);
        return error(
            ErrorCode::BadRequest,
            "a waiter's descriptor must be an eventfd (a publisher never blocks writing one)",
        );
    }
    t.wakers.push(Waker {
        client: caller.id,
        port: (role, index, generation),
        slot,
        generation: slot_generation,
    });
    (
        Response::WakerAdded {
            slot: slot as u32,
            generation: slot_generation,
        },
        Vec::new(),
    )
}

/// `remove_waker`: the caller gives one of its wake slots back.
pub(super) fn remove(
    state: &mut State,
    caller: &Caller,
    topic: &str,
    slot: u32,
    generation: u64,
) -> Answer {
    let Some(t) = state.topics.get_mut(topic) else {
        return no_topic(topic);
    };
    let mine =
        |w: &Waker| w.client == caller.id && w.slot == slot as usize && w.generation == generation;
    if !t.wakers.iter().any(mine) {
        return error(
            ErrorCode::BadRequest,
            format!(
                "this connection holds no wake slot {slot} (generation {generation}) on '{topic}'"
            ),
        );
    }
    t.release_wakers(mine);
    (Response::WakerRemoved, Vec::new())
}

/// `waker_fd`: a duplicate of a wake slot's eventfd, for a port of the caller's on the topic
/// that found the slot armed.
pub(super) fn fd(
    state: &State,
    caller: &Caller,
    topic: &str,
    slot: u32,
    generation: u64,
) -> Answer {
    let Some(t) = state.topics.get(topic) else {
        return no_topic(topic);
    };
    if !t.attachments.iter().any(|a| a.client == caller.id) {
        return error(
            ErrorCode::PermissionDenied,
            format!("this connection holds no port on '{topic}'"),
        );
    }
    match t.ring.doorbell().get(slot as usize, generation) {
        Some(fd) => (Response::WakerFd { slot, generation }, vec![fd]),
        None => error(
            ErrorCode::BadRequest,
            format!("no wake slot {slot} (generation {generation}) on '{topic}'"),
        ),
    }
}
