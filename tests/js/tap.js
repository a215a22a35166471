// tap.js: a small TAP harness for the GJS suites (run with `gjs -m`)
//
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// test(name, fn) registers a case; fn may be async. run() runs the cases in
// order inside a GLib.MainLoop on the default main context (the one GJS
// iterates, and the one ports started from JS bind to), prints TAP and exits
// with a non-zero status if any case failed. Every wait is bounded.

import GLib from 'gi://GLib';
import System from 'system';

const cases = [];

/** How long one case may take; a correct library needs milliseconds. */
export const CASE_TIMEOUT_MS = 10000;

export function test(name, fn) {
    cases.push({name, fn});
}

export class AssertionError extends Error {}

function show(value) {
    if (value instanceof GLib.Variant)
        return `GLib.Variant(${value.print(true)})`;
    try {
        return JSON.stringify(value);
    } catch {
        return String(value);
    }
}

export function assert(condition, message = 'assertion failed') {
    if (!condition)
        throw new AssertionError(message);
}

export function assertEqual(actual, expected, message = '') {
    if (actual !== expected)
        throw new AssertionError(`${message} expected ${show(expected)}, got ${show(actual)}`);
}

export function assertDeepEqual(actual, expected, message = '') {
    const a = JSON.stringify(actual), e = JSON.stringify(expected);
    if (a !== e)
        throw new AssertionError(`${message} expected ${e}, got ${a}`);
}

/** Asserts that @error is a GLib.Error of @domain (an error enum such as
 * Mp.Error or Gio.IOErrorEnum) and @code. */
export function assertGError(error, domain, code) {
    if (!(error instanceof GLib.Error))
        throw new AssertionError(`expected a GLib.Error, got ${error}`);
    if (!error.matches(domain, code))
        throw new AssertionError(`expected GLib.Error code ${code}, got ${error.domain}:${error.code} (${error.message})`);
}

/** Calls @fn and asserts that it throws a GLib.Error of @domain and @code;
 * returns the error. */
export function assertThrowsGError(fn, domain, code) {
    try {
        fn();
    } catch (e) {
        assertGError(e, domain, code);
        return e;
    }
    throw new AssertionError('expected a GLib.Error, nothing was thrown');
}

export async function assertRejectsGError(promise, domain, code) {
    try {
        await promise;
    } catch (e) {
        assertGError(e, domain, code);
        return e;
    }
    throw new AssertionError('expected a GLib.Error, the promise resolved');
}

/** Resolves after @ms of main loop iterations. */
export function sleep(ms) {
    return new Promise(resolve => {
        GLib.timeout_add(GLib.PRIORITY_DEFAULT, ms, () => {
            resolve();
            return GLib.SOURCE_REMOVE;
        });
    });
}

/** Resolves once @condition() holds, checked every millisecond while the main
 * loop runs; rejects after @timeoutMs. */
export function waitFor(condition, what = String(condition), timeoutMs = CASE_TIMEOUT_MS / 2) {
    const deadline = GLib.get_monotonic_time() + timeoutMs * 1000;
    return new Promise((resolve, reject) => {
        if (condition()) {
            resolve();
            return;
        }
        GLib.timeout_add(GLib.PRIORITY_DEFAULT, 1, () => {
            if (condition()) {
                resolve();
                return GLib.SOURCE_REMOVE;
            }
            if (GLib.get_monotonic_time() > deadline) {
                reject(new AssertionError(`timed out waiting for: ${what}`));
                return GLib.SOURCE_REMOVE;
            }
            return GLib.SOURCE_CONTINUE;
        });
    });
}

function withTimeout(promise, ms, name) {
    let id = 0;
    const timeout = new Promise((_resolve, reject) => {
        id = GLib.timeout_add(GLib.PRIORITY_DEFAULT, ms, () => {
            id = 0;
            reject(new AssertionError(`${name}: timed out after ${ms} ms`));
            return GLib.SOURCE_REMOVE;
        });
    });
    return Promise.race([promise, timeout]).finally(() => {
        if (id !== 0)
            GLib.source_remove(id);
    });
}

function diagnostic(text) {
    for (const line of String(text).split('\n'))
        print(`# ${line}`);
}

export function run() {
    const loop = new GLib.MainLoop(null, false);
    let failed = 0;

    (async () => {
        print(`1..${cases.length}`);
        for (const [i, {name, fn}] of cases.entries()) {
            try {
                // eslint-disable-next-line no-await-in-loop
                await withTimeout(Promise.resolve().then(fn), CASE_TIMEOUT_MS, name);
                print(`ok ${i + 1} - ${name}`);
            } catch (e) {
                failed++;
                print(`not ok ${i + 1} - ${name}`);
                diagnostic(e instanceof GLib.Error ? `GLib.Error ${e.domain}:${e.code}: ${e.message}` : e);
                if (e?.stack)
                    diagnostic(e.stack);
            }
            System.gc();
        }
    })().catch(e => {
        failed++;
        diagnostic(e);
    }).finally(() => loop.quit());

    loop.run();
    System.exit(failed > 0 ? 1 : 0);
}
