// The pages' pure logic, run in Node: the SSE parser (chunks split anywhere, CRLF, comments,
// multi-line data, ids) and reading a token's claims.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { claimsOf } from '../../components/gateway/web/assets/session.js';
import { SseParser } from '../../components/gateway/web/assets/sse.js';
import { mintToken } from './support.mjs';

function parse(chunks) {
  const events = [];
  const parser = new SseParser((event) => events.push(event));
  chunks.forEach((chunk) => parser.push(chunk));
  return { events, parser };
}

test('SSE events split across chunks anywhere, in every line ending', () => {
  const stream = ': keep-alive\n\nevent: status\nid: 7\ndata: {"a":1}\n\r\nevent: status\r\nid: 8\r\ndata: x\r\ndata: y\r\n\r\ndata:z\rid:9\r\r';
  for (let size = 1; size <= stream.length; size++) {
    const chunks = [];
    for (let i = 0; i < stream.length; i += size) chunks.push(stream.slice(i, i + size));
    const { events, parser } = parse(chunks);
    assert.deepEqual(events, [
      { type: 'status', data: '{"a":1}', id: '7' },
      { type: 'status', data: 'x\ny', id: '8' },
      { type: 'message', data: 'z', id: '9' },
    ], `chunks of ${size}`);
    assert.equal(parser.lastEventId, '9');
  }
});

test('an event is only dispatched at its blank line, and an id without data moves the last id', () => {
  const { events, parser } = parse(['event: status\ndata: 1', '\n', 'id: 12\n\n']);
  assert.deepEqual(events, [{ type: 'status', data: '1', id: '12' }]);
  const idOnly = parse(['id: 40\n\n']);
  assert.deepEqual(idOnly.events, []);
  assert.equal(idOnly.parser.lastEventId, '40');
  assert.equal(parser.buffer, '');
});

test('claims are read from a token and its problems are explained', () => {
  const claims = claimsOf(mintToken('alice@example.com', 'customer'));
  assert.equal(claims.sub, 'alice@example.com');
  assert.equal(claims.role, 'customer');
  assert.throws(() => claimsOf('abc'), /three parts/);
  assert.throws(() => claimsOf('a.b.c'), /not readable JSON/);
  const expired = `x.${Buffer.from(JSON.stringify({ sub: 'a@b.co', role: 'staff', exp: 1 })).toString('base64url')}.y`;
  assert.throws(() => claimsOf(expired), /expired/);
  const noRole = `x.${Buffer.from(JSON.stringify({ sub: 'a@b.co', exp: 4e9 })).toString('base64url')}.y`;
  assert.throws(() => claimsOf(noRole), /no known role/);
});
