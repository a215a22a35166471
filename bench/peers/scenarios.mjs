// bench/peers/scenarios.mjs: mp-bench's in-process scenarios on Node's and Bun's
// worker_threads MessageChannel/MessagePort and BroadcastChannel (mp-bench --peers).
//
//   node scenarios.mjs SCENARIO COUNT      (or: bun scenarios.mjs SCENARIO COUNT)
//
// SCENARIO is tput, tput-str, fanin, pingpong, bcast or churn, COUNT the messages (round
// trips, posts, operations) that mp-bench measures for mpport. Prints one line in the form
// of mp-bench --raw, which mp-bench parses:
//
//   RESULT  SCENARIO  RUNTIME  VALUE  P50  P99  SECONDS  MESSAGES  0  0  0  0
//
// (the last four, main-loop iterations, blocking polls, wake-ups and allocations, are
// counted for the C implementations only). Worker threads run this file too.
//
// SPDX-License-Identifier: LGPL-2.1-or-later

import {
  BroadcastChannel,
  MessageChannel,
  Worker,
  isMainThread,
  parentPort,
  receiveMessageOnPort,
  workerData,
} from 'node:worker_threads';

// As in bench/mp-bench.h, scenario-tput.c and scenario-bcast.c.
const FANIN_PRODUCERS = 4;
const BCAST_RECEIVERS = 4;
const PINGPONG_WARMUP = 1000;
const BCAST_NAME = 'bench/mp-bench';
const PAYLOAD64 = 'mpport-bench-payload-0123456789abcdefghijklmnopqrstuvwxyzABCDEF.';
const TIMEOUT_MS = 120000;

const runtime = typeof Bun !== 'undefined' ? 'bun' : 'node';

// Milliseconds, comparable between threads: each thread's performance.now() counts from
// its own origin.
const now = () => performance.timeOrigin + performance.now();

function fail(message) {
  console.error(`scenarios.mjs (${runtime}): ${message}`);
  process.exit(1);
}

// A worker that runs @role of this file; resolves once it said it is ready.
function spawn(role, data, transferList = []) {
  const worker = new Worker(new URL(import.meta.url), {
    workerData: { role, ...data },
    transferList,
  });

  worker.on('error', (error) => fail(`${role}: ${error.stack ?? error}`));
  return new Promise((resolve) => worker.once('message', () => resolve(worker)));
}

// ---- Worker threads ----

function worker({ role, port, id, count, string }) {
  if (role === 'producer') {
    // Posts @count messages as fast as it can once the main thread says go.
    parentPort.once('message', () => {
      if (string)
        for (let i = 0; i < count; i++) port.postMessage(PAYLOAD64);
      else
        for (let i = 0; i < count; i++) port.postMessage((id << 24) | (i & 0xffffff));
    });
  } else if (role === 'echo') {
    port.on('message', (value) => {
      if (value >= 0) port.postMessage(value);
    });
  } else if (role === 'bcast-receiver') {
    // In order, then the time of the last one.
    const channel = new BroadcastChannel(BCAST_NAME);
    let next = 0;

    channel.onmessage = (event) => {
      if (event.data !== (next & 0xffffff)) fail(`bcast: got ${event.data}, expected ${next}`);
      if (++next === count) {
        parentPort.postMessage(now());
        channel.close();
      }
    };
  }
  parentPort.postMessage('ready');
}

// ---- Scenarios (main thread); each returns [value, p50, p99, seconds, messages] ----

// tput, tput-str, fanin: @n producer workers, each with a MessageChannel whose port1 is
// received here; int32 payloads carry (producer << 24) | sequence, checked in order.
async function producers(n, total, string) {
  const next = new Array(n).fill(0);
  const workers = [];
  let received = 0;
  let start;
  let finished;
  const done = new Promise((resolve) => (finished = resolve));

  const tick = () => {
    if (++received === total) finished(now());
  };
  const onInt = (value) => {
    const producer = value >>> 24;

    if (producer >= n || (value & 0xffffff) !== (next[producer] & 0xffffff))
      fail(`out of order: got ${producer}:${value & 0xffffff}, expected ${next[producer]}`);
    next[producer]++;
    tick();
  };
  const onString = (value) => {
    if (value.length !== PAYLOAD64.length) fail(`bad payload of ${value.length} characters`);
    tick();
  };

  for (let p = 0; p < n; p++) {
    const { port1, port2 } = new MessageChannel();
    const count = Math.floor(total / n) + (p < total % n ? 1 : 0);

    port1.on('message', string ? onString : onInt);
    workers.push(spawn('producer', { port: port2, id: p, count, string }, [port2]));
  }
  const ready = await Promise.all(workers);

  start = now();
  for (const w of ready) w.postMessage('go');
  const end = await done;
  const seconds = (end - start) / 1000;

  return [total / seconds, 0, 0, seconds, total];
}

