// Signing in with a pasted bearer token. The token stays in this tab's sessionStorage (one
// per page, so a tab can hold a customer and a staff session side by side). Its payload says
// who is signed in; only the server can check its signature, so a 401 signs the page out.

import { call } from './api.js';
import { $, notify } from './ui.js';

/** The claims of a JWT (not verified: the server does that), or an Error saying what is wrong. */
export function claimsOf(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('A token has three parts separated by dots.');
  let claims;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')), (c) => c.charCodeAt(0));
    claims = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new Error('The token payload is not readable JSON.');
  }
  if (typeof claims?.sub !== 'string' || !claims.sub) throw new Error('The token has no subject (sub).');
  if (!['customer', 'staff', 'admin'].includes(claims.role)) throw new Error('The token has no known role.');
  if (typeof claims.exp !== 'number') throw new Error('The token has no expiry (exp).');
  if (claims.exp * 1000 <= Date.now()) throw new Error(`The token expired at ${new Date(claims.exp * 1000).toLocaleString()}.`);
  return claims;
}

/** The signed-in user of one page. */
export class Session {
  /**
   * `page` names the stored token; `roles` may use the page; `onSignIn()` loads the page's
   * data, `onSignOut()` forgets it.
   */
  constructor({ page, roles, onSignIn, onSignOut }) {
    Object.assign(this, { key: `shop.token.${page}`, roles, onSignIn, onSignOut });
    this.token = null;
    this.claims = null;
    this.expiry = null;
  }

  /** Binds the sign-in form and the sign-out button, and restores the tab's session. */
  start() {
    $('#sign-in-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const error = this.signIn($('#token').value.trim());
      $('#sign-in-error').textContent = error ?? '';
      if (!error) $('#token').value = '';
    });
    $('#sign-out').addEventListener('click', () => this.signOut());
    const saved = sessionStorage.getItem(this.key);
    const problem = saved ? this.signIn(saved) : null;
    if (!this.token) {
      sessionStorage.removeItem(this.key);
      $('#sign-in-error').textContent = problem ?? '';
      this.show(false);
    }
  }

  /** Signs in with `token`; returns what is wrong with it, or null. */
  signIn(token) {
    if (!token) return 'Paste a token first.';
    let claims;
    try {
      claims = claimsOf(token);
    } catch (error) {
      return error.message;
    }
    if (!this.roles.includes(claims.role)) {
      return `This page is for ${this.roles.join(' or ')}; the token's role is ${claims.role}.`;
    }
    this.token = token;
    this.claims = claims;
    sessionStorage.setItem(this.key, token);
    $('[data-who]').textContent = claims.sub;
    $('[data-role]').textContent = claims.role;
    const until = new Date(claims.exp * 1000);
    $('[data-until]').textContent = `until ${until.toLocaleTimeString()}`;
    $('[data-until]').setAttribute('datetime', until.toISOString());
    // Timers hold at most ~24.8 days; a longer token is checked again on the next visit.
    this.expiry = setTimeout(() => this.signOut('Your token expired; sign in again.'), Math.min(until - Date.now(), 2 ** 31 - 1));
    this.show(true);
    this.onSignIn();
    return null;
  }

  /** Signs out; `reason` (text or an API problem) is shown when given. */
  signOut(reason) {
    clearTimeout(this.expiry);
    sessionStorage.removeItem(this.key);
    this.token = null;
    this.claims = null;
    this.onSignOut();
    this.show(false);
    if (reason) notify(reason, { error: true });
  }

  show(signedIn) {
    $('#session').hidden = !signedIn;
    $('#sign-in').hidden = signedIn;
    $('#app').hidden = !signedIn;
    if (!signedIn) $('#token').focus();
  }

  /** An API call as the signed-in user (see api.js `call`); a 401 signs out once. */
  async call(method, path, options) {
    const token = this.token;
    try {
      return await call(token, method, path, options);
    } catch (error) {
      if (error.status === 401) {
        if (this.token === token && token) this.signOut(error);
        error.handled = true;
      }
      throw error;
    }
  }
}
