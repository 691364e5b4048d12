#!/usr/bin/perl

# Self-test of the MG::Test harness with plain nginx proxying (works with or
# without MG_MODULE): mocks (http and https), request recording, SNI,
# upstream keepalive, held SSE streams, client aborts, truncated upstream
# responses, raw pieces, TLS verification against the test CA, redis,
# reload, nginx -t.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use JSON::PP qw(decode_json encode_json);
use MG::Test;

my $t = MG::Test->new;

###########################################################################
# pure helpers

is_deeply([MG::Test::sse_data("data: a\n\n: comment\n\ndata: b\r\ndata:c\r\n\r\n"
    . "event: x\ndata: {\"k\":1}\n\ndata: [DONE]\n\n")],
    ['a', "b\nc", '{"k":1}', '[DONE]'], 'sse_data');
is_deeply([MG::Test::sse_json(MG::Test::openai_stream_events(
    pieces => ['x']))]->[1]{choices}[0]{delta}{content}, 'x',
    'openai_stream_events / sse_json');

###########################################################################
# servers

my ($crt, $key) = $t->cert('a.test');
ok(-s $crt && -s $key, 'cert for a.test');
my ($rcrt, $rkey) = $t->rogue_cert('a.test');
ok(-s $rcrt && -s $rkey, 'rogue cert');
isnt($t->port('gw'), $t->port('plain'), 'distinct ports');
is($t->port('gw'), $t->port('gw'), 'same name, same port');

my @sse = map { "data: {\"i\":$_}\n\n" } 1 .. 3;

my $echo = sub {
    my $r = shift;
    return {
        status  => 201,
        headers => [['Content-Type', 'application/json'], ['X-Mock', 'echo'],
                    ['X-Multi', 'a'], ['X-Multi', 'b']],
        body    => encode_json({ method => $r->{method}, path => $r->{path},
                                 n => $r->{n}, conn => $r->{conn} }),
    };
};

