"""An advisor's softphone built on PJSIP (PyPI pjsua2-python), independent of
contactd's code: it registers and reports how the registrar answered.

Usage: pjsua_phone.py REGISTRAR_URI USERNAME PASSWORD TRANSPORT(udp|tcp) EXPIRES

Prints one JSON line: {"status": int, "expires": int, "reason": str}; the status is
the registrar's final answer to the (authenticated) REGISTER.
"""
import json
import os
import sys
import time

import pjsua2 as pj

registrar, username, password, transport, expires = sys.argv[1:6]


class Phone(pj.Account):
    def __init__(self):
        super().__init__()
        self.done = False
        self.status = 0
        self.expires = 0
        self.reason = ""

    def onRegState(self, prm):
        info = self.getInfo()
        self.status = prm.code
        self.reason = prm.reason
        self.expires = info.regExpiresSec
        self.done = True


endpoint = pj.Endpoint()
endpoint.libCreate()
config = pj.EpConfig()
config.uaConfig.threadCnt = 0
config.uaConfig.mainThreadOnly = True
config.logConfig.level = 1
config.logConfig.consoleLevel = 1
endpoint.libInit(config)
transport_config = pj.TransportConfig()
transport_config.port = 0
transport_config.boundAddress = "127.0.0.1"
kind = pj.PJSIP_TRANSPORT_TCP if transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
endpoint.transportCreate(kind, transport_config)
endpoint.libStart()
endpoint.audDevManager().setNullDev()

account_config = pj.AccountConfig()
host = registrar.split(":", 1)[1].split(";")[0]
account_config.idUri = f"sip:{username}@{host}"
account_config.regConfig.registrarUri = registrar
account_config.regConfig.timeoutSec = int(expires)
account_config.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", username, 0, password))
phone = Phone()
phone.create(account_config)
deadline = time.time() + 30
while time.time() < deadline and not phone.done:
    endpoint.libHandleEvents(20)
result = {"status": phone.status, "expires": phone.expires, "reason": phone.reason}
print(json.dumps(result), flush=True)
# Gone without signing off (no REGISTER with Expires: 0), as a phone that loses power:
# its binding stays until it expires.
os._exit(0)
