#!/usr/bin/env python3
"""A real SMTP server for tests: every message it accepts becomes one .eml file.

    python3 scripts/smtp-sink.py --port 0 --dir /tmp/mails

Needs aiosmtpd (`pip install aiosmtpd`). Listens on 127.0.0.1 only. Once it
accepts connections it prints exactly one line on stdout and flushes it:

    listening 127.0.0.1:<port>

(with --port 0 the port is one the system picked), and prints nothing on
stdout after that. Each message accepted at DATA is written to
<dir>/<time_ns>-<seq>-<pid>.eml with the bytes as received (CRLF line
endings, dot-stuffing undone), first to a hidden .tmp file, fsynced, then
renamed: a reader listing *.eml never sees half a message. The server answers
250 only after the rename.

To test a client's error handling, recipients steer the answer to RCPT TO:
a local part starting with "permfail" gets 550 (permanent), one starting
with "tempfail" gets 451 (transient). With --auth USER:PASSWORD the server
requires AUTH PLAIN/LOGIN (allowed without TLS) before MAIL FROM.

Killing it (even SIGKILL) and starting it again on the same port works at
once: the listening socket sets SO_REUSEADDR.
"""

import argparse
import asyncio
import itertools
import os
import signal
import sys
import time

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:
    print("smtp-sink.py: the Python package aiosmtpd is missing: pip install aiosmtpd", file=sys.stderr, flush=True)
    sys.exit(2)

HOST = "127.0.0.1"


class Sink:
    def __init__(self, directory: str, verbose: bool):
        self.directory = directory
        self.verbose = verbose
        self.seq = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("permfail"):
            return "550 5.1.1 <%s>: mailbox unavailable (smtp-sink permfail)" % address
        if local.startswith("tempfail"):
            return "451 4.3.0 <%s>: try again later (smtp-sink tempfail)" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content
        if content is None:
            content = envelope.content if isinstance(envelope.content, bytes) else (envelope.content or "").encode("utf-8")
        name = "%d-%06d-%d.eml" % (time.time_ns(), next(self.seq), os.getpid())
        try:
            self.write_atomically(name, content)
        except OSError as e:
            print("smtp-sink.py: cannot write %s: %s" % (name, e), file=sys.stderr, flush=True)
            return "451 4.3.0 cannot store the message (smtp-sink)"
        if self.verbose:
            print("smtp-sink.py: %s from=%s to=%s (%d bytes)" % (name, envelope.mail_from, ",".join(envelope.rcpt_tos), len(content)),
                  file=sys.stderr, flush=True)
        return "250 2.0.0 OK queued as %s" % name

    def write_atomically(self, name: str, content: bytes) -> None:
        final = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def authenticator_for(user: str, password: str):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() and auth_data.password == password.encode()
        # handled=False: aiosmtpd then answers 535 itself (by default a failed
        # result is taken as already answered, and the client waits forever).
        return AuthResult(success=ok, handled=False)

    return authenticate


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    handler = Sink(args.dir, args.verbose)
    options = dict(
        hostname="smtp-sink.localhost",  # never look up the machine's FQDN (slow without DNS)
        enable_SMTPUTF8=True,
        decode_data=False,
        data_size_limit=64 * 1024 * 1024,
        loop=loop,
    )
    if args.auth is not None:
        user, _, password = args.auth.partition(":")
        options.update(authenticator=authenticator_for(user, password), auth_required=True, auth_require_tls=False)

    server = await loop.create_server(lambda: SMTP(handler, **options), host=HOST, port=args.port, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print("listening %s:%d" % (HOST, port), flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="SMTP sink for tests: writes each received message to DIR as a .eml file.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one; the chosen port is printed)")
    parser.add_argument("--dir", required=True, help="directory for the .eml files (created if missing)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require AUTH PLAIN/LOGIN with these credentials (no TLS)")
    parser.add_argument("--verbose", action="store_true", help="log each message on stderr")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    try:
        asyncio.run(serve(args))
    except OSError as e:
        print("smtp-sink.py: cannot listen on %s:%d: %s" % (HOST, args.port, e), file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
