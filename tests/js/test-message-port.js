// test-message-port.js: MessageChannel, MessagePort and Message from GJS
//
// SPDX-License-Identifier: LGPL-2.1-or-later

import GLib from 'gi://GLib';
import GObject from 'gi://GObject';
import Mp from 'gi://Mp?version=1';
import System from 'system';

import {
    test, run, assert, assertEqual, assertDeepEqual, assertThrowsGError, sleep, waitFor,
} from './tap.js';

/** Starts @port (on the default context, the JS thread's) recording its
 * signals. */
function record(port) {
    const log = {messages: [], data: [], closes: 0, notifies: 0};
    port.connect('message', (p, message) => {
        assert(p === port, 'the handler gets the port');
        log.messages.push(message);
        log.data.push(message.get_data()?.deepUnpack() ?? null);
    });
    port.connect('close', () => log.closes++);
    port.connect('notify::closed', () => log.notifies++);
    port.start();
    return log;
}

test('constructors and properties', () => {
    const channel = Mp.MessageChannel.new();
    assert(channel instanceof Mp.MessageChannel);
    const other = new Mp.MessageChannel();
    assert(other instanceof GObject.Object);

    const port1 = channel.get_port1(), port2 = channel.get_port2();
    assert(port1 instanceof Mp.MessagePort && port2 instanceof Mp.MessagePort);
    assert(channel.port1 === port1 && channel.port2 === port2, 'port1/port2 properties');
    assert(port1 !== port2);
    assertEqual(port1.get_context(), null, 'context before start');
    assertEqual(port1.context, null);
    assertEqual(port1.is_closed(), false);
    assertEqual(port1.closed, false);
    assertEqual(port1.get_priority(), GLib.PRIORITY_DEFAULT);
    port1.priority = GLib.PRIORITY_HIGH;
    assertEqual(port1.get_priority(), GLib.PRIORITY_HIGH);
    port1.start();
    assert(port1.get_context() !== null, 'context after start');
    port1.close();
    port2.close();
});

test('round trip of a GLib.Variant', async () => {
    const channel = Mp.MessageChannel.new();
    const log = record(channel.port2);
    const payload = new GLib.Variant('a{sv}', {
        name: GLib.Variant.new_string('ping'),
        n: GLib.Variant.new_int32(42),
        list: new GLib.Variant('as', ['a', 'b']),
    });

    channel.port1.post_message(payload, []);
    channel.port1.post_message(new GLib.Variant('(sd)', ['second', 2.5]), null);
    channel.port1.post_message(null, []);
    assertEqual(log.messages.length, 0, 'nothing inside post_message');

    await waitFor(() => log.messages.length === 3);
    const [first, second, third] = log.messages;
    assert(first instanceof Mp.Message);
    assert(first.get_data() instanceof GLib.Variant, 'get_data() is a GLib.Variant');
    assertEqual(first.get_data().get_type_string(), 'a{sv}');
    assertDeepEqual(first.get_data().recursiveUnpack(), {name: 'ping', n: 42, list: ['a', 'b']});
    assertDeepEqual(second.get_data().deepUnpack(), ['second', 2.5]);
    assertEqual(third.get_data(), null, 'a null payload');
    for (const message of log.messages)
        assertDeepEqual(message.get_ports(), [], 'no ports');

    channel.port1.close();
    await waitFor(() => log.closes === 1);
});

test('a message kept past its handler stays valid', async () => {
    const channel = Mp.MessageChannel.new();
    const log = record(channel.port2);
    for (let i = 0; i < 50; i++)
        channel.port1.post_message(new GLib.Variant('s', `message ${i}`), []);
    await waitFor(() => log.messages.length === 50);
    System.gc();
    // More traffic, so freed memory would be reused.
    for (let i = 0; i < 200; i++)
        channel.port1.post_message(new GLib.Variant('s', `x${i}`.repeat(8)), []);
    await waitFor(() => log.messages.length === 250);
    System.gc();
    for (let i = 0; i < 50; i++)
        assertEqual(log.messages[i].get_data().unpack(), `message ${i}`);
    channel.port1.close();
    await waitFor(() => log.closes === 1);
});

