"""Samples are views of the slot in shared memory; their lifetime keeps the slot safe."""

import gc

import numpy as np
import pytest

import shmbus


def mapping_of(address):
    """The line of /proc/self/maps whose range holds `address`."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span = line.split()[0]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi:
                return line
    return None


def test_numpy_reads_the_slot_in_place(bus, topic):
    pub = bus.publisher(topic, type=("f32x4", 16, 4), capacity=2)
    sub = bus.subscriber(topic, type=("f32x4", 16, 4))
    pub.publish(np.array([1.5, 2.5, 3.5, 4.5], dtype=np.float32))
    sample = sub.recv(timeout=5)
    array = np.frombuffer(sample, dtype=np.float32)
    assert array.tolist() == [1.5, 2.5, 3.5, 4.5]
    # The array's data is the sample's slot, inside a shared memory segment of the bus.
    assert array.ctypes.data == sample.address
    segment = mapping_of(array.ctypes.data)
    assert segment is not None and "memfd:shmbus" in segment, segment
    # Read-only: subscribers map the slots read-only.
    assert not array.flags.writeable
    with pytest.raises(ValueError):
        array[0] = 0.0


def test_a_viewed_sample_holds_its_slot_until_the_view_is_gone(bus, topic):
    pub = bus.publisher(topic, slot_size=16, capacity=2)
    sub = bus.subscriber(topic)
    pub.publish(b"first")
    pub.publish(b"second")
    sample = sub.recv(timeout=5)
    view = np.frombuffer(sample, dtype=np.uint8)
    del sample  # the array keeps the sample (and so the slot) alive
    gc.collect()
    # A lossless publisher cannot reuse the slot the array views.
    with pytest.raises(shmbus.FullError):
        pub.try_publish(b"third")
    # Nor can the subscriber move on while the array views its sample.
    with pytest.raises(shmbus.SampleInUseError):
        sub.recv(timeout=1)
    assert bytes(view) == b"first"
    del view
    gc.collect()
    assert bytes(sub.recv(timeout=5)) == b"second"
    pub.try_publish(b"third")


def test_release_is_refused_while_viewed_and_final_after(bus, topic):
    pub = bus.publisher(topic, slot_size=16, capacity=2)
    sub = bus.subscriber(topic)
    pub.publish(b"abc")
    sample = sub.recv(timeout=5)
    view = memoryview(sample)
    with pytest.raises(shmbus.SampleInUseError):
        sample.release()
    view.release()
    sample.release()
    assert sample.released
    with pytest.raises(BufferError):
        memoryview(sample)
    with pytest.raises(BufferError):
        bytes(sample)


def test_the_next_receive_releases_an_unviewed_sample(bus, topic):
    pub = bus.publisher(topic, slot_size=16, capacity=2)
    sub = bus.subscriber(topic)
    for i in range(10):
        pub.publish(bytes([i]))
        sample = sub.recv(timeout=5)   # releases the previous one
        assert bytes(sample) == bytes([i])
    assert not sample.released
    previous = sample
    pub.publish(b"x")
    sub.recv(timeout=5)
    assert previous.released


def test_a_sample_outlives_its_subscriber_object_safely(bus, topic):
    pub = bus.publisher(topic, slot_size=16, capacity=2)
    sub = bus.subscriber(topic)
    pub.publish(b"kept")
    array = np.frombuffer(sub.recv(timeout=5), dtype=np.uint8)
    del sub
    gc.collect()
    assert bytes(array) == b"kept"   # the sample keeps the port and its mapping alive


def test_loans_are_written_in_place_and_sent_on_exit(bus, topic):
    pub = bus.publisher(topic, slot_size=32, capacity=4)
    sub = bus.subscriber(topic)
    with pub.loan(5) as buf:
        assert isinstance(buf, memoryview) and not buf.readonly and len(buf) == 5
        buf[:] = b"hello"
    assert bytes(sub.recv(timeout=5)) == b"hello"
    # An exception inside the block discards the loan: nothing is sent.
    with pytest.raises(RuntimeError):
        with pub.loan(3) as buf:
            buf[:] = b"bad"
            raise RuntimeError("changed my mind")
    assert sub.try_recv() is None
    # A loan that is still open blocks other sends of this publisher.
    loan = pub.loan(2)
    with pytest.raises(shmbus.StateError):
        pub.publish(b"no")
    memoryview(loan)[:] = b"ok"
    assert loan.send() == 2   # the discarded loan used sequence 1 (subscribers skip it)
    assert bytes(sub.recv(timeout=5)) == b"ok"
    # A loan dropped unsent is discarded.
    loan = pub.loan()
    del loan
    gc.collect()
    pub.publish(b"after")
    assert bytes(sub.recv(timeout=5)) == b"after"


def test_a_loan_is_not_sent_while_a_view_of_it_lives(bus, topic):
    pub = bus.publisher(topic, slot_size=8, capacity=2)
    loan = pub.loan(8)
    array = np.frombuffer(loan, dtype=np.uint8)
    with pytest.raises(shmbus.SampleInUseError):
        loan.send()
    array[:] = 7
    del array
    gc.collect()
    loan.send()
