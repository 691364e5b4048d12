/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway-held Responses: a Responses request and its history as a chat
 * request (messages, parts, calls and their outputs, tools, parameters,
 * what is refused and named, the bounds), a chat completion as a
 * Responses object and its items, and turns chained through the items.
 * JSON is compared parsed; the tests write it with ' for ".
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "mg_responses.h"


#define MODEL  "prov-model"


static char        *qbuf[8];
static unsigned     qn;


/* the JSON text s with ' for ", in one of a few rotating buffers */

static const char *
q(const char *s)
{
    char    *p;
    size_t   i, n;

    n = strlen(s);
    p = malloc(n + 1);

    for (i = 0; i <= n; i++) {
        p[i] = (s[i] == '\'') ? '"' : s[i];
    }

    free(qbuf[qn % 8]);
    qbuf[qn++ % 8] = p;

    return p;
}


static json_t *
parse(const char *s, size_t len)
{
    return s ? json_loadb(s, len, JSON_ALLOW_NUL, NULL) : NULL;
}


/* got (len bytes) is the JSON exp (with ' for ") */

static int
same(const char *got, size_t len, const char *exp, const char *name)
{
    int      eq;
    json_t  *g, *e;

    g = parse(got, len);
    e = json_loads(q(exp), 0, NULL);

    eq = g && e && json_equal(g, e);

    if (!ok(eq, "%s", name)) {
        tap_diag_str("got", got, len);
        tap_diag_str("expected", q(exp), strlen(exp));
    }

    json_decref(g);
    json_decref(e);

    return eq;
}


/* one request through the translation */

typedef struct {
    int           rc;
    int           stream;
    mg_buf_t      chat;
    mg_buf_t      echo;
    mg_buf_t      input;
    mg_xerror_t   err;
} run_t;


static size_t  max_out;
static int     no_model;


static void
run_free(run_t *r)
{
    mg_buf_free(&r->chat);
    mg_buf_free(&r->echo);
    mg_buf_free(&r->input);
}


/*
 * body and hist with ' for "; every output is checked against the bound
 * the README promises: at most twice what was read plus a constant
 */

static void
translate(run_t *r, const char *body, const char *hist)
{
    char            *b, *h;
    size_t           in;
    mg_resp_opts_t   o;

    memset(r, 0, sizeof(run_t));
    memset(&o, 0, sizeof(o));

    o.model = no_model ? NULL : MODEL;
    o.model_len = no_model ? 0 : strlen(MODEL);
    o.max_out = max_out;

    b = strdup(q(body));
    h = hist ? strdup(q(hist)) : NULL;

    r->rc = mg_resp_request(b, strlen(b), h, h ? strlen(h) : 0, &o,
                            &r->chat, &r->echo, &r->input, &r->stream,
                            &r->err);

    in = strlen(b) + (h ? strlen(h) : 0);

    if (r->rc == MG_X_OK
        && (r->chat.len > 2 * in + 256 || r->input.len > 2 * in + 256))
    {
        ok(0, "bound: %zu and %zu bytes out of %zu", r->chat.len,
           r->input.len, in);
    }

    free(b);
    free(h);
}


/* body (+ hist) -> exp, the chat request */

static void
chat(const char *body, const char *hist, const char *exp, const char *name)
{
    run_t  r;

    translate(&r, body, hist);

    if (!ok(r.rc == MG_X_OK, "%s: translated", name)) {
        tap_diag("rc %d: %s (param %s)", r.rc, r.err.message,
                 r.err.param ? r.err.param : "NULL");
    }

    same(r.chat.data, r.chat.len, exp, name);

    run_free(&r);
}


/* the 400 naming param (NULL: none), its message holding what */

static void
refused(const char *body, const char *hist, const char *param,
    const char *what, const char *name)
{
    run_t  r;

    translate(&r, body, hist);

    ok(r.rc == MG_X_ERROR && r.err.status == 400
       && strcmp(r.err.type, "invalid_request_error") == 0,
       "%s: a 400 (rc %d, status %d)", name, r.rc, r.err.status);

    if (!ok(param ? (r.err.param && strcmp(r.err.param, param) == 0)
                  : r.err.param == NULL,
            "%s: param %s", name, param ? param : "NULL"))
    {
        tap_diag("param: %s", r.err.param ? r.err.param : "NULL");
    }

    if (!ok(strstr(r.err.message, what) != NULL, "%s: says \"%s\"", name,
            what))
    {
        tap_diag("message: %s", r.err.message);
    }

    ok(r.chat.len == 0 && r.echo.len == 0 && r.input.len == 0
       && r.stream == 0, "%s: nothing written", name);

    run_free(&r);
}


/* requests */

static void
test_messages(void)
{
    chat("{'model':'client','input':'Hi','instructions':'Be brief.'}",
         NULL,
         "{'model':'" MODEL "','messages':["
         "{'role':'system','content':'Be brief.'},"
         "{'role':'user','content':'Hi'}]}",
         "string input, instructions first as system");

    chat("{'model':'client','input':'Hi'}", NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'Hi'}]}",
         "no instructions: no system message");

    no_model = 1;
    chat("{'model':'client','input':'Hi'}", NULL,
         "{'model':'client','messages':[{'role':'user','content':'Hi'}]}",
         "no provider model: the client's");
    refused("{'model':1,'input':'Hi'}", NULL, "model", "model must be",
            "no provider model, model not a string");
    no_model = 0;

    chat("{'model':'m','input':["
         "{'role':'developer','content':'dev'},"
         "{'type':'message','role':'system','content':"
         "[{'type':'input_text','text':'sys'}]},"
         "{'role':'user','content':[{'type':'input_text','text':'a'},"
         "{'type':'input_text','text':'b'}]},"
         "{'type':'message','role':'assistant','id':'msg_1',"
         "'status':'completed','content':[{'type':'output_text',"
         "'text':'ok','annotations':[]}]},"
         "{'role':'assistant','content':[{'type':'output_text','text':'x',"
         "'annotations':[]},{'type':'refusal','refusal':'no'}]}]}",
         NULL,
         "{'model':'" MODEL "','messages':["
         "{'role':'developer','content':'dev'},"
         "{'role':'system','content':'sys'},"
         "{'role':'user','content':[{'type':'text','text':'a'},"
         "{'type':'text','text':'b'}]},"
         "{'role':'assistant','content':'ok'},"
         "{'role':'assistant','content':[{'type':'text','text':'x'},"
         "{'type':'refusal','refusal':'no'}]}]}",
         "message items: roles, one text a string, parts, refusal");

    chat("{'model':'m','input':[{'role':'user','content':["
         "{'type':'input_text','text':'see'},"
         "{'type':'input_image','image_url':'https://x/i.png'},"
         "{'type':'input_image','image_url':'data:image/png;base64,AA==',"
         "'detail':'low'},"
         "{'type':'input_file','file_data':'data:application/pdf;base64,"
         "AA==','filename':'a.pdf'},"
         "{'type':'input_audio','input_audio':{'data':'AA==',"
         "'format':'wav'}}]}]}",
         NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':["
         "{'type':'text','text':'see'},"
         "{'type':'image_url','image_url':{'url':'https://x/i.png'}},"
         "{'type':'image_url','image_url':{'url':"
         "'data:image/png;base64,AA==','detail':'low'}},"
         "{'type':'file','file':{'file_data':'data:application/pdf;base64,"
         "AA==','filename':'a.pdf'}},"
         "{'type':'input_audio','input_audio':{'data':'AA==',"
         "'format':'wav'}}]}]}",
         "user parts: text, images with detail, file data, audio");

    refused("{'model':'m','input':[{'role':'user','content':["
            "{'type':'input_image','file_id':'file-1'}]}]}", NULL,
            "input", "input_image file_id is not supported",
            "input_image file_id");
    refused("{'model':'m','input':[{'role':'user','content':["
            "{'type':'input_file','file_id':'file-1'}]}]}", NULL,
            "input", "file_id and file_url are not supported",
            "input_file file_id");
    refused("{'model':'m','input':[{'role':'user','content':["
            "{'type':'input_image','image_url':'https://x',"
            "'detail':'original'}]}]}", NULL,
            "input", "auto, low or high", "input_image detail original");
    refused("{'model':'m','input':[{'role':'system','content':["
            "{'type':'input_image','image_url':'https://x'}]}]}", NULL,
            "input", "a system message cannot hold a part of type "
            "\"input_image\"", "an image in a system message");
    refused("{'model':'m','input':[{'role':'user','content':["
            "{'type':'output_text','text':'x'}]}]}", NULL,
            "input", "input[0].content[0]: a user message cannot hold a "
            "part of type \"output_text\"", "output_text in a user message");
    refused("{'model':'m','input':[{'role':'tool','content':'x'}]}", NULL,
            "input", "input[0].role must be", "an unknown role");
    refused("{'model':'m','input':[{'role':'user','content':3}]}", NULL,
            "input", "input[0].content must be", "content not text");
    refused("{'model':'m','input':['x']}", NULL, "input",
            "input[0] must be an object", "an item not an object");
    refused("{'model':'m','input':3}", NULL, "input",
            "input must be a string or an array", "input not text");
    refused("{'model':'m'}", NULL, "input", "input is required",
            "no input, no history");
    refused("{'model':'m','instructions':'x','input':[]}", NULL, "input",
            "input is required", "instructions alone");
    refused("{'model':'m','instructions':3,'input':'x'}", NULL,
            "instructions", "instructions must be a string",
            "instructions not a string");
}


