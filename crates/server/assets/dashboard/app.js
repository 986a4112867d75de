// Cascade's operator dashboard: hash routes over the admin API, plain DOM and SVG, no library.
// Data is only ever put in the page as text (never as HTML), so nothing a client sent can run.
'use strict';

const KEY = 'cascade.admin_key';
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#be185d', '#4d7c0f'];
const main = document.getElementById('main');
let timer = null;
let surfaces = [];
let selectedSignal = null;

// An element: h('td', {class: 'x', 'data-kpi': 'events'}, 'text', child, ...).
function h(tag, attrs, ...kids) {
  const svg = ['svg', 'polyline', 'line', 'rect', 'text', 'g', 'circle'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const fmt = (v, d = 2) => (v === undefined || v === null || Number.isNaN(v)) ? '–'
  : Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en') : Number(v).toFixed(d);
const pct = (v) => (v === undefined || v === null) ? '–' : (100 * v).toFixed(2) + ' %';
const enc = encodeURIComponent;

// A call to the API with the session's key; 401/403 open the login.
async function api(path, opts = {}) {
  const headers = Object.assign({ 'content-type': 'application/json' }, opts.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.authorization = 'Bearer ' + key;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  const json = (r.headers.get('content-type') || '').includes('json');
  const body = json ? await r.json() : await r.text();
  if (r.status === 401 || r.status === 403) {
    login(key ? (r.status === 403 ? 'This key may not use the dashboard: it needs the admin key.' : 'Unknown key.') : '');
    throw new Error('unauthorized');
  }
  if (!r.ok) throw new Error((body && body.error && body.error.message) || ('HTTP ' + r.status));
  return body;
}

function login(message) {
  const d = document.getElementById('login');
  document.getElementById('login-error').textContent = message || '';
  if (!d.open) d.showModal();
}

document.getElementById('login-form').addEventListener('submit', () => {
  sessionStorage.setItem(KEY, document.getElementById('login-key').value.trim());
  document.getElementById('login-key').value = '';
  render();
});

// A line chart of series [{name, points: [[t_ms, v]]}] in an SVG, with a legend.
function chart(title, series, unit) {
  const W = 600, H = 150, P = 28;
  const all = series.flatMap((s) => s.points);
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1e-9, ...all.map((p) => p[1]));
  const x = (t) => P + (W - P - 4) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
  const y = (v) => H - 16 - (H - 24) * (v / vmax);
  const svg = h('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, class: 'plot' },
    h('line', { x1: P, y1: H - 16, x2: W, y2: H - 16, stroke: '#e5e7eb' }),
    h('text', { x: 2, y: 12 }, fmt(vmax) + (unit ? ' ' + unit : '')),
    h('text', { x: 2, y: H - 18 }, '0'),
    all.length ? h('text', { x: P, y: H - 3 }, new Date(t0).toLocaleTimeString()) : null,
    all.length ? h('text', { x: W - 60, y: H - 3 }, new Date(t1).toLocaleTimeString()) : null,
    series.map((s, i) => h('polyline', {
      fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 1.5,
      points: s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' '),
    })),
    // The newest value of each series as a dot (a single sample draws no line).
    series.filter((s) => s.points.length).map((s) => {
      const p = s.points[s.points.length - 1];
      return h('circle', { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, fill: COLORS[series.indexOf(s) % COLORS.length] });
    }));
  const legend = h('div', { class: 'legend' }, series.map((s, i) => h('span', {},
    h('svg', { viewBox: '0 0 10 10', width: 10, height: 10, class: 'swatch' },
      h('rect', { width: 10, height: 10, fill: COLORS[i % COLORS.length] })),
    ' ' + s.name + ' ' + fmt(s.points.length ? s.points[s.points.length - 1][1] : null))));
  return h('div', { class: 'card', 'data-chart': title }, h('h3', {}, title), svg, legend);
}

const kpi = (name, label, value) => h('div', { class: 'kpi' }, h('b', { 'data-kpi': name }, value), h('span', {}, label));

// ---- pages ------------------------------------------------------------------------------

async function overview() {
  const [health, hist] = await Promise.all([api('/healthz'), api('/v1/admin/metrics/history')]);
  const s = hist.samples;
  const last = s[s.length - 1] || {};
  const names = [...new Set(s.flatMap((x) => Object.keys(x.surfaces)))].sort();
  const series = (f) => (x) => [x.t_ms, f(x)];
  const rps = names.reduce((a, n) => a + ((last.surfaces || {})[n] || { per_s: 0 }).per_s, 0);
  const out = [h('h1', {}, 'Overview'),
    h('div', { class: 'kpis' },
      kpi('items', 'live items', fmt(health.items, 0)),
      kpi('users', 'users', fmt(health.users, 0)),
      kpi('events', 'events applied', fmt(health.events, 0)),
      kpi('rps', 'recommendations / s', fmt(rps)),
      kpi('events_per_s', 'events / s', fmt(last.events_per_s)),
      kpi('errors', '5xx / s', fmt(last.server_errors_per_s)),
      kpi('shed', 'shed / s', fmt(last.shed_per_s)),
      kpi('ingest_p95', 'ingest p95 ms (freshness)', fmt(last.ingest && last.ingest.p95_ms))),
    h('p', { class: 'muted' }, `Samples every ${hist.interval_s} s, the last ${s.length} of ${hist.keep} kept.`)];
  const grid = h('div', { class: 'grid' },
    chart('Recommendations per second', names.map((n) => ({ name: n, points: s.map(series((x) => (x.surfaces[n] || {}).per_s || 0)) }))),
    names.map((n) => chart(`Latency ${n} (ms)`, ['p50_ms', 'p95_ms', 'p99_ms'].map((q) => ({
      name: q.replace('_ms', ''), points: s.filter((x) => x.surfaces[n] && x.surfaces[n].per_s > 0).map(series((x) => x.surfaces[n][q])),
    })), 'ms')),
    chart('Stage p95 (ms)', [...new Set(s.flatMap((x) => Object.keys(x.stages)))].slice(0, 8).map((st) => ({
      name: st, points: s.filter((x) => x.stages[st]).map(series((x) => x.stages[st].p95_ms)),
    })), 'ms'),
    chart('Errors and shed per second', [
      { name: '4xx', points: s.map(series((x) => x.client_errors_per_s)) },
      { name: '5xx', points: s.map(series((x) => x.server_errors_per_s)) },
      { name: 'shed', points: s.map(series((x) => x.shed_per_s)) }]),
    chart('Degraded responses per second, by reason', [...new Set(s.flatMap((x) => Object.keys(x.degraded)))].map((d) => ({
      name: d, points: s.map(series((x) => x.degraded[d] || 0)),
    }))),
    chart('Events applied per second', [{ name: 'events', points: s.map(series((x) => x.events_per_s)) }]),
    chart('Ingest: receipt to durable and visible (ms)', [
      { name: 'p50', points: s.filter((x) => x.ingest.per_s > 0).map(series((x) => x.ingest.p50_ms)) },
      { name: 'p95', points: s.filter((x) => x.ingest.per_s > 0).map(series((x) => x.ingest.p95_ms)) }], 'ms'));
  return [...out, grid];
}

async function models() {
  const { models } = await api('/v1/admin/models');
  const metric = (m, k) => m && m[k] !== undefined ? fmt(m[k], 4) : '–';
  const act = async (v) => {
    if (!confirm(`Activate ${v}? In-flight requests finish on the current model.`)) return;
    await run(() => api(`/v1/admin/models/${enc(v)}/activate`, { method: 'POST' }), 'Activated ' + v);
  };
  const rollback = async () => {
    if (!confirm('Roll back to the previously active model?')) return;
    await run(() => api('/v1/admin/models/rollback', { method: 'POST' }), 'Rolled back');
  };
  return [h('h1', {}, 'Models'),
    h('p', {}, h('button', { id: 'rollback', onclick: rollback }, 'Roll back')),
    h('div', { id: 'status', class: 'muted' }),
    h('table', { id: 'models' }, h('tr', {}, ['version', 'state', 'created', 'training data', 'NDCG@10', 'Recall@10', 'ranker', ''].map((c) => h('th', {}, c))),
      models.map((m) => {
        const metrics = m.metrics || {};
        const data = m.data || {};
        return h('tr', { 'data-version': m.version },
          h('td', {}, h('code', {}, m.version)),
          h('td', { class: m.active ? 'ok' : 'muted', 'data-active': m.active ? 'true' : 'false' }, m.active ? 'active' : (m.error ? 'unreadable' : 'inactive')),
          h('td', {}, m.created_at || '–'),
          h('td', {}, data.events !== undefined ? `${fmt(data.events, 0)} events` : JSON.stringify(data).slice(0, 80)),
          h('td', {}, metric(metrics, 'ndcg_at_10')),
          h('td', {}, metric(metrics, 'recall_at_10')),
          h('td', {}, m.has_ranker ? 'yes' : 'no'),
          h('td', {}, m.active ? '' : h('button', { class: 'activate', onclick: () => act(m.version) }, 'Activate')));
      }))];
}

// Runs a change, then reloads the page's data, saying what happened.
async function run(change, done) {
  try {
    await change();
    await render();
    const st = document.getElementById('status');
    if (st) st.textContent = done;
  } catch (e) {
    const st = document.getElementById('status');
    if (st) { st.textContent = String(e.message || e); st.className = 'bad'; }
  }
}

// A rate with its 95 % interval as a bar.
function interval(r, max) {
  const W = 160, x = (v) => 2 + (W - 4) * Math.min(1, v / max);
  return h('span', {}, pct(r.value) + ' ',
    h('svg', { viewBox: `0 0 ${W} 10`, width: W, height: 10, class: 'ci' },
      h('line', { x1: x(r.low), x2: x(r.high), y1: 5, y2: 5, stroke: '#94a3b8', 'stroke-width': 3 }),
      h('rect', { x: x(r.value) - 1.5, y: 0, width: 3, height: 10, fill: '#2563eb' })),
    h('span', { class: 'muted' }, ` [${pct(r.low)}, ${pct(r.high)}]`));
}

async function experiments() {
  const { experiments } = await api('/v1/admin/experiments');
  if (!experiments.length) return [h('h1', {}, 'Experiments'), h('p', { class: 'muted' }, 'No experiment is configured ([[experiments]] in the config).')];
  const reports = await Promise.all(experiments.map((n) => api('/v1/admin/experiments/' + enc(n))));
  return [h('h1', {}, 'Experiments'), reports.map((x) => {
    const max = Math.max(0.01, ...x.arms.flatMap((a) => [a.ctr.high, a.like_rate.high, a.skip_rate.high]));
    return h('div', { class: 'card', 'data-experiment': x.name },
      h('h3', {}, `${x.name} on ${x.surface} (holdout ${pct(x.holdout)})`),
      h('table', {}, h('tr', {}, ['arm', 'share', 'model', 'requests', 'impressions', 'CTR', 'like rate', 'skip rate'].map((c) => h('th', {}, c))),
        x.arms.map((a) => h('tr', { 'data-arm': a.arm },
          h('td', {}, a.arm), h('td', {}, pct(a.share)), h('td', {}, h('code', {}, a.model_version)),
          h('td', { 'data-requests': a.requests }, fmt(a.requests, 0)), h('td', {}, fmt(a.impressions, 0)),
          h('td', {}, interval(a.ctr, max)), h('td', {}, interval(a.like_rate, max)), h('td', {}, interval(a.skip_rate, max))))));
  })];
}

// Reference (grey) against live (blue) shares, bin by bin.
function histogram(bins) {
  const W = 600, H = 150, n = bins.length, bw = (W - 8) / n;
  const max = Math.max(1e-9, ...bins.flatMap((b) => [b.reference, b.window]));
  const y = (v) => (H - 16) * (v / max);
  return h('svg', { viewBox: `0 0 ${W} ${H}`, class: 'plot', id: 'histogram', role: 'img', 'aria-label': 'reference vs live' },
    bins.map((b, i) => [
      h('rect', { x: 4 + i * bw + 1, y: H - 16 - y(b.reference), width: bw / 2 - 1, height: y(b.reference), fill: '#94a3b8' }),
      h('rect', { x: 4 + i * bw + bw / 2, y: H - 16 - y(b.window), width: bw / 2 - 1, height: y(b.window), fill: '#2563eb' }),
      n <= 12 ? h('text', { x: 4 + i * bw, y: H - 3 }, b.bin.slice(0, 10)) : null]));
}

// After a live refresh, the signal that was open stays open.
function keepSelection(signals, show) {
  const sig = signals.find((s) => s.name === selectedSignal);
  if (sig) show(sig);
  return null;
}

async function drift() {
  const d = await api('/v1/admin/drift?window_s=300');
  const detail = h('div', { id: 'drift-detail' });
  const show = (sig) => {
    selectedSignal = sig.name;
    const bins = sig.bins || sig.top_bins;
    detail.replaceChildren(h('h2', {}, sig.name),
      bins.length ? histogram(bins) : null,
      bins.length ? h('table', { id: 'bins' }, h('tr', {}, ['bin', 'reference', 'live'].map((c) => h('th', {}, c))),
        bins.map((b) => h('tr', {}, h('td', {}, b.bin), h('td', {}, pct(b.reference)), h('td', {}, pct(b.window)))))
        : h('p', { class: 'muted' }, sig.reference_rate !== undefined ? `reference ${pct(sig.reference_rate)}, live ${pct(sig.window_rate)}` : 'No bins to compare.'));
  };
  return [h('h1', {}, 'Drift'),
    h('p', { class: 'muted' }, 'Live window against the bundle\'s reference, worst first; click a signal for its bins.'),
    h('table', { id: 'signals' }, h('tr', {}, ['signal', 'kind', 'value', 'status', 'reference n', 'live n'].map((c) => h('th', {}, c))),
      d.signals.map((sig) => h('tr', { 'data-signal': sig.name, onclick: () => show(sig) },
        h('td', {}, sig.name), h('td', {}, sig.kind), h('td', {}, fmt(sig.value, 3)),
        h('td', { class: sig.status }, sig.status), h('td', {}, fmt(sig.reference_count, 0)), h('td', {}, fmt(sig.window_count, 0))))),
    detail, keepSelection(d.signals, show)];
}

function lookup(kind, placeholder) {
  const input = h('input', { id: kind + '-id', placeholder, required: true });
  return h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); location.hash = `#/${kind}/${enc(input.value.trim())}`; } },
    input, h('button', { type: 'submit' }, 'Open'));
}

