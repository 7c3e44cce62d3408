// Small DOM helpers shared by the pages: building elements (text is never parsed as HTML),
// money and time formats, notices for API problems, busy buttons.

/** An element: `h('td', { class: 'num' }, 'text', child)`. Attributes starting with `on` are listeners. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name in element && typeof value !== 'string') element[name] = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

/** `$('#id')` inside `root` (the document by default). */
export const $ = (selector, root = document) => root.querySelector(selector);

/** Cents as an amount with two decimals, e.g. 12000 -> "120.00". */
export function money(cents) {
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(cents);
  const units = Math.floor(abs / 100).toLocaleString('en-US');
  return `${sign}${units}.${String(abs % 100).padStart(2, '0')}`;
}

/** An amount typed by a person ("60", "60.5", "60.50") in cents, or null. */
export function parseMoney(text) {
  const match = /^\s*(\d{1,12})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] || '0').padEnd(2, '0'));
}

/** A whole number typed by a person, or null. */
export function parseCount(text) {
  return /^\s*\d{1,10}\s*$/.test(text) ? Number(text) : null;
}

/** An RFC 3339 time as a short local date and time. */
export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

/** A `<time>` element for an RFC 3339 time. */
export const time = (iso) => h('time', { datetime: iso || null }, when(iso));

/** The badge of an order status. */
export const statusBadge = (status) => h('span', { class: `badge status-${status}`, 'data-status': status }, status);

/** Statuses after which an order never changes. */
export const TERMINAL = new Set(['delivered', 'rejected', 'cancelled']);

/** How far an order has come; a later answer never moves it back. */
export const STATUS_RANK = { placed: 0, confirmed: 1, shipped: 2, delivered: 3, rejected: 3, cancelled: 3 };

/** Shows `message` (a string or an ApiError) in the page's notice area. */
export function notify(message, { error = false, timeoutMs = error ? 0 : 6000 } = {}) {
  const area = $('#notices');
  const text = typeof message === 'string' ? message : null;
  const notice = h('div', { class: `notice${error ? ' error' : ''}` },
    h('div', {},
      text !== null
        ? h('p', {}, text)
        : [
            h('p', {}, h('strong', {}, `${message.title}${message.status ? ` (${message.status})` : ''}: `), message.message),
            message.correlationId ? h('p', { class: 'ref' }, `Reference: ${message.correlationId}`) : null,
          ]),
    h('button', { type: 'button', class: 'secondary small', 'aria-label': 'Dismiss', onclick: () => notice.remove() }, '×'));
  area.append(notice);
  if (timeoutMs) setTimeout(() => notice.remove(), timeoutMs);
  return notice;
}

/** Shows an error; API problems with their detail, anything else with its message. */
export function showError(error) {
  if (error?.handled) return; // already shown (a 401 signs the page out with its detail)
  notify(error?.title ? error : String(error?.message ?? error), { error: true });
}

/** The submit button of a form's submit event (also when submitted with Enter). */
export const submitButton = (event) => event.submitter ?? event.target.querySelector('[type="submit"]');

/** Runs `action` with `button` disabled; errors are shown, not thrown. */
export async function busy(button, action) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** Replaces the rows of `tbody`, or shows `empty` in one row spanning the table. */
export function fillTable(tbody, rows, empty) {
  if (rows.length) {
    tbody.replaceChildren(...rows);
  } else {
    const columns = tbody.closest('table').querySelectorAll('thead th').length;
    tbody.replaceChildren(h('tr', {}, h('td', { colspan: columns, class: 'empty' }, empty)));
  }
}

/** Shows errors nobody caught instead of failing silently. */
export function catchStrayErrors() {
  const stray = (error) => showError(error?.title || error?.handled ? error : `Something went wrong: ${error?.message ?? error}`);
  window.addEventListener('unhandledrejection', (event) => stray(event.reason));
  window.addEventListener('error', (event) => stray(event.error ?? event.message));
}

/** Items of an order as "2 × WIDGET-1, 1 × LAMP-2" ("—" for an order placed by value). */
export function itemsText(order) {
  if (!order.items?.length) return '—';
  return order.items.map((item) => `${item.quantity} × ${item.sku}`).join(', ');
}
