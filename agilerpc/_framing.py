"""
A receive path for length-prefixed frames that never copies the whole buffer
per chunk.

L{twisted.protocols.basic.IntNStringReceiver.dataReceived} concatenates its
buffer with every chunk that arrives, which is quadratic in the size of a
large frame.  L{FrameReceiver} keeps a list of chunks and joins it once, when
the frame it waits for is complete.  It is mixed in before
L{Int32StringReceiver}, whose interface it keeps: C{MAX_LENGTH},
C{lengthLimitExceeded}, C{stringReceived} and pausing.
"""

from __future__ import annotations

from typing import Any

from ._wire import HEADER

_unpackFrom = HEADER.unpack_from
packHeader = HEADER.pack

# From this size on, the header and payload are written separately rather
# than concatenated: no copy of a large payload just to prefix its header.
LARGE_FRAME = 64 * 1024


def writeFrame(transport: Any, payload: bytes) -> None:
    """
    Write C{payload} to C{transport} as one frame.
    """
    size = len(payload)
    if size < LARGE_FRAME:
        transport.write(packHeader(size) + payload)
    else:
        transport.writeSequence((packHeader(size), payload))


class FrameReceiver:
    """
    C{dataReceived} for 4-byte big-endian length-prefixed frames.

    After L{discardInput}, everything received is dropped: used once the
    stream cannot be trusted (a refused frame) or must not be read (after the
    peer's end of input).
    """

    MAX_LENGTH: int
    paused: bool

    _chunks: list[bytes] | None = None
    _buffered = 0
    _needed = 0
    _discarding = False

    def startReceiving(self) -> None:
        """
        Give the receive state read for every chunk its initial values on
        the instance, where they are found faster than as class defaults.
        Optional; call it from C{__init__}.
        """
        self._buffered = 0
        self._discarding = False

    def stringReceived(self, string: bytes) -> None:
        raise NotImplementedError

    def lengthLimitExceeded(self, length: int) -> None:
        raise NotImplementedError

    def discardInput(self) -> None:
        """
        Drop what is buffered, and everything received from now on.
        """
        self._discarding = True
        self._chunks = None
        self._buffered = 0

    def dataReceived(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._buffered:
            chunks = self._chunks
            assert chunks is not None
            chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return
            if (
                self._buffered == self._needed > 4
                and len(chunks[0]) >= 4
                and not self.paused
            ):
                # Exactly one frame, the common end of a large one: join its
                # payload without the header, saving a copy of all of it.
                chunks[0] = chunks[0][4:]
                payload = b"".join(chunks)
                self._chunks = None
                self._buffered = 0
                self.stringReceived(payload)
                return
            data = b"".join(chunks)
            self._chunks = None
            self._buffered = 0
        offset = 0
        end = len(data)
        needed = 4
        while end - offset >= 4:
            if self.paused:
                # resumeProducing() calls dataReceived(b""): make sure that
                # call parses what is left.
                needed = 0
                break
            (length,) = _unpackFrom(data, offset)
            # Read each time: a frame (the client's hello) may change it.
            if length > self.MAX_LENGTH:
                self.discardInput()
                self.lengthLimitExceeded(length)
                return
            stop = offset + 4 + length
            if stop > end:
                needed = stop - offset
                break
            self.stringReceived(data[offset + 4 : stop])
            if self._discarding:
                return
            offset = stop
        if offset < end:
            self._chunks = [data[offset:] if offset else data]
            self._buffered = end - offset
            self._needed = needed