static void
test_calls(void)
{
    chat("{'model':'m','input':["
         "{'role':'user','content':'weather?'},"
         "{'type':'function_call','id':'fc_1','call_id':'call_a',"
         "'name':'get','arguments':'{\\'c\\':\\'Paris\\'}',"
         "'status':'completed'},"
         "{'type':'function_call','call_id':'call_b','name':'get',"
         "'arguments':'{}'},"
         "{'type':'function_call_output','call_id':'call_a',"
         "'output':'sunny'},"
         "{'type':'function_call_output','call_id':'call_b','output':["
         "{'type':'input_text','text':'rain'}]}]}",
         NULL,
         "{'model':'" MODEL "','messages':["
         "{'role':'user','content':'weather?'},"
         "{'role':'assistant','content':null,'tool_calls':["
         "{'id':'call_a','type':'function','function':{'name':'get',"
         "'arguments':'{\\'c\\':\\'Paris\\'}'}},"
         "{'id':'call_b','type':'function','function':{'name':'get',"
         "'arguments':'{}'}}]},"
         "{'role':'tool','tool_call_id':'call_a','content':'sunny'},"
         "{'role':'tool','tool_call_id':'call_b','content':["
         "{'type':'text','text':'rain'}]}]}",
         "calls in a row: one assistant turn; outputs: tool messages");

    chat("{'model':'m','input':["
         "{'role':'assistant','content':'Let me look.'},"
         "{'type':'function_call','call_id':'c1','name':'f',"
         "'arguments':'{}'},"
         "{'type':'function_call_output','call_id':'c1','output':'r'},"
         "{'type':'function_call','call_id':'c2','name':'f',"
         "'arguments':'{}'}]}",
         NULL,
         "{'model':'" MODEL "','messages':["
         "{'role':'assistant','content':'Let me look.','tool_calls':["
         "{'id':'c1','type':'function','function':{'name':'f',"
         "'arguments':'{}'}}]},"
         "{'role':'tool','tool_call_id':'c1','content':'r'},"
         "{'role':'assistant','content':null,'tool_calls':["
         "{'id':'c2','type':'function','function':{'name':'f',"
         "'arguments':'{}'}}]}]}",
         "a call after the assistant's text joins its turn; after a "
         "result it starts one");

    /* text after the calls in one answer: chat wants the calls followed
     * by their outputs, the text after them */

    chat("{'model':'m','input':[{'type':'function_call_output',"
         "'call_id':'c1','output':'r1'}]}",
         "[{'role':'user','content':'go'},"
         "{'type':'message','role':'assistant','content':[{'type':"
         "'output_text','text':'A','annotations':[]}]},"
         "{'type':'function_call','call_id':'c1','name':'f',"
         "'arguments':'{}'},"
         "{'type':'message','role':'assistant','content':[{'type':"
         "'output_text','text':'B','annotations':[]}]}]",
         "{'model':'" MODEL "','messages':["
         "{'role':'user','content':'go'},"
         "{'role':'assistant','content':'A','tool_calls':["
         "{'id':'c1','type':'function','function':{'name':'f',"
         "'arguments':'{}'}}]},"
         "{'role':'tool','tool_call_id':'c1','content':'r1'},"
         "{'role':'assistant','content':'B'}]}",
         "[msg, fc, msg] + [fco]: the text after the call follows its "
         "output");

    chat("{'model':'m','input':[{'type':'function_call_output',"
         "'call_id':'c1','output':'r1'},{'type':'function_call_output',"
         "'call_id':'c2','output':'r2'},{'role':'user','content':'next'}]}",
         "[{'role':'user','content':'go'},"
         "{'type':'function_call','call_id':'c1','name':'f',"
         "'arguments':'{}'},"
         "{'type':'message','role':'assistant','content':[{'type':"
         "'output_text','text':'B','annotations':[]}]},"
         "{'type':'function_call','call_id':'c2','name':'g',"
         "'arguments':'{}'}]",
         "{'model':'" MODEL "','messages':["
         "{'role':'user','content':'go'},"
         "{'role':'assistant','content':null,'tool_calls':["
         "{'id':'c1','type':'function','function':{'name':'f',"
         "'arguments':'{}'}},"
         "{'id':'c2','type':'function','function':{'name':'g',"
         "'arguments':'{}'}}]},"
         "{'role':'tool','tool_call_id':'c1','content':'r1'},"
         "{'role':'tool','tool_call_id':'c2','content':'r2'},"
         "{'role':'assistant','content':'B'},"
         "{'role':'user','content':'next'}]}",
         "[fc, msg, fc] + [fco, fco]: the calls one turn, the text after "
         "their outputs");

    refused("{'model':'m','input':[{'type':'function_call','call_id':'c',"
            "'name':'f'}]}", NULL, "input",
            "input[0]: a function_call needs call_id, name and arguments",
            "a call without arguments");
    refused("{'model':'m','input':[{'type':'function_call_output',"
            "'output':'x'}]}", NULL, "input",
            "input[0].call_id must be", "an output without call_id");
    refused("{'model':'m','input':[{'type':'function_call_output',"
            "'call_id':'c','output':[{'type':'input_image',"
            "'image_url':'https://x'}]}]}", NULL, "input",
            "input[0].output[0]: a function_call_output can send only "
            "input_text", "an output with an image");
}


static void
test_tools(void)
{
    chat("{'model':'m','input':'x','tools':[{'type':'function',"
         "'name':'get','description':'Get it.','parameters':{'type':"
         "'object','properties':{}},'strict':true},{'type':'function',"
         "'name':'bare','parameters':null,'strict':null}],"
         "'tool_choice':'required'}",
         NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}],"
         "'tools':[{'type':'function','function':{'name':'get',"
         "'description':'Get it.','parameters':{'type':'object',"
         "'properties':{}},'strict':true}},"
         "{'type':'function','function':{'name':'bare'}}],"
         "'tool_choice':'required'}",
         "function tools nested; nulls left out; tool_choice string");

    chat("{'model':'m','input':'x','tools':[{'type':'function',"
         "'name':'get'}],'tool_choice':{'type':'function','name':'get'},"
         "'parallel_tool_calls':false}", NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}],"
         "'tools':[{'type':'function','function':{'name':'get'}}],"
         "'tool_choice':{'type':'function','function':{'name':'get'}},"
         "'parallel_tool_calls':false}",
         "tool_choice function, parallel_tool_calls: sent with tools");

    chat("{'model':'m','input':'x','tools':[{'type':'function',"
         "'name':'a'}],'tool_choice':{'type':'allowed_tools',"
         "'mode':'auto','tools':[{'type':'function','name':'a'}]}}", NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}],"
         "'tools':[{'type':'function','function':{'name':'a'}}],"
         "'tool_choice':{'type':'allowed_tools','allowed_tools':{"
         "'mode':'auto','tools':[{'type':'function','function':"
         "{'name':'a'}}]}}}",
         "tool_choice allowed_tools");

    /* chat completions refuses tool_choice and parallel_tool_calls
     * without tools */

    chat("{'model':'m','input':'x','tool_choice':'none',"
         "'parallel_tool_calls':true}", NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}]}",
         "no tools: tool_choice none and parallel_tool_calls left out");

    chat("{'model':'m','input':'x','tools':[],'tool_choice':'auto',"
         "'parallel_tool_calls':false}", NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}]}",
         "tools []: tool_choice auto and parallel_tool_calls left out");

    refused("{'model':'m','input':'x','tools':[],'tool_choice':"
            "{'type':'function','name':'get'}}", NULL, "tool_choice",
            "needs tools", "no tools: tool_choice of a function refused");
    refused("{'model':'m','input':'x','tool_choice':'required'}", NULL,
            "tool_choice", "tool_choice \"required\" needs tools",
            "no tools: tool_choice required refused");
    refused("{'model':'m','input':'x','tool_choice':{'type':"
            "'allowed_tools','mode':'auto','tools':[{'type':'function',"
            "'name':'a'}]}}", NULL, "tool_choice", "needs tools",
            "no tools: tool_choice allowed_tools refused");

    refused("{'model':'m','input':'x','tool_choice':'sometimes'}", NULL,
            "tool_choice", "tool_choice must be", "tool_choice unknown");
    refused("{'model':'m','input':'x','tool_choice':{'type':"
            "'file_search'}}", NULL, "tool_choice",
            "\"file_search\" is not supported", "tool_choice built-in");
    refused("{'model':'m','input':'x','tool_choice':{'type':'function'}}",
            NULL, "tool_choice", "tool_choice.name", "tool_choice no name");
    refused("{'model':'m','input':'x','tool_choice':{'type':"
            "'allowed_tools','mode':'auto','tools':[{'type':'mcp',"
            "'server_label':'s'}]}}", NULL, "tool_choice",
            "tool_choice.tools[0]", "allowed_tools with a built-in");
    refused("{'model':'m','input':'x','tools':{}}", NULL, "tools",
            "tools must be an array", "tools not an array");
    refused("{'model':'m','input':'x','tools':[{'type':'function'}]}",
            NULL, "tools", "tools[0].name", "a function without a name");
}


static void
test_builtin_tools(void)
{
    size_t       i;
    char         body[256], what[128];

    static const char  *types[] = {
        "web_search", "web_search_preview", "file_search",
        "code_interpreter", "computer_use_preview", "mcp",
        "image_generation", "local_shell", "custom", "shell",
        "apply_patch", NULL
    };

    for (i = 0; types[i]; i++) {
        snprintf(body, sizeof(body), "{'model':'m','input':'x','tools':["
                 "{'type':'function','name':'f'},{'type':'%s'}]}",
                 types[i]);
        snprintf(what, sizeof(what), "tools[1]: the tool \"%s\" is not "
                 "supported", types[i]);

        refused(body, NULL, "tools", what, types[i]);
    }
}


