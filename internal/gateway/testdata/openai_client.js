// Drives Plinth's OpenAI-compatible API with the official "openai" npm
// package, unmodified: argv[2] is the base URL (…/openai/v1), argv[3] the
// API key. Prints "NODE OPENAI CLIENT OK" when every check passed.
const { OpenAI, AzureOpenAI } = require("openai");

function check(cond, what) {
  if (!cond) {
    throw new Error("check failed: " + what);
  }
}

async function main() {
  const [baseURL, apiKey, azureEndpoint] = process.argv.slice(2);
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

  // Non-streaming chat, with the raw response for headers.
  const { data: chat, response } = await client.chat.completions
    .create({ model: "gpt-4o", messages: [{ role: "user", content: "hello from node" }] })
    .withResponse();
  check(chat.choices[0].message.content === "a says: hello from node", "chat content: " + JSON.stringify(chat));
  check(chat.usage.prompt_tokens > 0 && chat.usage.completion_tokens > 0, "chat usage");
  check(response.headers.get("x-plinth-backend") === "a", "x-plinth-backend header");
  check(chat._request_id, "request id surfaced by the SDK");

  // Streaming chat without and with include_usage.
  let text = "";
  let sawUsage = false;
  const stream = await client.chat.completions.create({
    model: "gpt-4o",
    stream: true,
    messages: [{ role: "user", content: "stream these words" }],
  });
  for await (const chunk of stream) {
    if (chunk.usage) sawUsage = true;
    for (const c of chunk.choices) text += c.delta.content || "";
  }
  check(text === "a says: stream these words", "streamed text: " + text);
  check(!sawUsage, "usage chunk sent to a caller who did not ask for it");

  let usage = null;
  const stream2 = await client.chat.completions.create({
    model: "gpt-4o",
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: "user", content: "count me" }],
  });
  for await (const chunk of stream2) {
    if (chunk.usage) usage = chunk.usage;
  }
  check(usage && usage.prompt_tokens > 0 && usage.completion_tokens > 0, "stream usage: " + JSON.stringify(usage));

  // Embeddings: this SDK asks for base64 and decodes it.
  const emb = await client.embeddings.create({ model: "gpt-4o", input: "vector please" });
  check(emb.data.length === 1 && emb.data[0].embedding.length > 0 && typeof emb.data[0].embedding[0] === "number", "embedding");

  // The model list and errors in OpenAI's shape.
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  check(models.includes("gpt-4o"), "models: " + models);
  try {
    await client.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] });
    check(false, "unknown model accepted");
  } catch (e) {
    check(e instanceof OpenAI.NotFoundError && e.code === "model_not_found", "unknown model error: " + e);
  }
  try {
    await new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).models.list();
    check(false, "wrong key accepted");
  } catch (e) {
    check(e instanceof OpenAI.AuthenticationError, "wrong key error: " + e);
  }

  // The Azure OpenAI client, pointed at the gateway.
  const az = new AzureOpenAI({ endpoint: azureEndpoint, apiKey, apiVersion: "2024-10-21", deployment: "gpt-4o", maxRetries: 0 });
  const azChat = await az.chat.completions.create({ model: "", messages: [{ role: "user", content: "azure style" }] });
  check(azChat.choices[0].message.content === "a says: azure style", "azure chat: " + JSON.stringify(azChat));

  console.log("NODE OPENAI CLIENT OK");
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
