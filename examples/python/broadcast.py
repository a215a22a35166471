#!/usr/bin/env python3
# broadcast.py: a BroadcastChannel between threads
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Three worker threads, each running its own GLib.MainContext, open a
# BroadcastChannel of the same name as the main thread. A channel delivers on
# the context of the thread that created it, so every handler runs on its
# own thread. Every post reaches every other channel of the name (never the
# poster): the workers announce themselves, the main thread broadcasts a
# question, each worker answers it (the other workers hear the answers too),
# and a final "quit" broadcast makes each worker close its channel and leave.
#
# Run it against the build tree:
#   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
#     /usr/bin/python3 examples/python/broadcast.py

import sys
import threading

import gi

gi.require_version('GLib', '2.0')
gi.require_version('Mp', '1')
from gi.repository import GLib, Mp  # noqa: E402

NAME = 'org.mpport.example.chat'
N_WORKERS = 3
TIMEOUT_S = 30


class Worker(threading.Thread):
    def __init__(self, index):
        super().__init__(name='worker-%d' % index)
        self.index = index
        self.heard = []              # (from whom, what) heard from the other workers
        self.wrong_thread = False

    def run(self):
        context = GLib.MainContext.new()
        context.push_thread_default()
        loop = GLib.MainLoop.new(context, False)
        me = threading.get_ident()
        # Bound to this thread's context from creation.
        channel = Mp.BroadcastChannel.new(NAME)

        def on_message(channel, message):
            if threading.get_ident() != me:
                self.wrong_thread = True
            kind, sender, text = message.get_data().unpack()
            if kind == 'question':
                channel.post_message(GLib.Variant('(sss)', ('answer', self.name,
                                                            'the answer to "%s" is %d'
                                                            % (text, 42 + self.index))))
            elif kind == 'quit':
                channel.close()      # hears nothing more from now on
                loop.quit()
            else:
                self.heard.append((sender, kind))

        channel.connect('message', on_message)
        channel.post_message(GLib.Variant('(sss)', ('hello', self.name, 'ready')))
        loop.run()
        context.pop_thread_default()


def main():
    loop = GLib.MainLoop()
    main_thread = threading.get_ident()
    # Opened before the workers start, so it hears their hellos.
    channel = Mp.BroadcastChannel.new(NAME)
    hellos, answers = [], []
    problems = []

    def on_message(channel, message):
        if threading.get_ident() != main_thread:
            problems.append('handled off the main thread')
        kind, sender, text = message.get_data().unpack()
        if kind == 'hello':
            hellos.append(sender)
            if len(hellos) == N_WORKERS:
                # Everyone is listening now: ask.
                channel.post_message(GLib.Variant('(sss)', ('question', 'main', 'life')))
        elif kind == 'answer':
            answers.append('%s: %s' % (sender, text))
            if len(answers) == N_WORKERS:
                loop.quit()

    channel.connect('message', on_message)
    workers = [Worker(i) for i in range(N_WORKERS)]
    for worker in workers:
        worker.start()

    def give_up():
        problems.append('timed out')
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.timeout_add_seconds(TIMEOUT_S, give_up)
    loop.run()
    channel.post_message(GLib.Variant('(sss)', ('quit', 'main', '')))
    for worker in workers:
        worker.join(TIMEOUT_S)
    channel.close()

    print('hello from %s' % ', '.join(sorted(hellos)))
    for answer in sorted(answers):
        print(answer)
    for worker in workers:
        # Each worker heard every other worker's answer (and maybe hellos).
        others = sorted(s for s, kind in worker.heard if kind == 'answer')
        print('%s heard answers from %s' % (worker.name, ', '.join(others)))
        if worker.wrong_thread:
            problems.append('%s: handled off its thread' % worker.name)
        if worker.is_alive():
            problems.append('%s did not stop' % worker.name)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems or len(answers) != N_WORKERS else 0


if __name__ == '__main__':
    sys.exit(main())
