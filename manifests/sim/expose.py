"""Expose the simulator's loopback ports on the pod's address (a sidecar, stdlib only).

`gpuctl sim` binds 127.0.0.1 only, so other pods cannot reach it. This forwards
each TCP connection on 0.0.0.0:<public> to 127.0.0.1:<private>, for every
`public=private` pair in $EXPOSE (e.g. "9081=8081,9090=8090"), byte for byte in
both directions, until either side closes. A connection that cannot reach the
simulator is closed at once (readiness probes through it then fail, as they should).
"""

import asyncio
import functools
import os


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def forward(
    private: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    try:
        sim_r, sim_w = await asyncio.open_connection("127.0.0.1", private)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, sim_w), pipe(sim_r, client_w))


async def main() -> None:
    pairs = [item.split("=") for item in os.environ["EXPOSE"].split(",") if item]
    servers = [
        await asyncio.start_server(functools.partial(forward, int(private)), "0.0.0.0", int(public))
        for public, private in pairs
    ]
    print(f"forwarding {os.environ['EXPOSE']}", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main())
