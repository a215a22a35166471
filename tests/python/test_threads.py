# test_threads.py: ports between real Python threads, each with its own
# GLib.MainContext; handlers run on the thread that owns the port.
#
# SPDX-License-Identifier: LGPL-2.1-or-later

import gc
import threading
import time
import unittest

from mptest import GLib, Mp, ContextTestCase, Worker, TIMEOUT

N_ROUNDS = 500
N_SENDERS = 4
N_PER_SENDER = 2000
N_POSTS = 100000


class Owned:
    """Connects to a port on the calling thread (a worker, through
    Worker.call) and starts it there; every emission asserts it runs on that
    same thread."""

    def __init__(self, port, on_message=None):
        self.owner = threading.get_ident()
        self.port = port
        self.values = []
        self.closes = 0
        self.wrong_thread = 0
        self._on_message = on_message
        port.connect('message', self._message)
        port.connect('close', self._close)
        port.start()

    def _check_thread(self):
        if threading.get_ident() != self.owner:
            self.wrong_thread += 1

    def _message(self, port, message):
        self._check_thread()
        value = message.get_data().unpack()
        self.values.append(value)
        if self._on_message is not None:
            self._on_message(port, value)

    def _close(self, port):
        self._check_thread()
        self.closes += 1


class TestThreads(ContextTestCase):
    def setUp(self):
        super().setUp()
        self.workers = []

    def tearDown(self):
        for worker in self.workers:
            worker.stop()
        super().tearDown()

    def worker(self, name):
        worker = Worker(name).start()
        self.workers.append(worker)
        return worker

    def test_ping_pong_between_two_threads(self):
        left, right = self.worker('left'), self.worker('right')
        channel = Mp.MessageChannel.new()
        finished = threading.Event()

        def pong(port, value):
            port.post_message(GLib.Variant('u', value + 1), [])

        def ping(port, value):
            if value >= 2 * N_ROUNDS:
                port.close()
                return
            port.post_message(GLib.Variant('u', value + 1), [])

        a = left.call(Owned, channel.get_port1(), ping)
        b = right.call(Owned, channel.get_port2(), pong)
        a.port.connect('close', lambda port: finished.set())
        channel.get_port1().post_message(GLib.Variant('u', 0), [])   # from the main thread
        self.assertTrue(finished.wait(10))
        self.iterate_until(lambda: b.closes == 1)

        self.assertEqual(a.owner, left.ident)
        self.assertEqual(b.owner, right.ident)
        self.assertEqual(b.values, list(range(0, 2 * N_ROUNDS + 1, 2)))
        self.assertEqual(a.values, list(range(1, 2 * N_ROUNDS + 2, 2)))
        self.assertEqual((a.closes, b.closes), (1, 1))
        self.assertEqual((a.wrong_thread, b.wrong_thread), (0, 0))

    def test_many_senders_to_the_main_thread(self):
        ports = []
        owned = []
        for i in range(N_SENDERS):
            channel = Mp.MessageChannel.new()
            owned.append(Owned(channel.get_port1()))          # on this (main) thread
            ports.append(channel.get_port2())

        def send(port, sender):
            for i in range(N_PER_SENDER):
                port.post_message(GLib.Variant('(uu)', (sender, i)), [])
            port.close()

        threads = [threading.Thread(target=send, args=(port, i)) for i, port in enumerate(ports)]
        for thread in threads:
            thread.start()
        self.iterate_until(lambda: all(o.closes == 1 for o in owned))
        for thread in threads:
            thread.join()
        for sender, o in enumerate(owned):
            self.assertEqual(o.owner, threading.get_ident())
            self.assertEqual(o.wrong_thread, 0)
            self.assertEqual(o.values, [(sender, i) for i in range(N_PER_SENDER)])

    def test_port_transferred_to_a_thread_runs_there(self):
        worker = self.worker('adopter')
        control = Mp.MessageChannel.new()
        work = Mp.MessageChannel.new()
        adopted = []

        # The worker owns control.port2; the port it receives is started by
        # its handler, so on the worker thread too.
        def on_control(port, message):
            (received,) = message.get_ports()
            adopted.append(Owned(received))

        def setup():
            port = control.get_port2()
            port.connect('message', on_control)
            port.start()
            return threading.get_ident()

        worker_ident = worker.call(setup)
        control.get_port1().post_message(GLib.Variant('s', 'here is a port'), [work.get_port2()])
        self.iterate_until(lambda: adopted)
        for i in range(100):
            work.get_port1().post_message(GLib.Variant('i', i), [])
        work.get_port1().close()
        self.iterate_until(lambda: adopted[0].closes == 1)
        self.assertEqual(adopted[0].owner, worker_ident)
        self.assertEqual(adopted[0].wrong_thread, 0)
        self.assertEqual(adopted[0].values, list(range(100)))
        control.get_port1().close()

    def test_thread_dropping_its_context_closes_its_ports(self):
        worker = Worker('short-lived').start()
        channel = Mp.MessageChannel.new()
        closes = []
        mine = channel.get_port1()
        mine.connect('close', lambda port: closes.append(threading.get_ident()))
        mine.start()

        worker.call(Owned, channel.get_port2())
        # From now on only the worker's context keeps port2 alive.
        channel = None
        worker.stop()
        # Drop the last references to the worker's context: it is finalized,
        # and the port started on it closes.
        worker.loop = None
        worker.context = None
        worker = None
        gc.collect()
        self.iterate_until(lambda: closes)
        self.assertEqual(closes, [threading.get_ident()])
        self.assertTrue(mine.is_closed())

    def test_started_port_collected_on_a_worker_keeps_working(self):
        worker = self.worker('collector')
        channel = Mp.MessageChannel.new()
        got = []
        event = threading.Event()

        def start_and_forget(port):
            def on_message(p, message):
                got.append((threading.get_ident(), message.get_data().unpack()))
                event.set()
            port.connect('message', on_message)
            port.start()

        worker.call(start_and_forget, channel.get_port2())
        peer = channel.get_port1()
        channel = None
        gc.collect()
        worker.call(gc.collect)
        peer.post_message(GLib.Variant('s', 'after gc'), [])
        self.assertTrue(event.wait(10))
        self.assertEqual(got, [(worker.ident, 'after gc')])
        peer.close()


