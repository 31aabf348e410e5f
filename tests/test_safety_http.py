"""The pods' built-in web server refuses malformed requests with 400 (``Content-Length: 1_0``,
``HTTP/1.9``, control characters, folded or nameless header lines, Transfer-Encoding), keeps no
control character raw in its access log (``cilia logs``), and bounds keep-alive connections. The
server's real handler runs on loopback in this process (no root, no namespace)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cilia.lab import workloads
from cilia.lab.httpwire import BadRequest, escape, parse_head
from cilia.lab.workloads import MAX_HEADER, PodWorkload, WorkloadServer, _Running


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \xd9\xa3\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
        b"GET / HTTP/1.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / http/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\x1bT / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\x1b[2J HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\x1b[31mb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
    ],
)
def test_malformed_heads_are_refused(head: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_head(head, 1024 * 1024)


def test_well_formed_heads() -> None:
    req = parse_head(b"POST /p?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", 10)
    assert (req.method, req.target, req.version, req.content_length, req.keep_alive) == (
        "POST", "/p?q=1", "HTTP/1.1", 3, False,
    )
    assert parse_head(b"GET / HTTP/1.0\r\n\r\n", 10).keep_alive is False
    assert parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 10).keep_alive is True
    assert parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xe9\r\n\r\n", 10).keep_alive is True


def test_escape_writes_controls_as_nginx_does() -> None:
    assert escape('GET /\x1b[2J "x" \\ é') == 'GET /\\x1B[2J \\x22x\\x22 \\x5C \\xC3\\xA9'


class Served:
    """The workload server's HTTP handler for one pod, on 127.0.0.1 in this process."""

    def __init__(self, tmp: Path) -> None:
        self.log_path = tmp / "pod.log"
        spec = PodWorkload(key="ns/web", name="web", netns="-", log_path=str(self.log_path), tcp_ports=(80,))
        self.run = _Running(spec, open(self.log_path, "a", buffering=1))  # noqa: SIM115 - closed below
        self.server = WorkloadServer()

    async def start(self) -> int:
        self.srv = await asyncio.start_server(
            lambda r, w: self.server._http(self.run, r, w), "127.0.0.1", 0, limit=MAX_HEADER
        )
        return int(self.srv.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.srv.close()
        await self.srv.wait_closed()
        self.run.log.close()


async def _exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_the_server_answers_400_and_logs_escaped(tmp_path: Path) -> None:
    async def main() -> list[bytes]:
        served = Served(tmp_path)
        port = await served.start()
        try:
            return [
                await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n0123456789"),
                await _exchange(port, b"GET / HTTP/1.9\r\nHost: x\r\n\r\n"),
                await _exchange(port, b"GET /\x1b[2J\x07 HTTP/1.1\r\nHost: x\r\n\r\n"),
                await _exchange(port, b"GET /ok HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xe9\r\n"
                                      b"Connection: close\r\n\r\n"),
            ]
        finally:
            await served.stop()

    answers = asyncio.run(main())
    assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 400 Bad Request"] * 3 + [b"HTTP/1.1 200 OK"]
    assert all(a.count(b"HTTP/1.1 ") == 1 for a in answers)  # the 400s close: no body read as a request
    log = (tmp_path / "pod.log").read_text()
    assert "\x1b" not in log and "\x07" not in log
    assert '"GET /\\x1B[2J\\x07 HTTP/1.1" 400' in log
    assert '"GET /ok HTTP/1.1" 200' in log and '"caf\\xC3\\xA9"' in log


def test_keep_alive_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workloads, "KEEPALIVE_REQUESTS", 3)
    monkeypatch.setattr(workloads, "MAX_CONNECTIONS", 2)

    async def one_connection(port: int) -> list[bytes]:
        """Requests one after another on one connection until the server closes it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for _ in range(5):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            answers.append(head)
            if b"Connection: close" in head:
                break
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then the server closes
        writer.close()
        return answers

    async def main() -> tuple[list[bytes], bytes]:
        served = Served(tmp_path)
        port = await served.start()
        try:
            answers = await one_connection(port)
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await asyncio.sleep(0.1)
            r, w = await asyncio.open_connection("127.0.0.1", port)
            third = await asyncio.wait_for(r.read(), 5)
            w.close()
            for _, hw in held:
                hw.close()
            await asyncio.sleep(0.1)
            return answers, third
        finally:
            await served.stop()

    answers, third = asyncio.run(main())
    assert [b"Connection: close" in a for a in answers] == [False, False, True]
    assert third == b""  # over the connection bound: closed at once
