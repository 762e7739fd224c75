// ad hoc (not committed): N closed-loop v1 chat messages on one socket
import WebSocket from 'ws';
import { widgetToken } from './lib/targets.js';
const [port, n] = [process.argv[2], Number(process.argv[3])];
const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/channels/widget/cg/connect?token=${widgetToken('cg')}`);
let left = n;
const t0 = Date.now();
ws.on('message', (d) => {
  const f = JSON.parse(String(d));
  if (f.type === 'connection_status' || f.type === 'ai_response') {
    if (left-- === 0) { console.log(`${n} in ${Date.now() - t0} ms`); ws.close(); return; }
    ws.send(JSON.stringify({ type: 'user_message', content: 'hello there, how are you' }));
  }
});
