// Rhyzome's dashboard: plain JavaScript, no framework, no build step. Every value from the
// server is written with textContent, never parsed as markup, and the token lives in this tab's
// sessionStorage and travels only as an Authorization header.
'use strict';

const TOKEN_KEY = 'rhyzome-token';
const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  instances: new Map(),
  events: [],
  lastEventId: null,
  stream: null,
  view: null,
  timers: [],
  beds: [],
  reload: null,
};

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || ('HTTP ' + status));
    this.status = status;
    this.body = body || {};
  }
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h.Authorization = 'Bearer ' + state.token;
  return h;
}

async function call(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) throw new ApiError(r.status, typeof data === 'object' ? data : { message: text });
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + ' ' + units[i];
}

function ipOf(i) {
  return (i.network && i.network.ipv4) || '';
}

function uptimeOf(i) {
  if (i.state !== 'running' || !i.started_at) return '';
  return duration(Date.now() - Date.parse(i.started_at));
}

// ---- sign-in -------------------------------------------------------------------------

async function start() {
  $('server').textContent = location.host;
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    state.token = $('token').value.trim();
    await signIn();
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  window.addEventListener('hashchange', route);
  await signIn();
}

async function signIn() {
  $('login-error').textContent = '';
  try {
    const server = await call('GET', '/v1/info');
    state.me = server.caller || null;
    const info = await call('GET', '/v1/instances');
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
    applyRole(server);
    $('logout').hidden = !state.token;
    $('login').hidden = true;
    setInstances(info.instances);
    openStream();
    route();
  } catch (e) {
    if (e.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      showOnly('login');
      $('login-error').textContent = 'This token may not use the dashboard: ' + e.message;
      state.token = '';
    } else if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showOnly('login');
      $('login-error').textContent = state.token
        ? 'The server refused this token: ' + e.message
        : 'This server needs a token.';
      state.token = '';
      $('token').focus();
    } else {
      showOnly('login');
      $('login-error').textContent = 'Cannot reach the API: ' + e.message;
    }
  }
}

// Offers only what the token allows: viewers (and tenants' read-only tokens) get no buttons
// that would change anything. The server decides anyway; this only avoids offering refusals.
function canChange() {
  return !state.me || state.me.role === 'operator' || state.me.role === 'admin';
}

function applyRole(server) {
  const who = state.me ? state.me.name + ' (' + state.me.role + (state.me.prefix ? ', ' + state.me.prefix + '*' : '') + ')' : '';
  $('server').textContent = server.hostname + ' · ' + location.host + (who ? ' · ' + who : '');
  $('nav-create').hidden = !canChange();
  $('upload-form').hidden = !canChange();
}

function showOnly(id) {
  for (const s of ['login', 'view-instances', 'view-instance', 'view-beds', 'view-networks', 'view-volumes', 'view-images', 'view-create']) $(s).hidden = s !== id;
}

// ---- live data: the instance list and the event stream --------------------------------

function setInstances(list) {
  state.instances = new Map(list.map((i) => [i.name, i]));
  render();
}

async function refreshInstances() {
  try {
    setInstances((await call('GET', '/v1/instances')).instances);
  } catch (e) {
    $('instances-error').textContent = e.message;
  }
}

