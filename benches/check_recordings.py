#!/usr/bin/env python3
"""Checks contactd recordings made by benches/sip_load.sh (standard library only).

For every .wav under DIR: stereo, 8 kHz, 16-bit; the left channel's tone is 440 Hz
(by zero crossings over the tone); and no run of digital silence longer than 100 ms
inside the tone (a gap means packets were lost or played out of time).
Usage: benches/check_recordings.py DIR [--newest N]
"""
import os
import struct
import sys
import wave


def check(path):
    with wave.open(path) as w:
        if (w.getnchannels(), w.getframerate(), w.getsampwidth()) != (2, 8000, 2):
            return "format"
        frames = w.readframes(w.getnframes())
    left = struct.unpack("<%dh" % (len(frames) // 2), frames)[0::2]
    loud = [i for i in range(0, len(left) - 160, 160) if max(abs(s) for s in left[i:i + 160]) > 2000]
    if not loud:
        return "no tone"
    a, b = loud[0] + 1600, loud[-1] - 1600  # 0.2 s inside each end of the tone
    tone = left[a:b]
    if len(tone) < 8000:
        return "tone too short"
    run = longest = 0
    for s in tone:
        run = run + 1 if s == 0 else 0
        longest = max(longest, run)
    if longest > 800:
        return f"gap of {longest / 8:.0f} ms"
    crossings = sum(1 for x, y in zip(tone, tone[1:]) if (x < 0) != (y < 0))
    hz = crossings / 2 / (len(tone) / 8000)
    if abs(hz - 440) > 10:
        return f"tone at {hz:.0f} Hz"
    return None


def main():
    root = sys.argv[1]
    newest = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--newest" else None
    paths = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".wav")]
    paths.sort(key=os.path.getmtime, reverse=True)
    if newest:
        paths = paths[:newest]
    bad = [(p, why) for p in paths if (why := check(p))]
    for p, why in bad[:20]:
        print(f"{p}: {why}")
    print(f"{len(paths)} recordings checked, {len(bad)} with problems")
    sys.exit(1 if bad or not paths else 0)


if __name__ == "__main__":
    main()
