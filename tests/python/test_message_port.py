# test_message_port.py: MessageChannel, MessagePort and Message from PyGObject
#
# SPDX-License-Identifier: LGPL-2.1-or-later

import gc
import unittest
import weakref

from mptest import GLib, Mp, ContextTestCase


class Recorder:
    """Records the signals of a port, which it starts on the current
    thread-default context."""

    def __init__(self, port, start=True):
        self.port = port
        self.messages = []
        self.closes = 0
        self.notifies = 0
        port.connect('message', self._on_message)
        port.connect('close', self._on_close)
        port.connect('notify::closed', self._on_notify)
        if start:
            port.start()

    def _on_message(self, port, message):
        self.messages.append(message)

    def _on_close(self, port):
        self.closes += 1

    def _on_notify(self, port, pspec):
        self.notifies += 1

    @property
    def data(self):
        return [None if m.get_data() is None else m.get_data().unpack() for m in self.messages]


class TestBasics(ContextTestCase):
    def test_constructors_and_properties(self):
        channel = Mp.MessageChannel.new()
        self.assertIsInstance(channel, Mp.MessageChannel)
        port1, port2 = channel.get_port1(), channel.get_port2()
        self.assertIsInstance(port1, Mp.MessagePort)
        self.assertIs(channel.props.port1, port1)
        self.assertIs(channel.props.port2, port2)
        self.assertIsNone(port1.get_context())
        self.assertFalse(port1.is_closed())
        self.assertFalse(port1.props.closed)
        self.assertEqual(port1.get_priority(), GLib.PRIORITY_DEFAULT)
        port1.props.priority = GLib.PRIORITY_HIGH
        self.assertEqual(port1.get_priority(), GLib.PRIORITY_HIGH)
        port1.start()
        self.assertEqual(port1.get_context(), self.context)
        port1.close()
        port2.close()

    def test_round_trip(self):
        channel = Mp.MessageChannel.new()
        rec = Recorder(channel.get_port2())
        port1 = channel.get_port1()
        payload = GLib.Variant('a{sv}', {
            'name': GLib.Variant('s', 'ping'),
            'n': GLib.Variant('i', 42),
            'list': GLib.Variant('as', ['a', 'b']),
        })
        self.assertTrue(port1.post_message(payload, []))
        port1.post_message(GLib.Variant('(sd)', ('second', 2.5)), None)
        port1.post_message(None, [])
        self.assertEqual(rec.messages, [], 'nothing inside post_message()')

        self.iterate_until(lambda: len(rec.messages) == 3)
        first = rec.messages[0]
        self.assertIsInstance(first, Mp.Message)
        self.assertIsInstance(first.get_data(), GLib.Variant)
        self.assertEqual(first.get_data().get_type_string(), 'a{sv}')
        self.assertEqual(first.get_data().unpack(), {'name': 'ping', 'n': 42, 'list': ['a', 'b']})
        self.assertEqual(rec.data[1:], [('second', 2.5), None])
        for message in rec.messages:
            self.assertEqual(message.get_ports(), [])
        port1.close()
        self.iterate_until(lambda: rec.closes == 1)

    def test_message_kept_past_its_handler(self):
        channel = Mp.MessageChannel.new()
        rec = Recorder(channel.get_port2())
        for i in range(50):
            channel.get_port1().post_message(GLib.Variant('s', 'message %d' % i), [])
        self.iterate_until(lambda: len(rec.messages) == 50)
        gc.collect()
        for i in range(200):
            channel.get_port1().post_message(GLib.Variant('s', 'x%d' % i * 8), [])
        self.iterate_until(lambda: len(rec.messages) == 250)
        self.assertEqual(rec.data[:50], ['message %d' % i for i in range(50)])
        channel.get_port1().close()

    def test_receive_is_synchronous(self):
        channel = Mp.MessageChannel.new()
        port1, port2 = channel.get_port1(), channel.get_port2()
        self.assertIsNone(port2.receive())
        port1.post_message(GLib.Variant('u', 1), [])
        port1.post_message(GLib.Variant('u', 2), [])
        self.assertEqual(port2.receive().get_data().unpack(), 1)
        self.assertEqual(port2.receive().get_data().unpack(), 2)
        self.assertIsNone(port2.receive())
        port1.close()
        self.assertIsNone(port2.receive())
        self.assertTrue(port2.is_closed())


