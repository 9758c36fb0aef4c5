"""Notebook 08's server on the neighbour: Python's http.server without its one name lookup.

``python3 -m http.server --bind ADDRESS`` makes HTTPServer.server_bind look ADDRESS up (``socket.getfqdn``). On the
neighbour, whose only way out is this host, that reverse lookup went towards the host's resolver, got no answer, and
timed out after 10 s each time the server started. This server binds without it and logs as http.server does: one
line per request on stderr, starting with the client's address as the server saw it.

Usage: ``python3 neighbour_server.py ADDRESS PORT FOLDER``.
"""

from __future__ import annotations

import functools
import socketserver
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # HTTPServer's own adds the lookup
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


if __name__ == "__main__":
    address, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Server((address, port), functools.partial(SimpleHTTPRequestHandler, directory=folder)).serve_forever()
