//! Wake slots: waiters that sleep on a descriptor of their own (wait sets, async code, C event
//! loops), woken by their own process's wake agent. The daemon hands a slot out for one of the
//! caller's ports and takes it back when the port or its client goes (detach, or the client's
//! connection closing). No descriptor is involved: none is received, kept or handed out.

use bus_core::entries::wake_bell;
use bus_proto::protocol::{ErrorCode, Response, Role};

use super::dispatch::no_topic;
use super::registry::{Caller, State, Waker};
use super::{error, Answer};

/// Wake slots one port may hold: a port watched by a wait set or two and an async waiter needs
/// no more, and no port can take a topic's whole table.
pub(super) const MAX_PER_PORT: usize = 4;

/// `add_waker`: a wake slot for the caller's port `(role, index, generation)` on `topic`.
pub(super) fn add(
    state: &mut State,
    caller: &Caller,
    topic: &str,
    (role, index, generation): (Role, u32, u64),
    presence: bool,
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
    let bell = match role {
        _ if presence => wake_bell::PRESENCE,
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
