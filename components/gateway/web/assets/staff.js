// The staff page: every order's changes live (Server-Sent Events), shipping and delivering,
// products and stock, customer accounts and credit.

import { enc } from './api.js';
import { EventStream } from './sse.js';
import { Session } from './session.js';
import {
  $, h, busy, catchStrayErrors, fillTable, itemsText, money, notify, parseCount, parseMoney,
  showError, statusBadge, submitButton, time, STATUS_RANK,
} from './ui.js';

const state = { orders: new Map(), stream: null, products: [], nextCursor: null, account: null };

const session = new Session({ page: 'staff', roles: ['staff', 'admin'], onSignIn: load, onSignOut: reset });

function load() {
  follow();
  loadProducts().catch(showError);
}

function reset() {
  state.stream?.stop();
  Object.assign(state, { orders: new Map(), stream: null, products: [], nextCursor: null, account: null });
  $('#orders').replaceChildren();
  $('#products').replaceChildren();
  $('#account').hidden = true;
}

// Orders, live

function follow() {
  renderOrders();
  state.stream = new EventStream('/api/v1/orders/events', {
    token: session.token,
    onEvent: (event) => {
      if (event.type === 'status') upsertOrder(JSON.parse(event.data), true);
    },
    onState: (liveState) => {
      const live = $('[data-live]');
      live.dataset.state = liveState;
      live.textContent = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', stopped: 'Not live' }[liveState] ?? liveState;
      if (liveState === 'live') live.removeAttribute('title');
    },
    onProblem: (error, retrying) => {
      if (error.status === 401) session.signOut(error);
      else if (retrying) $('[data-live]').title = error.message;
      else showError(error);
    },
  }).start();
}

/** Keeps the furthest state of `order` (a late event never moves it back) and redraws. */
function upsertOrder(order, fromStream = false) {
  const known = state.orders.get(order.id);
  if (known && STATUS_RANK[order.status] < STATUS_RANK[known.status]) return;
  state.orders.set(order.id, order);
  renderOrders(fromStream && known?.status !== order.status ? order.id : null);
}

function renderOrders(changedId = null) {
  const filter = $('#status-filter').value;
  const orders = [...state.orders.values()]
    .filter((order) => !filter || order.status === filter)
    .sort((a, b) => (b.created_at ?? '').localeCompare(a.created_at ?? ''));
  const rows = orders.map((order) => {
    const lastChange = order.history?.at(-1)?.at;
    return h('tr', { 'data-order': order.id, class: order.id === changedId ? 'fresh' : null },
      h('td', { class: 'mono' }, order.id),
      h('td', {}, order.customer),
      h('td', {}, itemsText(order)),
      h('td', { class: 'num' }, money(order.total_cents)),
      h('td', {}, statusBadge(order.status), order.reason ? h('div', { class: 'muted' }, order.reason) : null),
      h('td', {}, time(lastChange)),
      h('td', { class: 'actions' }, actionFor(order)));
  });
  fillTable($('#orders'), rows, filter ? 'No orders with this status.' : 'Waiting for orders…');
}

function actionFor(order) {
  const action = { confirmed: ['ship', 'Ship'], shipped: ['deliver', 'Deliver'] }[order.status];
  if (!action) return null;
  const [path, label] = action;
  return h('button', {
    type: 'button', class: 'small', 'aria-label': `${label} order ${order.id}`,
    onclick: (event) => busy(event.currentTarget, async () => {
      upsertOrder(await session.call('POST', `/api/v1/orders/${enc(order.id)}/${path}`));
      notify(`Order ${order.id} ${path === 'ship' ? 'shipped' : 'delivered'}.`);
    }),
  }, label);
}

// Products and stock

async function loadProducts(more = false) {
  const cursor = more && state.nextCursor ? `&cursor=${enc(state.nextCursor)}` : '';
  const page = await session.call('GET', `/api/v1/products?limit=100${cursor}`);
  state.products = more ? [...state.products, ...page.items] : page.items;
  state.nextCursor = page.next_cursor ?? null;
  fillTable($('#products'), state.products.map(productRow), 'No products yet: add one below.');
  $('#more-products').hidden = !state.nextCursor;
}

