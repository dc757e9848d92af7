// The reference WebTorrent tracker (bittorrent-tracker's server, WebSocket only) on
// 127.0.0.1:PORT, for benchmarks: `node reference-server.mjs PORT`. Stops on SIGTERM/SIGINT.
import Server from 'bittorrent-tracker/server'

const port = Number(process.argv[2])
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node reference-server.mjs PORT')
  process.exit(2)
}
const server = new Server({ http: false, udp: false, ws: true, stats: false })
// Bad input is the client's problem; the reference reports it as a warning.
server.on('warning', () => {})
server.on('error', (err) => { console.error(err); process.exit(1) })
server.listen(port, '127.0.0.1', () => console.log(`reference tracker on ws://127.0.0.1:${port}`))
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)))
