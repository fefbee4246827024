//! The crate documentation's example, as a test: a ring over heap memory, one publisher, one
//! subscriber, one message read in place.
#![cfg(not(loom))]

#[test]
fn heap_ring_example_delivers_a_message_in_place() -> Result<(), Box<dyn std::error::Error>> {
    use bus_core::doorbell::Futex;
    use bus_core::layout::{Geometry, Layout, Mode, TypeInfo};
    use bus_core::ring::{PublisherPort, Ring, StartAt, SubscriberPort};
    use bus_core::storage::{HeapRegion, RawStorage};
    use bus_core::wait::WaitStrategy;
    use std::sync::Arc;

    let geometry = Geometry {
        capacity: 8,
        slot_size: 64,
        mode: Mode::Lossless,
        max_publishers: 1,
        max_subscribers: 1,
        type_info: TypeInfo::bytes(),
    };
    let layout = Layout::compute(&geometry)?;
    let storage = RawStorage::create(HeapRegion::zeroed(layout.total_len as usize), &layout)?;
    let ring = Arc::new(Ring::new(storage, Futex));

    let (pi, pg) = ring.attach_any_publisher(1)?;
    let (si, sg) = ring.attach_any_subscriber(1, StartAt::Latest)?;
    let mut publisher = PublisherPort::new(ring.clone(), pi, pg)?;
    let mut subscriber = SubscriberPort::new(ring.clone(), si, sg)?;

    let mut loan = publisher.try_loan()?;
    loan.write(b"hello")?;
    loan.commit();

    let sample = subscriber.recv(WaitStrategy::BusyPoll, None)?;
    assert_eq!(sample.bytes(), b"hello");
    Ok(())
}