// Server-sent events read with fetch (EventSource cannot send an Authorization header).
async function openStream() {
  if (state.stream) return;
  state.stream = true;
  for (;;) {
    try {
      const h = headers({ Accept: 'text/event-stream' });
      if (state.lastEventId) h['Last-Event-ID'] = state.lastEventId;
      const r = await fetch('/v1/events', { headers: h });
      if (!r.ok) throw new ApiError(r.status, null);
      setLive(true);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          dispatch(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch (e) {
      if (e.status === 401) { location.reload(); return; }
    }
    setLive(false);
    await new Promise((ok) => setTimeout(ok, 1000));
    await refreshInstances();
  }
}

function setLive(on) {
  for (const b of document.querySelectorAll('.live-badge')) {
    b.textContent = on ? 'live' : 'reconnecting';
    b.classList.toggle('live', on);
  }
}

// The pages made of lists (test beds, networks, volumes) are read again when the event stream
// says something changed, at most every 300 ms: live without polling.
function reloadSoon() {
  const loader = { beds: loadBeds, networks: loadNetworks, volumes: loadVolumes }[state.view && state.view.kind];
  if (!loader || state.reload) return;
  state.reload = setTimeout(() => { state.reload = null; loader(); }, 300);
}

function dispatch(block) {
  let kind = 'message', data = '', id = null;
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) kind = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
    else if (line.startsWith('id:')) id = line.slice(3).trim();
  }
  if (id) state.lastEventId = id;
  if (kind === 'lagged' || kind === 'reset') { refreshInstances(); reloadSoon(); return; }
  if (kind !== 'instance' || !data) return;
  const ev = JSON.parse(data);
  state.events.push(ev);
  if (state.events.length > 500) state.events.shift();
  reloadSoon();
  const known = state.instances.get(ev.instance);
  if (ev.state === 'ready') {
    // A test-bed node passed its readiness check; its state stays `running`.
    if (known) known.ready = true;
  } else if (ev.state === 'deleted') {
    state.instances.delete(ev.instance);
  } else if (!known) {
    refreshInstances();
    return;
  } else {
    known.state = ev.state;
    known.restart_count = ev.restart_count;
    if (ev.exit_code !== undefined && ev.exit_code !== null) known.exit_code = ev.exit_code;
    if (ev.state === 'running') known.started_at = ev.time;
    if (ev.reason) known.last_error = ev.reason;
  }
  render();
}

// ---- routing --------------------------------------------------------------------------

function route() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.consoleAbort) { state.consoleAbort.abort(); state.consoleAbort = null; }
  const hash = location.hash || '#/';
  if (hash.startsWith('#/instances/')) {
    state.view = { kind: 'instance', name: decodeURIComponent(hash.slice('#/instances/'.length)) };
    showOnly('view-instance');
    openInstance(state.view.name);
  } else if (hash === '#/images') {
    state.view = { kind: 'images' };
    showOnly('view-images');
    loadImages();
  } else if (hash === '#/beds') {
    state.view = { kind: 'beds' };
    showOnly('view-beds');
    loadBeds();
  } else if (hash === '#/networks') {
    state.view = { kind: 'networks' };
    showOnly('view-networks');
    loadNetworks();
  } else if (hash === '#/volumes') {
    state.view = { kind: 'volumes' };
    showOnly('view-volumes');
    loadVolumes();
  } else if (hash === '#/create') {
    state.view = { kind: 'create' };
    showOnly('view-create');
    $('f-name').focus();
  } else {
    state.view = { kind: 'instances' };
    showOnly('view-instances');
    state.timers.push(setInterval(render, 5000));
  }
  render();
}

function render() {
  if (!state.view) return;
  if (state.view.kind === 'instances') renderInstances();
  if (state.view.kind === 'instance') renderInstance();
  if (state.view.kind === 'beds') renderBeds();
}

// ---- images -----------------------------------------------------------------------------

async function loadImages() {
  $('images-error').textContent = '';
  try {
    const list = (await call('GET', '/v1/images')).images;
    $('images').tBodies[0].replaceChildren(...list.map((i) => el('tr', { 'data-digest': i.digest },
      el('td', { class: 'names', text: i.names.join(', ') }),
      el('td', { text: (i.inspection && i.inspection.format) || '' }),
      el('td', { text: bytes(i.size) }),
      el('td', { class: 'digest', text: i.digest.slice(0, 19) + '…', title: i.digest }),
      el('td', { text: i.uploaded_at }))));
  } catch (e) {
    $('images-error').textContent = e.message;
  }
}

