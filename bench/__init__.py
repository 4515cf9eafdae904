"""
The agilerpc benchmark suite: agilerpc side by side with a bare
C{Int32StringReceiver} + msgpack baseline and with Twisted's AMP.

Run it with C{python -m bench} (C{--quick} for a small run); see
C{bench/README.md}.  Servers and clients run in separate processes on
127.0.0.1 only.
"""
