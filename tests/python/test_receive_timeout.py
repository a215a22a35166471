# test_receive_timeout.py: Mp.MessagePort.receive_timeout() from PyGObject, the
# blocking receive of a thread that runs no main loop
#
# SPDX-License-Identifier: LGPL-2.1-or-later

import threading
import time
import unittest

from mptest import GLib, Gio, Mp, ContextTestCase, TIMEOUT

# receive_timeout() takes microseconds.
USEC = 1000000
WAIT = int(TIMEOUT * USEC)
# How long a receive that must time out waits, in microseconds.
SHORT = 20000


def later(seconds, fn, *args):
    """Runs fn(*args) on a new thread after @seconds; returns the thread."""
    def run():
        time.sleep(seconds)
        fn(*args)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class TestReceiveTimeout(ContextTestCase):
    def channel(self):
        channel = Mp.MessageChannel.new()
        return channel.get_port1(), channel.get_port2()

    def test_timeout_returns_none_without_error(self):
        port1, port2 = self.channel()
        start = time.monotonic()
        self.assertIsNone(port2.receive_timeout(SHORT, None))
        self.assertGreaterEqual(time.monotonic() - start, SHORT / USEC * 0.9)
        # 0 polls: no wait.
        self.assertIsNone(port2.receive_timeout(0, None))
        self.assertIsNone(port2.receive_timeout(0, Gio.Cancellable()))
        self.assertFalse(port2.is_closed())
        port1.close()

    def test_queued_message_and_polling(self):
        port1, port2 = self.channel()
        port1.post(GLib.Variant('i', 1))
        port1.post(GLib.Variant('i', 2))
        self.assertEqual(port2.receive_timeout(0, None).get_data().unpack(), 1)
        message = port2.receive_timeout(WAIT, None)
        self.assertIsInstance(message, Mp.Message)
        self.assertEqual(message.get_data().unpack(), 2)
        self.assertEqual(message.get_ports(), [])
        self.assertIsNone(port2.receive_timeout(0, None))
        port1.close()

    def test_message_posted_from_another_thread(self):
        port1, port2 = self.channel()
        poster = later(0.05, port1.post, GLib.Variant('s', 'from a thread'))
        start = time.monotonic()
        message = port2.receive_timeout(WAIT, None)
        self.assertIsNotNone(message, 'timed out')
        self.assertLess(time.monotonic() - start, TIMEOUT)
        self.assertEqual(message.get_data().unpack(), 'from a thread')
        poster.join(TIMEOUT)

        # Unlimited (-1): still woken by the post.
        poster = later(0.02, port1.post, GLib.Variant('i', 7))
        self.assertEqual(port2.receive_timeout(-1, None).get_data().unpack(), 7)
        poster.join(TIMEOUT)
        port1.close()

    def test_a_receiving_thread_gets_everything_in_order(self):
        port1, port2 = self.channel()
        got = []
        errors = []

        def receiver():
            try:
                while True:
                    message = port2.receive_timeout(WAIT, None)
                    if message is None:
                        errors.append('timed out')
                        return
                    got.append(message.get_data().unpack())
            except GLib.Error as e:
                errors.append(e)

        thread = threading.Thread(target=receiver, daemon=True)
        thread.start()
        for i in range(1000):
            port1.post(GLib.Variant('u', i))
        port1.close()
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive())
        self.assertEqual(got, list(range(1000)))
        self.assertEqual(len(errors), 1)
        self.assertGError(errors[0], Mp.error_quark(), Mp.Error.CLOSED)

    def test_closed_at_the_end_of_the_stream(self):
        port1, port2 = self.channel()
        port1.post(GLib.Variant('i', 9))
        port1.close()
        self.assertEqual(port2.receive_timeout(WAIT, None).get_data().unpack(), 9)
        error = self.assertRaisesGError(Mp.error_quark(), Mp.Error.CLOSED,
                                        port2.receive_timeout, WAIT, None)
        self.assertEqual(error.message, 'The other port of the channel was closed')
        self.assertTrue(port2.is_closed())
        # Again once closed, and with 0.
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.CLOSED,
                                port2.receive_timeout, 0, None)

        # The peer closes while the receive waits.
        port1, port2 = self.channel()
        closer = later(0.03, port1.close)
        start = time.monotonic()
        error = self.assertRaisesGError(Mp.error_quark(), Mp.Error.CLOSED,
                                        port2.receive_timeout, WAIT, None)
        self.assertLess(time.monotonic() - start, TIMEOUT)
        self.assertEqual(error.message, 'The other port of the channel was closed')
        closer.join(TIMEOUT)

    def test_closed_when_the_port_is_closed_while_waiting(self):
        port1, port2 = self.channel()
        # (Closed before the call, it would be INVALID_STATE: give it time to wait.)
        closer = later(0.1, port2.close)
        error = self.assertRaisesGError(Mp.error_quark(), Mp.Error.CLOSED,
                                        port2.receive_timeout, WAIT, None)
        self.assertEqual(error.message, 'The port was closed')
        closer.join(TIMEOUT)
        # Made on the port its own code closed: misuse.
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                port2.receive_timeout, WAIT, None)
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                Mp.MessagePort().receive_timeout, WAIT, None)

    def test_cancelled(self):
        port1, port2 = self.channel()
        early = Gio.Cancellable()
        early.cancel()
        port1.post(GLib.Variant('i', 1))
        error = self.assertRaisesGError(Gio.io_error_quark(), Gio.IOErrorEnum.CANCELLED,
                                        port2.receive_timeout, WAIT, early)
        self.assertEqual(error.message, 'The receive was cancelled')
        # A cancelled receive takes no message.
        self.assertEqual(port2.receive().get_data().unpack(), 1)

        cancellable = Gio.Cancellable()
        canceller = later(0.03, cancellable.cancel)
        start = time.monotonic()
        error = self.assertRaisesGError(Gio.io_error_quark(), Gio.IOErrorEnum.CANCELLED,
                                        port2.receive_timeout, WAIT, cancellable)
        self.assertLess(time.monotonic() - start, TIMEOUT)
        self.assertEqual(error.message, 'The receive was cancelled')
        canceller.join(TIMEOUT)
        port1.post(GLib.Variant('i', 2))
        self.assertEqual(port2.receive_timeout(WAIT, Gio.Cancellable()).get_data().unpack(), 2)
        port1.close()

    def test_shares_the_queue_with_receive_async(self):
        port1, port2 = self.channel()
        got = []

        def on_received(port, result):
            got.append(port.receive_finish(result).get_data().unpack())

        port2.receive_async(None, on_received)     # the oldest receive: takes 1
        port1.post(GLib.Variant('i', 1))
        port1.post(GLib.Variant('i', 2))
        self.assertEqual(port2.receive_timeout(WAIT, None).get_data().unpack(), 2)
        self.iterate_until(lambda: got)
        self.assertEqual(got, [1])
        port1.close()


if __name__ == '__main__':
    unittest.main(verbosity=2)