// The explain trace of one recommended item, readable.
function trace(it) {
  const ex = it.explain || {};
  const parts = [];
  if (ex.sources) parts.push('sources: ' + Object.entries(ex.sources).map(([k, v]) => `${k} ${fmt(v.score, 3)} (#${v.rank + 1})`).join(', '));
  if (ex.stages && ex.stages.length) parts.push('stages: ' + ex.stages.map((t) => `${t.stage} ${fmt(t.score, 3)} (rank ${t.rank} of ${t.of})`).join(', '));
  if (ex.seed_item_id) parts.push('seed: ' + ex.seed_item_id);
  if (ex.ranker) parts.push('ranker: ' + ex.ranker.contributions.map((f) => `${f.feature} ${f.value >= 0 ? '+' : ''}${fmt(f.value, 3)}`).join(', '));
  if (ex.filters_passed) parts.push('filters passed: ' + ex.filters_passed.join(', '));
  if (ex.propensity !== undefined) parts.push('propensity ' + fmt(ex.propensity, 3));
  if (ex.features) parts.push(Object.keys(ex.features).length + ' features hydrated');
  return h('div', { class: 'trace' }, parts.join(' · '));
}

async function user(id) {
  if (!id) return [h('h1', {}, 'Users'), lookup('users', 'user id')];
  const [u, ev] = await Promise.all([api('/v1/users/' + enc(id)), api(`/v1/users/${enc(id)}/events?n=30`)]);
  const recs = await Promise.all(surfaces.map((s) => api(`/v1/recommendations/${enc(s)}?user_id=${enc(id)}&n=10&explain=true`)));
  return [h('h1', {}, 'User ', h('code', {}, id)), lookup('users', 'another user id'),
    h('div', { class: 'grid' },
      h('div', { class: 'card', id: 'profile' }, h('h3', {}, 'Profile'),
        h('p', {}, `${u.known ? 'upserted' : 'seen in events only'}; first seen ${u.first_seen || '–'}; ${u.interacted_items} items interacted with`),
        h('p', {}, 'attributes: ', h('code', {}, JSON.stringify(u.user.attributes))),
        h('p', {}, 'follows: ', u.user.follows.join(', ') || '–'),
        h('p', {}, 'hidden items: ', u.hidden_items.join(', ') || '–', '; hidden creators: ', u.hidden_creators.join(', ') || '–')),
      h('div', { class: 'card' }, h('h3', {}, 'Recent feedback'),
        h('table', { id: 'history' }, ev.events.map((e) => h('tr', {}, h('td', {}, e.ts), h('td', {}, e.type),
          h('td', {}, h('a', { href: '#/items/' + enc(e.item_id) }, e.item_id))))))),
    recs.map((r) => h('div', { class: 'card', 'data-surface': r.surface },
      h('h3', {}, `${r.surface}: model ${r.model_version}${r.experiment ? `, ${r.experiment.name}/${r.experiment.arm}` : ''}${r.degraded.length ? ', degraded: ' + r.degraded.join(', ') : ''}`),
      h('table', {}, r.items.map((it) => h('tr', { 'data-item': it.item_id },
        h('td', {}, it.rank), h('td', {}, h('a', { href: '#/items/' + enc(it.item_id) }, it.item_id)),
        h('td', {}, fmt(it.score, 3)),
        h('td', {}, h('div', { class: 'reason' }, it.reason.text), h('div', { class: 'trace' }, `${it.reason.code} · placed by ${it.placed_by} · ${it.sources.join(', ')}`), trace(it))))),
      r.removed && r.removed.length ? h('p', { class: 'trace' }, 'removed: ' + r.removed.slice(0, 20).map((x) => `${x.item_id} by ${x.by} (${x.reason})`).join('; ')) : null))];
}

