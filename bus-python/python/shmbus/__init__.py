"""shmbus: a lock-free shared-memory message bus, from Python.

    import shmbus
    bus = shmbus.Bus.connect()                 # or shmbus.Bus.embedded()
    pub = bus.publisher("logs", slot_size=256)
    sub = bus.subscriber("logs")
    pub.publish(b"hello")
    with sub.recv() as sample:                 # a zero-copy view of the slot
        print(bytes(sample), sample.sequence)

Samples support the buffer protocol: ``numpy.frombuffer(sample, dtype)`` reads the slot in
shared memory without a copy. A subscriber holds one sample at a time; see ``Sample``.

In asyncio, ``await sub.recv_async()`` and ``async for sample in sub`` wait without blocking
the event loop (it watches a descriptor; no thread, no polling).
"""

from ._shmbus import (
    Bus,
    ClosedError,
    ConnectError,
    DroppedError,
    EvictedError,
    FullError,
    GeometryMismatchError,
    LaggedError,
    Loan,
    NotFoundError,
    OpenError,
    PermissionDeniedError,
    Publisher,
    Sample,
    SampleInUseError,
    ShmbusError,
    StateError,
    Subscriber,
    TooLargeError,
    TypeMismatchError,
)

__all__ = [
    "Bus",
    "ClosedError",
    "ConnectError",
    "DroppedError",
    "EvictedError",
    "FullError",
    "GeometryMismatchError",
    "LaggedError",
    "Loan",
    "NotFoundError",
    "OpenError",
    "PermissionDeniedError",
    "Publisher",
    "Sample",
    "SampleInUseError",
    "ShmbusError",
    "StateError",
    "Subscriber",
    "TooLargeError",
    "TypeMismatchError",
]
