//! # bus-bridge
//!
//! `shmbus-bridge` carries chosen topics between a local `shmbusd` and Zenoh, both ways, so a
//! process on another machine sees `robot/odom` as if it were local. Zenoh is the network
//! engine; the bridge writes no network protocol of its own.
//!
//! * [`config`]: the command line and the TOML file, merged; patterns decide what is bridged.
//! * [`keys`]: topic `robot/odom` is key `<prefix>/robot/odom`; the liveliness tokens.
//! * [`type_tag`]: a topic's geometry and type as text, in every sample's encoding and in
//!   the exporter's token.
//! * [`attachment`]: sequence, stream counter, publish time and origin of every sample.
//! * [`qos`]: lossless topics block, lossy ones drop; per-topic priority and express.
//! * `export`, `import`: the two directions; `bridge`: the whole; [`report`]: stdout and
//!   counters.
//!
//! Loops are impossible by construction: exporters publish with `allowed_destination(Remote)`
//! and importers subscribe with `allowed_origin(Remote)`, so a bridge never hears itself on
//! Zenoh; and an exporter skips the messages of the publisher entry its own importer writes
//! with, so what a bridge imported never goes back out (docs/bridge.md has the full argument).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod attachment;
mod bridge;
pub mod cli;
pub mod config;
mod export;
mod import;
pub mod keys;
pub mod qos;
pub mod report;
pub mod type_tag;
mod zconfig;

pub use bridge::{run, BridgeError};
