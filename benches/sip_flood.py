#!/usr/bin/env python3
"""An attacker against a running contactd (see BENCHMARKS.md, "Floods").

Sends INVITEs that are never ACKed, at --rate per second for --seconds, from a UDP
socket on --udp-from (an address inside the trunk networks, as a spoofed UDP source
would appear), and holds --tcp-connections idle TCP connections from --tcp-from (an
address outside them). Prints one JSON line: INVITEs sent, answers by status, and how
many TCP connections the daemon closed or left open.

Loopback only: every address it talks to is on this machine.
"""
import argparse
import asyncio
import collections
import json
import socket
import time
import uuid


def invite(target, local, call_id):
    sdp = (
        "v=0\r\no=flood 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).format(ip=local[0])
    return (
        f"INVITE sip:1000@{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:flood@{local[0]}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:1000@{target[0]}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:flood@{local[0]}:{local[1]}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


async def udp_flood(target, source, rate, seconds, answers):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    local = sock.getsockname()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def readable():
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "SIP/2.0":
                answers[parts[1]] += 1

    loop.add_reader(sock.fileno(), readable)
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            try:
                sock.sendto(invite(target, local, f"flood-{uuid.uuid4().hex}"), target)
            except BlockingIOError:
                pass
            sent += 1
        await asyncio.sleep(0.005)
    await asyncio.sleep(2)
    loop.remove_reader(sock.fileno())
    sock.close()
    done.set()
    return sent


async def hold_tcp(target, source, count, seconds):
    """Opens `count` connections and waits; counts those the daemon closes."""
    opened, refused, closed_by_daemon = 0, 0, 0
    writers = []

    async def one():
        nonlocal opened, refused, closed_by_daemon
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target[0], target[1], local_addr=(source, 0)), 5
            )
        except (OSError, asyncio.TimeoutError):
            refused += 1
            return
        opened += 1
        writers.append(writer)
        try:
            data = await asyncio.wait_for(reader.read(1), seconds)
            if data == b"":
                closed_by_daemon += 1
        except asyncio.TimeoutError:
            pass
        except OSError:
            closed_by_daemon += 1

    # Opened in waves, as fast as the kernel lets one process.
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(one()))
        if len(tasks) % 500 == 0:
            await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    for w in writers:
        w.close()
    return {
        "attempted": count,
        "connected": opened,
        "refused_at_connect": refused,
        "closed_by_daemon": closed_by_daemon,
        "still_open_at_end": opened - closed_by_daemon,
    }


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", default="127.0.0.1:5060")
    p.add_argument("--udp-from", default="127.0.0.2")
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--tcp-from", default="127.0.0.3")
    p.add_argument("--tcp-connections", type=int, default=10000)
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    target = (host, int(port))
    answers = collections.Counter()
    sent, tcp = await asyncio.gather(
        udp_flood(target, a.udp_from, a.rate, a.seconds, answers),
        hold_tcp(target, a.tcp_from, a.tcp_connections, a.seconds),
    )
    print(json.dumps({"invites_sent": sent, "answers": dict(answers), "tcp": tcp}))


if __name__ == "__main__":
    asyncio.run(main())
