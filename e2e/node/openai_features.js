// The official OpenAI Node client exercising what ordinary client code
// sends: content parts, logprobs (whole, and streamed through the SDK's
// stream helper, which accumulates them), n > 1, logit_bias, penalties,
// user, structured output (parse() with a json_schema, streamed, and
// json_object), tools (the runTools helper, whole and streamed; the stream
// helper's tool-call accumulation; a next turn with the tool's result),
// the Responses API (create, its event stream through the SDK's stream
// helper, function calls and their outputs as the next input), and the
// precise 400s for what the router refuses.
//
//   node openai_features.js BASE_URL MODEL FIRST_TOKEN_ID
//
// FIRST_TOKEN_ID is the id of the first token of the greedy answer to
// "Say hello." (OpenAI's logprobs carry bytes, not ids), for logit_bias.
//
// Prints one JSON object with what each call returned.
'use strict';
const OpenAI = require('openai');

async function main() {
  const [baseURL, model, firstTokenID] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey: process.env.LLMROUTER_API_KEY || 'no-key', maxRetries: 0 });
  const out = {};
  const base = { model, max_tokens: 8, temperature: 0, user: 'e2e-user' };

  const asString = await client.chat.completions.create({ ...base, messages: [{ role: 'user', content: 'Say hello.\nPlease.' }] });
  const asParts = await client.chat.completions.create({
    ...base,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Say hello.' }, { type: 'text', text: 'Please.' }] }],
  });
  out.parts = { string: asString.choices[0].message.content, parts: asParts.choices[0].message.content };

  const lp = await client.chat.completions.create({
    ...base, logprobs: true, top_logprobs: 3, messages: [{ role: 'user', content: 'Say hello.' }],
  });
  const entries = lp.choices[0].logprobs.content;
  out.logprobs = {
    count: entries.length,
    tokens: lp.usage.completion_tokens,
    allNegative: entries.every((e) => e.logprob <= 0),
    topCounts: entries.map((e) => e.top_logprobs.length),
    bytesJoin: Buffer.from(entries.flatMap((e) => e.bytes)).toString('utf8'),
    content: lp.choices[0].message.content,
  };

  // The SDK's stream helper accumulates chunks (content, logprobs, every
  // choice index) into a final completion.
  const stream = client.chat.completions.stream({
    ...base, n: 2, seed: 7, temperature: 1, logprobs: true, top_logprobs: 1,
    messages: [{ role: 'user', content: 'Say hello.' }], stream_options: { include_usage: true },
  });
  let deltas = 0;
  stream.on('content', () => { deltas++; });
  const final = await stream.finalChatCompletion();
  out.streamN = {
    choices: final.choices.map((c) => ({ index: c.index, content: c.message.content, logprobs: (c.logprobs && c.logprobs.content || []).length, finish: c.finish_reason })),
    usage: final.usage, deltas,
  };
  const whole = await client.chat.completions.create({
    ...base, n: 2, seed: 7, temperature: 1, messages: [{ role: 'user', content: 'Say hello.' }],
  });
  out.wholeN = whole.choices.map((c) => ({ index: c.index, content: c.message.content }));

  // A ban on the greedy answer's first token changes its first token.
  const banned = await client.chat.completions.create({
    ...base, logit_bias: { [firstTokenID]: -100 }, logprobs: true, messages: [{ role: 'user', content: 'Say hello.' }],
  });
  out.ban = { greedyFirst: entries[0].bytes, bannedFirst: banned.choices[0].logprobs.content[0].bytes };
  const pen = await client.chat.completions.create({
    ...base, frequency_penalty: 1.5, presence_penalty: 0.5, messages: [{ role: 'user', content: 'Say hello.' }],
  });
  out.penalties = { content: pen.choices[0].message.content };

  // Structured output: the SDK's parse() helper parses the JSON answer of
  // a json_schema response format; streamed, the chunks join to the same
  // document. A random-weight model still answers valid JSON (grammar).
  const schema = {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 10 },
      age: { type: 'integer', minimum: 0, maximum: 120 },
      tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, maxItems: 3 },
    },
    required: ['name', 'age', 'tags'],
    additionalProperties: false,
  };
  const format = { type: 'json_schema', json_schema: { name: 'person', schema, strict: true } };
  const parsed = await client.chat.completions.parse({
    ...base, max_tokens: 200, temperature: 1, seed: 3, response_format: format,
    messages: [{ role: 'user', content: 'Describe a person.' }],
  });
  out.structured = { parsed: parsed.choices[0].message.parsed, content: parsed.choices[0].message.content, finish: parsed.choices[0].finish_reason };
  const sstream = client.chat.completions.stream({
    ...base, max_tokens: 200, temperature: 1, seed: 3, response_format: format,
    messages: [{ role: 'user', content: 'Describe a person.' }],
  });
  const sfinal = await sstream.finalChatCompletion();
  // (The stream helper parses only zod formats; the accumulated text is
  // the document.)
  out.structuredStream = { content: sfinal.choices[0].message.content, parsed: JSON.parse(sfinal.choices[0].message.content) };
  const obj = await client.chat.completions.create({
    ...base, max_tokens: 200, response_format: { type: 'json_object' }, messages: [{ role: 'user', content: 'JSON please.' }],
  });
  out.jsonObject = { content: obj.choices[0].message.content, finish: obj.choices[0].finish_reason };

  // Tools (max_tokens left to the context: a random-weight model spells
  // out arguments in short tokens). runTools with a named function: the model's forced call is
  // parsed by the helper, our function runs, and its result goes back as
  // a tool message.
  const weather = {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['c', 'f'] } },
    required: ['city', 'unit'],
    additionalProperties: false,
  };
  const runToolsCase = async (stream) => {
    const called = [];
    const runner = client.chat.completions.runTools({
      ...base, max_tokens: undefined, temperature: 1, seed: 5, stream,
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: [{ type: 'function', function: { name: 'get_weather', description: 'Current weather in a city', parameters: weather, parse: JSON.parse, function: (args) => { called.push(args); return { temperature: 21 }; } } }],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
    });
    let argDeltas = 0;
    if (stream) runner.on('tool_calls.function.arguments.delta', () => { argDeltas++; });
    await runner.done();
    return { called, roles: runner.messages.map((m) => m.role), tool: runner.messages.find((m) => m.role === 'tool'), argDeltas };
  };
  out.runTools = await runToolsCase(false);
  out.runToolsStream = await runToolsCase(true);

  // The stream helper accumulates tool-call deltas; required with one
  // call; the next turn carries the call and its result.
  const tools = [
    { type: 'function', function: { name: 'get_weather', description: 'Current weather in a city', parameters: weather } },
    { type: 'function', function: { name: 'get_time', description: 'The time now', parameters: { type: 'object', properties: {}, additionalProperties: false } } },
  ];
  const tstream = client.chat.completions.stream({
    ...base, max_tokens: undefined, temperature: 1, seed: 11, tools, tool_choice: 'required', parallel_tool_calls: false,
    messages: [{ role: 'user', content: 'Weather in Rome?' }],
  });
  let toolDeltas = 0;
  tstream.on('tool_calls.function.arguments.delta', () => { toolDeltas++; });
  const tfinal = await tstream.finalChatCompletion();
  const tmsg = tfinal.choices[0].message;
  out.toolStream = { finish: tfinal.choices[0].finish_reason, content: tmsg.content, calls: tmsg.tool_calls, toolDeltas };
  const twhole = await client.chat.completions.create({
    ...base, max_tokens: undefined, temperature: 1, seed: 11, tools, tool_choice: 'required', parallel_tool_calls: false,
    messages: [{ role: 'user', content: 'Weather in Rome?' }],
  });
  out.toolWhole = { finish: twhole.choices[0].finish_reason, content: twhole.choices[0].message.content, calls: twhole.choices[0].message.tool_calls, prompt: twhole.usage.prompt_tokens };
  const next = await client.chat.completions.create({
    ...base, tools, tool_choice: 'none',
    messages: [{ role: 'user', content: 'Weather in Rome?' }, tmsg,
      ...tmsg.tool_calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: JSON.stringify({ temperature: 19 }) }))],
  });
  out.toolNextTurn = { finish: next.choices[0].finish_reason, content: next.choices[0].message.content, calls: next.choices[0].message.tool_calls || null, prompt: next.usage.prompt_tokens };

  // The Responses API: text whole (the SDK's output_text) and streamed
  // (the stream helper's events and final response), a forced function
  // call, and the next turn with the call's output.
  const rbase = { model, max_output_tokens: 8, temperature: 0 };
  const r1 = await client.responses.create({ ...rbase, instructions: 'Be brief.', input: 'Say hello.' });
  const rstream = client.responses.stream({ ...rbase, instructions: 'Be brief.', input: 'Say hello.' });
  const rtypes = [];
  let rdeltas = '';
  rstream.on('event', (e) => { rtypes.push(e.type); });
  rstream.on('response.output_text.delta', (e) => { rdeltas += e.delta; });
  const r2 = await rstream.finalResponse();
  out.responses = { text: r1.output_text, status: r1.status, incomplete: r1.incomplete_details, usage: r1.usage, id: r1.id,
    streamText: r2.output_text, deltas: rdeltas, types: [...new Set(rtypes)], streamStatus: r2.status };
  const rtools = [{ type: 'function', name: 'get_weather', description: 'Current weather in a city', parameters: weather, strict: true }];
  const rc = await client.responses.create({
    ...rbase, max_output_tokens: undefined, temperature: 1, seed: 4, input: [{ role: 'user', content: 'Weather in Oslo?' }],
    tools: rtools, tool_choice: 'required', parallel_tool_calls: false,
  });
  const calls = rc.output.filter((o) => o.type === 'function_call');
  const rnext = await client.responses.create({
    ...rbase, tools: rtools, tool_choice: 'none',
    input: [{ role: 'user', content: 'Weather in Oslo?' }, ...rc.output,
      ...calls.map((c) => ({ type: 'function_call_output', call_id: c.call_id, output: JSON.stringify({ temperature: 3 }) }))],
  });
  out.responsesTools = { calls: calls.map((c) => ({ name: c.name, call_id: c.call_id, arguments: c.arguments })), status: rc.status, input: rc.usage.input_tokens,
    next: { text: rnext.output_text, status: rnext.status, types: rnext.output.map((o) => o.type), input: rnext.usage.input_tokens } };
  out.responsesErrors = {};
  for (const [name, body] of Object.entries({
    store: { store: true, input: 'x' },
    previous: { previous_response_id: r1.id, input: 'x' },
    builtin: { tools: [{ type: 'web_search' }], input: 'x' },
  })) {
    try {
      await client.responses.create({ ...rbase, ...body });
      out.responsesErrors[name] = { status: 200 };
    } catch (err) {
      out.responsesErrors[name] = { status: err.status, param: err.param, message: err.message };
    }
  }

  out.errors = {};
  const bad = {
    image: { messages: [{ role: 'user', content: [{ type: 'text', text: 'what is this' }, { type: 'image_url', image_url: { url: 'https://example.invalid/x.png' } }] }] },
    unknownPart: { messages: [{ role: 'user', content: [{ type: 'hologram' }] }] },
    nTooMany: { n: 9, messages: [{ role: 'user', content: 'x' }] },
    biasRange: { logit_bias: { 5: 101 }, messages: [{ role: 'user', content: 'x' }] },
    biasVocab: { logit_bias: { 999999999: 1 }, messages: [{ role: 'user', content: 'x' }] },
    schemaFeature: { response_format: { type: 'json_schema', json_schema: { name: 's', schema: { type: 'object', patternProperties: { '^x': {} } } } }, messages: [{ role: 'user', content: 'x' }] },
    toolName: { tools: [{ type: 'function', function: { name: 'get weather' } }], messages: [{ role: 'user', content: 'x' }] },
    toolChoiceUnknown: { tools, tool_choice: { type: 'function', function: { name: 'get_news' } }, messages: [{ role: 'user', content: 'x' }] },
    toolSchemaFeature: { tools: [{ type: 'function', function: { name: 'f', strict: true, parameters: { type: 'object', properties: { a: { not: {} } } } } }], tool_choice: 'required', messages: [{ role: 'user', content: 'x' }] },
    toolTurnNoID: { messages: [{ role: 'user', content: 'x' }, { role: 'tool', content: '1' }] },
  };
  for (const [name, body] of Object.entries(bad)) {
    try {
      await client.chat.completions.create({ ...base, ...body });
      out.errors[name] = { status: 200 };
    } catch (err) {
      out.errors[name] = { status: err.status, type: err.type, param: err.param, message: err.message };
    }
  }
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.log(JSON.stringify({ fatal: String(err), status: err.status, stack: err.stack }));
  process.exit(1);
});
