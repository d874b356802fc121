// End-to-end harness, server processes: a `chat` role (or a nats-server) as a child process that
// can be killed and started again, its output in lines for the log, its port, its /healthz.

import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Asks the OS for a free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Splits a stream into lines and hands each one to `sink` with `prefix` in front. */
function lineSplitter(prefix, sink) {
  let partial = '';
  return {
    write(chunk) {
      partial += chunk.toString();
      const lines = partial.split('\n');
      partial = lines.pop();
      for (const line of lines) sink(`${prefix}${line}\n`);
    },
    flush() {
      if (partial !== '') sink(`${prefix}${partial}\n`);
      partial = '';
    },
  };
}

/** One `chat` process (a role); can be killed and started again with the same arguments. */
export class ServerProcess {
  constructor({ role, bin, args, env, port, log, onUnexpectedExit }) {
    Object.assign(this, { role, bin, args, env, port, log, onUnexpectedExit });
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.exited = null;
    this.exitPromise = Promise.resolve();
    this.expectExit = false;
  }

  get alive() {
    return this.proc !== null && this.exited === null;
  }

  start() {
    this.exited = null;
    this.expectExit = false;
    const proc = spawn(this.bin, this.args, { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const out = lineSplitter(`[${this.role}] `, this.log);
    const err = lineSplitter(`[${this.role}] `, this.log);
    proc.stdout.on('data', (c) => out.write(c));
    proc.stderr.on('data', (c) => err.write(c));
    this.log(`[harness] ${this.role}: started pid ${proc.pid}: ${path.basename(this.bin)} ${this.args.join(' ')}\n`);
    this.exitPromise = new Promise((resolve) => {
      const onGone = (exited) => {
        if (this.proc !== proc || this.exited !== null) return resolve();
        out.flush();
        err.flush();
        this.exited = exited;
        this.log(`[harness] ${this.role}: exited ${JSON.stringify(exited)}${this.expectExit ? '' : ' (unexpected)'}\n`);
        resolve();
        if (!this.expectExit) this.onUnexpectedExit?.(this);
      };
      // 'close', not 'exit': by then the process's output has all been read.
      proc.on('close', (code, signal) => onGone({ code, signal }));
      proc.on('error', (e) => onGone({ error: e.message }));
    });
  }

  /** Sends `signal` and waits for the exit. */
  async kill(signal = 'SIGKILL') {
    if (!this.alive) return;
    this.expectExit = true;
    this.proc.kill(signal);
    await this.exitPromise;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs) {
    if (!this.alive) return;
    this.expectExit = true;
    this.proc.kill('SIGTERM');
    let timer;
    await Promise.race([this.exitPromise, new Promise((r) => { timer = setTimeout(r, graceMs); })]);
    clearTimeout(timer);
    if (this.alive) {
      this.log(`[harness] ${this.role}: still running ${graceMs} ms after SIGTERM; SIGKILL\n`);
      this.proc.kill('SIGKILL');
      await this.exitPromise;
    }
  }

  /** Synchronous last resort (process exit handler). */
  killNow() {
    if (this.alive) {
      try { this.proc.kill('SIGKILL'); } catch { /* already gone */ }
    }
  }
}

/** Polls GET /healthz of every process until each answers 200; fails early if one exits. */
export async function waitHealthy(procs, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let stop = false;
  const one = async (p) => {
    let lastErr = 'no attempt';
    while (!stop) {
      if (!p.alive) throw new Error(`${p.role} exited during startup (${JSON.stringify(p.exited)})`);
      try {
        const res = await fetch(`${p.baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) return;
        lastErr = `status ${res.status}`;
      } catch (err) {
        lastErr = err.cause?.code ?? err.message;
      }
      if (Date.now() > deadline) {
        throw new Error(`${p.role}: GET ${p.baseUrl}/healthz did not return 200 within ${timeoutMs} ms (last: ${lastErr})`);
      }
      await sleep(100);
    }
  };
  try {
    await Promise.all(procs.map(one));
  } finally {
    stop = true;
  }
}
