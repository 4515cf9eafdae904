#: This version of agilerpc (the server's hello says C{"agilerpc/VERSION"}).
__version__ = "0.1.0"