static void
test_params(void)
{
    run_t  r;

    chat("{'model':'m','input':'x','max_output_tokens':100,"
         "'temperature':0.5,'top_p':0.9,'parallel_tool_calls':false,"
         "'user':'u1','metadata':{'k':'v'},'store':true,"
         "'previous_response_id':'resp_1','truncation':'auto',"
         "'service_tier':'flex','safety_identifier':'s',"
         "'prompt_cache_key':'pk','max_tool_calls':3,"
         "'stream_options':{'include_obfuscation':false},"
         "'background':false,'include':['message.input_image.image_url'],"
         "'prompt':null,'top_logprobs':0,'reasoning':{'effort':'low',"
         "'summary':null}}",
         NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}],"
         "'max_completion_tokens':100,'temperature':0.5,'top_p':0.9,"
         "'user':'u1','service_tier':'flex',"
         "'safety_identifier':'s','prompt_cache_key':'pk',"
         "'reasoning_effort':'low'}",
         "parameters: renamed, passed; metadata and the caller's left out, "
         "parallel_tool_calls too without tools");

    chat("{'model':'m','input':'x','conversation':{'id':'conv_1'}}", NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}]}",
         "conversation accepted, not sent");

    chat("{'model':'m','input':'x','text':{'format':{'type':'json_schema',"
         "'name':'out','schema':{'type':'object'},'strict':true,"
         "'description':'d'},'verbosity':'low'}}", NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}],"
         "'verbosity':'low','response_format':{'type':'json_schema',"
         "'json_schema':{'name':'out','description':'d','schema':"
         "{'type':'object'},'strict':true}}}",
         "text.format json_schema -> response_format; verbosity");

    chat("{'model':'m','input':'x','text':{'format':{'type':"
         "'json_object'}}}", NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}],"
         "'response_format':{'type':'json_object'}}",
         "text.format json_object");

    chat("{'model':'m','input':'x','text':{'format':{'type':'text'}}}",
         NULL,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}]}",
         "text.format text: nothing to send");

    translate(&r, "{'model':'m','input':'x','stream':true}", NULL);
    ok(r.rc == MG_X_OK && r.stream == 1, "stream: reported");
    same(r.chat.data, r.chat.len,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}],"
         "'stream':true,'stream_options':{'include_usage':true}}",
         "stream: sent, with the usage asked for");
    run_free(&r);

    translate(&r, "{'model':'m','input':'x','stream':false}", NULL);
    ok(r.rc == MG_X_OK && r.stream == 0, "stream false: reported");
    same(r.chat.data, r.chat.len,
         "{'model':'" MODEL "','messages':[{'role':'user','content':'x'}]}",
         "stream false: not sent");
    run_free(&r);

    refused("{'model':'m','input':'x','stream':'yes'}", NULL, "stream",
            "stream must be a boolean", "stream not a boolean");
    refused("{'model':'m','input':'x','max_output_tokens':0}", NULL,
            "max_output_tokens", "positive integer", "max_output_tokens 0");
    refused("{'model':'m','input':'x','text':{'format':{'type':'xml'}}}",
            NULL, "text.format", "text.format must be", "text.format xml");
    refused("{'model':'m','input':'x','text':{'format':{'type':"
            "'json_schema','name':'n'}}}", NULL, "text.format",
            "needs a name and a schema", "json_schema without a schema");
    refused("{'model':'m','input':'x','text':{'colour':'red'}}", NULL,
            "text", "text.colour", "text with an unknown member");
}


static void
test_refusals(void)
{
    refused("{'model':'m','input':'x','background':true}", NULL,
            "background", "background responses are not supported",
            "background");
    refused("{'model':'m','input':'x','background':1}", NULL,
            "background", "must be a boolean", "background not a boolean");
    refused("{'model':'m','input':'x','include':"
            "['reasoning.encrypted_content']}", NULL, "include",
            "encrypted reasoning", "include reasoning.encrypted_content");
    refused("{'model':'m','input':'x','include':"
            "['message.input_image.image_url','file_search_call.results']}",
            NULL, "include", "\"file_search_call.results\" is not",
            "include file_search_call.results");
    refused("{'model':'m','input':'x','include':"
            "['message.output_text.logprobs']}", NULL, "include",
            "message.output_text.logprobs", "include logprobs");
    refused("{'model':'m','input':'x','include':'all'}", NULL, "include",
            "include must be an array", "include not an array");
    refused("{'model':'m','input':'x','include':[1]}", NULL, "include",
            "include[0] must be a string", "include of a number");
    refused("{'model':'m','input':'x','prompt':{'id':'pmpt_1'}}", NULL,
            "prompt", "prompt is not supported", "prompt");
    refused("{'model':'m','input':'x','top_logprobs':2}", NULL,
            "top_logprobs", "top_logprobs is not supported", "top_logprobs");
    refused("{'model':'m','input':'x','context_management':[{'type':"
            "'compaction'}]}", NULL, "context_management",
            "context_management is not supported", "context_management");
    refused("{'model':'m','input':'x','reasoning':{'summary':'auto'}}",
            NULL, "reasoning.summary", "reasoning summaries",
            "reasoning.summary");
    refused("{'model':'m','input':'x','reasoning':{'generate_summary':"
            "'concise'}}", NULL, "reasoning.summary", "reasoning summaries",
            "reasoning.generate_summary");
    refused("{'model':'m','input':'x','reasoning':{'effort':'low',"
            "'budget':3}}", NULL, "reasoning", "reasoning.budget",
            "reasoning with an unknown member");
    refused("{'model':'m','input':'x','reasoning':'low'}", NULL,
            "reasoning", "reasoning must be an object",
            "reasoning not an object");
    refused("{'model':'m','input':'x','frequency_penalty':1}", NULL, NULL,
            "Unknown parameter: 'frequency_penalty'", "an unknown member");

    refused("{'model':'m','input':[{'type':'reasoning','id':'rs_1',"
            "'summary':[],'encrypted_content':'gAAA'}]}", NULL, "input",
            "input[0]: items of type \"reasoning\" cannot be sent",
            "a reasoning item");
    refused("{'model':'m','input':[{'role':'user','content':'a'},"
            "{'type':'item_reference','id':'msg_1'}]}", NULL, "input",
            "input[1]: items of type \"item_reference\"", "item_reference");
    refused("{'model':'m','input':[{'type':'web_search_call','id':'ws_1',"
            "'status':'completed'}]}", NULL, "input",
            "\"web_search_call\"", "a built-in tool's call item");
    refused("{'model':'m','input':[{'type':3}]}", NULL, "input",
            "input[0].type must be a string", "an item type not a string");
    refused("{'model':'m','input':'x'}",
            "[{'role':'user','content':'a'},{'type':'mcp_call','id':'m'}]",
            "previous_response_id", "history[1]: items of type \"mcp_call\"",
            "an unknown item in the history");

    refused("{'model':'m','input':'x'", NULL, NULL, "not valid JSON",
            "not JSON");
    refused("['x']", NULL, NULL, "must be a JSON object", "not an object");
}


static void
test_history_unreadable(void)
{
    run_t  r;

    translate(&r, "{'model':'m','input':'x'}", "{'not':'an array'}");

    ok(r.rc == MG_X_ERROR && r.err.status == 500
       && strcmp(r.err.type, "server_error") == 0 && r.chat.len == 0,
       "a history that is not an array: the gateway's 500");

    run_free(&r);
}


/* what the caller keeps: the fields to echo and the input items */

static void
test_echo_input(void)
{
    run_t  r;

    translate(&r, "{'model':'m','input':'Hi','instructions':'I',"
              "'tools':[{'type':'function','name':'f'}],'temperature':0.2,"
              "'max_output_tokens':50,'previous_response_id':'resp_0',"
              "'metadata':{'a':'b'},'store':false,'truncation':'auto',"
              "'conversation':'conv_9','text':{'format':{'type':'text'}},"
              "'stream':true}", NULL);

    same(r.echo.data, r.echo.len,
         "{'instructions':'I','max_output_tokens':50,"
         "'previous_response_id':'resp_0','store':false,'temperature':0.2,"
         "'text':{'format':{'type':'text'}},'tools':[{'type':'function',"
         "'name':'f'}],'truncation':'auto','metadata':{'a':'b'},"
         "'conversation':{'id':'conv_9'}}",
         "echo: what the client set, the conversation as {id}");

    same(r.input.data, r.input.len,
         "[{'type':'message','role':'user','content':[{'type':'input_text',"
         "'text':'Hi'}]}]",
         "input items: a string is a user message of one input_text");

    run_free(&r);

    translate(&r, "{'model':'m','conversation':{'id':'conv_2'},'input':["
              "{'role':'system','content':'s'},"
              "{'role':'assistant','content':'a'},"
              "{'role':'user','content':[{'type':'input_text','text':'u'}]},"
              "{'type':'message','role':'user','content':[{'type':"
              "'input_text','text':'v'}]},"
              "{'type':'function_call_output','call_id':'c','output':'o'}]}",
              NULL);

    same(r.echo.data, r.echo.len, "{'conversation':{'id':'conv_2'}}",
         "echo: a conversation object");

    same(r.input.data, r.input.len,
         "[{'type':'message','role':'system','content':[{'type':"
         "'input_text','text':'s'}]},"
         "{'type':'message','role':'assistant','content':[{'type':"
         "'output_text','text':'a','annotations':[]}]},"
         "{'type':'message','role':'user','content':[{'type':'input_text',"
         "'text':'u'}]},"
         "{'type':'message','role':'user','content':[{'type':'input_text',"
         "'text':'v'}]},"
         "{'type':'function_call_output','call_id':'c','output':'o'}]",
         "input items: messages typed, contents parts; others as sent");

    run_free(&r);

    /* a call with a string "content" of its own is still a call (it had
     * the message's rewrite, and strcmp() on its missing role: the fuzz
     * target found it) */

    translate(&r, "{'model':'m','input':[{'type':'function_call',"
              "'call_id':'c','name':'f','arguments':'{}','content':'x'},"
              "{'type':'function_call_output','call_id':'c','output':'o',"
              "'role':'assistant','content':'y'}]}", NULL);

    ok(r.rc == MG_X_OK, "input items: calls with a content translated");

    same(r.input.data, r.input.len,
         "[{'type':'function_call','call_id':'c','name':'f','arguments':"
         "'{}','content':'x'},{'type':'function_call_output','call_id':'c',"
         "'output':'o','role':'assistant','content':'y'}]",
         "input items: calls with a string content stored as they came");

    run_free(&r);
}


