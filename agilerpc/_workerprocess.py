"""
The program a worker process of C{twistd agilerpc --workers N} runs::

    python -m agilerpc._workerprocess --fds FD:FAMILY[,...] -- OPTIONS

It serves the inherited sockets with the service C{twistd agilerpc OPTIONS}
makes (see L{agilerpc._workers}).
"""

import sys

from . import tap
from ._workers import workerMain

if __name__ == "__main__":  # pragma: no cover - run in worker processes
    sys.exit(workerMain(sys.argv[1:], tap.Options, tap.makeService))
