// bus-broadcast.js: a BroadcastChannel between two processes, over the session bus
//
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// The script starts a second copy of itself (`--child`) with Gio.Subprocess.
// Both open a bus channel of the same name on the session bus
// (Mp.BroadcastChannel.new_for_bus_async with a null connection): what one
// process posts reaches the other one's channel, never its own. The parent
// waits for the child's "ready", posts three jobs, and the child answers each
// with a result; message.get_sender() tells who sent a message that came over
// the bus (the sender's unique bus name; null for a post of this process).
// Once every result is in, the parent posts "quit": the child closes its
// channel, which writes out what it posted, and exits 0. Every wait is
// bounded: after TIMEOUT_S seconds a process gives up and exits 1.
//
// Run it against the build tree, on the session bus or on a bus of its own:
//   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
//     dbus-run-session -- gjs -m examples/gjs/bus-broadcast.js

import GLib from 'gi://GLib';
import Gio from 'gi://Gio';
import Mp from 'gi://Mp?version=1';
import System from 'system';

// A channel name is global on its bus: every process of the user that opens a
// bus channel of this name on the session bus hears these posts, and can post
// among them. Prefixing the name with the application id keeps apart the
// channels of different applications that would both like to call theirs
// "jobs".
const NAME = 'org.example.MpportDemo.jobs';
const JOBS = [3, 4, 5];
const TIMEOUT_S = 30;

// Mp.BroadcastChannel.new_for_bus_async(name, connection, cancellable) returns
// a Promise of the channel, which is bound to the main context. It settles
// once the bus has acknowledged the subscription: from then on, nothing the
// other process posts is missed.
Gio._promisify(Mp.BroadcastChannel, 'new_for_bus_async', 'new_for_bus_finish');
// wait_check_async(cancellable) returns a Promise that resolves once the
// process exited 0, and rejects otherwise.
Gio._promisify(Gio.Subprocess.prototype, 'wait_check_async', 'wait_check_finish');

const isChild = ARGV.includes('--child');
const who = isChild ? 'child' : 'parent';
let childProcess = null;

function post(channel, kind, id = 0, value = 0) {
    channel.post_message(new GLib.Variant('(sii)', [kind, id, value]));
}

/** [kind, id, value] of a message, or [null] for anything else: any process on
 * the bus may post on the name, anything at all. */
function unpack(message) {
    const data = message.get_data();
    return data?.get_type_string() === '(sii)' ? data.deepUnpack() : [null];
}

/** Opens the bus channel; a message from another process that is not a valid
 * GVariant arrives as "message-error" instead of "message". */
async function openChannel() {
    const channel = await Mp.BroadcastChannel.new_for_bus_async(NAME, null, null);
    const me = channel.connection.get_unique_name();
    print(`${who}: channel ${channel.name} open on the session bus as ${me}`);
    channel.connect('message-error', (_c, error) => {
        printerr(`${who}: an invalid message from another process: ${error.message}`);
    });
    return channel;
}

/** Resolves with the next message for which @accept returns true. */
function nextMessage(channel, accept) {
    return new Promise(resolve => {
        const id = channel.connect('message', (_c, message) => {
            if (!accept(message))
                return;
            channel.disconnect(id);
            resolve(message);
        });
    });
}

/** The child: answers each job with its square until the parent says quit. */
async function child() {
    const channel = await openChannel();
    const done = new Promise((resolve, reject) => {
        channel.connect('message', (_c, message) => {
            const [kind, id, value] = unpack(message);
            if (kind === 'job') {
                print(`child: job ${id} (${value}) from ${message.get_sender()}`);
                post(channel, 'result', id, value * value);
            } else if (kind === 'quit') {
                resolve();
            }
        });
        // The bus went away: the channel closed, and posts fail with Mp.Error.CLOSED.
        channel.connect('notify::closed', () => reject(new Error('the bus went away')));
    });
    // Subscribed: tell the parent that jobs can come.
    post(channel, 'ready');
    await done;
    // What the channel posted is written to the bus before close() returns.
    channel.close();
    print('child: done');
}

/** The parent: starts the child, hands out the jobs, collects the results. */
async function parent() {
    // Open before the child starts, so that the child's "ready" is not missed.
    const channel = await openChannel();
    const me = channel.connection.get_unique_name();

    const gjs = GLib.find_program_in_path('gjs');
    const script = Gio.File.new_for_uri(import.meta.url).get_path();
    childProcess = Gio.Subprocess.new([gjs, '-m', script, '--child'], Gio.SubprocessFlags.NONE);
    const exited = childProcess.wait_check_async(null);
    // Waits for @promise, unless the child exits first.
    const unlessExited = promise => Promise.race([promise, exited.then(() => {
        throw new Error('the child exited too early');
    })]);

    try {
        const ready = await unlessExited(
            nextMessage(channel, m => unpack(m)[0] === 'ready'));
        const childName = ready.get_sender();
        print(`parent: the child is ${childName}`);
        if (childName === null || childName === me)
            throw new Error(`unexpected sender ${childName}`);

        const results = new Map();
        const allResults = new Promise((resolve, reject) => {
            channel.connect('message', (_c, message) => {
                const [kind, id, value] = unpack(message);
                if (kind !== 'result')
                    return;
                if (message.get_sender() !== childName)
                    reject(new Error(`a result from ${message.get_sender()}`));
                print(`parent: result of job ${id}: ${value} (from ${message.get_sender()})`);
                results.set(id, value);
                if (results.size === JOBS.length)
                    resolve();
            });
        });
        JOBS.forEach((value, id) => {
            print(`parent: job ${id}: ${value}`);
            post(channel, 'job', id, value);
        });
        await unlessExited(allResults);

        post(channel, 'quit');
        await exited;
        print('parent: the child exited 0');

        const expected = JOBS.map(value => value * value);
        const got = JOBS.map((_value, id) => results.get(id));
        if (got.join(',') !== expected.join(','))
            throw new Error(`results ${got} instead of ${expected}`);
        print(`parent: results ${got.join(', ')}`);
    } finally {
        channel.close();
    }
}

const loop = new GLib.MainLoop(null, false);
let status = 0;

(isChild ? child() : parent()).catch(e => {
    printerr(`${who}: ${e.message}`);
    status = 1;
}).finally(() => loop.quit());

GLib.timeout_add_seconds(GLib.PRIORITY_DEFAULT, TIMEOUT_S, () => {
    printerr(`${who}: timed out after ${TIMEOUT_S} s`);
    status = 1;
    loop.quit();
    return GLib.SOURCE_REMOVE;
});
loop.run();
// Never leave the child behind (a no-op once it exited).
childProcess?.force_exit();
System.exit(status);
