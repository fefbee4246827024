"""Errors, timeouts, lossy topics, the GIL, iteration, and the type hints shipped."""

import os
import threading
import time

import pytest

import shmbus


def test_errors_are_python_exceptions_with_the_message(bus, topic):
    with pytest.raises(shmbus.NotFoundError, match=topic):
        bus.subscriber(topic)
    pub = bus.publisher(topic, slot_size=8, capacity=2)
    with pytest.raises(shmbus.TooLargeError):
        pub.publish(b"123456789")
    with pytest.raises(shmbus.TypeMismatchError):
        bus.subscriber(topic, type=("u64", 8, 8))
    with pytest.raises(shmbus.GeometryMismatchError):
        bus.publisher(topic, slot_size=16, capacity=2)
    with pytest.raises(ValueError):
        bus.publisher(topic, how="sometimes")
    with pytest.raises(shmbus.ConnectError, match=r"or use shmbus\.Bus\.embedded\(\) to run one") as e:
        shmbus.Bus.connect("/nonexistent/shmbus.sock")
    assert "Bus::" not in str(e.value)
    with pytest.raises(shmbus.NotFoundError, match="no/such/topic"):
        bus.delete("no/such/topic")
    assert issubclass(shmbus.FullError, shmbus.ShmbusError)


def test_receive_timeouts_and_try_recv(bus, topic):
    bus.publisher(topic, slot_size=8, capacity=2)
    sub = bus.subscriber(topic)
    assert sub.try_recv() is None
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        sub.recv(timeout=0.05)
    assert 0.04 < time.monotonic() - start < 2


def test_the_gil_is_released_while_waiting(bus, topic):
    pub = bus.publisher(topic, slot_size=8, capacity=2)
    sub = bus.subscriber(topic)
    got = []
    waiter = threading.Thread(target=lambda: got.append(bytes(sub.recv(timeout=10))))
    waiter.start()
    time.sleep(0.05)
    # This thread runs Python code (and publishes) while the other one waits inside recv: with
    # the GIL held by the waiter, this thread could not run until the receive timed out, and
    # the waiter would get nothing.
    assert waiter.is_alive(), "the waiter is inside recv"
    pub.publish(b"wake")
    waiter.join(5)
    assert not waiter.is_alive()
    assert got == [b"wake"]


def test_lossy_subscribers_learn_how_many_messages_they_lost(bus, topic):
    pub = bus.publisher(topic, slot_size=8, capacity=4, lossy=True)
    sub = bus.subscriber(topic)
    for i in range(10):
        pub.publish(bytes([i]))   # never waits: the ring laps the subscriber
    with pytest.raises(shmbus.LaggedError) as lagged:
        sub.recv(timeout=1)
    assert lagged.value.lost > 0
    sample = sub.recv(timeout=1)   # reading goes on with the oldest message still there
    assert bytes(sample)[0] == lagged.value.lost
    assert sub.lagged == lagged.value.lost


def test_iteration_ends_when_the_topic_is_closed_and_drained(bus, topic):
    pub = bus.publisher(topic, slot_size=8, capacity=4)
    sub = bus.subscriber(topic)
    for word in (b"a", b"b", b"c"):
        pub.publish(word)
    bus.delete(topic)
    assert [bytes(s) for s in sub] == [b"a", b"b", b"c"]


def test_ports_close_and_say_so(bus, topic):
    pub = bus.publisher(topic, slot_size=8, capacity=2)
    with bus.subscriber(topic) as sub:
        pub.publish(b"x")
        sub.recv(timeout=1)
    with pytest.raises(shmbus.ClosedError):
        sub.recv(timeout=0.01)
    pub.close()
    with pytest.raises(shmbus.ClosedError):
        pub.publish(b"y")
    assert topic in bus.topics()


def test_the_package_ships_type_hints():
    package = os.path.dirname(shmbus.__file__)
    assert os.path.exists(os.path.join(package, "py.typed"))
    stub = open(os.path.join(package, "__init__.pyi")).read()
    assert "def recv(self, timeout: Optional[float] = None) -> Sample" in stub
