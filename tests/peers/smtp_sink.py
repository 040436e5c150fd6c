"""A real SMTP server (aiosmtpd) that receives what the daemon sends.

Listens on 127.0.0.1 at a port the kernel picks, prints that port on the first line
of stdout, then one JSON line per message received: envelope sender, recipients and
the message as text. Runs until stdin closes (the test that started it is done).
"""
import asyncio
import json
import sys

from aiosmtpd.handlers import AsyncMessage  # noqa: F401  (checks the package is whole)
from aiosmtpd.smtp import SMTP


class Sink:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }), flush=True)
        return "250 OK"


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(), hostname="sink.test"), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
