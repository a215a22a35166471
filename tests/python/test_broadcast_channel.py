# test_broadcast_channel.py: Mp.BroadcastChannel from PyGObject, in one
# thread and between threads
#
# SPDX-License-Identifier: LGPL-2.1-or-later

import gc
import itertools
import threading
import unittest

from mptest import GLib, Mp, ContextTestCase, Worker

_serial = itertools.count()


def unique_name(what):
    return 'python-%s-%d' % (what, next(_serial))


class Listener:
    """A channel created on the calling thread, recording what it gets and on
    which thread."""

    def __init__(self, name):
        self.owner = threading.get_ident()
        self.channel = Mp.BroadcastChannel.new(name)
        self.values = []
        self.wrong_thread = 0
        self.with_ports = 0
        self.channel.connect('message', self._on_message)

    def _on_message(self, channel, message):
        if threading.get_ident() != self.owner:
            self.wrong_thread += 1
        if message.get_ports():
            self.with_ports += 1
        data = message.get_data()
        self.values.append(None if data is None else data.unpack())


class TestBroadcastChannel(ContextTestCase):
    def test_every_other_channel_gets_the_post(self):
        name = unique_name('fanout')
        a, b, c = Listener(name), Listener(name), Listener(name)
        elsewhere = Listener(unique_name('other'))
        self.assertEqual(a.channel.get_name(), name)
        self.assertEqual(b.channel.props.name, name)
        self.assertEqual(a.channel.get_context(), self.context)

        a.channel.post_message(GLib.Variant('(si)', ('hello', 1)))
        b.channel.post_message(GLib.Variant('s', 'from b'))
        c.channel.post_message(None)
        self.assertEqual(b.values, [], 'nothing inside post_message()')
        self.iterate_until(lambda: len(a.values) == len(b.values) == len(c.values) == 2)
        self.spin()
        self.assertEqual(a.values, ['from b', None])
        self.assertEqual(b.values, [('hello', 1), None])
        self.assertEqual(c.values, [('hello', 1), 'from b'])
        self.assertEqual(elsewhere.values, [])
        self.assertEqual([x.with_ports for x in (a, b, c)], [0, 0, 0])
        for listener in (a, b, c, elsewhere):
            listener.channel.close()

    def test_closed_channel(self):
        name = unique_name('close')
        a, b = Listener(name), Listener(name)
        a.channel.post_message(GLib.Variant('s', 'made before the close'))
        b.channel.close()
        self.assertTrue(b.channel.is_closed())
        self.assertTrue(b.channel.props.closed)
        self.assertIsNone(b.channel.get_context())
        with self.assertRaises(GLib.Error) as caught:
            b.channel.post_message(GLib.Variant('s', 'x'))
        self.assertGError(caught.exception, Mp.error_quark(), Mp.Error.INVALID_STATE)
        self.assertEqual(caught.exception.domain, 'mp-error-quark')
        self.spin()
        self.assertEqual(b.values, [])
        a.channel.close()

    def test_gobject_construction_without_a_name(self):
        a, b = Mp.BroadcastChannel(), Mp.BroadcastChannel()
        self.assertEqual(a.get_name(), '')
        self.assertEqual(b.props.name, '')
        self.assertFalse(a.is_closed())
        self.assertEqual(a.get_context(), self.context)
        got_a, got_b = [], []
        a.connect('message', lambda c, m: got_a.append(m.get_data().unpack()))
        b.connect('message', lambda c, m: got_b.append(m.get_data().unpack()))
        named = Listener(unique_name('not-empty'))

        self.assertTrue(a.post_message(GLib.Variant('s', 'from a')))
        b.post_message(GLib.Variant('s', 'from b'))
        self.iterate_until(lambda: got_a and got_b)
        self.spin()
        self.assertEqual((got_a, got_b), (['from b'], ['from a']))
        self.assertEqual(named.values, [])

        b.close()
        self.assertTrue(b.is_closed())
        self.assertIsNone(b.get_context())
        self.assertRaisesGError(Mp.error_quark(), Mp.Error.INVALID_STATE,
                                b.post_message, GLib.Variant('s', 'x'))
        a.post_message(GLib.Variant('s', 'after the close'))
        self.spin()
        self.assertEqual(got_b, ['from a'])
        a.close()
        named.channel.close()

    def test_gobject_construction_with_a_name(self):
        name = unique_name('kwarg')
        a = Mp.BroadcastChannel(name=name)
        b = Listener(name)
        self.assertEqual(a.get_name(), name)
        a.post_message(GLib.Variant('i', 1))
        self.iterate_until(lambda: b.values)
        self.assertEqual(b.values, [1])
        a.close()
        self.assertTrue(a.is_closed())
        b.channel.close()

    def test_between_threads(self):
        name = unique_name('threads')
        workers = [Worker('bc-%d' % i).start() for i in range(3)]
        try:
            listeners = [w.call(Listener, name) for w in workers]
            main = Listener(name)

            # Each worker answers every 'ping' on the same name.
            def answer(listener, index):
                def on_message(channel, message):
                    if message.get_data().unpack() == 'ping':
                        channel.post_message(GLib.Variant('s', 'pong %d' % index))
                listener.channel.connect('message', on_message)

            for i, (w, listener) in enumerate(zip(workers, listeners)):
                w.call(answer, listener, i)

            for i in range(20):
                main.channel.post_message(GLib.Variant('(su)', ('count', i)))
            main.channel.post_message(GLib.Variant('s', 'ping'))
            self.iterate_until(lambda: len(main.values) == 3)
            self.assertEqual(sorted(main.values), ['pong 0', 'pong 1', 'pong 2'])

            for w, listener in zip(workers, listeners):
                self.assertEqual(listener.owner, w.ident)
                # Each sender's order is kept; pongs of the others come too.
                counts = [v for v in listener.values if isinstance(v, tuple)]
                self.assertEqual(counts, [('count', i) for i in range(20)])
                self.assertIn('ping', listener.values)
                self.assertEqual(listener.wrong_thread, 0)
            self.assertEqual(main.wrong_thread, 0)
            for w, listener in zip(workers, listeners):
                w.call(listener.channel.close)
            main.channel.close()
        finally:
            for w in workers:
                w.stop()

    def test_open_channel_with_collected_wrapper_keeps_receiving(self):
        name = unique_name('gc')
        got = []

        def listen_and_forget():
            channel = Mp.BroadcastChannel.new(name)
            channel.connect('message', lambda c, m: got.append(m.get_data().unpack()))

        listen_and_forget()
        gc.collect()
        sender = Mp.BroadcastChannel.new(name)
        sender.post_message(GLib.Variant('s', 'still there'))
        self.iterate_until(lambda: got)
        self.assertEqual(got, ['still there'])
        sender.close()


if __name__ == '__main__':
    unittest.main(verbosity=2)
