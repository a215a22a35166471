// test-receive-timeout.js: Mp.MessagePort.receive_timeout() from GJS
//
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// receive_timeout() blocks the calling thread, and GJS has only one: every
// case posts before it waits, or waits briefly, or polls with a timeout of 0.

import GLib from 'gi://GLib';
import Gio from 'gi://Gio';
import Mp from 'gi://Mp?version=1';

import {
    test, run, assert, assertEqual, assertDeepEqual, assertThrowsGError, waitFor,
} from './tap.js';

const int = i => new GLib.Variant('i', i);
const valueOf = message => message.get_data().unpack();
/** Microseconds; long enough for a failing library to be noticed, never reached. */
const WAIT = 5 * GLib.USEC_PER_SEC;

test('a timeout returns null without an error', () => {
    const channel = Mp.MessageChannel.new();
    const start = GLib.get_monotonic_time();
    assertEqual(channel.port2.receive_timeout(20000, null), null);
    assert(GLib.get_monotonic_time() - start >= 18000, 'it waited');
    assertEqual(channel.port2.receive_timeout(0, null), null, '0 does not wait');
    assertEqual(channel.port2.receive_timeout(0, new Gio.Cancellable()), null);
    assertEqual(channel.port2.is_closed(), false);
    channel.port1.close();
});

test('a message posted before the call is returned at once', () => {
    const channel = Mp.MessageChannel.new();
    channel.port1.post(new GLib.Variant('s', 'posted first'));
    channel.port1.post_message(int(2), []);
    const start = GLib.get_monotonic_time();
    const message = channel.port2.receive_timeout(WAIT, null);
    assert(message instanceof Mp.Message);
    assertEqual(valueOf(message), 'posted first');
    assertDeepEqual(message.get_ports(), []);
    assertEqual(valueOf(channel.port2.receive_timeout(-1, null)), 2);
    assert(GLib.get_monotonic_time() - start < WAIT / 2, 'no wait');
    channel.port1.close();
});

test('polling with a timeout of 0 while the main loop posts', async () => {
    const channel = Mp.MessageChannel.new();
    let n = 0;
    GLib.timeout_add(GLib.PRIORITY_DEFAULT, 1, () => {
        channel.port1.post(int(n++));
        if (n < 20)
            return GLib.SOURCE_CONTINUE;
        channel.port1.close();
        return GLib.SOURCE_REMOVE;
    });
    const got = [];
    let error = null;
    await waitFor(() => {
        try {
            for (let m; (m = channel.port2.receive_timeout(0, null)) !== null;)
                got.push(valueOf(m));
        } catch (e) {
            error = e;
        }
        return error !== null;
    }, 'the end of the stream');
    assertDeepEqual(got, [...Array(20).keys()]);
    assert(error.matches(Mp.Error, Mp.Error.CLOSED), `${error}`);
});

test('CLOSED at the end of the stream', () => {
    const channel = Mp.MessageChannel.new();
    channel.port1.post(int(9));
    channel.port1.close();
    assertEqual(valueOf(channel.port2.receive_timeout(WAIT, null)), 9);
    const e = assertThrowsGError(() => channel.port2.receive_timeout(WAIT, null), Mp.Error, Mp.Error.CLOSED);
    assertEqual(e.message, 'The other port of the channel was closed');
    assertEqual(channel.port2.is_closed(), true);
    assertThrowsGError(() => channel.port2.receive_timeout(0, null), Mp.Error, Mp.Error.CLOSED);
});

test('INVALID_STATE on a port its own code closed, or made on its own', () => {
    const channel = Mp.MessageChannel.new();
    channel.port2.close();
    assertThrowsGError(() => channel.port2.receive_timeout(WAIT, null), Mp.Error, Mp.Error.INVALID_STATE);
    assertThrowsGError(() => new Mp.MessagePort().receive_timeout(WAIT, null),
        Mp.Error, Mp.Error.INVALID_STATE);
});

test('G_IO_ERROR_CANCELLED when cancelled; no message taken', () => {
    const channel = Mp.MessageChannel.new();
    const cancellable = new Gio.Cancellable();
    cancellable.cancel();
    assertThrowsGError(() => channel.port2.receive_timeout(WAIT, cancellable),
        Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED);
    channel.port1.post(int(1));
    const e = assertThrowsGError(() => channel.port2.receive_timeout(WAIT, cancellable),
        Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED);
    assertEqual(e.message, 'The receive was cancelled');
    assertEqual(valueOf(channel.port2.receive_timeout(0, new Gio.Cancellable())), 1);
    channel.port1.close();
});

test('receive_timeout and a pending receive_async share one queue, oldest first', async () => {
    const channel = Mp.MessageChannel.new();
    let first = null;
    channel.port2.receive_async(null, (port, res) => {
        first = valueOf(port.receive_finish(res));
    });
    channel.port1.post(int(1));
    channel.port1.post(int(2));
    assertEqual(valueOf(channel.port2.receive_timeout(WAIT, null)), 2);
    await waitFor(() => first !== null);
    assertEqual(first, 1);
    channel.port1.close();
});

run();
