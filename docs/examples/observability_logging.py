"""
agilerpc logs through twisted.logger: structured events with fields such
as peer, method and msgid.  An observer of your own sees them all; this
one keeps the warnings and errors of agilerpc's namespaces.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
)
from zope.interface import implementer


@implementer(ILogFilterPredicate)
class AgilerpcOnly:
    """
    Let through the events of agilerpc's namespaces.
    """

    def __call__(self, event: LogEvent) -> PredicateResult:
        if event.get("log_namespace", "").startswith("agilerpc"):
            return PredicateResult.maybe
        return PredicateResult.no


def agilerpcProblems(observer: ILogObserver) -> ILogObserver:
    """
    Pass to observer the events of agilerpc at warn level or above.
    """
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    return FilteringLogObserver(observer, [AgilerpcOnly(), levels])


# In a program of your own:
#     from twisted.logger import globalLogPublisher, textFileLogObserver
#     globalLogPublisher.addObserver(agilerpcProblems(textFileLogObserver(sys.stderr)))