static void
test_bounds(void)
{
    run_t        r;
    size_t       full;
    const char  *body;

    body = "{'model':'m','input':'a long enough question to count',"
           "'instructions':'Be brief.','tools':[{'type':'function',"
           "'name':'f','parameters':{'type':'object'}}]}";

    translate(&r, body, "[{'role':'user','content':'earlier'},"
              "{'role':'assistant','content':'reply'}]");
    full = r.chat.len;
    ok(r.rc == MG_X_OK && full > 0, "bounds: translated unbounded");
    run_free(&r);

    max_out = full;
    translate(&r, body, "[{'role':'user','content':'earlier'},"
              "{'role':'assistant','content':'reply'}]");
    ok(r.rc == MG_X_OK && r.chat.len == full, "bounds: a cap that fits");
    run_free(&r);

    max_out = full - 1;
    translate(&r, body, "[{'role':'user','content':'earlier'},"
              "{'role':'assistant','content':'reply'}]");
    ok(r.rc == MG_X_ERROR && r.err.status == 400
       && mg_x_streq(r.err.code, "request_too_large")
       && strstr(r.err.message, "would exceed") != NULL
       && r.chat.len == 0 && r.echo.len == 0 && r.input.len == 0,
       "bounds: one byte less is a 400 request_too_large, nothing out");
    run_free(&r);

    max_out = 0;
}


/*
 * Every cap, wherever it falls: the whole request or a 400.  jansson goes
 * on after a key its callback refused, so a cap inside "reasoning_effort"
 * gave ':"low"}' without the key, and MG_X_OK (the fuzz target found it;
 * the other translators' bounded dumps had it too).
 */

static void
test_bounds_every_cap(void)
{
    int          bad;
    size_t       full, cap;
    json_t      *j;
    run_t        r;
    const char  *body;

    body = "{'model':'m','input':'hi','text':{'verbosity':'low'},"
           "'reasoning':{'effort':'low'}}";

    translate(&r, body, NULL);
    full = r.chat.len;
    ok(r.rc == MG_X_OK && full > 0, "every cap: translated unbounded");
    run_free(&r);

    bad = 0;

    for (cap = 1; cap <= full; cap++) {
        max_out = cap;
        translate(&r, body, NULL);

        if (r.rc == MG_X_OK) {
            j = json_loadb(r.chat.data, r.chat.len, 0, NULL);

            if (j == NULL || r.chat.len > cap || cap < full) {
                tap_diag("cap %zu: %.*s", cap, (int) r.chat.len,
                         r.chat.data);
                bad++;
            }

            json_decref(j);

        } else if (r.rc != MG_X_ERROR || r.err.status != 400
                   || !mg_x_streq(r.err.code, "request_too_large")
                   || r.chat.len != 0)
        {
            bad++;
        }

        run_free(&r);
    }

    max_out = 0;

    ok(bad == 0, "every cap up to %zu: the whole request or a 400", full);
}


/* many items, each the smallest there is: still at most twice the input */

static void
test_bounds_many(void)
{
    char    *body, *p;
    size_t   i, n;
    run_t    r;

    n = 20000;
    body = malloc(n * 80 + 64);
    p = body + sprintf(body, "{'model':'m','input':[");

    for (i = 0; i < n; i++) {
        p += sprintf(p, "%s", (i % 3 == 0) ? "{'role':'user','content':''},"
                      : (i % 3 == 1)
                        ? "{'type':'function_call','call_id':'','name':'',"
                          "'arguments':''},"
                        : "{'type':'function_call_output','call_id':'',"
                          "'output':''},");
    }

    sprintf(p - 1, "]}");

    /* translate() fails the test when past the bound */

    translate(&r, body, NULL);
    ok(r.rc == MG_X_OK && r.chat.len <= 2 * strlen(body),
       "bounds: %zu tiny items, %zu bytes in, %zu out", n, strlen(body),
       r.chat.len);
    run_free(&r);

    free(body);
}


/* answers */

static int
seq_id(void *data, const char *prefix, char *buf, size_t size)
{
    unsigned  *n = data;

    snprintf(buf, size, "%sT%u", prefix, (*n)++);

    return 0;
}


typedef struct {
    int           rc;
    mg_buf_t      res;
    mg_buf_t      items;
    mg_xerror_t   err;
} ans_t;


static void
answer(ans_t *a, const char *body, const char *echo, int ids)
{
    char                   *b, *e;
    unsigned                n;
    mg_resp_answer_opts_t   o;

    memset(a, 0, sizeof(ans_t));
    memset(&o, 0, sizeof(o));

    n = 0;
    b = strdup(q(body));
    e = echo ? strdup(q(echo)) : NULL;

    o.id = "resp_gw_1";
    o.model = "client-model";
    o.created_at = 1700000000;
    o.echo = e;
    o.echo_len = e ? strlen(e) : 0;
    o.item_id = ids ? seq_id : NULL;
    o.data = &n;

    a->rc = mg_resp_answer(b, strlen(b), &o, &a->res, &a->items, &a->err);

    free(b);
    free(e);
}


static void
ans_free(ans_t *a)
{
    mg_buf_free(&a->res);
    mg_buf_free(&a->items);
}


#define RESP_HEAD(status, incomplete)                                         \
    "{'id':'resp_gw_1','object':'response','created_at':1700000000,"          \
    "'status':'" status "','error':null,'incomplete_details':" incomplete "," \
    "'instructions':null,'max_output_tokens':null,'model':'client-model',"

#define RESP_DEFAULTS                                                         \
    "'parallel_tool_calls':true,'previous_response_id':null,"                 \
    "'reasoning':{'effort':null,'summary':null},'store':true,"                \
    "'temperature':null,'text':{'format':{'type':'text'}},"                   \
    "'tool_choice':'auto','tools':[],'top_p':null,'truncation':'disabled',"   \
    "'metadata':{}"

#define USAGE(in, cached, out, reasoning, total)                              \
    "'usage':{'input_tokens':" #in ",'input_tokens_details':{"                \
    "'cached_tokens':" #cached "},'output_tokens':" #out ","                  \
    "'output_tokens_details':{'reasoning_tokens':" #reasoning "},"            \
    "'total_tokens':" #total "}"

#define CHAT(message, finish, usage)                                          \
    "{'id':'chatcmpl-1','object':'chat.completion','created':1,"              \
    "'model':'prov','choices':[{'index':0,'message':" message ","             \
    "'finish_reason':'" finish "'}]" usage "}"


static void
test_answer_text(void)
{
    ans_t    a;
    json_t  *j;

    answer(&a, CHAT("{'role':'assistant','content':'Hello.'}", "stop",
                    ",'usage':{'prompt_tokens':10,'completion_tokens':3,"
                    "'total_tokens':13,'prompt_tokens_details':"
                    "{'cached_tokens':4},'completion_tokens_details':"
                    "{'reasoning_tokens':2}}"), NULL, 1);

    ok(a.rc == MG_X_OK, "answer: text");

    same(a.res.data, a.res.len,
         RESP_HEAD("completed", "null")
         "'output':[{'type':'message','id':'msg_T0','status':'completed',"
         "'role':'assistant','content':[{'type':'output_text','text':"
         "'Hello.','annotations':[]}]}],"
         RESP_DEFAULTS "," USAGE(10, 4, 3, 2, 13) "}",
         "answer: a text, the defaults, the usage in Responses' names");

    same(a.items.data, a.items.len,
         "[{'type':'message','id':'msg_T0','status':'completed',"
         "'role':'assistant','content':[{'type':'output_text','text':"
         "'Hello.','annotations':[]}]}]",
         "answer: the items are the output");

    ans_free(&a);

    /* ids from the response's own, when the caller gives no function */

    answer(&a, CHAT("{'role':'assistant','content':'a','tool_calls':["
                    "{'id':'call_1','type':'function','function':{'name':"
                    "'f','arguments':'{}'}}]}", "tool_calls", ""), NULL, 0);

    same(a.items.data, a.items.len,
         "[{'type':'message','id':'msg_gw_1_0','status':'completed',"
         "'role':'assistant','content':[{'type':'output_text','text':'a',"
         "'annotations':[]}]},{'type':'function_call','id':'fc_gw_1_1',"
         "'call_id':'call_1','name':'f','arguments':'{}',"
         "'status':'completed'}]",
         "answer: item ids made from the response id; text then calls");

    j = parse(a.res.data, a.res.len);

    ok(a.rc == MG_X_OK && j && json_object_get(j, "usage") == NULL,
       "answer: no usage in the chat answer, none in the response");

    json_decref(j);
    ans_free(&a);
}