$t->mock('plain', handler => $echo);
$t->mock('slow', handler => sub { return { %{$echo->(shift)}, delay => 1 } });
$t->mock('ka', handler => $echo);
$t->mock('tls', tls => [$crt, $key]);
$t->mock('rogue', tls => [$rcrt, $rkey]);
$t->mock('sse', handler => sub {
    my $r = shift;
    my %spec = (headers => [['Content-Type', 'text/event-stream']],
                chunks => [@sse]);
    if ($r->{path} eq '/held') {
        return { %spec, hold_after => 1, release => 'release-held' };
    } elsif ($r->{path} eq '/abort') {
        return { %spec, hold_after => 1, release => 'never' };
    } elsif ($r->{path} eq '/cut') {
        return { %spec, close_after => 2 };
    } elsif ($r->{path} eq '/hang') {
        return { no_response => 1 };
    } elsif ($r->{path} eq '/raw') {
        return { raw_pieces => ["HTTP/1.1 200 OK\r\nContent-Le",
                                "ngth: 11\r\n\r\nhello",
                                " world"] };
    }
    return { %spec, chunk_delay => 0.01 };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    upstream ka {
        server 127.0.0.1:%%PORT_ka%%;
        keepalive 4;
    }

    upstream tls {
        server 127.0.0.1:%%PORT_tls%%;
        keepalive 4;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        location /plain/ {
            proxy_pass http://127.0.0.1:%%PORT_plain%%/;
        }

        location /slow/ {
            proxy_pass http://127.0.0.1:%%PORT_slow%%/;
        }

        location /ka/ {
            proxy_pass http://ka/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        location /tls/ {
            proxy_pass https://tls/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_server_name on;
            proxy_ssl_name a.test;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %%CA%%;
        }

        location /rogue/ {
            proxy_pass https://127.0.0.1:%%PORT_rogue%%/;
            proxy_ssl_server_name on;
            proxy_ssl_name a.test;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %%CA%%;
        }

        location /sse/ {
            proxy_pass http://127.0.0.1:%%PORT_sse%%/;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_read_timeout 1s;
        }
    }
}
EOF

my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t') or diag($out);

$t->run;
ok($t->is_running, 'nginx running');

###########################################################################
# plain http: what the mock recorded

my $r = $t->request(method => 'POST', path => '/plain/v1/x?q=1',
    headers => [['X-Test', 'hello'], ['Content-Type', 'application/json']],
    body => '{"model":"m"}');
is($r->{status}, 201, 'plain: status');
is($r->{headers}{'x-mock'}, 'echo', 'plain: response header');
is($r->{headers}{'x-multi'}, 'a, b', 'plain: repeated headers joined');
is(scalar(grep { lc $_->[0] eq 'x-multi' } @{$r->{header_list}}), 2,
    'plain: header_list keeps repeats');
is($r->{json}{path}, '/v1/x?q=1', 'plain: json body decoded');
ok($r->{complete}, 'plain: complete');

my $reqs = $t->mock_requests('plain');
is(scalar @$reqs, 1, 'plain: one request recorded');
is($reqs->[0]{method}, 'POST', 'plain: method');
is($reqs->[0]{path}, '/v1/x?q=1', 'plain: path with query');
is($reqs->[0]{headers}{'x-test'}, 'hello', 'plain: header');
is($reqs->[0]{body}, '{"model":"m"}', 'plain: body');
is($reqs->[0]{n}, 1, 'plain: n');
is($reqs->[0]{conn}, 1, 'plain: conn');
is($reqs->[0]{sni}, undef, 'plain: no sni');

# chunked request body from the client, re-sent by nginx
$r = $t->request(method => 'POST', path => '/plain/chunked',
    headers => [['Transfer-Encoding', 'chunked']],
    body => "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
is($r->{status}, 201, 'chunked request: status');
is($t->mock_requests('plain')->[1]{body}, 'hello world',
    'chunked request: body recorded');

# requests sent now and read later, several at a time
my @pending = map { $t->start_request(path => "/slow/p$_") } 1 .. 2;
ok(!$t->request_ready($pending[0]), 'pending: no answer yet (mock waits 1 s)');
my @done = map { $t->finish_request($_, 10) } @pending;
is(join(' ', map { "$_->{status}:$_->{json}{path}" } @done),
   '201:/p1 201:/p2', 'pending: both answered, each its own');
is(scalar @{$t->mock_requests('slow')}, 2, 'pending: the mock got both');

###########################################################################
# https: SNI, verification

$r = $t->request(method => 'POST', path => '/tls/v1/chat/completions',
    json => { model => 'gpt-x', messages => [] },
    headers => { 'X-Tls' => 'yes' });
is($r->{status}, 200, 'tls: status');
is($r->{json}{object}, 'chat.completion', 'tls: default handler');
is($r->{json}{model}, 'gpt-x', 'tls: default handler echoes model');
$reqs = $t->mock_requests('tls');
is($reqs->[0]{sni}, 'a.test', 'tls: sni');
is($reqs->[0]{path}, '/v1/chat/completions', 'tls: path');
is($reqs->[0]{headers}{'x-tls'}, 'yes', 'tls: header');
is(decode_json($reqs->[0]{body})->{model}, 'gpt-x', 'tls: body');

$r = $t->request(path => '/rogue/');
is($r->{status}, 502, 'rogue cert: rejected by nginx');
is(scalar @{$t->mock_requests('rogue')}, 0, 'rogue cert: no request');
ok($t->wait_log(qr/upstream SSL certificate verify error/),
    'rogue cert: verify error logged');

###########################################################################
# upstream keepalive

for my $i (1 .. 3) {
    $r = $t->request(path => "/ka/$i");
    is($r->{status}, 201, "keepalive: request $i");
}
$reqs = $t->mock_requests('ka');
is(scalar @$reqs, 3, 'keepalive: 3 requests');
is($t->mock_connections('ka'), 1, 'keepalive: 1 connection');
is_deeply([map { $_->{conn_req} } @$reqs], [1, 2, 3], 'keepalive: conn_req');

###########################################################################
# streaming

my $s = $t->stream(path => '/sse/plain');
is($s->status, 200, 'stream: status');
my @ev;
while (defined(my $e = $s->next_event(5))) { push @ev, $e }
is_deeply(\@ev, \@sse, 'stream: events');
ok($s->complete, 'stream: complete');

# held stream, released by the test after the first event
$s = $t->stream(path => '/sse/held');
is($s->status, 200, 'held: status');
is($s->header('content-type'), 'text/event-stream', 'held: content-type');
is($s->next_event(5), $sse[0], 'held: first event');
my $t0 = time;
is($s->next_event(0.3), undef, 'held: nothing more before release');
ok($s->timed_out, 'held: timed out');
$t->release('release-held');
is($s->next_event(5), $sse[1], 'held: second event after release');
is($s->rest(5), $sse[2], 'held: rest');
ok($s->complete, 'held: complete');

# client disconnects during a held stream
$s = $t->stream(path => '/sse/abort');
is($s->next_event(5), $sse[0], 'abort: first event');
$s->close;
my $ev = $t->wait_mock_event('sse', 'closed', 5);
ok($ev, 'abort: mock saw the connection closed');
is($ev && $ev->{during}, 'hold', 'abort: closed during hold');

# upstream closes mid-stream: nginx must not terminate the chunked body
$s = $t->stream(path => '/sse/cut');
is($s->next_event(5), $sse[0], 'cut: first event');
is($s->next_event(5), $sse[1], 'cut: second event');
is($s->next_event(5), undef, 'cut: then EOF');
ok(!$s->complete, 'cut: response incomplete');
ok(!$s->timed_out, 'cut: not a timeout');

# raw pieces split inside the header
$r = $t->request(path => '/sse/raw');
is($r->{status}, 200, 'raw pieces: status');
is($r->{body}, 'hello world', 'raw pieces: body');

# upstream never answers: proxy_read_timeout, mock records the close
$r = $t->request(path => '/sse/hang');
is($r->{status}, 504, 'no response: 504');
ok($t->wait_mock_event('sse', 'closed', 5, during => 'no_response'),
    'no response: mock saw the close');

###########################################################################
# redis

my $rport = $t->redis;
ok($rport, 'redis started');
is($t->redis_cmd('SET', 'k', 'v'), 'OK', 'redis SET');
is($t->redis_cmd('GET', 'k'), 'v', 'redis GET');
is($t->redis_cmd('INCRBY', 'c', 5), 5, 'redis INCRBY');
is_deeply($t->redis_cmd('LRANGE', 'none', 0, -1), [], 'redis empty array');
ok(ref $t->redis_cmd('NOSUCHCMD') eq 'HASH', 'redis error reply');

###########################################################################
# reload

my @old = $t->worker_pids;
ok(@old, 'workers present');
ok($t->reload, 'reload');
my %old = map { $_ => 1 } @old;
ok((grep { !$old{$_} } $t->worker_pids), 'new worker pids');
$r = $t->request(path => '/ka/after-reload');
is($r->{status}, 201, 'request after reload');

$t->done_testing;