test('receive() takes messages synchronously', () => {
    const channel = Mp.MessageChannel.new();
    assertEqual(channel.port2.receive(), null, 'nothing queued');
    channel.port1.post_message(new GLib.Variant('u', 1), []);
    channel.port1.post_message(new GLib.Variant('u', 2), []);
    assertEqual(channel.port2.receive().get_data().unpack(), 1);
    assertEqual(channel.port2.receive().get_data().unpack(), 2);
    assertEqual(channel.port2.receive(), null);
    channel.port1.close();
    assertEqual(channel.port2.receive(), null, 'the close marker');
    assertEqual(channel.port2.is_closed(), true);
});

test('transfer: get_ports() is an array of new Mp.MessagePort, in order', async () => {
    const channel = Mp.MessageChannel.new();
    const a = Mp.MessageChannel.new(), b = Mp.MessageChannel.new();
    const log = record(channel.port2);

    a.port2.post_message(new GLib.Variant('s', 'queued before the move'), []);
    channel.port1.post_message(new GLib.Variant('s', 'two ports'), [a.port1, b.port1]);
    assert(a.port1.is_closed() && b.port1.is_closed(), 'the sent objects are detached');
    assertEqual(a.port1.get_context(), null);

    await waitFor(() => log.messages.length === 1);
    const ports = log.messages[0].get_ports();
    assert(Array.isArray(ports), 'get_ports() is an Array');
    assertEqual(ports.length, 2);
    assert(ports.every(p => p instanceof Mp.MessagePort));
    assert(ports[0] !== a.port1 && ports[1] !== b.port1, 'new objects');
    assertEqual(ports[0].get_context(), null, 'received ports are unstarted');

    // Each new port is entangled with the right peer, its queue came along.
    assertEqual(ports[0].receive().get_data().unpack(), 'queued before the move');
    ports[0].post_message(new GLib.Variant('s', 'to a'), []);
    ports[1].post_message(new GLib.Variant('s', 'to b'), []);
    assertEqual(a.port2.receive().get_data().unpack(), 'to a');
    assertEqual(b.port2.receive().get_data().unpack(), 'to b');

    // A received port started from JS delivers on this thread.
    const received = record(ports[1]);
    b.port2.post_message(new GLib.Variant('i', 7), []);
    await waitFor(() => received.messages.length === 1);
    assertEqual(received.data[0], 7);

    for (const p of [channel.port1, ...ports])
        p.close();
    await waitFor(() => log.closes === 1 && received.closes === 1);
});

test('close events on both sides, after the data', async () => {
    const channel = Mp.MessageChannel.new();
    const log1 = record(channel.port1);
    const log2 = record(channel.port2);

    channel.port1.post_message(new GLib.Variant('s', 'last words'), []);
    channel.port1.close();
    assertEqual(channel.port1.is_closed(), true, 'closed as soon as close() returns');
    assertEqual(log1.closes, 0, 'never inside close()');
    channel.port1.close();  // idempotent

    await waitFor(() => log1.closes === 1 && log2.closes === 1);
    assertDeepEqual(log2.data, ['last words'], 'the data came before the close');
    assertEqual(channel.port2.is_closed(), true);
    assertEqual(log1.notifies, 1, 'notify::closed once');
    assertEqual(log2.notifies, 1);
    await sleep(50);
    assertEqual(log1.closes, 1, 'close exactly once');
    assertEqual(log2.closes, 1);

    // Posting towards a closed peer succeeds and drops; posting on a closed port throws.
    const other = Mp.MessageChannel.new();
    other.port1.close();
    assert(other.port2.post_message(new GLib.Variant('s', 'dropped'), []));
});

