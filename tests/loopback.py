"""A loopback HTTP server for download tests: no test ever reaches beyond 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def serve_files(files: dict[str, bytes], truncate: bool = False) -> Iterator[tuple[str, list[str]]]:
    """Serve ``files[path] = bytes`` (path without the leading slash) on 127.0.0.1.

    Yields the base URL and the list of requested paths. ``files`` may be filled after the server
    started. ``truncate=True`` announces the full length but sends half of the body, as a dropped
    connection would.
    """
    requested: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            requested.append(self.path)
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if truncate else body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
