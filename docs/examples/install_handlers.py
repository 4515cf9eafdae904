"""
A first handlers module: serve it with
twistd -n agilerpc --port 9988 --module install_handlers
"""

from agilerpc import rpc


@rpc
def sayHello(name: str) -> str:
    """Greet someone."""
    return "hello " + name


@rpc(name="math.add")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b