static void
test_answer_shapes(void)
{
    ans_t  a;

    answer(&a, CHAT("{'role':'assistant','content':null,'tool_calls':["
                    "{'id':'call_1','type':'function','function':{'name':"
                    "'get','arguments':'{\\'c\\':1}'}},"
                    "{'id':'call_2','type':'function','function':{'name':"
                    "'put','arguments':''}}]}", "tool_calls",
                    ",'usage':{'prompt_tokens':5,'completion_tokens':7}"),
           NULL, 1);

    same(a.res.data, a.res.len,
         RESP_HEAD("completed", "null")
         "'output':[{'type':'function_call','id':'fc_T0','call_id':"
         "'call_1','name':'get','arguments':'{\\'c\\':1}','status':"
         "'completed'},{'type':'function_call','id':'fc_T1','call_id':"
         "'call_2','name':'put','arguments':'','status':'completed'}],"
         RESP_DEFAULTS "," USAGE(5, 0, 7, 0, 12) "}",
         "answer: calls only, one function_call item each; total summed");

    ans_free(&a);

    answer(&a, CHAT("{'role':'assistant','content':null,'refusal':"
                    "'I cannot.'}", "stop", ""), NULL, 1);

    same(a.items.data, a.items.len,
         "[{'type':'message','id':'msg_T0','status':'completed',"
         "'role':'assistant','content':[{'type':'refusal','refusal':"
         "'I cannot.'}]}]",
         "answer: a refusal part");

    ans_free(&a);

    answer(&a, CHAT("{'role':'assistant','content':'Once upon'}", "length",
                    ""), NULL, 1);

    same(a.res.data, a.res.len,
         RESP_HEAD("incomplete", "{'reason':'max_output_tokens'}")
         "'output':[{'type':'message','id':'msg_T0','status':'incomplete',"
         "'role':'assistant','content':[{'type':'output_text','text':"
         "'Once upon','annotations':[]}]}]," RESP_DEFAULTS "}",
         "answer: length is incomplete, max_output_tokens");

    ans_free(&a);

    answer(&a, CHAT("{'role':'assistant','content':''}", "content_filter",
                    ""), NULL, 1);

    same(a.res.data, a.res.len,
         RESP_HEAD("incomplete", "{'reason':'content_filter'}")
         "'output':[{'type':'message','id':'msg_T0','status':'incomplete',"
         "'role':'assistant','content':[{'type':'output_text','text':'',"
         "'annotations':[]}]}]," RESP_DEFAULTS "}",
         "answer: content_filter is incomplete, content_filter");

    ans_free(&a);

    answer(&a, CHAT("{'role':'assistant'}", "stop", ""), NULL, 1);

    same(a.items.data, a.items.len,
         "[{'type':'message','id':'msg_T0','status':'completed',"
         "'role':'assistant','content':[{'type':'output_text','text':'',"
         "'annotations':[]}]}]",
         "answer: nothing said is an empty text, never no output");

    ans_free(&a);

    answer(&a, CHAT("{'role':'assistant','content':[{'type':'text',"
                    "'text':'a'},{'type':'text','text':'b'}]}", "stop", ""),
           NULL, 1);

    same(a.items.data, a.items.len,
         "[{'type':'message','id':'msg_T0','status':'completed',"
         "'role':'assistant','content':[{'type':'output_text','text':'a',"
         "'annotations':[]},{'type':'output_text','text':'b',"
         "'annotations':[]}]}]",
         "answer: text parts, one output_text each");

    ans_free(&a);
}


/* a call without an id gets one made up, unique as its item's id */

static void
test_answer_call_ids(void)
{
    ans_t  a;

    answer(&a, CHAT("{'role':'assistant','content':null,'tool_calls':["
                    "{'type':'function','function':{'name':'f',"
                    "'arguments':'{}'}},{'id':'','type':'function',"
                    "'function':{'name':'g','arguments':'{}'}}]}",
                    "tool_calls", ""), NULL, 1);

    ok(a.rc == MG_X_OK, "answer: calls without ids answered");

    same(a.items.data, a.items.len,
         "[{'type':'function_call','id':'fc_T0','call_id':'call_fc_T0',"
         "'name':'f','arguments':'{}','status':'completed'},"
         "{'type':'function_call','id':'fc_T1','call_id':'call_fc_T1',"
         "'name':'g','arguments':'{}','status':'completed'}]",
         "answer: a call without an id, or with an empty one, gets "
         "call_<item id>");

    ans_free(&a);

    /* "" beside calls is no message, as the stream skips it */

    answer(&a, CHAT("{'role':'assistant','content':'','tool_calls':["
                    "{'id':'c1','type':'function','function':{'name':'f',"
                    "'arguments':'{}'}}]}", "tool_calls", ""), NULL, 1);

    same(a.items.data, a.items.len,
         "[{'type':'function_call','id':'fc_T0','call_id':'c1',"
         "'name':'f','arguments':'{}','status':'completed'}]",
         "answer: empty content beside calls makes no message");

    ans_free(&a);

    /* cut short after a call: the message ended as the call began */

    answer(&a, CHAT("{'role':'assistant','content':'Hm','tool_calls':["
                    "{'id':'c1','type':'function','function':{'name':'f',"
                    "'arguments':'{'}}]}", "length", ""), NULL, 1);

    same(a.items.data, a.items.len,
         "[{'type':'message','id':'msg_T0','status':'completed',"
         "'role':'assistant','content':[{'type':'output_text','text':'Hm',"
         "'annotations':[]}]},{'type':'function_call','id':'fc_T1',"
         "'call_id':'c1','name':'f','arguments':'{','status':"
         "'incomplete'}]",
         "answer incomplete: the message before the calls completed, the "
         "calls incomplete (as the stream)");

    ans_free(&a);
}


static void
test_answer_echo(void)
{
    ans_t  a;

    answer(&a, CHAT("{'role':'assistant','content':'ok'}", "stop", ""),
           "{'instructions':'I','max_output_tokens':50,"
           "'parallel_tool_calls':false,'previous_response_id':'resp_0',"
           "'reasoning':{'effort':'low'},'store':false,'temperature':0.2,"
           "'text':{'format':{'type':'json_object'}},'tool_choice':"
           "'required','tools':[{'type':'function','name':'f'}],"
           "'top_p':0.5,'truncation':'auto','user':'u','metadata':"
           "{'a':'b'},'service_tier':'flex','conversation':{'id':'c'}}", 1);

    same(a.res.data, a.res.len,
         "{'id':'resp_gw_1','object':'response','created_at':1700000000,"
         "'status':'completed','error':null,'incomplete_details':null,"
         "'instructions':'I','max_output_tokens':50,'model':'client-model',"
         "'output':[{'type':'message','id':'msg_T0','status':'completed',"
         "'role':'assistant','content':[{'type':'output_text','text':'ok',"
         "'annotations':[]}]}],'parallel_tool_calls':false,"
         "'previous_response_id':'resp_0','reasoning':{'effort':'low'},"
         "'store':false,'temperature':0.2,'text':{'format':{'type':"
         "'json_object'}},'tool_choice':'required','tools':[{'type':"
         "'function','name':'f'}],'top_p':0.5,'truncation':'auto',"
         "'user':'u','metadata':{'a':'b'},'service_tier':'flex',"
         "'conversation':{'id':'c'}}",
         "answer: the request's fields repeated");

    ans_free(&a);

    answer(&a, CHAT("{'role':'assistant','content':'ok'}", "stop", ""),
           "['not an object']", 1);

    ok(a.rc == MG_X_ERROR && a.err.status == 500 && a.res.len == 0,
       "answer: unreadable echo fields are the gateway's 500");

    ans_free(&a);
}


static void
test_answer_bad(void)
{
    size_t   i;
    ans_t    a;

    static const char  *bad[] = {
        "not json",
        "{'choices':[]}",
        "{'choices':[{'message':'x'}]}",
        "{'error':{'message':'boom'}}",
        "{'choices':[{'message':{'role':'assistant','content':7}}]}",
        "{'choices':[{'message':{'role':'assistant','tool_calls':{}}}]}",
        "{'choices':[{'message':{'role':'assistant','tool_calls':["
        "{'id':'c','function':{}}]}}]}",
        "{'choices':[{'message':{'role':'assistant','tool_calls':["
        "{'id':7,'function':{'name':'f'}}]}}]}",
        NULL
    };

    for (i = 0; bad[i]; i++) {
        answer(&a, bad[i], NULL, 1);

        ok(a.rc == MG_X_ERROR && a.err.status == 502 && a.err.retryable
           && a.res.len == 0 && a.items.len == 0,
           "answer: a bad chat answer is a 502: %s", bad[i]);

        ans_free(&a);
    }
}


/*
 * An item id that cannot be made (here a response id too long for the
 * default "msg_<id>_<n>"; a failing id function is the same) is out of
 * memory: a 500, nothing written, and nothing leaked (the message's parts
 * were, before the fuzz target found it).
 */

static void
test_answer_id_fails(void)
{
    int                     rc;
    char                    id[MG_RESP_ID_SIZE + 16];
    mg_buf_t                res, items;
    const char             *b;
    mg_xerror_t             err;
    mg_resp_answer_opts_t   o;

    memset(&o, 0, sizeof(o));
    memset(&res, 0, sizeof(mg_buf_t));
    memset(&items, 0, sizeof(mg_buf_t));

    memcpy(id, "resp_", 5);
    memset(id + 5, 'x', sizeof(id) - 6);
    id[sizeof(id) - 1] = '\0';

    o.id = id;
    o.model = "m";

    b = q(CHAT("{'role':'assistant','content':'hi'}", "stop", ""));

    rc = mg_resp_answer(b, strlen(b), &o, &res, &items, &err);

    ok(rc == MG_X_NOMEM && err.status == 500 && res.len == 0
       && items.len == 0,
       "answer: an item id that cannot be made is a 500, nothing written "
       "(rc %d)", rc);

    mg_buf_free(&res);
    mg_buf_free(&items);
}


