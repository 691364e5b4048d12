#!/usr/bin/perl

# The node's cache of session pins (README "Sessions", "Session pin
# cache"), on two nginx nodes that share one Redis and three mocks:
#   - a hot session costs no Redis round trip while its pin is cached
#     (counted with INFO commandstats), and its idle timeout is renewed
#     at most once per interval, without waiting;
#   - a pin moved by another node is seen within the cache time, and not
#     later (the documented staleness bound);
#   - a pin this node moves (a rebind) or drops (a new session nothing
#     served) is changed in the cache at once;
#   - the maximum lifetime holds through the cache;
#   - strict sessions keep their meaning;
#   - native id mappings (model_gateway_state_cache): a repeat lookup costs
#     no round trip, a tenant's cached mapping is not another tenant's, and
#     a cached mapping routes while Redis is down (an uncached one: 503);
#   - nginx -t refuses a cache without Redis and a cache time over 60 s.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use MG::Test;
use MG::Rendezvous;

my $t = MG::Test->new;          # node A; owns the mocks and Redis
$t->need_module;
my $tb = MG::Test->new;         # node B

my $DIR = $t->dir;
my @NAMES = qw(a b c);
my %W = (a => 1, b => 1, c => 1);

sub mock_handler {
    my $name = shift;
    return sub {
        my $req = shift;
        my $j = eval { decode_json($req->{body}) } || {};
        if (-e "$DIR/down-$name") {
            return { status => 503,
                     headers => [['Content-Type', 'application/json']],
                     body => '{"error":{"message":"down","type":"x"}}' };
        }
        return { status => 200,
                 headers => [['Content-Type', 'application/json']],
                 body => MG::Test::openai_completion(
                     model => $j->{model} // 'm', content => "from $name",
                     id => "chatcmpl-$name-$req->{n}") };
    };
}

$t->mock($_, handler => mock_handler($_)) for @NAMES;
my $RPORT = $t->redis;

sub down { MG::Test::_write_file("$DIR/down-$_[0]", "1\n") }
sub up   { unlink "$DIR/down-$_[0]" }

sub node_conf {
    my ($node) = @_;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_connect_timeout 500ms;
    model_gateway_admin_sync 60s;
    model_gateway_max_fails 0;

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PA%%/v1;
        model m;
    }

    model_gateway_backend b {
        type openai_compatible;
        url http://127.0.0.1:%%PB%%/v1;
        model m;
    }

    model_gateway_backend c {
        type openai_compatible;
        url http://127.0.0.1:%%PC%%/v1;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        model_gateway_session $http_x_session_id;
        model_gateway_session_cache 1s;

        location /v1/ {
            model_gateway;
        }

        location /idle/ {
            model_gateway;
            model_gateway_session_idle_timeout 2s;
        }

        location /life/ {
            model_gateway;
            model_gateway_session_max_lifetime 2s;
        }

        location /strict/ {
            model_gateway;
            model_gateway_session_mode strict;
        }

        location /nocache/ {
            model_gateway;
            model_gateway_session_cache 0;
        }

        location /t/ {
            model_gateway;
            model_gateway_identity $http_x_tenant;
        }
    }
}
EOF
        RPORT => $RPORT,
        PA => $t->port('a'), PB => $t->port('b'), PC => $t->port('c'));
    $node->run;
}

node_conf($t);
node_conf($tb);

