// What the browser tests need besides the browser: the app on the wasmtime test host (or
// SHOP_URL), development tokens, plain API calls, and a guard that turns every console
// error, page error and failed request of a page into a test failure.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The secret tokens are signed with: the app's development default unless overridden. */
const AUTH_SECRET = process.env.SHOP_AUTH_SECRET || 'dev-auth-secret-change-me';

const base64url = (data) => Buffer.from(data).toString('base64url');

/** A JWT HS256 for `sub` with `role`, valid for an hour, signed with `secret`. */
export function mintToken(sub, role, secret = AUTH_SECRET) {
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const payload = base64url(JSON.stringify({ sub, role, exp }));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

/** A TCP port free right now on 127.0.0.1. */
function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/**
 * The app under test: `SHOP_URL` when set, else `target/debug/test-host serve` on spin.toml
 * with a fresh data directory (build it first: `make browser-test` does). `variables` are
 * passed as `--variable k=v` to the test host only.
 */
export async function startApp(variables = {}) {
  if (process.env.SHOP_URL) {
    return { url: process.env.SHOP_URL.replace(/\/$/, ''), own: false, stop: async () => {}, log: () => '' };
  }
  const binary = join(ROOT, 'target/debug/test-host');
  const dataDir = mkdtempSync(join(tmpdir(), 'shop-browser-'));
  const port = await freePort();
  // Run in the data directory: the runtime config's relative SQLite paths (one database per
  // service) are taken from the working directory, as Spin takes them.
  const args = [
    'serve', '--manifest', join(ROOT, 'spin.toml'), '--listen', `127.0.0.1:${port}`,
    '--data-dir', dataDir,
    '--runtime-config-file', join(ROOT, 'infra/spin/runtime-config.toml'),
    ...Object.entries(variables).flatMap(([key, value]) => ['--variable', `${key}=${value}`]),
  ];
  const child = spawn(binary, args, { cwd: dataDir, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk) => { output = (output + chunk).slice(-20_000); };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  let exited = null;
  const exit = new Promise((done) => child.once('exit', (code, signal) => { exited = signal ?? code; done(); }));
  child.once('error', (error) => { exited = error.message; });

  // The test host, like Spin, has no timer: tick the gateway every 50 ms, as
  // infra/spin/ticker.sh does beside `spin up` (only ticks send retries).
  const tickToken = mintToken('ticker@shop.test', 'admin');
  const ticker = setInterval(() => {
    fetch(`http://127.0.0.1:${port}/api/v1/admin/tick`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tickToken}` },
    }).then((answer) => answer.arrayBuffer()).catch(() => {});
  }, 50);
  ticker.unref();
  const app = {
    url: `http://127.0.0.1:${port}`,
    own: true,
    log: () => output,
    async stop() {
      clearInterval(ticker);
      if (exited === null) {
        child.kill('SIGINT');
        await Promise.race([exit, sleep(10_000)]);
        if (exited === null) child.kill('SIGKILL');
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (exited !== null) {
      await app.stop();
      throw new Error(`${binary} exited (${exited}) before serving. Did you run \`cargo build -p test-host\` and \`make build\`?\n${output}`);
    }
    try {
      if ((await fetch(`${app.url}/healthz`)).ok) return app;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await app.stop();
      throw new Error(`the test host did not answer /healthz within 120 s:\n${output}`);
    }
    await sleep(200);
  }
}

/** One API call: `{ status, headers, body }` (body parsed as JSON when it is JSON). */
export async function api(base, method, path, { token, body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`${base}${path}`, init);
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

/** Polls `check` until it returns a truthy value (returned) or `timeoutMs` passes (throws). */
export async function until(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(100);
  }
}

/**
 * Watches one page: console errors, uncaught page errors, failed requests and HTTP error
 * answers are problems, except those `allow(test)` declares expected. `check()` throws
 * when there were any. `closing()` stops watching aborted requests (streams of a closing page).
 */
export class PageGuard {
  constructor(page, name) {
    this.name = name;
    this.problems = [];
    this.allowances = [];
    this.closed = false;
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      const { url } = message.location();
      if (this.allowed({ text: message.text(), url })) return;
      this.problems.push(`console error: ${message.text()}${url ? ` (${url})` : ''}`);
    });
    page.on('pageerror', (error) => this.problems.push(`page error: ${error.stack || error.message}`));
    page.on('requestfailed', (request) => {
      if (this.closed) return;
      this.problems.push(`request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
    });
    page.on('response', (response) => {
      if (response.status() < 400) return;
      const entry = { status: response.status(), url: response.url() };
      if (this.allowed(entry)) return;
      this.problems.push(`HTTP ${entry.status}: ${response.request().method()} ${entry.url}`);
    });
  }

  allowed(entry) {
    return this.allowances.some((test) => test(entry));
  }

  /** Expects failures matching `test({ status, url, text })` until the returned function runs. */
  allow(test) {
    this.allowances.push(test);
    return () => { this.allowances = this.allowances.filter((other) => other !== test); };
  }

  /** The page is about to close: its open streams will be aborted. */
  closing() {
    this.closed = true;
  }

  /** Throws when the page had a problem. */
  check() {
    if (this.problems.length) {
      const problems = this.problems.splice(0);
      throw new Error(`${this.name} page:\n  ${problems.join('\n  ')}`);
    }
  }
}
