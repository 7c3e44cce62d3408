// Server-Sent Events read with fetch(): EventSource cannot send an Authorization header.
// SseParser follows the HTML standard's event stream format; EventStream keeps a stream
// open, reconnecting with Last-Event-ID so that no change is missed or repeated.

import { networkError, problemFrom } from './api.js';

/** Turns decoded text chunks into events `{ type, data, id }`. */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.afterCr = false;
    this.lastEventId = '';
    this.type = '';
    this.data = [];
  }

  /** Feeds the next chunk of text; lines may be split anywhere between chunks. */
  push(text) {
    if (!text) return;
    let start = 0;
    // A CR ended the last chunk: an LF starting this one belongs to it (CRLF).
    if (this.afterCr && text[0] === '\n') start = 1;
    this.afterCr = false;
    for (let i = start; i < text.length; i++) {
      const c = text[i];
      if (c !== '\n' && c !== '\r') continue;
      this.line(this.buffer + text.slice(start, i));
      this.buffer = '';
      if (c === '\r') {
        if (i + 1 === text.length) this.afterCr = true;
        else if (text[i + 1] === '\n') i++;
      }
      start = i + 1;
    }
    this.buffer += text.slice(start);
  }

  line(line) {
    if (line === '') {
      if (this.data.length) {
        this.onEvent({ type: this.type || 'message', data: this.data.join('\n'), id: this.lastEventId });
      }
      this.type = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return; // a comment, e.g. ": keep-alive"
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.lastEventId = value;
  }
}

/** Reconnect after this long without a byte (the server sends keep-alives when idle). */
const IDLE_MS = 60_000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A live event stream at `path`, opened with `token`:
 * - `onEvent(event)` for each event;
 * - `onState(state)` with 'connecting', 'live', 'reconnecting', 'ended' or 'stopped';
 * - `onProblem(apiError, willRetry)` when the server refuses or cannot be reached;
 * - `reconnect()`: whether to open the stream again after the server ended it.
 */
export class EventStream {
  constructor(path, { token, onEvent, onState = () => {}, onProblem = () => {}, reconnect = () => true }) {
    Object.assign(this, { path, token, onEvent, onState, onProblem, reconnect });
    this.lastEventId = '';
    this.stopped = false;
    this.connection = null;
  }

  /** Opens the stream; it stays open (reconnecting as needed) until stop(). */
  start() {
    this.run();
    return this;
  }

  /** Closes the stream for good. */
  stop() {
    this.stopped = true;
    this.connection?.abort();
  }

  async run() {
    let backoff = 1000;
    this.onState('connecting');
    while (!this.stopped) {
      let retryAfterMs = backoff;
      try {
        const ended = await this.connect();
        if (this.stopped) return;
        if (ended) {
          if (!this.reconnect()) {
            this.onState('ended');
            return;
          }
          backoff = 1000;
          retryAfterMs = 250;
        }
      } catch (error) {
        if (this.stopped) return;
        if (error.status >= 400 && error.status < 500 && error.status !== 429) {
          this.onProblem(error, false);
          this.onState('stopped');
          return;
        }
        if (error.retryAfterMs) retryAfterMs = error.retryAfterMs;
        this.onProblem(error, true);
        backoff = Math.min(backoff * 2, 30_000);
      }
      this.onState('reconnecting');
      await sleep(retryAfterMs);
    }
  }

  /** One connection: true when the server ended the stream; throws on failures. */
  async connect() {
    const connection = new AbortController();
    this.connection = connection;
    const headers = { accept: 'text/event-stream', authorization: `Bearer ${this.token}` };
    if (this.lastEventId) headers['last-event-id'] = this.lastEventId;
    let response;
    try {
      response = await fetch(this.path, { headers, cache: 'no-store', signal: connection.signal });
    } catch (error) {
      throw networkError(error);
    }
    if (!response.ok) {
      const problem = await problemFrom(response);
      problem.retryAfterMs = Number(response.headers.get('retry-after')) * 1000 || 0;
      throw problem;
    }
    this.onState('live');
    const parser = new SseParser((event) => {
      this.lastEventId = event.id || this.lastEventId;
      this.onEvent(event);
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let idle = setTimeout(() => connection.abort(), IDLE_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return true;
        clearTimeout(idle);
        idle = setTimeout(() => connection.abort(), IDLE_MS);
        parser.push(value);
        if (this.stopped) return false;
      }
    } catch (error) {
      throw networkError(error);
    } finally {
      clearTimeout(idle);
    }
  }
}
