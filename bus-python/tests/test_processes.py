"""Publisher and subscriber in separate Python processes, against a real daemon."""

COUNT = 200


def test_messages_from_a_child_publisher_arrive_in_order_and_intact(bus, topic, child):
    sub = bus.subscriber(topic, how="open_or_create", slot_size=64, capacity=8)
    pub = child(
        f"""
        import shmbus
        bus = shmbus.Bus.connect()
        pub = bus.publisher({topic!r}, slot_size=64, capacity=8, how="open")
        for i in range({COUNT}):
            text = f"message {{i}}".encode()
            if i % 2:
                pub.publish(text)
            else:
                with pub.loan(len(text)) as buf:   # written in place in the slot
                    buf[:] = text
        print("sent", {COUNT})
        """
    )
    got = []
    for _ in range(COUNT):
        with sub.recv(timeout=20) as sample:
            got.append((sample.sequence, bytes(sample)))
    assert got == [(i, f"message {i}".encode()) for i in range(COUNT)]
    assert pub.finish() == [f"sent {COUNT}"]


def test_a_child_subscriber_receives_what_the_parent_publishes(bus, topic, child):
    pub = bus.publisher(topic, slot_size=128, capacity=4)
    sub = child(
        f"""
        import shmbus
        bus = shmbus.Bus.connect()
        sub = bus.subscriber({topic!r})
        print("ready", flush=True)
        for n, sample in enumerate(sub):          # ends when the topic is deleted
            print(sample.sequence, bytes(sample).decode())
        print("end", n + 1)
        """
    )
    assert sub.readline() == "ready"
    for i in range(COUNT):
        pub.publish(f"payload {i}".encode())   # waits whenever the child's 4 slots are full
    bus.delete(topic)
    lines = sub.finish()
    assert lines == [f"{i} payload {i}" for i in range(COUNT)] + [f"end {COUNT}"]


def test_numpy_arrays_cross_processes_through_typed_topics(bus, topic, child):
    np = __import__("numpy")
    vec = ("vec8", 64, 8)  # eight float64
    sub = bus.subscriber(topic, type=vec, how="open_or_create", capacity=4)
    pub = child(
        f"""
        import numpy as np
        import shmbus
        bus = shmbus.Bus.connect()
        pub = bus.publisher({topic!r}, type={vec!r}, how="open")
        for i in range(50):
            with pub.loan() as buf:
                np.frombuffer(buf, dtype=np.float64)[:] = np.arange(8) + i
        """
    )
    for i in range(50):
        sample = sub.recv(timeout=20)
        array = np.frombuffer(sample, dtype=np.float64)
        assert array.tolist() == [float(k + i) for k in range(8)]
        del array
    pub.finish()
