#!/usr/bin/perl

# The tokens every answer used: $model_gateway_prompt_tokens and
# $model_gateway_completion_tokens, logged for each provider type, streamed
# and not, equal what the mock reported.
#
# A chat stream to an OpenAI-type backend (openai, openai_compatible,
# azure) whose client did not ask for the usage chunk: the mock receives
# stream_options.include_usage true (merged into what the client sent) and
# sends the chunk only then; the client does not get it.  A client that
# asked gets it unchanged.  A backend with "stream_usage off" gets the body
# as the client sent it.  Translated streams (Anthropic, Gemini, Bedrock)
# count whether the client asked or not.  A client that goes away
# mid-stream leaves the variables empty or partial, and nothing crashes.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use MG::Test;
use MG::AWS qw(es_event);

my $t = MG::Test->new;
$t->need_module;

my $J = JSON::PP->new->utf8->canonical;
my $dir = $t->dir;

for my $f (qw(key-oai key-ant key-gem key-bed)) {
    open my $fh, '>', "$dir/$f" or die $!;
    print $fh "test-key-$f-0123456789\n";
    close $fh;
}

# what each backend model reports: [prompt, completion]; all different, so
# a count that went to the wrong request shows
my %COUNT = (
    'o-chat' => [101, 11], 'o-stream' => [102, 12], 'o-asked' => [103, 13],
    'o-merge' => [104, 14], 'o-false' => [105, 15], 'o-emb' => [106, 0],
    'o-resp' => [107, 17], 'o-resp-s' => [108, 18], 'o-resp-n' => [109, 19],
    'o-close' => [110, 20], 'o-dc' => [111, 21], 'o-ren-id' => [112, 22],
    'c-chat' => [121, 31], 'c-stream' => [122, 32],
    'a-chat-dep' => [131, 41], 'a-stream-dep' => [132, 42],
    's-stream' => [141, 51], 's-asked' => [142, 52],
    'an-chat' => [151, 61], 'an-stream' => [152, 62], 'an-asked' => [153, 63],
    'an-dc' => [154, 64],
    'g-chat' => [161, 71], 'g-stream' => [162, 72], 'g-asked' => [163, 73],
    'b-chat' => [171, 81], 'b-stream' => [172, 82], 'b-asked' => [173, 83],
);

###########################################################################
# OpenAI-type mock: chat, streams, embeddings, Responses

sub ev { 'data: ' . $J->encode($_[0]) . "\n\n" }

sub chunk {
    my ($id, $choices, %o) = @_;
    return { id => "chatcmpl-$id", object => 'chat.completion.chunk',
             created => 1717000000, model => $id, choices => $choices,
             %o };
}

# the stream of model $id; the usage chunk only when asked for
sub chat_events {
    my ($id, $usage) = @_;
    my ($p, $c) = @{$COUNT{$id}};
    my @e = (
        ev(chunk($id, [{ index => 0, delta => { role => 'assistant',
            content => '' }, finish_reason => undef }])),
        ev(chunk($id, [{ index => 0, delta => { content => 'Hello' },
            finish_reason => undef }])),
        ev(chunk($id, [{ index => 0, delta => { content => ' there' },
            finish_reason => undef }])),
        ev(chunk($id, [{ index => 0, delta => {},
            finish_reason => 'stop' }])),
    );
    push @e, ev(chunk($id, [], usage => { prompt_tokens => $p,
        completion_tokens => $c, total_tokens => $p + $c })) if $usage;
    push @e, "data: [DONE]\n\n";
    return @e;
}

sub response_object {
    my ($id) = @_;
    my ($p, $c) = @{$COUNT{$id}};
    return { id => "resp_$id", object => 'response', status => 'completed',
             model => $id, output => [{ type => 'message', id => "msg_$id",
             role => 'assistant', content => [{ type => 'output_text',
             text => 'Hi' }] }], tools => [{ type => 'function',
             name => 'f', parameters => { type => 'object', properties =>
             { usage => { type => 'object' } } } }],
             usage => { input_tokens => $p, output_tokens => $c,
             total_tokens => $p + $c }, user => undef,
             metadata => { note => 'x' x 300 } };
}

