#!/usr/bin/env python3
# backpressure.py: a producer thread paced by a slow consumer on the main loop
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The main thread is the consumer: its end of the channel is started on the
# default main context and has a "high-water-mark"; its "message" handler is
# slow on purpose. The producer is a thread with a GLib.MainContext of its
# own. It posts with post_message_async() and makes its next post from the
# callback of the previous one, which runs on the producer's context: while
# the consumer's queue holds as many messages as its mark, the post waits, and
# the producer with it. So the consumer's queue never holds more than the mark.
#
# After its last post completed, the producer closes its port; the consumer
# gets "close" after the last message. A second run without a mark (0, as on
# the Web) shows what the mark saves: the producer runs ahead and everything
# queues at the consumer.
#
# Run it against the build tree:
#   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
#     /usr/bin/python3 examples/python/backpressure.py

import sys
import threading
import time

import gi

gi.require_version('GLib', '2.0')
gi.require_version('Mp', '1')
from gi.repository import GLib, Mp  # noqa: E402

N_MESSAGES = 5000
MARK = 32
WORK_S = 0.0001
TIMEOUT_S = 30


class Producer(threading.Thread):
    """Posts 0, 1, ... N_MESSAGES - 1, each once the previous one is queued."""

    def __init__(self, port):
        super().__init__(name='producer')
        self.port = port
        self.posted = 0
        self.error = None

    def run(self):
        context = GLib.MainContext.new()
        context.push_thread_default()    # the post callbacks run on this thread
        self.loop = GLib.MainLoop.new(context, False)
        self.post_next()
        self.loop.run()
        self.port.close()                # the consumer gets "close" after the last one
        context.pop_thread_default()

    def post_next(self):
        # A post made after the consumer closed succeeds and drops the message,
        # as post_message() does: ask before each one.
        if self.port.is_peer_closed():
            self.loop.quit()
            return
        self.port.post_message_async(GLib.Variant('u', self.posted), [], None, self.on_posted)

    def on_posted(self, port, result):
        try:
            port.post_message_finish(result)
        except GLib.Error as e:          # Mp.Error.CLOSED: the consumer closed
            self.error = e
            self.loop.quit()
            return
        self.posted += 1
        if self.posted == N_MESSAGES:
            self.loop.quit()
        else:
            self.post_next()


def run(mark):
    """One run: returns (received, in order, peak queue, the producer's error)."""
    main_thread = threading.get_ident()
    loop = GLib.MainLoop()
    channel = Mp.MessageChannel.new()
    port = channel.get_port1()
    seen = {'received': 0, 'in_order': True, 'peak': 0}

    def on_message(port, message):
        if threading.get_ident() != main_thread or message.get_data().unpack() != seen['received']:
            seen['in_order'] = False
        seen['received'] += 1
        # The message handled here is no longer queued: the rest waits.
        seen['peak'] = max(seen['peak'], port.get_n_queued())
        time.sleep(WORK_S)               # slower than the producer

    def give_up():
        print('timed out', file=sys.stderr)
        port.close()                     # a waiting post fails with Mp.Error.CLOSED
        loop.quit()
        return GLib.SOURCE_REMOVE

    port.set_high_water_mark(mark)       # the mark belongs to the receiving port
    port.connect('message', on_message)
    port.connect('close', lambda port: loop.quit())
    port.start()                         # no context pushed: the default one

    producer = Producer(channel.get_port2())
    producer.start()
    timeout_id = GLib.timeout_add_seconds(TIMEOUT_S, give_up)
    loop.run()
    GLib.source_remove(timeout_id)
    producer.join()
    return seen['received'], seen['in_order'], seen['peak'], producer.error


def main():
    ok = True
    for mark in (MARK, 0):
        received, in_order, peak, error = run(mark)
        print('%s: %d of %d messages%s; the queue peaked at %d'
              % ('mark %d' % mark if mark else 'no mark', received, N_MESSAGES,
                 ', in order' if in_order else ', OUT OF ORDER', peak))
        if error is not None:
            print('producer: %s' % error.message, file=sys.stderr)
        ok = (ok and error is None and received == N_MESSAGES and in_order
              and (mark == 0 or peak <= mark))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
