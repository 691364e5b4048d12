// Drives gateway-held Responses and Conversations with the official openai
// client, for t/121-sdk-memory.t.
//
//   node memory.mjs BASE_URL API_KEY MODEL
//
// Runs, on MODEL: a response with instructions, its follow-up
// (previous_response_id), a fork of the first, a stream of a follow-up
// through client.responses.stream() (its accumulated snapshot, its
// response.completed and responses.retrieve() compared), a function call
// and its output, input items, a conversation (create, retrieve, update,
// items create / list / retrieve / delete, a response in it, delete), and
// the SDK's NotFoundError for an unknown id.
// Prints one JSON line: {"result": {...}} with what the test checks, or
// {"fatal": ...} and exit status 1.

import OpenAI from 'openai';
import { isDeepStrictEqual } from 'node:util';

const [baseURL, apiKey, model] = process.argv.slice(2);

if (!baseURL || !apiKey || !model) {
    console.error('usage: node memory.mjs BASE_URL API_KEY MODEL');
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

const tools = [{
    type: 'function',
    name: 'get_weather',
    description: 'The weather of a city',
    parameters: {
        type: 'object',
        properties: { city: { type: 'string' } },
        required: ['city'],
    },
    strict: false,
}];

// what the server sent, without what the SDK's parse helpers add
function plain(resp) {
    const o = JSON.parse(JSON.stringify(resp));
    delete o.output_text;
    delete o.output_parsed;
    for (const item of o.output || []) {
        for (const part of item.content || []) {
            delete part.parsed;
        }
        delete item.parsed_arguments;
    }
    return o;
}

// The output the events build, as the SDK's ResponseStream accumulates
// it (items added, parts added, text and arguments deltas), each item
// then replaced by its output_item.done: what a client that follows the
// events holds when the stream completes.
function accumulate(events) {
    const output = [];
    for (const ev of events) {
        switch (ev.type) {
        case 'response.output_item.added':
            output[ev.output_index] = JSON.parse(JSON.stringify(ev.item));
            break;
        case 'response.content_part.added':
            output[ev.output_index].content.push(
                JSON.parse(JSON.stringify(ev.part)));
            break;
        case 'response.output_text.delta':
            output[ev.output_index].content[ev.content_index].text
                += ev.delta;
            break;
        case 'response.function_call_arguments.delta':
            output[ev.output_index].arguments += ev.delta;
            break;
        case 'response.output_item.done': {
            const built = output[ev.output_index];
            const same = JSON.stringify({ ...built, status: null })
                         === JSON.stringify({ ...ev.item, status: null });
            output[ev.output_index] = same ? ev.item : { mismatch: ev.item,
                                                         built };
            break;
        }
        default:
            break;
        }
    }
    return output;
}

async function run() {
    const out = {};

    const r1 = await client.responses.create({
        model,
        instructions: 'Be brief.',
        input: 'hello',
    });
    out.first = { id: r1.id, text: r1.output_text, status: r1.status,
                  usage: r1.usage, instructions: r1.instructions };

    const r2 = await client.responses.create({
        model,
        previous_response_id: r1.id,
        input: 'and then?',
    });
    out.second = { id: r2.id, text: r2.output_text,
                   previous: r2.previous_response_id,
                   instructions: r2.instructions };

    const fork = await client.responses.create({
        model,
        previous_response_id: r1.id,
        input: 'fork',
    });
    out.fork = { id: fork.id, text: fork.output_text };

    // a stream: snapshot, completed event and stored response agree
    const stream = client.responses.stream({
        model,
        previous_response_id: r2.id,
        input: 'stream now',
    });
    const types = [];
    const seqs = [];
    const events = [];
    let completed = null;
    let deltas = '';
    for await (const ev of stream) {

        // a copy: the SDK builds its snapshot in the events' own objects
        events.push(JSON.parse(JSON.stringify(ev)));
        types.push(ev.type);
        seqs.push(ev.sequence_number);
        if (ev.type === 'response.output_text.delta') {
            deltas += ev.delta;
        }
        if (ev.type === 'response.completed') {
            completed = ev.response;
        }
    }
    const final = await stream.finalResponse();
    const stored = await client.responses.retrieve(final.id);
    out.stream = {
        id: final.id,
        text: final.output_text,
        deltas,
        types,
        seqs,
        snapshot_is_completed: isDeepStrictEqual(accumulate(events),
                                                 completed.output)
                               && isDeepStrictEqual(plain(final),
                                                    plain(completed)),
        completed_is_stored: isDeepStrictEqual(plain(completed),
                                               plain(stored)),
        usage: final.usage,
    };

    // a function call, answered in the next turn
    const c1 = await client.responses.create({
        model,
        tools,
        input: 'CALL get_weather for Paris',
    });
    const call = c1.output.find((i) => i.type === 'function_call');
    const c2 = await client.responses.create({
        model,
        tools,
        previous_response_id: c1.id,
        input: [{ type: 'function_call_output', call_id: call.call_id,
                  output: 'sunny' }],
    });
    out.tools = { name: call.name, arguments: call.arguments,
                  call_id: call.call_id, answer: c2.output_text };

    // a streamed call
    const cs = client.responses.stream({
        model, tools, input: 'CALL again',
    });
    let argsDone = null;
    let csCompleted = null;
    const csEvents = [];
    for await (const ev of cs) {
        csEvents.push(JSON.parse(JSON.stringify(ev)));
        if (ev.type === 'response.completed') {
            csCompleted = ev.response;
        }
        if (ev.type === 'response.function_call_arguments.done') {
            argsDone = ev.arguments;
        }
    }
    const csFinal = await cs.finalResponse();
    const csStored = await client.responses.retrieve(csFinal.id);
    out.stream_tools = {
        arguments: argsDone,
        item: csFinal.output[0].type,
        stored_equal: isDeepStrictEqual(plain(csFinal), plain(csStored))
                      && isDeepStrictEqual(accumulate(csEvents),
                                           csCompleted.output),
    };

    const items = [];
    for await (const it of client.responses.inputItems.list(r2.id)) {
        items.push(it);
    }
    out.input_items = items.map((i) => ({ type: i.type, role: i.role,
                                          id: i.id,
                                          text: i.content?.[0]?.text }));

    // conversations
    const conv = await client.conversations.create({
        metadata: { topic: 'sdk' },
        items: [{ type: 'message', role: 'user', content: 'Hi there' }],
    });
    const got = await client.conversations.retrieve(conv.id);
    const upd = await client.conversations.update(conv.id, {
        metadata: { topic: 'sdk2' },
    });
    const added = await client.conversations.items.create(conv.id, {
        items: [{ type: 'message', role: 'user', content: 'Second' }],
    });
    const inConv = await client.responses.create({
        model,
        conversation: conv.id,
        input: 'in the conversation',
    });
    const convItems = [];
    for await (const it of client.conversations.items.list(conv.id,
                                                         { order: 'asc' })) {
        convItems.push(it);
    }
    const one = await client.conversations.items.retrieve(
        added.data[0].id, { conversation_id: conv.id });
    const afterDelete = await client.conversations.items.delete(
        added.data[0].id, { conversation_id: conv.id });
    const left = [];
    for await (const it of client.conversations.items.list(conv.id)) {
        left.push(it.id);
    }
    const deleted = await client.conversations.delete(conv.id);
    out.conversation = {
        id: conv.id,
        object: conv.object,
        retrieved_equal: isDeepStrictEqual(conv, got),
        metadata: upd.metadata,
        added: added.data.length,
        response_conversation: inConv.conversation,
        response_text: inConv.output_text,
        items: convItems.map((i) => i.content?.[0]?.text),
        retrieved_item: one.content?.[0]?.text,
        delete_item_returns: afterDelete.id,
        left: left.length,
        deleted: deleted.deleted,
    };

    try {
        await client.responses.retrieve('resp_mgw_' + '0'.repeat(32));
        out.not_found = null;
    } catch (e) {
        out.not_found = { class: e.constructor.name, status: e.status,
                          code: e.code };
    }

    await client.responses.delete(fork.id);
    try {
        await client.responses.retrieve(fork.id);
        out.deleted_found = true;
    } catch (e) {
        out.deleted_found = e.status;
    }

    return out;
}

try {
    console.log(JSON.stringify({ result: await run() }));
} catch (e) {
    console.log(JSON.stringify({ fatal: String(e && e.stack || e),
                                 status: e && e.status }));
    process.exit(1);
}
