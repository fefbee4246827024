"""Presence: a publisher counts and waits for subscriber processes, sees one killed with
SIGKILL go (the daemon releases its entry when its connection closes), and subscribers count
publishers; every count read from shared memory. Waits are for events, with generous
deadlines."""

import time

import pytest

import shmbus

EVENT = 60.0


def wait_until(cond, timeout=EVENT):
    """Wait for `cond()` (a count read from shared memory) to hold, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the count did not change in time"
        time.sleep(0.005)


def listener(child, topic):
    return child(
        f"""
        import time
        import shmbus
        bus = shmbus.Bus.connect()
        sub = bus.subscriber({topic!r}, how="open")
        print(sub.wait_for_publishers(1, timeout=60), sub.publisher_count, flush=True)
        time.sleep(600)                       # until killed
        """
    )


def test_publisher_waits_for_two_subscriber_processes_and_sees_a_killed_one_go(
    bus, topic, child
):
    pub = bus.publisher(topic, slot_size=64, capacity=8)
    assert pub.subscriber_count == 0
    first, second = listener(child, topic), listener(child, topic)
    assert pub.wait_for_subscribers(2, timeout=EVENT) == 2
    assert pub.subscriber_count == 2
    # Each child counted one publisher, both by waiting and by reading.
    assert first.readline() == "1 1"
    assert second.readline() == "1 1"
    first.proc.kill()                         # SIGKILL: no goodbye, the daemon notices
    first.proc.wait()
    wait_until(lambda: pub.subscriber_count == 1)
    sub = bus.subscriber(topic, how="open")
    assert sub.publisher_count == 1
    assert pub.subscriber_count == 2          # the parent's own subscriber counts too
    sub.close()
    assert pub.subscriber_count == 1
    second.proc.kill()
    second.proc.wait()
    wait_until(lambda: pub.subscriber_count == 0)


def test_subscriber_waits_for_a_publisher(bus, topic):
    sub = bus.subscriber(topic, how="open_or_create", slot_size=64, capacity=8)
    assert sub.publisher_count == 0
    pub = bus.publisher(topic, how="open")
    assert sub.wait_for_publishers(1, timeout=EVENT) == 1
    pub.close()
    assert sub.publisher_count == 0


def test_a_wait_for_peers_times_out_with_timeout_error(bus, topic):
    pub = bus.publisher(topic, slot_size=64, capacity=8)
    with pytest.raises(TimeoutError):
        pub.wait_for_subscribers(1, timeout=0.01)
    with pytest.raises(ValueError):
        pub.wait_for_subscribers(1, timeout=-1)


def test_counts_are_readable_while_a_sample_is_held(bus, topic):
    pub = bus.publisher(topic, slot_size=64, capacity=8)
    sub = bus.subscriber(topic, how="open")
    pub.publish(b"x")
    with sub.recv(timeout=EVENT):
        assert (sub.publisher_count, pub.subscriber_count) == (1, 1)
    assert isinstance(shmbus.Publisher.subscriber_count.__doc__, str)
