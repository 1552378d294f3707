// One MCP session with several tool calls, through the official TypeScript
// SDK's client (the one the MCP Inspector is built on):
//   node session.mjs INSPECTOR_PREFIX SERVER [ARGS...]
// Each line of standard input is a call, {"name": ..., "arguments": ...};
// each line of standard output is its result as JSON (a protocol error as
// {"protocolError": TEXT}). The session ends at the end of input.
const [prefix, command, ...args] = process.argv.slice(2);
const sdk = `${prefix}/node_modules/@modelcontextprotocol/sdk/dist/esm/`;
const { Client } = await import(sdk + "client/index.js");
const { StdioClientTransport } = await import(sdk + "client/stdio.js");
const readline = await import("node:readline");

const transport = new StdioClientTransport({ command, args, stderr: "inherit" });
const client = new Client({ name: "qmp-mcp-tests", version: "1" });
await client.connect(transport);
console.log(JSON.stringify({ connected: true }));
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const call = JSON.parse(line);
  let out;
  try {
    out = await client.callTool(call);
  } catch (e) {
    out = { protocolError: String(e) };
  }
  console.log(JSON.stringify(out));
}
await client.close();
