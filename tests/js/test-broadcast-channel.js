// test-broadcast-channel.js: Mp.BroadcastChannel from GJS
//
// SPDX-License-Identifier: LGPL-2.1-or-later

import GLib from 'gi://GLib';
import Mp from 'gi://Mp?version=1';
import System from 'system';

import {
    test, run, assert, assertEqual, assertDeepEqual, assertThrowsGError, sleep, waitFor,
} from './tap.js';

let serial = 0;
/** A name no other case uses. */
const uniqueName = what => `gjs-${what}-${serial++}`;

function listen(channel) {
    const got = [];
    channel.connect('message', (c, message) => {
        assert(c === channel);
        assert(message instanceof Mp.Message);
        assertDeepEqual(message.get_ports(), []);
        got.push(message.get_data()?.deepUnpack() ?? null);
    });
    return got;
}

test('every other channel of the name gets the post, the poster does not', async () => {
    const name = uniqueName('fanout');
    const a = Mp.BroadcastChannel.new(name);
    const b = new Mp.BroadcastChannel({name});
    const c = Mp.BroadcastChannel.new(name);
    const elsewhere = Mp.BroadcastChannel.new(uniqueName('other'));
    const [gotA, gotB, gotC, gotElsewhere] = [a, b, c, elsewhere].map(listen);

    assertEqual(a.get_name(), name);
    assertEqual(b.name, name);
    assert(a.get_context() !== null);
    assertEqual(a.is_closed(), false);

    a.post_message(new GLib.Variant('(si)', ['hello', 1]));
    b.post_message(new GLib.Variant('s', 'from b'));
    c.post_message(null);
    assertEqual(gotB.length, 0, 'nothing inside post_message');

    await waitFor(() => gotA.length === 2 && gotB.length === 2 && gotC.length === 2);
    await sleep(20);
    assertDeepEqual(gotA, ['from b', null]);
    assertDeepEqual(gotB, [['hello', 1], null]);
    assertDeepEqual(gotC, [['hello', 1], 'from b']);
    assertDeepEqual(gotElsewhere, []);
    for (const ch of [a, b, c, elsewhere])
        ch.close();
});

test('a closed channel gets nothing more and cannot post: INVALID_STATE', async () => {
    const name = uniqueName('close');
    const a = Mp.BroadcastChannel.new(name);
    const b = Mp.BroadcastChannel.new(name);
    const gotB = listen(b);

    a.post_message(new GLib.Variant('s', 'made before the close'));
    b.close();
    assertEqual(b.is_closed(), true);
    assertEqual(b.closed, true);
    assertEqual(b.get_context(), null);
    b.close();  // idempotent

    const e = assertThrowsGError(() => b.post_message(new GLib.Variant('s', 'x')),
        Mp.Error, Mp.Error.INVALID_STATE);
    assertEqual(e.domain, Mp.error_quark());
    await sleep(30);
    assertDeepEqual(gotB, [], 'closed before the delivery ran');
    a.close();
});

test('new Mp.BroadcastChannel() without a name is a usable channel named ""', async () => {
    const a = new Mp.BroadcastChannel(), b = new Mp.BroadcastChannel();
    const named = Mp.BroadcastChannel.new(uniqueName('not-empty'));
    const [gotA, gotB, gotNamed] = [a, b, named].map(listen);
    assertEqual(a.get_name(), '');
    assertEqual(b.name, '');
    assertEqual(a.is_closed(), false);
    assert(a.get_context() !== null);

    assertEqual(a.post_message(new GLib.Variant('s', 'from a')), true);
    b.post_message(new GLib.Variant('s', 'from b'));
    await waitFor(() => gotA.length === 1 && gotB.length === 1);
    await sleep(20);
    assertDeepEqual(gotA, ['from b']);
    assertDeepEqual(gotB, ['from a']);
    assertDeepEqual(gotNamed, []);

    b.close();
    assertEqual(b.is_closed(), true);
    assertEqual(b.get_context(), null);
    assertThrowsGError(() => b.post_message(new GLib.Variant('s', 'x')), Mp.Error, Mp.Error.INVALID_STATE);
    a.post_message(new GLib.Variant('s', 'after the close'));
    await sleep(20);
    assertDeepEqual(gotB, ['from a']);
    a.close();
    named.close();
});

test('new Mp.BroadcastChannel({name}) delivers between channels of the name', async () => {
    const name = uniqueName('props');
    const a = new Mp.BroadcastChannel({name});
    const b = new Mp.BroadcastChannel({name});
    const c = Mp.BroadcastChannel.new(name);
    const [gotA, gotB, gotC] = [a, b, c].map(listen);
    assertEqual(a.get_name(), name);
    a.post_message(new GLib.Variant('i', 1));
    await waitFor(() => gotB.length === 1 && gotC.length === 1);
    assertDeepEqual(gotB, [1]);
    assertDeepEqual(gotC, [1]);
    a.close();
    assertEqual(a.is_closed(), true);
    b.post_message(new GLib.Variant('i', 2));
    await waitFor(() => gotC.length === 2);
    await sleep(20);
    assertDeepEqual(gotA, []);
    assertDeepEqual(gotC, [1, 2]);
    b.close();
    c.close();
});

test('order: message-major, creation-minor on one context', async () => {
    const name = uniqueName('order');
    const sender = Mp.BroadcastChannel.new(name);
    const log = [];
    const receivers = [0, 1, 2].map(i => {
        const ch = Mp.BroadcastChannel.new(name);
        ch.connect('message', (_c, m) => log.push(`${m.get_data().unpack()}${i}`));
        return ch;
    });
    for (const m of ['a', 'b', 'c'])
        sender.post_message(new GLib.Variant('s', m));
    await waitFor(() => log.length === 9);
    assertDeepEqual(log, ['a0', 'a1', 'a2', 'b0', 'b1', 'b2', 'c0', 'c1', 'c2']);
    for (const ch of [sender, ...receivers])
        ch.close();
});

/** Two parts of one app, each with its own channel and no reference kept. */
function makeListener(name, got) {
    const channel = Mp.BroadcastChannel.new(name);
    channel.connect('message', (_c, m) => got.push(m.get_data().unpack()));
}

test('an open channel whose JS wrapper was collected keeps receiving', async () => {
    const name = uniqueName('gc');
    const got = [];
    makeListener(name, got);
    for (let i = 0; i < 3; i++) {
        System.gc();
        // eslint-disable-next-line no-await-in-loop
        await sleep(10);
    }
    const sender = Mp.BroadcastChannel.new(name);
    sender.post_message(new GLib.Variant('s', 'still there'));
    await waitFor(() => got.length === 1);
    assertDeepEqual(got, ['still there']);
    sender.close();
});

run();
