// How a TypeScript player uses the package (type-checked by `npm run typecheck`, never run):
// every documented call and event compiles against index.d.ts, and misuse does not.
import {
  SwarmClient,
  expand,
  minify,
  type PeerEvent,
  type SwarmClientOptions,
} from '@swarmtrack/client';

const options: SwarmClientOptions = {
  iceServers: [{ urls: 'stun:stun.example:3478' }],
  want: 5,
  maxPeers: 12,
  connectTimeoutMs: 10000,
  framing: 'msgpack',
  minify: true,
  batchWindowMs: 15,
};
const client = new SwarmClient('wss://tracker.example/v1/ws', options);
const off = client.on('peer', (p: PeerEvent) => {
  p.channel.send(`hello ${p.id} in ${p.swarm} after ${p.openAfterMs.toFixed(0)} ms`);
  p.connection.close();
});
client.on('peerclose', (e) => console.log(e.id, e.reason));
client.on('connected', (e) => console.log(e.peer, e.instance));
client.on('reconnect', (e) => console.log(e.afterMs));
client.on('error', (e) => console.log(e.code, e.ref ?? '', e.sid ?? ''));
client.join('video-42');
for (const c of client.connections()) client.disconnectPeer(c.swarm, c.id);
const sent: number = client.stats.sent['offer']?.bytes ?? 0;
console.log(sent, client.peerId?.length, client.instance);
off();
client.leave('video-42');
client.close();

const m: string | null = minify('v=0\r\n');
if (m !== null) console.log(expand(m)?.length);

// @ts-expect-error framing is 'json' or 'msgpack'
new SwarmClient('ws://x', { framing: 'xml' });
// @ts-expect-error no such event
client.on('peers', () => {});