// XMLHttpRequest rather than fetch: only it reports upload progress.
function setupUpload() {
  $('upload-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    $('upload-error').textContent = '';
    for (const e of document.querySelectorAll('#upload-form [data-error]')) e.textContent = '';
    const file = $('u-file').files[0];
    if (!file) { $('upload-error').textContent = 'Choose a file first.'; return; }
    const q = new URLSearchParams();
    if ($('u-name').value.trim()) q.set('name', $('u-name').value.trim());
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/images' + (q.toString() ? '?' + q : ''));
    if (state.token) xhr.setRequestHeader('Authorization', 'Bearer ' + state.token);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    const bar = $('upload-progress');
    bar.hidden = false;
    bar.value = 0;
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        bar.value = e.loaded / e.total;
        $('upload-status').textContent = bytes(e.loaded) + ' of ' + bytes(e.total);
      }
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = 1;
        $('upload-status').textContent = (body.created ? 'stored ' : 'already stored ') + body.image.digest;
        loadImages();
      } else {
        const slot = body.field === 'name' ? document.querySelector('[data-error="upload-name"]') : null;
        (slot || $('upload-error')).textContent = body.message || ('HTTP ' + xhr.status);
        $('upload-status').textContent = '';
      }
    };
    xhr.onerror = () => { $('upload-error').textContent = 'The upload failed (connection lost).'; };
    xhr.send(file);
  });
}

// ---- test beds ----------------------------------------------------------------------------

async function loadBeds() {
  try {
    state.beds = (await call('GET', '/v1/testbeds')).testbeds;
    $('beds-error').textContent = '';
  } catch (e) {
    $('beds-error').textContent = e.message;
  }
  render();
}

const natural = (a, b) => a.name.localeCompare(b.name, undefined, { numeric: true });

// One bar of a group: `what` of its desired total.
function meter(what, n, total) {
  return el('div', { class: 'meter', 'data-meter': what },
    el('span', { class: 'meter-label', text: what }),
    el('progress', { max: String(Math.max(total, 1)), value: String(n) }),
    el('span', { class: 'meter-count', text: n + ' / ' + total }));
}

function renderBeds() {
  const cards = state.beds.map((bed) => {
    const collect = el('button', {
      class: 'small', 'data-action': 'collect', text: 'Download collect',
      title: 'Summary, the applied file and every console, as a tar archive',
      onclick: (ev) => { ev.preventDefault(); collectBed(bed.name, card); },
    });
    const status = bed.desired !== 'present' ? bed.desired : bed.ready ? 'ready' : 'converging';
    const order = el('ol', { class: 'order' }, ...bed.groups.map((g) => el('li', {},
      el('strong', { text: g.name }),
      el('span', { class: 'muted', text: g.after && g.after.length ? ' after ' + g.after.join(', ') : '' }))));
    const groups = bed.groups.map((g) => {
      const ready = new Set(g.ready_members || []);
      const nodes = [...state.instances.values()]
        .filter((i) => i.labels && i.labels.testbed === bed.name && i.labels.group === g.name)
        .sort(natural);
      return el('div', { class: 'group', 'data-group': g.name },
        el('div', { class: 'bar' },
          el('h3', { text: g.name }),
          el('span', { class: 'summary', text: g.ready + ' ready of ' + g.desired + (g.failed ? ', ' + g.failed + ' failed' : '') })),
        el('div', { class: 'meters' },
          meter('created', g.created, g.desired), meter('running', g.running, g.desired), meter('ready', g.ready, g.desired)),
        el('div', { class: 'nodes' }, ...nodes.map((n) => {
          const isReady = n.state === 'running' && (ready.has(n.name) || n.ready);
          return el('a', {
            class: 'node ' + n.state + (isReady ? ' ready' : ''), href: '#/instances/' + encodeURIComponent(n.name),
            title: n.name + ': ' + n.state + (isReady ? ', ready' : ''), 'data-name': n.name,
          });
        })));
    });
    const card = el('div', { class: 'bed', 'data-bed': bed.name },
      el('div', { class: 'bar' },
        el('h2', { text: bed.name }),
        el('span', { class: 'state ' + (status === 'ready' ? 'running' : 'starting'), text: status }),
        el('span', { class: 'muted', text: 'applied ' + bed.applied_at }),
        collect),
      el('p', { class: 'error', role: 'alert', text: bed.last_error || '' }),
      el('div', { class: 'bar' }, el('span', { class: 'muted', text: 'Start order' }), order),
      ...groups);
    return card;
  });
  $('beds').replaceChildren(...cards);
  $('beds-count').textContent = '(' + state.beds.length + ')';
  $('beds-empty').hidden = cards.length > 0;
}

