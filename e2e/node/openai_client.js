// The official OpenAI Node client against the router's HTTP API.
//
//   node openai_client.js BASE_URL MODEL EMBED_MODEL
//
// Prints one JSON object with what each call returned.
'use strict';
const OpenAI = require('openai');

async function main() {
  const [baseURL, model, embedModel] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey: process.env.LLMROUTER_API_KEY || 'no-key', maxRetries: 0 });
  const out = {};

  const models = await client.models.list();
  out.models = models.data.map((m) => m.id);

  const chat = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 12, temperature: 0,
  });
  out.chat = { content: chat.choices[0].message.content, finish: chat.choices[0].finish_reason, usage: chat.usage };

  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 12, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let chunks = 0;
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta && c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  out.stream = { content: text, chunks, usage, finish };

  const completion = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 5, temperature: 0 });
  out.completion = { text: completion.choices[0].text, usage: completion.usage };

  const emb = await client.embeddings.create({ model: embedModel, input: ['alpha', 'beta'] });
  out.embeddings = { count: emb.data.length, dim: emb.data[0].embedding.length };

  try {
    await client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] });
    out.notFound = { status: 200 };
  } catch (err) {
    out.notFound = { status: err.status, type: err.type, code: err.code, message: err.message };
  }
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.log(JSON.stringify({ fatal: String(err), status: err.status }));
  process.exit(1);
});
