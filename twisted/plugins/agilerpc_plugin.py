"""
The C{twistd agilerpc} plugin.
"""

from twisted.application.service import ServiceMaker

agilerpc = ServiceMaker(
    "agilerpc",
    "agilerpc.tap",
    "An agilerpc server: msgpack RPC with idle keepalive.",
    "agilerpc",
)