// `GET /v1/testbeds/{name}/collect` with the bearer header, saved as a file: a plain link
// would send no token.
async function collectBed(name, card) {
  const box = card.querySelector('.error');
  box.textContent = '';
  try {
    const r = await fetch('/v1/testbeds/' + encodeURIComponent(name) + '/collect', { headers: headers() });
    if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
    const url = URL.createObjectURL(await r.blob());
    const a = el('a', { href: url, download: name + '-collect.tar' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    box.textContent = 'collect: ' + e.message;
  }
}

// ---- networks and volumes -----------------------------------------------------------------

async function loadNetworks() {
  try {
    const list = (await call('GET', '/v1/networks')).networks;
    $('networks-error').textContent = '';
    $('networks').tBodies[0].replaceChildren(...list.map((n) => {
      const total = n.addresses_in_use + n.addresses_free;
      const instances = [...new Set(n.attachments.map((a) => a.instance))];
      return el('tr', { 'data-name': n.name },
        el('td', { class: 'name', text: n.name }),
        el('td', { text: n.subnet }),
        el('td', { class: 'emulated', text: n.emulated ? 'yes' : 'no' }),
        el('td', { class: 'addresses' },
          el('progress', { max: String(Math.max(total, 1)), value: String(n.addresses_in_use) }),
          el('span', { text: ' ' + n.addresses_in_use + ' / ' + total })),
        el('td', { class: 'instances', text: String(instances.length), title: instances.join(', ') }),
        el('td', { text: n.active ? 'yes' : 'no' }));
    }));
    $('networks-empty').hidden = list.length > 0;
  } catch (e) {
    $('networks-error').textContent = e.message;
  }
}

async function loadVolumes() {
  try {
    const list = (await call('GET', '/v1/volumes')).volumes;
    $('volumes-error').textContent = '';
    $('volumes').tBodies[0].replaceChildren(...list.map((v) => el('tr', { 'data-name': v.name },
      el('td', { class: 'name', text: v.name + (v.base ? ' (clone of ' + v.base + ')' : '') }),
      el('td', { class: 'size', text: bytes(v.size_bytes) }),
      el('td', { text: v.format }),
      el('td', { class: 'attached' }, ...v.attached.flatMap((u, k) => [
        k ? ', ' : '',
        el('a', { href: '#/instances/' + encodeURIComponent(u.instance), text: u.instance }),
        ' (' + u.device + (u.read_only ? ', read-only' : '') + ')',
      ])),
      el('td', { text: v.created_at }))));
    $('volumes-empty').hidden = list.length > 0;
  } catch (e) {
    $('volumes-error').textContent = e.message;
  }
}

// ---- the instance table -----------------------------------------------------------------

function actionButtons(i) {
  if (!canChange()) return el('span', { class: 'actions muted', text: '' });
  const act = (label, verb, cls) => el('button', {
    class: 'small ' + (cls || ''), text: label, 'data-action': verb,
    onclick: (ev) => { ev.preventDefault(); act_(i.name, verb); },
  });
  const buttons = [];
  if (i.state === 'running' || i.state === 'starting') buttons.push(act('Stop', 'stop'), act('Restart', 'restart'));
  else buttons.push(act('Start', 'start'));
  buttons.push(act('Delete', 'delete', 'danger'));
  return el('span', { class: 'actions' }, ...buttons);
}

async function act_(name, verb) {
  const errorBox = state.view.kind === 'instance' ? $('instance-error') : $('instances-error');
  errorBox.textContent = '';
  if (verb === 'delete' && !confirm('Delete ' + name + '? Its guest is destroyed and its record removed.')) return;
  try {
    if (verb === 'delete') {
      await call('DELETE', '/v1/instances/' + encodeURIComponent(name));
      if (state.view.kind === 'instance') location.hash = '#/';
    } else {
      await call('POST', '/v1/instances/' + encodeURIComponent(name) + '/' + verb);
    }
  } catch (e) {
    errorBox.textContent = verb + ' ' + name + ': ' + e.message;
  }
}

function renderInstances() {
  const text = $('filter-text').value.trim().toLowerCase();
  const wanted = $('filter-state').value;
  const tbody = $('instances').tBodies[0];
  const rows = [];
  const all = [...state.instances.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const i of all) {
    if (wanted && i.state !== wanted) continue;
    if (text && !i.name.toLowerCase().includes(text) && !JSON.stringify(i.labels || {}).toLowerCase().includes(text)) continue;
    rows.push(el('tr', { 'data-name': i.name },
      el('td', {}, el('a', { href: '#/instances/' + encodeURIComponent(i.name), text: i.name })),
      el('td', {}, el('span', { class: 'state ' + i.state, text: i.state })),
      el('td', { text: ipOf(i) }),
      el('td', { text: uptimeOf(i) }),
      el('td', { class: 'restarts', text: String(i.restart_count || 0) }),
      el('td', {}, actionButtons(i))));
  }
  tbody.replaceChildren(...rows);
  $('count').textContent = '(' + all.length + ')';
  $('empty').hidden = all.length > 0;
}

// ---- one instance -----------------------------------------------------------------------

const SERIES = 90;

function openInstance(name) {
  $('instance-error').textContent = '';
  $('console').textContent = '';
  state.samples = [];
  loadConsole(name);
  const poll = async () => {
    try {
      const s = await call('GET', '/v1/instances/' + encodeURIComponent(name) + '/stats');
      state.samples.push({ t: Date.now(), s });
      if (state.samples.length > SERIES) state.samples.shift();
      drawCharts();
      renderInstance();
    } catch (e) {
      // A stopped instance has no statistics (409/404): the charts keep what they had.
    }
  };
  poll();
  state.timers.push(setInterval(poll, 2000));
  $('console-current').onchange = () => loadConsole(name);
  $('console-follow').onchange = () => loadConsole(name);
  $('console-download').onclick = () => {
    const blob = new Blob([$('console').textContent], { type: 'text/plain' });
    const a = el('a', { href: URL.createObjectURL(blob), download: name + '-console.log' });
    document.body.append(a);
    a.click();
    a.remove();
  };
}

async function loadConsole(name) {
  if (state.consoleAbort) state.consoleAbort.abort();
  const abort = new AbortController();
  state.consoleAbort = abort;
  const pre = $('console');
  pre.textContent = '';
  const q = new URLSearchParams({ tail_bytes: '262144' });
  if ($('console-current').checked) q.set('current_run', 'true');
  if ($('console-follow').checked) q.set('follow', 'true');
  try {
    const r = await fetch('/v1/instances/' + encodeURIComponent(name) + '/console?' + q, { headers: headers(), signal: abort.signal });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new ApiError(r.status, body);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += decoder.decode(value, { stream: true });
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    if (e.name !== 'AbortError') $('instance-error').textContent = 'console: ' + e.message;
  }
}

function renderInstance() {
  const name = state.view.name;
  const i = state.instances.get(name);
  $('instance-name').textContent = name;
  if (!i) {
    $('instance-state').textContent = 'not found';
    $('instance-state').className = 'state';
    $('instance-actions').replaceChildren();
    return;
  }
  $('instance-state').textContent = i.state;
  $('instance-state').className = 'state ' + i.state;
  $('instance-actions').replaceChildren(actionButtons(i));
  const rows = [
    ['IP', ipOf(i)], ['Uptime', uptimeOf(i)], ['Restarts', String(i.restart_count || 0)],
    ['Restart policy', i.restart ? i.restart.policy : ''],
    ['Exit code', i.exit_code === null || i.exit_code === undefined ? '' : String(i.exit_code)],
    ['Last error', i.last_error || ''], ['Kernel', i.image || i.kernel],
    ['Parameters', i.kernel_parameters], ['Memory', i.memory_mib + ' MiB'], ['vCPUs', String(i.vcpus)],
    ['Domain', i.domain_name], ['Created', i.created_at],
  ];
  $('instance-details').replaceChildren(...rows.filter(([, v]) => v).flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  const evs = state.events.filter((e) => e.instance === name).slice(-50).reverse();
  $('instance-events').replaceChildren(...evs.map((e) => el('li', {
    text: e.time + '  ' + e.state + (e.exit_code !== null && e.exit_code !== undefined ? ' (exit ' + e.exit_code + ')' : '') + (e.reason ? ' — ' + e.reason : ''),
  })));
}

// Line charts on canvas: rates between consecutive samples of the stats API.
function drawCharts() {
  const pts = state.samples;
  const rate = (f) => pts.slice(1).map((p, k) => {
    const prev = pts[k];
    const dt = (p.t - prev.t) / 1000;
    return dt > 0 ? Math.max(0, (f(p.s) - f(prev.s)) / dt) : 0;
  });
  const cpu = rate((s) => s.cpu_time_ns / 1e9).map((x) => x * 100);
  const mem = pts.map((p) => (p.s.rss_kib || p.s.memory_kib) * 1024);
  const nic = (k) => (s) => s.nics.reduce((a, n) => a + n[k], 0);
  const rx = rate(nic('rx_bytes'));
  const tx = rate(nic('tx_bytes'));
  chart($('chart-cpu'), [cpu], ['#2f6fde'], (v) => v.toFixed(1) + ' %');
  chart($('chart-mem'), [mem], ['#805ad5'], bytes);
  chart($('chart-net'), [rx, tx], ['#1f8a4c', '#dd6b20'], (v) => bytes(v) + '/s');
  const last = (xs) => (xs.length ? xs[xs.length - 1] : 0);
  $('cpu-now').textContent = cpu.length ? last(cpu).toFixed(1) + ' %' : '';
  $('mem-now').textContent = mem.length ? bytes(last(mem)) : '';
  $('net-now').textContent = rx.length ? 'rx ' + bytes(last(rx)) + '/s · tx ' + bytes(last(tx)) + '/s' : '';
}

function chart(canvas, series, colours, label) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400, h = canvas.clientHeight || 120;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  const max = Math.max(1e-9, ...series.flat());
  g.strokeStyle = '#e2e8f0';
  g.fillStyle = '#6b7485';
  g.font = '11px system-ui, sans-serif';
  for (const f of [0, 0.5, 1]) {
    const y = h - 14 - f * (h - 24);
    g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
    g.fillText(label(max * f), 4, y - 2);
  }
  series.forEach((xs, k) => {
    g.strokeStyle = colours[k];
    g.lineWidth = 1.6;
    g.beginPath();
    xs.forEach((v, n) => {
      const x = w - (xs.length - 1 - n) * (w / (SERIES - 1));
      const y = h - 14 - (v / max) * (h - 24);
      if (n === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  });
}

// ---- create -----------------------------------------------------------------------------

function setupCreate() {
  $('create-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const e of document.querySelectorAll('[data-error]')) e.textContent = '';
    $('create-error').textContent = '';
    const v = (id) => $(id).value.trim();
    const spec = { name: v('f-name'), kernel: v('f-kernel'), kernel_parameters: v('f-params') };
    if (v('f-image')) spec.image = v('f-image');
    if (v('f-memory')) spec.memory_mib = Number(v('f-memory'));
    if (v('f-vcpus')) spec.vcpus = Number(v('f-vcpus'));
    if (v('f-bridge')) spec.network = { mode: 'bridge', bridge: v('f-bridge') };
    spec.restart = { policy: v('f-restart') };
    $('create-submit').disabled = true;
    try {
      const created = await call('POST', '/v1/instances', spec);
      state.instances.set(created.name, created);
      location.hash = '#/';
    } catch (e) {
      const field = e.body && e.body.field;
      const slot = field && (document.querySelector('[data-error="' + CSS.escape(field) + '"]') ||
        document.querySelector('[data-error="' + CSS.escape(field.split('.')[0]) + '"]'));
      if (slot) slot.textContent = e.message;
      else $('create-error').textContent = e.message;
    } finally {
      $('create-submit').disabled = false;
    }
  });
}

document.addEventListener('DOMContentLoaded', () => {
  $('filter-text').addEventListener('input', render);
  $('filter-state').addEventListener('change', render);
  setupCreate();
  setupUpload();
  start();
});
