"""
Tests for L{agilerpc._address.parseAddress}, the one parser of server
addresses the command line and both clients use.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import RpcClient, TcpRpcClient
from agilerpc._address import checkPort, parseAddress


class ParseAddressTests(SynchronousTestCase):
    def test_hostPort(self) -> None:
        """
        C{"host:port"} and C{"[IPv6]:port"} give a C{(host, port)} pair.
        """
        self.assertEqual(parseAddress("127.0.0.1:9988"), ("127.0.0.1", 9988))
        self.assertEqual(parseAddress("localhost:1"), ("localhost", 1))
        self.assertEqual(parseAddress("[::1]:65535"), ("::1", 65535))

    def test_badStrings(self) -> None:
        """
        No port, no host, a bare IPv6 address with a port, or a port outside
        1-65535 is refused with a message naming the address.
        """
        for text in [
            "127.0.0.1",
            "127.0.0.1:",
            ":9988",
            "host:port",
            "h:0",
            "h:65536",
            "::1:80",
            "[::1]",
            "h:-1",
        ]:
            e = self.assertRaises(ValueError, parseAddress, text)
            self.assertIn(repr(text), str(e))

    def test_pairs(self) -> None:
        """
        A C{(host, port)} pair is checked the same way; its host may be a
        bare IPv6 address.
        """
        self.assertEqual(parseAddress(("::1", 9988)), ("::1", 9988))
        self.assertEqual(parseAddress(("[::1]", 9988)), ("::1", 9988))
        self.assertEqual(parseAddress(["h", 1]), ("h", 1))
        for pair in [("h", 0), ("h", 65536), ("h", "80"), ("h", True), ("", 1)]:
            self.assertRaises(ValueError, parseAddress, pair)
        self.assertRaises(ValueError, parseAddress, ("h", 1, 2))
        self.assertRaises(ValueError, checkPort, 1.0)

    def test_clientsAgree(self) -> None:
        """
        Both clients parse their server lists with it.
        """
        self.assertEqual(
            TcpRpcClient(servers=["[::1]:9988", ("h", 1)]).servers,
            [("::1", 9988), ("h", 1)],
        )
        client = RpcClient(object(), endpoints=["[::1]:9988", ("h", 1)])
        self.assertEqual(client.endpoints, [("::1", 9988), ("h", 1)])
        for bad in ["::1:9988", "h:0"]:
            self.assertRaises(ValueError, TcpRpcClient, servers=[bad])
            self.assertRaises(ValueError, RpcClient, object(), endpoints=[bad])
        self.assertRaises(ValueError, TcpRpcClient, "h", 0)
        self.assertRaises(ValueError, RpcClient, object(), "h", 70000)
