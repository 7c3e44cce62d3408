// The admin page: dead letters of every service with their retry, and "tick now".

import { enc } from './api.js';
import { Session } from './session.js';
import { $, h, busy, catchStrayErrors, fillTable, notify, showError, time, when } from './ui.js';

const session = new Session({ page: 'admin', roles: ['admin'], onSignIn: load, onSignOut: reset });

function load() {
  loadDeadLetters().catch(showError);
}

function reset() {
  $('#dead-letter-rows').replaceChildren();
  $('#tick-rows').replaceChildren();
  $('#tick-result').hidden = true;
}

async function loadDeadLetters() {
  const { items } = await session.call('GET', '/api/v1/admin/dead-letters');
  const rows = items.map((letter) => h('tr', { 'data-dead-letter': letter.id },
    h('td', {}, letter.service),
    h('td', {}, letter.reason),
    h('td', { class: 'num' }, String(letter.attempts)),
    h('td', {},
      h('div', {}, `${letter.event_type ?? 'unknown event'} → ${letter.destination}`),
      letter.event_id ? h('div', { class: 'muted mono' }, letter.event_id) : null),
    h('td', {}, time(letter.dead_at)),
    h('td', {}, h('details', {},
      h('summary', {}, 'Show'),
      h('pre', {}, typeof letter.message === 'string' ? letter.message : JSON.stringify(letter.message, null, 2)))),
    h('td', { class: 'actions' }, h('button', {
      type: 'button', class: 'small', 'aria-label': `Retry ${letter.id}`,
      onclick: (event) => busy(event.currentTarget, () => retry(letter.id)),
    }, 'Retry'))));
  fillTable($('#dead-letter-rows'), rows, 'No dead letters: every message was delivered or is still being retried.');
}

async function retry(id) {
  await session.call('POST', `/api/v1/admin/dead-letters/${enc(id)}/retry`);
  notify(`Dead letter ${id} is queued for delivery again.`);
  await loadDeadLetters();
}

async function tick() {
  const reports = await session.call('POST', '/api/v1/admin/tick');
  const now = new Date().toISOString();
  $('[data-ticked]').setAttribute('datetime', now);
  $('[data-ticked]').textContent = when(now);
  const count = (value) => h('td', { class: 'num' }, String(value ?? '—'));
  const rows = Object.entries(reports ?? {}).map(([service, report]) => h('tr', { 'data-service': service },
    h('td', {}, service), count(report?.delivered), count(report?.retried), count(report?.dead_lettered)));
  fillTable($('#tick-rows'), rows, 'No service answered.');
  $('#tick-result').hidden = false;
  await loadDeadLetters();
}

catchStrayErrors();
$('#refresh-dead-letters').addEventListener('click', (event) => busy(event.currentTarget, loadDeadLetters));
$('#tick-now').addEventListener('click', (event) => busy(event.currentTarget, tick));
session.start();
