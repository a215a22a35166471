# mptest.py: helpers shared by the PyGObject suites
#
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Every wait is bounded (TIMEOUT), so a bug fails a test instead of hanging.

import threading
import time
import unittest

import gi

gi.require_version('GLib', '2.0')
gi.require_version('Gio', '2.0')
gi.require_version('Mp', '1')
from gi.repository import GLib, Gio, Mp  # noqa: E402

__all__ = ['GLib', 'Gio', 'Mp', 'TIMEOUT', 'QUIET', 'ContextTestCase', 'Worker',
           'iterate_until', 'spin']

# Upper bound of every wait, in seconds; a correct library needs milliseconds.
TIMEOUT = 10.0
# How long "nothing more happens" is observed, in seconds.
QUIET = 0.05


def iterate_until(context, condition, timeout=TIMEOUT, what=None):
    """Iterates @context (non-blocking) until condition() holds; raises
    AssertionError after @timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for ' + (what or repr(condition)))
        if not context.iteration(False):
            time.sleep(0.0002)


def spin(context, seconds=QUIET):
    """Iterates @context for @seconds, so that what would (wrongly) happen can."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not context.iteration(False):
            time.sleep(0.0002)


class ContextTestCase(unittest.TestCase):
    """Each test runs with its own thread-default GLib.MainContext pushed, as
    self.context; ports started by the test bind to it."""

    def setUp(self):
        self.context = GLib.MainContext.new()
        self.context.push_thread_default()

    def tearDown(self):
        spin(self.context, 0.005)
        self.context.pop_thread_default()
        self.context = None

    def iterate_until(self, condition, what=None, timeout=TIMEOUT):
        iterate_until(self.context, condition, timeout, what)

    def spin(self, seconds=QUIET):
        spin(self.context, seconds)

    def assertGError(self, error, domain, code):
        self.assertIsInstance(error, GLib.Error)
        self.assertTrue(error.matches(domain, code),
                        'expected %s:%d, got %s:%d (%s)'
                        % (GLib.quark_to_string(domain), code, error.domain, error.code,
                           error.message))

    def assertRaisesGError(self, domain, code, fn, *args):
        with self.assertRaises(GLib.Error) as caught:
            fn(*args)
        self.assertGError(caught.exception, domain, code)
        return caught.exception


class Worker(threading.Thread):
    """A thread running its own GLib.MainContext, pushed as its thread-default
    context, in a GLib.MainLoop until stop()."""

    def __init__(self, name='worker'):
        super().__init__(name=name, daemon=True)
        self.context = GLib.MainContext.new()
        self.loop = GLib.MainLoop.new(self.context, False)
        self._running = threading.Event()

    def run(self):
        self.context.push_thread_default()
        try:
            self._running.set()
            self.loop.run()
        finally:
            self.context.pop_thread_default()

    def start(self):
        super().start()
        if not self._running.wait(TIMEOUT):
            raise AssertionError('worker thread did not start')
        return self

    def call(self, fn, *args):
        """Runs fn(*args) on the worker thread, from its context, and returns
        its result (or raises its exception)."""
        done = threading.Event()
        result = {}

        def dispatch(*_ignored):
            try:
                result['value'] = fn(*args)
            except BaseException as e:  # noqa: B036 (re-raised in the caller)
                result['error'] = e
            done.set()
            return GLib.SOURCE_REMOVE

        source = GLib.Idle()
        source.set_callback(dispatch)
        source.attach(self.context)
        if not done.wait(TIMEOUT):
            raise AssertionError('timed out waiting for the worker to run %r' % fn)
        if 'error' in result:
            raise result['error']
        return result.get('value')

    def stop(self):
        if self.is_alive():
            self.call(self.loop.quit)
            self.join(TIMEOUT)
            if self.is_alive():
                raise AssertionError('worker thread did not stop')
