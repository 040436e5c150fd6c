"""An advisor's softphone built on PJSIP (PyPI pjsua2-python), independent of
contactd's code.

Usage:
  pjsua_phone.py REGISTRAR_URI USERNAME PASSWORD TRANSPORT(udp|tcp|tls) EXPIRES
      registers, prints {"event": "registered", "status": int, "expires": int,
      "reason": str} and exits without signing off (as a phone that loses power).
  pjsua_phone.py ... EXPIRES MODE TONE_WAV HEARD_WAV TALK_SECONDS CODEC
      registers (printing the line above), then takes the first call that comes as
      MODE says: `answer` it, offering only CODEC (PCMU or PCMA), play TONE_WAV
      into it, record what it hears into HEARD_WAV and hang up after TALK_SECONDS
      of media; `decline` it (486 Busy Here); or `ignore` it (ring until the caller
      gives up); or `hold`: answer, and after a second and a half of media put the
      caller on hold (re-INVITE, sendonly) for three seconds, then take them off
      hold, hanging up TALK_SECONDS after the media started; or `transfer:TARGET`:
      answer, and after a second and a half of media transfer the caller blindly
      (REFER) to sip:TARGET at the registrar. Then prints {"event": "call", "answered": bool, "from": str,
      "codec": str, "ended_by_peer": bool, "digits": str} (the other side ended it, or
      CANCELed it; the keys it received as RFC 4733 telephone-events).

Over tls the phone trusts only the CA certificate in the file named by the environment
variable PHONE_TLS_CA, and checks the registrar's certificate against it.
"""
import json
import os
import sys
import time

import pjsua2 as pj

registrar, username, password, transport, expires = sys.argv[1:6]
mode = sys.argv[6] if len(sys.argv) > 6 else "register"
transfer_to = mode.split(":", 1)[1] if mode.startswith("transfer:") else None
answering = mode in ("answer", "decline", "ignore", "hold") or transfer_to is not None
if answering:
    tone, heard, talk_seconds, only_codec = sys.argv[7:11]
    talk_seconds = float(talk_seconds)


def say(**fields):
    print(json.dumps(fields), flush=True)


class Incoming(pj.Call):
    def __init__(self, account, call_id):
        super().__init__(account, call_id)
        self.media_up_at = None
        self.disconnected = False
        self.player = None
        self.recorder = None
        self.codec = ""
        self.digits = ""

    def onDtmfDigit(self, prm):
        self.digits += prm.digit

    def onCallState(self, prm):
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
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
                self.codec = self.getStreamInfo(i).codecName
                if self.media_up_at is None:
                    self.media_up_at = time.time()


class Phone(pj.Account):
    def __init__(self):
        super().__init__()
        self.registered = False
        self.call = None
        self.caller = ""

    def onRegState(self, prm):
        if not self.registered:
            self.registered = True
            say(event="registered", status=prm.code, reason=prm.reason,
                expires=self.getInfo().regExpiresSec)

    def onIncomingCall(self, prm):
        call = Incoming(self, prm.callId)
        self.caller = call.getInfo().remoteUri
        op = pj.CallOpParam()
        if mode == "decline" or self.call is not None:
            op.statusCode = pj.PJSIP_SC_BUSY_HERE
            call.hangup(op)
            if self.call is None:
                self.call = call
                call.disconnected = True
            return
        self.call = call
        op.statusCode = pj.PJSIP_SC_RINGING if mode == "ignore" else pj.PJSIP_SC_OK
        call.answer(op)


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
kind = {"tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}.get(transport, pj.PJSIP_TRANSPORT_UDP)
if transport == "tls":
    transport_config.tlsConfig.CaListFile = os.environ["PHONE_TLS_CA"]
    transport_config.tlsConfig.verifyServer = True
endpoint.transportCreate(kind, transport_config)
endpoint.libStart()
endpoint.audDevManager().setNullDev()
if answering:
    for codec in endpoint.codecEnum2():
        wanted = codec.codecId.upper().startswith(only_codec.upper() + "/")
        endpoint.codecSetPriority(codec.codecId, 255 if wanted else 0)

account_config = pj.AccountConfig()
host = registrar.split(":", 1)[1].split(";")[0]
account_config.idUri = f"sip:{username}@{host}"
account_config.regConfig.registrarUri = registrar
account_config.regConfig.timeoutSec = int(expires)
account_config.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
account_config.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", username, 0, password))
phone = Phone()
phone.create(account_config)
deadline = time.time() + 30
while time.time() < deadline and not phone.registered:
    endpoint.libHandleEvents(20)
if not phone.registered:
    say(event="registered", status=0, reason="no answer", expires=0)
if answering:
    deadline = time.time() + 120
    ended_by_peer = False
    while time.time() < deadline:
        endpoint.libHandleEvents(20)
        call = phone.call
        if call is None:
            continue
        if call.disconnected:
            ended_by_peer = True
            break
        if transfer_to and call.media_up_at is not None and not getattr(call, "referred", False):
            if time.time() - call.media_up_at >= 1.5:
                call.referred = True
                call.xfer(f"sip:{transfer_to}@{host}", pj.CallOpParam(True))
        if mode == "hold" and call.media_up_at is not None:
            talked = time.time() - call.media_up_at
            if talked >= 1.5 and not getattr(call, "held", False):
                call.held = True
                call.setHold(pj.CallOpParam(True))
            elif talked >= 4.5 and not getattr(call, "resumed", False):
                call.resumed = True
                resume = pj.CallOpParam(True)
                resume.opt.flag = pj.PJSUA_CALL_UNHOLD
                call.reinvite(resume)
        if call.media_up_at is not None and time.time() - call.media_up_at >= talk_seconds:
            call.hangup(pj.CallOpParam())
            end = time.time() + 5
            while not call.disconnected and time.time() < end:
                endpoint.libHandleEvents(20)
            break
    call = phone.call
    codec = call.codec if call else ""
    digits = call.digits if call else ""
    answered = bool(call and call.media_up_at is not None)
    if call:
        call.recorder = None
        call.player = None
    phone.call = None
    del call
    # The recorder's WAV is complete once the library is closed; the call object
    # had to go first (its destructor asserts otherwise).
    endpoint.libDestroy()
    say(event="call", answered=answered, codec=codec, ended_by_peer=ended_by_peer,
        digits=digits, **{"from": phone.caller})
# Gone without signing off (no REGISTER with Expires: 0).
os._exit(0)