test('errors are GLib.Error in Mp.Error: DATA_CLONE', () => {
    const channel = Mp.MessageChannel.new();
    const {port1, port2} = channel;
    const spare = Mp.MessageChannel.new();

    const peer = assertThrowsGError(() => port1.post_message(null, [port2]),
        Mp.Error, Mp.Error.DATA_CLONE);
    assertEqual(peer.domain, Mp.error_quark(), 'the domain is the mp-error-quark');
    assertEqual(peer.domain, GLib.quark_from_string('mp-error-quark'));
    assertEqual(peer.code, Mp.Error.DATA_CLONE);
    assert(peer.message.length > 0, 'a message');

    assertThrowsGError(() => port1.post_message(null, [port1]), Mp.Error, Mp.Error.DATA_CLONE);
    assertThrowsGError(() => port1.post_message(null, [spare.port1, spare.port1]),
        Mp.Error, Mp.Error.DATA_CLONE);
    const closed = Mp.MessageChannel.new();
    closed.port1.close();
    assertThrowsGError(() => port1.post_message(new GLib.Variant('s', 'x'), [spare.port1, closed.port1]),
        Mp.Error, Mp.Error.DATA_CLONE);

    // Nothing changed: every listed port still works, nothing was posted.
    assertEqual(spare.port1.is_closed(), false);
    assertEqual(port2.receive(), null);
    spare.port1.post_message(new GLib.Variant('s', 'still here'), []);
    assertEqual(spare.port2.receive().get_data().unpack(), 'still here');
});

test('errors are GLib.Error in Mp.Error: INVALID_STATE', () => {
    const channel = Mp.MessageChannel.new();
    channel.port1.close();
    const e = assertThrowsGError(() => channel.port1.post_message(new GLib.Variant('s', 'x'), []),
        Mp.Error, Mp.Error.INVALID_STATE);
    assertEqual(e.code, Mp.Error.INVALID_STATE);

    const carrier = Mp.MessageChannel.new();
    const moved = Mp.MessageChannel.new();
    carrier.port1.post_message(null, [moved.port1]);
    assertThrowsGError(() => moved.port1.post_message(null, []), Mp.Error, Mp.Error.INVALID_STATE);
    // Checked before the transfer list.
    assertThrowsGError(() => moved.port1.post_message(null, [moved.port2]),
        Mp.Error, Mp.Error.INVALID_STATE);
});

/** Makes a started port with a handler, keeps no JS reference to it, and
 * returns its peer. */
function startAndForget(received) {
    const channel = Mp.MessageChannel.new();
    const port = channel.get_port2();
    port.connect('message', (_p, message) => received.push(message.get_data().unpack()));
    port.connect('close', () => received.push('close'));
    port.start();
    return channel.get_port1();
}

test('a started port whose JS wrapper was collected keeps working', async () => {
    const received = [];
    const peer = startAndForget(received);
    for (let i = 0; i < 3; i++) {
        System.gc();
        // eslint-disable-next-line no-await-in-loop
        await sleep(10);
    }
    peer.post_message(new GLib.Variant('s', 'still delivered'), []);
    await waitFor(() => received.length === 1);
    System.gc();
    peer.post_message(new GLib.Variant('s', 'again'), []);
    peer.close();
    await waitFor(() => received.length === 3);
    assertDeepEqual(received, ['still delivered', 'again', 'close']);
});

test('a received port started from JS and forgotten keeps working', async () => {
    const carrier = Mp.MessageChannel.new();
    const inner = Mp.MessageChannel.new();
    const received = [];
    let started = false;

    carrier.port2.connect('message', (_p, message) => {
        // The only JS reference to the new port is this local variable.
        const [port] = message.get_ports();
        port.connect('message', (_q, m) => received.push(m.get_data().unpack()));
        port.start();
        started = true;
    });
    carrier.port2.start();
    carrier.port1.post_message(null, [inner.port2]);
    await waitFor(() => started);
    for (let i = 0; i < 3; i++) {
        System.gc();
        // eslint-disable-next-line no-await-in-loop
        await sleep(10);
    }
    inner.port1.post_message(new GLib.Variant('i', 1), []);
    inner.port1.post_message(new GLib.Variant('i', 2), []);
    await waitFor(() => received.length === 2);
    assertDeepEqual(received, [1, 2]);
    inner.port1.close();
    carrier.port1.close();
});

run();
