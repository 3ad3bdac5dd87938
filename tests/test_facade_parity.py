"""smtplib's ``sock`` on the sync facade, where a differential scenario cannot
look: a hook's socket, another thread's, a timeout the caller set on it.

The facade hands ``sock`` out as smtplib's is (blocking, with the client's
timeout) and puts it back in non-blocking mode before the async core uses it
again: at the next call, or when the hook that took it returns.
"""

from __future__ import annotations

import copy
import pickle
import socket
import threading
import time
from contextlib import closing
from typing import TYPE_CHECKING

import pytest

import anysmtp
from tests.child import run_python
from tests.servers import AiosmtpdServer, ScriptedConnection, ScriptedServer

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_NAME = "client.example"


def _answer(conn: ScriptedConnection) -> None:
    """A greeting, then ``250`` to everything but QUIT."""
    conn.send(b"220 hi\r\n")
    while line := conn.read_line():
        if line.lower().startswith(b"quit"):
            conn.send(b"221 bye\r\n")
            return
        conn.send(b"250 ok\r\n")


def test_a_hook_gets_sock_blocking_and_the_core_gets_it_back() -> None:
    # A hook of the call in progress (run in a worker thread) may use the
    # socket as smtplib's; what it calls back in, and the rest of the call
    # after it returns, find the socket non-blocking again.
    modes: list[tuple[str, bool]] = []

    class Spy(anysmtp.SMTP):
        kept: socket.socket | None = None

        def send(self, s: ReadableBuffer | str) -> None:
            sock = self.sock
            assert sock is not None
            modes.append(("send", sock.getblocking()))
            super().send(s)
            modes.append(("send, after calling back", sock.getblocking()))
            self.kept = self.sock  # handed out again as the hook returns

        def getreply(self) -> tuple[int, bytes]:
            if self.kept is not None:
                modes.append(("getreply", self.kept.getblocking()))
                self.kept = None
            return super().getreply()

    with ScriptedServer(_answer) as server:
        with closing(Spy(server.host, server.port, local_hostname=_NAME)) as smtp:
            assert smtp.noop() == (250, b"ok")
            assert smtp.quit() == (221, b"bye")
        assert modes == [
            ("send", True),
            ("send, after calling back", False),
            ("getreply", False),
            ("send", True),
            ("send, after calling back", False),
            ("getreply", False),
        ]
    assert server.transcript == b"noop\r\nquit\r\n"


def test_a_hook_in_the_event_loop_gets_sock_blocking_too() -> None:
    # ``_print_debug`` runs where the async client calls it, in the event
    # loop: the socket is lent for as long as it runs.
    modes: list[tuple[str, bool]] = []

    class Loud(anysmtp.SMTP):
        kept: socket.socket | None = None

        def _print_debug(self, *args: object) -> None:
            sock = self.sock
            if sock is not None:
                modes.append(("debug", sock.getblocking()))
                self.kept = sock

        def getreply(self) -> tuple[int, bytes]:
            if self.kept is not None:
                modes.append(("getreply", self.kept.getblocking()))
                self.kept = None
            return super().getreply()

    with (
        ScriptedServer(_answer) as server,
        closing(Loud(server.host, server.port, local_hostname=_NAME)) as smtp,
    ):
        smtp.set_debuglevel(1)
        assert smtp.noop() == (250, b"ok")
        assert smtp.quit() == (221, b"bye")
    # send: (lent, then taken back), then getreply's own reply lines.
    assert modes[:2] == [("debug", True), ("getreply", False)]
    assert {mode for name, mode in modes if name == "debug"} == {True}
    assert [name for name, _ in modes].count("getreply") == 2


def test_sock_taken_by_another_thread_during_a_call_stays_non_blocking() -> None:
    # A watchdog may take ``sock`` (to shut it down) while a call waits on it:
    # a blocking socket would stall the call's reads.
    noop_arrived = threading.Event()
    may_answer = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"noop")
        noop_arrived.set()
        may_answer.wait(10)
        conn.send(b"250 late\r\n")
        conn.expect(b"quit")
        conn.send(b"221 bye\r\n")

    with ScriptedServer(script) as server:
        smtp = anysmtp.SMTP(server.host, server.port, local_hostname=_NAME, timeout=10)
        with closing(smtp):
            replies: list[tuple[int, bytes]] = []
            caller = threading.Thread(target=lambda: replies.append(smtp.noop()))
            caller.start()
            assert noop_arrived.wait(10)
            during = smtp.sock
            assert during is not None
            blocking_during_the_call = during.getblocking()
            may_answer.set()
            caller.join(10)
            assert replies == [(250, b"late")]
            assert blocking_during_the_call is False
            after = smtp.sock  # no call in progress: smtplib's socket
            assert after is during
            assert (after.getblocking(), after.gettimeout()) == (True, 10)
            assert smtp.quit() == (221, b"bye")


