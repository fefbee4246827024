"""Type hints for shmbus (the native module shmbus._shmbus)."""

import sys
from types import TracebackType
from typing import AsyncIterator, Awaitable, Iterator, Literal, Optional, Tuple, Type, Union

if sys.version_info >= (3, 12):
    from collections.abc import Buffer as BytesLike
else:
    BytesLike = Union[bytes, bytearray, memoryview]

TypeSpec = Tuple[str, int, int]
"""A payload type: (name, size, align). Size 0 (align 1) is a byte topic."""

How = Literal["open", "create", "open_or_create"]
Wait = Literal["adaptive", "busy", "block"]

class Bus:
    """A connection to the shmbus daemon. Ports keep it alive."""

    @staticmethod
    def connect(socket: Optional[str] = None) -> Bus:
        """Connect to the daemon at `socket`, or at the default socket ($SHMBUS_SOCKET, ...)."""
    @staticmethod
    def embedded() -> Bus:
        """Start a daemon inside this process and connect to it (see `socket_path`)."""
    @property
    def socket_path(self) -> str:
        """The daemon's socket; other processes reach it with SHMBUS_SOCKET=socket_path."""
    def publisher(
        self,
        topic: str,
        slot_size: Optional[int] = None,
        capacity: Optional[int] = None,
        lossy: bool = False,
        *,
        type: Optional[TypeSpec] = None,
        how: How = "create",
        wait: Wait = "adaptive",
    ) -> Publisher:
        """A publisher on `topic` (by default creating it with these options)."""
    def subscriber(
        self,
        topic: str,
        *,
        type: Optional[TypeSpec] = None,
        how: How = "open",
        slot_size: Optional[int] = None,
        capacity: Optional[int] = None,
        lossy: bool = False,
        replay: bool = False,
        wait: Wait = "adaptive",
    ) -> Subscriber:
        """A subscriber on `topic` (by default the topic must exist)."""
    def delete(self, topic: str) -> None:
        """Delete a topic: subscribers drain what is left, then see it closed."""
    def topics(self) -> list[str]:
        """The names of the topics this process may see."""

class Publisher:
    """Publishes on one topic."""

    topic: str
    slot_size: int
    capacity: int
    lossy: bool
    type: TypeSpec
    subscriber_count: int
    """Subscribers attached now, read from shared memory (cheap per message)."""
    def wait_for_subscribers(self, n: int, timeout: Optional[float] = None) -> int:
        """Wait for at least `n` subscribers; returns how many (TimeoutError, ClosedError)."""
    def publish(self, data: BytesLike) -> int:
        """Copy `data` into the next slot and send it; returns its sequence number."""
    def try_publish(self, data: BytesLike) -> int:
        """Like publish, without waiting: FullError when the lossless ring is full."""
    def loan(self, size: Optional[int] = None) -> Loan:
        """Loan the next slot; `with pub.loan(n) as buf:` writes in place and sends."""
    def close(self) -> None: ...
    def __enter__(self) -> Publisher: ...
    def __exit__(self, *args: object) -> Literal[False]: ...

class Loan:
    """A loaned slot: `with loan as buf:` gives a writable memoryview, sent on exit."""

    def send(self) -> int: ...
    def discard(self) -> None: ...
    def __len__(self) -> int: ...
    def __enter__(self) -> memoryview: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> Literal[False]: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class Subscriber:
    """Receives the messages of one topic; iterate over it or call recv()."""

    topic: str
    slot_size: int
    capacity: int
    lossy: bool
    type: TypeSpec
    lagged: int
    publisher_count: int
    """Publishers attached now, read from shared memory (cheap per message)."""
    def wait_for_publishers(self, n: int, timeout: Optional[float] = None) -> int:
        """Wait for at least `n` publishers; returns how many (TimeoutError, ClosedError)."""
    def recv(self, timeout: Optional[float] = None) -> Sample:
        """The next message (TimeoutError after `timeout` seconds; GIL released while waiting)."""
    def try_recv(self) -> Optional[Sample]:
        """The next message if one is ready, else None."""
    def __iter__(self) -> Iterator[Sample]: ...
    def __next__(self) -> Sample: ...
    def recv_async(self) -> Awaitable[Sample]:
        """The next message, awaited in asyncio (the loop watches a descriptor; no thread).

        Cancelling it loses no message. One task at a time per subscriber (else StateError)."""
    def __aiter__(self) -> AsyncIterator[Sample]: ...
    def __anext__(self) -> Awaitable[Sample]:
        """`async for sample in sub`: ends when the topic is closed and drained."""
    def close(self) -> None: ...
    def __enter__(self) -> Subscriber: ...
    def __exit__(self, *args: object) -> Literal[False]: ...

class Sample:
    """A received message: a read-only, zero-copy buffer over the slot, held until released."""

    sequence: int
    released: bool
    address: int
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...
    def release(self) -> None: ...
    def __enter__(self) -> Sample: ...
    def __exit__(self, *args: object) -> Literal[False]: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class ShmbusError(Exception): ...
class ConnectError(ShmbusError): ...
class NotFoundError(ShmbusError): ...
class TypeMismatchError(ShmbusError): ...
class GeometryMismatchError(ShmbusError): ...
class PermissionDeniedError(ShmbusError): ...
class OpenError(ShmbusError): ...
class FullError(ShmbusError): ...
class LaggedError(ShmbusError):
    lost: int
class ClosedError(ShmbusError): ...
class EvictedError(ShmbusError): ...
class TooLargeError(ShmbusError): ...
class DroppedError(ShmbusError): ...
class SampleInUseError(ShmbusError): ...
class StateError(ShmbusError): ...
