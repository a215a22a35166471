// backpressure.js: a producer that awaits room at a slow consumer
//
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The consumer's port has a "high-water-mark": once that many messages are
// queued at it, `await port.post_message_async(...)` on the other end waits
// until the consumer has taken one out. A producer that awaits each post
// therefore runs only as far ahead of the consumer as the mark allows, and
// the consumer's queue — its memory — stays within the mark.
//
// GJS runs JavaScript on one thread, so here producer and consumer share the
// main loop; the consumer handles "message" slowly, at a priority below the
// producer's, as a consumer that falls behind would. (The consumer could as
// well be a worker thread of a C or Python library: the mark works the same.)
//
//   1. N messages with a mark: all arrive, in order; the queue stays within it.
//   2. The same without a mark (0, as on the Web): the producer posts
//      everything before the consumer gets going, and it all queues.
//   3. The consumer stalls (takes nothing), so the producer's next post
//      waits; then the consumer closes its port: the waiting post fails with
//      Mp.Error.CLOSED, which ends the producer.
//
// Run it against the build tree:
//   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
//     gjs -m examples/gjs/backpressure.js

import GLib from 'gi://GLib';
import Gio from 'gi://Gio';
import Mp from 'gi://Mp?version=1';
import System from 'system';

// post_message_async(message, transfer, cancellable) returns a Promise.
Gio._promisify(Mp.MessagePort.prototype, 'post_message_async', 'post_message_finish');

const N_MESSAGES = 2000;
const MARK = 16;
const WORK_US = 200;

/** Busy for @us microseconds: the consumer's real work would be here. */
function slowWork(us) {
    const until = GLib.get_monotonic_time() + us;
    while (GLib.get_monotonic_time() < until)
        ;
}

/** Starts a slow consumer on @port; resolves to what it saw once "close" came. */
function consume(port, mark) {
    port.set_high_water_mark(mark);          // the receiving port's mark
    port.set_priority(GLib.PRIORITY_LOW);    // behind the producer: it falls behind
    const seen = {received: 0, inOrder: true, peakQueued: 0};
    return new Promise(resolve => {
        port.connect('message', (p, message) => {
            if (message.get_data().unpack() !== seen.received)
                seen.inOrder = false;
            seen.received++;
            // The message handled here is no longer queued; the rest waits.
            seen.peakQueued = Math.max(seen.peakQueued, p.get_n_queued());
            slowWork(WORK_US);
        });
        port.connect('close', () => resolve(seen));
        port.start();
    });
}

/** Posts 0, 1, ... on @port, each once the previous one is queued. */
async function produce(port, count) {
    let posted = 0;
    try {
        // A post made once the consumer has closed succeeds and drops the
        // message, as post_message() does: ask before each one.
        for (; posted < count && !port.is_peer_closed(); posted++) {
            // eslint-disable-next-line no-await-in-loop
            await port.post_message_async(new GLib.Variant('u', posted), [], null);
        }
    } catch (e) {
        // Room will never come: the consumer closed while this post waited.
        if (!e.matches(Mp.Error, Mp.Error.CLOSED))
            throw e;
        return {posted, closed: true};
    } finally {
        port.close();   // the consumer gets "close" after the last message
    }
    return {posted, closed: false};
}

async function run(mark) {
    const channel = new Mp.MessageChannel();
    const seen = consume(channel.port2, mark);
    const done = await produce(channel.port1, N_MESSAGES);
    return {...done, ...await seen};
}

/** A consumer that takes nothing, and gives up after @ms milliseconds. */
function stall(ms) {
    const channel = new Mp.MessageChannel();
    const consumer = channel.port2;
    consumer.set_high_water_mark(MARK);   // never started: nothing is taken out
    GLib.timeout_add(GLib.PRIORITY_DEFAULT, ms, () => {
        consumer.close();
        return GLib.SOURCE_REMOVE;
    });
    return produce(channel.port1, N_MESSAGES);
}

async function main() {
    const problems = [];

    const paced = await run(MARK);
    print(`mark ${MARK}: ${paced.received} of ${N_MESSAGES} messages${
        paced.inOrder ? ', in order' : ', OUT OF ORDER'}; the queue peaked at ${paced.peakQueued}`);
    if (paced.received !== N_MESSAGES || !paced.inOrder || paced.peakQueued > MARK)
        problems.push('paced run');

    const unlimited = await run(0);
    print(`no mark: ${unlimited.received} of ${N_MESSAGES} messages${
        unlimited.inOrder ? ', in order' : ', OUT OF ORDER'}; the queue peaked at ${
        unlimited.peakQueued}`);
    if (unlimited.received !== N_MESSAGES || !unlimited.inOrder)
        problems.push('unlimited run');

    const stalled = await stall(100);
    print(`stalled consumer: ${stalled.posted} posts went in, the next one ${
        stalled.closed ? 'failed with Mp.Error.CLOSED' : 'did not fail'}`);
    if (stalled.posted !== MARK || !stalled.closed)
        problems.push('stalled run');

    return problems;
}

const loop = new GLib.MainLoop(null, false);
let status = 0;
main().then(problems => {
    for (const problem of problems)
        printerr(`problem: ${problem}`);
    status = problems.length > 0 ? 1 : 0;
}).catch(e => {
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
