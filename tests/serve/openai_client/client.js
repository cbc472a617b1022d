// A real client of `destein serve`: the npm openai package (pinned in package-lock.json).
// usage: node client.js BASE_URL MODEL PROMPT  -> one JSON line with what the server said
// through the client's own parsing: a completion (greedy, with the steering extension), a
// streamed completion joined from its chunks, and a chat completion.
const path = require("path");
const modules = process.env.DESTEIN_OPENAI_MODULES || path.join(__dirname, "node_modules");
const OpenAI = require(path.join(modules, "openai")).default;

async function main() {
  const [baseURL, model, prompt] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey: process.env.DESTEIN_API_KEY || "none", maxRetries: 0, timeout: 60000 });
  const plain = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0 });
  // Extension fields travel in the body as given.
  const steered = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0,
                                                    steering: { vectors: "v", alpha: 0.7 } });
  const stream = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0, stream: true });
  let streamed = "";
  let finish = null;
  for await (const chunk of stream) {
    streamed += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  const chat = await client.chat.completions.create({ model, messages: [{ role: "user", content: prompt }],
                                                      max_tokens: 6, temperature: 0 });
  let error = null;
  try {
    await client.completions.create({ model, prompt, max_tokens: 4, steering: { vectors: "nope" } });
  } catch (e) {
    error = { status: e.status, message: e.message };
  }
  console.log(JSON.stringify({ plain: plain.choices[0].text, plain_finish: plain.choices[0].finish_reason,
                               usage: plain.usage, steered: steered.choices[0].text, streamed, stream_finish: finish,
                               chat: chat.choices[0].message.content, chat_object: chat.object, error }));
}

main().catch((e) => {
  console.error(`client.js: ${e.stack || e}`);
  process.exit(1);
});
