//! # bus-proto
//!
//! What a shmbus client and the daemon (`shmbusd`) must agree on, and nothing else: no daemon
//! logic, no client logic.
//!
//! * [`protocol`]: the control messages ([`protocol::Request`], [`protocol::Response`]), the
//!   protocol version and the error codes.
//! * [`frame`]: how a message travels (a length prefix and a JSON body), and the one strict
//!   decoder that every reader, the property tests and the fuzz target go through.
//! * [`fdpass`]: descriptors beside a frame (`SCM_RIGHTS`), peer credentials.
//! * [`segment`]: the sealed memory files a topic lives in; mapping and validating them.
//! * [`wake`]: the doorbell every mapped ring rings through: the futex, and the eventfds of
//!   waiters that sleep on a descriptor of their own.
//! * [`status`]: the daemon's status page (its epoch), which clients watch to follow a
//!   restarted daemon.
//! * [`paths`]: where the socket is, and the names of the files beside it.
//! * [`names`]: topic name rules.
//! * [`pattern`]: topic patterns (`robot/**`, `md/*/AAPL`), for access rules and tools.
//!
//! The topic vocabulary itself (`Geometry`, `TypeInfo`, `Mode`, `StartAt`, the limits and the
//! one validator) is `bus_core`'s; this crate carries it on the wire.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod fdpass;
pub mod frame;
pub mod names;
pub mod paths;
pub mod pattern;
pub mod protocol;
pub mod segment;
pub mod status;
pub mod wake;