function productRow(product) {
  const field = (name, label, value, attributes = {}) => {
    const id = `${name}-${product.sku}`;
    return [
      h('label', { for: id, class: 'visually-hidden' }, `${label} of ${product.sku}`),
      h('input', { id, value, required: true, ...attributes }),
    ];
  };
  const row = h('tr', { 'data-sku': product.sku },
    h('td', { class: 'mono' }, product.sku),
    h('td', {}, field('name', 'Name', product.name, { maxlength: '200' })),
    h('td', { class: 'num' }, field('price', 'Price', money(product.price_cents).replace(/,/g, ''), { class: 'num', inputmode: 'decimal' })),
    h('td', { class: 'num' }, field('stock', 'Stock', String(product.stock), { class: 'num', inputmode: 'numeric' })),
    h('td', { class: 'num' }, String(product.reserved ?? 0)),
    h('td', { class: 'actions' }, h('button', {
      type: 'button', class: 'small', 'aria-label': `Save ${product.sku}`,
      onclick: (event) => busy(event.currentTarget, () => saveProduct(product.sku, {
        name: row.querySelector('[id^="name-"]').value,
        price: row.querySelector('[id^="price-"]').value,
        stock: row.querySelector('[id^="stock-"]').value,
      })),
    }, 'Save')));
  return row;
}

/** PUT of a product from what was typed; says what is wrong instead of sending bad input. */
async function saveProduct(sku, { name, price, stock }) {
  const priceCents = parseMoney(price);
  const units = parseCount(stock);
  if (!name.trim()) throw new Error(`${sku}: the name is empty.`);
  if (priceCents === null) throw new Error(`${sku}: the price must be an amount like 60.00.`);
  if (units === null) throw new Error(`${sku}: the stock must be a whole number.`);
  const product = await session.call('PUT', `/api/v1/products/${enc(sku)}`, {
    body: { name: name.trim(), price_cents: priceCents, stock: units },
  });
  const index = state.products.findIndex((p) => p.sku === sku);
  if (index >= 0) {
    state.products[index] = product;
    $(`tr[data-sku="${CSS.escape(sku)}"]`).replaceWith(productRow(product));
  } else {
    await loadProducts();
  }
  notify(`Saved ${sku}: ${product.stock} free at ${money(product.price_cents)}.`);
}

// Customer accounts

async function lookUp(email) {
  state.account = await session.call('GET', `/api/v1/accounts/${enc(email)}`);
  $('[data-account="customer"]').textContent = state.account.customer;
  $('[data-account="balance"]').textContent = money(state.account.balance_cents);
  $('[data-account="held"]').textContent = money(state.account.held_cents);
  $('#account').hidden = false;
}

async function addCredit(amount) {
  const cents = parseMoney(amount);
  if (!cents) throw new Error('The credit must be an amount above zero, like 50.00.');
  const email = state.account.customer;
  await session.call('POST', `/api/v1/accounts/${enc(email)}/credit`, { body: { amount_cents: cents } });
  await lookUp(email);
  $('#credit-amount').value = '';
  notify(`Added ${money(cents)} to ${email}.`);
}

catchStrayErrors();
$('#status-filter').addEventListener('change', () => renderOrders());
$('#refresh-products').addEventListener('click', (event) => busy(event.currentTarget, () => loadProducts()));
$('#more-products').addEventListener('click', (event) => busy(event.currentTarget, () => loadProducts(true)));
$('#new-product').addEventListener('submit', (event) => {
  event.preventDefault();
  busy(submitButton(event), async () => {
    await saveProduct($('#new-sku').value.trim(), {
      name: $('#new-name').value, price: $('#new-price').value, stock: $('#new-stock').value,
    });
    event.target.reset();
  });
});
$('#lookup').addEventListener('submit', (event) => {
  event.preventDefault();
  busy(submitButton(event), () => lookUp($('#lookup-email').value.trim()));
});
$('#credit-form').addEventListener('submit', (event) => {
  event.preventDefault();
  busy(submitButton(event), () => addCredit($('#credit-amount').value));
});
session.start();