class Catching(threading.Thread):
    """A thread running self.body(), with no error handling in it: an exception
    ends the thread and is kept in self.error for the test to report."""

    def __init__(self, name):
        super().__init__(name=name, daemon=True)
        self.error = None

    def run(self):
        try:
            self.body()
        except BaseException as e:  # noqa: B036 (reported by the test)
            self.error = e


class Poster(Catching):
    """A worker thread that posts N_POSTS numbers on @port in a plain loop.
    Every 100 posts it polls its inbox with receive(), as a worker checking for
    commands does (that is how its port reaches the peer's close marker and
    turns closed). At the half it waits for @halfway, so that the second half
    is posted after the other end closed, whatever the scheduling."""

    def __init__(self, port, halfway):
        super().__init__('poster')
        self.port = port
        self.halfway = halfway
        self.posted = 0
        self.waited = None

    def body(self):
        port = self.port
        for i in range(N_POSTS):
            if i == N_POSTS // 2:
                self.waited = self.halfway.wait(TIMEOUT)
            if i % 100 == 0:
                port.receive()
            port.post_message(GLib.Variant('u', i), None)
            self.posted += 1


class CheckingPoster(Catching):
    """Posts N_POSTS numbers with post(), checking is_peer_closed() before each
    (without stopping); waits for @halfway at the half."""

    def __init__(self, port, halfway):
        super().__init__('checking-poster')
        self.port = port
        self.halfway = halfway
        self.posted = 0
        self.waited = None
        self.peer_closed_from = None

    def body(self):
        port = self.port
        for i in range(N_POSTS):
            if i == N_POSTS // 2:
                self.waited = self.halfway.wait(TIMEOUT)
            if self.peer_closed_from is None and port.is_peer_closed():
                self.peer_closed_from = i
            port.post(GLib.Variant('u', i))
            self.posted += 1


