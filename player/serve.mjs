#!/usr/bin/env node
// Usage: node player/serve.mjs --tracker ws://HOST:PORT/announce [--stream DIR]
//                              [--page-port N] [--origin-port N]
//
// The demo's two web servers: the counting origin of the test stream and the player page
// (scripts/demo-player starts the fleet and then this). Prints the page URL to open in several
// tabs or browsers; the origin's counters are at ORIGIN/_origin/stats. Stops on Ctrl-C/SIGTERM.
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { startOrigin } from './origin.mjs';
import { ROOT, pageUrl, startSite } from './site.mjs';

const { values } = parseArgs({
  options: {
    tracker: { type: 'string' },
    stream: { type: 'string', default: join(ROOT, 'target', 'player', 'stream') },
    'page-port': { type: 'string', default: '8091' },
    'origin-port': { type: 'string', default: '8092' },
  },
});
const port = (/** @type {string} */ v) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    console.error(`bad port ${v}`);
    process.exit(2);
  }
  return n;
};
if (!values.tracker) {
  console.error('usage: node player/serve.mjs --tracker ws://HOST:PORT/announce [--stream DIR] [--page-port N] [--origin-port N]');
  process.exit(2);
}
const origin = await startOrigin({ root: values.stream, port: port(values['origin-port']) });
const site = await startSite({ port: port(values['page-port']) });
const src = `${origin.url}/master.m3u8`;
console.log(`player page (open it in two or more tabs or browsers):\n  ${pageUrl(site.url, { src, tracker: values.tracker })}`);
console.log(`without P2P, for comparison:\n  ${pageUrl(site.url, { src, tracker: values.tracker, p2p: false })}`);
console.log(`origin: ${origin.url} (bytes served: ${origin.url}/_origin/stats)`);
console.log('Ctrl-C stops it.');
const stop = async () => {
  await site.close();
  await origin.close();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