sub chat {
    my ($node, $sid, $prefix) = @_;
    my $r = $node->chat('m', prefix => $prefix // '/v1',
                        headers => [['X-Session-Id', $sid]]);
    my ($from) = ($r->{json}{choices}[0]{message}{content} // '')
                 =~ /from (\w)/;
    return ($from // '', $r->{headers}{'x-model-gateway-session'} // '', $r);
}

# Redis round trips of the pin path: GETEX and the pin scripts
sub trips {
    my $info = $t->redis_cmd('INFO', 'commandstats');
    my $n = 0;
    for my $c (qw(getex evalsha eval)) {
        $n += $1 if $info =~ /cmdstat_$c:calls=(\d+)/;
    }
    return $n;
}

sub calls {
    my $c = shift;
    my $info = $t->redis_cmd('INFO', 'commandstats');
    return $info =~ /cmdstat_$c:calls=(\d+)/ ? $1 : 0;
}

ok($t->wait_for(sub { (chat($t, 'warm'))[0] ne '' }, 5), 'node A serves');
ok($tb->wait_for(sub { (chat($tb, 'warm'))[0] ne '' }, 5), 'node B serves');

###########################################################################
# hot sessions: no round trip

{
    my ($from, $st) = chat($t, 'hot1');
    is($st, 'new', 'a new session on A');
    is($from, MG::Rendezvous::pick('hot1', \@NAMES, \%W),
       'on its rendezvous backend');
    my ($fb, $sb) = chat($tb, 'hot1');
    is($sb, 'hit', 'B reads the pin from Redis');
    is($fb, $from, 'the same backend');

    my $trips0 = trips();
    my $ok = 1;
    for (1 .. 10) {
        my ($f, $s) = chat($tb, 'hot1');
        $ok &&= ($f eq $from && $s eq 'hit');
    }
    ok($ok, '10 more requests on B: hits on the same backend');
    is(trips() - $trips0, 0, 'and no Redis round trip for them');

    my $n0 = calls('getex');
    chat($tb, 'hot1', '/nocache');
    is(calls('getex') - $n0, 1, 'a location without the cache asks Redis');
}

###########################################################################
# the idle timeout, renewed once per interval, without waiting

{
    my ($from) = chat($t, 'idle1', '/idle');
    my $p0 = calls('pexpire');
    for (1 .. 10) { chat($t, 'idle1', '/idle'); sleep 0.05 }
    my $renewed = calls('pexpire') - $p0;
    ok($renewed <= 1, "10 hits within the interval: $renewed renewal(s)");
    sleep 1.1;
    chat($t, 'idle1', '/idle') for 1 .. 3;
    sleep 0.2;
    my $ttl = $t->redis_cmd('PTTL', 'mg:pin:idle1:m');
    ok($ttl > 1500, "the pin's idle timeout was renewed ($ttl ms left)");
    sleep 1.2;
    for (1 .. 4) { chat($t, 'idle1', '/idle'); sleep 0.4 }
    my ($f2, $s2) = chat($t, 'idle1', '/idle');
    is($s2, 'hit', 'used within its idle timeout, the session lives on');
    is($f2, $from, 'on its backend');
}

###########################################################################
# another node's move: seen within the cache time

{
    my ($from) = chat($tb, 'move1');
    my ($other) = grep { $_ ne $from } @NAMES;
    my $v = $t->redis_cmd('GET', 'mg:pin:move1:m');
    my ($born) = $v =~ /\|(\d+)$/;
    my $moved_at = time;
    $t->redis_cmd('SET', 'mg:pin:move1:m', "$other|$born", 'KEEPTTL');

    my ($f1) = chat($tb, 'move1');
    is($f1, $from, 'just after: B still routes by its cached pin');
    my $seen;
    while (time - $moved_at < 3) {
        my ($f) = chat($tb, 'move1');
        if ($f eq $other) { $seen = time - $moved_at; last }
        sleep 0.05;
    }
    ok(defined $seen, 'B follows the move');
    ok(defined $seen && $seen <= 1.3,
       sprintf('within the cache time (%.2f s)', $seen // -1));
}

###########################################################################
# this node's rebind and drop: at once

{
    my ($from) = chat($tb, 'rb1');
    down($from);
    my ($f1, $s1) = chat($tb, 'rb1');
    isnt($f1, $from, 'the pinned backend down: served elsewhere');
    is($s1, 'rebound', 'rebound');
    up($from);
    sleep 0.2;                  # the move's script, sent without waiting
    my $trips0 = trips();
    my ($f2, $s2) = chat($tb, 'rb1');
    is($f2, $f1, 'the next request goes where the pin moved');
    is($s2, 'hit', 'from the cache');
    is(trips() - $trips0, 0, 'without a round trip');
    is($t->redis_cmd('GET', 'mg:pin:rb1:m') =~ /^(\w)\|/ ? $1 : '', $f1,
       'and Redis names it too');

    down($_) for @NAMES;
    my (undef, undef, $r) = chat($tb, 'drop1');
    ok($r->{status} >= 500, 'a new session no backend serves fails');
    up($_) for @NAMES;
    # the drop is sent as the request ends, not waited for
    ok($t->wait_for(sub { $t->redis_cmd('EXISTS', 'mg:pin:drop1:m') == 0 },
                    3), 'no pin left in Redis');
    my (undef, $s3) = chat($tb, 'drop1');
    is($s3, 'new', 'nor in the cache: the next request pins afresh');
}

###########################################################################
# max lifetime, strict

{
    my (undef, $s0) = chat($t, 'life1', '/life');
    is($s0, 'new', 'a session of 2 s');
    my $end = time + 5;
    my $st = '';
    while (time < $end) {
        (undef, $st) = chat($t, 'life1', '/life');
        last if $st eq 'new';
        sleep 0.1;
    }
    is($st, 'new', 'past its lifetime it starts afresh, cache or not');

    my ($from) = chat($t, 'strict1', '/strict');
    down($from);
    my (undef, undef, $r) = chat($t, 'strict1', '/strict');
    is($r->{status}, 502, 'strict, the cached pin\'s backend down: no '
       . 'other backend') or diag($r->{body});
    up($from);
    my ($f2) = chat($t, 'strict1', '/strict');
    is($f2, $from, 'strict: still its backend');
}

###########################################################################
# id mappings

sub get_id {
    my ($node, $path, $tenant) = @_;
    my $r = $node->request(method => 'GET', path => $path,
        headers => [$tenant ? (['X-Tenant', $tenant]) : ()]);
    return $r;
}

sub lookups { calls('evalsha') }

{
    $t->redis_cmd('SET', 'mg:resp:resp_c1', 'a');
    my $na = @{$t->mock_requests('a')};
    my $l0 = lookups();
    my $r = get_id($t, '/v1/responses/resp_c1');
    is($r->{status}, 200, 'a native id routed');
    is(@{$t->mock_requests('a')}, $na + 1, 'to its backend');
    is($t->mock_requests('a')->[-1]{path}, '/v1/responses/resp_c1',
       'the GET of the object');
    is(lookups() - $l0, 1, 'one lookup in Redis');
    $l0 = lookups();
    get_id($t, '/v1/responses/resp_c1') for 1 .. 5;
    is(lookups() - $l0, 0, 'the next five: none');
    is(@{$t->mock_requests('a')}, $na + 6, 'all on its backend');

    $t->redis_cmd('SET', 'mg:resp:resp_t1', 'acme|b');
    $r = get_id($t, '/t/responses/resp_t1', 'acme');
    is($r->{status}, 200, "a tenant's id, for the tenant");
    $r = get_id($t, '/t/responses/resp_t1', 'acme');
    is($r->{status}, 200, 'again, from the cache');
    $r = get_id($t, '/t/responses/resp_t1', 'other');
    is($r->{status}, 404, 'for another tenant: not found, cache or not');
    $r = get_id($t, '/v1/responses/resp_t1');
    is($r->{status}, 404, 'for no tenant: not found');

    $t->redis_cmd('SET', 'mg:resp:resp_c2', 'b');
    $t->stop_redis;
    $r = get_id($t, '/v1/responses/resp_c1');
    is($r->{status}, 200, 'Redis down: a cached mapping still routes');
    $r = get_id($t, '/v1/responses/resp_c2');
    is($r->{status}, 503, 'an uncached one cannot');
    is($r->{json}{error}{code}, 'state_store_unavailable',
       'state_store_unavailable');
}

###########################################################################
# nginx -t

{
    my $tn = MG::Test->new;
    $tn->write_conf(<<'EOF');
%%TEST_GLOBALS%%
events {
}
http {
    %%TEST_GLOBALS_HTTP%%
    model_gateway_session_cache 1s;
    server {
        listen 127.0.0.1:%%PORT_gw%%;
    }
}
EOF
    my ($rc, $out) = $tn->nginx_t;
    isnt($rc, 0, 'a pin cache without Redis: nginx -t fails');
    like($out, qr/caches pins read from "model_gateway_redis"/, 'saying why');

    $tn->write_conf(<<'EOF', RPORT => $RPORT);
%%TEST_GLOBALS%%
events {
}
http {
    %%TEST_GLOBALS_HTTP%%
    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_session_cache 61s;
    server {
        listen 127.0.0.1:%%PORT_gw%%;
    }
}
EOF
    ($rc, $out) = $tn->nginx_t;
    isnt($rc, 0, 'a cache time over 60 s: nginx -t fails');
}

$t->allow_log(qr/redis .* is down/);
$tb->stop;
$t->done_testing;
