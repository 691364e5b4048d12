#!/usr/bin/perl

# The OpenAI API surface of the gateway: location prefixes and backend path
# prefixes, GET /models, model aliases (only the model value rewritten, the
# rest of the body byte for byte), the error contract, the headers sent to
# backends and passed back to clients, pass-through of backend 4xx, keys
# kept out of logs and responses, and the $model_gateway_* variables.
#
# The file is byte-oriented: no `use utf8`, so string literals holding
# non-ASCII characters are UTF-8 byte strings, exactly what goes on the wire.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $dir = $t->dir;

my $MAIN_KEY = 'sk-main-backend-KEY-7777';
my $SECRET   = 'sk-test-SECRET-1234567890';

# surrounding whitespace in key files is ignored
open my $kf, '>', "$dir/main.key" or die;
print $kf "  $MAIN_KEY \n\n";
close $kf;
open $kf, '>', "$dir/secret.key" or die;
print $kf "$SECRET\n";
close $kf;

###########################################################################
# mocks

# main: answers with a body naming the request, so the client's copy can be
# compared byte for byte
$t->mock('main', handler => sub {
    my $r = shift;
    return {
        status  => 200,
        headers => [['Content-Type', 'application/json']],
        body    => qq({"id":"main-$r->{n}","object":"chat.completion",)
                 . qq("path":"$r->{path}","note":"caf\xc3\xa9 \\u00e9"}),
    };
});

$t->mock('second', handler => sub {
    my $r = shift;
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => qq({"id":"second-$r->{n}"}) };
});

my @BACKEND_HEADERS = (
    ['Content-Type', 'application/json'],
    ['Set-Cookie', 'sid=backend-cookie; Path=/'],
    ['OpenAI-Organization', 'org-backend'],
    ['OpenAI-Project', 'proj-backend'],
    ['X-Request-Id', 'req-abc-123'],
    ['x-ratelimit-remaining-requests', '99'],
    ['x-ratelimit-limit-tokens', '40000'],
    ['openai-processing-ms', '42'],
    ['X-Other', 'other-value'],
);
my $HDRS_BODY = '{"id":"hdrs","object":"chat.completion","choices":[]}';
$t->mock('hdrs', handler => sub {
    return { status => 200, headers => [@BACKEND_HEADERS],
             body => $HDRS_BODY };
});

