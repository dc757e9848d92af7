// The demo page: join a video's swarm, list the peers live, send text over the data channels.
import { SwarmClient } from '../index.js';

const $ = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);
$('tracker').value = params.get('tracker') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
if (params.get('video')) $('video').value = params.get('video');

/** @type {SwarmClient | null} */
let client = null;
/** @type {Map<string, {event: import('../index.js').PeerEvent, sent: number, received: number, last: string, rtt: string}>} */
const peers = new Map();

function log(text) {
  const el = $('log');
  el.textContent += `${new Date().toISOString().slice(11, 23)} ${text}\n`;
  // Bounded: a long-open tab keeps the last 200 lines.
  const lines = el.textContent.split('\n');
  if (lines.length > 200) el.textContent = lines.slice(-200).join('\n');
  el.scrollTop = el.scrollHeight;
}

function render() {
  const body = $('peers');
  body.replaceChildren();
  if (peers.size === 0) {
    body.innerHTML = '<tr><td colspan="6" class="muted">no peers yet</td></tr>';
    return;
  }
  for (const [id, p] of peers) {
    const tr = document.createElement('tr');
    for (const [text, cls] of [[id, 'id'], [`${p.event.openAfterMs.toFixed(0)} ms`], [p.rtt], [p.sent], [p.received], [p.last]]) {
      const td = document.createElement('td');
      td.textContent = String(text);
      if (cls) td.className = cls;
      tr.append(td);
    }
    body.append(tr);
  }
}

$('join').addEventListener('click', () => {
  const video = $('video').value.trim();
  if (!video) return;
  client = new SwarmClient($('tracker').value, {
    framing: /** @type {'json'|'msgpack'} */ ($('framing').value),
    minify: $('minify').checked,
  });
  client.on('connected', (e) => {
    $('me').textContent = e.peer;
    $('instance').textContent = e.instance;
    log(`connected as ${e.peer} (instance ${e.instance}), joining ${video}`);
  });
  client.on('disconnected', (e) => log(`tracker connection closed (${e.code} ${e.reason}), reconnecting`));
  client.on('reconnect', (e) => log(`tracker is draining: reconnecting in ${e.afterMs} ms`));
  client.on('error', (e) => log(`tracker refused ${e.ref ?? 'a message'}: ${e.code}`));
  client.on('peer', (event) => {
    const p = { event, sent: 0, received: 0, last: '', rtt: '-' };
    peers.set(event.id, p);
    event.channel.addEventListener('message', (m) => {
      p.received++;
      p.last = String(m.data).slice(0, 80);
      render();
    });
    log(`data channel open with ${event.id} after ${event.openAfterMs.toFixed(0)} ms`);
    render();
  });
  client.on('peerclose', (e) => {
    peers.delete(e.id);
    log(`peer ${e.id} left (${e.reason})`);
    render();
  });
  client.join(video);
  $('join').disabled = true;
  $('leave').disabled = false;
});

$('leave').addEventListener('click', () => {
  client?.close();
  client = null;
  peers.clear();
  render();
  $('join').disabled = false;
  $('leave').disabled = true;
  $('me').textContent = '-';
  log('left');
});

$('chat').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  for (const p of peers.values()) {
    if (p.event.channel.readyState === 'open') {
      p.event.channel.send(text);
      p.sent++;
    }
  }
  $('text').value = '';
  render();
});

// Live round-trip times from the selected ICE candidate pair.
setInterval(async () => {
  for (const p of peers.values()) {
    const stats = await p.event.connection.getStats();
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) {
        p.rtt = `${(s.currentRoundTripTime * 1000).toFixed(1)} ms`;
      }
    });
  }
  if (peers.size > 0) render();
}, 1000);

if (params.get('autojoin') === '1') $('join').click();
