#!/usr/bin/perl

# Failover between backends (README "Failover", "Responses"):
#   - the showcase: a plain http backend that fails, then an https backend
#     with another path prefix, key, host name (SNI, Host) and model alias;
#   - every retried failure kind goes to the other backend, whose answer
#     the client gets;
#   - a response that stalls after it started is not retried by default,
#     and is with model_gateway_retry_idle_timeout on;
#   - model_gateway_tries 1;
#   - backend 4xx other than 401/403/408/429 passed through, not retried.
#
# The error contract after all attempts failed is in t/021-errors.t.
#
# Candidate order: each scenario has its own model, served by a failing
# backend of weight 100 and a good one of weight 1; the smooth weighted
# round robin (per model, shared by all workers) picks the heavy one first.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use JSON::PP qw(decode_json encode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $JSON = JSON::PP->new->utf8->canonical;

my $KEY_A  = 'sk-key-of-a-0123456789';
my $KEY_B  = 'sk-key-of-b-9876543210';
my $KEY_F  = 'sk-key-of-f-aaaaaaaaaa';
my $KEY_OK = 'sk-key-of-ok-bbbbbbbbb';
my $CLIENT_KEY = 'sk-client-must-not-be-forwarded';

my $RAW = '{"error":{"message":"RAW-UPSTREAM-BODY","type":"server_error"}}';

