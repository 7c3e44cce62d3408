// The customer page: the catalogue, placing an order, following it live (Server-Sent
// Events) from placed to delivered, my orders and my vouchers.

import { enc, newIdempotencyKey } from './api.js';
import { EventStream } from './sse.js';
import { Session } from './session.js';
import {
  $, h, busy, catchStrayErrors, fillTable, itemsText, money, parseCount, showError, statusBadge,
  time, STATUS_RANK, TERMINAL,
} from './ui.js';

const STEPS = ['placed', 'confirmed', 'shipped', 'delivered'];
/** How long to look for the voucher of a delivered order (it is issued asynchronously). */
const VOUCHER_WAIT_MS = 15_000;

const state = {
  products: [],
  nextCursor: null,
  quantities: new Map(),
  /** Reused until the order is placed, so a retried submission cannot order twice. */
  idempotencyKey: null,
  orders: new Map(),
  vouchers: [],
  tracked: null,
  stream: null,
  lookingForVoucher: null,
};

const session = new Session({ page: 'customer', roles: ['customer'], onSignIn: load, onSignOut: reset });
const me = () => session.claims.sub;

async function load() {
  const loads = [loadProducts(), loadAccount(), loadOrders(), loadVouchers()];
  await Promise.all(loads.map((loading) => loading.catch(showError)));
  const active = [...state.orders.values()].filter((order) => !TERMINAL.has(order.status)).at(-1);
  if (active && !state.tracked && session.token) track(active);
}

function reset() {
  state.stream?.stop();
  Object.assign(state, {
    products: [], nextCursor: null, quantities: new Map(), idempotencyKey: null, orders: new Map(),
    vouchers: [], tracked: null, stream: null, lookingForVoucher: null,
  });
  for (const id of ['#products', '#orders', '#vouchers']) $(id).replaceChildren();
  $('#credit').textContent = '';
  $('#tracker').hidden = true;
}

// Catalogue and order form

async function loadProducts(more = false) {
  const cursor = more && state.nextCursor ? `&cursor=${enc(state.nextCursor)}` : '';
  const page = await session.call('GET', `/api/v1/products?limit=100${cursor}`);
  state.products = more ? [...state.products, ...page.items] : page.items;
  state.nextCursor = page.next_cursor ?? null;
  renderProducts();
}

function renderProducts() {
  const rows = state.products.map((product) => {
    const id = `qty-${product.sku}`;
    const soldOut = product.stock <= 0;
    return h('tr', {},
      h('td', {}, h('div', {}, product.name), h('div', { class: 'muted mono' }, product.sku)),
      h('td', { class: 'num' }, money(product.price_cents)),
      h('td', { class: 'num' }, soldOut ? 'sold out' : String(product.stock)),
      h('td', { class: 'num' },
        h('label', { for: id, class: 'visually-hidden' }, `Quantity of ${product.name}`),
        h('input', {
          id, class: 'qty', type: 'number', inputmode: 'numeric', min: '0', step: '1',
          max: String(Math.max(product.stock, 0)), value: String(state.quantities.get(product.sku) ?? 0),
          disabled: soldOut && !state.quantities.get(product.sku),
          oninput: (event) => chooseQuantity(product.sku, event.target.value),
        })));
  });
  fillTable($('#products'), rows, 'Nothing for sale yet.');
  $('#more-products').hidden = !state.nextCursor;
  renderTotal();
}

function chooseQuantity(sku, text) {
  const quantity = parseCount(text || '0');
  if (quantity === null) return;
  if (quantity > 0) state.quantities.set(sku, quantity);
  else state.quantities.delete(sku);
  state.idempotencyKey = null; // another order than the one a retry would repeat
  $('#order-error').textContent = '';
  renderTotal();
}

function renderTotal() {
  let total = 0;
  for (const [sku, quantity] of state.quantities) {
    const product = state.products.find((p) => p.sku === sku);
    if (product) total += product.price_cents * quantity;
  }
  $('#order-total').textContent = money(total);
}

