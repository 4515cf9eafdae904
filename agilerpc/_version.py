__version__ = "0.1.0"
"""
This version of agilerpc, as a string: the one the server's hello sends
(C{"agilerpc/" + __version__}).
"""
