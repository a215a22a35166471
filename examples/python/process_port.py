#!/usr/bin/env python3
# process_port.py: a MessagePort whose peer is a helper process
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The parent makes a port with Mp.MessagePort.new_for_launcher() and spawns a
# second copy of this script (--child 3) with the same Gio.SubprocessLauncher:
# the child finds its end of the connection at file descriptor 3 and makes its
# port with Mp.MessagePort.new_for_fd_sync(). From then on both are ordinary
# ports, and mpport's own thread carries the messages between the processes.
#
# The conversation, every message a (si):
#   parent -> child  ('progress', n)  carries, in its transfer list, one port of
#                                     a local Mp.MessageChannel of the parent:
#                                     the child reports progress on it
#   parent -> child  ('task', x)      n times; the child answers each in order
#   child -> parent  ('result', x*x)  on the first port, and (done, n), a (ii),
#                                     on the progress port
# Once every result is in, the parent closes its port. The child sees "close",
# closes the progress port and exits 0; the parent then gets "close" on its end
# of the progress channel, after every report, and the child's exit status.
# Every wait is bounded: after TIMEOUT_S seconds a process gives up and exits 1.
#
# examples/gjs/process-port.js runs this script's child from a GJS parent.
#
# Run it against the build tree:
#   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
#     /usr/bin/python3 examples/python/process_port.py

import os
import sys

import gi

gi.require_version('GLib', '2.0')
gi.require_version('Gio', '2.0')
gi.require_version('Mp', '1')
from gi.repository import GLib, Gio, Mp  # noqa: E402

TASKS = [3, 1, 4, 1, 5, 9, 2, 6]
# Where the child finds its end of the connection: any number above 2.
CHILD_FD = 3
TIMEOUT_S = 30


def unpack(message, type_string):
    """The message's data as a tuple, or None if it is not of type_string."""
    data = message.get_data()
    if data is None or data.get_type_string() != type_string:
        return None
    return data.unpack()


def child(fd):
    # Blocks until the connection to the parent is authenticated.
    port = Mp.MessagePort.new_for_fd_sync(fd, None)
    loop = GLib.MainLoop()
    problems = []
    state = {'progress': None, 'total': 0, 'done': 0}

    def on_message(port, message):
        kind, value = unpack(message, '(si)') or (None, 0)
        if kind == 'progress':
            # The parent's port arrived in this process: post on it as on any port.
            (state['progress'],) = message.get_ports()
            state['total'] = value
        elif kind == 'task':
            port.post(GLib.Variant('(si)', ('result', value * value)))
            state['done'] += 1
            if state['progress'] is not None:
                state['progress'].post(GLib.Variant('(ii)', (state['done'], state['total'])))
        else:
            problems.append('unexpected message %s' % message.get_data())
            loop.quit()

    def on_message_error(port, error):
        # A message from the other process that could not be decoded.
        problems.append('an invalid message: %s' % error.message)

    def give_up():
        problems.append('timed out after %d s' % TIMEOUT_S)
        loop.quit()
        return GLib.SOURCE_REMOVE

    port.connect('message', on_message)
    port.connect('message-error', on_message_error)
    # The parent closed its port (or went away): the work is over.
    port.connect('close', lambda port: loop.quit())
    port.start()
    GLib.timeout_add_seconds(TIMEOUT_S, give_up)
    loop.run()

    # The parent gets "close" on its end after every report posted here.
    if state['progress'] is not None:
        state['progress'].close()
    port.close()
    for problem in problems:
        print('child: %s' % problem, file=sys.stderr)
    print('child: %d tasks done' % state['done'])
    return 1 if problems else 0


def parent():
    loop = GLib.MainLoop()
    problems = []
    results = []
    reports = []
    state = {'progress_closed': False, 'exited': False}

    # The port is ready at once; what is posted on it waits for the child.
    launcher = Gio.SubprocessLauncher.new(Gio.SubprocessFlags.NONE)
    port = Mp.MessagePort.new_for_launcher(launcher, CHILD_FD)
    proc = launcher.spawnv([sys.executable, os.path.abspath(__file__),
                            '--child', str(CHILD_FD)])
    # Close the launcher's copy of the child's end: as long as it is open, the
    # child's exit would not close the port here.
    launcher.close()

    def maybe_done():
        if state['progress_closed'] and state['exited']:
            loop.quit()

    def on_result(port, message):
        kind, value = unpack(message, '(si)') or (None, 0)
        if kind != 'result':
            problems.append('unexpected message %s' % message.get_data())
            loop.quit()
            return
        print('parent: result %d' % value)
        results.append(value)
        if len(results) == len(TASKS):
            port.close()        # the child's port closes too, and the child exits

    def on_message_error(port, error):
        problems.append('an invalid message from the child: %s' % error.message)

    def on_report(port, message):
        done, total = unpack(message, '(ii)') or (0, 0)
        print('parent: progress %d/%d' % (done, total))
        reports.append(done)

    def on_progress_closed(port):
        state['progress_closed'] = True
        maybe_done()

    def on_exited(proc, result):
        try:
            proc.wait_check_finish(result)
            print('parent: the child exited 0')
        except GLib.Error as e:
            problems.append('the child failed: %s' % e.message)
        state['exited'] = True
        maybe_done()

    def give_up():
        problems.append('timed out after %d s' % TIMEOUT_S)
        loop.quit()
        return GLib.SOURCE_REMOVE

    port.connect('message', on_result)
    port.connect('message-error', on_message_error)
    port.start()

    # A channel of this process: we keep port1, and port2 travels to the child
    # in the transfer list of the first message.
    progress = Mp.MessageChannel.new()
    mine = progress.get_port1()
    mine.connect('message', on_report)
    mine.connect('close', on_progress_closed)
    mine.start()
    port.post_message(GLib.Variant('(si)', ('progress', len(TASKS))), [progress.get_port2()])
    for task in TASKS:
        port.post(GLib.Variant('(si)', ('task', task)))

    proc.wait_check_async(None, on_exited)
    GLib.timeout_add_seconds(TIMEOUT_S, give_up)
    loop.run()
    # Never leave the child behind (a no-op once it exited).
    proc.force_exit()
    port.close()
    mine.close()

    expected = [task * task for task in TASKS]
    if results != expected:
        problems.append('results %s instead of %s' % (results, expected))
    if reports != list(range(1, len(TASKS) + 1)):
        problems.append('progress reports %s' % reports)
    if not state['progress_closed']:
        problems.append('the progress port did not close')
    if not state['exited']:
        problems.append('the child did not exit')
    for problem in problems:
        print('parent: %s' % problem, file=sys.stderr)
    print('parent: %d results, %d progress reports' % (len(results), len(reports)))
    return 1 if problems else 0


if __name__ == '__main__':
    if sys.argv[1:2] == ['--child']:
        sys.exit(child(int(sys.argv[2])))
    sys.exit(parent())
