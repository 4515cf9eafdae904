"""
Sending what a transport buffered within the reactor's current pass.

A reactor's TCP transport (a L{FileDescriptor}) only buffers in C{write},
and sends in C{doWrite}, which the reactor calls once the socket is
writable: a whole further pass of the event loop (its poll, its timers) for
the frames a chunk of input was answered with.  The server (its responses)
and the Twisted client (the calls its callbacks made) each hand those frames
to the kernel at the end of the C{dataReceived} that wrote them, with
L{sendNow}: one send per chunk, as before, one pass fewer.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.python.failure import Failure


def descriptorOf(transport: Any) -> FileDescriptor | None:
    """
    C{transport}, if it is a reactor's descriptor; L{None} for the others
    (TLS, which writes through its own layer, and tests' transports), which
    keep their own schedule.
    """
    return transport if isinstance(transport, FileDescriptor) else None


def sendNow(descriptor: FileDescriptor) -> None:
    """
    Do the work of the reactor's next C{doWrite} on C{descriptor} now, if
    that is all the reactor's pass would do.

    Not while the transport is closing or has paused its producer: then its
    C{doWrite} also ends the connection or resumes the producer, which must
    not happen inside C{dataReceived}.  The caller must not have half-closed
    it.  What the socket does not take stays buffered for the reactor.

    A send that fails (the peer reset the connection) has read the error the
    socket held, once: the reactor's pass would next find only an end of
    input, a clean close.  So the connection is ended with the error, as the
    reactor ends a connection whose C{doWrite} failed, but from the start of
    the reactor's next pass (before it polls), not inside C{dataReceived}.
    """
    if descriptor.disconnecting or descriptor.producerPaused:
        return
    why = descriptor.doWrite()
    if isinstance(why, BaseException):
        reactor: Any = descriptor.reactor
        reactor.callLater(0, _writeFailed, descriptor, why)


def _writeFailed(descriptor: FileDescriptor, why: BaseException) -> None:
    """
    End C{descriptor}'s connection because a send failed with C{why}, as the
    reactor does (C{_disconnectSelectable}), unless it ended meanwhile.
    """
    if descriptor.connected:
        reactor: Any = descriptor.reactor
        reactor.removeReader(descriptor)
        reactor.removeWriter(descriptor)
        descriptor.connectionLost(Failure(why))
