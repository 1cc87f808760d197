/**
 * The admin endpoint's defences against requests a browser makes on behalf of another site
 * (issue 12 "Admin"; docs/operations.md "The admin API and its security rules"). Pure functions
 * over request headers, checked before the token and before any handler runs:
 *
 *   Host     DNS rebinding: a page on evil.example whose name is re-pointed at 127.0.0.1 makes
 *            the browser send `Host: evil.example` to this endpoint, same-origin for the page.
 *            Accepted: no Host (not a browser), an IP literal (a browser sends one only when the
 *            user typed it: the page is then this endpoint's own origin), `localhost`, or a name
 *            of `admin.allowed_hosts`; the port is ignored. /healthz is exempt (it says "ok").
 *   Origin   Cross-site requests: a page can POST a form or text/plain to any address the
 *            browser reaches. Accepted: no Origin (curl, the CLI), an Origin whose host[:port]
 *            is the request's Host (the status page itself), or whose host is a name of
 *            `admin.allowed_hosts` (a reverse proxy that rewrites Host). `null` (sandboxed
 *            frames, file: pages) and anything else are refused, on every method.
 *   Content-Type  POST needs application/json: the one body type a cross-site page cannot send
 *            without a CORS preflight (which this endpoint does not grant: OPTIONS is 405).
 *
 * Nothing here replaces the bearer token (admin.token_file) for non-browser clients on the
 * network; these rules close what a browser on the operator's machine could otherwise do.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { parseIpAddress } from '../config/address';

export interface Refusal {
  status: 403;
  error: string;
}

/** host[:port] of a Host header or a URL authority → lower-case host without port and trailing dot. */
export function hostOf(hostPort: string): string {
  const h = hostPort.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end < 0 ? h : h.slice(1, end);
  }
  const colon = h.lastIndexOf(':');
  const name = colon >= 0 && /^\d*$/.test(h.slice(colon + 1)) ? h.slice(0, colon) : h;
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

function isIpLiteral(host: string): boolean {
  return typeof parseIpAddress(host) !== 'string';
}

/** True when `host` (from hostOf) names this endpoint for a browser: see the header comment. */
export function hostAllowed(host: string, allowedHosts: readonly string[]): boolean {
  return host === 'localhost' || isIpLiteral(host) || allowedHosts.includes(host);
}

/**
 * Checks Host and Origin (header comment); null when the request may go on, else the 403 to
 * send. `path` is the URL path.
 */
export function checkBrowserRequest(headers: IncomingHttpHeaders, path: string, allowedHosts: readonly string[]): Refusal | null {
  const hostHeader = headers.host;
  if (hostHeader !== undefined && path !== '/healthz') {
    const host = hostOf(hostHeader);
    if (!hostAllowed(host, allowedHosts)) {
      return {
        status: 403,
        error: `Host "${host}" is not this endpoint's address: use its IP address or localhost, or add the name to admin.allowed_hosts (a foreign name is how DNS rebinding reaches a local endpoint)`,
      };
    }
  }
  const origin = headers.origin;
  if (origin !== undefined) {
    let ok = false;
    if (origin !== 'null') {
      try {
        const u = new URL(origin);
        const sameHost = hostHeader !== undefined && u.host === hostHeader.trim().toLowerCase();
        ok = (u.protocol === 'http:' || u.protocol === 'https:') && (sameHost || allowedHosts.includes(hostOf(u.host)));
      } catch {
        ok = false;
      }
    }
    if (!ok) {
      return {
        status: 403,
        error: `Origin "${origin.slice(0, 200)}" may not use this endpoint: requests from another site's pages are refused (same origin only, or a name of admin.allowed_hosts)`,
      };
    }
  }
  return null;
}

/** True for a Content-Type of application/json (parameters such as charset allowed). */
export function isJson(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const semi = contentType.indexOf(';');
  return (semi < 0 ? contentType : contentType.slice(0, semi)).trim().toLowerCase() === 'application/json';
}