def receive_values(port, count):
    """Takes @count messages of @port with receive(), polling (bounded), and
    returns their payloads."""
    values = []
    deadline = time.monotonic() + TIMEOUT
    while len(values) < count:
        message = port.receive()
        if message is not None:
            values.append(message.get_data().unpack())
        elif time.monotonic() > deadline:
            raise AssertionError('timed out waiting for the poster')
        else:
            time.sleep(0.0001)
    return values


class TestPeerClosedUnderLoad(ContextTestCase):
    def test_worker_posting_while_the_ui_closes_never_raises(self):
        channel = Mp.MessageChannel.new()
        worker_port, ui_port = channel.get_port1(), channel.get_port2()
        channel = None
        halfway = threading.Event()
        poster = Poster(worker_port, halfway)
        poster.start()

        # The UI takes some messages, then its user cancels: it closes its end
        # while the worker is posting.
        received = receive_values(ui_port, 50)
        ui_port.close()
        halfway.set()
        poster.join(TIMEOUT * 3)

        self.assertFalse(poster.is_alive(), 'the poster did not finish')
        self.assertIsNone(poster.error, 'posting raised: %r' % poster.error)
        self.assertTrue(poster.waited)
        self.assertEqual(poster.posted, N_POSTS)
        # What the UI got is a prefix of what was posted, in order; the rest,
        # posted - received, was dropped (queued at the UI port when it closed,
        # or posted after): at least the second half, posted after the close.
        self.assertLessEqual(len(received), poster.posted)
        self.assertEqual(received, list(range(len(received))))
        self.assertGreaterEqual(poster.posted - len(received), N_POSTS // 2)
        self.assertIsNone(ui_port.receive(), 'nothing more reaches the closed UI port')
        self.assertTrue(worker_port.is_closed(), 'the poster reached the close marker')
        # Still no error once the survivor is closed; the UI port's own is misuse.
        self.assertTrue(worker_port.post_message(GLib.Variant('u', N_POSTS), []))
        self.assertIsNone(worker_port.receive())
        with self.assertRaises(GLib.Error) as caught:
            ui_port.post_message(GLib.Variant('u', 0), [])
        self.assertGError(caught.exception, Mp.error_quark(), Mp.Error.INVALID_STATE)
        self.assertIsNone(ui_port.receive())

    def test_worker_with_a_started_port_posting_while_the_ui_closes(self):
        # The worker's port is started on a worker context, which turns it
        # closed and emits "close" when it dispatches the close marker; another
        # thread keeps posting on it, with post(), before and after that.
        worker = Worker('started-poster').start()
        try:
            channel = Mp.MessageChannel.new()
            worker_port, ui_port = channel.get_port1(), channel.get_port2()
            closes = []

            def start():
                worker_port.connect('close', lambda p: closes.append(threading.get_ident()))
                worker_port.start()

            worker.call(start)
            halfway = threading.Event()
            poster = CheckingPoster(worker_port, halfway)
            poster.start()
            first = ui_port.receive_timeout(int(TIMEOUT * 1e6), None)
            self.assertIsNotNone(first, 'timed out waiting for the poster')
            self.assertEqual(first.get_data().unpack(), 0)
            ui_port.close()
            deadline = time.monotonic() + TIMEOUT
            while not closes and time.monotonic() < deadline:
                time.sleep(0.0005)
            self.assertEqual(closes, [worker.ident], 'the worker port emitted "close"')
            self.assertTrue(worker_port.is_closed())
            halfway.set()
            poster.join(TIMEOUT * 3)

            self.assertFalse(poster.is_alive(), 'the poster did not finish')
            self.assertIsNone(poster.error, 'posting raised: %r' % poster.error)
            self.assertTrue(poster.waited)
            self.assertEqual(poster.posted, N_POSTS)
            self.assertIsNotNone(poster.peer_closed_from)
            self.assertLessEqual(poster.peer_closed_from, N_POSTS // 2)
            self.assertTrue(worker_port.is_peer_closed())
        finally:
            worker.stop()

if __name__ == '__main__':
    unittest.main(verbosity=2)