async function item(id) {
  if (!id) return [h('h1', {}, 'Items'), lookup('items', 'item id')];
  const [it, sim, src] = await Promise.all([api('/v1/items/' + enc(id)), api(`/v1/items/${enc(id)}/similar?n=10`),
    api(`/v1/admin/items/${enc(id)}/sources`)]);
  const rank = (st) => st.rank ? `#${st.rank} of ${st.of}` : `not in the ${st.of}`;
  const i = it.item;
  return [h('h1', {}, 'Item ', h('code', {}, id)), lookup('items', 'another item id'),
    h('div', { class: 'grid' },
      h('div', { class: 'card', id: 'item' }, h('h3', {}, i.title || '(no title)'),
        h('p', {}, `categories: ${i.categories.join(', ') || '–'}; tags: ${i.tags.join(', ') || '–'}; creator: ${i.creator_id || '–'}`),
        h('p', {}, `created ${i.created_at || '–'}${i.hidden ? '; hidden' : ''}${i.mature ? '; mature' : ''}`),
        h('p', {}, 'attributes: ', h('code', {}, JSON.stringify(i.attributes)))),
      h('div', { class: 'card' }, h('h3', {}, 'Feedback'),
        h('table', { id: 'counts' }, Object.entries(it.counts).map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { 'data-count': k }, fmt(v, k === 'watch_fraction' ? 2 : 0)))))),
      h('div', { class: 'card' }, h('h3', {}, 'Sources that can produce it'),
        h('table', { id: 'sources' },
          h('tr', { 'data-source': 'popular' }, h('td', {}, 'popular'), h('td', {}, rank(src.popular))),
          src.popular_in_category.map((c) => h('tr', {}, h('td', {}, 'popular in ' + c.category), h('td', {}, rank(c)))),
          h('tr', { 'data-source': 'trending' }, h('td', {}, 'trending'), h('td', {}, rank(src.trending))),
          h('tr', { 'data-source': 'fresh' }, h('td', {}, 'fresh'), h('td', {}, rank(src.fresh))),
          h('tr', { 'data-source': 'similar' }, h('td', {}, 'similar (co-visitation)'), h('td', {}, `${src.covisitation_neighbors} neighbours`)),
          h('tr', { 'data-source': 'embedding' }, h('td', {}, 'embedding'), h('td', {}, src.embedding ? (src.indexed ? 'vector, indexed' : 'vector, not indexed') : 'no vector')),
          h('tr', { 'data-source': 'editorial' }, h('td', {}, 'editorial'), h('td', {}, src.editorial.join(', ') || 'in no list')),
          h('tr', { 'data-source': 'follows' }, h('td', {}, 'follows'), h('td', {}, src.creator_id ? 'followers of ' + src.creator_id : 'no creator')))),
      h('div', { class: 'card' }, h('h3', {}, `Similar (co-visitation, model ${sim.model_version})`),
        h('table', { id: 'similar' }, sim.items.map((x) => h('tr', {}, h('td', {}, h('a', { href: '#/items/' + enc(x.item_id) }, x.item_id)), h('td', {}, x.title), h('td', {}, fmt(x.score, 3))))))),
  ];
}

