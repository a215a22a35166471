# test_message_port.py: MessageChannel, MessagePort and Message from PyGObject
#
# SPDX-License-Identifier: LGPL-2.1-or-later

import gc
import threading
import unittest
import weakref

from mptest import GLib, Mp, ContextTestCase, TIMEOUT


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


class TestConstruction(ContextTestCase):
    """Objects made by GObject construction (the Python constructors)."""

    def test_message_port_made_on_its_own_is_inert_and_closed(self):
        port = Mp.MessagePort()
        self.assertIsInstance(port, Mp.MessagePort)
        rec = Recorder(port, start=False)
        self.assertTrue(port.is_closed())
        self.assertTrue(port.props.closed)
        self.assertTrue(port.is_peer_closed())
        self.assertIsNone(port.receive())
        self.assertIsNone(port.get_context())
        self.assertIsNone(port.dup_context())

        error = self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                        port.post_message, GLib.Variant('s', 'x'), [])
        self.assertTrue(error.message)
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                port.post_message, None, None)
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                port.post, GLib.Variant('s', 'x'))

        # start() and close() do nothing.
        port.start()
        self.assertIsNone(port.get_context())
        self.assertIsNone(port.dup_context())
        port.close()
        port.close()
        self.assertTrue(port.is_closed())
        self.assertIsNone(port.receive())
        self.spin()
        self.assertEqual((rec.messages, rec.closes, rec.notifies), ([], 0, 0))

        # It cannot be transferred either.
        channel = Mp.MessageChannel.new()
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.DATA_CLONE,
                                channel.get_port1().post_message, None, [port])
        self.assertIsNone(channel.get_port2().receive())
        channel.get_port1().close()

    def test_message_port_made_on_its_own_is_finalized(self):
        finalized = []

        def make():
            port = Mp.MessagePort()
            port.start()
            port.weak_ref(lambda: finalized.append(True))
            return weakref.ref(port)

        wrapper = make()
        gc.collect()
        self.assertIsNone(wrapper())
        self.assertEqual(finalized, [True], 'the GObject was finalized')
        for _ in range(100):
            Mp.MessagePort().close()
        gc.collect()

    def test_message_channel_by_gobject_construction(self):
        channel = Mp.MessageChannel()
        port1, port2 = channel.get_port1(), channel.get_port2()
        self.assertIsInstance(port1, Mp.MessagePort)
        self.assertIsInstance(port2, Mp.MessagePort)
        self.assertIsNot(port1, port2)
        self.assertIs(channel.props.port1, port1)
        self.assertFalse(port1.is_closed())
        self.assertFalse(port2.is_peer_closed())

        # Entangled: each port's posts reach the other.
        self.assertTrue(port1.post(GLib.Variant('s', 'to port2')))
        self.assertTrue(port2.post_message(GLib.Variant('s', 'to port1'), []))
        self.assertEqual(port2.receive().get_data().unpack(), 'to port2')
        self.assertEqual(port1.receive().get_data().unpack(), 'to port1')

        rec = Recorder(port2)
        port1.post(GLib.Variant('i', 7))
        port1.close()
        self.iterate_until(lambda: rec.closes == 1)
        self.assertEqual(rec.data, [7])
        self.assertTrue(port2.is_closed())


class TestNewApi(ContextTestCase):
    def test_post_is_post_message_without_transfer(self):
        channel = Mp.MessageChannel.new()
        rec = Recorder(channel.get_port2())
        self.assertTrue(channel.get_port1().post(GLib.Variant('(si)', ('one', 1))))
        self.assertTrue(channel.get_port1().post(None))
        self.assertEqual(rec.messages, [], 'nothing inside post()')
        self.iterate_until(lambda: len(rec.messages) == 2)
        self.assertEqual(rec.data, [('one', 1), None])
        self.assertEqual(rec.messages[0].get_ports(), [])
        channel.get_port1().close()
        self.iterate_until(lambda: rec.closes == 1)

    def test_dup_context(self):
        channel = Mp.MessageChannel.new()
        port = channel.get_port2()
        self.assertIsNone(port.dup_context(), 'not started')
        port.start()
        context = port.dup_context()
        self.assertIsInstance(context, GLib.MainContext)
        self.assertEqual(context, self.context)
        self.assertEqual(context, port.get_context())

        # From another thread, too.
        seen = []
        thread = threading.Thread(target=lambda: seen.append(port.dup_context()))
        thread.start()
        thread.join(TIMEOUT)
        self.assertEqual(seen, [self.context])

        # Once the port closed and emitted "close": None.
        closes = []
        port.connect('close', lambda p: closes.append(p))
        channel.get_port1().close()
        self.iterate_until(lambda: closes)
        self.assertIsNone(port.dup_context())
        self.assertIsNone(port.get_context())

    def test_message_new(self):
        message = Mp.Message.new(GLib.Variant('s', 'hi'), [])
        self.assertIsInstance(message, Mp.Message)
        self.assertEqual(message.get_data().unpack(), 'hi')
        self.assertEqual(message.get_ports(), [])

        empty = Mp.Message.new(None, None)
        self.assertIsNone(empty.get_data())
        self.assertEqual(empty.get_ports(), [])

        # The ports are held, not transferred: they stay usable.
        a, b = Mp.MessageChannel.new(), Mp.MessageChannel.new()
        message = Mp.Message.new(GLib.Variant('(ii)', (1, 2)), [a.get_port1(), b.get_port1()])
        self.assertEqual(message.get_data().unpack(), (1, 2))
        ports = message.get_ports()
        self.assertEqual(len(ports), 2)
        self.assertIs(ports[0], a.get_port1())
        self.assertIs(ports[1], b.get_port1())
        self.assertFalse(a.get_port1().is_closed())
        a.get_port1().post(GLib.Variant('s', 'still entangled'))
        self.assertEqual(a.get_port2().receive().get_data().unpack(), 'still entangled')

    def test_message_new_feeds_a_handler(self):
        # A "message" handler of the application, called directly with a made message.
        got = []

        def on_message(port, message):
            got.append((port, message.get_data().unpack(), len(message.get_ports())))

        spare = Mp.MessageChannel.new()
        on_message(None, Mp.Message.new(GLib.Variant('s', 'fed'), [spare.get_port1()]))
        self.assertEqual(got, [(None, 'fed', 1)])

        # The same handler gets real messages alike.
        channel = Mp.MessageChannel.new()
        channel.get_port2().connect('message', on_message)
        channel.get_port2().start()
        channel.get_port1().post(GLib.Variant('s', 'real'))
        self.iterate_until(lambda: len(got) == 2)
        self.assertEqual(got[1], (channel.get_port2(), 'real', 0))
        channel.get_port1().close()


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