sub model_of {
    my $req = shift;
    my $j = eval { decode_json($req->{body} // '') };
    return ref $j eq 'HASH' ? $j : {};
}

# requests a mock received for one (provider-side) model id
sub reqs_for {
    my ($mock, $model) = @_;
    return [grep { (model_of($_)->{model} // '') eq $model }
        @{$t->mock_requests($mock)}];
}

###########################################################################
# mocks

my ($bcrt, $bkey) = $t->cert('b.test');

# showcase "a": plain http, always 503 with a raw body
$t->mock('a', handler => sub {
    return { status => 503, headers => [['Content-Type', 'application/json']],
             body => $RAW };
});

# showcase "b": https, answers
$t->mock('b', tls => [$bcrt, $bkey], handler => sub {
    my $req = shift;
    return { status => 200,
             headers => [['Content-Type', 'application/json'],
                         ['x-request-id', "req-b-$req->{n}"]],
             body => MG::Test::openai_completion(
                 model => model_of($req)->{model}, content => 'answer from b',
                 id => "chatcmpl-b-$req->{n}") };
});

# the failing backend: behaviour chosen by the model in the request body
$t->mock('fail', handler => sub {
    my $req = shift;
    my $m = model_of($req)->{model} // '';
    my $json = ['Content-Type', 'application/json'];

    if ($m =~ /^st(\d{3})/) {
        return { status => $1, headers => [$json], body => $RAW };
    }
    if ($m =~ /^one(\d{3})$/) {
        return { status => $1, headers => [$json], body => $RAW };
    }
    if ($m eq 'fbt') {
        return { no_response => 1, no_response_timeout => 10 };
    }
    if ($m eq 'sse_err') {
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => ['data: {"error":{"message":"RAW-UPSTREAM-BODY",'
                            . '"type":"server_error","code":"overloaded"}}'
                            . "\n\n", "data: [DONE]\n\n"] };
    }
    if ($m =~ /^cl_cut/) {
        my $body = MG::Test::openai_completion(model => $m,
            content => 'RAW-UPSTREAM-BODY half');
        return { raw_pieces => [
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            . "Content-Length: " . (length($body) + 100) . "\r\n\r\n",
            $body] };
    }
    if ($m =~ /^chunk_cut/) {
        # a complete JSON document in one chunk, but no terminating chunk
        my $body = MG::Test::openai_completion(model => $m,
            content => 'RAW-UPSTREAM-BODY unterminated');
        return { raw_pieces => [
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            . "Transfer-Encoding: chunked\r\n\r\n",
            sprintf("%x\r\n%s\r\n", length $body, $body)] };
    }
    if ($m =~ /^stall/) {
        # header and part of the body, then nothing (until the peer closes)
        return { raw_pieces => [
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            . "Content-Length: 500\r\n\r\n",
            '{"id":"chatcmpl-stall","object":"chat.completion",'],
            hold_after => 2, release => 'never-released',
            hold_timeout => 10 };
    }
    if ($m =~ /^p(\d{3})$/) {
        return { status => $1,
                 headers => [$json, ['x-request-id', "req-fail-$req->{n}"]],
                 body => '{"error":{"message":"client mistake ' . $1 . '",'
                         . '"type":"invalid_request_error",'
                         . '"param":"temperature","code":"bad_' . $1 . '"}}' };
    }
    return { status => 500, body => "unexpected model $m" };
});

# the good backend: a completion or a stream naming itself
$t->mock('ok', handler => sub {
    my $req = shift;
    my $j = model_of($req);
    if ($j->{stream}) {
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => [MG::Test::openai_stream_events(
                     model => $j->{model}, pieces => ['answer ', 'from ok'],
                     id => "chatcmpl-ok-$req->{n}")] };
    }
    return { status => 200,
             headers => [['Content-Type', 'application/json'],
                         ['x-request-id', "req-ok-$req->{n}"]],
             body => MG::Test::openai_completion(model => $j->{model},
                 content => 'answer from ok', id => "chatcmpl-ok-$req->{n}") };
});

###########################################################################
# configuration

my @STATUSES = (408, 429, 500, 502, 503, 504, 529, 520, 521, 522, 523, 524,
                401, 403);
my @PASS = (400, 404, 422);

my @f_models = ((map { "st$_" } @STATUSES), 'st503s', 'fbt', 'sse_err',
    'cl_cut', 'chunk_cut', 'cl_cut_r', 'chunk_cut_r', 'stall', 'stall_retry',
    'one503', 'one429', (map { "p$_" } @PASS));
my @ok_models = (@f_models, 'refused');

my $f_models = join "\n", map { "        model $_;" } @f_models;
my $ok_models = join "\n", map { "        model $_;" } @ok_models;

for my $k ([a => $KEY_A], [b => $KEY_B], [f => $KEY_F], [ok => $KEY_OK]) {
    my $path = $t->dir . "/key-$k->[0]";
    open my $fh, '>', $path or die "$path: $!";
    print $fh "  $k->[1]\n";
    close $fh;
    chmod 0644, $path;
}

$t->write_conf(<<"EOF", F_MODELS => $f_models, OK_MODELS => $ok_models);
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # failover tests: no passive cool-downs between requests
    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;

    log_format gw '\$request_uri \$status model=\$model_gateway_model '
                  'backend=\$model_gateway_backend '
                  'attempts=[\$model_gateway_attempts]';

    model_gateway_ssl_trusted_certificate %%CA%%;

    # showcase
    model_gateway_backend a {
        type openai;
        url http://a.test:%%PORT_a%%/v1;
        connect 127.0.0.1:%%PORT_a%%;
        key_file %%DIR%%/key-a;
        model smart;
        weight 100;
    }

    model_gateway_backend b {
        type openai;
        url https://b.test:%%PORT_b%%/api/openai;
        connect 127.0.0.1:%%PORT_b%%;
        key_file %%DIR%%/key-b;
        ssl_trusted_certificate %%CA%%;
        model smart gpt-4.1-2025;
        weight 1;
    }

    # failure kinds
    model_gateway_backend f {
        type openai;
        url http://f.test:%%PORT_fail%%/v1;
        connect 127.0.0.1:%%PORT_fail%%;
        key_file %%DIR%%/key-f;
        first_byte_timeout 1s;
        idle_timeout 1s;
        weight 100;
%%F_MODELS%%
    }

    model_gateway_backend dead {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_dead%%/v1;
        model refused;
        weight 100;
    }

    model_gateway_backend ok {
        type openai;
        url http://ok.test:%%PORT_ok%%/v1;
        connect 127.0.0.1:%%PORT_ok%%;
        key_file %%DIR%%/key-ok;
        weight 1;
%%OK_MODELS%%
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        access_log %%DIR%%/gw.log gw;

        location /v1/ {
            model_gateway;
        }

        location /retry/ {
            model_gateway;
            model_gateway_retry_idle_timeout on;
        }

        location /one/ {
            model_gateway;
            model_gateway_tries 1;
        }
    }
}
EOF

$t->run;

my $MSGS = [{ role => 'user', content => 'hi' }];

# options of every $t->chat() here: the client's key, a body without
# Content-Type, a 20 s limit
my @CHAT = (headers => [['Authorization', "Bearer $CLIENT_KEY"]],
            no_content_type => 1, timeout => 20);

sub gw_log_line {
    my $model = shift;
    my $line;
    $t->wait_for(sub {
        open my $fh, '<', $t->dir . '/gw.log' or return;
        ($line) = grep { /model=\Q$model\E / } <$fh>;
        return $line;
    }, 5);
    chomp $line if defined $line;
    return $line // '';
}

###########################################################################
# 1. the showcase

{
    my $body = $JSON->encode({ model => 'smart', messages => $MSGS });
    my $r = $t->request(method => 'POST', path => '/v1/chat/completions',
        headers => [['Authorization', "Bearer $CLIENT_KEY"],
                    ['Content-Type', 'application/json']],
        body => $body);

    is($r->{status}, 200, 'showcase: client gets 200');
    is($r->{json} && $r->{json}{choices}[0]{message}{content},
        'answer from b', "showcase: b's answer");
    is($r->{json} && $r->{json}{id}, 'chatcmpl-b-1', "showcase: b's id");
    unlike($r->{body}, qr/RAW-UPSTREAM-BODY/, "showcase: a's body not sent");

    my $ra = $t->mock_requests('a');
    is(scalar @$ra, 1, 'showcase: a got one request');
    is($ra->[0]{path}, '/v1/chat/completions', 'showcase: a path');
    is($ra->[0]{headers}{authorization}, "Bearer $KEY_A",
        "showcase: a got its own key");
    is($ra->[0]{headers}{host}, 'a.test:' . $t->port('a'),
        'showcase: a Host');
    is($ra->[0]{sni}, undef, 'showcase: a is plain http');
    is(model_of($ra->[0])->{model}, 'smart', 'showcase: a got model smart');
    is($ra->[0]{body}, $body, 'showcase: a got the body byte for byte');

    my $rb = $t->mock_requests('b');
    is(scalar @$rb, 1, 'showcase: b got one request');
    is($rb->[0]{method}, 'POST', 'showcase: b method');
    is($rb->[0]{path}, '/api/openai/chat/completions',
        "showcase: b path with b's prefix");
    is($rb->[0]{headers}{authorization}, "Bearer $KEY_B",
        "showcase: b got b's key");
    is($rb->[0]{headers}{host}, 'b.test:' . $t->port('b'),
        'showcase: b Host from the URL');
    is($rb->[0]{sni}, 'b.test', 'showcase: b SNI');
    is(model_of($rb->[0])->{model}, 'gpt-4.1-2025',
        'showcase: b got the provider model id');
    (my $expect_b = $body) =~ s/"model":"smart"/"model":"gpt-4.1-2025"/;
    is($rb->[0]{body}, $expect_b,
        'showcase: b body = client body with only the model replaced');

    like(gw_log_line('smart'),
        qr/ 200 model=smart backend=b attempts=\[a:503, ?b:200\]$/,
        'showcase: $model_gateway_attempts / _backend');
}

###########################################################################
# 2. retried failures: each goes to the other backend

sub failover_ok {
    my (%o) = @_;
    my ($name, $model) = @o{qw(name model)};
    my $r = $t->chat($model, @CHAT, stream => $o{stream},
                     prefix => $o{prefix});

    is($r->{status}, 200, "$name: client gets 200 from the other backend");
    if ($o{stream}) {
        like($r->{headers}{'content-type'} // '', qr{^text/event-stream},
            "$name: stream content type");
        my @data = MG::Test::sse_data($r->{body});
        my @json = MG::Test::sse_json($r->{body});
        is(join('', map { $_->{choices}[0]{delta}{content} // '' } @json),
            'answer from ok', "$name: ok's stream content");
        ok(!(grep { exists $_->{error} } @json), "$name: no error event");
        is($data[-1], '[DONE]', "$name: stream ends with [DONE]");
        is(scalar(grep { $_ eq '[DONE]' } @data), 1, "$name: one [DONE]");
    } else {
        is($r->{json} && $r->{json}{choices}[0]{message}{content},
            'answer from ok', "$name: ok's answer");
        is($r->{json} && $r->{json}{model}, $model, "$name: model");
    }
    unlike($r->{body}, qr/RAW-UPSTREAM-BODY/,
        "$name: nothing of the failed attempt reaches the client");
    ok($r->{complete}, "$name: response complete");

    if ($o{fail_mock}) {
        is(scalar @{reqs_for($o{fail_mock}, $model)}, 1,
            "$name: failing backend got one request");
    }
    my $okr = reqs_for('ok', $model);
    is(scalar @$okr, 1, "$name: other backend got one request");
    is($okr->[0] && $okr->[0]{headers}{authorization}, "Bearer $KEY_OK",
        "$name: other backend got its own key");
    like(gw_log_line($model), qr/attempts=\[$o{attempt}, ?ok:200\]$/,
        "$name: attempts variable") if $o{attempt};
    return $r;
}

failover_ok(name => 'connection refused', model => 'refused',
    attempt => 'dead:connect_error');

{
    my $t0 = time;
    failover_ok(name => 'first-byte timeout', model => 'fbt',
        fail_mock => 'fail', attempt => 'f:first_byte_timeout');
    my $el = time - $t0;
    ok($el >= 0.9, "first-byte timeout: waited for the timeout ($el s)");
    my $n = reqs_for('fail', 'fbt')->[0]{n};
    ok($t->wait_mock_event('fail', 'closed', 5, req => $n,
        during => 'no_response'),
        'first-byte timeout: gateway closed the timed-out connection');
}

for my $st (@STATUSES) {
    failover_ok(name => "status $st", model => "st$st", fail_mock => 'fail',
        attempt => "f:$st");
}

failover_ok(name => 'status 503, streaming request', model => 'st503s',
    fail_mock => 'fail', stream => 1, attempt => 'f:503');

failover_ok(name => '200 stream whose first event is an error',
    model => 'sse_err', fail_mock => 'fail', stream => 1,
    attempt => 'f:stream_error');

# README "Responses": a non-streaming body is read whole before any byte
# reaches the client, "so a backend that closes mid-body fails over instead
# of sending half an answer" (by default, unlike a stall: see below)
failover_ok(name => 'Content-Length body cut short', model => 'cl_cut',
    fail_mock => 'fail', attempt => 'f:closed');

failover_ok(name => 'chunked body without terminator', model => 'chunk_cut',
    fail_mock => 'fail', attempt => 'f:closed');

# and with model_gateway_retry_idle_timeout on as well
failover_ok(name => 'Content-Length body cut short, retry_idle_timeout on',
    model => 'cl_cut_r', prefix => '/retry/v1', fail_mock => 'fail',
    attempt => 'f:closed');

failover_ok(name => 'chunked body without terminator, retry_idle_timeout on',
    model => 'chunk_cut_r', prefix => '/retry/v1', fail_mock => 'fail',
    attempt => 'f:closed');

###########################################################################
# 3. a response that stalls after it started

{
    my $t0 = time;
    my $r = $t->chat('stall', @CHAT);
    my $el = time - $t0;
    is($r->{status}, 504, 'stall: 504');
    is($r->{headers}{'x-should-retry'}, 'false', 'stall: x-should-retry');
    is($r->{json} && $r->{json}{error}{code}, 'backend_timeout',
        'stall: code backend_timeout');
    unlike($r->{body}, qr/chatcmpl-stall/, 'stall: partial body not sent');
    ok($el >= 0.9 && $el < 8, "stall: after the idle timeout ($el s)");
    is(scalar @{reqs_for('fail', 'stall')}, 1, 'stall: one attempt');
    is(scalar @{reqs_for('ok', 'stall')}, 0,
        'stall: not retried by default (other backend got nothing)');

}

{
    my $t0 = time;
    failover_ok(name => 'stall, retry_idle_timeout on', model => 'stall_retry',
        prefix => '/retry/v1', fail_mock => 'fail',
        attempt => 'f:idle_timeout');
    my $el = time - $t0;
    ok($el >= 0.9, "stall, retry_idle_timeout on: after the idle timeout ($el s)");
}

###########################################################################
# 4. model_gateway_tries 1

{
    my $r = $t->chat('one503', @CHAT, prefix => '/one/v1');
    is($r->{status}, 502, 'tries 1, 503: 502');
    is($r->{json} && $r->{json}{error}{code}, 'backend_error',
        'tries 1, 503: backend_error');
    like($r->{json} && $r->{json}{error}{message}, qr/f:503/,
        'tries 1, 503: message names the attempt');
    unlike($r->{json} && $r->{json}{error}{message} // '', qr/\bok\b/,
        'tries 1, 503: only one attempt listed');
    is($r->{headers}{'x-should-retry'}, 'false', 'tries 1, 503: no retry');
    unlike($r->{body}, qr/RAW-UPSTREAM-BODY/, 'tries 1, 503: raw body hidden');
    is(scalar @{reqs_for('fail', 'one503')}, 1, 'tries 1, 503: one attempt');
    is(scalar @{reqs_for('ok', 'one503')}, 0,
        'tries 1, 503: other backend got nothing');

    $r = $t->chat('one429', @CHAT, prefix => '/one/v1');
    is($r->{status}, 429, 'tries 1, 429: 429');
    is($r->{json} && $r->{json}{error}{code}, 'rate_limit_exceeded',
        'tries 1, 429: rate_limit_exceeded');
    ok(defined $r->{headers}{'retry-after'}, 'tries 1, 429: Retry-After');
    is(scalar @{reqs_for('fail', 'one429')}, 1, 'tries 1, 429: one attempt');
    is(scalar @{reqs_for('ok', 'one429')}, 0,
        'tries 1, 429: other backend got nothing');
}

###########################################################################
# 6. other 4xx: passed through as sent, not retried

for my $st (@PASS) {
    my $r = $t->chat("p$st", @CHAT);
    my $n = reqs_for('fail', "p$st")->[0];
    is($r->{status}, $st, "pass-through $st: status");
    is($r->{body}, '{"error":{"message":"client mistake ' . $st . '",'
        . '"type":"invalid_request_error","param":"temperature",'
        . '"code":"bad_' . $st . '"}}', "pass-through $st: body as sent");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "pass-through $st: content type");
    is($r->{headers}{'x-request-id'}, $n && "req-fail-$n->{n}",
        "pass-through $st: x-request-id from the backend");
    is(scalar @{reqs_for('fail', "p$st")}, 1, "pass-through $st: one attempt");
    is(scalar @{reqs_for('ok', "p$st")}, 0,
        "pass-through $st: other backend got nothing");
}

###########################################################################
# keys never in logs

{
    my $log = $t->error_log;
    for my $k ($KEY_A, $KEY_B, $KEY_F, $KEY_OK) {
        unlike($log, qr/\Q$k\E/, "key not in error.log");
    }
}

$t->done_testing;