# a body that ends with its connection, in pieces: the first ends inside
# the choices, right after a nested object that looks like a usage
my $CLOSE_BODY = $J->encode({ id => 'chatcmpl-close',
    object => 'chat.completion', model => 'o-close',
    choices => [{ index => 0, message => { role => 'assistant',
        content => 'long ' x 6000 },
        x_probe => { usage => { prompt_tokens => 999,
                                completion_tokens => 999 } },
        finish_reason => 'stop' }],
    usage => { prompt_tokens => 110, completion_tokens => 20,
               total_tokens => 130 } });
my $probe_end = index($CLOSE_BODY, '999}}') + 5;
my @CLOSE_PIECES = (
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        . "Connection: close\r\n\r\n" . substr($CLOSE_BODY, 0, $probe_end),
    substr($CLOSE_BODY, $probe_end, 100),
    substr($CLOSE_BODY, $probe_end + 100),
);

my $JSON_H = [['Content-Type', 'application/json']];
my $SSE_H = [['Content-Type', 'text/event-stream']];

sub oai_handler {
    my $r = shift;
    my $j = eval { JSON::PP::decode_json($r->{body}) } || {};
    my $id = $j->{model} // '';
    $id = $1 if $r->{path} =~ m{/deployments/([^/]+)/};

    return { status => 404, headers => $JSON_H,
             body => '{"error":{"message":"mock: unknown model"}}' }
        unless $COUNT{$id};
    my ($p, $c) = @{$COUNT{$id}};

    # a server that rejects stream_options, as some do
    if ($id =~ /^s-/ && $id ne 's-asked' && exists $j->{stream_options}) {
        return { status => 400, headers => $JSON_H,
                 body => '{"error":{"message":"mock: stream_options is '
                         . 'not supported","type":"invalid_request_error"}}' };
    }

    if ($r->{path} =~ m{/embeddings$}) {
        return { status => 200, headers => $JSON_H, body => $J->encode({
            object => 'list', data => [{ object => 'embedding', index => 0,
            embedding => [0.5, -0.25] }], model => $id,
            usage => { prompt_tokens => $p, total_tokens => $p } }) };
    }

    if ($r->{path} =~ m{/responses$}) {
        my $o = response_object($id);
        return { status => 200, headers => $JSON_H, body => $J->encode($o) }
            unless $j->{stream};
        my @e = (
            [ 'response.created', { type => 'response.created',
              sequence_number => 0, response => { %$o, status =>
              'in_progress', usage => undef } } ],
            [ 'response.output_text.delta', { type =>
              'response.output_text.delta', sequence_number => 1,
              delta => '"usage":{"input_tokens":1}' } ],
            [ 'response.completed', { type => 'response.completed',
              sequence_number => 2, response => $o } ],
        );
        my $named = $id ne 'o-resp-n';
        return { status => 200, headers => $SSE_H, chunks => [ map {
            ($named ? "event: $_->[0]\n" : '') . ev($_->[1]) } @e ] };
    }

    return { raw_pieces => \@CLOSE_PIECES, piece_delay => 0.05 }
        if $id eq 'o-close';

    unless ($j->{stream}) {
        return { status => 200, headers => $JSON_H,
                 body => MG::Test::openai_completion(model => $id,
                     id => "chatcmpl-$id", prompt_tokens => $p,
                     completion_tokens => $c) };
    }

    # the chunk only when include_usage is JSON true, as OpenAI does
    my $so = $j->{stream_options};
    my $usage = ref $so eq 'HASH' && JSON::PP::is_bool($so->{include_usage})
        && $so->{include_usage};
    my %hold = $id eq 'o-dc'
        ? (hold_after => 2, release => 'release-never', hold_timeout => 60)
        : ();
    return { status => 200, headers => $SSE_H,
             chunks => [chat_events($id, $usage)], %hold };
}

###########################################################################
# Anthropic, Gemini, Bedrock mocks

sub sse { "event: $_[0]\ndata: " . $J->encode($_[1]) . "\n\n" }

