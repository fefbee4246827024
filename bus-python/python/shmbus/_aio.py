"""asyncio receives for shmbus.Subscriber (``recv_async``, ``async for``).

The subscriber's wait set has one descriptor; the event loop watches it with ``add_reader``
(no thread, no polling loop). A publisher's commit makes it readable; ``_wait_poll`` consumes
that and re-arms it. The loop also wakes at the wait set's periodic check (about every 100 ms,
so a restarted daemon is followed). Nothing is taken from the subscriber while waiting, so a
cancelled receive loses no message.
"""

import asyncio

from ._shmbus import ClosedError, LaggedError, StateError

# Subscribers (by id) with a receive in progress: an event loop has one reader per descriptor.
_receiving = set()


async def recv_async(sub):
    sample = sub.try_recv()
    if sample is not None:
        return sample
    key = id(sub)
    if key in _receiving:
        raise StateError(
            "another task is already in recv_async on this subscriber; receive from one task"
        )
    _receiving.add(key)
    try:
        loop = asyncio.get_running_loop()
        fd = sub._wait_fd()
        while True:
            # Re-arm first, then look: a message published in between makes fd readable.
            hint = sub._wait_poll()
            sample = sub.try_recv()
            if sample is not None:
                return sample
            woken = loop.create_future()

            def wake(woken=woken):
                if not woken.done():
                    woken.set_result(None)

            loop.add_reader(fd, wake)
            timer = loop.call_later(hint, wake)
            try:
                await woken
            finally:
                timer.cancel()
                loop.remove_reader(fd)
    finally:
        _receiving.discard(key)


async def anext(sub):
    while True:
        try:
            return await recv_async(sub)
        except LaggedError:
            continue
        except ClosedError:
            raise StopAsyncIteration from None