async function catalog() {
  const { lists } = await api('/v1/admin/editorial');
  let faults = null;
  try { faults = (await api('/v1/admin/faults')).faults; } catch (e) { if (e.message === 'unauthorized') throw e; }
  const f = (name, ph, value) => h('input', { name, placeholder: ph, value: value === undefined ? '' : value });
  const form = h('form', { class: 'row', id: 'editorial-form', onsubmit: async (e) => {
    e.preventDefault();
    const d = Object.fromEntries(new FormData(e.target));
    const split = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
    const body = { id: d.id, title: d.title, items: split(d.items), surfaces: split(d.surfaces), boost: Number(d.boost || 1) };
    if (d.starts_at) body.starts_at = d.starts_at;
    if (d.ends_at) body.ends_at = d.ends_at;
    if (d.pin !== '') body.pin = Number(d.pin);
    await run(() => api('/v1/admin/editorial', { method: 'POST', body: JSON.stringify(body) }), 'Saved ' + d.id);
  } }, f('id', 'list id'), f('title', 'title'), f('items', 'item ids, comma separated'), f('surfaces', 'surfaces (all when empty)'),
  f('starts_at', 'starts (RFC 3339)'), f('ends_at', 'ends (RFC 3339)'), f('boost', 'boost', 1), f('pin', 'pin position'), h('button', { type: 'submit' }, 'Save list'));
  const edit = (l) => {
    for (const [k, v] of Object.entries({ id: l.id, title: l.title, items: l.items.join(', '), surfaces: l.surfaces.join(', '), starts_at: l.starts_at || '', ends_at: l.ends_at || '', boost: l.boost, pin: l.pin === null || l.pin === undefined ? '' : l.pin })) {
      form.elements[k].value = v;
    }
  };
  const out = [h('h1', {}, 'Catalog and editorial'), h('div', { id: 'status', class: 'muted' }),
    h('h2', {}, 'Curated lists'),
    h('table', { id: 'editorial' }, h('tr', {}, ['id', 'title', 'items', 'surfaces', 'schedule', 'boost', 'pin', ''].map((c) => h('th', {}, c))),
      lists.map((l) => h('tr', { 'data-list': l.id }, h('td', {}, l.id), h('td', {}, l.title), h('td', {}, l.items.join(', ')),
        h('td', {}, l.surfaces.join(', ') || 'all'), h('td', {}, `${l.starts_at || '…'} – ${l.ends_at || '…'}`), h('td', {}, l.boost),
        h('td', {}, l.pin === null || l.pin === undefined ? '–' : l.pin),
        h('td', {}, h('button', { class: 'plain', onclick: () => edit(l) }, 'Edit'), ' ',
          h('button', { class: 'plain', onclick: () => confirm(`Delete ${l.id}?`) && run(() => api('/v1/admin/editorial/' + enc(l.id), { method: 'DELETE' }), 'Deleted ' + l.id) }, 'Delete'))))),
    h('h2', {}, 'New or edited list'), form,
    h('h2', {}, 'Blocklists'), h('p', { class: 'muted' }, 'Per-surface blocklists are part of the surface configuration (surfaces.<name>.blocklist in the TOML).'),
    h('h2', {}, 'Fault injection')];
  if (faults === null) return [...out, h('p', { class: 'muted' }, 'Disabled (faults.enabled = false).')];
  const ff = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    const d = Object.fromEntries(new FormData(e.target));
    const body = { dependency: d.dependency, mode: d.mode };
    if (d.mode === 'latency') body.latency_ms = Number(d.latency_ms || 0);
    await run(() => api('/v1/admin/faults', { method: 'POST', body: JSON.stringify(body) }), 'Injected');
  } }, h('select', { name: 'dependency' }, ['features', 'ann', 'ranker', 'bus'].map((x) => h('option', {}, x))),
  h('select', { name: 'mode' }, ['error', 'latency'].map((x) => h('option', {}, x))), f('latency_ms', 'latency ms'),
  h('button', { type: 'submit' }, 'Inject'), h('button', { type: 'button', class: 'plain', onclick: () => run(() => api('/v1/admin/faults', { method: 'DELETE' }), 'Cleared') }, 'Clear all'));
  return [...out, h('table', { id: 'faults' }, faults.map((x) => h('tr', {}, h('td', {}, x.dependency), h('td', {}, x.mode), h('td', {}, x.latency_ms || '')))), ff];
}

