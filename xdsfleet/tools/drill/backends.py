"""One member's pods, as one process: an HTTP server on each of the member's endpoint addresses
that answers every request with the member's name.

One process per member is what makes member-wide faults real: SIGKILL closes every socket (the
kernel then refuses connections), SIGSTOP freezes every pod at once while the kernel still
accepts connections (what a frozen node or a full thread pool looks like), SIGCONT thaws them.
`delay_ms` stands for distance (another region) where `tc netem` is not available. Run as
`python -m xdsfleet.tools.drill.backends --member M --listen ADDR:PORT ...`; it prints `ready`
once every socket listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

ANSWER_HEADER = "x-member"
_MAX_HEAD = 64 * 1024
# What servers commonly ask for (and Linux allows by default): a hung member's kernel keeps
# accepting connections until this many wait, as a real frozen server's would.
_BACKLOG = 4096


async def _serve_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    member: str,
    delay: float,
    status: int,
) -> None:
    pod = writer.get_extra_info("sockname")[0]
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
            if length:
                await reader.readexactly(length)
            if delay:
                await asyncio.sleep(delay)
            body = json.dumps({"member": member, "pod": pod}).encode()
            writer.write(
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                f"content-type: application/json\r\n{ANSWER_HEADER}: {member}\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(member: str, listen: list[tuple[str, int]], delay_ms: int, status: int) -> None:
    def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> asyncio.Task[None]:
        return asyncio.ensure_future(
            _serve_connection(reader, writer, member, delay_ms / 1000, status)
        )

    servers = [
        await asyncio.start_server(
            handle, host, port, limit=_MAX_HEAD, reuse_address=True, backlog=_BACKLOG
        )
        for host, port in listen
    ]
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    print("ready", flush=True)
    await stopped.wait()
    for server in servers:
        server.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--member", required=True)
    parser.add_argument("--listen", action="append", type=_address, required=True)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.member, args.listen, args.delay_ms, args.status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
