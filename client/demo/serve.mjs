#!/usr/bin/env node
// Usage: node demo/serve.mjs [--port N] [--tracker ws://host:port/v1/ws]
//
// Serves the demo page and the SDK on http://127.0.0.1:N (default 8090). Without --tracker it
// also starts a local fleet like the e2e tests do (redis-server, two trackers from
// target/debug, HAProxy) and points the page at it. Ctrl-C stops everything it started.
import { parseArgs } from 'node:util';

import { CLIENT_DIR, serveStatic, startFleet } from '../e2e/fleet.mjs';

const { values } = parseArgs({ options: { port: { type: 'string', default: '8090' }, tracker: { type: 'string' } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error('--port: 0..65535');
  process.exit(2);
}
let tracker = values.tracker;
let fleet = null;
if (!tracker) {
  fleet = await startFleet({ trackers: 2 });
  tracker = fleet.frontUrl;
  // The fleet's own static server is on a random port; this one has the port asked for.
  fleet.web?.close();
  fleet.web = null;
}
const web = await serveStatic(CLIENT_DIR, port);
const { port: bound } = /** @type {import('node:net').AddressInfo} */ (web.address());
const url = `http://127.0.0.1:${bound}/demo/?tracker=${encodeURIComponent(tracker)}&video=big-buck-bunny`;
console.log(`demo: open this in two tabs:\n  ${url}`);
if (fleet) console.log(`fleet: ${fleet.trackers.map((t) => `${t.name} instance ${t.instance} on :${t.port}`).join(', ')}; front end ${tracker}`);
console.log('Ctrl-C stops it.');

const stop = async () => {
  web.close();
  web.closeAllConnections();
  await fleet?.stop();
  process.exit(0);
};
process.removeAllListeners('SIGINT');
process.removeAllListeners('SIGTERM');
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
