#!/usr/bin/perl

# The error contract after all attempts failed (README "Errors"): status,
# OpenAI error object with its four keys, x-should-retry: false, and never
# the backend's own error body:
#   - every attempt rate limited: 429 + Retry-After (shortest wait, whole
#     seconds rounded up; 1 s without any hint);
#   - last failure a timeout: 504 backend_timeout;
#   - last failure a 401/403: 502 backend_auth_failed;
#   - anything else: 502 backend_error listing the attempts;
#   - model_gateway_total_timeout: 504 timeout.
#
# Candidate order: backend x (weight 100) first, then y (weight 1); each
# scenario has its own model, and the mocks answer according to it.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $RAW = '{"error":{"message":"RAW-UPSTREAM-BODY","type":"server_error"}}';
my $ECHO = '{"error":{"message":"Incorrect API key ECHOED-KEY-MARKER"}}';

sub model_of {
    my $req = shift;
    my $j = eval { decode_json($req->{body} // '') };
    return ref $j eq 'HASH' ? $j : {};
}

sub reqs_for {
    my ($mock, $model) = @_;
    return [grep { (model_of($_)->{model} // '') eq $model }
        @{$t->mock_requests($mock)}];
}

sub st {
    my ($status, @h) = @_;
    return { status => $status,
             headers => [['Content-Type', 'application/json'], @h],
             body => $status == 401 || $status == 403 ? $ECHO : $RAW };
}

my $HANG = { no_response => 1, no_response_timeout => 15 };

# model => [answer of e1 (backend x, tried first), answer of e2 (y)]
my %PLAN = (
    rl_short_first => [st(429, ['Retry-After', '3']),
                       st(429, ['Retry-After', '7'])],
    rl_ms          => [st(429, ['Retry-After', '7']),
                       st(429, ['retry-after-ms', '2500'])],
    rl_none        => [st(429), st(429)],
    last_fbt       => [st(503), $HANG],
    all503         => [st(503), st(503)],
    all503s        => [st(503), st(503)],
    all401         => [st(401), st(401)],
    auth_mixed     => [st(503), st(403)],
    mixed          => [st(429, ['Retry-After', '5']), st(503)],
    mixed2         => [st(503), st(429, ['Retry-After', '5'])],
    slow           => [$HANG, $HANG],
);

for my $i (0, 1) {
    my $name = ('e1', 'e2')[$i];
    $t->mock($name, handler => sub {
        my $m = model_of($_[0])->{model} // '';
        return $PLAN{$m} ? $PLAN{$m}[$i]
            : { status => 500, body => "unexpected model $m" };
    });
}

my $models = join "\n", map { "        model $_;" } grep { $_ ne 'slow' }
    sort keys %PLAN;

$t->write_conf(<<'EOF', MODELS => $models);
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # failover tests: no passive cool-downs between requests
    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;

    model_gateway_backend x {
        type openai_compatible;
        url http://x.test:%%PORT_e1%%/v1;
        connect 127.0.0.1:%%PORT_e1%%;
        first_byte_timeout 1s;
        weight 100;
%%MODELS%%
    }

    model_gateway_backend y {
        type openai_compatible;
        url http://y.test:%%PORT_e2%%/v1;
        connect 127.0.0.1:%%PORT_e2%%;
        first_byte_timeout 1s;
        weight 1;
%%MODELS%%
    }

    model_gateway_backend sx {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_e1%%/v1;
        first_byte_timeout 10s;
        weight 100;
        model slow;
    }

    model_gateway_backend sy {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_e2%%/v1;
        first_byte_timeout 10s;
        weight 1;
        model slow;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        location /v1/ {
            model_gateway;
        }

        location /tt/ {
            model_gateway;
            model_gateway_total_timeout 2s;
        }
    }
}
EOF

$t->run;

# options of every $t->chat() here: a body without Content-Type, 20 s
my @CHAT = (no_content_type => 1, timeout => 20);

# checks the contract; returns the error object
sub contract {
    my ($name, $r, $status, $code) = @_;
    is($r->{status}, $status, "$name: status $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: application/json");
    is($r->{headers}{'x-should-retry'}, 'false', "$name: x-should-retry false");
    my $j = $r->{json};
    ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH' && keys(%$j) == 1,
        "$name: an OpenAI error object") or diag($r->{body});
    my $e = ref $j eq 'HASH' && ref $j->{error} eq 'HASH' ? $j->{error} : {};
    is_deeply([sort keys %$e], [qw(code message param type)],
        "$name: message, type, param, code");
    is($e->{code}, $code, "$name: code $code");
    ok(defined $e->{message} && length $e->{message}, "$name: a message");
    unlike($r->{body}, qr/RAW-UPSTREAM-BODY|ECHOED-KEY-MARKER/,
        "$name: the backend's error body is not passed on");
    ok($r->{complete}, "$name: response complete");
    return $e;
}

sub both_tried {
    my ($name, $model) = @_;
    is(scalar @{reqs_for('e1', $model)}, 1, "$name: x tried once");
    is(scalar @{reqs_for('e2', $model)}, 1, "$name: y tried once");
}

###########################################################################
# every attempt rate limited

{
    my $r = $t->chat('rl_short_first', @CHAT);
    my $e = contract('all 429, Retry-After 3 and 7', $r, 429,
        'rate_limit_exceeded');
    is($r->{headers}{'retry-after'}, '3',
        'all 429, Retry-After 3 and 7: shortest wait');
    is($e->{type}, 'rate_limit_error', 'all 429: type rate_limit_error');
    both_tried('all 429, Retry-After 3 and 7', 'rl_short_first');

    $r = $t->chat('rl_ms', @CHAT);
    contract('all 429, Retry-After 7 and retry-after-ms 2500', $r, 429,
        'rate_limit_exceeded');
    is($r->{headers}{'retry-after'}, '3',
        'all 429, Retry-After 7 and retry-after-ms 2500: 2.5 s rounded up');
    both_tried('all 429, Retry-After 7 and retry-after-ms 2500', 'rl_ms');

    $r = $t->chat('rl_none', @CHAT);
    contract('all 429 without Retry-After', $r, 429, 'rate_limit_exceeded');
    is($r->{headers}{'retry-after'}, '1',
        'all 429 without Retry-After: Retry-After 1');
    both_tried('all 429 without Retry-After', 'rl_none');
}

###########################################################################
# last failure a timeout

{
    my $r = $t->chat('last_fbt', @CHAT);
    my $e = contract('503 then first-byte timeout', $r, 504,
        'backend_timeout');
    both_tried('503 then first-byte timeout', 'last_fbt');
}

###########################################################################
# everything else: 502 backend_error with the attempts

{
    my $r = $t->chat('all503', @CHAT);
    my $e = contract('all 503', $r, 502, 'backend_error');
    like($e->{message} // '', qr/\bx:503\b/, 'all 503: message lists x:503');
    like($e->{message} // '', qr/\by:503\b/, 'all 503: message lists y:503');
    unlike($r->{body}, qr/Service Unavailable|<html/i,
        'all 503: not an nginx page');
    both_tried('all 503', 'all503');

    $r = $t->chat('all503s', @CHAT, stream => 1);
    $e = contract('all 503, streaming request', $r, 502, 'backend_error');
    like($e->{message} // '', qr/\bx:503\b.*\by:503\b/,
        'all 503, streaming request: message lists the attempts');
    both_tried('all 503, streaming request', 'all503s');

    $r = $t->chat('mixed', @CHAT);
    $e = contract('429 then 503', $r, 502, 'backend_error');
    ok(!defined $r->{headers}{'retry-after'},
        '429 then 503: not all rate limited, no Retry-After');
    like($e->{message} // '', qr/\bx:429\b.*\by:503\b/,
        '429 then 503: message lists the attempts');
    both_tried('429 then 503', 'mixed');

    $r = $t->chat('mixed2', @CHAT);
    contract('503 then 429', $r, 502, 'backend_error');
    both_tried('503 then 429', 'mixed2');
}

###########################################################################
# authentication failures

{
    my $r = $t->chat('all401', @CHAT);
    my $e = contract('all 401', $r, 502, 'backend_auth_failed');
    is($e->{message}, 'backend authentication failed',
        'all 401: message');
    both_tried('all 401', 'all401');

    $r = $t->chat('auth_mixed', @CHAT);
    $e = contract('503 then 403', $r, 502, 'backend_auth_failed');
    is($e->{message}, 'backend authentication failed',
        '503 then 403: message');
    both_tried('503 then 403', 'auth_mixed');

    unlike($t->error_log, qr/ECHOED-KEY-MARKER/,
        "401/403 bodies are not logged");
}

###########################################################################
# model_gateway_total_timeout

{
    my $t0 = time;
    my $r = $t->chat('slow', @CHAT, prefix => '/tt/v1');
    my $el = time - $t0;
    ok(defined $r->{status}, "total timeout: the request returns ($el s)");
    ok($el < 8, 'total timeout: well before the first-byte timeout');
    ok($el >= 1.5, 'total timeout: not before it expired');
    contract('total timeout', $r, 504, 'timeout');
    is(scalar @{reqs_for('e1', 'slow')}, 1, 'total timeout: x was tried');
}

$t->done_testing;
