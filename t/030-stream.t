#!/usr/bin/perl

# Streaming ("stream": true) through the model gateway: SSE pass-through as
# events arrive, events split at awkward byte boundaries, the hold until the
# first content event (failover on a leading error event), streams that are
# cut, stall, end without [DONE] or run past model_gateway_total_timeout,
# client disconnects, a backend that ignores "stream", and a stream to an
# HTTP/2 client.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $J = JSON::PP->new->canonical;           # ASCII-only payloads below

###########################################################################
# realistic OpenAI chunks

sub chunk_json {
    my (%o) = @_;
    return {
        id                 => $o{id} // 'chatcmpl-9xStream',
        object             => 'chat.completion.chunk',
        created            => 1717000000,
        model              => $o{model} // 'gpt-4o-mini-2024-07-18',
        system_fingerprint => 'fp_0123456789',
        choices            => $o{choices},
        (exists $o{usage} ? (usage => $o{usage}) : ()),
    };
}

sub ev { 'data: ' . $J->encode($_[0]) . "\n\n" }

# role chunk, one content chunk per piece, finish chunk, usage chunk with
# choices [], and (unless $no_done) data: [DONE]
sub openai_events {
    my ($pieces, %o) = @_;
    my @e;
    push @e, ev(chunk_json(%o, choices => [{ index => 0,
        delta => { role => 'assistant', content => '', refusal => undef },
        logprobs => undef, finish_reason => undef }], usage => undef));
    for my $p (@$pieces) {
        push @e, ev(chunk_json(%o, choices => [{ index => 0,
            delta => { content => $p }, logprobs => undef,
            finish_reason => undef }], usage => undef));
    }
    push @e, ev(chunk_json(%o, choices => [{ index => 0, delta => {},
        logprobs => undef, finish_reason => 'stop' }], usage => undef));
    push @e, ev(chunk_json(%o, choices => [], usage => {
        prompt_tokens => 9, completion_tokens => scalar @$pieces,
        total_tokens => 9 + @$pieces }));
    push @e, "data: [DONE]\n\n" unless $o{no_done};
    return @e;
}

my @MAIN = openai_events(['Hello', ',', ' how', ' can', ' I', ' help?']);
my @FAILOVER = openai_events(['Fail', 'over', ' worked'], id => 'chatcmpl-good');
my @COMMENTS = (": ping\n\n", ":ping\n: still thinking\n\n",
    openai_events(['after', ' pings']));
my @CUT = openai_events(['one', ' two', ' three']);
my @STALL = openai_events(['slow', ' start']);
my @NODONE = openai_events(['no', ' done'], no_done => 1);
my @DC = openai_events(['bye', ' bye']);
my @PACED = ((openai_events(['paced']))[0, 1],
    map { ": keepalive $_\n\n" } 1 .. 40);
my @AFTER = openai_events(['after', ' disconnect']);

my $ERR_EVENT = 'data: {"error":{"message":"The server is overloaded",'
    . '"type":"server_error","param":null,"code":"server_overloaded"}}'
    . "\n\n";
my $NAMED_ERR_EVENT = "event: error\n"
    . 'data: {"message":"upstream exploded","type":"server_error"}' . "\n\n";

my $JSON_BODY = MG::Test::openai_completion(model => 'json-id',
    id => 'chatcmpl-json', content => 'I ignore stream');

# The split case: bytes with multi-byte UTF-8 and CRLF line endings.
my $u1 = "h\x{e9}llo w\x{f6}rld \x{4e16}\x{754c} \x{1f642}!";
my $u2 = " \x{2014} \x{fc}n\x{ef}c\x{f6}d\x{e9}";
utf8::encode($u1);
utf8::encode($u2);
my @SPLIT = (
    ev(chunk_json(choices => [{ index => 0, delta => { role => 'assistant',
        content => '' }, finish_reason => undef }])),
    'data: {"choices":[{"delta":{"content":"' . $u1 . '"},"index":0}],'
        . '"id":"chatcmpl-split","object":"chat.completion.chunk"}' . "\r\n\r\n",
    'data: {"choices":[{"delta":{"content":"' . $u2 . '"},"index":0}],'
        . '"id":"chatcmpl-split","object":"chat.completion.chunk"}' . "\r\n\r\n",
    ev(chunk_json(choices => [{ index => 0, delta => {},
        finish_reason => 'stop' }])),
    "data: [DONE]\r\n\r\n",
);
my $SPLIT_TEXT = join '', @SPLIT;

