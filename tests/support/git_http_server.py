"""A git smart-HTTP server on 127.0.0.1 that requires HTTP basic auth, for push tests.

`git http-backend` (the CGI program that ships with git) does the git side; a small threaded
http.server in front checks the Authorization header of every request and answers 401 with a
`WWW-Authenticate` challenge otherwise, as a hosted git server does. Repositories are bare
directories under `root`, created with `create_bare`.
"""

from __future__ import annotations

import base64
import http.server
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    username: str | None  # from the Authorization header; None when there was none
    status: int


class GitHttpServer:
    """Serves the bare repositories under `root` to one user; `with GitHttpServer(...) as s:`."""

    def __init__(self, root: Path, username: str, password: str):
        self.root, self.username, self.password = Path(root), username, password
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}"

    def create_bare(self, name: str) -> Path:
        path = self.root / name
        subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True)
        return path

    def refs(self, name: str) -> dict[str, str]:
        """Every ref of a served repository: {refname: sha}."""
        out = subprocess.run(
            ["git", "-C", str(self.root / name), "for-each-ref", "--format=%(refname) %(objectname)"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines())

    def authorized(self, header: str | None) -> tuple[bool, str | None]:
        """(whether the header carries this server's user and password, the user it names)."""
        if not header or not header.startswith("Basic "):
            return False, None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False, None
        return (user, password) == (self.username, self.password), user

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)


def _handler_for(server: GitHttpServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()  # the blank line after the last chunk
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            body = self._body()
            path, _, query = self.path.partition("?")
            ok, user = server.authorized(self.headers.get("Authorization"))
            if not ok:
                server.record(Seen(self.command, path, user, 401))
                challenge = [("WWW-Authenticate", 'Basic realm="git"')]
                self._reply(401, challenge, b"authentication required\n")
                return
            env = {
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": user or "",  # http-backend allows receive-pack only to a user
                "REMOTE_ADDR": self.client_address[0],
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "PATH": "/usr/local/bin:/usr/bin:/bin",
            }
            proc = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120
            )
            head, _, payload = proc.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = proc.stdout.partition(b"\n\n")
            status, headers = 200, []
            for line in head.decode(errors="replace").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            server.record(Seen(self.command, path, user, status))
            self._reply(status, headers, payload)

    return Handler