class TestTransfer(ContextTestCase):
    def test_get_ports_is_a_list_of_new_ports_in_order(self):
        channel = Mp.MessageChannel.new()
        a, b = Mp.MessageChannel.new(), Mp.MessageChannel.new()
        rec = Recorder(channel.get_port2())

        a.get_port2().post_message(GLib.Variant('s', 'queued before the move'), [])
        channel.get_port1().post_message(GLib.Variant('s', 'two ports'),
                                         [a.get_port1(), b.get_port1()])
        self.assertTrue(a.get_port1().is_closed())
        self.assertTrue(b.get_port1().is_closed())
        self.assertIsNone(a.get_port1().get_context())

        self.iterate_until(lambda: len(rec.messages) == 1)
        ports = rec.messages[0].get_ports()
        self.assertIsInstance(ports, list)
        self.assertEqual(len(ports), 2)
        for port in ports:
            self.assertIsInstance(port, Mp.MessagePort)
            self.assertIsNone(port.get_context())
        self.assertIsNot(ports[0], a.get_port1())

        self.assertEqual(ports[0].receive().get_data().unpack(), 'queued before the move')
        ports[0].post_message(GLib.Variant('s', 'to a'), [])
        ports[1].post_message(GLib.Variant('s', 'to b'), [])
        self.assertEqual(a.get_port2().receive().get_data().unpack(), 'to a')
        self.assertEqual(b.get_port2().receive().get_data().unpack(), 'to b')

        received = Recorder(ports[1])
        b.get_port2().post_message(GLib.Variant('i', 7), [])
        self.iterate_until(lambda: len(received.messages) == 1)
        self.assertEqual(received.data, [7])
        for port in [channel.get_port1()] + ports:
            port.close()
        self.iterate_until(lambda: rec.closes == 1 and received.closes == 1)


class TestClose(ContextTestCase):
    def test_close_events_on_both_sides_after_the_data(self):
        channel = Mp.MessageChannel.new()
        rec1 = Recorder(channel.get_port1())
        rec2 = Recorder(channel.get_port2())

        channel.get_port1().post_message(GLib.Variant('s', 'last words'), [])
        channel.get_port1().close()
        self.assertTrue(channel.get_port1().is_closed())
        self.assertEqual(rec1.closes, 0, 'never inside close()')
        channel.get_port1().close()

        self.iterate_until(lambda: rec1.closes == 1 and rec2.closes == 1)
        self.assertEqual(rec2.data, ['last words'])
        self.assertTrue(channel.get_port2().is_closed())
        self.assertEqual((rec1.notifies, rec2.notifies), (1, 1))
        self.spin()
        self.assertEqual((rec1.closes, rec2.closes), (1, 1))

    def test_post_to_closed_peer_is_dropped(self):
        channel = Mp.MessageChannel.new()
        channel.get_port1().close()
        self.assertTrue(channel.get_port2().post_message(GLib.Variant('s', 'dropped'), []))


