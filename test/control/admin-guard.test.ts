/**
 * The admin endpoint against a browser used by another site (issue 12 "Admin"): a Balancer (a
 * cluster of one over a FakeTunDevice) and raw HTTP requests with chosen Host, Origin and
 * Content-Type headers, table-driven:
 *   - a foreign Host is 403 (DNS rebinding), on every path but /healthz; IP literals,
 *     localhost and the names of admin.allowed_hosts are served;
 *   - a foreign or `null` Origin is 403; the endpoint's own origin and allowed names are served;
 *   - a POST whose Content-Type is not application/json is 415 (what a page can send cross-site
 *     without a preflight: text/plain, a form), and the CORS preflight is 405;
 *   - none of the refused requests changed anything (no backend drained).
 * The pure header checks are tested on their own at the end.
 */
import test from 'ava';
import { request } from 'node:http';
import { startBalancer } from '../helpers/balancer-harness';
import { checkBrowserRequest, hostOf, isJson } from '../../src/control/admin-guard';

const CONFIG = `
cluster: { id: guard-test, key_file: cluster.key }
balancers:
  - { id: lb1, address: 10.99.2.11 }
tun: { name: tunlb-gtest0 }
flow_table: { capacity: 1024 }
vips:
  - name: web4
    address: 10.99.0.10
    ports: [80]
    backends: [{ address: 10.99.3.21 }, { address: 10.99.3.22 }]
log: { level: info }
`;

interface Reply {
  status: number;
  body: string;
}

/** One raw request to host:port with exactly these headers (Host as given, or the default). */
function raw(admin: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<Reply> {
  const i = admin.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = request({ host: admin.slice(0, i), port: Number(admin.slice(i + 1)), method, path, headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) }, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(body);
  });
}

const DRAIN = JSON.stringify({ vip: 'web4', address: '10.99.3.22' });

// [title, method, path, headers (PORT is replaced by the endpoint's port), body, expected status]
type Case = [string, string, string, Record<string, string>, string | undefined, number];
const CASES: Case[] = [
  ['Host 127.0.0.1:PORT', 'GET', '/api/v1/stats', { host: '127.0.0.1:PORT' }, undefined, 200],
  ['Host localhost:PORT', 'GET', '/api/v1/stats', { host: 'localhost:PORT' }, undefined, 200],
  ['Host LOCALHOST (any case, no port)', 'GET', '/api/v1/stats', { host: 'LOCALHOST' }, undefined, 200],
  ['Host [::1]:PORT', 'GET', '/api/v1/stats', { host: '[::1]:PORT' }, undefined, 200],
  ['Host 10.99.2.11 (an IP literal)', 'GET', '/api/v1/stats', { host: '10.99.2.11:PORT' }, undefined, 200],
  ['Host of admin.allowed_hosts', 'GET', '/api/v1/stats', { host: 'Tunlb-Admin.Example.NET:443' }, undefined, 200],
  ['Host evil.example (DNS rebinding)', 'GET', '/api/v1/stats', { host: 'evil.example:PORT' }, undefined, 403],
  ['Host evil.example on the status page', 'GET', '/', { host: 'evil.example' }, undefined, 403],
  ['Host evil.example on the flows listing', 'GET', '/api/v1/flows', { host: 'evil.example' }, undefined, 403],
  ['Host evil.example on /metrics', 'GET', '/metrics', { host: 'evil.example' }, undefined, 403],
  ['Host localhost.evil.example', 'GET', '/api/v1/stats', { host: 'localhost.evil.example' }, undefined, 403],
  ['Host 127.0.0.1.nip.io', 'GET', '/api/v1/stats', { host: '127.0.0.1.nip.io:PORT' }, undefined, 403],
  ['Host evil.example on /healthz (exempt: says only ok)', 'GET', '/healthz', { host: 'evil.example' }, undefined, 200],
  ['Origin of the endpoint itself', 'GET', '/api/v1/stats', { host: '127.0.0.1:PORT', origin: 'http://127.0.0.1:PORT' }, undefined, 200],
  ['Origin of an allowed name', 'GET', '/api/v1/stats', { host: '127.0.0.1:PORT', origin: 'https://tunlb-admin.example.net' }, undefined, 200],
  ['Origin evil.example', 'GET', '/api/v1/stats', { host: '127.0.0.1:PORT', origin: 'http://evil.example' }, undefined, 403],
  ['Origin null', 'GET', '/api/v1/stats', { host: '127.0.0.1:PORT', origin: 'null' }, undefined, 403],
  ['Origin on another port of this host', 'GET', '/api/v1/stats', { host: '127.0.0.1:PORT', origin: 'http://127.0.0.1:8080' }, undefined, 403],
  ['drain as text/plain, foreign Origin (the issue\'s attack)', 'POST', '/api/v1/backends/drain', { host: '127.0.0.1:PORT', origin: 'http://evil.example', 'content-type': 'text/plain' }, DRAIN, 403],
  ['drain as application/json, foreign Origin', 'POST', '/api/v1/backends/drain', { host: '127.0.0.1:PORT', origin: 'http://evil.example', 'content-type': 'application/json' }, DRAIN, 403],
  ['drain as text/plain, no Origin', 'POST', '/api/v1/backends/drain', { host: '127.0.0.1:PORT', 'content-type': 'text/plain' }, DRAIN, 415],
  ['drain as a form', 'POST', '/api/v1/backends/drain', { host: '127.0.0.1:PORT', 'content-type': 'application/x-www-form-urlencoded' }, 'vip=web4&address=10.99.3.22', 415],
  ['drain as multipart', 'POST', '/api/v1/backends/drain', { host: '127.0.0.1:PORT', 'content-type': 'multipart/form-data; boundary=x' }, DRAIN, 415],
  ['drain without Content-Type', 'POST', '/api/v1/backends/drain', { host: '127.0.0.1:PORT' }, DRAIN, 415],
  ['reload as text/plain', 'POST', '/api/v1/reload', { host: '127.0.0.1:PORT', 'content-type': 'text/plain' }, '{}', 415],
  ['drain from a rebinding page', 'POST', '/api/v1/backends/drain', { host: 'evil.example:PORT', origin: 'http://evil.example:PORT', 'content-type': 'application/json' }, DRAIN, 403],
  ['CORS preflight', 'OPTIONS', '/api/v1/backends/drain', { host: '127.0.0.1:PORT', origin: 'http://evil.example', 'access-control-request-method': 'POST' }, undefined, 405],
];