# chunked framing whose chunk boundaries fall inside the 4-byte emoji and
# inside the "data:" of the third event
my $emoji = index($SPLIT_TEXT, "\xf0\x9f\x99\x82");
my $third = length($SPLIT[0]) + length($SPLIT[1]);       # its "data:"
my @split_chunks = (
    substr($SPLIT_TEXT, 0, $emoji + 2),
    substr($SPLIT_TEXT, $emoji + 2, $third + 2 - ($emoji + 2)),
    substr($SPLIT_TEXT, $third + 2),
);
my $SPLIT_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
my $SPLIT_RAW = $SPLIT_HEAD
    . join('', map { sprintf("%x\r\n", length) . "$_\r\n" } @split_chunks)
    . "0\r\n\r\n";

# TCP-level cuts: inside a chunk-size line, inside a "data:" prefix, inside
# a multi-byte character, between \r and \n
my @cuts;
{
    my $size2 = sprintf("\r\n%x\r\n", length $split_chunks[1]);
    my $p = index($SPLIT_RAW, $size2);
    die "chunk size line not found" if $p < 0 || length($size2) < 6;
    push @cuts, $p + 3;                                  # "1|a3\r\n"
    my $d = index($SPLIT_RAW, 'data:', index($SPLIT_RAW, $u2));
    push @cuts, $d + 2;                                  # "da|ta:" (4th)
    my $cjk = index($SPLIT_RAW, "\xe4\xb8\x96");         # U+4E16
    push @cuts, $cjk + 1;
    my $crlf = index($SPLIT_RAW, "\"}\r\n\r\n", index($SPLIT_RAW, $u2));
    push @cuts, $crlf + 3;                               # "\r|\n"
    my $fin = index($SPLIT_RAW, "data: [DONE]\r\n");
    push @cuts, $fin + length("data: [DONE]\r");         # "\r|\n" again
    @cuts = sort { $a <=> $b } @cuts;
}
my @SPLIT_PIECES;
{
    my $prev = 0;
    for my $c (@cuts, length $SPLIT_RAW) {
        push @SPLIT_PIECES, substr($SPLIT_RAW, $prev, $c - $prev);
        $prev = $c;
    }
}

###########################################################################
# mocks

my $SSE = [['Content-Type', 'text/event-stream']];

my %SPEC = (
    'stream-id'   => { chunks => \@MAIN, hold_after => 2,
                       release => 'release-main' },
    'split-id'    => { raw_pieces => \@SPLIT_PIECES, piece_delay => 0.05 },
    'comments-id' => { chunks => \@COMMENTS },
    'whole-id'    => { body => join('', @MAIN) },
    'fo-good'     => { chunks => \@FAILOVER },
    'fo2-good'    => { chunks => \@FAILOVER },
    'cut-id'      => { chunks => \@CUT, close_after => 3 },
    'stall-id'    => { chunks => \@STALL, hold_after => 2,
                       release => 'release-never-stall', hold_timeout => 60 },
    'nodone-id'   => { chunks => \@NODONE },
    'dc-id'       => { chunks => \@DC, hold_after => 2,
                       release => 'release-never-dc', hold_timeout => 60 },
    'after-id'    => { chunks => \@AFTER },
    'json-id'     => { headers => [['Content-Type', 'application/json']],
                       body => $JSON_BODY },
    'paced-id'    => { chunks => \@PACED, chunk_delay => 0.5 },
);

