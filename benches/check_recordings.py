#!/usr/bin/env python3
"""Checks contactd recordings made by the call benchmarks (standard library only).

For every .wav under DIR: stereo, 8 kHz, 16-bit; the left channel (the caller) holds a
440 Hz tone (by zero crossings over the tone) with no run of digital silence longer
than 100 ms inside it (a gap means packets were lost or played out of time).
With --right-hz HZ --right-tail S (bridged calls), the right channel's last S seconds
(the advisor, after the menu and the queue) are checked the same way for HZ.
Usage: benches/check_recordings.py DIR [--newest N] [--right-hz HZ --right-tail S]
"""
import argparse
import array
import os
import sys
import wave


# Sample bytes whose sign bit is set (little-endian int16: the high byte >= 0x80).
NEGATIVE = bytes(1 if b >= 0x80 else 0 for b in range(256))


def tone_problem(samples, hz):
    """Why this stretch (an array of int16) is not a clean tone of hz, or None.
    Written with C-speed built-ins only: thousands of recordings are checked."""
    loud = [i for i in range(0, len(samples) - 160, 160)
            if max(samples[i:i + 160]) > 2000 or min(samples[i:i + 160]) < -2000]
    if not loud:
        return "no tone"
    a, b = loud[0] + 1600, loud[-1] - 1600  # 0.2 s inside each end of the tone
    tone = samples[a:b]
    if len(tone) < 8000:
        return "tone too short"
    raw = tone.tobytes()
    if bytes(1602) in raw:  # 801 zero samples in a row, wherever they start
        return "gap of more than 100 ms"
    signs = raw[1::2].translate(NEGATIVE)
    crossings = signs.count(b"\x00\x01") + signs.count(b"\x01\x00")
    measured = crossings / 2 / (len(tone) / 8000)
    if abs(measured - hz) > hz / 44:
        return f"tone at {measured:.0f} Hz"
    return None


def check(path, right_hz, right_tail):
    with wave.open(path) as w:
        if (w.getnchannels(), w.getframerate(), w.getsampwidth()) != (2, 8000, 2):
            return "format"
        frames = w.readframes(w.getnframes())
    samples = array.array("h", frames)
    if sys.byteorder != "little":
        samples.byteswap()
    if why := tone_problem(samples[0::2], 440):
        return f"caller: {why}"
    if right_hz:
        tail = samples[1::2][-int(right_tail * 8000):]
        if why := tone_problem(tail, right_hz):
            return f"advisor: {why}"
    return None


def main():
    args = argparse.ArgumentParser()
    args.add_argument("dir")
    args.add_argument("--newest", type=int)
    args.add_argument("--right-hz", type=float)
    args.add_argument("--right-tail", type=float, default=20)
    a = args.parse_args()
    paths = [os.path.join(d, f) for d, _, fs in os.walk(a.dir) for f in fs if f.endswith(".wav")]
    paths.sort(key=os.path.getmtime, reverse=True)
    if a.newest:
        paths = paths[:a.newest]
    bad = [(p, why) for p in paths if (why := check(p, a.right_hz, a.right_tail))]
    for p, why in bad[:20]:
        print(f"{p}: {why}")
    print(f"{len(paths)} recordings checked, {len(bad)} with problems")
    raise SystemExit(1 if bad or not paths else 0)


if __name__ == "__main__":
    main()