def test_a_timeout_set_on_sock_becomes_the_clients() -> None:
    # smtplib's reads use the socket's own timeout: so do anysmtp's.
    with ScriptedServer(_answer) as server:
        smtp = anysmtp.SMTP(
            server.host, server.port, local_hostname=_NAME, timeout=None
        )
        with closing(smtp):
            sock = smtp.sock
            assert sock is not None
            sock.settimeout(7)
            assert smtp.noop() == (250, b"ok")
            assert smtp.timeout == 7
            assert sock.getblocking() is False  # the core's again
            # Non-blocking (0.0) is no timeout the client could use.
            lent = smtp.sock
            assert lent is not None
            assert lent.gettimeout() == 7
            lent.setblocking(False)
            assert smtp.noop() == (250, b"ok")
            assert smtp.timeout == 7
            # A socket taken but left alone keeps the client's own timeout.
            assert smtp.sock is not None
            smtp.timeout = 3
            assert smtp.noop() == (250, b"ok")
            assert smtp.timeout == 3
            lent = smtp.sock
            assert lent is not None
            assert lent.gettimeout() == 3
            assert smtp.quit() == (221, b"bye")
    assert server.transcript == b"noop\r\nnoop\r\nnoop\r\nquit\r\n"


def test_sock_assigned_back_to_itself_is_still_taken_back() -> None:
    with (
        ScriptedServer(_answer) as server,
        closing(anysmtp.SMTP(server.host, server.port, timeout=5)) as smtp,
    ):
        smtp.sock = smtp.sock
        assert smtp.noop() == (250, b"ok")
        assert smtp.get_transport_info("socket").getblocking() is False
        assert smtp.quit() == (221, b"bye")


def test_sock_set_to_none_is_the_callers_as_it_was_handed_out() -> None:
    # ``sock = None`` forgets the socket without closing it: the caller's now.
    with ScriptedServer(_answer) as server:
        smtp = anysmtp.SMTP(server.host, server.port, timeout=5)
        sock = smtp.sock
        assert sock is not None
        smtp.sock = None
        with pytest.raises(anysmtp.SMTPServerDisconnected):
            smtp.noop()
        with closing(sock):
            assert (sock.getblocking(), sock.gettimeout()) == (True, 5)
            sock.sendall(b"QUIT\r\n")
            assert sock.recv(100) == b"221 bye\r\n"


def test_pickling_and_deep_copying_fail_at_once_and_copy_shares() -> None:
    # smtplib pickles an unconnected client; anysmtp's holds an async client
    # tied to event loops (compatibility.md).  Copying it part by part would
    # fail half-way and leave broken copies behind.
    with ScriptedServer(_answer) as server:
        smtp = anysmtp.SMTP(server.host, server.port, local_hostname=_NAME, timeout=5)
        with closing(smtp):
            with pytest.raises(TypeError, match="cannot pickle 'SMTP' object"):
                pickle.dumps(smtp)
            with pytest.raises(TypeError, match="cannot deep-copy 'SMTP' object"):
                copy.deepcopy(smtp)
            shallow = copy.copy(smtp)  # as smtplib's: the same connection
            assert shallow.noop() == (250, b"ok")
            assert shallow.quit() == (221, b"bye")
            assert smtp.sock is None
    assert server.transcript == b"noop\r\nquit\r\n"


@pytest.mark.subprocess
def test_a_forked_child_sends_while_the_parent_is_in_a_transaction(
    smtpd: AiosmtpdServer,
) -> None:
    # The parent forks while another of its threads is in the middle of
    # sendmail(): the child has no such thread, and its own transactions must
    # not wait for that one to end.
    source = """
        import os, signal, sys, threading
        import anysmtp

        paused, resume = threading.Event(), threading.Event()

        class Client(anysmtp.SMTP):
            def send(self, s):
                if isinstance(s, str) and s.startswith("mail"):
                    if not paused.is_set():
                        paused.set()
                        resume.wait(10)
                super().send(s)

        host, port = sys.argv[1], int(sys.argv[2])
        smtp = Client(host, port, timeout=10)
        message = "Subject: fork\\r\\n\\r\\nbody\\r\\n"
        sent = []
        sender = threading.Thread(
            target=lambda: sent.append(smtp.sendmail("a@x.org", "p@x.org", message))
        )
        sender.start()
        assert paused.wait(10)
        pid = os.fork()
        if pid == 0:
            signal.alarm(5)  # a child that waits for ever ends, and says so
            try:
                smtp.sendmail("a@x.org", "c@x.org", message)
            except anysmtp.SMTPServerDisconnected:
                smtp.connect(host, port)
                print("child", smtp.sendmail("a@x.org", "c@x.org", message))
                smtp.quit()
            sys.stdout.flush()
            os._exit(0)
        resume.set()
        sender.join(10)
        _, status = os.waitpid(pid, 0)
        print("parent", sent, os.waitstatus_to_exitcode(status))
        smtp.quit()
    """
    output = run_python(source, smtpd.host, str(smtpd.port), timeout=20)
    assert output.split("\n") == ["child {}", "parent [{}] 0", ""]
    delivered = sorted(each.rcpt_tos[0] for each in smtpd.messages)
    assert delivered == ["c@x.org", "p@x.org"]