/* streams */

/*
 * out's events as a JSON array of their data; each must be
 * "event: NAME\ndata: JSON\n\n" with type NAME and the next number
 */

static json_t *
events(const mg_buf_t *out, long long *seq, const char *name)
{
    char        *p, *end, *nl, *data, *stop;
    json_t      *a, *ev;
    const char  *type;

    a = json_array();
    p = out->data;
    end = out->data + out->len;

    while (p && p < end) {
        nl = memchr(p, '\n', end - p);

        if (nl == NULL || strncmp(p, "event: ", 7) != 0
            || end - nl < 7 || strncmp(nl + 1, "data: ", 6) != 0)
        {
            ok(0, "%s: an event at byte %zu", name,
               (size_t) (p - out->data));
            break;
        }

        data = nl + 7;
        stop = memmem(data, end - data, "\n\n", 2);

        if (stop == NULL) {
            ok(0, "%s: an event ends with an empty line", name);
            break;
        }

        ev = json_loadb(data, stop - data, 0, NULL);
        type = json_string_value(json_object_get(ev, "type"));

        if (type == NULL || strlen(type) != (size_t) (nl - p - 7)
            || strncmp(type, p + 7, nl - p - 7) != 0
            || json_integer_value(json_object_get(ev, "sequence_number"))
               != *seq)
        {
            ok(0, "%s: event %lld named by its type, numbered in turn",
               name, *seq);
            tap_diag_str("event", p, stop - p);
        }

        (*seq)++;
        json_array_append_new(a, ev);
        p = stop + 2;
    }

    return a;
}


/* the types of the events, joined by spaces */

static void
types(json_t *evs, char *buf, size_t size)
{
    size_t   i, n;
    json_t  *ev;

    buf[0] = '\0';
    n = 0;

    json_array_foreach(evs, i, ev) {
        n += snprintf(buf + n, n < size ? size - n : 0, "%s%s", i ? " " : "",
                      json_string_value(json_object_get(ev, "type")));
    }
}


typedef struct {
    int           rc;
    mg_buf_t      out;
    mg_buf_t      items;
    json_t       *evs;
    mg_xerror_t   err;
} str_t;


/* chunks: a JSON array (with ' for ") of chat chunks, fed one by one */

static void
stream(str_t *s, const char *chunks, const char *echo, const char *name)
{
    int                     rc;
    char                   *e;
    size_t                  i;
    json_t                 *a, *c;
    unsigned                n;
    long long               seq;
    mg_resp_stream_t        st;
    mg_resp_answer_opts_t   o;

    memset(s, 0, sizeof(str_t));
    memset(&o, 0, sizeof(o));

    n = 0;
    e = echo ? strdup(q(echo)) : NULL;

    o.id = "resp_gw_1";
    o.model = "client-model";
    o.created_at = 1700000000;
    o.echo = e;
    o.echo_len = e ? strlen(e) : 0;
    o.item_id = seq_id;
    o.data = &n;

    rc = mg_resp_stream_init(&st, &o, &s->err);
    free(e);

    a = json_loads(q(chunks), 0, NULL);

    json_array_foreach(a, i, c) {
        if (rc != MG_X_OK) {
            break;
        }

        rc = mg_resp_stream_chunk(&st, c, &s->out, &s->err);
    }

    if (rc == MG_X_OK) {
        rc = mg_resp_stream_end(&st, &s->out, &s->items, &s->err);
    }

    s->rc = rc;
    seq = 0;
    s->evs = events(&s->out, &seq, name);

    json_decref(a);
    mg_resp_stream_free(&st);
}


static void
str_free(str_t *s)
{
    mg_buf_free(&s->out);
    mg_buf_free(&s->items);
    json_decref(s->evs);
}


static void
same_json(json_t *got, const char *exp, const char *name)
{
    char    *g;
    json_t  *e;

    e = json_loads(q(exp), 0, NULL);

    if (!ok(got && e && json_equal(got, e), "%s", name)) {
        g = json_dumps(got, JSON_COMPACT);
        tap_diag_str("got", g, g ? strlen(g) : 0);
        tap_diag_str("expected", q(exp), strlen(exp));
        free(g);
    }

    json_decref(e);
}


#define CHUNK(delta, finish)                                                  \
    "{'id':'c','object':'chat.completion.chunk','created':1,'model':'p',"     \
    "'choices':[{'index':0,'delta':" delta ",'finish_reason':" finish "}]}"

#define MSG_ITEM(status, content)                                             \
    "{'type':'message','id':'msg_T0','status':'" status "',"                  \
    "'role':'assistant','content':[" content "]}"

#define TEXT_PART(text)                                                       \
    "{'type':'output_text','annotations':[],'text':'" text "'}"


static void
test_stream_text(void)
{
    str_t  s;

    stream(&s, "[" CHUNK("{'role':'assistant','content':''}", "null") ","
               CHUNK("{'content':'Hel'}", "null") ","
               CHUNK("{'content':'lo'}", "null") ","
               CHUNK("{}", "'stop'") ","
               "{'id':'c','object':'chat.completion.chunk','choices':[],"
               "'usage':{'prompt_tokens':3,'completion_tokens':2,"
               "'total_tokens':5}}]", NULL, "stream text");

    is_int(s.rc, MG_X_DONE, "stream text: done");

    same_json(s.evs, "["
        "{'type':'response.created','sequence_number':0,'response':"
        RESP_HEAD("in_progress", "null") "'output':[]," RESP_DEFAULTS "}},"
        "{'type':'response.in_progress','sequence_number':1,'response':"
        RESP_HEAD("in_progress", "null") "'output':[]," RESP_DEFAULTS "}},"
        "{'type':'response.output_item.added','sequence_number':2,"
        "'output_index':0,'item':" MSG_ITEM("in_progress", "") "},"
        "{'type':'response.content_part.added','sequence_number':3,"
        "'output_index':0,'item_id':'msg_T0','content_index':0,"
        "'part':" TEXT_PART("") "},"
        "{'type':'response.output_text.delta','sequence_number':4,"
        "'output_index':0,'item_id':'msg_T0','content_index':0,"
        "'delta':'Hel','logprobs':[]},"
        "{'type':'response.output_text.delta','sequence_number':5,"
        "'output_index':0,'item_id':'msg_T0','content_index':0,"
        "'delta':'lo','logprobs':[]},"
        "{'type':'response.output_text.done','sequence_number':6,"
        "'output_index':0,'item_id':'msg_T0','content_index':0,"
        "'text':'Hello','logprobs':[]},"
        "{'type':'response.content_part.done','sequence_number':7,"
        "'output_index':0,'item_id':'msg_T0','content_index':0,"
        "'part':" TEXT_PART("Hello") "},"
        "{'type':'response.output_item.done','sequence_number':8,"
        "'output_index':0,'item':" MSG_ITEM("completed",
                                            TEXT_PART("Hello")) "},"
        "{'type':'response.completed','sequence_number':9,'response':"
        RESP_HEAD("completed", "null") "'output':["
        MSG_ITEM("completed", TEXT_PART("Hello")) "]," RESP_DEFAULTS ","
        USAGE(3, 0, 2, 0, 5) "}}]",
        "stream text: every event, numbered from 0");

    same(s.items.data, s.items.len,
         "[" MSG_ITEM("completed", TEXT_PART("Hello")) "]",
         "stream text: the items to store");

    str_free(&s);
}


static void
test_stream_calls(void)
{
    char   buf[2048];
    str_t  s;

    stream(&s, "[" CHUNK("{'role':'assistant','content':'Let me'}", "null")
               "," CHUNK("{'tool_calls':[{'index':0,'id':'call_1','type':"
                         "'function','function':{'name':'get','arguments':"
                         "''}}]}", "null") ","
               CHUNK("{'tool_calls':[{'index':0,'function':{'arguments':"
                     "'{\\'a\\''}}]}", "null") ","
               CHUNK("{'tool_calls':[{'index':1,'id':'call_2','function':"
                     "{'name':'put','arguments':'{}'}}]}", "null") ","
               CHUNK("{'tool_calls':[{'index':0,'function':{'arguments':"
                     "':1}'}}]}", "null") ","
               CHUNK("{}", "'tool_calls'") "]",
           "{'tools':[{'type':'function','name':'get'}]}", "stream calls");

    is_int(s.rc, MG_X_DONE, "stream calls: done");

    types(s.evs, buf, sizeof(buf));
    is_str(buf, strlen(buf),
           "response.created response.in_progress "
           "response.output_item.added response.content_part.added "
           "response.output_text.delta response.output_text.done "
           "response.content_part.done response.output_item.done "
           "response.output_item.added "
           "response.function_call_arguments.delta "
           "response.output_item.added "
           "response.function_call_arguments.delta "
           "response.function_call_arguments.delta "
           "response.function_call_arguments.done "
           "response.output_item.done "
           "response.function_call_arguments.done "
           "response.output_item.done response.completed",
           "stream calls: the events in order");

    same_json(json_array_get(s.evs, 8),
              "{'type':'response.output_item.added','sequence_number':8,"
              "'output_index':1,'item':{'type':'function_call','id':'fc_T1',"
              "'status':'in_progress','arguments':'','call_id':'call_1',"
              "'name':'get'}}",
              "stream calls: a call's item added");

    same_json(json_array_get(s.evs, 12),
              "{'type':'response.function_call_arguments.delta',"
              "'sequence_number':12,'output_index':1,'item_id':'fc_T1',"
              "'delta':':1}'}",
              "stream calls: an interleaved delta is its call's");

    same_json(json_array_get(s.evs, 13),
              "{'type':'response.function_call_arguments.done',"
              "'sequence_number':13,'output_index':1,'item_id':'fc_T1',"
              "'name':'get','arguments':'{\\'a\\':1}'}",
              "stream calls: arguments done, whole");

    same(s.items.data, s.items.len,
         "[" MSG_ITEM("completed", TEXT_PART("Let me")) ","
         "{'type':'function_call','id':'fc_T1','status':'completed',"
         "'arguments':'{\\'a\\':1}','call_id':'call_1','name':'get'},"
         "{'type':'function_call','id':'fc_T2','status':'completed',"
         "'arguments':'{}','call_id':'call_2','name':'put'}]",
         "stream calls: the items, text then the calls");

    same_json(json_object_get(json_object_get(json_array_get(s.evs, 17),
                                              "response"), "tools"),
              "[{'type':'function','name':'get'}]",
              "stream calls: the request's tools repeated");

    ok(json_object_get(json_object_get(json_array_get(s.evs, 17),
                                       "response"), "usage") == NULL,
       "stream calls: no usage chunk, no usage");

    str_free(&s);
}


