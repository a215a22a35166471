// test-receive-async.js: Mp.MessagePort.receive_async() from GJS, with await
//
// SPDX-License-Identifier: LGPL-2.1-or-later

import GLib from 'gi://GLib';
import Gio from 'gi://Gio';
import Mp from 'gi://Mp?version=1';
import System from 'system';

import {
    test, run, assert, assertEqual, assertDeepEqual, assertRejectsGError, sleep, waitFor,
} from './tap.js';

// receive_async(cancellable) now returns a Promise of the Mp.Message.
Gio._promisify(Mp.MessagePort.prototype, 'receive_async', 'receive_finish');

const int = i => new GLib.Variant('i', i);
const valueOf = message => message.get_data().unpack();

for (const started of [false, true]) {
    const kind = started ? 'started' : 'unstarted';

    test(`await a queued message and the next post (${kind})`, async () => {
        const channel = Mp.MessageChannel.new();
        if (started)
            channel.port2.start();
        channel.port1.post_message(int(1), []);
        const message = await channel.port2.receive_async(null);
        assert(message instanceof Mp.Message);
        assertEqual(valueOf(message), 1);
        assertDeepEqual(message.get_ports(), []);

        const pending = channel.port2.receive_async(null);
        GLib.timeout_add(GLib.PRIORITY_DEFAULT, 20, () => {
            channel.port1.post_message(int(2), []);
            return GLib.SOURCE_REMOVE;
        });
        assertEqual(valueOf(await pending), 2);
        channel.port1.close();
        channel.port2.close();
    });

    test(`an await loop ends with CLOSED when the peer closes (${kind})`, async () => {
        const channel = Mp.MessageChannel.new();
        if (started)
            channel.port2.start();
        let n = 0;
        const producer = GLib.timeout_add(GLib.PRIORITY_DEFAULT, 1, () => {
            channel.port1.post_message(int(n++), []);
            if (n < 20)
                return GLib.SOURCE_CONTINUE;
            channel.port1.close();
            return GLib.SOURCE_REMOVE;
        });
        const got = [];
        let error = null;
        for (;;) {
            try {
                // eslint-disable-next-line no-await-in-loop
                got.push(valueOf(await channel.port2.receive_async(null)));
            } catch (e) {
                error = e;
                break;
            }
        }
        assert(producer > 0);
        assertDeepEqual(got, [...Array(20).keys()]);
        assert(error.matches(Mp.Error, Mp.Error.CLOSED), `${error}`);
        assertEqual(error.message, 'The other port of the channel was closed');
        assertEqual(channel.port2.is_closed(), true);
        // A receive started after the end: CLOSED again, not misuse.
        const again = await assertRejectsGError(channel.port2.receive_async(null), Mp.Error, Mp.Error.CLOSED);
        assertEqual(again.message, 'The other port of the channel was closed');
    });

    test(`CLOSED when the peer closes while a receive waits (${kind})`, async () => {
        const channel = Mp.MessageChannel.new();
        if (started)
            channel.port2.start();
        const waiting = channel.port2.receive_async(null);
        GLib.timeout_add(GLib.PRIORITY_DEFAULT, 20, () => {
            channel.port1.close();
            return GLib.SOURCE_REMOVE;
        });
        const e = await assertRejectsGError(waiting, Mp.Error, Mp.Error.CLOSED);
        assertEqual(e.message, 'The other port of the channel was closed');
    });

    test(`CLOSED for a receive pending when the port's own close() is called (${kind})`, async () => {
        const channel = Mp.MessageChannel.new();
        if (started)
            channel.port2.start();
        const pending = channel.port2.receive_async(null);
        channel.port2.close();
        const e = await assertRejectsGError(pending, Mp.Error, Mp.Error.CLOSED);
        assertEqual(e.message, 'The port was closed');
        // Started on the port its own code closed: misuse.
        await assertRejectsGError(channel.port2.receive_async(null), Mp.Error, Mp.Error.INVALID_STATE);
        assertEqual(channel.port1.is_peer_closed(), true);
    });

    test(`INVALID_STATE when transferred away (${kind})`, async () => {
        const moved = Mp.MessageChannel.new();
        if (started)
            moved.port2.start();
        const carrier = Mp.MessageChannel.new();
        const waiting = moved.port2.receive_async(null);
        carrier.port1.post_message(null, [moved.port2]);
        await assertRejectsGError(waiting, Mp.Error, Mp.Error.INVALID_STATE);
        await assertRejectsGError(moved.port2.receive_async(null), Mp.Error, Mp.Error.INVALID_STATE);
        // The message posted next goes to the new object, not to the failed receive.
        moved.port1.post_message(int(5), []);
        const [heir] = carrier.port2.receive().get_ports();
        assertEqual(valueOf(await heir.receive_async(null)), 5);
        moved.port1.close();
    });

    test(`cancellation: G_IO_ERROR_CANCELLED and no message taken (${kind})`, async () => {
        const channel = Mp.MessageChannel.new();
        const signalled = [];
        channel.port2.connect('message', (_p, m) => signalled.push(valueOf(m)));
        if (started)
            channel.port2.start();

        // Cancelled before the call: the queued message stays.
        const early = new Gio.Cancellable();
        early.cancel();
        channel.port1.post_message(int(1), []);
        const before = await assertRejectsGError(channel.port2.receive_async(early),
            Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED);
        assertEqual(before.message, 'The receive was cancelled');
        if (started)
            await waitFor(() => signalled.length === 1);
        else
            assertEqual(valueOf(channel.port2.receive()), 1);

        // Cancelled while waiting: the next post goes to the next consumer.
        const cancellable = new Gio.Cancellable();
        const cancelled = channel.port2.receive_async(cancellable);
        const next = channel.port2.receive_async(null);
        cancellable.cancel();
        channel.port1.post_message(int(2), []);
        const during = await assertRejectsGError(cancelled, Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED);
        assertEqual(during.message, 'The receive was cancelled', 'the same message as before the call');
        assertEqual(valueOf(await next), 2);
        await sleep(20);
        assertDeepEqual(signalled, started ? [1] : []);
        channel.port1.close();
    });
}