// One message in flight between this thread and an echo worker on one MessageChannel.
async function pingpong(n) {
  const { port1, port2 } = new MessageChannel();
  const rtt = new Float64Array(n);
  let rounds = 0;
  let sent = 0;
  let t0;
  let finished;
  const done = new Promise((resolve) => (finished = resolve));

  await spawn('echo', { port: port2 }, [port2]);
  port1.on('message', (value) => {
    const t = performance.now();

    if (value !== sent) fail(`pingpong: got ${value}, expected ${sent}`);
    if (rounds > PINGPONG_WARMUP) rtt[rounds - PINGPONG_WARMUP - 1] = t - t0;
    if (++rounds === n + PINGPONG_WARMUP + 1) {
      finished();
      return;
    }
    sent = (sent + 1) & 0x3fffffff;
    t0 = performance.now();
    port1.postMessage(sent);
  });
  t0 = performance.now();
  port1.postMessage(0);
  await done;

  const sum = rtt.reduce((a, b) => a + b, 0);
  rtt.sort();
  return [(sum / n) * 1000, rtt[Math.floor(n / 2)] * 1000,
    rtt[Math.min(n - 1, Math.floor((n * 99) / 100))] * 1000, sum / 1000, n];
}

// One sender (this thread), four receiver workers on one BroadcastChannel name; until the
// last receiver has the last post.
async function bcast(n) {
  const ends = [];

  for (let r = 0; r < BCAST_RECEIVERS; r++) ends.push(spawn('bcast-receiver', { count: n }));
  const receivers = await Promise.all(ends);
  const times = receivers.map((w) => new Promise((resolve) => w.once('message', resolve)));
  const sender = new BroadcastChannel(BCAST_NAME);
  const start = now();

  for (let i = 0; i < n; i++) sender.postMessage(i & 0xffffff);
  const end = Math.max(...(await Promise.all(times)));
  const seconds = (end - start) / 1000;

  sender.close();
  return [(n * BCAST_RECEIVERS) / seconds, 0, 0, seconds, n * BCAST_RECEIVERS];
}

// New channel, post one, receive it, close both.
function churn(n) {
  const start = now();

  for (let i = 0; i < n; i++) {
    const { port1, port2 } = new MessageChannel();

    port1.postMessage(i);
    const got = receiveMessageOnPort(port2);
    if (got === undefined || got.message !== i) fail(`churn: lost message ${i}`);
    port1.close();
    port2.close();
  }
  const seconds = (now() - start) / 1000;

  return [n / seconds, 0, 0, seconds, n];
}

async function main() {
  const [scenario, countText] = process.argv.slice(2);
  const count = Number.parseInt(countText, 10);
  const scenarios = {
    tput: () => producers(1, count, false),
    'tput-str': () => producers(1, count, true),
    fanin: () => producers(FANIN_PRODUCERS, count, false),
    pingpong: () => pingpong(count),
    bcast: () => bcast(count),
    churn: () => churn(count),
  };

  if (!(scenario in scenarios) || !(count > 0))
    fail('usage: scenarios.mjs tput|tput-str|fanin|pingpong|bcast|churn COUNT');
  setTimeout(() => fail(`${scenario}: timed out after ${TIMEOUT_MS / 1000} s`), TIMEOUT_MS).unref();

  const result = await scenarios[scenario]();
  console.log(['RESULT', scenario, runtime, ...result, 0, 0, 0, 0].join('\t'));
  // The workers may still hold their ports: do not wait for them.
  process.exit(0);
}

if (isMainThread) main();
else worker(workerData);
