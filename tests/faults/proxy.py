"""A real HTTP proxy on loopback, for tests: ``python -m tests.faults.proxy``.

It tunnels ``CONNECT host:port`` and forwards plain-HTTP requests
(``GET http://host:port/path``, one per connection) after checking Basic proxy
credentials, maps the made-up host names it is given to 127.0.0.1 (so a client
that can only resolve them through the proxy proves it used the proxy), and
logs every tunnel and request to stdout. It refuses any target outside
loopback.

``--blackhole-while FILE`` makes a network partition: while FILE exists the
proxy still accepts connections and reads what comes, but forwards nothing and
answers nothing, on new connections and on open tunnels and requests alike
(no refusal, no reset), so a client sees only silence. What it read meanwhile
is held and goes on once FILE is gone, as TCP delivers after a partition heals.

``--html-while FILE``: while FILE exists, every plain-HTTP request is answered
``200 text/html`` with a sign-in page instead of being forwarded, as a captive
portal or a misconfigured proxy does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import urllib.parse
from pathlib import Path

#: Set while traffic may cross; cleared during a partition (``--blackhole-while``).
_link = asyncio.Event()


async def _watch_partition(control: Path) -> None:
    """Keep ``_link`` in step with the control file (polled: a file sends no events)."""
    while True:
        cut = await asyncio.to_thread(control.exists)
        if cut == _link.is_set():
            print("PARTITION ON" if cut else "PARTITION HEALED", flush=True)
            if cut:
                _link.clear()
            else:
                _link.set()
        await asyncio.sleep(0.05)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            await _link.wait()
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


_PAGE = b"<!doctype html><html><body><h1>Sign in to continue</h1></body></html>"
_HTML_PAGE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
    + f"Content-Length: {len(_PAGE)}\r\n\r\n".encode()
    + _PAGE
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--map", action="append", default=[], help="NAME: a host sent to loopback")
    parser.add_argument("--blackhole-while", type=Path, help="FILE: a partition while it exists")
    parser.add_argument(
        "--html-while",
        type=Path,
        help="FILE: while it exists, answer every plain-HTTP request 200 with an HTML page",
    )
    args = parser.parse_args()
    expected = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    mapped = set(args.map)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await _link.wait()
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        forwarded = urllib.parse.urlsplit(target) if method != "CONNECT" else None
        if forwarded is not None:
            host, port = forwarded.hostname or "", str(forwarded.port or 80)
        else:
            host, _, port = target.rpartition(":")
        if forwarded is not None and forwarded.scheme != "http":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
        elif headers.get("proxy-authorization") != expected:
            print(f"DENIED {target}", flush=True)
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
            )
        elif host not in mapped and host not in ("127.0.0.1", "localhost"):
            writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
        elif forwarded is not None and args.html_while is not None and args.html_while.exists():
            # A captive portal or a misconfigured proxy: 200, but not the hub's answer.
            print(f"HTML {method} {host}:{port}", flush=True)
            writer.write(_HTML_PAGE)
        elif forwarded is not None:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", int(port))
            print(f"FORWARD {method} {host}:{port}", flush=True)
            path = forwarded.path + (f"?{forwarded.query}" if forwarded.query else "")
            kept = [
                line
                for line in lines[1:]
                if line
                and line.split(":", 1)[0].strip().lower()
                not in ("proxy-authorization", "proxy-connection", "connection")
            ]
            head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""])
            upstream_w.write(head.encode("latin-1"))
            await upstream_w.drain()
            await asyncio.gather(_pipe(reader, upstream_w), _pipe(upstream_r, writer))
            return
        else:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", int(port))
            print(f"CONNECT {target}", flush=True)
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream_w), _pipe(upstream_r, writer))
            return
        await writer.drain()
        writer.close()

    async def serve() -> None:
        _link.set()
        control = args.blackhole_while
        watch = [_watch_partition(control)] if control is not None else []
        server = await asyncio.start_server(handle, "127.0.0.1", args.port)
        print("READY", flush=True)
        async with server:
            await asyncio.gather(server.serve_forever(), *watch)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