for (const started of [false, true]) {
    const kind = started ? 'started' : 'unstarted';

    test(`callbacks run in the order messages were taken, even if cancelled too late (${kind})`, async () => {
        const channel = Mp.MessageChannel.new();
        const signalled = [];
        channel.port2.connect('message', (_p, m) => signalled.push(valueOf(m)));
        if (started)
            channel.port2.start();
        const log = [];
        const callback = name => (port, res) => {
            try {
                log.push([name, valueOf(port.receive_finish(res))]);
            } catch (e) {
                log.push([name, `${e}`]);
            }
        };
        const cancellable = new Gio.Cancellable();
        // Plain callbacks (the promisified form is not used with a callback).
        channel.port2.receive_async(cancellable, callback('first'));
        channel.port2.receive_async(null, callback('second'));
        channel.port1.post_message(int(0), []);
        channel.port1.post_message(int(1), []);
        // Too late: the first receive was served when 0 was posted.
        cancellable.cancel();
        assertDeepEqual(log, [], 'nothing runs inside the calls');
        await waitFor(() => log.length === 2);
        assertDeepEqual(log, [['first', 0], ['second', 1]]);
        await sleep(20);
        assertDeepEqual(signalled, []);
        channel.port1.close();
    });
}

test('receive_async on new Mp.MessagePort() fails with INVALID_STATE', async () => {
    const port = new Mp.MessagePort();
    let inCall = true;
    let error = null;
    port.receive_async(null, (p, res) => {
        assert(!inCall, 'called back inside receive_async()');
        try {
            p.receive_finish(res);
            error = 'resolved';
        } catch (e) {
            error = e;
        }
    });
    inCall = false;
    await waitFor(() => error !== null);
    assert(error instanceof GLib.Error, `${error}`);
    assert(error.matches(Mp.Error, Mp.Error.INVALID_STATE), `${error}`);
    await assertRejectsGError(port.receive_async(null), Mp.Error, Mp.Error.INVALID_STATE);
});

test('FIFO with receive() and the "message" signal; waiting receives first, oldest first', async () => {
    const channel = Mp.MessageChannel.new();
    const signalled = [];
    channel.port2.connect('message', (_p, m) => signalled.push(valueOf(m)));

    channel.port1.post_message(int(1), []);
    channel.port1.post_message(int(2), []);
    channel.port1.post_message(int(3), []);
    const first = channel.port2.receive_async(null);       // takes 1
    assertEqual(valueOf(channel.port2.receive()), 2);
    channel.port2.start();                                   // 3 goes to the signal
    assertEqual(valueOf(await first), 1);
    await waitFor(() => signalled.length === 1);

    const a = channel.port2.receive_async(null);
    const b = channel.port2.receive_async(null);
    for (let i = 4; i <= 7; i++)
        channel.port1.post_message(int(i), []);
    const order = [];
    const results = await Promise.all([
        a.then(m => (order.push('a'), valueOf(m))),
        b.then(m => (order.push('b'), valueOf(m))),
    ]);
    assertDeepEqual(results, [4, 5]);
    assertDeepEqual(order, ['a', 'b']);
    await waitFor(() => signalled.length === 3);
    assertDeepEqual(signalled, [3, 6, 7]);
    channel.port1.close();
});

test('the callback form never runs inside the call', async () => {
    const channel = Mp.MessageChannel.new();
    channel.port1.post_message(int(1), []);
    let inCall = true, result = null;
    // Not promisified when a callback is given.
    channel.port2.receive_async(null, (port, res) => {
        assert(!inCall, 'called back inside receive_async()');
        result = valueOf(port.receive_finish(res));
    });
    inCall = false;
    assertEqual(result, null);
    await waitFor(() => result !== null);
    assertEqual(result, 1);
    channel.port1.close();
});

test('the await loop of a forgotten port keeps running across System.gc()', async () => {
    const received = [];
    let peer = null;
    let finished = false;
    (async () => {
        const channel = Mp.MessageChannel.new();
        peer = channel.port1;
        const port = channel.port2;
        try {
            for (;;) {
                // eslint-disable-next-line no-await-in-loop
                received.push(valueOf(await port.receive_async(null)));
            }
        } catch (e) {
            assert(e.matches(Mp.Error, Mp.Error.CLOSED), `${e}`);
        }
        finished = true;
    })();
    for (let i = 0; i < 3; i++) {
        System.gc();
        // eslint-disable-next-line no-await-in-loop
        await sleep(10);
    }
    for (let i = 0; i < 5; i++)
        peer.post_message(int(i), []);
    peer.close();
    await waitFor(() => finished);
    assertDeepEqual(received, [0, 1, 2, 3, 4]);
});

run();
