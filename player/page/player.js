// The demo player: hls.js with p2p-media-loader v2, its tracker set to swarmtrack.
//
// Query parameters:
//   src      the HLS master playlist (required)
//   tracker  the WebTorrent announce URL (ws://host:port/announce), through the fleet's HAProxy
//   p2p      1 (default) or 0: 0 keeps p2p-media-loader but disables P2P, for the baseline
//   window   p2p-media-loader's prefetch: HTTP up to this many seconds ahead, P2P twice as far
//            (default: its own, 3000 s and 6000 s, which for a VOD is all of it)
//   swarm    p2p-media-loader's swarmId (default: the playlist URL)
//   viewer   a name for this viewer in reports (default: random)
//   report   every this many ms, POST the state to /report on this page's origin (0: never)
//
// The state shown is also `window.playerState`, so a test reads exactly what a person sees.
// Byte counts are p2p-media-loader's own: `onChunkDownloaded` (bytes and their source, http or
// p2p) and `onChunkUploaded`; the share is peer bytes over all segment bytes downloaded. With
// p2p=0 they come from hls.js's fragment stats.
import './tracker-tap.js';
import Hls from 'hls.js';
import { HlsJsP2PEngine } from 'p2p-media-loader-hlsjs';

import { trackerSockets } from './tracker-tap.js';

const q = new URL(location.href).searchParams;
const src = q.get('src');
const tracker = q.get('tracker') ?? '';
const p2p = q.get('p2p') !== '0';
const viewer = q.get('viewer') ?? Math.random().toString(36).slice(2, 10);
const reportMs = Number(q.get('report') ?? 0);
const window_ = Number(q.get('window') ?? 0);

const MAX_ERRORS = 32;
const MAX_PEERS_SHOWN = 64;

const state = {
  viewer,
  p2p,
  src,
  userAgent: navigator.userAgent,
  /** ms from the page's navigation start (libraries loaded, playlist, first segments) to the
   * first `playing`; null until then */
  startupMs: /** @type {number | null} */ (null),
  playing: false,
  ended: false,
  /** `waiting` after playback started (not seeking, not at the end), and their total length */
  stalls: 0,
  stallMs: 0,
  /** hls.js's own BUFFER_STALLED_ERROR count (a stall as hls.js sees it) */
  hlsStalls: 0,
  position: 0,
  bufferedAhead: 0,
  level: /** @type {{height: number, bitrate: number} | null} */ (null),
  levelSwitches: 0,
  bytes: { http: 0, p2p: 0, uploaded: 0 },
  segments: { http: 0, p2p: 0, errors: 0, aborts: 0 },
  /** peers connected now, by id: which stream, since when (ms from navigation start) */
  peers: /** @type {Record<string, {stream: string, since: number}>} */ ({}),
  peersEver: 0,
  tracker: { url: tracker, sockets: trackerSockets, warnings: /** @type {string[]} */ ([]), errors: /** @type {string[]} */ ([]) },
  errors: /** @type {string[]} */ ([]),
  updatedMs: 0,
};
// @ts-ignore the harness reads it
window.playerState = state;

/** @param {string[]} list @param {unknown} what */
function note(list, what) {
  if (list.length < MAX_ERRORS) list.push(String(what instanceof Error ? what.message : typeof what === 'object' ? JSON.stringify(what) : what));
}

const video = /** @type {HTMLVideoElement} */ (document.getElementById('video'));
let stallStart = /** @type {number | null} */ (null);
/** Whether the playlist is live (no #EXT-X-ENDLIST yet), from hls.js's LEVEL_LOADED. */
let live = false;
video.addEventListener('playing', () => {
  if (state.startupMs === null) state.startupMs = Math.round(performance.now());
  state.playing = true;
  if (stallStart !== null) {
    state.stallMs += performance.now() - stallStart;
    stallStart = null;
  }
});
video.addEventListener('waiting', () => {
  if (state.startupMs === null || video.seeking || video.ended) return;
  // hls.js announces the end of a VOD as a wait for data that will never come; at a live
  // stream's edge a wait is a stall.
  if (!live && video.duration - video.currentTime < 0.5) return;
  if (stallStart === null) {
    state.stalls += 1;
    stallStart = performance.now();
  }
});
video.addEventListener('ended', () => {
  state.ended = true;
  state.playing = false;
});