def _slow_ehlo_then_one_message(conn: ScriptedConnection) -> None:
    """EHLO answered late (the client's reader is registered, waiting), then
    one message, one command at a time, and QUIT."""
    conn.send(b"220 hi\r\n")
    conn.expect(b"ehlo")
    time.sleep(0.2)
    conn.send(b"250 hello\r\n")
    for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
        conn.read_line()
        conn.send(reply)
    conn.read_data()
    conn.send(b"250 queued\r\n")
    conn.expect(b"quit")
    conn.send(b"221 bye\r\n")


@pytest.mark.subprocess
def test_a_forked_child_closing_its_copy_leaves_the_parents_connection() -> None:
    # The parent's thread is in a transaction, its reader registered in the
    # portal's loop, when the process forks; the child closes its copy of the
    # client.  The socket, the selector and the loop's wake-up pipe are
    # shared: the child must only close its descriptor (no shutdown, which
    # would end the parent's connection).
    source = """
        import os, sys, threading
        import anysmtp

        paused, resume = threading.Event(), threading.Event()

        class Client(anysmtp.SMTP):
            def send(self, s):
                if isinstance(s, str) and s.startswith("mail"):
                    paused.set()
                    resume.wait(10)
                super().send(s)

        smtp = Client(sys.argv[1], int(sys.argv[2]), timeout=10)
        sent = []
        sender = threading.Thread(
            target=lambda: sent.append(smtp.sendmail("a@x.org", "p@x.org", "hi"))
        )
        sender.start()
        assert paused.wait(10)
        pid = os.fork()
        if pid == 0:
            smtp.close()
            os._exit(0)
        os.waitpid(pid, 0)
        resume.set()
        sender.join(10)
        print(sent, smtp.quit()[0])
    """
    with ScriptedServer(_slow_ehlo_then_one_message) as server:
        output = run_python(source, server.host, str(server.port), timeout=20)
    assert output == "[{}] 221\n"
    assert server.transcript.endswith(b"data\r\nhi\r\n.\r\nquit\r\n")


def test_sock_taken_from_a_borrowed_connection_is_taken_back_with_it(
    smtpd: AiosmtpdServer,
) -> None:
    # The pool goes on with the connection without the borrowed facade: its
    # next calls would otherwise find a blocking socket.
    with anysmtp.SMTPPool(smtpd.host, smtpd.port, start_tls=False) as pool:
        with pool.connection() as smtp:
            taken = smtp.sock
            assert taken is not None
            assert taken.getblocking()
        assert not taken.getblocking()
        with pool.connection() as smtp:
            assert smtp.noop()[0] == 250
            assert smtp.sock is taken  # the same pooled connection
        assert pool.connections_opened == 1


@pytest.mark.subprocess
def test_sock_read_in_a_forked_child_leaves_the_parents_socket_alone(
    smtpd: AiosmtpdServer,
) -> None:
    # A child's copy of the socket shares the parent's blocking mode: lent in
    # the child (made blocking), it would stall the parent's event loop.
    source = """
        import fcntl, os, sys
        import anysmtp

        smtp = anysmtp.SMTP(sys.argv[1], int(sys.argv[2]))
        pid = os.fork()
        if pid == 0:
            smtp.sock.close()  # a child letting go of what it inherited
            os._exit(0)
        os.waitpid(pid, 0)
        flags = fcntl.fcntl(smtp.get_transport_info("socket"), fcntl.F_GETFL)
        print(bool(flags & os.O_NONBLOCK), smtp.noop()[0])
        smtp.quit()
    """
    output = run_python(source, smtpd.host, str(smtpd.port), timeout=20)
    assert output == "True 250\n"
