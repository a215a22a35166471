#!/usr/bin/env python3
# thread_pool.py: a pool of worker threads, each with its own GLib.MainContext,
# taking jobs and reporting back through MessagePorts
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The main thread owns one end of a "control" channel per worker; the worker
# owns the other end, started on the worker's own context, so its handler
# runs on the worker thread. Each job message carries, in its transfer list,
# a fresh port for that job: the worker reports progress and the result on
# it, then closes it. The main thread started the other end on its own
# context, so the reports are handled on the main thread. When every job has
# reported, the main thread closes the control ports; each worker notices the
# "close" and leaves its loop.
#
# Giving up on a job is closing its port: between two chunks of work the
# worker asks reply.is_peer_closed() and stops. Its posts never fail because
# of that: those made after the close are dropped. (Here the main thread
# gives up on every open job only if the whole run times out.)
#
# Run it against the build tree:
#   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
#     /usr/bin/python3 examples/python/thread_pool.py

import sys
import threading

import gi

gi.require_version('GLib', '2.0')
gi.require_version('Mp', '1')
from gi.repository import GLib, Mp  # noqa: E402

N_WORKERS = 4
LIMITS = [20000, 40000, 60000, 80000, 30000, 50000, 70000, 90000]
CHUNK = 5000
TIMEOUT_S = 30


def count_primes(start, stop):
    """Counts the primes in [start, stop), the slow way: this is the work."""
    count = 0
    for n in range(max(start, 2), stop):
        if all(n % d for d in range(2, int(n ** 0.5) + 1)):
            count += 1
    return count


class Worker(threading.Thread):
    """One pool thread: its own context, one control port, jobs one by one."""

    def __init__(self, index, port):
        super().__init__(name='worker-%d' % index)
        self.port = port

    def run(self):
        context = GLib.MainContext.new()
        context.push_thread_default()
        loop = GLib.MainLoop.new(context, False)
        self.port.connect('message', self.on_job)
        self.port.connect('close', lambda port: loop.quit())
        self.port.start()        # binds the port to this thread's context
        loop.run()
        context.pop_thread_default()

    def on_job(self, port, message):
        job, limit = message.get_data().unpack()
        (reply,) = message.get_ports()      # where to report this job
        count = 0
        for start in range(0, limit, CHUNK):
            if reply.is_peer_closed():
                break                       # the main thread gave up on this job
            count += count_primes(start, min(start + CHUNK, limit))
            done = min(start + CHUNK, limit)
            reply.post(GLib.Variant('(suu)', ('progress', job, done)))
        else:
            reply.post(GLib.Variant('(sus)', ('result', job, '%d primes below %d, on %s'
                                              % (count, limit, self.name))))
        reply.close()                       # main gets "close" after the last report


def main():
    main_thread = threading.get_ident()
    loop = GLib.MainLoop()
    results = {}
    progress = {job: 0 for job in range(len(LIMITS))}
    n_reports = 0
    problems = []
    open_jobs = set(range(len(LIMITS)))
    job_ports = []
    controls = []
    workers = []

    for i in range(N_WORKERS):
        control = Mp.MessageChannel.new()
        controls.append(control.get_port1())
        workers.append(Worker(i, control.get_port2()))
    for worker in workers:
        worker.start()

    def on_report(port, message):
        nonlocal n_reports
        if threading.get_ident() != main_thread:
            problems.append('a report was handled off the main thread')
        kind, job, value = message.get_data().unpack()
        n_reports += 1
        if kind == 'progress':
            if value <= progress[job]:
                problems.append('job %d: progress out of order' % job)
            progress[job] = value
        else:
            results[job] = value

    def on_job_closed(port, job):
        # The worker closed the job's port after its last report.
        open_jobs.discard(job)
        if not open_jobs:
            loop.quit()

    for job, limit in enumerate(LIMITS):
        reply = Mp.MessageChannel.new()
        mine = reply.get_port1()
        mine.connect('message', on_report)
        mine.connect('close', on_job_closed, job)
        mine.start()             # no context pushed: the default one, that loop runs
        job_ports.append(mine)
        # Round robin; the job's own port travels in the transfer list.
        controls[job % N_WORKERS].post_message(GLib.Variant('(uu)', (job, limit)),
                                               [reply.get_port2()])

    def give_up():
        print('timed out', file=sys.stderr)
        for port in job_ports:
            port.close()         # the workers stop at their next is_peer_closed()
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.timeout_add_seconds(TIMEOUT_S, give_up)
    loop.run()

    for port in controls:
        port.close()             # each worker notices the "close" and stops
    for worker in workers:
        worker.join(TIMEOUT_S)

    for job in sorted(results):
        print('job %d: %s' % (job, results[job]))
    print('%d jobs, %d reports, %d workers stopped' % (len(results), n_reports,
                                                       sum(not w.is_alive() for w in workers)))
    for problem in problems:
        print(problem, file=sys.stderr)
    ok = (not problems and len(results) == len(LIMITS) and all(not w.is_alive() for w in workers)
          and all(progress[job] == limit for job, limit in enumerate(LIMITS)))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
