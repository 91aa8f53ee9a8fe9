// The official Anthropic Node client against the router's Messages API:
// messages.create (system prompt, stop sequences, metadata.user_id), its
// raw event stream, the MessageStream helper's text events and final
// message, a forced tool_use (whole and streamed, the helper assembling
// input_json_delta into the input object), the tool_result turn after it,
// countTokens, and the client's error classes for 400, 401, 404, 429 and
// 529.
//
//   node anthropic_messages.js BASE_URL MODEL GUARDED_URL GUARDED_KEY
//
// GUARDED_URL is a router that checks API keys, admits one request at a
// time and allows GUARDED_KEY two requests a minute.
//
// Prints one JSON object with what each call returned.
'use strict';
const Anthropic = require('@anthropic-ai/sdk');

// errorOf runs f and describes the error it throws (or "no error").
async function errorOf(f) {
  try {
    await f();
    return { name: 'no error' };
  } catch (e) {
    return { name: e.constructor.name, status: e.status, type: e.error && e.error.error && e.error.error.type, message: e.message, requestID: e.requestID || null };
  }
}

async function main() {
  const [baseURL, model, guardedURL, guardedKey] = process.argv.slice(2);
  const client = new Anthropic({ baseURL, apiKey: 'no-key', maxRetries: 0 });
  const out = {};
  const base = { model, max_tokens: 12, temperature: 0 };
  const hello = [{ role: 'user', content: 'Say hello.' }];

  const msg = await client.messages.create({ ...base, system: 'Be brief.', messages: hello, metadata: { user_id: 'e2e-user' } });
  out.create = { id: msg.id, type: msg.type, role: msg.role, model: msg.model, content: msg.content, stop_reason: msg.stop_reason, stop_sequence: msg.stop_sequence, usage: msg.usage };

  // A stop sequence taken from the answer itself ends it there.
  const text = msg.content.length ? msg.content[0].text : '';
  const stop = text.trim().split(/\s+/)[1] || '';
  if (stop) {
    const cut = await client.messages.create({ ...base, system: 'Be brief.', messages: hello, stop_sequences: ['never in it', stop] });
    out.stop = { stop, text: cut.content.length ? cut.content[0].text : '', stop_reason: cut.stop_reason, stop_sequence: cut.stop_sequence };
  }

  // The raw event stream.
  const raw = await client.messages.create({ ...base, system: 'Be brief.', messages: hello, stream: true });
  const events = [];
  let rawText = '';
  for await (const e of raw) {
    events.push(e.type);
    if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') rawText += e.delta.text;
  }
  out.rawStream = { events, text: rawText };

  // The MessageStream helper: text events, the final message.
  const helper = client.messages.stream({ ...base, system: 'Be brief.', messages: hello });
  let texts = 0;
  helper.on('text', () => { texts++; });
  const final = await helper.finalMessage();
  out.helperStream = { texts, content: final.content, stop_reason: final.stop_reason, usage: final.usage };

  // A forced tool call: the input obeys the schema even from a
  // random-weight model; then the result goes back as a tool_result.
  const weather = {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['c', 'f'] } },
    required: ['city', 'unit'],
    additionalProperties: false,
  };
  const tools = [{ name: 'get_weather', description: 'Current weather in a city', input_schema: weather }];
  const ask = [{ role: 'user', content: 'Weather in Paris?' }];
  const forced = await client.messages.create({ ...base, max_tokens: 200, temperature: 1, tools, tool_choice: { type: 'tool', name: 'get_weather', disable_parallel_tool_use: true }, messages: ask });
  const use = forced.content.find((b) => b.type === 'tool_use');
  out.toolUse = { content: forced.content, stop_reason: forced.stop_reason };
  const streamedTool = client.messages.stream({ ...base, max_tokens: 200, temperature: 1, tools, tool_choice: { type: 'any', disable_parallel_tool_use: true }, messages: ask });
  let jsonDeltas = 0;
  streamedTool.on('inputJson', () => { jsonDeltas++; });
  const streamedFinal = await streamedTool.finalMessage();
  out.toolUseStream = { content: streamedFinal.content, stop_reason: streamedFinal.stop_reason, jsonDeltas };
  if (use) {
    const next = await client.messages.create({
      ...base, tools, messages: [...ask, { role: 'assistant', content: forced.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '21 degrees' }] }],
    });
    out.afterTool = { stop_reason: next.stop_reason, blocks: next.content.map((b) => b.type), input: next.usage.input_tokens + next.usage.cache_read_input_tokens };
  }

  // countTokens counts what a message's usage reports for the same prompt.
  const counted = await client.messages.countTokens({ model, system: 'Be brief.', messages: hello });
  out.countTokens = { counted: counted.input_tokens, usage: msg.usage.input_tokens + msg.usage.cache_read_input_tokens };

  out.errors = {};
  out.errors.badRequest = await errorOf(() => client.messages.create({ ...base, temperature: 3, messages: hello }));
  out.errors.notFound = await errorOf(() => client.messages.create({ ...base, model: 'no-such-model', messages: hello }));
  const stranger = new Anthropic({ baseURL: guardedURL, apiKey: 'sk-wrong', maxRetries: 0 });
  out.errors.authentication = await errorOf(() => stranger.messages.create({ ...base, messages: hello }));
  // Hold the guarded router's one admission slot with a stream; another
  // request meanwhile is 529. Then the key's two requests a minute: the
  // stream was one, the next is the second, the third is 429.
  const guarded = new Anthropic({ baseURL: guardedURL, apiKey: guardedKey, maxRetries: 0 });
  const long = await guarded.messages.create({ ...base, max_tokens: 300, messages: hello, stream: true });
  const it = long[Symbol.asyncIterator]();
  await it.next(); // message_start: the request holds the slot
  out.errors.overloaded = await errorOf(() => guarded.messages.create({ ...base, messages: hello }));
  while (!(await it.next()).done) { /* drain */ }
  out.errors.second = await errorOf(() => guarded.messages.create({ ...base, messages: hello }));
  out.errors.rateLimit = await errorOf(() => guarded.messages.create({ ...base, messages: hello }));

  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack || e);
  process.exit(1);
});
