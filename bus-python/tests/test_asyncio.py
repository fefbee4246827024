"""asyncio receives (recv_async, async for) against a real daemon, fed by child processes:
delivery in order, cancellation losing nothing, no busy polling, the end of a topic."""

import asyncio
import time

import pytest

import shmbus

COUNT = 200


def publisher_child(child, topic, count, pause):
    return child(
        f"""
        import time
        import shmbus
        bus = shmbus.Bus.connect()
        pub = bus.publisher({topic!r}, slot_size=64, capacity=16, how="open")
        for i in range({count}):
            pub.publish(f"message {{i}}".encode())
            time.sleep({pause})
        print("sent", {count})
        """
    )


def test_async_for_receives_a_child_publishers_messages_in_order(bus, topic, child):
    sub = bus.subscriber(topic, how="open_or_create", slot_size=64, capacity=16)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.ensure_future(ticker())
        pub = publisher_child(child, topic, COUNT, 0.0005)
        got = []
        async for sample in sub:
            with sample:
                got.append((sample.sequence, bytes(sample)))
            if len(got) == COUNT:
                break
        tick_task.cancel()
        return pub, got, ticks

    pub, got, ticks = asyncio.run(main())
    assert got == [(i, f"message {i}".encode()) for i in range(COUNT)]
    assert pub.finish()[-1] == f"sent {COUNT}"
    assert ticks > 0, "the event loop was blocked while receiving"


def test_cancelled_receives_lose_nothing(bus, topic, child):
    sub = bus.subscriber(topic, how="open_or_create", slot_size=64, capacity=16)

    async def main():
        pub = publisher_child(child, topic, COUNT, 0.002)
        got, cancelled = [], 0
        deadline = time.monotonic() + 60
        while len(got) < COUNT and time.monotonic() < deadline:
            try:
                # 1 ms: most receives are cancelled mid-wait (the child publishes every 2 ms).
                sample = await asyncio.wait_for(sub.recv_async(), timeout=0.001)
            except asyncio.TimeoutError:
                cancelled += 1
                continue
            got.append((sample.sequence, bytes(sample)))
            sample.release()
        return pub, got, cancelled

    pub, got, cancelled = asyncio.run(main())
    assert got == [(i, f"message {i}".encode()) for i in range(COUNT)]
    assert cancelled > 10, f"only {cancelled} receives were cancelled"
    pub.finish()


def test_a_waiting_receive_does_not_spin(bus, topic, child):
    sub = bus.subscriber(topic, how="open_or_create", slot_size=64, capacity=16)

    async def main():
        task = asyncio.ensure_future(sub.recv_async())
        await asyncio.sleep(0.05)  # the receive is waiting on the descriptor now
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(0.5)  # nothing is published
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        assert not task.done()
        # A second receive on the same subscriber while one waits is refused.
        with pytest.raises(shmbus.StateError):
            await sub.recv_async()
        pub = publisher_child(child, topic, 1, 0)
        sample = await asyncio.wait_for(task, timeout=30)
        return pub, sample, cpu, wall

    pub, sample, cpu, wall = asyncio.run(main())
    # Spinning would use the whole 0.5 s; waking at the 100 ms check uses next to nothing.
    assert cpu < 0.1 * wall, f"{cpu:.3f} s of CPU in {wall:.3f} s of waiting"
    assert bytes(sample) == b"message 0"
    pub.finish()


def test_async_for_ends_when_the_topic_is_deleted(bus, topic):
    pub = bus.publisher(topic, slot_size=64, capacity=16)
    sub = bus.subscriber(topic)

    async def main():
        got = []

        async def consume():
            async for sample in sub:
                got.append(bytes(sample))

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        for i in range(3):
            pub.publish(f"m{i}".encode())
        await asyncio.sleep(0.05)
        bus.delete(topic)
        await asyncio.wait_for(task, timeout=10)
        return got

    assert asyncio.run(main()) == [b"m0", b"m1", b"m2"]
    # A closed subscriber raises ClosedError from recv_async.
    sub.close()
    with pytest.raises(shmbus.ClosedError):
        asyncio.run(sub.recv_async())
