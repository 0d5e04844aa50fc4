// Baseline: Node's `ws`, fed the same ticks as the Python servers by feeder.py on stdin
// ("SYMBOL\tpayload" lines). Speaks /ws/{symbol} and /ws/multi/{symbols}; each payload is sent
// as a text frame to every connection subscribed to its symbol (the send loop `ws` documents).
"use strict";
const http = require("http");
const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const port = Number(arg("--port", "0"));
const symbols = arg("--symbols", "").split(",");
const subscribers = new Map(symbols.map((s) => [s, new Set()]));

function symbolsFromPath(url) {
  const path = url.split("?")[0];
  let raw = [];
  if (path.startsWith("/ws/multi/")) raw = path.slice("/ws/multi/".length).split(",");
  else if (path.startsWith("/ws/")) raw = [path.slice("/ws/".length)];
  return raw.map((s) => s.trim().toUpperCase()).filter((s) => subscribers.has(s));
}

const server = http.createServer((req, res) => {
  res.writeHead(404, { "content-type": "application/json" });
  res.end('{"error":{"code":"not_found"}}');
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
server.on("upgrade", (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => {
    const wanted = symbolsFromPath(req.url);
    for (const s of wanted) subscribers.get(s).add(ws);
    ws.on("close", () => {
      for (const s of wanted) subscribers.get(s).delete(ws);
    });
    ws.on("error", () => {});
  });
});

let rest = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  const lines = (rest + chunk).split("\n");
  rest = lines.pop();
  for (const line of lines) {
    const tab = line.indexOf("\t");
    const group = subscribers.get(line.slice(0, tab));
    if (!group || group.size === 0) continue;
    const payload = Buffer.from(line.slice(tab + 1));
    for (const ws of group) ws.send(payload, { binary: false });
  }
});
process.stdin.on("end", () => process.exit(0));

server.listen(port, "127.0.0.1", 4096, () => {
  console.log(`node ws server listening on http://127.0.0.1:${server.address().port}`);
});
