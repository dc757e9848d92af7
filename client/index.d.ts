// Types of the swarmtrack browser SDK (hand-written; the sources carry the same in JSDoc).

/** Options of {@link SwarmClient}; every field is optional. */
export interface SwarmClientOptions {
  /** STUN/TURN servers for RTCPeerConnection (default none). */
  iceServers?: RTCIceServer[];
  /** Peers to ask the tracker for, and to keep, per swarm (default 5; clamped to `welcome.limits.want`). */
  want?: number;
  /** Connections (negotiating or open) over all swarms (default 20). */
  maxPeers?: number;
  /** A peer whose data channel isn't open by then is closed (ms, default 15000). */
  connectTimeoutMs?: number;
  /** Socket open plus `welcome` within this, else reconnect (ms, default 10000). */
  handshakeTimeoutMs?: number;
  /** Wire format: JSON text frames or MessagePack binary frames (default `json`). */
  framing?: 'json' | 'msgpack';
  /** Send data-channel SDP and candidates minified (`m1`, docs/ARCHITECTURE.md 15) (default true). */
  minify?: boolean;
  /** Candidate coalescing window in ms; 0 sends each candidate alone (default 15). */
  batchWindowMs?: number;
  /** First reconnect delay after an error (ms, default 500); doubles up to `backoffMaxMs`, jittered. */
  backoffMinMs?: number;
  /** Longest reconnect delay (ms, default 30000). */
  backoffMaxMs?: number;
  /** Least time between two joins of one swarm when refilling lost peers (ms, default 1000). */
  refillDelayMs?: number;
  /** Swarms joined at once (default 16). */
  maxSwarms?: number;
  /** A peer whose negotiation failed isn't offered to again for this long (ms, default 30000). */
  retryFailedAfterMs?: number;
  /** New negotiations (offers with a new `sid`) one remote may start at once (default 3). */
  offerBurst?: number;
  /** Then one more per this many ms; an offer beyond that is ignored and doubles the interval
   * (ms, default 1000). */
  offerIntervalMs?: number;
  /** Longest that interval grows to (ms, default 60000). */
  offerBackoffMaxMs?: number;
  /** A remote that replaces its connection with this page more often than this within
   * `replaceWindowMs` is quarantined for `retryFailedAfterMs`, like a failed peer (default 3). */
  maxReplacements?: number;
  /** See `maxReplacements` (ms, default 60000). */
  replaceWindowMs?: number;
  /** Data channel label (default `swarmtrack`). */
  channelLabel?: string;
  /** WebSocket constructor (default the global). */
  WebSocket?: typeof WebSocket;
  /** RTCPeerConnection constructor (default the global). */
  RTCPeerConnection?: typeof RTCPeerConnection;
  /** Timer functions (tests inject a fake clock). */
  timers?: Timers;
  /** Clock in ms (default `performance.now`). */
  now?: () => number;
  /** Uniform random in [0, 1) for jitter (default `Math.random`). */
  random?: () => number;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** A connected peer: its data channel is open. */
export interface PeerEvent {
  swarm: string;
  /** The remote viewer's peer id (22 characters). */
  id: string;
  channel: RTCDataChannel;
  connection: RTCPeerConnection;
  /** From the start of the negotiation to the open channel, in ms. */
  openAfterMs: number;
}

export interface PeerCloseEvent {
  swarm: string;
  id: string;
  reason: string;
}

export interface ConnectedEvent {
  /** Our peer id on this connection (changes on every reconnect). */
  peer: string;
  /** The tracker instance, 8 hex digits. */
  instance: string;
}

/**
 * A refusal from the tracker (`code` as in docs/ARCHITECTURE.md 3.6), or a problem the SDK
 * found itself: `bad_url` (the tracker URL doesn't parse), `rtc_config` (the browser refused
 * the RTCPeerConnection configuration, e.g. a malformed ICE server).
 */
export interface TrackerError {
  code: string;
  msg: string;
  /** The `t` of the refused message, when the tracker names it. */
  ref: string | null;
  /** The negotiation of a refused signal. */
  sid: string | null;
}

export interface ClientStats {
  framesSent: number;
  bytesSent: number;
  /** Per message type (`join`, `offer`, `answer`, `cands`, `leave`). */
  sent: Record<string, { messages: number; bytes: number }>;
  framesReceived: number;
  bytesReceived: number;
  /** Server frames or messages dropped as malformed. */
  malformed: number;
  peersOpened: number;
  peersFailed: number;
  connects: number;
  /** Messages not sent: socket down or over the tracker's `max_message`. */
  dropped: number;
  /** Peers from `peers` not offered to because they failed recently or are quarantined. */
  skippedFailed: number;
  /** Offers ignored: over the remote's offer rate, or from a quarantined remote. */
  offersLimited: number;
  /** Remotes quarantined for replacing their connection too often. */
  quarantined: number;
}

export interface SwarmClientEvents {
  peer: PeerEvent;
  peerclose: PeerCloseEvent;
  connected: ConnectedEvent;
  disconnected: { code: number; reason: string };
  reconnect: { afterMs: number };
  error: TrackerError;
}

/** One connection to a swarmtrack tracker and the peers of the swarms joined through it. */
export class SwarmClient {
  constructor(url: string, options?: SwarmClientOptions);
  /** Our peer id on the current connection, null until `welcome`. */
  readonly peerId: string | null;
  /** The tracker instance of the current connection. */
  readonly instance: string | null;
  readonly stats: ClientStats;
  /** Joins a swarm (connecting first if needed); kept joined across reconnects. */
  join(swarm: string): void;
  /** Leaves a swarm and closes its peers. */
  leave(swarm: string): void;
  /** Leaves every swarm, closes every peer and the socket. */
  close(): void;
  /** The peers whose data channel is open. */
  connections(): PeerEvent[];
  /** Closes the connection with one remote viewer; the swarm is refilled later. */
  disconnectPeer(swarm: string, id: string): void;
  /** Opens the socket (done by `join`). */
  connect(): void;
  on<K extends keyof SwarmClientEvents>(event: K, fn: (e: SwarmClientEvents[K]) => void): () => void;
  off<K extends keyof SwarmClientEvents>(event: K, fn: (e: SwarmClientEvents[K]) => void): void;
}

/** Coalesces trickled candidates into one message per window. */
export class CandidateBatcher {
  constructor(
    send: (candidates: string[], end: boolean) => void,
    opts?: { windowMs?: number; maxBatch?: number; timers?: Timers },
  );
  add(candidate: string): void;
  end(): void;
  close(): void;
}

export interface DataChannelFields {
  ufrag: string;
  pwd: string;
  hash: string;
  fingerprint: string;
  setup: 'actpass' | 'active' | 'passive';
  mid: string;
  sctpPort: number;
  maxMessageSize: number;
  candidates: string[];
}

/** Minifies a lone data-channel SDP into `m1`; null for anything else (send it as is). */
export function minify(sdp: string): string | null;
/** Expands `m1` into an SDP the browser accepts; a plain SDP passes through; null if malformed. */
export function expand(m: string, opts?: { sessionId?: string }): string | null;
export function minifyCandidate(line: string): string | null;
export function expandCandidate(min: string): string | null;
export function parseDataChannel(sdp: string): DataChannelFields | null;

export class MsgpackError extends Error {}
export function encodeMsgpack(value: unknown): Uint8Array;
export function decodeMsgpack(input: Uint8Array | ArrayBuffer): unknown;

export function encodeFrame(msg: Record<string, unknown>, framing: 'json' | 'msgpack'): string | Uint8Array;
export function decodeServerFrame(data: string | ArrayBuffer | Uint8Array): Array<Record<string, unknown> & { t: string }>;