my $handler = sub {
    my $r = shift;
    my $j = eval { JSON::PP::decode_json($r->{body}) } || {};
    my $spec = $SPEC{$j->{model} // ''}
        or return { status => 400, headers => [['Content-Type',
            'application/json']], body => '{"error":{"message":"mock: '
            . 'unknown model","type":"invalid_request_error"}}' };
    return { status => 200, headers => $SSE, %$spec };
};

$t->mock('up', handler => $handler);
$t->mock('bad', handler => sub {
    my $r = shift;
    my $j = eval { JSON::PP::decode_json($r->{body}) } || {};
    my $first = ($j->{model} // '') eq 'fo2-bad' ? $NAMED_ERR_EVENT
        : $ERR_EVENT;
    return { status => 200, headers => $SSE,
        chunks => [$first, "data: [DONE]\n\n"] };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format gw '$request_uri $status $model_gateway_model '
                  '$model_gateway_backend [$model_gateway_attempts]';

    model_gateway_backend s {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_up%%/v1;
        model stream stream-id;
        model split split-id;
        model comments comments-id;
        model whole whole-id;
        model cut cut-id;
        model nodone nodone-id;
        model dc dc-id;
        model after after-id;
        model json json-id;
        model paced paced-id;
    }

    model_gateway_backend slow {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_up%%/v1;
        model stall stall-id;
        idle_timeout 1s;
    }

    model_gateway_backend bad {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        model failover fo-bad;
        model failover2 fo2-bad;
        weight 1000;
    }

    model_gateway_backend good {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_up%%/v1;
        model failover fo-good;
        model failover2 fo2-good;
        weight 1;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        access_log %%DIR%%/gw.log gw;

        location /v1/ {
            model_gateway;
        }

        location /tt/ {
            model_gateway;
            model_gateway_total_timeout 2s;
        }
    }

    # HTTP/2 without TLS (prior knowledge), for curl
    server {
        listen 127.0.0.1:%%PORT_h2%% http2;

        location /v1/ {
            model_gateway;
        }
    }
}
EOF

$t->run;

# every $t->chat_stream() here asks for the usage chunk
my @USAGE =
    (body => { stream_options => { include_usage => JSON::PP::true } });

sub data_of { [MG::Test::sse_data(@_)] }

sub gw_log_line {
    my $model = shift;
    my $line;
    $t->wait_for(sub {
        my $log = MG::Test::_read_file($t->dir . '/gw.log', 1) // '';
        ($line) = grep { / $model / } split /\n/, $log;
        return $line;
    }, 5);
    return $line // '';
}

# checks that $body ends with an interrupted-stream error event then [DONE]
sub ends_interrupted {
    my ($body, $name, $content) = @_;
    my @d = MG::Test::sse_data($body);
    my @want = MG::Test::sse_data(@$content);
    is_deeply([@d[0 .. $#want]], \@want, "$name: content events first")
        or diag(explain(\@d));
    is(scalar @d, @want + 2, "$name: then exactly two more events");
    my $err = eval { JSON::PP::decode_json($d[-2] // '') };
    ok($err && ref $err eq 'HASH' && ref $err->{error} eq 'HASH',
        "$name: error event with an error object") or diag($d[-2]);
    is($err && $err->{error}{code}, 'stream_interrupted',
        "$name: error.code stream_interrupted");
    is($d[-1], '[DONE]', "$name: [DONE] last");
}

###########################################################################
# pass-through: events reach the client before the backend sends the rest

{
    my $s = $t->chat_stream('stream', @USAGE);
    is($s->status, 200, 'stream: status 200');
    like($s->header('content-type') // '', qr{^text/event-stream\b},
        'stream: content-type text/event-stream');
    like($s->header('cache-control') // '', qr/\bno-cache\b/,
        'stream: cache-control no-cache');
    is($s->header('x-accel-buffering'), 'no', 'stream: x-accel-buffering no');
    ok(!defined $s->header('content-length'), 'stream: no content-length');

    my $e1 = $s->next_event(10);
    my $e2 = $s->next_event(10);
    is($e1, $MAIN[0], 'stream: role chunk received before release');
    is($e2, $MAIN[1], 'stream: first content chunk received before release');
    ok(!-e $t->dir . '/release-main', 'stream: release file not created yet');
    is($s->next_event(0.5), undef, 'stream: nothing more while the mock holds');
    $t->release('release-main');
    my $rest = $s->rest(10);
    is($rest, join('', @MAIN[2 .. $#MAIN]),
        'stream: remaining events identical, in order');
    is_deeply(data_of($e1, $e2, $rest), data_of(@MAIN),
        'stream: all payloads in order');
    ok($s->complete, 'stream: chunked response terminated');
    ok(!$s->error, 'stream: no framing error');

    my $req = $t->mock_requests('up')->[0];
    is($req->{path}, '/v1/chat/completions', 'stream: backend path');
    my $j = eval { JSON::PP::decode_json($req->{body}) } || {};
    is($j->{model}, 'stream-id', 'stream: backend model id');
    ok($j->{stream}, 'stream: stream flag forwarded');
}

###########################################################################
# events split at awkward places

{
    my $s = $t->chat_stream('split', @USAGE);
    is($s->status, 200, 'split: status 200');
    my $body = $s->rest(10);
    ok($s->complete, 'split: response terminated');
    is($body, $SPLIT_TEXT, 'split: client receives exactly the original bytes');
    is_deeply(data_of($body), data_of($SPLIT_TEXT), 'split: payloads');
    is(scalar @SPLIT_PIECES, 6, 'split: response sent in 6 raw pieces');
}

###########################################################################
# hold until first content: failover on a leading error event

for my $case (['failover', 'JSON error member'],
              ['failover2', 'event: error'])
{
    my ($model, $what) = @$case;
    my $nbad = scalar @{$t->mock_requests('bad')};
    my $s = $t->chat_stream($model, @USAGE);
    is($s->status, 200, "$model ($what): status 200");
    my $body = $s->rest(10);
    ok($s->complete, "$model: response terminated");
    is($body, join('', @FAILOVER), "$model: only the second backend's stream");
    unlike($body, qr/overloaded|exploded|error/,
        "$model: no trace of the error event");
    # (nginx logs the request after its lingering close: close our side)
    $s->close;
    is(scalar @{$t->mock_requests('bad')}, $nbad + 1,
        "$model: the erroring backend was tried first");
    like(gw_log_line($model), qr/ good \[bad:[^,\]]+,good:200\]$/,
        "$model: attempts logged as bad then good");
}
ok($t->grep_log(qr/backend "bad" answered 200 but its stream began with an error event/),
    'failover: error.log explains the failover');

# comments before content pass
{
    my $s = $t->chat_stream('comments', @USAGE);
    is($s->status, 200, 'comments: status 200');
    my $body = $s->rest(10);
    ok($s->complete, 'comments: response terminated');
    is_deeply(data_of($body), data_of(@COMMENTS),
        'comments: every data event passed');
    is(scalar(grep { /"error"/ } MG::Test::sse_data($body)), 0,
        'comments: no error event');
    is($s->trailing(5), '', 'comments: the response ends once');
}

# a whole stream in one read, framed by a length: its last events and the
# end of the response leave together, and the response ends only once
{
    my $s = $t->chat_stream('whole', @USAGE);
    is($s->status, 200, 'whole: status 200');
    my $body = $s->rest(10);
    ok($s->complete, 'whole: response terminated');
    is_deeply(data_of($body), data_of(@MAIN), 'whole: every event passed');
    is($s->trailing(5), '', 'whole: the response ends once');
}

# the same over HTTP/2 (curl, installed by make deps, reads the frames): the
# stream ends with END_STREAM after its events and one [DONE]
SKIP: {
    my $curl = `sh -c 'command -v curl' 2>/dev/null`;
    chomp $curl;
    skip 'curl not installed', 4 unless $curl;

    # (it asks for the usage chunk, as every stream here does)
    my $body = '{"model":"whole","stream":true,"messages":'
        . '[{"role":"user","content":"hi"}],'
        . '"stream_options":{"include_usage":true}}';
    my $out = `$curl -sS --http2-prior-knowledge --max-time 10 -N \\
        -H 'Content-Type: application/json' --data-binary '$body' \\
        -w '\\n%{http_version} %{http_code}' \\
        http://127.0.0.1:@{[ $t->port('h2') ]}/v1/chat/completions 2>&1`;
    my $rc = $? >> 8;
    is($rc, 0, 'http2: curl read the stream without an error') or diag($out);
    like($out, qr/\n2 200\z/, 'http2: status 200 over HTTP/2');
    (my $events = $out) =~ s/\n2 200\z//;
    is_deeply(data_of($events), data_of(@MAIN), 'http2: every event passed');
    is(scalar(grep { $_ eq '[DONE]' } MG::Test::sse_data($events)), 1,
        'http2: one [DONE]');
}

###########################################################################
# stream cut after content

{
    my $s = $t->chat_stream('cut', @USAGE);
    is($s->status, 200, 'cut: status 200');
    my $body = $s->rest(10);
    ok($s->complete, 'cut: chunked terminator received');
    ok(!$s->timed_out, 'cut: ended, not timed out');
    ends_interrupted($body, 'cut', [@CUT[0 .. 2]]);
    ok($t->wait_log(qr/stream from backend "s" cut/),
        'cut: error.log has the cut line');
}

###########################################################################
# stream stalls after content (idle_timeout 1s)

{
    my $s = $t->chat_stream('stall', @USAGE);
    is($s->status, 200, 'stall: status 200');
    my $body = $s->rest(15);
    ok(!$s->timed_out, 'stall: ended within the bound');
    ok($s->complete, 'stall: chunked terminator received');
    ends_interrupted($body, 'stall', [@STALL[0 .. 1]]);
    my ($req) = grep { $_->{body} =~ /"stall-id"/ } @{$t->mock_requests('up')};
    ok($req && $t->wait_mock_event('up', 'closed', 5, req => $req->{n}),
        'stall: the mock sees its connection closed');
    ok($t->wait_log(qr/stream from backend "slow" cut/),
        'stall: error.log has the cut line');
}

###########################################################################
# stream ends without [DONE]

{
    my $s = $t->chat_stream('nodone', @USAGE);
    is($s->status, 200, 'nodone: status 200');
    my $body = $s->rest(10);
    ok($s->complete, 'nodone: response terminated');
    is_deeply(data_of($body), [MG::Test::sse_data(@NODONE), '[DONE]'],
        'nodone: content events then one [DONE] added');
    is(scalar(grep { /"error"/ } MG::Test::sse_data($body)), 0,
        'nodone: no error event');
    is(substr($body, 0, length join('', @NODONE)), join('', @NODONE),
        'nodone: backend events passed unchanged');
}

###########################################################################
# client disconnects mid-stream

{
    my $s = $t->chat_stream('dc', @USAGE);
    is($s->status, 200, 'disconnect: status 200');
    is($s->next_event(10), $DC[0], 'disconnect: first event');
    $s->close;
    my ($req) = grep { $_->{body} =~ /"dc-id"/ } @{$t->mock_requests('up')};
    my $ev = $req && $t->wait_mock_event('up', 'closed', 5, req => $req->{n});
    ok($ev, 'disconnect: the mock records its connection closed');
    is($ev && $ev->{during}, 'hold', 'disconnect: closed while holding');

    my $s2 = $t->chat_stream('after', @USAGE);
    is($s2->status, 200, 'disconnect: next request served');
    is($s2->rest(10), join('', @AFTER), 'disconnect: next stream whole');
    ok($s2->complete, 'disconnect: next stream terminated');
}

###########################################################################
# stream requested, backend answers application/json

{
    my $s = $t->chat_stream('json', @USAGE);
    is($s->status, 200, 'json: status 200');
    like($s->header('content-type') // '', qr{^application/json},
        'json: content-type application/json');
    is($s->rest(10), $JSON_BODY, 'json: body passed through whole');
    ok($s->complete, 'json: response complete');
}

###########################################################################
# model_gateway_total_timeout 2s on a stream kept alive by comments

{
    my $s = $t->chat_stream('paced', @USAGE,
        path => '/tt/v1/chat/completions');
    is($s->status, 200, 'total timeout: status 200');
    my $body = $s->rest(15);
    ok(!$s->timed_out, 'total timeout: ended within the bound');
    ok($s->complete, 'total timeout: chunked terminator received');
    ends_interrupted($body, 'total timeout', [@PACED[0 .. 1]]);
    ok($t->wait_log(qr/model_gateway_total_timeout of 2000 ms expired/),
        'total timeout: logged');
    my ($req) = grep { $_->{body} =~ /"paced-id"/ } @{$t->mock_requests('up')};
    ok($req && $t->wait_mock_event('up', 'closed', 5, req => $req->{n}),
        'total timeout: the mock sees its connection closed');
}

$t->done_testing;
