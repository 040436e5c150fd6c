"""A caller built on PJSIP (PyPI pjsua2-python), independent of contactd's code.

Usage: pjsua_caller.py URI TRANSPORT(udp|tcp) TONE_WAV HEARD_WAV KEYS

Dials URI, plays TONE_WAV into the call, records what it hears into HEARD_WAV, keys
KEYS (RFC 4733) once media is up, and waits for the far end to hang up. Prints one
JSON line: {"connected": bool, "disconnected_by_peer": bool, "last_status": int}.
"""
import json
import os
import sys
import time

import pjsua2 as pj

uri, transport, tone, heard, keys = sys.argv[1:6]


class Caller(pj.Call):
    def __init__(self, account):
        super().__init__(account)
        self.connected = False
        self.disconnected = False
        self.media_up = False
        self.last_status = 0
        self.player = None
        self.recorder = None

    def onCallState(self, prm):
        info = self.getInfo()
        self.last_status = info.lastStatusCode
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.connected = True
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(i)
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(tone)
                self.player.startTransmit(audio)
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(heard)
                audio.startTransmit(self.recorder)
                self.media_up = True


endpoint = pj.Endpoint()
endpoint.libCreate()
config = pj.EpConfig()
config.uaConfig.threadCnt = 0
config.uaConfig.mainThreadOnly = True
config.logConfig.level = 1
config.logConfig.consoleLevel = 1
config.medConfig.noVad = True
endpoint.libInit(config)
transport_config = pj.TransportConfig()
transport_config.port = 0
transport_config.boundAddress = "127.0.0.1"
kind = pj.PJSIP_TRANSPORT_TCP if transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
endpoint.transportCreate(kind, transport_config)
endpoint.libStart()
endpoint.audDevManager().setNullDev()
for codec in endpoint.codecEnum2():
    priority = 255 if codec.codecId.startswith("PCMU/") else 0
    endpoint.codecSetPriority(codec.codecId, priority)

account_config = pj.AccountConfig()
account_config.idUri = "sip:07700900123@127.0.0.1"
account_config.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
account = pj.Account()
account.create(account_config)

call = Caller(account)
call.makeCall(uri, pj.CallOpParam(True))
deadline = time.time() + 90
keyed_at = None
while time.time() < deadline and not call.disconnected:
    endpoint.libHandleEvents(20)
    if call.media_up and keyed_at is None:
        keyed_at = time.time()
    if keyed_at is not None and keys and time.time() - keyed_at > 1.0:
        call.dialDtmf(keys)
        keys = ""

result = {
    "connected": call.connected,
    "disconnected_by_peer": call.disconnected,
    "last_status": call.last_status,
}
# The recorder writes its WAV header when the library closes it; the call object
# must go before the library does (its destructor asserts otherwise).
call.recorder = None
call.player = None
del call
endpoint.libDestroy()
print(json.dumps(result), flush=True)
os._exit(0)