if (!src) {
  note(state.errors, 'no ?src= playlist given');
} else if (!Hls.isSupported()) {
  note(state.errors, 'this browser has no Media Source Extensions: hls.js cannot play here');
} else {
  const HlsWithP2P = HlsJsP2PEngine.injectMixin(Hls);
  const hls = new HlsWithP2P({
    // Live only: play 10 segments (20 s) behind the live edge, so the segments more than
    // highDemandTimeWindow (15 s) ahead are already published and p2p-media-loader has time to
    // fetch each once over HTTP and share it, instead of every viewer fetching the newest
    // segment at the same moment (hls.js's default is 3 segments).
    liveSyncDurationCount: 10,
    p2p: {
      core: {
        announceTrackers: tracker ? [tracker] : [],
        // Loopback peers need no STUN; the default STUN servers are outside this machine.
        rtcConfig: { iceServers: [] },
        isP2PDisabled: !p2p,
        ...(window_ > 0 ? { httpDownloadTimeWindow: window_, p2pDownloadTimeWindow: 2 * window_ } : {}),
        ...(q.get('swarm') ? { swarmId: q.get('swarm') ?? undefined } : {}),
      },
      onHlsJsCreated: (h) => {
        const e = h.p2pEngine;
        e.addEventListener('onChunkDownloaded', (bytes, source) => {
          state.bytes[source === 'p2p' ? 'p2p' : 'http'] += bytes;
        });
        e.addEventListener('onChunkUploaded', (bytes) => {
          state.bytes.uploaded += bytes;
        });
        e.addEventListener('onSegmentLoaded', (d) => {
          state.segments[d.downloadSource === 'p2p' ? 'p2p' : 'http'] += 1;
        });
        e.addEventListener('onSegmentError', () => {
          state.segments.errors += 1;
        });
        e.addEventListener('onSegmentAbort', () => {
          state.segments.aborts += 1;
        });
        e.addEventListener('onPeerConnect', (d) => {
          if (Object.keys(state.peers).length < MAX_PEERS_SHOWN) state.peers[d.peerId] = { stream: d.streamType, since: Math.round(performance.now()) };
          state.peersEver += 1;
        });
        e.addEventListener('onPeerClose', (d) => {
          delete state.peers[d.peerId];
        });
        e.addEventListener('onTrackerError', (d) => note(state.tracker.errors, d.error));
        e.addEventListener('onTrackerWarning', (d) => note(state.tracker.warnings, d.warning));
      },
    },
  });
  if (!p2p) {
    // With P2P disabled p2p-media-loader hands loading back to hls.js and counts nothing:
    // hls.js's own fragment stats count the (all HTTP) bytes instead.
    hls.on(Hls.Events.FRAG_LOADED, (_ev, d) => {
      state.bytes.http += d.frag.stats.loaded;
      state.segments.http += 1;
    });
  }
  hls.on(Hls.Events.LEVEL_LOADED, (_ev, d) => {
    live = d.details.live;
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_ev, d) => {
    const l = hls.levels[d.level];
    state.level = l ? { height: l.height, bitrate: l.bitrate } : null;
    state.levelSwitches += 1;
  });
  hls.on(Hls.Events.ERROR, (_ev, d) => {
    if (d.details === Hls.ErrorDetails.BUFFER_STALLED_ERROR) {
      state.hlsStalls += 1;
      return;
    }
    if (!d.fatal) return;
    note(state.errors, `${d.type}: ${d.details}`);
    if (d.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
  });
  hls.attachMedia(video);
  hls.loadSource(src);
  video.muted = true;
  video.play().catch((err) => note(state.errors, `play(): ${err.message}`));
  document.getElementById('source').textContent = `${src}${p2p ? '' : ' (P2P off)'}`;
}

/** @param {number} n */
const fmt = (n) => (n >= 1048576 ? `${(n / 1048576).toFixed(2)} MiB` : `${(n / 1024).toFixed(0)} KiB`);
/** @param {string} id @param {string} text */
const set = (id, text) => {
  const el = document.getElementById(id);
  if (el && el.textContent !== text) el.textContent = text;
};

function refresh() {
  state.position = video.currentTime;
  const b = video.buffered;
  state.bufferedAhead = 0;
  for (let i = 0; i < b.length; i++) {
    if (b.start(i) <= video.currentTime + 0.1 && b.end(i) > video.currentTime) state.bufferedAhead = b.end(i) - video.currentTime;
  }
  state.updatedMs = Math.round(performance.now());
  const total = state.bytes.http + state.bytes.p2p;
  const share = total ? state.bytes.p2p / total : 0;
  set('share', total ? `${(share * 100).toFixed(1)} %` : '–');
  /** @type {HTMLElement} */ (document.getElementById('share-bar')).style.width = `${share * 100}%`;
  set('p2p-bytes', fmt(state.bytes.p2p));
  set('http-bytes', fmt(state.bytes.http));
  set('up-bytes', fmt(state.bytes.uploaded));
  set('segments', `${state.segments.p2p} from peers, ${state.segments.http} from the origin`);
  const sock = trackerSockets.at(-1);
  set('tracker-url', tracker || '(none)');
  set('tracker-state', sock ? `${sock.state}${sock.closeCode ? ` (${sock.closeCode})` : ''}, ${trackerSockets.length} socket(s) so far` : p2p ? 'not yet' : 'P2P off');
  set('tracker-instance', sock?.instance ?? '(not told)');
  set('tracker-errors', [...state.tracker.errors, ...state.tracker.warnings, ...(sock?.failures ?? [])].join('; '));
  const ul = /** @type {HTMLElement} */ (document.getElementById('peers'));
  const ids = Object.keys(state.peers);
  const text = ids.map((id) => `${id} (${state.peers[id].stream})`).join('\n');
  if (ul.dataset.text !== text) {
    ul.dataset.text = text;
    ul.replaceChildren(...ids.map((id) => Object.assign(document.createElement('li'), { textContent: `${id} (${state.peers[id].stream})` })));
    if (!ids.length) ul.replaceChildren(Object.assign(document.createElement('li'), { textContent: 'none connected' }));
  }
  set('startup', state.startupMs === null ? 'not started' : `${state.startupMs} ms`);
  set('stalls', `${state.stalls} (${(state.stallMs / 1000).toFixed(1)} s)`);
  set('position', `${state.position.toFixed(1)} s / ${state.bufferedAhead.toFixed(1)} s ahead`);
  set('level', state.level ? `${state.level.height}p, ${Math.round(state.level.bitrate / 1000)} kb/s` : '–');
  set('errors', state.errors.join('; '));
}
setInterval(refresh, 250);

if (reportMs > 0) {
  const send = () => {
    refresh();
    fetch(`/report?viewer=${encodeURIComponent(viewer)}`, { method: 'POST', body: JSON.stringify(state), headers: { 'content-type': 'application/json' }, keepalive: true }).catch(() => {});
  };
  setInterval(send, reportMs);
  video.addEventListener('playing', send);
}