class TestErrors(ContextTestCase):
    def test_data_clone(self):
        channel = Mp.MessageChannel.new()
        port1, port2 = channel.get_port1(), channel.get_port2()
        spare = Mp.MessageChannel.new()

        error = self.assertRaisesGError(Mp.error_quark(), Mp.Error.DATA_CLONE,
                                        port1.post_message, None, [port2])
        self.assertEqual(error.domain, 'mp-error-quark')
        self.assertEqual(error.code, Mp.Error.DATA_CLONE)
        self.assertEqual(error.code, 0)
        self.assertTrue(error.message)

        self.assertRaisesGError(Mp.error_quark(), Mp.Error.DATA_CLONE,
                                port1.post_message, None, [port1])
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.DATA_CLONE,
                                port1.post_message, None, [spare.get_port1(), spare.get_port1()])
        closed = Mp.MessageChannel.new()
        closed.get_port1().close()
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.DATA_CLONE,
                                port1.post_message, GLib.Variant('s', 'x'),
                                [spare.get_port1(), closed.get_port1()])
        # Not a port at all: PyGObject refuses it before the call.
        with self.assertRaises(TypeError):
            port1.post_message(None, [channel])

        self.assertFalse(spare.get_port1().is_closed())
        self.assertIsNone(port2.receive())
        spare.get_port1().post_message(GLib.Variant('s', 'still here'), [])
        self.assertEqual(spare.get_port2().receive().get_data().unpack(), 'still here')

    def test_invalid_state(self):
        channel = Mp.MessageChannel.new()
        channel.get_port1().close()
        error = self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                        channel.get_port1().post_message,
                                        GLib.Variant('s', 'x'), [])
        self.assertEqual(error.code, 1)

        carrier, moved = Mp.MessageChannel.new(), Mp.MessageChannel.new()
        carrier.get_port1().post_message(None, [moved.get_port1()])
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                moved.get_port1().post_message, None, [])
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                moved.get_port1().post_message, None, [moved.get_port2()])

    def test_error_enum(self):
        self.assertEqual(int(Mp.Error.DATA_CLONE), 0)
        self.assertEqual(int(Mp.Error.INVALID_STATE), 1)
        self.assertEqual(GLib.quark_to_string(Mp.error_quark()), 'mp-error-quark')
        self.assertEqual(Mp.Error.quark(), Mp.error_quark())


class TestLifetime(ContextTestCase):
    def test_started_port_with_collected_wrapper_keeps_working(self):
        received = []

        def start_and_forget():
            channel = Mp.MessageChannel.new()
            port = channel.get_port2()
            port.connect('message', lambda p, m: received.append(m.get_data().unpack()))
            port.connect('close', lambda p: received.append('close'))
            port.start()
            return channel.get_port1(), weakref.ref(port)

        peer, wrapper = start_and_forget()
        gc.collect()
        self.assertIsNone(wrapper(), 'the Python wrapper was collected')
        peer.post_message(GLib.Variant('s', 'still delivered'), [])
        self.iterate_until(lambda: len(received) == 1)
        gc.collect()
        peer.post_message(GLib.Variant('s', 'again'), [])
        peer.close()
        self.iterate_until(lambda: len(received) == 3)
        self.assertEqual(received, ['still delivered', 'again', 'close'])

    def test_received_port_started_and_forgotten_keeps_working(self):
        carrier, inner = Mp.MessageChannel.new(), Mp.MessageChannel.new()
        received = []
        wrappers = []

        def on_carrier(port, message):
            (new_port,) = message.get_ports()
            new_port.connect('message', lambda p, m: received.append(m.get_data().unpack()))
            new_port.start()
            wrappers.append(weakref.ref(new_port))

        carrier.get_port2().connect('message', on_carrier)
        carrier.get_port2().start()
        carrier.get_port1().post_message(None, [inner.get_port2()])
        self.iterate_until(lambda: wrappers)
        gc.collect()
        self.assertIsNone(wrappers[0](), 'the Python wrapper was collected')
        inner.get_port1().post_message(GLib.Variant('i', 1), [])
        inner.get_port1().post_message(GLib.Variant('i', 2), [])
        self.iterate_until(lambda: len(received) == 2)
        self.assertEqual(received, [1, 2])
        inner.get_port1().close()
        carrier.get_port1().close()


if __name__ == '__main__':
    unittest.main(verbosity=2)
