// The dashboards in a real browser: a customer orders and follows the order live, staff ship
// and deliver it with the page's buttons, the customer sees it delivered with a voucher, and
// the admin page lists dead letters and ticks. Headless Chromium via playwright-core.
//
// Runs the app on the wasmtime test host (target/debug/test-host, components from
// `make build`), or against SHOP_URL. Screenshots go to target/browser-screenshots/.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';

import { PageGuard, ROOT, api, mintToken, startApp, until } from './support.mjs';

const SCREENSHOTS = join(ROOT, 'target/browser-screenshots');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
/** Streams end this often on our own test host, so that the pages must reconnect. */
const STREAM_MAX_MS = 2000;

const run = Date.now().toString(36);
const SKU = `BROWSER-${run}`.toUpperCase();
const CUSTOMER = `shopper-${run}@example.com`;
const STAFF = mintToken('staff@shop.test', 'staff');
const ADMIN = mintToken('admin@shop.test', 'admin');
const ALICE = mintToken(CUSTOMER, 'customer');

let app;
let browser;
const pages = {};
const guards = [];
let orderId;
let failed = false;

/** A test that is skipped once an earlier one failed (each builds on the one before). */
function step(name, body) {
  test(name, async (t) => {
    if (failed) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await body(t);
      for (const guard of guards) guard.check();
    } catch (error) {
      failed = true;
      if (app?.own) console.log(`--- test host output (tail) ---\n${app.log().slice(-4000)}`);
      throw error;
    }
  });
}

/** Opens `path` in a fresh browser context (own sessionStorage) and signs in with `token`. */
async function openSignedIn(name, path, token) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  const guard = new PageGuard(page, name);
  guards.push(guard);
  pages[name] = { page, guard, requests: [] };
  page.on('request', (request) => pages[name].requests.push({ url: request.url(), method: request.method(), headers: request.headers() }));
  await page.goto(`${app.url}${path}`);
  await signIn(page, token);
  // Set once; a reload would lose it.
  await page.evaluate(() => { window.notReloaded = true; });
  return page;
}

async function signIn(page, token) {
  await page.getByLabel('Bearer token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

const notReloaded = (page) => page.evaluate(() => window.notReloaded === true);
const shot = (page, name, fullPage = true) => page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage });

describe('dashboards', () => {
  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    app = await startApp({ stream_max_ms: STREAM_MAX_MS });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
  });

  after(async () => {
    // Problems after the last step's check still fail the run.
    const late = guards.flatMap((guard) => guard.problems.map((problem) => `${guard.name}: ${problem}`));
    for (const guard of guards) guard.closing();
    await browser?.close();
    await app?.stop();
    console.log(`screenshots: ${SCREENSHOTS}`);
    assert.deepEqual(late, [], 'problems on the pages after the last step');
  });

  step('the gateway serves the pages and assets without a token', async () => {
    for (const path of ['/', '/customer', '/staff', '/admin']) {
      const answer = await api(app.url, 'GET', path);
      assert.equal(answer.status, 200, path);
      assert.equal(answer.headers.get('content-type'), 'text/html; charset=utf-8', path);
      assert.equal(answer.headers.get('cache-control'), 'no-cache', path);
      assert.match(answer.headers.get('content-security-policy'), /default-src 'self'/, path);
      assert.match(answer.body, /<!doctype html>/, path);
    }
    const css = await api(app.url, 'GET', '/assets/app.css');
    assert.equal(css.status, 200);
    assert.equal(css.headers.get('content-type'), 'text/css; charset=utf-8');
    const js = await api(app.url, 'GET', '/assets/customer.js');
    assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8');
    const etag = js.headers.get('etag');
    const revalidated = await api(app.url, 'GET', '/assets/customer.js', { headers: { 'if-none-match': etag } });
    assert.equal(revalidated.status, 304);
    const missing = await api(app.url, 'GET', '/assets/nope.js');
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('content-type'), 'application/problem+json');
    assert.equal(missing.body.status, 404);
    assert.equal((await api(app.url, 'POST', '/customer')).status, 405);
    assert.equal((await api(app.url, 'GET', '/api/v1/products')).status, 401, 'the API still needs a token');
  });

  step('a product and credit are seeded through the API', async () => {
    const product = await api(app.url, 'PUT', `/api/v1/products/${SKU}`, {
      token: STAFF, body: { name: 'Browser lamp', price_cents: 6000, stock: 10 },
    });
    assert.ok([200, 201].includes(product.status), JSON.stringify(product.body));
    const credit = await api(app.url, 'POST', `/api/v1/accounts/${CUSTOMER}/credit`, {
      token: STAFF, body: { amount_cents: 50000 },
    });
    assert.equal(credit.status, 200, JSON.stringify(credit.body));
  });

  step('the staff page follows all orders live', async () => {
    const page = await openSignedIn('staff', '/staff', STAFF);
    await page.locator('#live-orders [data-live][data-state="live"]').waitFor();
    assert.equal(await page.locator('#session [data-who]').textContent(), 'staff@shop.test');
  });

  step('the customer page shows API problems and refuses a token of another role', async () => {
    const context = await browser.newContext({ locale: 'en-US' });
    const page = await context.newPage();
    const guard = new PageGuard(page, 'customer (bad tokens)');
    guards.push(guard);
    await page.goto(`${app.url}/customer`);

    await signIn(page, STAFF);
    await page.locator('#sign-in-error', { hasText: 'This page is for customer' }).waitFor();

    // Signed with another secret: readable, but the gateway answers 401 problem+json.
    const stop = guard.allow(({ status, text = '' }) => status === 401 || text.includes('status of 401'));
    await signIn(page, mintToken(CUSTOMER, 'customer', 'not-the-secret'));
    await page.locator('#notices .notice.error', { hasText: 'bad token signature' }).first().waitFor();
    await page.locator('#sign-in').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is forgotten');
    await page.waitForTimeout(300);
    stop();
    guard.closing();
    await context.close();
  });

  step('the customer places an order and sees it confirmed live', async () => {
    const page = await openSignedIn('customer', '/customer', ALICE);
    assert.equal(await page.locator('#session [data-who]').textContent(), CUSTOMER);
    await page.locator('#credit', { hasText: 'Credit 500.00' }).waitFor();
    const quantity = page.getByLabel('Quantity of Browser lamp');
    await until('the seeded product in the catalogue', async () => {
      if (await quantity.count()) return true;
      // SHOP_URL may hold many products; ours may be on a later page.
      const more = page.locator('#more-products:not([hidden])');
      if (await more.count()) await more.click();
      return false;
    });
    await quantity.fill('2');
    await page.locator('#order-total', { hasText: '120.00' }).waitFor();
    await page.getByRole('button', { name: 'Place order' }).click();

    const tracker = page.locator('#tracker');
    await tracker.locator('[data-order-id]').filter({ hasText: /^ord/ }).waitFor();
    orderId = (await tracker.locator('[data-order-id]').textContent()).trim();
    await page.locator('#tracker[data-status="confirmed"]').waitFor();
    await page.locator('[data-step="confirmed"][data-state="current"]').waitFor();
    await page.locator('#orders tr[data-order] [data-status="confirmed"]').waitFor();
    await page.locator('#credit', { hasText: 'Credit 380.00' }).waitFor();
    assert.ok(await notReloaded(page), 'the page was not reloaded');

    const { requests } = pages.customer;
    const placed = requests.find((r) => r.method === 'POST' && r.url.endsWith('/api/v1/orders'));
    assert.match(placed.headers['idempotency-key'] ?? '', /^web-[0-9a-f]{32}$/);
    const stream = requests.find((r) => r.url.endsWith(`/api/v1/orders/${orderId}/events`));
    assert.match(stream.headers.authorization ?? '', /^Bearer /, 'the stream is opened with the token');
    if (app.own) {
      // Our host ends streams every STREAM_MAX_MS: the page must resume with Last-Event-ID.
      await until('a reconnect with Last-Event-ID', () => pages.customer.requests.some(
        (r) => r.url.endsWith(`/api/v1/orders/${orderId}/events`) && /^\d+$/.test(r.headers['last-event-id'] ?? '')));
    }
  });

  step('the staff page receives the order live and ships and delivers it with its buttons', async () => {
    const { page } = pages.staff;
    const row = page.locator(`#orders tr[data-order="${orderId}"]`);
    await row.locator('[data-status="confirmed"]').waitFor();
    assert.match(await row.textContent(), new RegExp(CUSTOMER.replace(/\./g, '\\.')));
    await page.getByRole('button', { name: `Ship order ${orderId}` }).click();
    await row.locator('[data-status="shipped"]').waitFor();
    await page.getByRole('button', { name: `Deliver order ${orderId}` }).click();
    await row.locator('[data-status="delivered"]').waitFor();
    assert.ok(await notReloaded(page), 'the staff page was not reloaded');

    // Stock editing: the free stock (10 - 2 since the order) becomes 25.
    await page.getByRole('button', { name: 'Refresh' }).click();
    const stock = page.getByLabel(`Stock of ${SKU}`);
    await until('the stock after the order', async () => (await stock.inputValue()) === '8');
    await stock.fill('25');
    await page.getByRole('button', { name: `Save ${SKU}` }).click();
    await page.locator('#notices', { hasText: `Saved ${SKU}: 25 free` }).waitFor();
    assert.equal((await api(app.url, 'GET', `/api/v1/products/${SKU}`, { token: STAFF })).body.stock, 25);

    // Account look-up and credit.
    await page.getByLabel('Customer email').fill(CUSTOMER);
    await page.getByRole('button', { name: 'Look up' }).click();
    await page.locator('[data-account="balance"]', { hasText: '380.00' }).waitFor();
    await page.getByLabel('Add credit').fill('20.00');
    await page.getByRole('button', { name: 'Add credit' }).click();
    await page.locator('[data-account="balance"]', { hasText: '400.00' }).waitFor();
    await shot(page, 'staff');
  });

  step('the customer page shows the order delivered and its voucher, without reload', async () => {
    const { page } = pages.customer;
    await page.locator('#tracker[data-status="delivered"]').waitFor();
    await page.locator('[data-step="shipped"][data-state="done"] time[datetime]').waitFor();
    await page.locator('[data-live][data-state="ended"]').waitFor();
    const voucher = page.locator('#vouchers tr[data-voucher]', { hasText: orderId });
    await voucher.waitFor();
    assert.match(await voucher.textContent(), /5\.00/);
    await page.locator('[data-outcome]', { hasText: /Voucher \S+ worth 5\.00/ }).waitFor();
    await page.locator(`#orders tr[data-order="${orderId}"] [data-status="delivered"]`).waitFor();
    assert.ok(await notReloaded(page), 'the page was not reloaded');
    await shot(page, 'customer');
  });

  step('the customer page fits a phone', async () => {
    const { page } = pages.customer;
    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the phone`);
    await shot(page, 'customer-phone');
  });

  step('the admin page lists dead letters and ticks', async () => {
    const page = await openSignedIn('admin', '/admin', ADMIN);
    const expected = (await api(app.url, 'GET', '/api/v1/admin/dead-letters', { token: ADMIN })).body.items;
    if (expected.length === 0) {
      await page.locator('#dead-letter-rows .empty', { hasText: 'No dead letters' }).waitFor();
    } else {
      await until('the dead letters', async () => (await page.locator('#dead-letter-rows tr[data-dead-letter]').count()) === expected.length);
    }
    await page.getByRole('button', { name: 'Tick now' }).click();
    await page.locator('#tick-result:not([hidden])').waitFor();
    for (const service of ['orders', 'balance-checker', 'stock-checker', 'vouchers']) {
      await page.locator(`#tick-rows tr[data-service="${service}"]`).waitFor();
    }
    await shot(page, 'admin');
  });

  step('the admin page shows a dead letter and retries it (API answers stubbed in the browser)', async () => {
    const { page } = pages.admin;
    let letters = [{
      id: 'orders:42', service: 'orders', event_id: 'evt_1', event_type: 'order.placed',
      destination: 'stock-checker', reason: 'poison: cannot be applied', attempts: 5,
      dead_at: '2030-01-01T00:00:00Z', message: { type: 'order.placed', data: { order_id: 'ord_1' } },
    }];
    const retried = [];
    await page.route('**/api/v1/admin/dead-letters', (route) => route.fulfill({ json: { items: letters } }));
    await page.route('**/api/v1/admin/dead-letters/*/retry', (route) => {
      retried.push(new URL(route.request().url()).pathname);
      letters = [];
      return route.fulfill({ status: 202, json: { status: 'retrying', id: 'orders:42' } });
    });
    await page.getByRole('button', { name: 'Refresh' }).click();
    const row = page.locator('#dead-letter-rows tr[data-dead-letter="orders:42"]');
    await row.waitFor();
    const text = await row.textContent();
    for (const part of ['orders', 'poison: cannot be applied', '5', 'order.placed', 'stock-checker']) {
      assert.ok(text.includes(part), `the row shows ${part}: ${text}`);
    }
    await page.getByRole('button', { name: 'Retry orders:42' }).click();
    await page.locator('#dead-letter-rows .empty').waitFor();
    assert.deepEqual(retried, ['/api/v1/admin/dead-letters/orders%3A42/retry']);
    await page.unrouteAll();
  });

  step('signing out forgets the token', async () => {
    const { page } = pages.customer;
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Bearer token').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('shop.token.customer')), null);
  });
});