/* a streamed call without an id gets one made up, a late one ignored */

static void
test_stream_call_ids(void)
{
    str_t  s;

    stream(&s, "[" CHUNK("{'tool_calls':[{'index':0,'type':'function',"
                         "'function':{'name':'get','arguments':'{}'}}]}",
                         "null") ","
               CHUNK("{'tool_calls':[{'index':1,'id':'','function':"
                     "{'name':'put','arguments':''}}]}", "null") ","
               CHUNK("{'tool_calls':[{'index':1,'id':'late','function':"
                     "{'arguments':'{}'}}]}", "null") ","
               CHUNK("{}", "'tool_calls'") "]", NULL, "stream call ids");

    is_int(s.rc, MG_X_DONE, "stream call ids: done");

    same_json(json_object_get(json_array_get(s.evs, 2), "item"),
              "{'type':'function_call','id':'fc_T0','status':'in_progress',"
              "'arguments':'','call_id':'call_fc_T0','name':'get'}",
              "stream call ids: the id made up as the item is added");

    same(s.items.data, s.items.len,
         "[{'type':'function_call','id':'fc_T0','status':'completed',"
         "'arguments':'{}','call_id':'call_fc_T0','name':'get'},"
         "{'type':'function_call','id':'fc_T1','status':'completed',"
         "'arguments':'{}','call_id':'call_fc_T1','name':'put'}]",
         "stream call ids: no id or an empty one: call_<item id>; the "
         "id announced kept");

    str_free(&s);

    /* the same rule as the answer: see test_answer_call_ids */

    stream(&s, "[" CHUNK("{'content':'Hm'}", "null") ","
               CHUNK("{'tool_calls':[{'index':0,'id':'c1','function':"
                     "{'name':'f','arguments':'{'}}]}", "'length'") "]",
           NULL, "stream cut after a call");

    same(s.items.data, s.items.len,
         "[" MSG_ITEM("completed", TEXT_PART("Hm")) ","
         "{'type':'function_call','id':'fc_T1','status':'incomplete',"
         "'arguments':'{','call_id':'c1','name':'f'}]",
         "stream incomplete: the message before the calls completed, the "
         "calls incomplete (as the answer)");

    str_free(&s);
}


static void
test_stream_ends(void)
{
    char   buf[2048];
    str_t  s;

    stream(&s, "[" CHUNK("{'content':'Once'}", "null") ","
               CHUNK("{}", "'length'") "]", NULL, "stream length");

    types(s.evs, buf, sizeof(buf));
    ok(strstr(buf, "response.output_item.done response.incomplete") != NULL
       && strstr(buf, "response.completed") == NULL,
       "stream length: ends with response.incomplete");

    same_json(json_object_get(json_object_get(json_array_get(s.evs, 8),
                                              "response"),
                              "incomplete_details"),
              "{'reason':'max_output_tokens'}",
              "stream length: reason max_output_tokens");

    same(s.items.data, s.items.len,
         "[" MSG_ITEM("incomplete", TEXT_PART("Once")) "]",
         "stream length: the message incomplete");

    str_free(&s);

    stream(&s, "[" CHUNK("{'content':'x'}", "'content_filter'") "]", NULL,
           "stream filter");

    same_json(json_object_get(json_object_get(json_array_get(s.evs, 8),
                                              "response"),
                              "incomplete_details"),
              "{'reason':'content_filter'}",
              "stream content_filter: reason content_filter");

    str_free(&s);

    stream(&s, "[" CHUNK("{'refusal':'No'}", "null") ","
               CHUNK("{'refusal':'pe.'}", "'stop'") "]", NULL,
           "stream refusal");

    types(s.evs, buf, sizeof(buf));
    is_str(buf, strlen(buf),
           "response.created response.in_progress "
           "response.output_item.added response.content_part.added "
           "response.refusal.delta response.refusal.delta "
           "response.refusal.done response.content_part.done "
           "response.output_item.done response.completed",
           "stream refusal: refusal events");

    same_json(json_array_get(s.evs, 6),
              "{'type':'response.refusal.done','sequence_number':6,"
              "'output_index':0,'item_id':'msg_T0','content_index':0,"
              "'refusal':'Nope.'}", "stream refusal: done, whole");

    str_free(&s);

    stream(&s, "[" CHUNK("{'role':'assistant'}", "'stop'") "]", NULL,
           "stream empty");

    same(s.items.data, s.items.len, "[" MSG_ITEM("completed",
                                                  TEXT_PART("")) "]",
         "stream empty: an empty text, never no output");

    types(s.evs, buf, sizeof(buf));
    is_str(buf, strlen(buf),
           "response.created response.in_progress "
           "response.output_item.added response.content_part.added "
           "response.output_text.done response.content_part.done "
           "response.output_item.done response.completed",
           "stream empty: its events");

    str_free(&s);
}


static void
test_stream_misc(void)
{
    int                     rc;
    size_t                  len;
    json_t                 *c;
    mg_buf_t                out;
    mg_xerror_t             err;
    mg_resp_stream_t        st;
    mg_resp_answer_opts_t   o;

    memset(&o, 0, sizeof(o));
    memset(&out, 0, sizeof(mg_buf_t));

    o.id = "resp_x";
    o.model = "m";

    ok(mg_resp_stream_init(&st, &o, &err) == MG_X_OK, "stream: init");

    c = json_string("not a chunk");
    rc = mg_resp_stream_chunk(&st, c, &out, &err);
    ok(rc == MG_X_ERROR && err.status == 502 && out.len == 0,
       "stream: a chunk that is not an object is a 502, nothing out");
    json_decref(c);

    /* a failure is final (test_stream_fail): a new stream goes on */

    mg_resp_stream_free(&st);
    ok(mg_resp_stream_init(&st, &o, &err) == MG_X_OK, "stream: init again");

    c = json_loads(q(CHUNK("{'content':'a'}", "'stop'")), 0, NULL);
    rc = mg_resp_stream_chunk(&st, c, &out, &err);
    json_decref(c);

    rc = mg_resp_stream_end(&st, &out, NULL, &err);
    len = out.len;
    ok(rc == MG_X_DONE && strstr(out.data, "msg_x_0") != NULL,
       "stream: item ids made from the response id");

    ok(mg_resp_stream_end(&st, &out, NULL, &err) == MG_X_DONE
       && out.len == len, "stream: a second end writes nothing");

    mg_resp_stream_free(&st);
    mg_buf_free(&out);

    o.echo = "[1]";
    o.echo_len = 3;

    ok(mg_resp_stream_init(&st, &o, &err) == MG_X_ERROR && err.status == 500,
       "stream: unreadable echo fields are the gateway's 500");

    mg_resp_stream_free(&st);
}


/*
 * A backend's error object in the stream is a 502 with its message; a
 * failure is final, later calls repeating it and writing nothing; and
 * mg_resp_stream_fail() ends the stream with response.failed.
 */