test('admin requests: foreign Host 403, foreign Origin 403, non-JSON POST 415; nothing refused changes anything', async (t) => {
  const s = await startBalancer(t, {
    config: `${CONFIG}admin: { listen: "127.0.0.1:9180", allowed_hosts: [tunlb-admin.example.net] }\n`,
    tunName: 'tunlb-gtest0',
    key: Buffer.alloc(32, 0x4e),
  });
  const port = s.admin.slice(s.admin.lastIndexOf(':') + 1);
  for (const [title, method, path, headers, body, want] of CASES) {
    const h = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, v.replace('PORT', port)]));
    const r = await raw(s.admin, method, path, h, body);
    t.is(r.status, want, `${title}: ${r.body}`);
    if (want === 403) t.regex(JSON.parse(r.body).error, /^(Host|Origin) "/, title);
    if (want === 415) t.regex(JSON.parse(r.body).error, /Content-Type: application\/json/, title);
  }
  t.false(s.b.health.states().some((x) => x.drained), 'no refused request drained a backend');
  // The same drain, sent as the CLI and the status page's origin send it, works.
  const ok = await raw(s.admin, 'POST', '/api/v1/backends/drain', { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}`, 'content-type': 'application/json; charset=utf-8' }, DRAIN);
  t.is(ok.status, 200, ok.body);
  t.true(s.b.health.states().find((x) => x.backend === '10.99.3.22')!.drained);
});

test('admin requests with a token: the Host and Origin checks come first, then 401, then 415', async (t) => {
  const s = await startBalancer(t, {
    config: `${CONFIG}admin: { listen: "127.0.0.1:9180", token_file: admin.token }\n`,
    tunName: 'tunlb-gtest0',
    key: Buffer.alloc(32, 0x4e),
    token: 'guard-token-77',
  });
  const port = s.admin.slice(s.admin.lastIndexOf(':') + 1);
  const host = `127.0.0.1:${port}`;
  t.is((await raw(s.admin, 'GET', '/api/v1/stats', { host: 'evil.example', authorization: 'Bearer guard-token-77' })).status, 403);
  t.is((await raw(s.admin, 'POST', '/api/v1/reload', { host, 'content-type': 'text/plain' }, '{}')).status, 401);
  t.is((await raw(s.admin, 'POST', '/api/v1/reload', { host, 'content-type': 'text/plain', authorization: 'Bearer guard-token-77' }, '{}')).status, 415);
  t.is((await raw(s.admin, 'POST', '/api/v1/reload', { host, 'content-type': 'application/json', authorization: 'Bearer guard-token-77' }, '{}')).status, 200);
});

test('hostOf, isJson, checkBrowserRequest (pure)', (t) => {
  const cases: [string, string][] = [
    ['127.0.0.1:9180', '127.0.0.1'],
    ['[::1]:9180', '::1'],
    ['[fd99::10]', 'fd99::10'],
    ['LocalHost', 'localhost'],
    ['example.net.:80', 'example.net'],
    ['example.net', 'example.net'],
  ];
  for (const [h, want] of cases) t.is(hostOf(h), want, h);
  t.true(isJson('application/json'));
  t.true(isJson('Application/JSON; charset=utf-8'));
  t.false(isJson('application/jsonx'));
  t.false(isJson('text/plain'));
  t.false(isJson(undefined));
  t.is(checkBrowserRequest({}, '/api/v1/stats', []), null, 'no Host, no Origin: not a browser');
  t.is(checkBrowserRequest({ host: 'a.example' }, '/api/v1/stats', ['a.example']), null);
  t.is(checkBrowserRequest({ host: 'b.example' }, '/api/v1/stats', ['a.example'])?.status, 403);
  t.is(checkBrowserRequest({ host: '127.0.0.1', origin: 'ftp://127.0.0.1' }, '/', [])?.status, 403, 'not http(s)');
  t.is(checkBrowserRequest({ host: '127.0.0.1', origin: 'not a url' }, '/', [])?.status, 403);
});
