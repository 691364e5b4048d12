#!/usr/bin/perl

# Google Gemini backends: OpenAI chat requests become generateContent
# (streamGenerateContent?alt=sse when streaming) with x-goog-api-key, the
# model in the path; answers, streams (which end without a sentinel) and
# errors come back in OpenAI's shapes.  Long texts (the translation fast
# path) arrive exactly, both ways.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json encode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $KEY = 'gemini-key-0123456789';
my $dir = $t->dir;

open my $fh, '>', "$dir/gemini.key" or die $!;
print $fh "$KEY\n";
close $fh;

sub json_reply {
    my ($status, $obj) = @_;
    return { status => $status,
             headers => [['Content-Type', 'application/json']],
             body => encode_json($obj) };
}

# the mock checks what Gemini checks, and records what it saw

$t->mock('gem', handler => sub {
    my $r = shift;

    return json_reply(403, { error => { code => 403, status => 'PERMISSION_DENIED',
                                        message => 'bad key' } })
        unless ($r->{headers}{'x-goog-api-key'} // '') eq $KEY
               && !defined $r->{headers}{authorization};

    my ($model, $method) =
        $r->{path} =~ m{^/v1beta/models/([\w.\-]+):(generateContent|streamGenerateContent\?alt=sse)$}
        or return json_reply(404, { error => { code => 404, status => 'NOT_FOUND',
                                               message => 'no such path' } });

    my $b = eval { decode_json($r->{body}) }
        or return json_reply(400, { error => { code => 400, message => 'bad json',
                                               status => 'INVALID_ARGUMENT' } });

    return json_reply(400, { error => { code => 400, status => 'INVALID_ARGUMENT',
                                        message => 'Invalid JSON payload: unknown field "messages"' } })
        if exists $b->{messages} || exists $b->{model};

    return json_reply(400, { error => { code => 400, status => 'INVALID_ARGUMENT',
                                        message => 'contents is required' } })
        unless ref $b->{contents} eq 'ARRAY' && @{ $b->{contents} };

    for my $c (@{ $b->{contents} }) {
        return json_reply(400, { error => { code => 400, status => 'INVALID_ARGUMENT',
                                            message => "bad role $c->{role}" } })
            unless ($c->{role} // '') =~ /^(user|model)$/;
    }

    if ($model eq 'gemini-busy') {
        return json_reply(503, { error => { code => 503, status => 'UNAVAILABLE',
                                            message => 'RAW-GEMINI-503 overloaded' } });
    }

    if ($model eq 'gemini-limited') {
        return json_reply(429, { error => { code => 429, status => 'RESOURCE_EXHAUSTED',
                                            message => 'quota' } });
    }

    if ($model eq 'gemini-echo') {
        my $u = join('', map { $_->{text} // '' }
                         @{ $b->{contents}[-1]{parts} || [] });
        my $sy = join('', map { $_->{text} // '' }
                          @{ ($b->{systemInstruction} || {})->{parts} || [] });
        return json_reply(200, {
            candidates => [{ content => { role => 'model', parts => [
                                 { text => "echo: $u | system: $sy" }] },
                             finishReason => 'STOP', index => 0 }] });
    }

    my $echo = encode_json({ sys => $b->{systemInstruction},
                             gen => $b->{generationConfig},
                             roles => [map { $_->{role} } @{ $b->{contents} }],
                             model => $model });

    if ($method =~ /stream/) {
        my @chunks = (
            { candidates => [{ content => { role => 'model',
                                            parts => [{ text => 'Hel' }] },
                               index => 0 }],
              usageMetadata => { promptTokenCount => 7, totalTokenCount => 7 } },
            { candidates => [{ content => { role => 'model',
                                            parts => [{ text => 'lo' }] },
                               finishReason => 'STOP', index => 0 }],
              usageMetadata => { promptTokenCount => 7,
                                 candidatesTokenCount => 2,
                                 totalTokenCount => 9 } },
        );
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => [map { 'data: ' . encode_json($_) . "\r\n\r\n" } @chunks] };
    }

    my @parts = ({ text => $echo });
    push @parts, { functionCall => { name => 'get_weather',
                                     args => { city => 'Paris' } } }
        if $b->{tools};

    return json_reply(200, {
        candidates => [{ content => { role => 'model', parts => \@parts },
                         finishReason => 'STOP', index => 0 }],
        usageMetadata => { promptTokenCount => 11, candidatesTokenCount => 4,
                           totalTokenCount => 15,
                           cachedContentTokenCount => 3 },
        modelVersion => $model });
});

$t->mock('oai', handler => sub {
    return json_reply(200, { via => 'openai' });
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;

    model_gateway_backend gem {
        type gemini;
        url http://127.0.0.1:%%PORT_gem%%/v1beta;
        key_file %%DIR%%/gemini.key;
        model flash gemini-2.5-flash;
        model busy gemini-busy;
        model limited gemini-limited;
        model echo gemini-echo;
        weight 100;
    }

    model_gateway_backend oai {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_oai%%/v1;
        model busy;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
        }

        location /small/ {
            model_gateway;
            model_gateway_max_body_size 64k;
        }
    }
}
EOF

my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t') or diag $out;

$t->run;

# a conversation with a system prompt and an assistant turn
my $CONV = [{ role => 'system', content => 'Be terse.' },
            { role => 'user', content => 'hi' },
            { role => 'assistant', content => 'hello' },
            { role => 'user', content => 'weather?' }];

my $r = $t->chat('flash', messages => $CONV,
    body => { max_completion_tokens => 64, temperature => 0.5 });
is($r->{status}, 200, 'generateContent: 200') or diag $r->{body};
my $j = $r->{json} // {};
is($j->{object}, 'chat.completion', 'an OpenAI chat.completion');
is($j->{model}, 'flash', 'the client\'s model name');
my $echo = eval { decode_json($j->{choices}[0]{message}{content}) } // {};
is($echo->{model}, 'gemini-2.5-flash', 'the provider model is in the path');
is_deeply($echo->{roles}, ['user', 'model', 'user'],
    'assistant becomes model; system goes to systemInstruction');
is($echo->{sys}{parts}[0]{text}, 'Be terse.', 'systemInstruction');
is($echo->{gen}{maxOutputTokens}, 64, 'maxOutputTokens');
is($echo->{gen}{temperature}, 0.5, 'temperature');
is($j->{choices}[0]{finish_reason}, 'stop', 'STOP -> stop');
is($j->{usage}{prompt_tokens}, 11, 'usage prompt_tokens');
is($j->{usage}{completion_tokens}, 4, 'usage completion_tokens');
is($j->{usage}{prompt_tokens_details}{cached_tokens}, 3, 'cached tokens');

$r = $t->chat('flash', messages => $CONV,
    body => { tools => [{ type => 'function',
        function => { name => 'get_weather',
                      parameters => { type => 'object' } } }] });
$j = $r->{json} // {};
is($j->{choices}[0]{finish_reason}, 'tool_calls', 'STOP with a call -> tool_calls');
is($j->{choices}[0]{message}{tool_calls}[0]{function}{name}, 'get_weather',
   'the function call');
is_deeply(eval { decode_json($j->{choices}[0]{message}{tool_calls}[0]{function}{arguments}) },
   { city => 'Paris' }, 'arguments as a JSON string');

# long texts take the translation fast path: exact both ways

{
    my $long = join('', map { "line $_: a \"quoted\" word, a back\\slash,"
        . " a tab\t, caf\x{e9} \x{1F600} and \x{2028} done\n" } 1 .. 12);
    my $sys = 'You are a careful reviewer of long texts. ' x 5;
    my $lr = $t->post_json('/v1/chat/completions', { model => 'echo',
        messages => [{ role => 'system', content => $sys },
                     { role => 'user', content => $long }] });
    is($lr->{status}, 200, 'long texts: 200') or diag $lr->{body};
    is(($lr->{json} // {})->{choices}[0]{message}{content},
       "echo: $long | system: $sys",
       'long texts: request and answer texts exact both ways');
}

my @reqs = @{ $t->mock_requests('gem') };
is(scalar(grep { ($_->{headers}{'x-goog-api-key'} // '') eq $KEY } @reqs),
   scalar @reqs, 'every request carries x-goog-api-key');
is(scalar(grep { defined $_->{headers}{authorization} } @reqs), 0,
   'no Authorization header to Gemini');

# streaming: the stream ends without a sentinel; the gateway ends it

my $s = $t->stream(path => '/v1/chat/completions',
    body => encode_json({ model => 'flash', stream => JSON::PP::true,
                          stream_options => { include_usage => JSON::PP::true },
                          messages => [{ role => 'user', content => 'hi' }] }));
my $all = $s->rest(10) // '';
$s->close;
my @data = MG::Test::sse_data($all);
my @json = map { eval { decode_json($_) } } grep { $_ ne '[DONE]' } @data;

# (looked up first: reading choices[0] below would autovivify it)
my ($usage) = grep { $_->{usage} && !@{ $_->{choices} } } @json;

is(join('', map { @{ $_->{choices} } ? $_->{choices}[0]{delta}{content} // ''
                                      : '' } @json),
   'Hello', 'stream: the text');
is($data[-1], '[DONE]', 'stream: ends with [DONE]');
is($usage->{usage}{total_tokens}, 9, 'stream: the usage chunk');
ok(scalar(grep { @{ $_->{choices} }
                 && ($_->{choices}[0]{finish_reason} // '') eq 'stop' } @json),
   'stream: finish_reason stop');
like($t->mock_requests('gem')->[-1]{path}, qr/:streamGenerateContent\?alt=sse$/,
   'stream: streamGenerateContent?alt=sse');

# amplification: one long description in $defs referenced by many
# properties was written once per reference (293 KB became 262 MB); the
# copies are counted, and past the budget it is the client's 400 with
# nothing sent to the backend

sub ref_tools {
    my ($desc, $n) = @_;
    return [{ type => 'function', function => { name => 'f', parameters => {
        '$defs' => { big => { type => 'string', description => $desc } },
        type => 'object',
        properties => { map { ("p$_" => { '$ref' => '#/$defs/big' }) }
                            1 .. $n } } } }];
}

sub gem_bytes {
    my $n = 0;
    $n += length($_->{body} // '') for @{ $t->mock_requests('gem') };
    return $n;
}

{
    my $before = scalar @{ $t->mock_requests('gem') };
    my $bytes = gem_bytes();

    my $body = encode_json({ model => 'flash',
        messages => [{ role => 'user', content => 'hi' }],
        tools => ref_tools('x' x (256 * 1024), 1000) });
    cmp_ok(length $body, '<', 300 * 1024, 'amplification: a 293 KB body');

    $r = $t->request(method => 'POST', path => '/v1/chat/completions',
                     body => $body,
                     headers => [['Content-Type', 'application/json']]);
    is($r->{status}, 400, 'amplification: 400')
        or diag substr($r->{body}, 0, 300);
    is(($r->{json} // {})->{error}{type}, 'invalid_request_error',
       'amplification: an OpenAI invalid_request_error');
    like(($r->{json} // {})->{error}{message} // '', qr/too large/,
         'amplification: the message names the cause');
    is(scalar @{ $t->mock_requests('gem') }, $before,
       'amplification: nothing sent to Gemini');
    cmp_ok(gem_bytes() - $bytes, '<=', 1024 * 1024,
           'amplification: Gemini received a bounded number of bytes');

    # a few references are still expanded and sent

    $r = $t->post_json('/v1/chat/completions', { model => 'flash',
        messages => [{ role => 'user', content => 'hi' }],
        tools => ref_tools('a short description', 5) });
    is($r->{status}, 200, 'a few $refs: 200') or diag $r->{body};
    my $sent = decode_json($t->mock_requests('gem')->[-1]{body});
    my $props =
        $sent->{tools}[0]{functionDeclarations}[0]{parameters}{properties};
    is(scalar(grep { ($_->{description} // '') eq 'a short description' }
                   values %$props), 5, 'a few $refs: each one expanded');

    # under a lower model_gateway_max_body_size the bound is that plus 64 KB

    $r = $t->post_json('/small/v1/chat/completions', { model => 'flash',
        messages => [{ role => 'user', content => 'hi' }],
        tools => ref_tools('y' x (16 * 1024), 20) });
    is($r->{status}, 400, 'over the bound: 400') or diag $r->{body};
    is(($r->{json} // {})->{error}{message},
       'the translated request for provider gemini would exceed 131072 bytes',
       'over the bound: the message says which bound');
}

# errors

$r = $t->post_json('/v1/chat/completions',
    { model => 'busy', messages => [{ role => 'user', content => 'x' }] });
is($r->{json}{via}, 'openai', 'Gemini 503: failover');

$r = $t->post_json('/v1/chat/completions',
    { model => 'limited', messages => [{ role => 'user', content => 'x' }] });
is($r->{status}, 429, 'Gemini 429 RESOURCE_EXHAUSTED -> 429');
ok(defined $r->{headers}{'retry-after'}, 'with Retry-After');
unlike($r->{body}, qr/RAW-GEMINI/, 'raw backend body not passed on');

$r = $t->post_json('/v1/embeddings', { model => 'flash', input => 'x' });
is($r->{status}, 400, 'embeddings to a Gemini-only model: 400');
is($r->{headers}{'content-type'}, 'application/json', 'an OpenAI error');

unlike($t->error_log, qr/\Q$KEY\E/, 'the key is not logged');

$t->done_testing;