// ---- routing ----------------------------------------------------------------------------

const PAGES = { overview, models, experiments, drift, users: user, items: item, catalog };
const LIVE = { overview: 2000, drift: 10000 };

async function render() {
  clearTimeout(timer);
  const [, page = 'overview', arg] = (location.hash || '#/overview').split('/');
  const fn = PAGES[page] || overview;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('on', a.getAttribute('href') === '#/' + page);
  try {
    if (!surfaces.length) surfaces = (await api('/healthz')).surfaces || [];
    const content = await fn(arg ? decodeURIComponent(arg) : undefined);
    const d = document.getElementById('login');
    if (d.open) d.close();
    const keep = document.getElementById('status');
    const status = keep ? keep.textContent : '';
    main.replaceChildren(...content.flat());
    main.setAttribute('data-page', page);
    main.setAttribute('data-loaded', String(Date.now()));
    const st = document.getElementById('status');
    if (st && status) st.textContent = status;
    document.getElementById('who').textContent = sessionStorage.getItem(KEY) ? 'signed in' : '';
  } catch (e) {
    if (e.message !== 'unauthorized') main.replaceChildren(h('p', { class: 'bad', id: 'error' }, String(e.message || e)));
  }
  if (LIVE[page]) timer = setTimeout(render, LIVE[page]);
}

window.addEventListener('hashchange', render);
render();
