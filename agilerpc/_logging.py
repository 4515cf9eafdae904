"""
JSON logs: a log observer factory for twistd's C{--logger} option::

    twistd -n --logger agilerpc.jsonLogObserver agilerpc --port 9988

writes every event as one line of JSON on standard output, with the
structured fields agilerpc logs (C{peer}, C{method}, C{msgid}, C{duration},
C{outcome}...) as JSON values, ready for journald, Docker or a log shipper.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import ILogObserver, LogEvent, jsonFileLogObserver
from zope.interface import implementer


def _address(value: Any) -> Any:
    """
    An address as the text a reader expects (C{host:port}, C{[host]:port}
    or a socket path); anything else as it is.
    """
    if isinstance(value, IPv4Address):
        return f"{value.host}:{value.port}"
    if isinstance(value, IPv6Address):
        return f"[{value.host}]:{value.port}"
    if isinstance(value, UNIXAddress):
        name = value.name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    return value


@implementer(ILogObserver)
class _AddressesAsText:
    """
    Hand events on with their address fields as text: the JSON observer
    would write an address object as C{{"unpersistable": true}}.
    """

    def __init__(self, observer: ILogObserver) -> None:
        self.observer = observer

    def __call__(self, event: LogEvent) -> None:
        converted = {key: _address(value) for key, value in event.items()}
        self.observer(converted)


def jsonLogObserver(outFile: IO[str] | None = None) -> ILogObserver:
    """
    A log observer writing each event as one line of JSON to C{outFile}
    (default: standard output); give its dotted name,
    C{agilerpc.jsonLogObserver}, to twistd's C{--logger}.

    Each line is what L{twisted.logger.eventAsJSON} makes of the event (read
    it back with L{twisted.logger.eventsFromJSONLogFile} and
    C{recordSeparator=""}, or any JSON reader): C{log_level}, C{log_namespace},
    C{log_time}, C{log_format} and the event's own fields.
    """
    if outFile is None:
        outFile = sys.stdout
    observer: ILogObserver = _AddressesAsText(
        jsonFileLogObserver(outFile, recordSeparator="")
    )
    return observer
