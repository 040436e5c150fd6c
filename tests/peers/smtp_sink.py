"""A real SMTP server (aiosmtpd) that receives what the daemon sends.

Listens on 127.0.0.1 at a port the kernel picks, prints that port on the first line
of stdout, then one JSON line per message received: envelope sender, recipients and
the message as text. Runs until stdin closes (the test that started it is done).
With an argument N, the first N messages are refused with 451 (a relay in trouble).
"""
import asyncio
import json
import sys

from aiosmtpd.handlers import AsyncMessage  # noqa: F401  (checks the package is whole)
from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, refuse):
        self.refuse = refuse

    async def handle_DATA(self, server, session, envelope):
        if self.refuse > 0:
            self.refuse -= 1
            print(json.dumps({"refused": envelope.rcpt_tos}), flush=True)
            return "451 4.3.0 Try again later"
        print(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }), flush=True)
        return "250 OK"


async def main():
    loop = asyncio.get_running_loop()
    sink = Sink(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    server = await loop.create_server(lambda: SMTP(sink, hostname="sink.test"), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
