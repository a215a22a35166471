// broadcast.js: a BroadcastChannel between two parts of one GJS app
//
// SPDX-License-Identifier: LGPL-2.1-or-later
//
// Parts of an app that do not know each other — here a settings panel, a
// status bar and a logger — each open an Mp.BroadcastChannel of the same
// name. What one part posts reaches every other channel of that name (never
// the poster itself), on the main context, after the current code returned.
// On one context, posts arrive in the order they were made, and each post
// reaches the channels in the order they were created. (The same name also
// reaches channels that C or Python worker threads opened in this process.)
//
// Run it against the build tree:
//   GI_TYPELIB_PATH=build/mpport LD_LIBRARY_PATH=build/mpport \
//     gjs -m examples/gjs/broadcast.js

import GLib from 'gi://GLib';
import Mp from 'gi://Mp?version=1';
import System from 'system';

const NAME = 'org.mpport.example.settings';

class SettingsPanel {
    constructor() {
        this._channel = Mp.BroadcastChannel.new(NAME);
        this._channel.connect('message', (_c, message) => {
            const {kind} = message.get_data().recursiveUnpack();
            print(`settings: got a ${kind} (from another part)`);
        });
    }

    set(key, value) {
        print(`settings: ${key} = ${value}`);
        this._channel.post_message(new GLib.Variant('a{sv}', {
            kind: GLib.Variant.new_string('change'),
            key: GLib.Variant.new_string(key),
            value: GLib.Variant.new_string(String(value)),
        }));
    }

    close() {
        this._channel.close();
    }
}

class StatusBar {
    constructor(onDone) {
        this.text = '';
        this._channel = Mp.BroadcastChannel.new(NAME);
        this._channel.connect('message', (_c, message) => {
            const {kind, key, value} = message.get_data().recursiveUnpack();
            if (kind !== 'change')
                return;
            this.text = `${key}: ${value}`;
            print(`status bar: shows "${this.text}"`);
            if (key === 'theme') {
                this._channel.post_message(new GLib.Variant('a{sv}', {
                    kind: GLib.Variant.new_string('repaint'),
                }));
                onDone();
            }
        });
    }

    close() {
        this._channel.close();
    }
}

class Logger {
    constructor() {
        this.lines = [];
        this._channel = Mp.BroadcastChannel.new(NAME);
        this._channel.connect('message', (_c, message) => {
            const {kind, key, value} = message.get_data().recursiveUnpack();
            this.lines.push(kind === 'change' ? `${key}=${value}` : kind);
            print(`logger: ${this.lines.at(-1)}`);
        });
    }

    close() {
        this._channel.close();
    }
}

const loop = new GLib.MainLoop(null, false);
const logger = new Logger();
const settings = new SettingsPanel();
const status = new StatusBar(() => {
    // Let the repaint reach the others, then stop.
    GLib.idle_add(GLib.PRIORITY_LOW, () => {
        loop.quit();
        return GLib.SOURCE_REMOVE;
    });
});

settings.set('font-size', 14);
settings.set('theme', 'dark');
print('(nothing is delivered inside post_message: the main loop runs the handlers)');

let timedOut = false;
GLib.timeout_add_seconds(GLib.PRIORITY_DEFAULT, 30, () => {
    timedOut = true;
    loop.quit();
    return GLib.SOURCE_REMOVE;
});
loop.run();

for (const part of [logger, settings, status])
    part.close();
print(`log: ${logger.lines.join(', ')}`);
const ok = !timedOut && status.text === 'theme: dark' &&
    logger.lines.join(',') === 'font-size=14,theme=dark,repaint';
System.exit(ok ? 0 : 1);
