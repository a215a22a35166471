// process-port.js: a GJS app that hands work to a helper process over a port
//
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// GJS runs JavaScript on one thread; heavy or crash-prone work can go to a
// helper process instead, written in C or Python. Here the helper is the
// child of examples/python/process_port.py (run as `process_port.py --child 3`),
// and the conversation is the one described there.
//
// Mp.MessagePort.new_for_launcher() returns the port at once; the helper is
// spawned with the same Gio.SubprocessLauncher and finds its end of the
// connection at file descriptor 3 (CHILD_FD, on its command line). The app
// transfers one port of a local Mp.MessageChannel to the helper in the first
// message, and gets progress reports on the other port. It posts the tasks and
// reads the results, in order, with `await port.receive_async()`; then it
// closes the port: the helper sees "close", closes the progress port and exits
// 0. The app checks every result and report, and the helper's exit status.
// Every wait is bounded: after TIMEOUT_S seconds the app gives up and exits 1.
//
// Run it against the build tree, with a python3 that has PyGObject:
//   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
//     gjs -m examples/gjs/process-port.js [/usr/bin/python3]

import GLib from 'gi://GLib';
import Gio from 'gi://Gio';
import Mp from 'gi://Mp?version=1';
import System from 'system';

const TASKS = [3, 1, 4, 1, 5, 9, 2, 6];
// Where the helper finds its end of the connection: any number above 2.
const CHILD_FD = 3;
const TIMEOUT_S = 30;

// receive_async(cancellable) returns a Promise of the next Mp.Message.
Gio._promisify(Mp.MessagePort.prototype, 'receive_async', 'receive_finish');
// wait_check_async(cancellable) returns a Promise that resolves once the
// process exited 0, and rejects otherwise.
Gio._promisify(Gio.Subprocess.prototype, 'wait_check_async', 'wait_check_finish');

let helper = null;

/** The message's data unpacked, or null if it is not of @typeString. */
function unpack(message, typeString) {
    const data = message.get_data();
    return data?.get_type_string() === typeString ? data.deepUnpack() : null;
}

/** Spawns the helper; returns the app's port, entangled with the helper's. */
function spawnHelper() {
    const python = ARGV[0] ?? GLib.find_program_in_path('python3');
    const script = Gio.File.new_for_uri(import.meta.url).get_parent()
        .resolve_relative_path('../python/process_port.py').get_path();

    const launcher = new Gio.SubprocessLauncher({flags: Gio.SubprocessFlags.NONE});
    // The port is ready at once; what is posted on it waits for the helper.
    const port = Mp.MessagePort.new_for_launcher(launcher, CHILD_FD);
    helper = launcher.spawnv([python, script, '--child', `${CHILD_FD}`]);
    // Close the launcher's copy of the helper's end now rather than when the
    // garbage collector finalizes the launcher: as long as it is open, the
    // helper's exit would not close the port here.
    launcher.close();
    return port;
}

/** The @n results, one at a time and in order. The port is not started: each
 * message goes to a receive. If the helper dies first, the receive fails with
 * Mp.Error.CLOSED once everything it posted was read; a message it posted that
 * cannot be decoded fails it with Gio.IOErrorEnum.INVALID_DATA. */
async function receiveResults(port, n) {
    const results = [];
    while (results.length < n) {
        // eslint-disable-next-line no-await-in-loop
        const message = await port.receive_async(null);
        const [kind, value] = unpack(message, '(si)') ?? [null];
        if (kind !== 'result')
            throw new Error(`unexpected message ${message.get_data()?.print(true)}`);
        print(`app: result ${value}`);
        results.push(value);
    }
    return results;
}

async function main() {
    const port = spawnHelper();
    const exited = helper.wait_check_async(null);

    // A channel of this app: port1 stays here, port2 travels to the helper in
    // the transfer list of the first message. The helper's reports arrive as
    // "message" signals on port1, and "close" follows the last one.
    const progress = new Mp.MessageChannel();
    const reports = [];
    const progressClosed = new Promise(resolve => {
        progress.port1.connect('close', () => resolve());
    });
    progress.port1.connect('message', (_port, message) => {
        const [done, total] = unpack(message, '(ii)') ?? [0, 0];
        print(`app: progress ${done}/${total}`);
        reports.push(done);
    });
    progress.port1.start();

    port.post_message(new GLib.Variant('(si)', ['progress', TASKS.length]),
        [progress.port2]);
    for (const task of TASKS)
        port.post(new GLib.Variant('(si)', ['task', task]));

    let results;
    try {
        results = await receiveResults(port, TASKS.length);
    } finally {
        // Done, or gone wrong: either way the helper's port closes too, and
        // the helper exits. If it failed, its exit status says more than the
        // error of the receive.
        port.close();
        await exited;
    }
    print('app: the helper exited 0');
    await progressClosed;

    const expected = TASKS.map(task => task * task);
    if (results.join(',') !== expected.join(','))
        throw new Error(`results ${results} instead of ${expected}`);
    const expectedReports = TASKS.map((_task, i) => i + 1);
    if (reports.join(',') !== expectedReports.join(','))
        throw new Error(`progress reports ${reports} instead of ${expectedReports}`);
    print(`app: ${results.length} results, ${reports.length} progress reports`);
}

const loop = new GLib.MainLoop(null, false);
let status = 0;

main().catch(e => {
    printerr(`app: ${e.message}`);
    status = 1;
}).finally(() => loop.quit());

GLib.timeout_add_seconds(GLib.PRIORITY_DEFAULT, TIMEOUT_S, () => {
    printerr(`app: timed out after ${TIMEOUT_S} s`);
    status = 1;
    loop.quit();
    return GLib.SOURCE_REMOVE;
});
loop.run();
// Never leave the helper behind (a no-op once it exited).
helper?.force_exit();
System.exit(status);
