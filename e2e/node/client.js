// A client in another language: streams Router.Generate with @grpc/grpc-js,
// loading the project's .proto files at run time with @grpc/proto-loader.
//
//   node client.js ROUTER_ADDR PROTO_DIR MODEL PROMPT MAX_TOKENS
//
// Prints one JSON line per event and a final {"done": ...} summary line.
'use strict';
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [addr, protoDir, model, prompt, maxTokens] = process.argv.slice(2);
const def = loader.loadSync('llmrouter/router/v1/router.proto', {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
});
const pkg = grpc.loadPackageDefinition(def);
const client = new pkg.llmrouter.router.v1.RouterService(addr, grpc.credentials.createInsecure());

const call = client.Generate({
  model,
  prompt: { text: prompt },
  sampling: { temperature: 0, max_tokens: Number(maxTokens) },
});
let tokens = 0;
let text = '';
call.on('data', (msg) => {
  if (msg.delta) {
    // Unset proto fields are absent with defaults: false.
    tokens += (msg.delta.token_ids || []).length;
    text += msg.delta.text || '';
  }
  console.log(JSON.stringify(msg));
});
call.on('error', (err) => {
  console.log(JSON.stringify({ error: { code: err.code, details: err.details } }));
  process.exit(1);
});
call.on('end', () => {
  console.log(JSON.stringify({ done: { tokens, text } }));
  client.close();
});