static void
test_stream_fail(void)
{
    int                     rc;
    char                    buf[2048];
    json_t                 *c, *evs, *res;
    mg_buf_t                out, items;
    long long               seq;
    mg_xerror_t             err;
    mg_resp_stream_t        st;
    mg_resp_answer_opts_t   o;

    memset(&o, 0, sizeof(o));
    memset(&out, 0, sizeof(mg_buf_t));
    memset(&items, 0, sizeof(mg_buf_t));

    o.id = "resp_f";
    o.model = "m";

    (void) mg_resp_stream_init(&st, &o, &err);

    c = json_loads(q(CHUNK("{'content':'Hi'}", "null")), 0, NULL);
    rc = mg_resp_stream_chunk(&st, c, &out, &err);
    json_decref(c);
    ok(rc == MG_X_OK, "stream fail: a first chunk");

    seq = 0;
    json_decref(events(&out, &seq, "stream fail: before"));

    c = json_loads(q("{'error':{'message':'overloaded','type':'x',"
                     "'code':null}}"), 0, NULL);
    rc = mg_resp_stream_chunk(&st, c, &out, &err);
    json_decref(c);

    ok(rc == MG_X_ERROR && err.status == 502
       && strcmp(err.type, "server_error") == 0
       && strstr(err.message, "overloaded") != NULL,
       "stream fail: an error chunk is a 502 with the provider's message "
       "(rc %d: %s)", rc, err.message);

    c = json_loads(q(CHUNK("{'tool_calls':[{'index':0,'id':'c','function':"
                           "{'name':'f','arguments':'{}'}}]}", "'stop'")),
                   0, NULL);
    memset(&err, 0, sizeof(mg_xerror_t));
    rc = mg_resp_stream_chunk(&st, c, &out, &err);
    json_decref(c);

    ok(rc == MG_X_ERROR && err.status == 502
       && strstr(err.message, "overloaded") != NULL,
       "stream fail: a chunk after the failure: the same error");

    memset(&err, 0, sizeof(mg_xerror_t));
    rc = mg_resp_stream_end(&st, &out, &items, &err);

    ok(rc == MG_X_ERROR && err.status == 502 && items.len == 0,
       "stream fail: the end after the failure: the same error");

    rc = mg_resp_stream_fail(&st, "The model backend failed: overloaded",
                             &out, &err);
    is_int(rc, MG_X_DONE, "stream fail: ended");

    seq = 0;
    evs = events(&out, &seq, "stream fail");
    types(evs, buf, sizeof(buf));

    is_str(buf, strlen(buf),
           "response.created response.in_progress "
           "response.output_item.added response.content_part.added "
           "response.output_text.delta response.failed",
           "stream fail: nothing after the failure but response.failed");

    res = json_object_get(json_array_get(evs, 5), "response");

    ok(json_integer_value(json_object_get(json_array_get(evs, 5),
                                          "sequence_number")) == 5
       && mg_x_streq(json_string_value(json_object_get(res, "status")),
                     "failed"),
       "stream fail: response.failed numbered next, status failed");

    same_json(json_object_get(res, "error"),
              "{'code':'server_error','message':'The model backend failed: "
              "overloaded'}", "stream fail: the error");

    ok(json_array_size(json_object_get(res, "output")) == 1,
       "stream fail: the output so far");

    json_decref(evs);

    rc = mg_resp_stream_fail(&st, NULL, &out, &err);
    ok(rc == MG_X_DONE && seq == 6, "stream fail: once");

    seq = 0;
    evs = events(&out, &seq, "stream fail: again");
    ok(seq == 6, "stream fail: a second fail writes nothing");
    json_decref(evs);

    mg_resp_stream_free(&st);
    mg_buf_free(&out);
    mg_buf_free(&items);

    /* cut before anything was said: created, then failed */

    (void) mg_resp_stream_init(&st, &o, &err);
    rc = mg_resp_stream_fail(&st, NULL, &out, &err);

    seq = 0;
    evs = events(&out, &seq, "stream fail: at once");
    types(evs, buf, sizeof(buf));

    ok(rc == MG_X_DONE && strcmp(buf, "response.created "
                                 "response.in_progress response.failed")
                          == 0,
       "stream fail: at once: created, in_progress, failed");

    same_json(json_object_get(json_object_get(json_array_get(evs, 2),
                                              "response"), "error"),
              "{'code':'server_error','message':'The model backend "
              "failed.'}", "stream fail: at once: a generic message");

    json_decref(evs);

    ok(mg_resp_stream_end(&st, &out, NULL, &err) == MG_X_DONE,
       "stream fail: the end after it writes nothing more");

    mg_resp_stream_free(&st);
    mg_buf_free(&out);
}


/*
 * What a stream writes is a small multiple of what it reads: each delta
 * once, the whole text again in its done events and the final response
 */

static void
test_stream_bound(void)
{
    int                     rc;
    char                   *d;
    size_t                  i, in;
    json_t                 *c;
    mg_buf_t                out;
    mg_xerror_t             err;
    mg_resp_stream_t        st;
    mg_resp_answer_opts_t   o;

    memset(&o, 0, sizeof(o));
    memset(&out, 0, sizeof(mg_buf_t));

    o.id = "resp_b";
    o.model = "m";

    rc = mg_resp_stream_init(&st, &o, &err);
    in = 0;

    c = json_loads(q(CHUNK("{'content':'x'}", "null")), 0, NULL);

    for (i = 0; rc == MG_X_OK && i < 5000; i++) {
        d = json_dumps(c, JSON_COMPACT);
        in += strlen(d) + 8;            /* as "data: ...\n\n" */
        free(d);

        rc = mg_resp_stream_chunk(&st, c, &out, &err);
    }

    json_decref(c);

    if (rc == MG_X_OK) {
        rc = mg_resp_stream_end(&st, &out, NULL, &err);
    }

    ok(rc == MG_X_DONE && out.len <= 2 * in + 4096,
       "stream bound: %zu bytes out of %zu read", out.len, in);

    mg_resp_stream_free(&st);
    mg_buf_free(&out);
}


/*
 * Three turns chained as the gateway will chain them: each turn's history
 * is the input and output items stored so far.  A call made in turn 1 is
 * answered in turn 2; turn 1's instructions are gone from turn 2.
 */

static void
append_items(mg_buf_t *hist, const mg_buf_t *items)
{
    json_t  *h, *it;

    h = hist->len ? parse(hist->data, hist->len) : json_array();
    it = parse(items->data, items->len);

    json_array_extend(h, it);
    mg_buf_reset(hist);
    (void) mg_x_dump(h, hist, 0);

    json_decref(it);
    json_decref(h);
}


static void
test_turns(void)
{
    run_t       r;
    ans_t       a;
    mg_buf_t    hist;
    unsigned    n;

    memset(&hist, 0, sizeof(mg_buf_t));
    n = 0;

    /* turn 1: the model calls a function */

    translate(&r, "{'model':'m','instructions':'Use tools.','input':"
              "'Weather in Paris?','tools':[{'type':'function','name':"
              "'weather','parameters':{'type':'object'}}]}", NULL);

    same(r.chat.data, r.chat.len,
         "{'model':'" MODEL "','messages':["
         "{'role':'system','content':'Use tools.'},"
         "{'role':'user','content':'Weather in Paris?'}],"
         "'tools':[{'type':'function','function':{'name':'weather',"
         "'parameters':{'type':'object'}}}]}",
         "turn 1: the chat request");

    append_items(&hist, &r.input);
    run_free(&r);

    answer(&a, CHAT("{'role':'assistant','content':null,'tool_calls':["
                    "{'id':'call_9','type':'function','function':{'name':"
                    "'weather','arguments':'{\\'city\\':\\'Paris\\'}'}}]}",
                    "tool_calls", ""), NULL, 1);
    append_items(&hist, &a.items);
    ans_free(&a);

    /* turn 2: the result, other instructions */

    {
        char  *h;

        h = mg_x_strndup(hist.data, hist.len);

        /* translate() reads ' as ": the history has none of its own */

        translate(&r, "{'model':'m','instructions':'Answer in French.',"
                  "'previous_response_id':'resp_gw_1','input':[{'type':"
                  "'function_call_output','call_id':'call_9','output':"
                  "'sunny'}]}", h);
        free(h);
    }

    same(r.chat.data, r.chat.len,
         "{'model':'" MODEL "','messages':["
         "{'role':'system','content':'Answer in French.'},"
         "{'role':'user','content':'Weather in Paris?'},"
         "{'role':'assistant','content':null,'tool_calls':[{'id':'call_9',"
         "'type':'function','function':{'name':'weather','arguments':"
         "'{\\'city\\':\\'Paris\\'}'}}]},"
         "{'role':'tool','tool_call_id':'call_9','content':'sunny'}]}",
         "turn 2: the call and its result round trip; only this turn's "
         "instructions");

    append_items(&hist, &r.input);
    run_free(&r);

    answer(&a, CHAT("{'role':'assistant','content':'Il fait beau.'}",
                    "stop", ""), NULL, 1);
    append_items(&hist, &a.items);
    ans_free(&a);

    /* turn 3: no instructions at all */

    {
        char  *h;

        h = mg_x_strndup(hist.data, hist.len);
        translate(&r, "{'model':'m','input':'Thanks'}", h);
        free(h);
    }

    same(r.chat.data, r.chat.len,
         "{'model':'" MODEL "','messages':["
         "{'role':'user','content':'Weather in Paris?'},"
         "{'role':'assistant','content':null,'tool_calls':[{'id':'call_9',"
         "'type':'function','function':{'name':'weather','arguments':"
         "'{\\'city\\':\\'Paris\\'}'}}]},"
         "{'role':'tool','tool_call_id':'call_9','content':'sunny'},"
         "{'role':'assistant','content':'Il fait beau.'},"
         "{'role':'user','content':'Thanks'}]}",
         "turn 3: no instructions carried over; the whole history");

    run_free(&r);
    mg_buf_free(&hist);
    (void) n;
}


int
main(void)
{
    unsigned  i;

    test_messages();
    test_calls();
    test_tools();
    test_builtin_tools();
    test_params();
    test_refusals();
    test_history_unreadable();
    test_echo_input();
    test_bounds();
    test_bounds_every_cap();
    test_bounds_many();

    test_answer_text();
    test_answer_shapes();
    test_answer_call_ids();
    test_answer_echo();
    test_answer_bad();
    test_answer_id_fails();

    test_stream_text();
    test_stream_calls();
    test_stream_call_ids();
    test_stream_ends();
    test_stream_misc();
    test_stream_fail();
    test_stream_bound();

    test_turns();

    for (i = 0; i < 8; i++) {
        free(qbuf[i]);
    }

    return tap_done();
}
