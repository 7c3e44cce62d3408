// Calls to the shop's public API (openapi.yaml). Every failure becomes an ApiError that
// carries the answer's problem+json (title, detail) and correlation id, for the page to show.

/** A failed API call: an HTTP error answer, or no answer at all (status 0). */
class ApiError extends Error {
  constructor(status, problem, correlationId) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.title = problem.title || (status ? `HTTP ${status}` : 'Network error');
    this.problem = problem;
    this.correlationId = correlationId;
  }
}

/** The ApiError for an error answer, from its problem+json body when it has one. */
export async function problemFrom(response) {
  const text = await response.text().catch(() => '');
  let problem;
  try {
    problem = JSON.parse(text);
  } catch {
    problem = null;
  }
  if (!problem || typeof problem !== 'object') {
    problem = { title: `HTTP ${response.status}`, detail: text.trim().slice(0, 300) || response.statusText };
  }
  return new ApiError(response.status, problem, response.headers.get('x-correlation-id'));
}

/** The ApiError for a request that got no answer (network down, server gone). */
export function networkError(error) {
  return new ApiError(0, {
    title: 'Network error',
    detail: `The shop could not be reached (${error.message}).`,
  }, null);
}

/**
 * Sends one API call with `token` and returns the JSON answer (null when empty).
 * Options: `body` (sent as JSON) and extra `headers`.
 */
export async function call(token, method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { accept: 'application/json', ...headers } };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw networkError(error);
  }
  if (!response.ok) throw await problemFrom(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** A path segment or query value, percent-encoded. */
export const enc = encodeURIComponent;

/** A fresh Idempotency-Key (works outside secure contexts, unlike randomUUID). */
export function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}
