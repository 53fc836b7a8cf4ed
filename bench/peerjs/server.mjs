// The PeerJS server (npm `peer`) as the signaling benchmark runs it: the library's own
// PeerServer, without the CLI's log line per connection, so it is measured at its best.
// Usage: node server.mjs PORT [HOST]
import { PeerServer } from 'peer';

const port = Number(process.argv[2] ?? 9000);
PeerServer({ port, host: process.argv[3] ?? '127.0.0.1', path: '/', concurrent_limit: 1_000_000 }, () => {
  console.log(`peerjs listening on ${port}`);
});