class TestPeerClosed(ContextTestCase):
    """Posting towards a closed peer succeeds and drops the message, before and
    after the survivor reaches the close marker; posting on a port its own
    code closed, or that was transferred away, is INVALID_STATE."""

    def test_post_succeeds_before_and_after_the_close_marker(self):
        channel = Mp.MessageChannel.new()
        port1, port2 = channel.get_port1(), channel.get_port2()
        port1.post_message(GLib.Variant('s', 'last words'), [])
        port1.close()

        # Before the close marker: port2 is still open, its peer is closed.
        self.assertFalse(port2.is_closed())
        self.assertTrue(port2.post_message(GLib.Variant('s', 'dropped 1'), []))

        # Reaching the marker closes port2; posting still succeeds and drops.
        self.assertEqual(port2.receive().get_data().unpack(), 'last words')
        self.assertIsNone(port2.receive())
        self.assertTrue(port2.is_closed())
        self.assertTrue(port2.post_message(GLib.Variant('s', 'dropped 2'), []))
        self.assertTrue(port2.post_message(None, None))
        self.assertIsNone(port2.receive())
        # The one-argument post() alike.
        self.assertTrue(port2.post(GLib.Variant('s', 'dropped 3')))
        self.assertTrue(port2.is_peer_closed())

        # Posting on the port its own code closed is still misuse.
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                port1.post_message, GLib.Variant('s', 'x'), [])
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                port1.post, GLib.Variant('s', 'x'))

    def test_post_succeeds_after_the_close_signal(self):
        channel = Mp.MessageChannel.new()
        rec = Recorder(channel.get_port2())
        channel.get_port1().close()
        self.assertTrue(channel.get_port2().post_message(GLib.Variant('i', 1), []))
        self.iterate_until(lambda: rec.closes == 1)
        self.assertTrue(channel.get_port2().is_closed())
        self.assertTrue(channel.get_port2().post_message(GLib.Variant('i', 2), []))
        self.assertTrue(channel.get_port2().post(GLib.Variant('i', 3)))
        self.spin()
        self.assertEqual((rec.messages, rec.closes), ([], 1))

    def test_is_peer_closed(self):
        channel = Mp.MessageChannel.new()
        port1, port2 = channel.get_port1(), channel.get_port2()
        self.assertFalse(port1.is_peer_closed())
        self.assertFalse(port2.is_peer_closed())
        port1.post(GLib.Variant('i', 1))
        self.assertFalse(port2.is_peer_closed(), 'a post is not a close')
        port1.close()
        self.assertTrue(port2.is_peer_closed())
        self.assertEqual(port2.receive().get_data().unpack(), 1,
                         'what the peer posted before closing is still queued')

        # A peer finalized unstarted is closed.
        lone = Mp.MessageChannel.new().get_port2()
        gc.collect()
        self.assertTrue(lone.is_peer_closed())

        # A port transferred away has no peer any more; its heir has one.
        carrier, moved = Mp.MessageChannel.new(), Mp.MessageChannel.new()
        carrier.get_port1().post_message(None, [moved.get_port1()])
        self.assertTrue(moved.get_port1().is_peer_closed())
        self.assertFalse(moved.get_port2().is_peer_closed())
        (heir,) = carrier.get_port2().receive().get_ports()
        self.assertFalse(heir.is_peer_closed())
        heir.close()
        self.assertTrue(moved.get_port2().is_peer_closed())

    def test_own_close_and_transfer_are_invalid_state(self):
        carrier, moved = Mp.MessageChannel.new(), Mp.MessageChannel.new()
        carrier.get_port1().post_message(None, [moved.get_port1()])
        error = self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                        moved.get_port1().post, GLib.Variant('i', 1))
        self.assertTrue(error.message)
        # The heir works, and its peer's posts arrive.
        (heir,) = carrier.get_port2().receive().get_ports()
        self.assertTrue(heir.post(GLib.Variant('i', 2)))
        self.assertEqual(moved.get_port2().receive().get_data().unpack(), 2)
        heir.close()
        carrier.get_port1().close()


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
        self.assertEqual(int(Mp.Error.CLOSED), 2)
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


class TestVersion(unittest.TestCase):
    def test_runtime_version_matches_the_constants(self):
        version = (Mp.get_major_version(), Mp.get_minor_version(), Mp.get_micro_version())
        for number in version:
            self.assertIsInstance(number, int)
            self.assertGreaterEqual(number, 0)
        self.assertGreaterEqual(version[0], 1)
        self.assertEqual(version, (Mp.MAJOR_VERSION, Mp.MINOR_VERSION, Mp.MICRO_VERSION))
        self.assertEqual('%d.%d.%d' % version, Mp.VERSION_S)


if __name__ == '__main__':
    unittest.main(verbosity=2)
