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

test('new Mp.MessagePort() is an inert, closed port', async () => {
    const port = new Mp.MessagePort();
    assert(port instanceof Mp.MessagePort);
    const log = {messages: 0, closes: 0, notifies: 0};
    port.connect('message', () => log.messages++);
    port.connect('close', () => log.closes++);
    port.connect('notify::closed', () => log.notifies++);

    assertEqual(port.is_closed(), true);
    assertEqual(port.closed, true);
    assertEqual(port.is_peer_closed(), true);
    assertEqual(port.receive(), null);
    assertEqual(port.get_context(), null);
    assertEqual(port.dup_context(), null);
    const e = assertThrowsGError(() => port.post_message(new GLib.Variant('s', 'x'), []),
        Mp.Error, Mp.Error.INVALID_STATE);
    assert(e.message.length > 0);
    assertThrowsGError(() => port.post_message(null, null), Mp.Error, Mp.Error.INVALID_STATE);
    assertThrowsGError(() => port.post(new GLib.Variant('s', 'x')), Mp.Error, Mp.Error.INVALID_STATE);

    // start() and close() do nothing.
    port.start();
    assertEqual(port.get_context(), null);
    assertEqual(port.dup_context(), null);
    port.close();
    port.close();
    assertEqual(port.is_closed(), true);
    assertEqual(port.receive(), null);
    await sleep(30);
    assertDeepEqual(log, {messages: 0, closes: 0, notifies: 0});

    // Not transferable either.
    const channel = Mp.MessageChannel.new();
    assertThrowsGError(() => channel.port1.post_message(null, [port]), Mp.Error, Mp.Error.DATA_CLONE);
    assertEqual(channel.port2.receive(), null);
    channel.port1.close();
});

test('ports made with new Mp.MessagePort() are garbage-collected cleanly', async () => {
    for (let i = 0; i < 100; i++) {
        const port = new Mp.MessagePort();
        if (i % 2 === 0)
            port.start();
        if (i % 3 === 0)
            port.close();
    }
    for (let i = 0; i < 3; i++) {
        System.gc();
        // eslint-disable-next-line no-await-in-loop
        await sleep(10);
    }
    assertEqual(new Mp.MessagePort().is_closed(), true);
});

test('new Mp.MessageChannel() makes entangled ports', async () => {
    const channel = new Mp.MessageChannel();
    const {port1, port2} = channel;
    assert(port1 instanceof Mp.MessagePort && port2 instanceof Mp.MessagePort);
    assert(port1 !== port2);
    assert(channel.get_port1() === port1 && channel.get_port2() === port2);
    assertEqual(port1.is_closed(), false);
    assertEqual(port2.is_peer_closed(), false);

    assertEqual(port1.post(new GLib.Variant('s', 'to port2')), true);
    port2.post_message(new GLib.Variant('s', 'to port1'), []);
    assertEqual(port2.receive().get_data().unpack(), 'to port2');
    assertEqual(port1.receive().get_data().unpack(), 'to port1');

    const log = record(port2);
    port1.post(new GLib.Variant('i', 7));
    port1.close();
    await waitFor(() => log.closes === 1);
    assertDeepEqual(log.data, [7]);
    assertEqual(port2.is_closed(), true);
});

test('post(v) is post_message(v, []) without a transfer list', async () => {
    const channel = Mp.MessageChannel.new();
    const log = record(channel.port2);
    assertEqual(channel.port1.post(new GLib.Variant('(si)', ['one', 1])), true);
    assertEqual(channel.port1.post(null), true);
    assertEqual(log.messages.length, 0, 'nothing inside post()');
    await waitFor(() => log.messages.length === 2);
    assertDeepEqual(log.data, [['one', 1], null]);
    assertDeepEqual(log.messages[0].get_ports(), []);
    channel.port1.close();
    await waitFor(() => log.closes === 1);
});

test('dup_context(): null before start, the delivering context after', async () => {
    const channel = Mp.MessageChannel.new();
    const port = channel.port2;
    assertEqual(port.dup_context(), null, 'not started');
    const closes = [];
    port.connect('close', () => closes.push(1));
    port.start();
    const context = port.dup_context();
    assert(context instanceof GLib.MainContext, `a GLib.MainContext, got ${context}`);
    // It is the context GJS iterates: a source attached to it runs.
    let ran = false;
    const source = GLib.idle_source_new();
    source.set_callback(() => {
        ran = true;
        return GLib.SOURCE_REMOVE;
    });
    source.attach(context);
    await waitFor(() => ran, 'a source attached to dup_context()');

    channel.port1.close();
    await waitFor(() => closes.length === 1);
    assertEqual(port.dup_context(), null, 'closed and "close" emitted');
});

