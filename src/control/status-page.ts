/**
 * The status page served at GET / by the admin endpoint (src/control/admin-server.ts): one
 * self-contained HTML document (inline CSS, inline JS, inline SVG charts; no CDN, no build
 * step, no external request), so it works on an air-gapped box and through an SSH tunnel.
 *
 * What it shows, polled once a second from this balancer's admin endpoint:
 *   - the cluster's balancers as cards: state (self / up / suspect / dead / unknown), status
 *     (serving / syncing / draining; a dead peer's is unknown, never "serving"), probe RTT (last
 *     and smoothed), last ack, and flows by recorded primary and backup as counted in this
 *     balancer's copy of the records (/api/v1/status); "flows held" and the "active flows"
 *     figure are the total of that same count (one table scan, at most 2 s old), so the
 *     primary-of figures of the cards add up to them;
 *   - live rates: packets in / out / to peers, new flows, active flows, failover packets,
 *     drops (/api/v1/stats every second; /api/v1/history fills the last 5 minutes at load)
 *     and three small charts of the last 5 minutes (packets; failover and drops; flows), each
 *     scaled to its own series, so a failover after a start-up burst still shows (on its own
 *     chart), and every chart marks peer down / up events with a dashed line;
 *   - the whole cluster at once (GET /api/v1/cluster, src/control/cluster-status.ts): one row
 *     per balancer with its status (down when dead here), config hash (a mismatch with this
 *     balancer's marked), flows held and as primary, packets per second in and out, probe RTT,
 *     last heard and the age of its figures (a peer's own, from its last summary); rows
 *     `tr[data-cluster-row=<id>][data-status][data-config][data-mismatch=0|1]`;
 *   - recent events (peer down, suspect, restarted, failover, status changes, config mismatch,
 *     operator actions with their origin), newest first;
 *   - drops by reason (total and per second);
 *   - the VIPs and their backends as ipvsadm -Ln --stats --rate shows them (GET /api/v1/vips,
 *     src/control/service-view.ts): state badge (and a "maint" badge in maintenance), weight (with
 *     "(file N)" while a runtime weight is in force), connections (total, active, per
 *     second), packets and bits per second in and out, totals, the health-check detail (last
 *     result, latency, failures in a row, when and by whom; last change; time down); rows
 *     `tr[data-vip]` / `tr[data-vip][data-backend]` with data-connections, data-active,
 *     data-in-packets, data-out-packets (older endpoints without /api/v1/vips: states and flows);
 *   - every data-plane and flow-table counter of the snapshot, rendered from the counter table
 *     (src/control/counters.ts, embedded in the page as COUNTERS: section, key, unit, help).
 *
 * Hooks for tests and scrapers of the page: every balancer card is
 * `.bal[data-balancer=<id>][data-state=<state>][data-status=<status>]` (its config hash in a
 * `config` row, `[data-config-mismatch]` on a mismatch) with `data-primary-of`
 * (and `data-flows-held` on this balancer's card); `#conn` carries `data-ok="1"` once data
 * arrived; each chart `svg.plot[data-max]` (its y-axis top) holds `polyline[data-series]` and
 * `line.marker[data-event][data-balancer]`.
 *
 * Token: with admin.token_file set, open `/?token=<token>` once (the token moves into the
 * tab's sessionStorage and out of the address bar) or type it into the form the page shows on
 * the first 401 (a form, not window.prompt: a prompt blocks headless browsers and scripts).
 */

import { COUNTERS } from './counters';

/** The page. Static: everything dynamic comes from the JSON endpoints. */
export function statusPageHtml(): string {
  return PAGE;
}

/** The counter table as the page's script reads it (no functions; `<` escaped for the script element). */
const COUNTER_JSON = JSON.stringify(COUNTERS.map((d) => ({ section: d.section, key: d.key, unit: d.unit, help: d.help }))).replace(/</g, '\\u003c');

