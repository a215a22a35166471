// receive-loop.js: what a GJS app does with ports — an `await` loop
//
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// GJS has no threads of its own: JS code runs on one thread, and a port it
// uses lives on that thread's (the default) main context. The other end can
// be anywhere: a worker thread of a C or Python library, or — as here, to
// keep the example self-contained — another part of the same app.
//
// A "downloader" posts progress and then the data on its port, then closes
// it. The consumer reads its port with `await port.receive_async()` in a plain
// loop; the loop ends at the end of the stream: Mp.Error.CLOSED, once the peer
// has closed and everything it posted before the close was read. A second
// receive shows cancellation with a Gio.Cancellable (Gio.IOErrorEnum.CANCELLED,
// whether the cancellable is cancelled before the call or while it waits).
//
// Run it against the build tree:
//   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
//     gjs -m examples/gjs/receive-loop.js

import GLib from 'gi://GLib';
import Gio from 'gi://Gio';
import Mp from 'gi://Mp?version=1';
import System from 'system';

// receive_async(cancellable) returns a Promise of the next Mp.Message.
Gio._promisify(Mp.MessagePort.prototype, 'receive_async', 'receive_finish');

/** The producer: a timer standing in for a worker, posting on @port. */
function download(port, chunks) {
    let i = 0;
    GLib.timeout_add(GLib.PRIORITY_DEFAULT, 10, () => {
        if (i < chunks.length) {
            port.post(new GLib.Variant('(sus)', ['chunk', i, chunks[i]]));
            i++;
            return GLib.SOURCE_CONTINUE;
        }
        port.post(new GLib.Variant('(sus)', ['done', i, '']));
        port.close();  // the consumer reads everything above, then the loop ends
        return GLib.SOURCE_REMOVE;
    });
}

/** The consumer: one message at a time, in order, until the peer closed. */
async function consume(port) {
    const parts = [];
    for (;;) {
        let message;
        try {
            // eslint-disable-next-line no-await-in-loop
            message = await port.receive_async(null);
        } catch (e) {
            if (e.matches(Mp.Error, Mp.Error.CLOSED))
                break;  // the end of the stream: the peer closed, all was read
            throw e;    // Mp.Error.INVALID_STATE would be a bug of ours
        }
        const [kind, index, text] = message.get_data().deepUnpack();
        if (kind === 'chunk') {
            print(`chunk ${index}: ${text}`);
            parts.push(text);
        } else {
            print(`done after ${index} chunks`);
        }
    }
    return parts.join(' ');
}

/** A receive that nobody answers, given up with a Gio.Cancellable. */
async function cancelled() {
    const channel = new Mp.MessageChannel();
    const cancellable = new Gio.Cancellable();
    GLib.timeout_add(GLib.PRIORITY_DEFAULT, 50, () => {
        cancellable.cancel();
        return GLib.SOURCE_REMOVE;
    });
    try {
        await channel.port2.receive_async(cancellable);
        return 'received?!';
    } catch (e) {
        if (!e.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED))
            throw e;
        // The message posted now goes to the next consumer, not the cancelled receive.
        channel.port1.post(new GLib.Variant('s', 'still here'));
        return `cancelled; the next message went to receive(): ${channel.port2.receive().get_data().unpack()}`;
    }
}

const loop = new GLib.MainLoop(null, false);
let status = 0;
(async () => {
    const channel = new Mp.MessageChannel();
    download(channel.port1, ['messages', 'from', 'a', 'port']);
    const text = await consume(channel.port2);
    print(`text: ${text}`);
    print(await cancelled());
    if (text !== 'messages from a port')
        status = 1;
})().catch(e => {
    logError(e);
    status = 1;
}).finally(() => loop.quit());

GLib.timeout_add_seconds(GLib.PRIORITY_DEFAULT, 30, () => {
    printerr('timed out');
    status = 1;
    loop.quit();
    return GLib.SOURCE_REMOVE;
});
loop.run();
System.exit(status);
