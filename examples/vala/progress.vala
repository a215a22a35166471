/* progress.vala: a worker thread reports progress to the main loop
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 *
 * Two channels connect the main thread and one worker thread.
 *
 *   jobs      main → worker. The main thread posts N jobs on port1 and closes it.
 *             The worker runs a GMainContext of its own (pushed as its thread-default
 *             context) and takes the jobs in an async method, one
 *             `yield jobs.receive_async (null)` at a time, until Mp.Error.CLOSED: the
 *             end of the stream, once the main thread closed and every job was taken.
 *   progress  worker → main. The main thread started port2 on its default context, so
 *             each progress value the worker posts arrives there as a "message" signal,
 *             in order; "close" follows the last one, after the worker closed port1.
 *
 * Every method of a port may be called from any thread; a started port emits its signals
 * on the context it was started on, and receive_async () completes on the thread-default
 * context of the thread that called it. The example checks the counts and exits 0, or 1
 * if anything is missing or the run takes longer than --timeout seconds.
 *
 *   progress-vala [--jobs N] [--timeout SECONDS]
 *
 * Build it with the build tree's mpport-1.vapi (meson does: examples/vala/meson.build),
 * or against an installed mpport:
 *   valac --pkg mpport-1 progress.vala
 */

/* The worker thread: its own context, its own loop, one async method. */
class Worker : Object {
    private Mp.MessagePort jobs;      /* port2 of the jobs channel: receives */
    private Mp.MessagePort progress;  /* port1 of the progress channel: posts */
    private uint n_total;

    public uint n_received { get; private set; }
    public string? failure { get; private set; }

    public Worker (Mp.MessagePort jobs, Mp.MessagePort progress, uint n_total) {
        this.jobs = jobs;
        this.progress = progress;
        this.n_total = n_total;
    }

    /* Runs on the worker thread. */
    public bool run () {
        var context = new MainContext ();
        var loop = new MainLoop (context);

        /* receive_async () completes on the caller's thread-default context: this one. */
        context.push_thread_default ();
        work.begin ((obj, res) => {
            try {
                work.end (res);
            } catch (Error e) {
                failure = e.message;
            }
            /* Closing is the last progress message: the main thread sees "close"
             * after every value posted above. */
            progress.close ();
            loop.quit ();
        });
        loop.run ();
        context.pop_thread_default ();

        return failure == null;
    }

    /* Takes jobs until the end of the stream, posting a progress value after each. */
    private async void work () throws Error {
        for (;;) {
            Mp.Message message;
            try {
                message = yield jobs.receive_async (null);
            } catch (Mp.Error.CLOSED e) {
                /* The main thread closed its port and we took everything it posted
                 * before: no more jobs. Any other error is a bug, for the caller. */
                break;
            }

            string name = message.get_data ().get_string ();
            Thread.usleep (2000);  /* the work */
            n_received++;
            progress.post (new Variant ("(uus)", n_received, n_total, name));
        }
    }
}

static int n_jobs = 8;
static int timeout_seconds = 30;

const OptionEntry[] options = {
    { "jobs", 'n', OptionFlags.NONE, OptionArg.INT, ref n_jobs, "Number of jobs", "N" },
    { "timeout", 't', OptionFlags.NONE, OptionArg.INT, ref timeout_seconds,
      "Give up (exit 1) after this many seconds", "SECONDS" },
    { null }
};

int main (string[] args) {
    try {
        var option_context = new OptionContext ("- a worker thread reports progress over mpport");
        option_context.add_main_entries (options, null);
        option_context.parse (ref args);
    } catch (OptionError e) {
        printerr ("%s\n", e.message);
        return 2;
    }
    if (n_jobs < 1 || timeout_seconds < 1) {
        printerr ("--jobs and --timeout must be positive\n");
        return 2;
    }

    var loop = new MainLoop ();
    var jobs = new Mp.MessageChannel ();
    var progress = new Mp.MessageChannel ();
    uint n_progress = 0;
    bool in_order = true;
    bool closed = false;

    /* Started here: the signals of port2 are emitted on this thread's default context. */
    progress.port2.message.connect ((port, message) => {
        uint done, total;
        unowned string name;
        message.get_data ().get ("(uu&s)", out done, out total, out name);
        n_progress++;
        in_order = in_order && done == n_progress && total == n_jobs;
        print ("progress %u/%u: %s\n", done, total, name);
    });
    progress.port2.close.connect (() => {
        closed = true;
        loop.quit ();
    });
    progress.port2.start ();

    Timeout.add_seconds (timeout_seconds, () => {
        printerr ("timed out after %d s: %u of %d progress messages\n",
                  timeout_seconds, n_progress, n_jobs);
        Process.exit (1);
    });

    var worker = new Worker (jobs.port2, progress.port1, n_jobs);
    var thread = new Thread<bool> ("worker", worker.run);

    for (int i = 0; i < n_jobs; i++) {
        try {
            jobs.port1.post (new Variant.string ("job %d".printf (i + 1)));
        } catch (Error e) {
            printerr ("posting job %d: %s\n", i + 1, e.message);
            return 1;
        }
    }
    jobs.port1.close ();  /* the end of the stream for the worker */

    loop.run ();
    bool worker_ok = thread.join ();

    print ("the worker took %u jobs; %u progress messages arrived%s\n",
           worker.n_received, n_progress, in_order ? ", in order" : "");
    if (!worker_ok) {
        printerr ("the worker failed: %s\n", worker.failure);
        return 1;
    }
    if (worker.n_received != n_jobs || n_progress != n_jobs || !in_order || !closed) {
        printerr ("expected %d jobs and %d progress messages in order, then close\n",
                  n_jobs, n_jobs);
        return 1;
    }
    return 0;
}