const PAGE = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tunlb status</title>
<link rel="icon" href="data:,">
<style>
  :root {
    --bg: #f5f6f8; --card: #ffffff; --ink: #1b2230; --muted: #5b6474; --line: #dde1e7;
    --up: #1a7f37; --up-bg: #dcf5e3; --suspect: #8a5a00; --suspect-bg: #fff1c7;
    --dead: #c62828; --dead-bg: #fde2e1; --unknown: #57606a; --unknown-bg: #eceff2;
    --self: #0b5cad; --self-bg: #dcebfb;
    --c1: #0b5cad; --c2: #1a7f37; --c3: #8250df; --c4: #c62828; --c5: #b35c00;
    --mono: ui-monospace, "SF Mono", "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace;
  }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--ink); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
  header { display: flex; align-items: center; gap: 16px; flex-wrap: wrap; padding: 12px 24px; background: var(--card); border-bottom: 1px solid var(--line); }
  header h1 { font-size: 18px; margin: 0; letter-spacing: .2px; }
  header h1 b { font-family: var(--mono); }
  header .meta { color: var(--muted); }
  header .meta b { color: var(--ink); font-weight: 600; }
  #conn { margin-left: auto; display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 13px; }
  #conn .dot { width: 9px; height: 9px; border-radius: 50%; background: var(--unknown); }
  #conn[data-ok="1"] .dot { background: var(--up); }
  #conn[data-ok="0"] .dot { background: var(--dead); }
  #banner { display: none; margin: 12px 24px 0; padding: 10px 14px; border-radius: 6px; background: var(--dead-bg); color: var(--dead); border: 1px solid #f3b7b4; }
  #banner button { margin-left: 12px; }
  #token-form { margin: 12px 24px 0; padding: 12px 14px; border-radius: 6px; background: var(--card); border: 1px solid var(--line); display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
  #token-form[hidden] { display: none; }
  #token-form input { font: 13px var(--mono); padding: 4px 8px; min-width: 280px; border: 1px solid var(--line); border-radius: 4px; }
  #token-form button { padding: 4px 12px; }
  #token-note { color: var(--dead); font-size: 13px; }
  svg.plot line.marker { stroke-dasharray: 4 3; stroke-width: 1.2; }
  main { padding: 16px 24px 32px; display: grid; gap: 16px; grid-template-columns: repeat(12, 1fr); }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; min-width: 0; }
  section h2 { font-size: 13px; font-weight: 600; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); margin: 0 0 10px; display: flex; gap: 8px; align-items: baseline; }
  section h2 small { text-transform: none; letter-spacing: 0; font-weight: 400; }
  .span12 { grid-column: span 12; } .span6 { grid-column: span 6; } .span7 { grid-column: span 7; } .span5 { grid-column: span 5; }
  @media (max-width: 1000px) { .span6, .span7, .span5 { grid-column: span 12; } }
  .num, td.n, .kpi .v, .mono { font-family: var(--mono); font-variant-numeric: tabular-nums; }
  #balancers .grid { display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
  .bal { border: 1px solid var(--line); border-left: 5px solid var(--unknown); border-radius: 6px; padding: 10px 12px; }
  .bal[data-state="up"] { border-left-color: var(--up); }
  .bal[data-state="suspect"] { border-left-color: var(--suspect); background: #fffbeb; }
  .bal[data-state="dead"] { border-left-color: var(--dead); background: #fff6f5; }
  .bal[data-state="self"] { border-left-color: var(--self); }
  .bal .top { display: flex; align-items: center; gap: 8px; }
  .bal .id { font-family: var(--mono); font-size: 18px; font-weight: 700; }
  .bal .addr { color: var(--muted); font-family: var(--mono); font-size: 12px; }
  .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 700; letter-spacing: .4px; text-transform: uppercase; background: var(--unknown-bg); color: var(--unknown); }
  .badge.up { background: var(--up-bg); color: var(--up); }
  .badge.suspect { background: var(--suspect-bg); color: var(--suspect); }
  .badge.dead { background: var(--dead-bg); color: var(--dead); }
  .badge.self { background: var(--self-bg); color: var(--self); }
  .badge.soft { font-weight: 600; text-transform: none; letter-spacing: 0; background: transparent; border: 1px solid var(--line); color: var(--muted); }
  .badge.soft.serving { color: var(--up); border-color: #a8dcb8; }
  .badge.soft.syncing, .badge.soft.draining { color: var(--suspect); border-color: #ecd38a; }
  .badge.soft.stale { color: var(--muted); border-color: var(--line); text-decoration: line-through; }
  .dim { color: var(--muted); }
  .bal .top .badge:first-of-type { margin-left: auto; }
  .bal dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 8px 0 0; font-size: 13px; }
  .bal dt { color: var(--muted); }
  .bal dd { margin: 0; text-align: right; font-family: var(--mono); font-variant-numeric: tabular-nums; }
  .bal .note { margin-top: 6px; font-size: 12px; color: var(--dead); }
  .kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(120px, 1fr)); gap: 10px; margin-bottom: 12px; }
  .kpi { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
  .kpi .k { color: var(--muted); font-size: 12px; display: flex; align-items: center; gap: 6px; }
  .kpi .v { font-size: 22px; font-weight: 600; }
  .kpi .u { color: var(--muted); font-size: 12px; margin-left: 3px; font-family: var(--mono); }
  .kpi.alert .v { color: var(--dead); }
  .swatch { display: inline-block; width: 10px; height: 3px; border-radius: 1px; }
  .charts { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 16px; }
  @media (max-width: 1200px) { .charts { grid-template-columns: 1fr 1fr; } }
  @media (max-width: 800px) { .charts { grid-template-columns: 1fr; } }
  .chart h3 { margin: 0 0 4px; font-size: 13px; font-weight: 600; display: flex; gap: 12px; flex-wrap: wrap; }
  .chart h3 span.l { font-weight: 400; color: var(--muted); display: inline-flex; align-items: center; gap: 4px; margin-right: 10px; }
  svg.plot { width: 100%; height: 170px; display: block; }
  svg.plot text { font: 11px var(--mono); fill: var(--muted); }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  th { text-align: left; color: var(--muted); font-weight: 600; font-size: 12px; border-bottom: 1px solid var(--line); padding: 4px 6px; }
  td { border-bottom: 1px solid #eef0f3; padding: 4px 6px; vertical-align: top; }
  td.n, th.n { text-align: right; white-space: nowrap; }
  td.t { white-space: nowrap; font-family: var(--mono); color: var(--muted); }
  tr.sev-error td.ev { color: var(--dead); font-weight: 600; }
  tr.sev-warn td.ev { color: var(--suspect); font-weight: 600; }
  td.ev { font-family: var(--mono); white-space: nowrap; }
  .scroll { max-height: 360px; overflow: auto; }
  .empty { color: var(--muted); font-style: italic; padding: 6px; }
  footer { padding: 0 24px 24px; color: var(--muted); font-size: 12px; }
  footer a { color: var(--self); margin-right: 14px; font-family: var(--mono); }
  #vip-list { overflow-x: auto; }
  /* 17 columns: tighter cells so that the table fits a 1360 px window (the box scrolls when narrower). */
  table.services td, table.services th { white-space: nowrap; padding: 4px 3px; }
  table.services td { font-size: 12px; }
</style>
</head>
<body>
<header>
  <h1>tunlb <b id="self-id">…</b></h1>
  <span class="meta">cluster <b id="cluster" class="mono">…</b></span>
  <span class="meta" id="self-status"></span>
  <span class="meta">up <b id="uptime" class="mono">…</b></span>
  <span class="meta" id="live-count"></span>
  <span id="conn" data-ok=""><span class="dot"></span><span id="conn-text">connecting…</span></span>
</header>
<div id="banner"></div>
<form id="token-form" hidden>
  <label for="token-input">This admin endpoint needs its bearer token (the contents of <code>admin.token_file</code>):</label>
  <input id="token-input" name="token" type="password" autocomplete="off" spellcheck="false" required>
  <button type="submit">Use token</button>
  <span id="token-note"></span>
</form>
<main>
  <section id="balancers" class="span12">
    <h2>Balancers <small id="bal-note"></small></h2>
    <div class="grid" id="bal-grid"></div>
  </section>
  <section id="cluster" class="span12">
    <h2>The whole cluster <small id="cluster-note">each balancer's own figures, as it last reported them over the control channel</small></h2>
    <div id="cluster-list"></div>
  </section>
  <section id="traffic" class="span12">
    <h2>Traffic on this balancer <small>rates over the last 2 s; charts: up to the last 5 minutes</small></h2>
    <div class="kpis" id="kpis"></div>
    <div class="charts">
      <div class="chart"><h3>Packets / s <span id="leg-pkts"></span></h3><svg class="plot" id="chart-pkts"></svg></div>
      <div class="chart"><h3>Failover and drops / s <span id="leg-fail"></span></h3><svg class="plot" id="chart-fail"></svg></div>
      <div class="chart"><h3>Flows <span id="leg-flows"></span></h3><svg class="plot" id="chart-flows"></svg></div>
    </div>
  </section>
  <section id="events" class="span7">
    <h2>Recent events <small>newest first</small></h2>
    <div class="scroll" id="event-list"></div>
  </section>
  <section id="drops" class="span5">
    <h2>Drops by reason <small>total · per second (last 10 s)</small></h2>
    <div id="drop-list"></div>
  </section>
  <section id="vips" class="span12">
    <h2>VIPs and backends <small id="vip-note">state (cluster-wide) · flows counted in this balancer's table</small></h2>
    <div id="vip-list"></div>
  </section>
  <section id="counters" class="span12">
    <h2>Counters <small>this balancer, since start</small></h2>
    <div id="counter-list"></div>
  </section>
</main>
<footer>
  JSON and metrics:
  <a href="/api/v1/status">/api/v1/status</a><a href="/api/v1/stats">/api/v1/stats</a><a href="/api/v1/events">/api/v1/events</a><a href="/api/v1/flows?limit=100">/api/v1/flows</a><a href="/api/v1/vips">/api/v1/vips</a><a href="/api/v1/cluster">/api/v1/cluster</a><a href="/metrics">/metrics</a>
</footer>
<script>
(function () {
  'use strict';
  var WINDOW_S = 300;
  var samples = [];        // {at, rx, tx, peerTx, peerRx, fo, drops, active, created, expired}
  var dropHist = [];       // {at, drops: {reason: n}}
  var status = null, stats = null, backends = null, services = null, cluster = null;
  var lastOk = 0, failures = 0, needToken = false;

  // ---- token: ?token= once (kept in this tab), or asked for on the first 401
  var token = null;
  try {
    var q = new URLSearchParams(location.search);
    if (q.has('token')) {
      token = q.get('token');
      sessionStorage.setItem('tunlb-admin-token', token);
      q.delete('token');
      var rest = q.toString();
      history.replaceState(null, '', location.pathname + (rest ? '?' + rest : ''));
    } else {
      token = sessionStorage.getItem('tunlb-admin-token');
    }
  } catch (e) { /* storage disabled: token only for this page load */ }

  // The token form (shown on a 401; see the header: no window.prompt). A token that was
  // tried and answered 401 again is said to be refused.
  var tokenTried = false;
  function showTokenForm() {
    var f = $('token-form');
    if (f.hidden) { f.hidden = false; $('token-input').focus(); }
    $('token-note').textContent = tokenTried ? 'that token was refused (HTTP 401): check admin.token_file' : '';
  }
  $('token-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var t = $('token-input').value.trim();
    if (!t) return;
    token = t;
    try { sessionStorage.setItem('tunlb-admin-token', token); } catch (err) { /* storage disabled: this page load only */ }
    tokenTried = true;
    needToken = false;
    $('token-note').textContent = 'checking…';
    loadHistory().then(tick);
  });

  function api(path) {
    var h = {};
    if (token) h['Authorization'] = 'Bearer ' + token;
    return fetch(path, { headers: h, cache: 'no-store' }).then(function (r) {
      if (r.status === 401) { needToken = true; throw new Error('the admin endpoint needs a bearer token'); }
      if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
      return r.json();
    });
  }

  // ---- formatting
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]; });
  }
  function int(n) { return n == null ? '–' : Math.round(n).toLocaleString('en-US'); }
  function si(n) {
    if (n == null || !isFinite(n)) return '–';
    var a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 1 : 2) + 'G';
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 1 : 2) + 'M';
    if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + 'k';
    if (a >= 100 || n === 0) return Math.round(n).toString();
    return n.toFixed(a >= 10 ? 1 : 2);
  }
  function bits(bytesPerS) {
    var b = bytesPerS * 8;
    if (b >= 1e9) return (b / 1e9).toFixed(2) + ' Gbit/s';
    if (b >= 1e6) return (b / 1e6).toFixed(2) + ' Mbit/s';
    if (b >= 1e3) return (b / 1e3).toFixed(1) + ' kbit/s';
    return Math.round(b) + ' bit/s';
  }
  function ms(v) {
    if (v == null) return '–';
    if (v < 1) return (v * 1000).toFixed(0) + ' µs';
    if (v < 100) return v.toFixed(2) + ' ms';
    return Math.round(v) + ' ms';
  }
  function dur(s) {
    s = Math.max(0, Math.floor(s));
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), x = s % 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + pad(m) + 'm';
    if (m) return m + 'm ' + pad(x) + 's';
    return x + 's';
  }
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function clock(iso) { var d = new Date(iso); return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
  function ago(iso, now) { return dur((now - Date.parse(iso)) / 1000) + ' ago'; }
  function $(id) { return document.getElementById(id); }

  // ---- samples and rates
  function sumValues(o) { var s = 0; for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) s += o[k]; return s; }
  function push(s) {
    var last = samples[samples.length - 1];
    if (last && s.at <= last.at) return;
    samples.push(s);
    while (samples.length > 2 && samples[0].at < s.at - (WINDOW_S + 5) * 1000) samples.shift();
  }
  function fromStats(st) {
    var c = st.counters;
    return { at: st.at, rx: c.rxPackets, rxB: c.rxBytes, tx: c.txPackets, txB: c.txBytes, peerTx: c.peerTxPackets, peerRx: c.peerRxPackets,
      fo: c.failoverPackets, drops: sumValues(c.drops), active: st.flows.active, created: st.flows.created, expired: st.flows.expired };
  }
  function fromHistory(h) {
    return { at: h.at, rx: h.rxPackets, rxB: h.rxBytes, tx: h.txPackets, txB: h.txBytes, peerTx: h.peerTxPackets, peerRx: h.peerRxPackets,
      fo: h.failoverPackets, drops: h.drops, active: h.flowsActive, created: h.flowsCreated, expired: h.flowsExpired };
  }
  /** Rate of field f over the last windowS seconds (counter resets read as 0). */
  function rate(f, windowS) {
    var n = samples.length;
    if (n < 2) return null;
    var b = samples[n - 1], a = samples[n - 2];
    for (var i = n - 2; i >= 0; i--) { a = samples[i]; if (b.at - a.at >= windowS * 1000) break; }
    var dt = (b.at - a.at) / 1000;
    if (dt <= 0) return null;
    return Math.max(0, (b[f] - a[f]) / dt);
  }
  /** Per-interval rates of field f: [{t, v}]. */
  function series(f) {
    var out = [];
    for (var i = 1; i < samples.length; i++) {
      var a = samples[i - 1], b = samples[i], dt = (b.at - a.at) / 1000;
      if (dt <= 0 || dt > 10) continue;
      out.push({ t: b.at, v: Math.max(0, (b[f] - a[f]) / dt) });
    }
    return out;
  }
  function level(f) { return samples.map(function (s) { return { t: s.at, v: s[f] }; }); }

  // ---- charts (inline SVG)
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  /** The chart window: 1, 2 or 5 minutes, the smallest that holds the data we have. */
  function chartWindow(now) {
    var span = samples.length ? (now - samples[0].at) / 1000 : 0;
    return span <= 60 ? 60 : span <= 120 ? 120 : WINDOW_S;
  }
  /** Peer down / up events inside the chart window, as vertical markers (status.events). */
  function markers(now, win) {
    if (!status) return [];
    return status.events.filter(function (e) {
      var t = Date.parse(e.at);
      return (e.type === 'peer_down' || e.type === 'peer_up' || e.type === 'peer_restarted') && t >= now - win * 1000 && t <= now;
    });
  }
  function drawChart(svg, list, now) {
    var win = chartWindow(now), step = win === 60 ? 10 : win === 120 ? 20 : 60;
    var W = Math.max(200, svg.clientWidth || 600), H = 170, L = 44, R = 8, T = 8, B = 20;
    var pw = W - L - R, ph = H - T - B;
    var max = 0;
    list.forEach(function (s) { s.values.forEach(function (p) { if (p.t >= now - win * 1000 && p.v > max) max = p.v; }); });
    max = niceMax(max);
    var x = function (t) { return L + pw - (now - t) / (win * 1000) * pw; };
    var y = function (v) { return T + ph - v / max * ph; };
    var o = [];
    for (var g = 0; g <= 4; g++) {
      var gy = T + ph - g / 4 * ph;
      o.push('<line x1="' + L + '" x2="' + (L + pw) + '" y1="' + gy + '" y2="' + gy + '" stroke="' + (g ? '#eef0f3' : '#c9ced6') + '"/>');
      o.push('<text x="' + (L - 6) + '" y="' + (gy + 4) + '" text-anchor="end">' + si(max * g / 4) + '</text>');
    }
    for (var s = win; s >= 0; s -= step) {
      var gx = L + pw - s / win * pw;
      o.push('<line x1="' + gx + '" x2="' + gx + '" y1="' + T + '" y2="' + (T + ph) + '" stroke="#f1f3f6"/>');
      o.push('<text x="' + gx + '" y="' + (H - 5) + '" text-anchor="' + (s === 0 ? 'end' : s === win ? 'start' : 'middle') + '">' +
        (s === 0 ? 'now' : win > 120 ? '-' + s / 60 + 'm' : '-' + s + 's') + '</text>');
    }
    // Labels go right of their line (left of it near the right edge), one row lower when they
    // would overlap the previous one (at most three rows; ~6.6 units per character at 11px).
    var rowEnd = [-1e9, -1e9, -1e9];
    markers(now, win).forEach(function (e) {
      var mx = x(Date.parse(e.at)), down = e.type === 'peer_down', color = down ? '#c62828' : '#1a7f37';
      var label = e.balancer + (down ? ' down' : ' up'), w = label.length * 6.6;
      var left = mx + 3 + w > L + pw, x0 = left ? mx - 3 - w : mx + 3;
      o.push('<line class="marker" data-event="' + esc(e.type) + '" data-balancer="' + esc(e.balancer) + '" x1="' + mx.toFixed(1) + '" x2="' + mx.toFixed(1) + '" y1="' + T + '" y2="' + (T + ph) +
        '" stroke="' + color + '"><title>' + esc(e.balancer + ' ' + e.type.replace('peer_', '') + ' at ' + clock(e.at)) + '</title></line>');
      for (var row = 0; row < rowEnd.length; row++) {
        if (x0 > rowEnd[row] + 2) {
          rowEnd[row] = x0 + w;
          o.push('<text x="' + (left ? mx - 3 : mx + 3).toFixed(1) + '" y="' + (T + 10 + row * 12) + '" text-anchor="' + (left ? 'end' : 'start') + '" style="fill:' + color + '">' + esc(label) + '</text>');
          break;
        }
      }
    });
    list.forEach(function (s, k) {
      var pts = s.values.filter(function (p) { return p.t >= now - win * 1000; }).map(function (p) { return x(p.t).toFixed(1) + ',' + y(p.v).toFixed(1); });
      if (!pts.length) return;
      if (k === 0 && pts.length > 1) {
        o.push('<polygon fill="' + s.color + '" fill-opacity="0.10" stroke="none" points="' + pts[0].split(',')[0] + ',' + (T + ph) + ' ' + pts.join(' ') + ' ' + pts[pts.length - 1].split(',')[0] + ',' + (T + ph) + '"/>');
      }
      o.push('<polyline data-series="' + esc(s.name) + '" fill="none" stroke="' + s.color + '" stroke-width="1.6" stroke-linejoin="round" points="' + pts.join(' ') + '"/>');
    });
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('data-max', String(max));
    svg.innerHTML = o.join('');
  }
  function legend(list) {
    return list.map(function (s) { return '<span class="l"><span class="swatch" style="background:' + s.color + '"></span>' + esc(s.name) + '</span>'; }).join('');
  }

  // ---- rendering
  var STATE_TEXT = { self: 'self', up: 'up', suspect: 'suspect', dead: 'dead', unknown: 'unknown' };
  function lastEventTime(id, type) {
    var ev = status.events;
    for (var i = ev.length - 1; i >= 0; i--) if (ev[i].balancer === id && ev[i].type === type) return ev[i].at;
    return null;
  }
  function renderBalancers(now) {
    var bs = status.balancers, html = [], live = 0;
    bs.forEach(function (b) {
      if (b.live) live++;
      var rows = [];
      if (b.self) {
        // The same table scan as every card's primary-of and backup-of: they add up to it.
        rows.push(['flows held', int(b.flowsHeld)]);
        rows.push(['synced from', esc(status.self.syncedFrom || '–')]);
        var sy = status.self.sync;
        if (sy && sy.state === 'syncing') {
          rows.push(['bulk sync', int(sy.received) + (sy.total != null ? ' of ' + int(sy.total) : '') + ' records from ' + esc(sy.peer || '?') + ' <span class="dim">' + int(sy.ratePerS) + '/s</span>']);
        } else if (sy) {
          rows.push(['bulk sync', esc(sy.state) + ': ' + int(sy.received) + ' records in ' + dur(sy.elapsedMs / 1000) + (sy.resumes ? ' <span class="dim">(' + sy.resumes + ' resumed)</span>' : '')]);
        }
        rows.push(['incarnation', String(b.incarnation)]);
      } else {
        var gone = b.state === 'dead' || b.state === 'unknown';
        rows.push(['probe RTT', gone ? '<span class="dim">– (last ' + ms(b.rttMs) + ')</span>' : ms(b.rttMs) + ' <span class="dim">avg ' + ms(b.rttAvgMs) + '</span>']);
        rows.push(['last ack', b.lastAckAgoMs == null ? 'never' : (b.lastAckAgoMs >= 1000 ? dur(b.lastAckAgoMs / 1000) : ms(b.lastAckAgoMs)) + ' ago']);
        rows.push(['missed probes', String(b.misses)]);
      }
      rows.push(['primary of', int(b.flowsAsPrimary) + ' flows']);
      rows.push(['backup of', int(b.flowsAsBackup) + ' flows']);
      // The config version it reported last (Probe.config_hash); a mismatch with this balancer's is marked.
      rows.push(['config', b.configHash ? '<span class="mono">' + esc(b.configHash) + '</span>' + (b.configMismatch ? ' <span class="badge" data-config-mismatch="1" title="differs from ' +
        esc(status.self.configHash || '') + '">mismatch</span>' : '') : '<span class="dim">–</span>']);
      var note = '';
      if (b.state === 'dead') {
        var at = lastEventTime(b.id, 'peer_down');
        note = '<div class="note">dead' + (at ? ' since ' + clock(at) + ' (' + ago(at, now) + ')' : '') + ': its ' + int(b.flowsAsPrimary) + ' flows are served by their backups</div>';
      } else if (b.state === 'suspect') {
        note = '<div class="note" style="color:var(--suspect)">missing probe answers</div>';
      } else if (!b.self && b.state === 'up' && !b.live) {
        note = '<div class="note" style="color:var(--suspect)">answers probes but is not serving yet: gets no flows</div>';
      }
      // A dead peer's status is not known (the API says unknown); what it reported last is a tooltip.
      var gone = b.state === 'dead';
      var last = b.lastStatus && b.lastStatus !== 'unknown' ? b.lastStatus : null;
      html.push('<div class="bal" data-balancer="' + esc(b.id) + '" data-state="' + esc(b.state) + '" data-status="' + esc(gone ? 'unknown' : b.status) + '"' +
        ' data-primary-of="' + Number(b.flowsAsPrimary) + '"' + (b.self ? ' data-flows-held="' + Number(b.flowsHeld) + '"' : '') + '>' +
        '<div class="top"><span class="id">' + esc(b.id) + '</span><span class="addr">' + esc(b.address) + '</span>' +
        '<span class="badge ' + esc(b.state) + '">' + esc(STATE_TEXT[b.state] || b.state) + '</span>' +
        (gone
          ? '<span class="badge soft unknown" title="' + (last ? 'last reported status: ' + esc(last) : 'no status reported') + '">status unknown</span></div>'
          : '<span class="badge soft ' + esc(b.status) + '" title="reported status">' + esc(b.status) + '</span></div>') +
        '<dl>' + rows.map(function (r) { return '<dt>' + r[0] + '</dt><dd>' + r[1] + '</dd>'; }).join('') + '</dl>' + note + '</div>');
    });
    $('bal-grid').innerHTML = html.join('');
    $('bal-note').textContent = live + ' of ' + bs.length + ' live · probes every ' + (status.self.probe ? status.self.probe.intervalMs + ' ms, dead after ' + status.self.probe.misses + ' misses' : '– (cluster of one)') +
      ' · flow counts from ' + status.self.id + "'s copy of the records" + (status.flows.at ? ' (counted ' + clock(new Date(status.flows.at).toISOString()) + ')' : '');
    $('live-count').innerHTML = '<b class="mono">' + live + '/' + bs.length + '</b> balancers live';
    document.title = 'tunlb ' + status.self.id + ' · ' + live + '/' + bs.length + ' live';
  }
  function renderHeader() {
    $('self-id').textContent = status.self.id;
    $('cluster').textContent = status.cluster;
    var s = status.self.status;
    $('self-status').innerHTML = '<span class="badge soft ' + esc(s) + '">' + esc(s) + '</span>';
    $('uptime').textContent = dur(status.self.uptimeS);
  }
  function kpi(label, value, unit, color, alert) {
    return '<div class="kpi' + (alert ? ' alert' : '') + '"><div class="k">' + (color ? '<span class="swatch" style="background:' + color + '"></span>' : '') + esc(label) +
      '</div><div class="v">' + value + (unit ? '<span class="u">' + unit + '</span>' : '') + '</div></div>';
  }
  function renderTraffic(now) {
    var W = 2;
    var fo = rate('fo', W), dr = rate('drops', W);
    var last = samples[samples.length - 1];
    $('kpis').innerHTML = [
      kpi('packets in', si(rate('rx', W)), '/s', 'var(--c1)'),
      kpi('packets out (NAT)', si(rate('tx', W)), '/s', 'var(--c2)'),
      kpi('to peers', si(rate('peerTx', W)), '/s', 'var(--c3)'),
      kpi('from peers', si(rate('peerRx', W)), '/s'),
      kpi('throughput in', bits(rate('rxB', W) || 0).split(' ')[0], bits(rate('rxB', W) || 0).split(' ')[1]),
      kpi('new flows', si(rate('created', W)), '/s', 'var(--c5)'),
      // The same count as the cards' flows held and primary-of (one table scan): they agree.
      kpi('active flows', status && status.flows.total != null ? int(status.flows.total) : last ? int(last.active) : '–', '', 'var(--c1)'),
      kpi('failover', si(fo), 'pkt/s', '#b35c00', fo > 0),
      kpi('drops', si(dr), '/s', 'var(--c4)', dr > 0),
    ].join('');
    var pk = [
      { name: 'in', color: '#0b5cad', values: series('rx') },
      { name: 'out (NAT)', color: '#1a7f37', values: series('tx') },
      { name: 'to peers', color: '#8250df', values: series('peerTx') },
    ];
    // On a chart of their own: scaled to themselves, not to the traffic (a start-up burst of
    // thousands of packets a second would flatten a failover of a few hundred).
    var fa = [
      { name: 'failover', color: '#b35c00', values: series('fo') },
      { name: 'drops', color: '#c62828', values: series('drops') },
    ];
    var fl = [
      { name: 'active', color: '#0b5cad', values: level('active') },
      { name: 'new / s', color: '#b35c00', values: series('created') },
    ];
    $('leg-pkts').innerHTML = legend(pk);
    $('leg-fail').innerHTML = legend(fa);
    $('leg-flows').innerHTML = legend(fl);
    drawChart($('chart-pkts'), pk, now);
    drawChart($('chart-fail'), fa, now);
    drawChart($('chart-flows'), fl, now);
  }
  function renderEvents(now) {
    var ev = status.events.slice().reverse().slice(0, 40);
    if (!ev.length) { $('event-list').innerHTML = '<div class="empty">no events since this balancer started</div>'; return; }
    $('event-list').innerHTML = '<table><thead><tr><th>time</th><th>balancer</th><th>event</th><th>reason</th></tr></thead><tbody>' +
      ev.map(function (e) {
        return '<tr class="sev-' + esc(e.severity) + '"><td class="t" title="' + esc(e.at) + ' (' + esc(ago(e.at, now)) + ')">' + clock(e.at) + '</td><td class="mono">' + esc(e.balancer) +
          '</td><td class="ev">' + esc(e.type.replace(/_/g, ' ')) + '</td><td>' + esc(e.reason) + (e.origin ? ' <span class="dim" data-origin="' + esc(e.origin) + '">(' + esc(e.origin) + ')</span>' : '') + '</td></tr>';
      }).join('') + '</tbody></table>';
  }
  /** The whole cluster (GET /api/v1/cluster): one row per balancer. */
  function renderCluster() {
    if (!cluster) { $('cluster-list').innerHTML = '<div class="empty">no cluster view from this endpoint</div>'; return; }
    var cnt = function (n) { return n == null ? '–' : n < 10000 ? int(n) : si(n); };
    $('cluster-note').textContent = cluster.mismatches.length ? 'config mismatch: ' + cluster.mismatches.join(', ') + ' run(s) another config than ' + cluster.self + ' (' + cluster.configHash + ')'
      : 'each balancer\'s own figures, as it last reported them over the control channel';
    $('cluster-list').innerHTML = '<table><thead><tr><th>balancer</th><th>status</th><th>config</th><th class="n">flows held</th><th class="n">as primary</th>' +
      '<th class="n">packets / s in</th><th class="n">packets / s out</th><th class="n">RTT</th><th class="n">last heard</th><th class="n">figures</th></tr></thead><tbody>' +
      cluster.balancers.map(function (r) {
        return '<tr data-cluster-row="' + esc(r.id) + '" data-status="' + esc(r.status) + '" data-config="' + esc(r.configHash) + '" data-mismatch="' + (r.configMismatch ? 1 : 0) + '"' +
          (r.configMismatch ? ' class="sev-warn"' : '') + '><td class="mono">' + esc(r.id) + (r.self ? ' (this)' : '') + '</td><td>' + esc(r.status) + '</td><td class="mono">' +
          esc(r.configHash || '–') + (r.configMismatch ? ' <span class="badge" title="differs from ' + esc(cluster.configHash) + '">mismatch</span>' : '') + '</td><td class="n">' + cnt(r.flowsHeld) +
          '</td><td class="n">' + cnt(r.flowsPrimary) + '</td><td class="n">' + cnt(r.packetsInPerS) + '</td><td class="n">' + cnt(r.packetsOutPerS) +
          '</td><td class="n">' + (r.rttMs == null ? '–' : ms(r.rttMs)) + '</td><td class="n">' + (r.self ? 'self' : r.lastHeardMs == null ? '–' : ms(r.lastHeardMs)) +
          '</td><td class="n">' + (r.reportAgeMs == null ? 'none yet' : r.self ? 'now' : dur(r.reportAgeMs / 1000) + ' old') + '</td></tr>';
      }).join('') + '</tbody></table>';
  }
  /** Every counter of the counter table (COUNTERS), as the snapshot holds it. */
  var COUNTERS = ${COUNTER_JSON};
  function renderCounters() {
    $('counter-list').innerHTML = '<table><thead><tr><th>counter</th><th class="n">value</th><th>unit</th></tr></thead><tbody>' +
      COUNTERS.map(function (d) {
        var v = stats[d.section] ? stats[d.section][d.key] : null;
        return '<tr title="' + esc(d.help) + '"><td class="mono">' + esc(d.section + '.' + d.key) + '</td><td class="n">' + int(v) + '</td><td>' + esc(d.unit) + '</td></tr>';
      }).join('') + '</tbody></table>';
  }
  function renderDrops() {
    var d = stats.counters.drops, keys = Object.keys(d);
    var old = null;
    for (var i = 0; i < dropHist.length; i++) if (dropHist[i].at <= stats.at - 10000) old = dropHist[i];
    if (!old && dropHist.length) old = dropHist[0];
    var dt = old ? (stats.at - old.at) / 1000 : 0;
    keys.sort(function (a, b) { return d[b] - d[a]; });
    if (!keys.length) { $('drop-list').innerHTML = '<div class="empty">no drops</div>'; return; }
    $('drop-list').innerHTML = '<table><thead><tr><th>reason</th><th class="n">total</th><th class="n">/ s</th></tr></thead><tbody>' +
      keys.map(function (k) {
        var r = dt > 0 ? Math.max(0, (d[k] - (old.drops[k] || 0)) / dt) : null;
        return '<tr><td class="mono">' + esc(k) + '</td><td class="n">' + int(d[k]) + '</td><td class="n">' + (r == null ? '–' : si(r)) + '</td></tr>';
      }).join('') + '</tbody></table>';
  }
  /** Backend state name → badge class (src/backends/backend-state.ts names). */
  var BSTATE = { healthy: 'up', unhealthy: 'dead', draining: 'suspect', drained: 'dead', unknown: '', removed: '' };
  function backendState(vip, addr) {
    if (!backends) return null;
    for (var i = 0; i < backends.length; i++) {
      var x = backends[i];
      if (x.vip === vip && (x.backend === addr || (x.port != null && x.backend + ':' + x.port === addr))) return x.state;
    }
    return null;
  }
  /**
   * The service table (GET /api/v1/vips, as ipvsadm -Ln --stats --rate): a row per VIP, then a
   * row per backend: state, weight, connections (total here, active in the table, per second),
   * packets and bits per second in and out, totals, and the health-check detail. Rows carry
   * data-vip (and data-backend) with data-connections / data-active / data-in-packets /
   * data-out-packets for tests and scrapers.
   */
  function renderServices(now) {
    var sv = services;
    if (!sv.vips.length) { $('vip-list').innerHTML = '<div class="empty">no VIPs</div>'; return; }
    $('vip-note').textContent = 'counters: served by this balancer · active: flow records in its table (the cluster\u2019s) · rates per second over ' + (sv.rateWindowS == null ? '–' : sv.rateWindowS.toFixed(0) + ' s');
    function cnt(n) { return n < 10000 ? int(n) : si(n); }
    function r(x, k) { return x.rates == null ? '–' : si(x.rates[k]); }
    function rb(x, k) { return x.rates == null ? '–' : bits(x.rates[k]); }
    function figures(x) {
      return '<td class="n">' + int(x.connections) + '</td><td class="n">' + int(x.activeConnections) + '</td><td class="n">' + r(x, 'connectionsPerS') + '</td>' +
        '<td class="n">' + r(x, 'inPacketsPerS') + '</td><td class="n">' + r(x, 'outPacketsPerS') + '</td>' +
        '<td class="n">' + rb(x, 'inBytesPerS') + '</td><td class="n">' + rb(x, 'outBytesPerS') + '</td>' +
        '<td class="n">' + cnt(x.inPackets) + ' / ' + cnt(x.outPackets) + '</td><td class="n">' + cnt(x.inBytes) + 'B / ' + cnt(x.outBytes) + 'B</td>';
    }
    function data(x) {
      return ' data-connections="' + x.connections + '" data-active="' + x.activeConnections + '" data-in-packets="' + x.inPackets + '" data-out-packets="' + x.outPackets + '"';
    }
    $('vip-list').innerHTML = '<table class="services"><thead><tr><th>VIP / backend</th><th>state</th><th class="n">weight</th>' +
      '<th class="n">conns</th><th class="n">active</th><th class="n">conn/s</th><th class="n">in pkt/s</th><th class="n">out pkt/s</th><th class="n">in</th><th class="n">out</th>' +
      '<th class="n">packets in / out</th><th class="n">bytes in / out</th><th>last check</th><th>changed</th><th>down</th></tr></thead><tbody>' +
      sv.vips.map(function (v) {
        var head = '<tr data-vip="' + esc(v.name) + '"' + data(v) + '><td class="mono"><b>' + esc(v.name) + '</b> ' + esc(v.address) + ' <span style="color:var(--muted)">' + esc(v.method) +
          (v.affinity !== 'none' ? ' · ' + esc(v.affinity) : '') + '</span></td><td></td><td></td>' + figures(v) + '<td></td><td></td><td></td></tr>';
        return head + v.backends.map(function (x) {
          var st = x.state;
          var check = x.checkOk == null ? '–' : (x.checkOk ? 'ok' : '<span style="color:var(--dead)">failed</span>') + ' ' + ms(x.checkLatencyMs) +
            (x.checkFailures ? ' · ' + x.checkFailures + ' failed in a row' : '') + ' · ' + dur((sv.at - x.lastCheckAt) / 1000) + ' ago' + (x.checkedBy ? ' by ' + esc(x.checkedBy) : '');
          return '<tr data-vip="' + esc(v.name) + '" data-backend="' + esc(x.address) + '"' + data(x) + '><td class="mono">&nbsp;&nbsp;→ ' + esc(x.address) + (x.port != null ? ':' + x.port : '') + '</td>' +
            '<td>' + (st ? '<span class="badge ' + (BSTATE[st] || '') + '" data-backend-state="' + esc(st) + '">' + esc(st) + '</span>' : '–') +
            (x.maintenance ? ' <span class="badge suspect" data-maintenance="1" title="tunlb maintenance: no new flows, flows continue, checks go on (until off or the next reload)">maint</span>' : '') + '</td>' +
            '<td class="n" data-weight="' + x.weight + '">' + x.weight + (x.fileWeight != null && x.weight !== x.fileWeight ? ' <span style="color:var(--muted)" title="runtime weight (tunlb weight) until the next reload">(file ' + x.fileWeight + ')</span>' : '') + '</td>' +
            figures(x) + '<td>' + check + '</td><td>' + (x.changedAt == null ? '–' : dur((sv.at - x.changedAt) / 1000) + ' ago') + '</td>' +
            '<td>' + (x.downForS ? dur(x.downForS) : '–') + (x.downTotalS ? ' <span style="color:var(--muted)">(' + dur(x.downTotalS) + ' in all)</span>' : '') + '</td></tr>';
        }).join('');
      }).join('') + '</tbody></table>';
  }
  function renderVips() {
    if (services) { renderServices(); return; }
    var by = status.flows.byBackend || {};
    if (!status.vips.length) { $('vip-list').innerHTML = '<div class="empty">no VIPs</div>'; return; }
    $('vip-list').innerHTML = '<table><thead><tr><th>VIP</th><th>address</th><th>method</th><th>backends (flows)</th></tr></thead><tbody>' +
      status.vips.map(function (v) {
        return '<tr><td class="mono">' + esc(v.name) + '</td><td class="mono">' + esc(v.address) + '</td><td>' + esc(v.method) + '</td><td class="mono">' +
          v.backends.map(function (b) {
            var n = by[v.name + ' ' + b], st = backendState(v.name, b);
            return esc(b) + (st ? ' <span class="badge ' + (BSTATE[st] || '') + '" data-backend-state="' + esc(st) + '">' + esc(st) + '</span>' : '') +
              ' <span style="color:var(--muted)">(' + int(n || 0) + ')</span>';
          }).join(' &nbsp; ') + '</td></tr>';
      }).join('') + '</tbody></table>';
  }
  function renderConn() {
    var c = $('conn'), now = Date.now();
    if (needToken) {
      c.setAttribute('data-ok', '0');
      $('conn-text').textContent = 'token required';
      hideBanner();
      showTokenForm();
      return;
    }
    $('token-form').hidden = true;
    if (failures > 0) {
      c.setAttribute('data-ok', '0');
      $('conn-text').textContent = lastOk ? 'no answer for ' + dur((now - lastOk) / 1000) : 'admin endpoint unreachable';
      if (failures >= 3) showBanner('The admin endpoint does not answer: is this balancer running? Showing the last data received' + (lastOk ? ' at ' + clock(new Date(lastOk).toISOString()) : '') + '.');
    } else {
      c.setAttribute('data-ok', '1');
      $('conn-text').textContent = 'live · updated ' + clock(new Date(lastOk).toISOString());
      hideBanner();
    }
  }
  function showBanner(html) { var b = $('banner'); b.innerHTML = html; b.style.display = 'block'; }
  function hideBanner() { $('banner').style.display = 'none'; }

  function render() {
    var now = stats ? stats.at : Date.now();
    if (status) { renderHeader(); renderBalancers(now); renderEvents(now); renderVips(); renderCluster(); }
    if (stats) { renderTraffic(now); renderDrops(); renderCounters(); }
    renderConn();
  }

  function tick() {
    Promise.all([api('/api/v1/stats'), api('/api/v1/status'), api('/api/v1/backends').catch(function () { return null; }), api('/api/v1/vips').catch(function () { return null; }),
      api('/api/v1/cluster').catch(function () { return null; })]).then(function (r) {
      stats = r[0]; status = r[1]; backends = r[2] ? r[2].backends : null; services = r[3]; cluster = r[4];
      push(fromStats(stats));
      dropHist.push({ at: stats.at, drops: stats.counters.drops });
      while (dropHist.length > 12) dropHist.shift();
      failures = 0; lastOk = Date.now();
    }).catch(function () {
      failures++;
    }).then(render);
  }
  var historyLoaded = false;
  /** The last 5 minutes of samples (once; again after a token is entered). */
  function loadHistory() {
    if (historyLoaded) return Promise.resolve();
    return api('/api/v1/history').then(function (h) { historyLoaded = true; h.samples.forEach(function (s) { push(fromHistory(s)); }); }).catch(function () { /* live data only */ });
  }
  function start() {
    loadHistory().then(function () { tick(); setInterval(tick, 1000); });
  }
  window.addEventListener('resize', function () { if (stats) renderTraffic(stats.at); });
  start();
})();
</script>
</body>
</html>
`;