sub ant_handler {
    my $r = shift;
    my $j = eval { JSON::PP::decode_json($r->{body}) } || {};
    my $id = $j->{model} // '';
    my ($p, $c) = @{$COUNT{$id} || [0, 0]};

    unless ($j->{stream}) {
        return { status => 200, headers => $JSON_H, body => $J->encode({
            id => 'msg_1', type => 'message', role => 'assistant',
            model => $id, content => [{ type => 'text', text => 'Hi' }],
            stop_reason => 'end_turn', stop_sequence => undef,
            usage => { input_tokens => $p, output_tokens => $c } }) };
    }

    my @e = (
        sse('message_start', { type => 'message_start', message => {
            id => 'msg_1', type => 'message', role => 'assistant',
            model => $id, content => [], stop_reason => undef,
            stop_sequence => undef,
            usage => { input_tokens => $p, output_tokens => 1 } } }),
        sse('content_block_start', { type => 'content_block_start',
            index => 0, content_block => { type => 'text', text => '' } }),
        sse('content_block_delta', { type => 'content_block_delta',
            index => 0, delta => { type => 'text_delta', text => 'Hi' } }),
        sse('content_block_stop', { type => 'content_block_stop',
            index => 0 }),
        sse('message_delta', { type => 'message_delta', delta => {
            stop_reason => 'end_turn', stop_sequence => undef },
            usage => { output_tokens => $c } }),
        sse('message_stop', { type => 'message_stop' }),
    );
    my %hold = $id eq 'an-dc'
        ? (hold_after => 3, release => 'release-never', hold_timeout => 60)
        : ();
    return { status => 200, headers => $SSE_H, chunks => \@e, %hold };
}

