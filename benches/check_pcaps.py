#!/usr/bin/env python3
"""Checks the anchor's recordings (rtpengine's pcap files, raw IP) the way
check_recordings.py checks contactd's: for every RTP stream in each call (by source
address and SSRC), whether packets stopped for more than 100 ms while the stream ran
(a gap a listener would hear: a problem); and, told apart, how many calls had a few
sequence numbers missing (shorter losses, which check_recordings.py cannot see in a
WAV either).
Standard library only.
Usage: benches/check_pcaps.py DIR
"""
import os
import struct
import sys


def streams(path):
    """{(source, ssrc): [(arrival seconds, sequence number)]} for one pcap file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return {}
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    fraction = 1e9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e6
    link = struct.unpack(endian + "I", data[20:24])[0]
    offset, found = 24, {}
    while offset + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        packet = data[offset + 16:offset + 16 + incl]
        offset += 16 + incl
        if link == 1:  # Ethernet
            packet = packet[14:]
        if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 17:
            continue
        ihl = (packet[0] & 0x0F) * 4
        udp = packet[ihl:]
        if len(udp) < 8 + 12:
            continue
        source = (packet[12:16], struct.unpack(">H", udp[0:2])[0])
        rtp = udp[8:]
        if rtp[0] >> 6 != 2 or rtp[1] & 0x7F >= 72:  # not RTP, or RTCP
            continue
        seq = struct.unpack(">H", rtp[2:4])[0]
        ssrc = struct.unpack(">I", rtp[8:12])[0]
        found.setdefault((source, ssrc), []).append((sec + frac / fraction, seq))
    return found


def problem(path):
    """(a gap over 100 ms, or None; packets missing in all streams)."""
    gap, missing = None, 0
    for (source, _), packets in streams(path).items():
        if len(packets) < 50:
            continue
        longest = max(b[0] - a[0] for a, b in zip(packets, packets[1:]))
        if longest > 0.1 and gap is None:
            gap = f"stream from port {source[1]}: no packet for {longest * 1000:.0f} ms"
        # Sequence numbers wrap at 65536; a small step forward over a hole is a loss.
        missing += sum(
            step - 1
            for (_, a), (_, b) in zip(packets, packets[1:])
            if 1 < (step := (b - a) & 0xFFFF) < 1000
        )
    return gap, missing


def main():
    root = sys.argv[1]
    paths = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".pcap")]
    checked = [(p, *problem(p)) for p in paths]
    bad = [(p, gap) for p, gap, _ in checked if gap]
    for p, why in bad[:20]:
        print(f"{p}: {why}")
    lossy = [m for _, _, m in checked if m]
    print(f"{len(paths)} pcap recordings checked, {len(bad)} with problems; "
          f"{len(lossy)} with packets missing ({sum(lossy)} in all)")
    raise SystemExit(1 if bad or not paths else 0)


if __name__ == "__main__":
    main()
