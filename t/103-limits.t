#!/usr/bin/perl

# Limits per key and per tenant (README "Limits"):
#   - rpm: a minute's limit passes at once, the next request is a 429
#     rate_limit_exceeded with Retry-After and retry-after-ms, and no
#     backend sees it; x-ratelimit-*-requests count down on every answer;
#   - the backend's own x-ratelimit-* never reach a client of a location
#     with identity (the gateway's replace them, or none without limits);
#   - tpm: the reservation (body bytes / 4 + max_tokens, or the default)
#     is checked whole; more than the limit is "Request too large" without
#     Retry-After; the real usage settles the charge (a refund makes room,
#     an overrun refuses the next request); a request no backend answered
#     is charged nothing;
#   - tpd per UTC day, a key budget (429 insufficient_quota, no retry);
#   - model_gateway_tenant_limits: a tenant's keys share its limits, "*"
#     is every other tenant, identity from variables is limited too;
#   - counters under <prefix>:{TENANT}:rl:..., one hash tag;
#   - two nodes on one Redis share a limit exactly under concurrency;
#   - a session request with limits costs one Redis command (the LIMIT
#     script looks the pin up too);
#   - Redis down: fail open (shared memory, limits divided by
#     model_gateway_limit_nodes) and fail closed (503).

use strict;
use warnings;

use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP qw(decode_json);
use Time::HiRes qw(time sleep);
use MG::Test;

my $t = MG::Test->new;          # node A
$t->need_module;
my $tb = MG::Test->new;         # node B: the same Redis, fails closed

my $DIR = $t->dir;
my $JSON = JSON::PP->new->utf8->canonical;

# the mock answers with the usage the request asks for: a user message
# "usage P C" (else 5 and 3); "fail" answers 500; it sends its own
# x-ratelimit headers, which no client of a gateway location may see
$t->mock('a', handler => sub {
    my $req = shift;
    my $b = eval { decode_json($req->{body}) } || {};
    my $text = eval { $b->{messages}[-1]{content} } // '';
    my ($pt, $ct) = $text =~ /usage (\d+) (\d+)/ ? ($1, $2) : (5, 3);
    return { status => 500, headers => [['Content-Type',
             'application/json']], body => '{"error":{"message":"x"}}' }
        if $text =~ /fail/;
    my @h = (['x-ratelimit-limit-requests', '99999'],
             ['x-ratelimit-remaining-requests', '99998'],
             ['x-ratelimit-limit-tokens', '777777']);
    if ($b->{stream} && $text =~ /slow/) {
        # a stream that holds until the client has gone: no usage seen
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => [(MG::Test::openai_stream_events())[0 .. 1]],
                 hold_after => 1, release => 'never', hold_timeout => 3 };
    }
    if ($b->{stream}) {
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream'], @h],
                 chunks => [MG::Test::openai_stream_events(usage => 1,
                                prompt_tokens => $pt,
                                completion_tokens => $ct)] };
    }
    return { status => 200, headers => [['Content-Type', 'application/json'],
                                        @h],
             body => MG::Test::openai_completion(model => 'm',
                        prompt_tokens => $pt, completion_tokens => $ct) };
});

MG::Test::_write_file("$DIR/key-a", "sk-test-key-of-a\n");
chmod 0644, "$DIR/key-a";

# keys: name => [tenant, fields]
my %KEYS = (
    rpm     => ['t1', 'rpm=3'],
    free    => ['t1', ''],
    tpm     => ['t2', 'tpm=1000'],
    tpm2    => ['t2b', 'tpm=1000'],
    tpm3    => ['t2c', 'tpm=1000'],
    tpd     => ['t4', 'tpd=700'],
    budget  => ['t5', 'budget=700'],
    share1  => ['t3', ''],
    share2  => ['t3', ''],
    two     => ['t6', 'rpm=10'],
    sess    => ['t7', 'rpm=1000'],
    down    => ['t8', 'rpm=4'],
    fails   => ['t9', 'tpm=1000'],
    gone    => ['t10', 'tpm=1000'],
    seven   => ['t11', 'rpm=7'],
    both    => ['t12', 'rpm=1 tpm=50'],
);
my %K;
my @lines;
for my $n (sort keys %KEYS) {
    $K{$n} = "mgk_test_limits_$n" . ('x' x 20);
    push @lines, join(' ', "id-$n", $KEYS{$n}[0],
                      'sha256:' . sha256_hex($K{$n}), $KEYS{$n}[1]);
}
MG::Test::_write_file("$DIR/keys", join("\n", @lines) . "\n");