# pass-through: the status the client asks for in X-Want-Status
sub pt_body {
    my $st = shift;
    return qq({ "error" : {"message": "Invalid 'temperature' ($st) \xe2\x80\x93 )
         . qq(caf\xc3\xa9 \\"x\\"", "type": "invalid_request_error", )
         . qq("param": "temperature", "code": "invalid_value_$st"} }\n);
}
$t->mock('pt', handler => sub {
    my $r = shift;
    my $st = $r->{headers}{'x-want-status'} // 400;
    return { status => $st, headers => [['Content-Type', 'application/json']],
             body => pt_body($st) };
});

# auth, auth2: reject the key and echo it (as real providers do), in the
# body and in headers (two backends, so that whatever the gateway remembers
# about a backend that rejected its key cannot affect the second case)
my $auth_handler = sub {
    my $r = shift;
    my $st = $r->{headers}{'x-want-status'} // 401;
    my ($key) = ($r->{headers}{authorization} // '') =~ /^Bearer (.*)$/;
    $key //= '';
    return {
        status  => $st,
        headers => [['Content-Type', 'application/json'],
                    ['X-Echo-Key', $key],
                    ['Set-Cookie', "k=$key"],
                    ['WWW-Authenticate', qq(Bearer realm="$key")]],
        body    => qq({"error":{"message":"Incorrect API key provided: $key.",)
                 . qq("type":"invalid_request_error","param":null,)
                 . qq("code":"invalid_api_key"}}),
    };
};
$t->mock('auth', handler => $auth_handler);
$t->mock('auth2', handler => $auth_handler);

$t->mock('fa', handler => sub {
    return { status => 503, headers => [['Content-Type', 'application/json']],
             body => '{"error":{"message":"fa is overloaded"}}' };
});
$t->mock('fb', handler => sub {
    my $r = shift;
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => qq({"id":"fb-$r->{n}","object":"chat.completion"}) };
});

my @MOCKS = qw(main second hdrs pt auth auth2 fa fb);

###########################################################################
# configuration

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format gw '$http_x_tag $status "$model_gateway_model" '
                  '"$model_gateway_backend" [$model_gateway_attempts]';
    access_log %%DIR%%/gw.log gw;

    # the tests' own correlation headers, on top of the default allowlist
    model_gateway_forward_headers X-Tag X-Want-Status X-Custom-Trace X-Fixed;

    model_gateway_backend main {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_main%%/prefix/v1;
        key_file %%DIR%%/main.key;
        header X-Fixed gateway-fixed;
        model plain-model;
        model fast gpt-4o-mini;
        model emb-model;
        model shared-model;
        model org/slashy-model;
        model emb-only text-embedding-3-small api=embeddings;
        model chat-only api=chat;
    }

    model_gateway_backend second {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_second%%/v1;
        model shared-model;
        model second-only;
    }

    model_gateway_backend hdrs {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_hdrs%%/v1;
        model hdr-model;
    }

    model_gateway_backend pt {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_pt%%/v1;
        model pt-model;
    }

    model_gateway_backend auth {
        type openai;
        url http://127.0.0.1:%%PORT_auth%%/v1;
        key_file %%DIR%%/secret.key;
        model auth-model;
    }

    model_gateway_backend auth2 {
        type openai;
        url http://127.0.0.1:%%PORT_auth2%%/v1;
        key_file %%DIR%%/secret.key;
        model auth-model-2;
    }

    model_gateway_backend fa {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_fa%%/v1;
        model failover-model;
        weight 1000;
    }

    model_gateway_backend fb {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_fb%%/v1;
        model failover-model;
        weight 1;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        location /v1/ {
            model_gateway;
        }

        location /llm/ {
            model_gateway;
        }

        location /small/ {
            model_gateway;
            model_gateway_max_body_size 1k;
        }
    }
}
EOF

$t->run;

my %VISIBLE = map { $_ => 1 } qw(plain-model fast emb-model shared-model
    org/slashy-model second-only hdr-model pt-model auth-model auth-model-2
    failover-model emb-only chat-only);

# every response is kept, to look for the secret key at the end
my @RAW;
sub req {
    my %o = @_;
    my $r = $t->request(%o);
    push @RAW, $r->{raw} // '';
    return $r;
}

sub by_tag {
    my ($mock, $tag) = @_;
    return [grep { ($_->{headers}{'x-tag'} // '') eq $tag }
        @{$t->mock_requests($mock)}];
}

sub chat_body {
    my ($model, %extra) = @_;
    my $b = qq({"model":"$model","messages":[{"role":"user","content":"hi"}]);
    $b .= ",\"$_\":$extra{$_}" for sort keys %extra;
    return "$b}";
}

sub post {
    my ($path, $body, %o) = @_;
    my @h = (['Content-Type', 'application/json'], @{$o{headers} || []});
    return req(method => 'POST', path => $path, body => $body,
        headers => \@h, %{$o{opt} || {}});
}

###########################################################################
# location prefixes and backend path prefixes

for my $c (
    ['/v1/chat/completions',      'plain-model', '/prefix/v1/chat/completions'],
    ['/llm/v1/chat/completions',  'plain-model', '/prefix/v1/chat/completions'],
    ['/llm/chat/completions',     'plain-model', '/prefix/v1/chat/completions'],
    ['/v1/chat/completions',      'second-only', '/v1/chat/completions', 'second'],
)
{
    my ($path, $model, $want, $mock) = @$c;
    $mock //= 'main';
    my $tag = "prefix $path $model";
    my $r = post($path, chat_body($model), headers => [['X-Tag', $tag]]);
    is($r->{status}, 200, "$path ($model): 200");
    my $got = by_tag($mock, $tag);
    is(scalar @$got, 1, "$path ($model): one request at $mock");
    is($got->[0]{method}, 'POST', "$path ($model): method POST");
    is($got->[0]{path}, $want, "$path ($model): backend path $want");
    my $n = $got->[0]{n} // 0;
    if ($mock eq 'main') {
        is($r->{body}, qq({"id":"main-$n","object":"chat.completion",)
            . qq("path":"$want","note":"caf\xc3\xa9 \\u00e9"}),
            "$path: response body as the backend sent it");
    } else {
        is($r->{body}, qq({"id":"second-$n"}), "$path: response body");
    }
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$path: content-type");
}

for my $path ('/v1/embeddings', '/llm/embeddings', '/llm/v1/embeddings') {
    my $tag = "emb $path";
    my $body = '{"model":"emb-model","input":["one","two"]}';
    my $r = post($path, $body, headers => [['X-Tag', $tag]]);
    is($r->{status}, 200, "$path: 200");
    my $got = by_tag('main', $tag);
    is(scalar @$got, 1, "$path: one request");
    is($got->[0]{path}, '/prefix/v1/embeddings', "$path: backend path");
    is($got->[0]{body}, $body, "$path: body forwarded unchanged");
}

###########################################################################
# GET /models

sub check_model_obj {
    my ($m, $name) = @_;
    ok(ref $m eq 'HASH', "$name: object") or return;
    is($m->{object}, 'model', "$name: object is model");
    ok(defined $m->{created} && !ref $m->{created}
        && $m->{created} =~ /^\d+$/, "$name: created is an integer");
    ok(defined $m->{owned_by} && !ref $m->{owned_by}
        && length $m->{owned_by}, "$name: owned_by is a string");
}

for my $path ('/v1/models', '/llm/models', '/llm/v1/models', '/v1/models/') {
    my $r = req(path => $path);
    is($r->{status}, 200, "GET $path: 200");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "GET $path: content-type");
    my $j = $r->{json};
    ok(ref $j eq 'HASH', "GET $path: JSON object") or next;
    is($j->{object}, 'list', "GET $path: object list");
    ok(ref $j->{data} eq 'ARRAY', "GET $path: data array") or next;
    my @ids = map { ref $_ eq 'HASH' ? $_->{id} // '' : '' } @{$j->{data}};
    is_deeply([sort @ids], [sort keys %VISIBLE],
        "GET $path: exactly the client-visible names, each once");
    next unless $path eq '/v1/models';
    check_model_obj($_, "GET $path: entry " . ($_->{id} // '?'))
        for @{$j->{data}};
    unlike($r->{body}, qr/"created"\s*:\s*"/, 'created is not a string');
}

for my $id ('fast', 'org/slashy-model', 'shared-model') {
    for my $pre ('/v1', '/llm') {
        my $r = req(path => "$pre/models/$id");
        is($r->{status}, 200, "GET $pre/models/$id: 200");
        like($r->{headers}{'content-type'} // '', qr{^application/json},
            "GET $pre/models/$id: content-type");
        is($r->{json} && $r->{json}{id}, $id, "GET $pre/models/$id: id");
        check_model_obj($r->{json}, "GET $pre/models/$id") if $pre eq '/v1';
    }
}

###########################################################################
# error contract; none of these requests may reach a backend

my %before = map { $_ => scalar @{$t->mock_requests($_)} } @MOCKS;

sub check_error {
    my ($r, $status, $code, $param, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{status}, $status, "$name: status $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json\b},
        "$name: content-type application/json");
    is($r->{headers}{'x-should-retry'}, 'false', "$name: x-should-retry");
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
    ok(ref $e eq 'HASH', "$name: body is {\"error\":{...}}")
        or return diag("body: $r->{body}");
    ok((exists $e->{$_}), "$name: error.$_ present")
        for qw(message type param code);
    ok(defined $e->{message} && !ref $e->{message} && length $e->{message},
        "$name: message is a string");
    ok(defined $e->{type} && !ref $e->{type} && length $e->{type},
        "$name: type is a string");
    is($e->{code}, $code, "$name: code $code") if defined $code;
    is($e->{param}, $param, "$name: param $param") if defined $param;
    return $e;
}

my $good = chat_body('plain-model');

# malformed JSON
for my $c (
    ['truncated', '{"model":"plain-model","messages":[{"role":"user","content":"hi"}]'],
    ['truncated in a string', '{"model":"plain-mo'],
    ['trailing garbage', "$good xyz"],
    ['trailing second object', "$good {}"],
    ['invalid UTF-8 (0xff)', qq({"model":"plain-model","messages":[{"role":"user","content":"a\xff\xfeb"}]})],
    ['invalid UTF-8 (overlong)', qq({"model":"plain-model","messages":[{"role":"user","content":"\xc0\xaf"}]})],
    ['invalid UTF-8 (lone continuation)', qq({"model":"plain-model","messages":[{"role":"user","content":"\x80"}]})],
    ['invalid UTF-8 (surrogate)', qq({"model":"plain-model","messages":[{"role":"user","content":"\xed\xa0\x80"}]})],
    ['bare word', 'hello'],
    ['single quotes', q({'model':'plain-model'})],
    ['empty body', ''],
)
{
    my ($name, $body) = @$c;
    my $r = post('/v1/chat/completions', $body);
    check_error($r, 400, 'invalid_json', undef, "malformed JSON: $name");
}

# valid JSON that is not an object
for my $body ('"hello"', '[{"model":"plain-model"}]', '42', 'null', 'true') {
    my $r = post('/v1/chat/completions', $body);
    check_error($r, 400, 'invalid_type', undef, "not an object: $body");
}
check_error(post('/v1/embeddings', '["emb-model"]'), 400, 'invalid_type',
    undef, 'embeddings: not an object');

# missing fields
check_error(post('/v1/chat/completions',
    '{"messages":[{"role":"user","content":"hi"}]}'),
    400, 'missing_required_parameter', 'model', 'missing model');
check_error(post('/v1/chat/completions', '{"model":"plain-model"}'),
    400, 'missing_required_parameter', 'messages', 'missing messages');
check_error(post('/v1/chat/completions',
    '{"model":"plain-model","msgs":[{"role":"user","content":"hi"}],'
    . '"metadata":{"messages":[1]}}'),
    400, 'missing_required_parameter', 'messages',
    'missing messages (nested "messages" key does not count)');
check_error(post('/v1/chat/completions', '{"model":"plain-model","messages":[]}'),
    400, undef, 'messages', 'empty messages array');
check_error(post('/v1/chat/completions', '{"model":"plain-model","messages":[ ]}'),
    400, undef, 'messages', 'empty messages array with a space');
check_error(post('/v1/embeddings', '{"model":"emb-model"}'),
    400, 'missing_required_parameter', 'input', 'embeddings: missing input');
check_error(post('/v1/embeddings', '{"input":"x"}'),
    400, 'missing_required_parameter', 'model', 'embeddings: missing model');

# unknown model
check_error(post('/v1/chat/completions', chat_body('no-such-model')),
    404, 'model_not_found', 'model', 'unknown model');
check_error(post('/v1/chat/completions', chat_body('gpt-4o-mini')),
    404, 'model_not_found', 'model',
    'provider id of an alias is not a client-visible model');
check_error(post('/v1/chat/completions', chat_body('FAST')),
    404, 'model_not_found', 'model', 'model names are case-sensitive');
check_error(post('/v1/embeddings', '{"model":"nope","input":"x"}'),
    404, 'model_not_found', 'model', 'embeddings: unknown model');

check_error(req(path => '/v1/models/no-such-model'),
    404, 'model_not_found', undef, 'GET /v1/models/no-such-model');
check_error(req(path => '/v1/models/gpt-4o-mini'),
    404, 'model_not_found', undef, 'GET /v1/models/<provider id>');
check_error(req(path => '/v1/models/fas'),
    404, 'model_not_found', undef, 'GET /v1/models/<prefix of a name>');

# unknown endpoints
check_error(post('/v1/foo', $good), 404, 'unknown_url', undef, 'POST /v1/foo');
check_error(req(path => '/v1/foo'), 404, 'unknown_url', undef, 'GET /v1/foo');
check_error(req(path => '/v1/'), 404, 'unknown_url', undef, 'GET /v1/');
check_error(post('/v1/completions', $good), 404, 'unknown_url', undef,
    'POST /v1/completions');
check_error(post('/llm/v1/chat', $good), 404, 'unknown_url', undef,
    'POST /llm/v1/chat');
check_error(post('/v1/chat/completions/extra', $good), 404, 'unknown_url',
    undef, 'POST /v1/chat/completions/extra');

# wrong methods
my $r = req(path => '/v1/chat/completions');
check_error($r, 405, 'method_not_allowed', undef, 'GET /v1/chat/completions');
is($r->{headers}{allow}, 'POST', 'GET /v1/chat/completions: Allow: POST');

$r = req(method => 'PUT', path => '/v1/embeddings', body => $good);
check_error($r, 405, 'method_not_allowed', undef, 'PUT /v1/embeddings');
is($r->{headers}{allow}, 'POST', 'PUT /v1/embeddings: Allow: POST');

$r = post('/v1/models', $good);
check_error($r, 405, 'method_not_allowed', undef, 'POST /v1/models');
like($r->{headers}{allow} // '', qr/\bGET\b/, 'POST /v1/models: Allow has GET');
unlike($r->{headers}{allow} // '', qr/\bPOST\b/,
    'POST /v1/models: Allow has no POST');

$r = req(method => 'DELETE', path => '/v1/models/fast');
check_error($r, 405, 'method_not_allowed', undef, 'DELETE /v1/models/fast');
like($r->{headers}{allow} // '', qr/\bGET\b/,
    'DELETE /v1/models/fast: Allow has GET');

# body over model_gateway_max_body_size 1k, nginx's own 413 replaced
my $pad = 'x' x 1200;
my $big = qq({"model":"plain-model","messages":[{"role":"user","content":"$pad"}]});
$r = post('/small/v1/chat/completions', $big);
check_error($r, 413, 'request_too_large', undef, '413 (Content-Length)');
unlike($r->{body}, qr/<html/i, '413: not nginx\'s HTML page');

my $chunked = join '', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
    unpack('(a300)*', $big);
$r = req(method => 'POST', path => '/small/v1/chat/completions',
    headers => [['Transfer-Encoding', 'chunked'],
                ['Content-Type', 'application/json']],
    body => "${chunked}0\r\n\r\n");
check_error($r, 413, 'request_too_large', undef, '413 (chunked)');
unlike($r->{body}, qr/<html/i, '413 chunked: not nginx\'s HTML page');

for my $m (@MOCKS) {
    is(scalar @{$t->mock_requests($m)}, $before{$m},
        "error cases: no request reached mock $m");
}

# models declared for one API only
{
    my $r = post('/v1/embeddings', '{"model":"emb-only","input":"x"}',
                 headers => [['X-Tag', 'emb-only']]);
    is($r->{status}, 200, 'api=embeddings: embeddings served');
    my $got = by_tag('main', 'emb-only');
    is($got->[0] && $got->[0]{body},
       '{"model":"text-embedding-3-small","input":"x"}',
       'api=embeddings: the provider id');
}
check_error(post('/v1/chat/completions', chat_body('emb-only')),
    400, 'unsupported_endpoint', undef, 'api=embeddings: no chat');
check_error(post('/v1/embeddings', '{"model":"chat-only","input":"x"}'),
    400, 'unsupported_endpoint', undef, 'api=chat: no embeddings');
is(post('/v1/chat/completions', chat_body('chat-only'))->{status}, 200,
   'api=chat: chat served');

# duplicate members the gateway routes on: refused, since a backend that
# reads the first would run another model than the one routed

for my $c (
    ['model', '{"model":"second-only","messages":[{"role":"user","content":"hi"}],"model":"plain-model"}'],
    ['model', '{"model":"second-only","messages":[],"mod\\u0065l":"plain-model"}'],
    ['messages', '{"model":"plain-model","messages":[],"messages":[{"role":"user","content":"hi"}]}'],
    ['stream', '{"model":"plain-model","stream":true,"messages":[{"role":"user","content":"hi"}],"stream":false}'],
    ['previous_response_id', '{"model":"plain-model","messages":[],"previous_response_id":"resp_a","previous_response_id":"resp_b"}'],
)
{
    my ($name, $body) = @$c;
    my $tag = "dup-$name-" . length $body;
    my $r = post('/v1/chat/completions', $body, headers => [['X-Tag', $tag]]);
    is($r->{status}, 400, "duplicate $name: 400");
    my $e = ($r->{json} // {})->{error} // {};
    is($e->{code}, 'invalid_json', "duplicate $name: invalid_json");
    is($e->{param}, $name, "duplicate $name: param names it");
    like($e->{message} // '', qr/^The request body has more than one "\Q$name\E" member\.$/,
        "duplicate $name: the message says so");
    is(scalar @{by_tag('main', $tag)} + scalar @{by_tag('second', $tag)}, 0,
        "duplicate $name: nothing sent");
}

###########################################################################
# a body under the limit in the same location is served
my $small = q({"model":"plain-model","messages":[{"role":"user","content":")
    . ('y' x 800) . '"}]}';
$r = post('/small/v1/chat/completions', $small,
    headers => [['X-Tag', 'small-ok']]);
is($r->{status}, 200, 'body under model_gateway_max_body_size: 200');
is(by_tag('main', 'small-ok')->[0]{body}, $small,
    'body under model_gateway_max_body_size: forwarded');

###########################################################################
# alias: only the top-level model value is replaced

{
    my $pre = qq({\n  "temperature": 0.7,\n  "model" : );
    my $post = qq( ,\n  "messages": [{"role":"system","content":"model: \\"fast\\" \\u00e9\\n\\t\\\\ \\/"},)
        . qq({"role":"user","content":"h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \\ud83d\\ude00"}],)
        . qq("metadata":{"model":"fast","nested":{"a":[1,2.5e-3,{"b":null,"model":"fast"}],"t":true,"f":false}},)
        . qq("tools":[],"stop":["\\"model\\":\\"fast\\""],"n":1\n}\n);
    my $sent = $pre . '"fast"' . $post;
    my $want = $pre . '"gpt-4o-mini"' . $post;

    $r = post('/v1/chat/completions', $sent, headers => [['X-Tag', 'alias-1']]);
    is($r->{status}, 200, 'alias: 200');
    my $got = by_tag('main', 'alias-1');
    is(scalar @$got, 1, 'alias: one backend request');
    is($got->[0]{body}, $want,
        'alias: backend body = client body with only the top-level model '
        . 'value replaced');
    is($got->[0]{headers}{'content-length'}, length $want,
        'alias: Content-Length of the rewritten body');
    my $j = eval { decode_json($got->[0]{body}) };
    is($j && $j->{model}, 'gpt-4o-mini', 'alias: backend body is valid JSON');

    # alias in last position, no whitespace
    $sent = '{"messages":[{"role":"user","content":"x"}],"model":"fast"}';
    $r = post('/v1/chat/completions', $sent, headers => [['X-Tag', 'alias-2']]);
    is($r->{status}, 200, 'alias last: 200');
    is(by_tag('main', 'alias-2')->[0]{body},
        '{"messages":[{"role":"user","content":"x"}],"model":"gpt-4o-mini"}',
        'alias last: body');

    # no alias: byte-identical
    my $plain = $sent = $pre . '"plain-model"' . $post;
    $r = post('/v1/chat/completions', $plain, headers => [['X-Tag', 'noalias']]);
    is($r->{status}, 200, 'no alias: 200');
    is(by_tag('main', 'noalias')->[0]{body}, $plain,
        'no alias: forwarded byte-identical');
}

###########################################################################
# headers to the backend

{
    my $body = chat_body('plain-model');
    $r = post('/v1/chat/completions', $body, headers => [
        ['X-Tag', 'hdr-to'],
        ['Authorization', 'Bearer client-token-abc'],
        ['Cookie', 'session=client-cookie'],
        ['Accept-Encoding', 'gzip, deflate, br'],
        ['X-Custom-Trace', 'trace-123'],
        ['OpenAI-Organization', 'org-client'],
        ['OpenAI-Project', 'proj-client'],
        ['api-key', 'client-azure-key'],
        ['x-api-key', 'client-anthropic-key'],
        ['x-goog-api-key', 'client-goog-key'],
        ['X-Unlisted', 'unlisted-value'],
        ['X-Amz-Date', '20000101T000000Z'],
        ['X-Amz-Security-Token', 'client-amz-token'],
        ['X-Goog-User-Project', 'client-goog-project'],
        ['anthropic-beta', 'client-beta'],
        ['Proxy-Authorization', 'Basic client-proxy'],
        ['X-Fixed', 'client-fixed'],
        ['User-Agent', 'OpenAI/Python 1.51.0'],
        ['traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'],
        ['tracestate', 'rojo=00f067aa0ba902b7'],
        ['Idempotency-Key', 'idem-42'],
        ['OpenAI-Beta', 'assistants=v2'],
        ['X-Client-Request-Id', 'creq-7'],
    ]);
    is($r->{status}, 200, 'headers to backend: 200');
    my $got = by_tag('main', 'hdr-to')->[0] || {};
    my $h = $got->{headers} || {};
    is($h->{authorization}, "Bearer $MAIN_KEY",
        'Authorization is the backend key (key_file, whitespace trimmed)');
    is(scalar(grep { lc $_->[0] eq 'authorization' } @{$got->{header_list}}),
        1, 'one Authorization header');
    ok(!exists $h->{cookie}, 'Cookie not forwarded');
    is($h->{'accept-encoding'}, 'identity', 'Accept-Encoding: identity');
    is($h->{'x-custom-trace'}, 'trace-123',
        'a header model_gateway_forward_headers names is forwarded');
    ok(!exists $h->{'x-unlisted'}, 'a header no list names is not');
    is($h->{'user-agent'}, 'OpenAI/Python 1.51.0', 'User-Agent forwarded');
    is($h->{traceparent},
        '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        'traceparent forwarded');
    is($h->{tracestate}, 'rojo=00f067aa0ba902b7', 'tracestate forwarded');
    is($h->{'idempotency-key'}, 'idem-42', 'Idempotency-Key forwarded');
    is($h->{'openai-beta'}, 'assistants=v2', 'OpenAI-Beta forwarded');
    is($h->{'x-client-request-id'}, 'creq-7', 'X-Client-Request-Id forwarded');
    is($h->{'x-fixed'}, 'gateway-fixed',
        'a backend\'s fixed header wins over the client\'s');
    is(scalar(grep { lc $_->[0] eq 'x-fixed' } @{$got->{header_list}}), 1,
        'one X-Fixed header');
    ok(!exists $h->{$_}, "$_ not forwarded")
        for qw(x-amz-date x-amz-security-token x-goog-user-project
               anthropic-beta proxy-authorization);
    is($h->{host}, '127.0.0.1:' . $t->port('main'),
        'Host is the backend URL host:port');
    is($h->{'content-length'}, length($got->{body} // ''),
        'Content-Length matches the body');
    is($got->{body}, $body, 'body forwarded');
    ok(!exists $h->{$_}, "$_ not forwarded")
        for qw(openai-organization openai-project api-key x-api-key
               x-goog-api-key);
    my $all = join "\n", map { "$_->[0]: $_->[1]" } @{$got->{header_list}};
    unlike($all, qr/client-(?:token|cookie|azure|anthropic|goog|amz|beta|proxy|fixed)|org-client|proj-client|unlisted|20000101T/,
        'no client credential reaches the backend');
}

###########################################################################
# headers from the backend

{
    $r = post('/v1/chat/completions', chat_body('hdr-model'));
    is($r->{status}, 200, 'headers from backend: 200');
    is($r->{body}, $HDRS_BODY, 'headers from backend: body');
    my $h = $r->{headers};
    like($h->{'content-type'} // '', qr{^application/json}, 'content-type');
    is($h->{'x-request-id'}, 'req-abc-123', 'x-request-id passed');
    is($h->{'x-ratelimit-remaining-requests'}, '99',
        'x-ratelimit-remaining-requests passed');
    is($h->{'x-ratelimit-limit-tokens'}, '40000',
        'x-ratelimit-limit-tokens passed');
    is($h->{'openai-processing-ms'}, '42', 'openai-processing-ms passed');
    ok(!exists $h->{$_}, "$_ dropped")
        for qw(set-cookie openai-organization openai-project x-other);
    unlike($r->{raw}, qr/backend-cookie|org-backend|proj-backend|other-value/,
        'dropped values appear nowhere in the response');
}

###########################################################################
# backend 400/404/422 passed through as sent

for my $st (400, 404, 422) {
    $r = post('/v1/chat/completions', chat_body('pt-model'),
        headers => [['X-Want-Status', $st], ['X-Tag', "pt-$st"]]);
    is($r->{status}, $st, "backend $st: status passed through");
    is($r->{body}, pt_body($st), "backend $st: body passed through as sent");
    is(scalar @{by_tag('pt', "pt-$st")}, 1, "backend $st: not retried");
}

###########################################################################
# secrets: a backend rejecting the key and echoing it

for my $c (['auth', 'auth-model', 401], ['auth2', 'auth-model-2', 403]) {
    my ($mock, $model, $st) = @$c;
    $r = post('/v1/chat/completions', chat_body($model),
        headers => [['X-Want-Status', $st], ['X-Tag', "auth-$st"]]);
    my $e = check_error($r, 502, 'backend_auth_failed', undef,
        "backend $st");
    like($e && $e->{message} // '', qr/^backend authentication failed/,
        "backend $st: message");
    my $got = by_tag($mock, "auth-$st");
    is(scalar @$got, 1, "backend $st: one attempt");
    is($got->[0]{headers}{authorization}, "Bearer $SECRET",
        "backend $st: the key was sent to the backend");
    unlike($r->{raw}, qr/\Q$SECRET\E|SECRET/, "backend $st: key not in response");
    ok(!exists $r->{headers}{'x-echo-key'} && !exists $r->{headers}{'set-cookie'},
        "backend $st: backend headers not passed");
}

###########################################################################
# variables and failover

$r = post('/v1/chat/completions', chat_body('failover-model'),
    headers => [['X-Tag', 'failover-1']]);
is($r->{status}, 200, 'failover: 200');
{
    my $fa = by_tag('fa', 'failover-1');
    my $fb = by_tag('fb', 'failover-1');
    is(scalar @$fa, 1, 'failover: fa tried once');
    is(scalar @$fb, 1, 'failover: fb tried once');
    is($fb->[0]{path}, '/v1/chat/completions', 'failover: fb path');
    is($r->{body}, qq({"id":"fb-$fb->[0]{n}","object":"chat.completion"}),
        'failover: client gets fb\'s answer');
    unlike($r->{body}, qr/overloaded/, 'failover: fa\'s body not passed');
}

sub log_line {
    my ($tag) = @_;
    my $line;
    $t->wait_for(sub {
        my $c = MG::Test::_read_file("$dir/gw.log", 1) // '';
        ($line) = grep { index($_, "$tag ") == 0 } split /\n/, $c;
        $line;
    }, 5);
    return $line // '';
}

is(log_line('failover-1'),
    'failover-1 200 "failover-model" "fb" [fa:503,fb:200]',
    'log: failover attempts, backend and model');
is(log_line('alias-1'), 'alias-1 200 "fast" "main" [main:200]',
    'log: alias request (client-visible model)');
is(log_line('auth-401'), 'auth-401 502 "auth-model" "auth" [auth:401]',
    'log: auth failure');
is(log_line('auth-403'), 'auth-403 502 "auth-model-2" "auth2" [auth2:403]',
    'log: auth failure (403)');
is(log_line('pt-422'), 'pt-422 422 "pt-model" "pt" [pt:422]',
    'log: passed-through 422');
like(log_line('prefix /v1/chat/completions second-only'),
    qr/ 200 "second-only" "second" \[second:200\]$/, 'log: second backend');

###########################################################################
# the key appears nowhere

$t->stop;

for my $f ('error.log', 'access.log', 'gw.log') {
    my $c = MG::Test::_read_file("$dir/$f", 1) // '';
    ok(length $c || $f eq 'error.log', "$f not empty");
    unlike($c, qr/\Q$SECRET\E/, "secret key not in $f");
    unlike($c, qr/\Q$MAIN_KEY\E/, "main backend key not in $f");
}
my $all = join '', @RAW;
ok(length $all > 1000, 'responses collected');
unlike($all, qr/\Q$SECRET\E/, 'secret key in no response');
unlike($all, qr/\Q$MAIN_KEY\E/, 'main backend key in no response');

$t->done_testing;
