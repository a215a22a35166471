# test_threads.py: ports between real Python threads, each with its own
# GLib.MainContext; handlers run on the thread that owns the port.
#
# SPDX-License-Identifier: LGPL-2.1-or-later

import gc
import threading
import unittest

from mptest import GLib, Mp, ContextTestCase, Worker

N_ROUNDS = 500
N_SENDERS = 4
N_PER_SENDER = 2000


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


if __name__ == '__main__':
    unittest.main(verbosity=2)