my $RPORT = $t->redis;

sub node_conf {
    my ($node, $fallback) = @_;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_connect_timeout 500ms;
    model_gateway_limit_default_max_tokens 100;
    model_gateway_limit_fallback %%FALLBACK%%;
    model_gateway_limit_nodes 2;

    model_gateway_tenant_limits t3 rpm=4;
    model_gateway_tenant_limits tv rpm=2;
    model_gateway_tenant_limits * rpm=100000;

    model_gateway_backend a {
        type openai;
        url http://127.0.0.1:%%PA%%/v1;
        key_file %%KDIR%%/key-a;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        location /v1/ {
            model_gateway;
            model_gateway_key_file %%KDIR%%/keys;
            model_gateway_session $http_x_session_id;
        }

        location /var/v1/ {
            model_gateway;
            model_gateway_identity $http_x_tenant;
        }

        location /open/v1/ {
            model_gateway;
        }
    }
}
EOF
        RPORT => $RPORT, PA => $t->port('a'), KDIR => $DIR,
        FALLBACK => $fallback);
    $node->run;
}

node_conf($t, 'open');
node_conf($tb, 'closed');

for my $n ($t, $tb) {
    ok($t->wait_for(sub { $n->grep_log(qr/redis \S+ is up/) >= 1 }, 10),
       'connected to redis');
}

sub nreq { scalar @{$t->mock_requests('a')} }

sub call {
    my ($key, %o) = @_;
    my $node = delete $o{node} // $t;
    my $text = delete $o{text} // 'hi';
    return $node->chat('m', messages => [{ role => 'user',
                                           content => $text }],
                       headers => [['Authorization', "Bearer $K{$key}"],
                                   @{delete $o{headers} || []}],
                       %o);
}

sub hdr { $_[0]{headers}{$_[1]} }

my %st;

# --- requests per minute ---------------------------------------------------

my $before = nreq();
for my $i (1 .. 3) {
    my $r = call('rpm');
    is($r->{status}, 200, "rpm: request $i passes");
    is(hdr($r, 'x-ratelimit-limit-requests'), 3, "rpm: limit header $i");
    is(hdr($r, 'x-ratelimit-remaining-requests'), 3 - $i,
       "rpm: remaining $i");
    like(hdr($r, 'x-ratelimit-reset-requests') // '',
         qr/^(\d+ms|\d+(\.\d+)?s|\d+m\d+(\.\d+)?s)$/,
         "rpm: reset as OpenAI writes it ($r->{headers}{'x-ratelimit-reset-requests'})");
    ok(!defined hdr($r, 'x-ratelimit-limit-tokens'),
       "rpm: no token headers without a token limit");
}
my $r = call('rpm');
is($r->{status}, 429, 'rpm: the 4th is refused');
is($r->{json}{error}{code}, 'rate_limit_exceeded', 'rpm: the code');
is($r->{json}{error}{type}, 'requests', 'rpm: the type');
like($r->{json}{error}{message}, qr/key 'id-rpm' on requests per minute: limit 3/,
     'rpm: the message names the key id and the limit');
unlike($r->{body}, qr/mgk_/, 'rpm: the key is not in the body');
ok(hdr($r, 'retry-after') >= 1 && hdr($r, 'retry-after') <= 20,
   'rpm: Retry-After within the refill (' . hdr($r, 'retry-after') . ')');