test('Mp.Message.new(): a message without a channel, for a handler', async () => {
    const message = Mp.Message.new(new GLib.Variant('s', 'hi'), []);
    assert(message instanceof Mp.Message);
    assertEqual(message.get_data().unpack(), 'hi');
    assertDeepEqual(message.get_ports(), []);

    const empty = Mp.Message.new(null, null);
    assertEqual(empty.get_data(), null);
    assertDeepEqual(empty.get_ports(), []);

    // The ports are held, not transferred: they stay usable.
    const a = Mp.MessageChannel.new(), b = Mp.MessageChannel.new();
    const held = Mp.Message.new(new GLib.Variant('(ii)', [1, 2]), [a.port1, b.port1]);
    assertDeepEqual(held.get_data().deepUnpack(), [1, 2]);
    const ports = held.get_ports();
    assertEqual(ports.length, 2);
    assert(ports[0] === a.port1 && ports[1] === b.port1, 'the same objects');
    assertEqual(a.port1.is_closed(), false);
    a.port1.post(new GLib.Variant('s', 'still entangled'));
    assertEqual(a.port2.receive().get_data().unpack(), 'still entangled');

    // An application's handler, fed a made message and then real ones.
    const got = [];
    const onMessage = (port, m) => got.push([port, m.get_data().unpack(), m.get_ports().length]);
    onMessage(null, Mp.Message.new(new GLib.Variant('s', 'fed'), [b.port1]));
    const channel = Mp.MessageChannel.new();
    channel.port2.connect('message', onMessage);
    channel.port2.start();
    channel.port1.post(new GLib.Variant('s', 'real'));
    await waitFor(() => got.length === 2);
    assertDeepEqual(got[0], [null, 'fed', 1]);
    assert(got[1][0] === channel.port2);
    assertDeepEqual(got[1].slice(1), ['real', 0]);
    channel.port1.close();
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

test('posting to a closed peer succeeds and drops, before and after the close marker', () => {
    const channel = Mp.MessageChannel.new();
    const {port1, port2} = channel;
    port1.post_message(new GLib.Variant('s', 'last words'), []);
    port1.close();

    // Before the close marker: port2 is open, its peer closed.
    assertEqual(port2.is_closed(), false);
    assertEqual(port2.post_message(new GLib.Variant('s', 'dropped 1'), []), true);

    // Reaching the marker closes port2; posting still succeeds.
    assertEqual(port2.receive().get_data().unpack(), 'last words');
    assertEqual(port2.receive(), null);
    assertEqual(port2.is_closed(), true);
    assertEqual(port2.post_message(new GLib.Variant('s', 'dropped 2'), []), true);
    assertEqual(port2.post_message(null, null), true);
    assertEqual(port2.receive(), null);
    // The one-argument post() alike.
    assertEqual(port2.post(new GLib.Variant('s', 'dropped 3')), true);
    assertEqual(port2.is_peer_closed(), true);

    // Posting on the port its own code closed is still misuse.
    assertThrowsGError(() => port1.post_message(null, []), Mp.Error, Mp.Error.INVALID_STATE);
    assertThrowsGError(() => port1.post(new GLib.Variant('s', 'x')), Mp.Error, Mp.Error.INVALID_STATE);
});

test('posting after the "close" signal of a started port succeeds', async () => {
    const channel = Mp.MessageChannel.new();
    const log = record(channel.port2);
    channel.port1.close();
    assertEqual(channel.port2.post_message(new GLib.Variant('i', 1), []), true);
    await waitFor(() => log.closes === 1);
    assertEqual(channel.port2.is_closed(), true);
    // A worker loop posting while the other side closed never throws.
    for (let i = 0; i < 1000; i++)
        channel.port2.post_message(new GLib.Variant('i', i), []);
    assertEqual(channel.port2.post(new GLib.Variant('i', 2)), true);
    await sleep(20);
    assertEqual(log.messages.length, 0);
    assertEqual(log.closes, 1);
});

test('is_peer_closed()', () => {
    const channel = Mp.MessageChannel.new();
    const {port1, port2} = channel;
    assertEqual(port1.is_peer_closed(), false);
    assertEqual(port2.is_peer_closed(), false);
    port1.post(new GLib.Variant('i', 1));
    assertEqual(port2.is_peer_closed(), false, 'a post is not a close');
    port1.close();
    assertEqual(port2.is_peer_closed(), true);
    assertEqual(port2.receive().get_data().unpack(), 1, 'what the peer posted is still queued');

    // A port transferred away has no peer any more; its heir has one.
    const carrier = Mp.MessageChannel.new(), moved = Mp.MessageChannel.new();
    carrier.port1.post_message(null, [moved.port1]);
    assertEqual(moved.port1.is_peer_closed(), true);
    assertEqual(moved.port2.is_peer_closed(), false);
    const [heir] = carrier.port2.receive().get_ports();
    assertEqual(heir.is_peer_closed(), false);
    assertThrowsGError(() => moved.port1.post(null), Mp.Error, Mp.Error.INVALID_STATE);
    heir.close();
    assertEqual(moved.port2.is_peer_closed(), true);
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
    assertThrowsGError(() => moved.port1.post(null), Mp.Error, Mp.Error.INVALID_STATE);
});

test('Mp.Error codes', () => {
    assertEqual(Mp.Error.DATA_CLONE, 0);
    assertEqual(Mp.Error.INVALID_STATE, 1);
    assertEqual(Mp.Error.CLOSED, 2);
});

test('runtime version functions match the constants', () => {
    const version = [Mp.get_major_version(), Mp.get_minor_version(), Mp.get_micro_version()];
    assert(version.every(n => Number.isInteger(n) && n >= 0), `${version}`);
    assert(version[0] >= 1);
    assertDeepEqual(version, [Mp.MAJOR_VERSION, Mp.MINOR_VERSION, Mp.MICRO_VERSION]);
    assertEqual(version.join('.'), Mp.VERSION_S);
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
