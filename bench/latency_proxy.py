#!/usr/bin/env python3
"""A TCP proxy that adds S3's request latency on loopback: each time the
server starts answering a request (the first bytes from upstream after the
client sent some), the answer is held back LATENCY_MS. A keep-alive
connection's requests each pay it once; concurrent connections pay it in
parallel, as they would against S3.

Usage: latency_proxy.py LISTEN_PORT UPSTREAM_PORT LATENCY_MS
With PROXY_LOG=FILE, each request's first line is appended to FILE with the
time it arrived (to see which requests an invocation waits on).
"""
import asyncio
import os
import sys
import time

listen, upstream, latency = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000
LOG = open(os.environ["PROXY_LOG"], "a") if os.environ.get("PROXY_LOG") else None


async def pipe(reader, writer, state, delay_first):
    try:
        while data := await reader.read(1 << 16):
            if delay_first and state["asked"]:
                state["asked"] = False
                await asyncio.sleep(latency)
            elif not delay_first:
                if LOG and not state["asked"]:
                    line = data.split(b"\r\n", 1)[0][:200].decode("latin-1")
                    LOG.write(f"{time.monotonic():.4f} {line}\n")
                    LOG.flush()
                state["asked"] = True
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream)
    except OSError:
        client_writer.close()
        return
    state = {"asked": False}
    await asyncio.gather(
        pipe(client_reader, server_writer, state, False),
        pipe(server_reader, client_writer, state, True),
    )


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


asyncio.run(main())