sub gem_handler {
    my $r = shift;
    my ($id, $op) = $r->{path} =~ m{/models/([^/:]+):(\w+)};
    my ($p, $c) = @{$COUNT{$id // ''} || [0, 0]};
    my $cand = sub {
        { content => { role => 'model', parts => [{ text => $_[0] }] },
          index => 0, ($_[1] ? (finishReason => 'STOP') : ()) }
    };

    if (($op // '') eq 'generateContent') {
        return { status => 200, headers => $JSON_H, body => $J->encode({
            candidates => [$cand->('Hi', 1)], usageMetadata => {
            promptTokenCount => $p, candidatesTokenCount => $c,
            totalTokenCount => $p + $c } }) };
    }

    return { status => 200, headers => $SSE_H, chunks => [
        'data: ' . $J->encode({ candidates => [$cand->('Hi')],
            usageMetadata => { promptTokenCount => $p,
            totalTokenCount => $p } }) . "\r\n\r\n",
        'data: ' . $J->encode({ candidates => [$cand->(' there', 1)],
            usageMetadata => { promptTokenCount => $p,
            candidatesTokenCount => $c, totalTokenCount => $p + $c } })
            . "\r\n\r\n",
    ] };
}

sub bed_handler {
    my $r = shift;
    my ($id, $op) = $r->{path} =~ m{/model/([^/]+)/([\w-]+)};
    my ($p, $c) = @{$COUNT{$id // ''} || [0, 0]};

    if (($op // '') eq 'converse') {
        return { status => 200, headers => $JSON_H, body => $J->encode({
            output => { message => { role => 'assistant',
            content => [{ text => 'Hi' }] } }, stopReason => 'end_turn',
            usage => { inputTokens => $p, outputTokens => $c,
            totalTokens => $p + $c }, metrics => { latencyMs => 1 } }) };
    }

    return { status => 200,
             headers => [['Content-Type',
                          'application/vnd.amazon.eventstream']],
             chunks => [
                 es_event('messageStart', '{"role":"assistant"}'),
                 es_event('contentBlockDelta', '{"contentBlockIndex":0,'
                          . '"delta":{"text":"Hi"}}'),
                 es_event('contentBlockStop', '{"contentBlockIndex":0}'),
                 es_event('messageStop', '{"stopReason":"end_turn"}'),
                 es_event('metadata', $J->encode({ usage => {
                     inputTokens => $p, outputTokens => $c,
                     totalTokens => $p + $c },
                     metrics => { latencyMs => 1 } })),
             ] };
}

$t->mock('oai', handler => \&oai_handler);
$t->mock('ant', handler => \&ant_handler);
$t->mock('gem', handler => \&gem_handler);
$t->mock('bed', handler => \&bed_handler);

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format usage '$model_gateway_model '
                     'p=$model_gateway_prompt_tokens '
                     'c=$model_gateway_completion_tokens $status';

    model_gateway_backend oai {
        type openai;
        url http://127.0.0.1:%%PORT_oai%%/v1;
        key_file %%DIR%%/key-oai;
        model o-chat;
        model o-stream;
        model o-asked;
        model o-merge;
        model o-false;
        model o-emb;
        model o-resp;
        model o-resp-s;
        model o-resp-n;
        model o-close;
        model o-dc;
        model o-ren o-ren-id;
    }

    model_gateway_backend comp {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_oai%%/v1;
        model c-chat;
        model c-stream;
    }

    model_gateway_backend az {
        type azure;
        url http://127.0.0.1:%%PORT_oai%%/openai;
        key_file %%DIR%%/key-oai;
        model a-chat a-chat-dep;
        model a-stream a-stream-dep;
    }

    model_gateway_backend strict {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_oai%%/v1;
        stream_usage off;
        model s-stream;
        model s-asked;
    }

    model_gateway_backend ant {
        type anthropic;
        url http://127.0.0.1:%%PORT_ant%%/v1;
        key_file %%DIR%%/key-ant;
        model an-chat;
        model an-stream;
        model an-asked;
        model an-dc;
    }

    model_gateway_backend gem {
        type gemini;
        url http://127.0.0.1:%%PORT_gem%%/v1beta;
        key_file %%DIR%%/key-gem;
        model g-chat;
        model g-stream;
        model g-asked;
    }

    model_gateway_backend bed {
        type bedrock;
        url http://127.0.0.1:%%PORT_bed%%;
        region us-east-1;
        key_file %%DIR%%/key-bed;
        model b-chat;
        model b-stream;
        model b-asked;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        access_log %%DIR%%/usage.log usage;

        location /v1/ {
            model_gateway;
        }
    }
}
EOF

$t->run;

my @ASK = (body => { stream_options => { include_usage => JSON::PP::true } });

# the access log line of a client-visible model: "p=N c=N" or "p=- c=-"
# (nginx logs a stream after its lingering close: streams are closed first)
sub logged {
    my $model = shift;
    my $line;
    $t->wait_for(sub {
        my $log = MG::Test::_read_file("$dir/usage.log", 1) // '';
        ($line) = grep { /^\Q$model\E / } split /\n/, $log;
        return $line;
    }, 10);
    return $line // '';
}

sub counts_logged {
    my ($model, $id, $name) = @_;
    my ($p, $c) = @{$COUNT{$id}};
    like(logged($model), qr/^\Q$model\E p=$p c=$c 200$/,
        "$name: prompt $p and completion $c logged");
}

# the last request the mock got for $id, decoded
sub received {
    my ($mock, $re) = @_;
    my ($q) = grep { ($_->{body} // '') =~ $re || $_->{path} =~ $re }
        reverse @{$t->mock_requests($mock)};
    return ($q, eval { JSON::PP::decode_json($q->{body}) } || {});
}

###########################################################################
# answers read whole

for my $c (['o-chat', 'o-chat', 'openai'],
           ['c-chat', 'c-chat', 'openai_compatible'],
           ['a-chat', 'a-chat-dep', 'azure'],
           ['an-chat', 'an-chat', 'anthropic'],
           ['g-chat', 'g-chat', 'gemini'],
           ['b-chat', 'b-chat', 'bedrock'])
{
    my ($model, $id, $type) = @$c;
    my $r = $t->chat($model);
    is($r->{status}, 200, "$type chat: 200");
    my ($p, $cc) = @{$COUNT{$id}};
    is_deeply([@{$r->{json}{usage} || {}}{qw(prompt_tokens
        completion_tokens)}], [$p, $cc], "$type chat: the client's usage");
    counts_logged($model, $id, "$type chat");
}

{
    my $r = $t->post_json('/v1/embeddings', { model => 'o-emb',
        input => 'hello' });
    is($r->{status}, 200, 'embeddings: 200');
    counts_logged('o-emb', 'o-emb', 'embeddings');
}

{
    my $r = $t->post_json('/v1/responses', { model => 'o-resp',
        input => 'hello' });
    is($r->{status}, 200, 'responses: 200');
    is($r->{json}{usage}{input_tokens}, 107, 'responses: the client usage');
    counts_logged('o-resp', 'o-resp', 'responses (a nested usage before)');
}

{
    my $r = $t->chat('o-close');
    is($r->{status}, 200, 'close-delimited: 200');
    is($r->{body}, $CLOSE_BODY, 'close-delimited: the body as sent');
    counts_logged('o-close', 'o-close',
        'close-delimited, 36 KB, in three reads');
}

###########################################################################
# OpenAI-type chat streams whose client did not ask for usage

for my $c (['o-stream', 'o-stream', 'openai'],
           ['c-stream', 'c-stream', 'openai_compatible'],
           ['a-stream', 'a-stream-dep', 'azure'])
{
    my ($model, $id, $type) = @$c;
    my $s = $t->chat_stream($model);
    is($s->status, 200, "$type stream: 200");
    my $body = $s->rest(10);
    $s->close;
    ok($s->complete, "$type stream: complete");
    is($body, join('', chat_events($id, 0)),
        "$type stream: exactly the events without the usage chunk");
    unlike($body, qr/"usage":\{/, "$type stream: no usage reached the client");

    my ($q, $j) = received('oai', qr/\Q$id\E/);
    ok(JSON::PP::is_bool($j->{stream_options}{include_usage})
        && $j->{stream_options}{include_usage},
        "$type stream: the backend was asked for include_usage true");
    counts_logged($model, $id, "$type stream");
}

# merged into the client's own stream_options
{
    my $s = $t->chat_stream('o-merge', body => { stream_options => {
        include_obfuscation => JSON::PP::false } });
    my $body = $s->rest(10);
    $s->close;
    is($body, join('', chat_events('o-merge', 0)),
        'merge: no usage chunk for the client');
    my ($q, $j) = received('oai', qr/o-merge/);
    is_deeply($j->{stream_options}, { include_usage => JSON::PP::true,
        include_obfuscation => JSON::PP::false },
        'merge: include_usage added to the client\'s stream_options');
    is_deeply([sort keys %$j], [qw(messages model stream stream_options)],
        'merge: no other member changed');
    counts_logged('o-merge', 'o-merge', 'merge');
}

{
    my $s = $t->chat_stream('o-false', body => { stream_options => {
        include_usage => JSON::PP::false } });
    my $body = $s->rest(10);
    $s->close;
    is($body, join('', chat_events('o-false', 0)),
        'include_usage false: no usage chunk for the client');
    my ($q, $j) = received('oai', qr/o-false/);
    ok($j->{stream_options}{include_usage},
        'include_usage false: the backend got true');
    counts_logged('o-false', 'o-false', 'include_usage false');
}

# stream_options null before a model that is renamed: two splices
{
    my $sent = '{"stream_options":null,"model":"o-ren","stream":true,'
        . '"messages":[{"role":"user","content":"hi"}]}';
    my $s = $t->stream(method => 'POST', path => '/v1/chat/completions',
        body => $sent, headers => [['Content-Type', 'application/json']]);
    my $body = $s->rest(10);
    $s->close;
    is($body, join('', chat_events('o-ren-id', 0)),
        'null, renamed: no usage chunk for the client');
    my ($q) = received('oai', qr/o-ren-id/);
    is($q->{body}, '{"stream_options":{"include_usage":true},'
        . '"model":"o-ren-id","stream":true,'
        . '"messages":[{"role":"user","content":"hi"}]}',
        'null, renamed: both changes, nothing else');
    counts_logged('o-ren', 'o-ren-id', 'null, renamed');
}

# the client asked: the chunk passes unchanged
{
    my $s = $t->chat_stream('o-asked', @ASK);
    my $body = $s->rest(10);
    $s->close;
    is($body, join('', chat_events('o-asked', 1)),
        'asked: every event, the usage chunk unchanged');
    counts_logged('o-asked', 'o-asked', 'asked');
}

###########################################################################
# stream_usage off

{
    my $sent = '{"model":"s-stream","stream":true,'
        . '"messages":[{"role":"user","content":"hi"}]}';
    my $s = $t->stream(method => 'POST', path => '/v1/chat/completions',
        body => $sent, headers => [['Content-Type', 'application/json']]);
    is($s->status, 200, 'stream_usage off: 200 (no stream_options sent)');
    my $body = $s->rest(10);
    $s->close;
    is($body, join('', chat_events('s-stream', 0)),
        'stream_usage off: the stream as sent');
    my ($q) = received('oai', qr/s-stream/);
    is($q->{body}, $sent, 'stream_usage off: the body the client sent');
    like(logged('s-stream'), qr/^s-stream p=- c=- 200$/,
        'stream_usage off: usage unknown, logged empty');

    $s = $t->chat_stream('s-asked', @ASK);
    $body = $s->rest(10);
    $s->close;
    is($body, join('', chat_events('s-asked', 1)),
        'stream_usage off, asked: the usage chunk passes');
    counts_logged('s-asked', 's-asked', 'stream_usage off, asked');
}

###########################################################################
# Responses streams

for my $c (['o-resp-s', 'event names'], ['o-resp-n', 'no event names']) {
    my ($model, $what) = @$c;
    my $s = $t->stream(method => 'POST', path => '/v1/responses',
        json => { model => $model, input => 'hi', stream => JSON::PP::true });
    is($s->status, 200, "responses stream ($what): 200");
    my $body = $s->rest(10);
    $s->close;
    like($body, qr/response\.completed/,
        "responses stream ($what): completed event passed");
    counts_logged($model, $model, "responses stream ($what)");
}

###########################################################################
# translated streams, asked for or not

for my $c (['an-stream', 'an-asked', 'anthropic'],
           ['g-stream', 'g-asked', 'gemini'],
           ['b-stream', 'b-asked', 'bedrock'])
{
    my ($plain, $asked, $type) = @$c;

    my $s = $t->chat_stream($plain);
    is($s->status, 200, "$type stream: 200");
    my $body = $s->rest(10);
    $s->close;
    ok($s->complete, "$type stream: complete");
    my @d = MG::Test::sse_data($body);
    is($d[-1], '[DONE]', "$type stream: [DONE] last");
    is(scalar(grep { /"usage":\{/ } @d), 0,
        "$type stream: not asked, no usage chunk");
    counts_logged($plain, $plain, "$type stream, not asked");

    $s = $t->chat_stream($asked, @ASK);
    $body = $s->rest(10);
    $s->close;
    my ($u) = grep { ref $_->{usage} eq 'HASH' } MG::Test::sse_json($body);
    my ($p, $cc) = @{$COUNT{$asked}};
    is_deeply($u && [@{$u->{usage}}{qw(prompt_tokens completion_tokens)}],
        [$p, $cc], "$type stream, asked: the usage chunk");
    counts_logged($asked, $asked, "$type stream, asked");
}

###########################################################################
# clients that go away mid-stream

{
    my $s = $t->chat_stream('o-dc');
    ok(defined $s->next_event(10), 'disconnect: first event');
    ok(defined $s->next_event(10), 'disconnect: second event');
    $s->close;
    like(logged('o-dc'), qr/^o-dc p=- c=- \d+$/,
        'disconnect: no usage seen, the variables empty');

    $s = $t->chat_stream('an-dc');
    ok(defined $s->next_event(10), 'anthropic disconnect: first event');
    $s->close;
    like(logged('an-dc'), qr/^an-dc p=154 c=1 \d+$/,
        'anthropic disconnect: what message_start said');
}

# still serving
{
    my $r = $t->chat('o-chat');
    is($r->{status}, 200, 'after the disconnects: 200');
}

$t->done_testing;