ok(hdr($r, 'retry-after-ms') > 0 && hdr($r, 'retry-after-ms') <= 20000,
   'rpm: retry-after-ms');
is(hdr($r, 'x-ratelimit-remaining-requests'), 0, 'rpm: 0 remain on the 429');
is(nreq() - $before, 3, 'rpm: the backend saw 3 requests');

# 60000 / 7 ms is not exact: a burst of 7 still passes, the 8th does not
%st = ();
for my $i (1 .. 8) {
    $st{call('seven')->{status}}++;
}
is($st{200}, 7, 'rpm=7: 7 at once');
is($st{429}, 1, 'rpm=7: the 8th refused');

# two refusals at once: the one that never fits decides
$r = call('both', body => { max_tokens => 5 });
is($r->{status}, 200, 'both: the first request passes');
$r = call('both', body => { max_tokens => 1000 });
is($r->{status}, 429, 'both: rpm and tpm refuse');
like($r->{json}{error}{message}, qr/^Request too large .* tokens per minute/,
     'both: the never-fitting token limit is the one named');
is($r->{json}{error}{type}, 'tokens', 'both: type tokens');
ok(!defined hdr($r, 'retry-after'), 'both: no Retry-After');

# another key of the same tenant has its own counters
$r = call('free');
is($r->{status}, 200, 'another key of the tenant is not limited by it');
ok(!defined hdr($r, 'x-ratelimit-limit-requests') ||
   hdr($r, 'x-ratelimit-limit-requests') == 100000,
   'the backend\'s x-ratelimit headers never pass (default tenant limit)');
isnt(hdr($r, 'x-ratelimit-limit-tokens') // '', '777777',
     'the backend\'s token header is dropped');

# no identity: the backend's headers pass as before
$r = $t->chat('m', prefix => '/open/v1');
is(hdr($r, 'x-ratelimit-limit-requests'), '99999',
   'without identity the backend\'s headers pass');

# the counters' layout: one hash tag per tenant
my $keys = $t->redis_cmd('KEYS', 'mg:*:rl:*');
ok((grep { $_ eq 'mg:{t1}:rl:key:id-rpm:rpm' } @$keys),
   'the key\'s counter is mg:{t1}:rl:key:id-rpm:rpm');
ok((grep { $_ eq 'mg:{t1}:rl:rpm' } @$keys),
   'the tenant\'s counter (from "*") is mg:{t1}:rl:rpm');

# --- tokens per minute -------------------------------------------------------

# 2000 output tokens can never fit 1000
$r = call('tpm', body => { max_tokens => 2000 });
is($r->{status}, 429, 'tpm: a request larger than the limit');
like($r->{json}{error}{message}, qr/Request too large .* limit 1000, requested 20\d\d/,
     'tpm: "Request too large" with the numbers');
ok(!defined hdr($r, 'retry-after'), 'tpm: no Retry-After for never');

# a body of about 200 bytes and max_tokens 500: about 550 reserved
my $pad = 'p' x 120;
$r = call('tpm', text => "usage 10 20 $pad", body => { max_tokens => 500 });
is($r->{status}, 200, 'tpm: 550 of 1000 pass');
is(hdr($r, 'x-ratelimit-limit-tokens'), 1000, 'tpm: the token limit header');
my $rem = hdr($r, 'x-ratelimit-remaining-tokens');
ok($rem >= 400 && $rem <= 460, "tpm: about 450 remain ($rem)");

# settled with the real 30 tokens: 550 fit again at once
$t->wait_for(sub { 0 }, 0.3);
$r = call('tpm', text => "usage 10 20 $pad", body => { max_tokens => 500 });
is($r->{status}, 200, 'tpm: the refund of the first made room');

# an overrun: 550 reserved, 5000 used; the next small request is refused
$r = call('tpm2', text => "usage 4000 1000 $pad",
          body => { max_tokens => 500 });
