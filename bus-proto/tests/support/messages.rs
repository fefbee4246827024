//! One message of every kind, for the round-trip tests of `src/frame/tests.rs` and as the
//! seeds of `tests/protocol_fuzz.rs` (both include this file as a module; a new message kind
//! goes here once). The includer imports the protocol's types: this module takes them from it.

use super::*;

/// A typed topic's geometry.
pub fn spec() -> Geometry {
    Geometry {
        capacity: 1024,
        slot_size: 48,
        mode: Mode::Lossless,
        max_publishers: 8,
        max_subscribers: 16,
        type_info: TypeInfo {
            name: "my_crate::Odom".into(),
            size: 48,
            align: 8,
        },
    }
}

/// One request of every kind, with strings that need escaping.
pub fn every_request() -> Vec<Request> {
    vec![
        Request::Hello {
            version: PROTOCOL_VERSION,
            client_name: "fuzz \"client\" \\ é \u{1F600}".into(),
        },
        Request::Attach {
            topic: "robot/odom".into(),
            role: Role::Publisher,
            how: How::Create {
                spec: spec(),
                exact: true,
            },
            start: StartAt::Latest,
        },
        Request::Attach {
            topic: "md/XNAS/AAPL".into(),
            role: Role::Publisher,
            how: How::Open { type_info: None },
            start: StartAt::Latest,
        },
        Request::Attach {
            topic: "robot/odom".into(),
            role: Role::Subscriber,
            how: How::Create {
                spec: Geometry {
                    mode: Mode::Lossy,
                    ..spec()
                },
                exact: false,
            },
            start: StartAt::Oldest,
        },
        Request::Attach {
            topic: "robot/odom".into(),
            role: Role::Subscriber,
            how: How::Open {
                type_info: Some(spec().type_info),
            },
            start: StartAt::Latest,
        },
        Request::Detach {
            topic: "a".into(),
            role: Role::Subscriber,
            index: 3,
            generation: u64::MAX,
        },
        Request::Reattach {
            topic: "a/b".into(),
            role: Role::Publisher,
            index: 0,
            generation: 1,
        },
        Request::AddWaker {
            topic: "robot/odom".into(),
            role: Role::Subscriber,
            index: 1,
            generation: 2,
            presence: false,
        },
        Request::RemoveWaker {
            topic: "robot/odom".into(),
            slot: 3,
            generation: 4,
        },
        Request::List,
        Request::ListAfter {
            after: "robot/odom".into(),
        },
        Request::Status,
        Request::Held {
            topic: "md/XNAS/AAPL".into(),
            index: 2,
            generation: 9,
        },
        Request::Stats { topic: None },
        Request::StatsAfter { after: "a".into() },
        Request::Stats {
            topic: Some("x".into()),
        },
        Request::Delete { topic: "x".into() },
        Request::Shutdown,
        Request::Watch {
            pattern: "robot/**".into(),
            existing: Some(StartAt::Oldest),
        },
        Request::Watch {
            pattern: "md/*/AAPL".into(),
            existing: None,
        },
    ]
}

/// One response of every kind, with strings that need escaping.
pub fn every_response() -> Vec<Response> {
    vec![
        Response::HelloOk {
            version: 1,
            daemon_version: "0.1.0".into(),
            daemon_pid: 42,
            epoch: 7,
        },
        Response::Attached {
            topic: "robot/odom".into(),
            spec: spec(),
            index: 1,
            generation: 2,
            segment_len: 1 << 20,
            created: true,
        },
        Response::Watching { existing: 3 },
        Response::TopicCreated {
            topic: "robot/\"odom\"".into(),
            spec: spec(),
            index: 0,
            generation: u64::MAX,
            segment_len: 4096,
            existing: false,
        },
        Response::TopicDeleted {
            topic: "robot/odom".into(),
        },
        Response::Detached,
        Response::Deleted,
        Response::Stopping,
        Response::WakerAdded {
            slot: 7,
            generation: 8,
        },
        Response::WakerRemoved,
        Response::Topics {
            topics: vec![TopicInfo {
                name: "a".into(),
                spec: spec(),
                publishers: 1,
                subscribers: 2,
                published: 3,
                bytes: 1 << 20,
            }],
            next: Some("a".into()),
        },
        Response::Stats {
            topics: vec![TopicStats {
                name: "a".into(),
                spec: spec(),
                bytes: 1 << 20,
                published: 9,
                publishers: vec![PublisherStat {
                    index: 0,
                    pid: 1,
                    published: 9,
                }],
                subscribers: vec![SubscriberStat {
                    index: 0,
                    pid: 2,
                    cursor: 5,
                    lag: 4,
                    lagged: 0,
                }],
                drops: 0,
                stalls: 1,
                unheard: 0,
                wakers: vec![WakerStat {
                    slot: 3,
                    pid: 42,
                    role: Role::Subscriber,
                    index: 0,
                    armed: true,
                }],
            }],
            next: None,
        },
        Response::Status {
            status: DaemonStatus {
                daemon_pid: 7,
                daemon_version: "0.1.0".into(),
                totals: Totals {
                    topics: 10_000,
                    bytes: 1 << 33,
                    clients: 500,
                    watched: 1,
                    open_files: 20_512,
                },
                uid: 1000,
                usage: Usage {
                    topics: 3,
                    bytes: 1 << 20,
                    clients: 2,
                },
                limits: LimitsInfo {
                    max_topics: 16_384,
                    max_bytes_per_uid: 1 << 30,
                    max_clients_per_uid: 1024,
                    max_publishers_per_topic: 256,
                    max_subscribers_per_topic: 256,
                    max_open_files: 1 << 20,
                    max_frame: 65_536,
                },
            },
        },
        Response::error(ErrorCode::LimitReached, "m \u{0}"),
    ]
}
