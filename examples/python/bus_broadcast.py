#!/usr/bin/env python3
# bus_broadcast.py: a BroadcastChannel between two processes, over the session bus
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The script starts a second copy of itself (--child) with Gio.Subprocess.
# Both open a bus channel of the same name on the session bus
# (Mp.BroadcastChannel.new_for_bus with connection None): what one process
# posts reaches the other one's channel, never its own. The parent waits for
# the child's "ready", posts three jobs, and the child answers each with a
# result; message.get_sender() tells who sent a message that came over the bus
# (the sender's unique bus name; None for a post made in this process). Once
# every result is in, the parent posts "quit": the child closes its channel,
# which writes out what it posted, and exits 0.
#
# The parent also opens a plain channel of the same name, a log: it hears the
# parent's own posts, in process, but none of the child's — a plain channel
# never talks to the bus. Every wait is bounded: after TIMEOUT_S seconds a
# process gives up and exits 1.
#
# Run it against the build tree, on the session bus or on a bus of its own:
#   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
#     dbus-run-session -- /usr/bin/python3 examples/python/bus_broadcast.py

import os
import sys

import gi

gi.require_version('GLib', '2.0')
gi.require_version('Gio', '2.0')
gi.require_version('Mp', '1')
from gi.repository import GLib, Gio, Mp  # noqa: E402

# A channel name is global on its bus: every process of the user that opens a
# bus channel of this name on the session bus hears these posts, and can post
# among them. Prefixing the name with the application id keeps apart the
# channels of different applications that would both like to call theirs
# "jobs".
NAME = 'org.example.MpportDemo.jobs'
JOBS = [3, 4, 5]
TIMEOUT_S = 30


def post(channel, kind, job_id=0, value=0):
    channel.post_message(GLib.Variant('(sii)', (kind, job_id, value)))


def unpack(message):
    """(kind, job id, value) of a message, or (None, 0, 0) for anything else:
    any process on the bus may post on the name, anything at all."""
    data = message.get_data()
    if data is None or data.get_type_string() != '(sii)':
        return None, 0, 0
    return data.unpack()


def open_channel(who, problems):
    # Blocks until the bus has acknowledged the subscription: from then on,
    # nothing another process posts on NAME is missed. None: the session bus.
    channel = Mp.BroadcastChannel.new_for_bus(NAME, None, None)
    print('%s: channel %s open on the session bus as %s'
          % (who, channel.props.name, channel.props.connection.get_unique_name()))

    def on_message_error(channel, error):
        # A message from another process that is not a valid GVariant.
        problems.append('an invalid message from another process: %s' % error.message)

    def on_closed(channel, pspec):
        # The bus went away: the channel closed, and posts fail with Mp.Error.CLOSED.
        problems.append('the bus went away')

    channel.connect('message-error', on_message_error)
    channel.connect('notify::closed', on_closed)
    return channel


def child():
    loop = GLib.MainLoop()
    problems = []
    channel = open_channel('child', problems)
    quit_received = []

    def on_message(channel, message):
        kind, job_id, value = unpack(message)
        if kind == 'job':
            print('child: job %d (%d) from %s' % (job_id, value, message.get_sender()))
            post(channel, 'result', job_id, value * value)
        elif kind == 'quit':
            quit_received.append(message.get_sender())
            loop.quit()

    def give_up():
        problems.append('timed out after %d s' % TIMEOUT_S)
        loop.quit()
        return GLib.SOURCE_REMOVE

    channel.connect('message', on_message)
    GLib.timeout_add_seconds(TIMEOUT_S, give_up)
    # Subscribed: tell the parent that jobs can come.
    post(channel, 'ready')
    loop.run()
    # What the channel posted is written to the bus before close() returns.
    channel.close()

    for problem in problems:
        print('child: %s' % problem, file=sys.stderr)
    print('child: done')
    return 1 if problems or not quit_received else 0


def parent():
    loop = GLib.MainLoop()
    problems = []
    # Open before the child starts, so that the child's "ready" is not missed.
    channel = open_channel('parent', problems)
    me = channel.props.connection.get_unique_name()
    # A plain channel of the same name: in process only.
    log = Mp.BroadcastChannel.new(NAME)
    logged = []
    state = {'child': None, 'results': {}, 'exited': False}

    def on_message(channel, message):
        kind, job_id, value = unpack(message)
        sender = message.get_sender()
        if kind == 'ready':
            if sender is None or sender == me:
                problems.append('"ready" from %s' % sender)
            state['child'] = sender
            print('parent: the child is %s' % sender)
            for job_id, value in enumerate(JOBS):
                print('parent: job %d: %d' % (job_id, value))
                post(channel, 'job', job_id, value)
        elif kind == 'result':
            if sender != state['child']:
                problems.append('a result from %s' % sender)
            print('parent: result of job %d: %d (from %s)' % (job_id, value, sender))
            state['results'][job_id] = value
            if len(state['results']) == len(JOBS):
                post(channel, 'quit')

    def on_log(log, message):
        # Local posts only: the sender is always None here.
        kind, job_id, _value = unpack(message)
        logged.append((kind, job_id, message.get_sender()))

    def on_exited(proc, result):
        try:
            proc.wait_check_finish(result)
            print('parent: the child exited 0')
        except GLib.Error as e:
            problems.append('the child failed: %s' % e.message)
        state['exited'] = True
        loop.quit()

    def give_up():
        problems.append('timed out after %d s' % TIMEOUT_S)
        loop.quit()
        return GLib.SOURCE_REMOVE

    channel.connect('message', on_message)
    log.connect('message', on_log)
    proc = Gio.Subprocess.new([sys.executable, os.path.abspath(__file__), '--child'],
                              Gio.SubprocessFlags.NONE)
    proc.wait_check_async(None, on_exited)
    GLib.timeout_add_seconds(TIMEOUT_S, give_up)
    loop.run()
    # Never leave the child behind (a no-op once it exited).
    proc.force_exit()
    channel.close()
    log.close()

    results = [state['results'].get(job_id) for job_id in range(len(JOBS))]
    print('parent: results %s' % ', '.join(str(r) for r in results))
    jobs_logged = [job_id for kind, job_id, sender in logged if kind == 'job' and sender is None]
    print('parent: the plain channel heard %s' % ', '.join(kind for kind, _, _ in logged))
    if results != [value * value for value in JOBS]:
        problems.append('results %s' % results)
    if jobs_logged != list(range(len(JOBS))) or any(kind != 'job' and kind != 'quit'
                                                    for kind, _, _ in logged):
        problems.append('the plain channel heard %s' % logged)
    if not state['exited']:
        problems.append('the child did not exit')
    for problem in problems:
        print('parent: %s' % problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(child() if '--child' in sys.argv[1:] else parent())
