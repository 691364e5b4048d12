// Drives the gateway with the official openai client, for t/110-sdk.t.
//
//   node client.mjs BASE_URL API_KEY SCENARIO [MODEL]
//
// Scenarios: chat, stream (stream_options.include_usage), stream-helper
// (client.chat.completions.stream and its final completion), embeddings
// (the SDK's default base64 encoding, decoded by the SDK), models
// (models.list, every page), model (models.retrieve MODEL).
// Prints one JSON line: {"scenario": ..., "result": {...}} or, when the
// SDK throws an API error, {"scenario": ..., "error": {"class", "status",
// "code", "type", "param", "message"}}; exit status 0 for both.  Anything
// else (a connection error, a bug here) prints {"fatal": ...}, status 1.

import OpenAI from 'openai';

const [baseURL, apiKey, scenario, model = 'm'] = process.argv.slice(2);

if (!baseURL || !apiKey || !scenario) {
    console.error('usage: node client.mjs BASE_URL API_KEY SCENARIO [MODEL]');
    process.exit(2);
}

const client = new OpenAI({
    baseURL,
    apiKey,
    organization: null,
    project: null,
    maxRetries: 0,
    timeout: 10000,
});

const messages = [{ role: 'user', content: 'Say hello' }];

const scenarios = {
    async chat() {
        const c = await client.chat.completions.create({
            model,
            messages,
            max_tokens: 16,
        });
        return {
            id: c.id,
            object: c.object,
            model: c.model,
            content: c.choices[0].message.content,
            role: c.choices[0].message.role,
            finish_reason: c.choices[0].finish_reason,
            usage: c.usage,
        };
    },

    async stream() {
        const s = await client.chat.completions.create({
            model,
            messages,
            stream: true,
            stream_options: { include_usage: true },
        });
        const deltas = [];
        let chunks = 0;
        let usage = null;
        let finish = null;
        const objects = new Set();
        for await (const chunk of s) {
            chunks++;
            objects.add(chunk.object);
            if (chunk.usage) {
                usage = chunk.usage;
            }
            for (const ch of chunk.choices) {
                if (typeof ch.delta?.content === 'string'
                    && ch.delta.content !== '') {
                    deltas.push(ch.delta.content);
                }
                if (ch.finish_reason) {
                    finish = ch.finish_reason;
                }
            }
        }
        return {
            chunks,
            objects: [...objects],
            deltas,
            text: deltas.join(''),
            finish_reason: finish,
            usage,
        };
    },

    async 'stream-helper'() {
        const s = client.chat.completions.stream({
            model,
            messages,
            stream_options: { include_usage: true },
        });
        const deltas = [];
        s.on('content', (delta) => deltas.push(delta));
        const c = await s.finalChatCompletion();
        return {
            deltas,
            content: c.choices[0].message.content,
            finish_reason: c.choices[0].finish_reason,
            usage: c.usage ?? null,
        };
    },

    async embeddings() {
        const e = await client.embeddings.create({
            model,
            input: ['first text', 'second text'],
        });
        return {
            object: e.object,
            model: e.model,
            data: e.data.map((d) => ({
                index: d.index,
                embedding: Array.from(d.embedding),
            })),
            usage: e.usage,
        };
    },

    async models() {
        const ids = [];
        const objects = new Set();
        for await (const m of client.models.list()) {
            ids.push(m.id);
            objects.add(m.object);
        }
        return { ids, objects: [...objects] };
    },

    async model() {
        const m = await client.models.retrieve(model);
        return { id: m.id, object: m.object, owned_by: m.owned_by };
    },
};

const run = scenarios[scenario];

if (!run) {
    console.error(`unknown scenario ${scenario}`);
    process.exit(2);
}

try {
    const result = await run();
    console.log(JSON.stringify({ scenario, result }));
} catch (e) {
    if (e instanceof OpenAI.APIError && e.status) {
        console.log(JSON.stringify({
            scenario,
            error: {
                class: e.constructor.name,
                is_not_found: e instanceof OpenAI.NotFoundError,
                is_authentication: e instanceof OpenAI.AuthenticationError,
                status: e.status,
                code: e.code ?? null,
                type: e.type ?? null,
                param: e.param ?? null,
                message: e.message,
            },
        }));
    } else {
        console.log(JSON.stringify({
            scenario,
            fatal: `${e?.constructor?.name}: ${e?.message}`,
        }));
        process.exitCode = 1;
    }
}