async function placeOrder(event) {
  event.preventDefault();
  const items = [...state.quantities].map(([sku, quantity]) => ({ sku, quantity }));
  if (!items.length) {
    $('#order-error').textContent = 'Choose a quantity for at least one product.';
    return;
  }
  await busy($('#place-order'), async () => {
    state.idempotencyKey ??= newIdempotencyKey();
    const order = await session.call('POST', '/api/v1/orders', {
      body: { customer: me(), items },
      headers: { 'idempotency-key': state.idempotencyKey },
    });
    state.idempotencyKey = null;
    state.quantities.clear();
    renderProducts();
    upsertOrder(order);
    track(order);
  });
}

// Following one order live

function track(order) {
  state.stream?.stop();
  state.stream = null;
  state.tracked = order.id;
  $('#tracker').hidden = false;
  renderTracker();
  if (TERMINAL.has(order.status)) {
    setLive('ended');
    return;
  }
  state.stream = new EventStream(`/api/v1/orders/${enc(order.id)}/events`, {
    token: session.token,
    onEvent: (event) => {
      if (event.type === 'status') onStatus(JSON.parse(event.data));
    },
    onState: setLive,
    onProblem: (error, retrying) => {
      if (error.status === 401) session.signOut(error);
      else if (retrying) $('[data-live]').title = error.message;
      else showError(error);
    },
    reconnect: () => !TERMINAL.has(state.orders.get(order.id)?.status),
  }).start();
}

function onStatus(order) {
  const before = state.orders.get(order.id)?.status;
  upsertOrder(order);
  if (before === order.status) return;
  if (['confirmed', 'rejected', 'cancelled'].includes(order.status)) {
    loadAccount().catch(showError);
    loadProducts().catch(showError);
  }
  if (order.status === 'delivered') lookForVoucher(order.id);
}

const LIVE_TEXT = {
  connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', ended: 'Final', stopped: 'Not live',
};

function setLive(liveState) {
  const live = $('[data-live]');
  live.dataset.state = liveState;
  live.textContent = LIVE_TEXT[liveState];
  if (liveState === 'live') live.removeAttribute('title');
}

function renderTracker() {
  const order = state.orders.get(state.tracked);
  if (!order) return;
  $('[data-order-id]').textContent = order.id;
  const reachedAt = new Map((order.history ?? []).map((step) => [step.status, step.at]));
  for (const step of STEPS) {
    const li = $(`[data-step="${step}"]`);
    const reached = reachedAt.has(step) || step === order.status;
    li.dataset.state = step === order.status && step !== 'delivered' ? 'current' : reached ? 'done' : 'todo';
    li.querySelector('time').replaceWith(time(reachedAt.get(step)));
  }
  $('#tracker').dataset.status = order.status;
  $('[data-outcome]').textContent = outcome(order);
  $('#cancel-order').hidden = !['placed', 'confirmed'].includes(order.status);
}

function outcome(order) {
  switch (order.status) {
    case 'placed': return 'Checking your credit and our stock…';
    case 'confirmed': return 'Confirmed: your credit and the goods are reserved. Waiting to be shipped.';
    case 'shipped': return 'Shipped: on its way to you.';
    case 'delivered': {
      const voucher = order.voucher ?? state.vouchers.find((v) => v.order_id === order.id);
      if (voucher) return `Delivered. Thank you! Voucher ${voucher.code} worth ${money(voucher.value_cents)} is yours.`;
      return state.lookingForVoucher === order.id ? 'Delivered. Looking for your voucher…' : 'Delivered. Thank you!';
    }
    case 'rejected': return `Rejected: ${reasonText(order.reason)}. Nothing was charged.`;
    case 'cancelled': return 'Cancelled. Nothing was charged.';
    default: return order.status;
  }
}