is($r->{status}, 200, 'tpm: a request that fits passes');
$t->wait_for(sub { 0 }, 0.3);
$r = call('tpm2', body => { max_tokens => 1 });
is($r->{status}, 429, 'tpm: after an overrun the next request is refused');
ok(hdr($r, 'retry-after') > 60, 'tpm: and waits for the overrun to drain ('
   . hdr($r, 'retry-after') . ' s)');

# the same in a stream
$r = call('tpm3', text => "usage 4000 1000 $pad",
          body => { max_tokens => 500, stream => JSON::PP::true });
is($r->{status}, 200, 'tpm: a stream that runs past the limit finishes');
like($r->{body}, qr/\[DONE\]/, 'tpm: the stream is whole');
$t->wait_for(sub { 0 }, 0.3);
$r = call('tpm3', body => { max_tokens => 1 });
is($r->{status}, 429, 'tpm: the stream was charged, the next is refused');

# two max_tokens: the gateway would reserve for one, a backend run the other
$r = $t->request(method => 'POST', path => '/v1/chat/completions',
                 headers => [['Authorization', "Bearer $K{tpm}"],
                             ['Content-Type', 'application/json']],
                 body => '{"model":"m","messages":[{"role":"user",'
                         . '"content":"hi"}],"max_tokens":1,'
                         . '"max_tokens":100000}');
is($r->{status}, 400, 'a duplicate max_tokens is a 400');
is($r->{json}{error}{param}, 'max_tokens', 'naming max_tokens');

# --- tokens per day ----------------------------------------------------------

$r = call('tpd', text => "usage 300 300", body => { max_tokens => 500 });
is($r->{status}, 200, 'tpd: 520 of 700 pass');
$t->wait_for(sub { 0 }, 0.3);
$r = call('tpd', body => { max_tokens => 500 });
is($r->{status}, 429, 'tpd: 600 used, 520 more do not fit');
my $midnight = 86400 - time % 86400;
ok(abs(hdr($r, 'retry-after') - $midnight) <= 2,
   'tpd: Retry-After is the time to 00:00 UTC');
is(hdr($r, 'x-ratelimit-remaining-tokens'), 100, 'tpd: 100 remain');

# --- budget -----------------------------------------------------------------

$r = call('budget', text => 'usage 400 200', body => { max_tokens => 500 });
is($r->{status}, 200, 'budget: 520 of 700');
$t->wait_for(sub { 0 }, 0.3);
$r = call('budget', body => { max_tokens => 100 });
is($r->{status}, 429, 'budget: spent');
is($r->{json}{error}{code}, 'insufficient_quota', 'budget: insufficient_quota');
ok(!defined hdr($r, 'retry-after'), 'budget: no Retry-After');
is($t->redis_cmd('GET', 'mg:{t5}:rl:key:id-budget:budget'), '600',
   'budget: the counter holds the real usage');

# --- a request no backend answered is charged nothing ---------------------

$r = call('fails', text => "fail $pad", body => { max_tokens => 500 });
is($r->{status}, 502, 'a failing backend: 502') or diag $r->{body};
$t->wait_for(sub { 0 }, 0.3);
$r = call('fails', text => "usage 1 1 $pad", body => { max_tokens => 500 });
is($r->{status}, 200, 'the failed request\'s reservation was given back');

# --- a client that goes away mid-stream keeps its reservation -------------

my $st = $t->chat_stream('m', messages => [{ role => 'user',
                                             content => "slow $pad" }],
                         body => { max_tokens => 500 },
                         headers => [['Authorization', "Bearer $K{gone}"]]);
is($st->status, 200, 'gone: the stream began');
ok(defined $st->next_event(5), 'gone: an event came');
$st->close;
$t->wait_for(sub { 0 }, 0.5);
$r = call('gone', text => "usage 1 1 $pad", body => { max_tokens => 500 });
is($r->{status}, 429, 'gone: the reservation stood, 550 more do not fit');

# --- tenant limits ------------------------------------------------------------

