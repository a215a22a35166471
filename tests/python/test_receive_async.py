# test_receive_async.py: Mp.MessagePort.receive_async() from PyGObject
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The Python way: a callback, and a GLib.MainLoop (or context iterations).

import gc
import threading
import unittest

from mptest import GLib, Gio, Mp, ContextTestCase, Worker, TIMEOUT


class Receive:
    """One receive_async() call and what its callback saw."""

    def __init__(self, port, cancellable=None, log=None, name=None):
        self.port = port
        self.log = log
        self.name = name
        self.done = False
        self.message = None
        self.error = None
        self.thread = None
        self.in_call = True
        port.receive_async(cancellable, self._on_received, 'user data')
        self.in_call = False

    def _on_received(self, port, result, user_data):
        assert not self.in_call, 'called back inside receive_async()'
        assert port is self.port
        assert user_data == 'user data'
        assert not self.done
        self.thread = threading.get_ident()
        try:
            self.message = port.receive_finish(result)
        except GLib.Error as e:
            self.error = e
        if self.log is not None:
            self.log.append(self.name)
        self.done = True

    @property
    def value(self):
        assert self.done and self.error is None, self.error
        return self.message.get_data().unpack()


class TestReceiveAsync(ContextTestCase):
    def channel(self, started):
        channel = Mp.MessageChannel.new()
        self.signalled = []
        channel.get_port2().connect('message',
                                    lambda p, m: self.signalled.append(m.get_data().unpack()))
        if started:
            channel.get_port2().start()
        return channel.get_port1(), channel.get_port2()

    def test_with_a_main_loop(self):
        # The README's shape: a callback, and a GLib.MainLoop that it quits.
        loop = GLib.MainLoop.new(self.context, False)
        port1, port2 = self.channel(False)
        got = []

        def on_received(port, result):
            got.append(port.receive_finish(result).get_data().unpack())
            if len(got) < 3:
                port.receive_async(None, on_received)
            else:
                loop.quit()

        port2.receive_async(None, on_received)
        for word in ('one', 'two', 'three'):
            port1.post_message(GLib.Variant('s', word), [])
        GLib.timeout_add(int(TIMEOUT * 1000), loop.quit)
        loop.run()
        self.assertEqual(got, ['one', 'two', 'three'])

    def test_queued_and_next_post(self):
        for started in (False, True):
            with self.subTest(started=started):
                port1, port2 = self.channel(started)
                port1.post_message(GLib.Variant('i', 1), [])
                first = Receive(port2)
                self.assertFalse(first.done)
                self.iterate_until(lambda: first.done)
                self.assertEqual(first.value, 1)
                self.assertEqual(first.message.get_ports(), [])
                self.assertEqual(first.thread, threading.get_ident())

                second = Receive(port2)
                self.spin()
                self.assertFalse(second.done)
                threading.Thread(target=port1.post_message,
                                 args=(GLib.Variant('i', 2), [])).start()
                self.iterate_until(lambda: second.done)
                self.assertEqual(second.value, 2)
                self.spin()
                self.assertEqual(self.signalled, [])
                port1.close()

    def test_fifo_with_receive_and_signal(self):
        port1, port2 = self.channel(False)
        log = []
        for i in (1, 2, 3):
            port1.post_message(GLib.Variant('i', i), [])
        a = Receive(port2, log=log, name='a')      # takes 1
        self.assertEqual(port2.receive().get_data().unpack(), 2)
        port2.start()                               # 3 goes to the signal
        self.iterate_until(lambda: a.done and len(self.signalled) == 1)
        self.assertEqual(a.value, 1)
        self.assertEqual(self.signalled, [3])

        b = Receive(port2, log=log, name='b')
        c = Receive(port2, log=log, name='c')
        self.assertIsNone(port2.receive())
        for i in (4, 5, 6, 7):
            port1.post_message(GLib.Variant('i', i), [])
        self.iterate_until(lambda: b.done and c.done and len(self.signalled) == 3)
        self.assertEqual((b.value, c.value), (4, 5))
        self.assertEqual(self.signalled, [3, 6, 7])
        self.assertEqual(log, ['a', 'b', 'c'])
        port1.close()

    def test_closed_at_the_end_of_the_stream(self):
        for started in (False, True):
            with self.subTest(started=started):
                # The peer closes after posting: the data, then CLOSED.
                port1, port2 = self.channel(started)
                port1.post_message(GLib.Variant('i', 9), [])
                port1.close()
                data = Receive(port2)
                end = Receive(port2)
                self.iterate_until(lambda: data.done and end.done)
                self.assertEqual(data.value, 9)
                self.assertGError(end.error, Mp.error_quark(), Mp.Error.CLOSED)
                self.assertEqual(end.error.message, 'The other port of the channel was closed')
                self.assertTrue(port2.is_closed())
                # Started after the end was reached: CLOSED again, not misuse.
                after = Receive(port2)
                self.iterate_until(lambda: after.done)
                self.assertGError(after.error, Mp.error_quark(), Mp.Error.CLOSED)
                self.assertEqual(after.error.message, 'The other port of the channel was closed')

                # The peer closes while a receive waits, from another thread.
                port1, port2 = self.channel(started)
                waiting = Receive(port2)
                self.spin()
                self.assertFalse(waiting.done)
                threading.Thread(target=port1.close).start()
                self.iterate_until(lambda: waiting.done)
                self.assertGError(waiting.error, Mp.error_quark(), Mp.Error.CLOSED)
                self.assertEqual(waiting.error.message, 'The other port of the channel was closed')
                self.assertEqual(self.signalled, [])

    def test_closed_when_the_port_is_closed_while_waiting(self):
        for started in (False, True):
            with self.subTest(started=started):
                port1, port2 = self.channel(started)
                pending = Receive(port2)
                port2.close()
                self.assertFalse(pending.done, 'not called back inside close()')
                self.iterate_until(lambda: pending.done)
                self.assertGError(pending.error, Mp.error_quark(), Mp.Error.CLOSED)
                self.assertEqual(pending.error.message, 'The port was closed')
                # A receive made after the port's own close() is misuse.
                after = Receive(port2)
                self.iterate_until(lambda: after.done)
                self.assertGError(after.error, Mp.error_quark(), Mp.Error.INVALID_STATE)
                self.assertTrue(port1.is_peer_closed())

    def test_invalid_state(self):
        for started in (False, True):
            with self.subTest(started=started):
                # Made on a port its own code closed.
                port1, port2 = self.channel(started)
                port2.close()
                closed = Receive(port2)
                self.iterate_until(lambda: closed.done)
                self.assertGError(closed.error, Mp.error_quark(), Mp.Error.INVALID_STATE)

                # Transferred away while waiting.
                port1, port2 = self.channel(started)
                carrier = Mp.MessageChannel.new()
                waiting = Receive(port2)
                carrier.get_port1().post_message(None, [port2])
                self.iterate_until(lambda: waiting.done)
                self.assertGError(waiting.error, Mp.error_quark(), Mp.Error.INVALID_STATE)
                after = Receive(port2)
                self.iterate_until(lambda: after.done)
                self.assertGError(after.error, Mp.error_quark(), Mp.Error.INVALID_STATE)
                (heir,) = carrier.get_port2().receive().get_ports()
                port1.post_message(GLib.Variant('i', 5), [])
                self.assertEqual(heir.receive().get_data().unpack(), 5)
                port1.close()

    def test_port_made_on_its_own(self):
        port = Mp.MessagePort()
        r = Receive(port)
        self.assertFalse(r.done)
        self.iterate_until(lambda: r.done)
        self.assertGError(r.error, Mp.error_quark(), Mp.Error.INVALID_STATE)
        self.assertIsNone(r.message)

    def test_callbacks_run_in_the_order_messages_were_taken(self):
        for started in (False, True):
            with self.subTest(started=started):
                port1, port2 = self.channel(started)
                log = []
                cancellable = Gio.Cancellable()
                first = Receive(port2, cancellable, log=log, name='first')
                second = Receive(port2, log=log, name='second')
                port1.post_message(GLib.Variant('i', 0), [])
                port1.post_message(GLib.Variant('i', 1), [])
                # Too late: the first receive was served when 0 was posted.
                cancellable.cancel()
                self.assertEqual(log, [], 'nothing runs before the context is iterated')
                self.iterate_until(lambda: first.done and second.done)
                self.assertEqual(log, ['first', 'second'])
                self.assertIsNone(first.error, 'the receive served before its cancel keeps it')
                self.assertEqual(first.value, 0)
                self.assertEqual(second.value, 1)
                self.spin()
                self.assertEqual(self.signalled, [])
                port1.close()

    def test_callbacks_in_order_across_many_receives(self):
        port1, port2 = self.channel(True)
        log = []
        cancellables = [Gio.Cancellable() for _ in range(20)]
        receives = [Receive(port2, c, log=log, name=i) for i, c in enumerate(cancellables)]
        for i in range(20):
            port1.post_message(GLib.Variant('i', i), [])
        for c in reversed(cancellables):
            c.cancel()
        self.iterate_until(lambda: all(r.done for r in receives))
        self.assertEqual(log, list(range(20)))
        self.assertEqual([r.value for r in receives], list(range(20)))
        self.spin()
        self.assertEqual(self.signalled, [])
        port1.close()

    def test_cancellation_takes_no_message(self):
        for started in (False, True):
            with self.subTest(started=started):
                port1, port2 = self.channel(started)
                early = Gio.Cancellable()
                early.cancel()
                port1.post_message(GLib.Variant('i', 1), [])
                r = Receive(port2, early)
                self.iterate_until(lambda: r.done)
                self.assertGError(r.error, Gio.io_error_quark(), Gio.IOErrorEnum.CANCELLED)
                self.assertEqual(r.error.message, 'The receive was cancelled')
                if started:
                    self.iterate_until(lambda: self.signalled == [1])
                else:
                    self.assertEqual(port2.receive().get_data().unpack(), 1)

                cancellable = Gio.Cancellable()
                cancelled = Receive(port2, cancellable)
                following = Receive(port2)
                # Cancelled from another thread.
                threading.Thread(target=cancellable.cancel).start()
                self.iterate_until(lambda: cancelled.done)
                self.assertGError(cancelled.error, Gio.io_error_quark(), Gio.IOErrorEnum.CANCELLED)
                self.assertEqual(cancelled.error.message, 'The receive was cancelled')
                self.assertEqual(cancelled.thread, threading.get_ident())
                port1.post_message(GLib.Variant('i', 2), [])
                self.iterate_until(lambda: following.done)
                self.assertEqual(following.value, 2)
                self.spin()
                self.assertEqual(self.signalled, [1] if started else [])
                port1.close()

    def test_completes_on_the_calling_threads_context(self):
        port1, port2 = self.channel(True)      # started on this thread
        worker = Worker('receiver').start()
        try:
            r = worker.call(Receive, port2)
            port1.post_message(GLib.Variant('s', 'to the worker'), [])
            # Running the port's own context does not complete it.
            self.spin()
            deadline = GLib.get_monotonic_time() + int(TIMEOUT * 1e6)
            while not r.done and GLib.get_monotonic_time() < deadline:
                self.spin(0.001)
            self.assertTrue(r.done)
            self.assertEqual(r.value, 'to the worker')
            self.assertEqual(r.thread, worker.ident)
            self.assertEqual(self.signalled, [])
        finally:
            worker.stop()
        port1.close()

    def test_pending_receive_of_a_forgotten_port(self):
        got = []

        def receive_and_forget():
            channel = Mp.MessageChannel.new()

            def on_received(port, result):
                got.append(port.receive_finish(result).get_data().unpack())

            channel.get_port2().receive_async(None, on_received)
            return channel.get_port1()

        peer = receive_and_forget()
        gc.collect()
        peer.post_message(GLib.Variant('s', 'kept alive by the receive'), [])
        self.iterate_until(lambda: got)
        self.assertEqual(got, ['kept alive by the receive'])
        # The port, unstarted and released once its receive completed, closed.
        self.iterate_until(lambda: peer.receive() is None and peer.is_closed())


if __name__ == '__main__':
    unittest.main(verbosity=2)