function reasonText(reason = '') {
  if (reason === 'insufficient_balance') return 'not enough credit';
  if (reason.startsWith('out_of_stock')) return `out of stock (${reason.split(':').slice(1).join(':').trim()})`;
  if (reason === 'checks_timed_out') return 'the checks took too long';
  return reason || 'no reason given';
}

async function cancelTracked() {
  const id = state.tracked;
  await busy($('#cancel-order'), async () => {
    upsertOrder(await session.call('POST', `/api/v1/orders/${enc(id)}/cancel`));
  });
}

// My orders and vouchers

async function loadOrders() {
  let cursor = '';
  // Oldest first, 100 a page; ten pages are plenty for a dashboard.
  for (let page = 0; page < 10; page++) {
    const answer = await session.call('GET', `/api/v1/orders?customer=${enc(me())}&limit=100${cursor}`);
    answer.items.forEach(upsertOrder);
    if (!answer.next_cursor) break;
    cursor = `&cursor=${enc(answer.next_cursor)}`;
  }
  renderOrders();
}

/** Keeps the furthest state of `order` (a late answer never moves it back) and redraws. */
function upsertOrder(order) {
  const known = state.orders.get(order.id);
  if (!known || STATUS_RANK[order.status] >= STATUS_RANK[known.status]) state.orders.set(order.id, order);
  renderOrders();
  if (order.id === state.tracked) renderTracker();
}

function renderOrders() {
  const rows = [...state.orders.values()].reverse().map((order) => h('tr', { 'data-order': order.id },
    h('td', { class: 'mono' }, order.id),
    h('td', {}, itemsText(order)),
    h('td', { class: 'num' }, money(order.total_cents)),
    h('td', {}, statusBadge(order.status)),
    h('td', { class: 'actions' }, order.id === state.tracked ? null : h('button', {
      type: 'button', class: 'secondary small', 'aria-label': `Follow order ${order.id}`,
      onclick: () => track(state.orders.get(order.id)),
    }, 'Follow'))));
  fillTable($('#orders'), rows, 'No orders yet.');
}

async function loadVouchers() {
  state.vouchers = await session.call('GET', `/api/v1/vouchers?customer=${enc(me())}`);
  const rows = state.vouchers.map((voucher) => h('tr', { 'data-voucher': voucher.code },
    h('td', { class: 'mono' }, voucher.code),
    h('td', { class: 'num' }, money(voucher.value_cents)),
    h('td', { class: 'mono' }, voucher.order_id),
    h('td', {}, time(voucher.issued_at))));
  fillTable($('#vouchers'), rows, 'No vouchers yet. Orders of 100.00 or more earn one on delivery.');
  if (state.tracked) renderTracker();
}

/** Reloads the vouchers until the one for `orderId` shows up (or a while has passed). */
async function lookForVoucher(orderId) {
  state.lookingForVoucher = orderId;
  const deadline = Date.now() + VOUCHER_WAIT_MS;
  for (let delay = 250; session.token && Date.now() < deadline; delay = Math.min(delay * 2, 4000)) {
    try {
      await loadVouchers();
    } catch (error) {
      showError(error);
      break;
    }
    if (state.vouchers.some((voucher) => voucher.order_id === orderId)) break;
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
  if (state.lookingForVoucher === orderId) state.lookingForVoucher = null;
  if (state.tracked) renderTracker();
}

async function loadAccount() {
  const account = await session.call('GET', `/api/v1/accounts/${enc(me())}`);
  $('#credit').textContent = `Credit ${money(account.balance_cents)}`
    + (account.held_cents ? ` (${money(account.held_cents)} held)` : '');
}

catchStrayErrors();
$('#order-form').addEventListener('submit', placeOrder);
$('#more-products').addEventListener('click', (event) => busy(event.currentTarget, () => loadProducts(true)));
$('#cancel-order').addEventListener('click', cancelTracked);
$('#refresh-orders').addEventListener('click', (event) => busy(event.currentTarget, loadOrders));
$('#refresh-vouchers').addEventListener('click', (event) => busy(event.currentTarget, loadVouchers));
session.start();