%st = ();
for my $i (1 .. 6) {
    $r = call($i % 2 ? 'share1' : 'share2');
    $st{$r->{status}}++;
}
is($st{200}, 4, 'tenant rpm=4: two keys share 4 requests');
is($st{429}, 2, 'tenant rpm=4: then 429');
like($r->{json}{error}{message}, qr/tenant 't3'/, 'the message names the tenant');

%st = ();
for my $i (1 .. 3) {
    $r = $t->chat('m', prefix => '/var/v1', headers => [['X-Tenant', 'tv']]);
    $st{$r->{status}}++;
}
is($st{200}, 2, 'identity from a variable: the tenant\'s limit applies');
is($st{429}, 1, 'identity from a variable: then 429');

# --- two nodes, one Redis: exactly the limit under concurrency -------------

my @p;
for my $i (1 .. 16) {
    push @p, [$i % 2 ? $t : $tb];
    $p[-1][1] = $p[-1][0]->start_request($t->_chat_request('m',
        headers => [['Authorization', "Bearer $K{two}"]]),
        port => $p[-1][0]->port('gw'));
}
%st = ();
for my $q (@p) {
    my $res = $q->[0]->finish_request($q->[1]);
    $st{$res->{status} // 'none'}++;
}
is($st{200}, 10, 'two nodes: 10 of 16 concurrent requests pass (rpm=10)');
is($st{429}, 6, 'two nodes: the rest are refused');

# --- one round trip: limits and the session in one script ------------------

sub cmdstats {
    my %s;
    for (split /\r?\n/, $t->redis_cmd('INFO', 'commandstats')) {
        $s{$1} = $2 if /^cmdstat_(\w+):calls=(\d+)/;
    }
    return \%s;
}

# a key with rpm only: nothing to settle, so the script is all
my $s0 = cmdstats();
for my $i (1 .. 5) {
    $r = call('sess', headers => [['X-Session-Id', "s-$i"]]);
    is($r->{status}, 200, "session $i: 200");
    is(hdr($r, 'x-model-gateway-session'), 'new', "session $i: a new pin");
}
for my $i (1 .. 5) {
    $r = call('sess', headers => [['X-Session-Id', "s-$i"]]);
    is(hdr($r, 'x-model-gateway-session'), 'hit', "session $i: then a hit");
}
my $s1 = cmdstats();
my %d = map { $_ => ($s1->{$_} // 0) - ($s0->{$_} // 0) } keys %$s1;
delete $d{info};
is(($d{evalsha} // 0) + ($d{eval} // 0), 10,
   'one script per request: limits and pin');
# (commandstats also counts the commands a script runs: GET, SET, ...)
is(join(',', map { "$_=$d{$_}" }
             grep { $d{$_} && !/^(eval|evalsha|get|set|pexpire|time)$/ }
             sort keys %d),
   '', 'no command but the script (no GETEX)');
ok($t->redis_cmd('EXISTS', 'mg:{t7}:pin:s-1:m'),
   'the pin is under the tenant\'s hash tag');

# --- Redis down ----------------------------------------------------------------

$t->stop_redis;
ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is down|redis .* failed/)
                      && $tb->grep_log(qr/redis \S+ is down|redis .* failed/) },
                10), 'both nodes saw Redis go');
$t->allow_log(qr/\[error\].*(redis|limits could not)/);
$tb->allow_log(qr/\[error\].*(redis|limits could not)/);

%st = ();
for my $i (1 .. 3) {
    $r = call('down');
    $st{$r->{status}}++;
}
is($st{200}, 2, 'fail open: rpm=4 over 2 nodes is 2 on this one');
is($st{429}, 1, 'fail open: then 429');

$r = call('down', node => $tb);
is($r->{status}, 503, 'fail closed: 503');
is($r->{json}{error}{code}, 'limit_store_unavailable',
   'fail closed: limit_store_unavailable');
is(hdr($r, 'retry-after'), 1, 'fail closed: Retry-After: 1');

$r = call('free', node => $tb, headers => []);
is($r->{status}, 503, 'fail closed: also under the default tenant limit');

$t->done_testing;
