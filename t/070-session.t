#!/usr/bin/perl

# Sessions pinned to backends, with the pins in a real Redis (README
# "Sessions", "Redis", "Choosing a backend", "Cool-downs"):
#   - a session started on node A continues on node B on the same backend
#     (two nginx nodes, one Redis, the same three mocks);
#   - concurrent first requests on two nodes that would hash the key to
#     different backends (node B weighs the backends differently) end on
#     one backend, with one pin naming it;
#   - a new session's backend is the weighted rendezvous hash of its key
#     (checked against a Perl port of src/mg_rendezvous.c), over the
#     healthy candidates only;
#   - idle timeout (refreshed on use) and max lifetime, on Redis' clock;
#   - rebind (the pin follows the backend that served) vs strict (only the
#     pinned backend; 503 session_backend_unavailable when it cools down);
#   - a new session whose every attempt failed leaves no pin; an existing
#     one keeps it;
#   - invalid keys: 400 invalid_session_key, nothing sent anywhere; no key:
#     stateless, no session header, nothing written to Redis;
#   - Redis down from the start: "fallback" by the same hash on every node,
#     and 503 session_store_unavailable with model_gateway_session_fallback
#     fail.
#
# Six nginx instances: A (weights 1:1:1), B (1:4:16), C (max_fails 1, for
# the strict cool-down; prefix mgc), D1 and D2 (Redis at a closed port), E
# (its wall clock 2 s behind, through an LD_PRELOAD shim built with cc at
# test time; skipped without cc or under MG_ASAN). The mocks and
# Redis belong to A's harness object; the other nodes' error logs get the
# same end-of-test checks as A's (check_node below: done_testing of the
# harness can only run once per file).
#
# The session key is sent as X-Session-Id and also in the chat message
# ("sid=KEY"), so that the mocks can attribute requests to sessions and
# fail on demand: a mock answers 503 while DIR/down-NAME,
# DIR/down-NAME-KEY or DIR/down-all-KEY exists (DIR: node A's directory).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use IO::Socket::INET;
use IO::Select;
use MG::Test;
use MG::Rendezvous;

my $t = MG::Test->new;          # node A; owns the mocks and Redis
$t->need_module;

my $tb = MG::Test->new;         # node B: other weights
my $tc = MG::Test->new;         # node C: max_fails 1
my $td1 = MG::Test->new;        # nodes D1, D2: Redis down from the start
my $td2 = MG::Test->new;
my $te = MG::Test->new;         # node E: clock 2 s behind

my $DIR = $t->dir;
my @NAMES = qw(a b c);
my %W_EQ = (a => 1, b => 1, c => 1);
my %W_B  = (a => 1, b => 4, c => 16);

# the backend a new session KEY gets over the backends of %$w (name =>
# weight), in configuration order a, b, c; @skip: not eligible
sub rv_pick {
    my ($key, $w, @skip) = @_;
    return MG::Rendezvous::pick($key, \@NAMES, $w, @skip);
}

###########################################################################
# mocks

sub body_sid {
    my $req = shift;
    my $j = eval { decode_json($req->{body} // '') } or return '';
    my $c = $j->{messages} && $j->{messages}[0]{content} // '';
    return $c =~ /^sid=(.*)$/s ? $1 : '';
}

sub mock_handler {
    my $name = shift;
    return sub {
        my $req = shift;
        my $sid = body_sid($req);
        my $j = eval { decode_json($req->{body}) } || {};
        my $down = -e "$DIR/down-$name";
        if ($sid =~ /^[\w.-]{1,100}$/) {
            $down ||= -e "$DIR/down-$name-$sid" || -e "$DIR/down-all-$sid";
        }
        if ($down) {
            return { status => 503,
                     headers => [['Content-Type', 'application/json']],
                     body => '{"error":{"message":"down","type":"x"}}' };
        }
        return { status => 200,
                 headers => [['Content-Type', 'application/json']],
                 body => MG::Test::openai_completion(
                     model => $j->{model} // 'm',
                     content => "from $name", id => "chatcmpl-$name-$req->{n}") };
    };
}

$t->mock($_, handler => mock_handler($_)) for @NAMES;

my $RPORT = $t->redis;
my $CLOSED = $t->port('closed');    # reserved, nothing listens there

sub down  { MG::Test::_write_file("$DIR/down-$_[0]", "1\n") }
sub up    { unlink "$DIR/down-$_[0]" }

# requests the mocks received for session KEY: { a => n, b => n, c => n }
sub mock_counts {
    my $sid = shift;
    my %n;
    for my $m (@NAMES) {
        $n{$m} = scalar grep { body_sid($_) eq $sid }
            @{$t->mock_requests($m)};
    }
    return \%n;
}

sub total_mock_requests {
    my $n = 0;
    $n += @{$t->mock_requests($_)} for @NAMES;
    return $n;
}

###########################################################################
# nodes

sub node_conf {
    my ($node, %o) = @_;
    my $w = $o{weights} // \%W_EQ;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails %%MAXFAILS%%;
    model_gateway_retry_after_max 0;

    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_connect_timeout 500ms;
    model_gateway_redis_prefix %%PREFIX%%;

    log_format gw '$request_uri $status session=$model_gateway_session_status '
                  'pinned=$model_gateway_session_backend '
                  'backend=$model_gateway_backend '
                  'attempts=[$model_gateway_attempts] $pid';

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PA%%/v1;
        model m;
        model m2;
        weight %%WA%%;
    }

    model_gateway_backend b {
        type openai_compatible;
        url http://127.0.0.1:%%PB%%/v1;
        model m;
        model m2;
        weight %%WB%%;
    }

    model_gateway_backend c {
        type openai_compatible;
        url http://127.0.0.1:%%PC%%/v1;
        model m;
        model m2;
        weight %%WC%%;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%% reuseport;
        server_name localhost;

        access_log %%DIR%%/gw.log gw;

        model_gateway_session $http_x_session_id;

        # listed, and still never sent: it carries the session key
        model_gateway_forward_headers X-Session-Id X-Tag;

        location /v1/ {
            model_gateway;
        }

        location /idle/ {
            model_gateway;
            model_gateway_session_idle_timeout 1s;
        }

        location /life/ {
            model_gateway;
            model_gateway_session_idle_timeout 1s;
            model_gateway_session_max_lifetime 3s;
        }

        location /strict/ {
            model_gateway;
            model_gateway_session_mode strict;
        }

        location /failmode/ {
            model_gateway;
            model_gateway_session_fallback fail;
        }
    }
}
EOF
        MAXFAILS => $o{max_fails} // 0, PREFIX => $o{prefix} // 'mg',
        RPORT => $o{rport} // $RPORT,
        PA => $t->port('a'), PB => $t->port('b'), PC => $t->port('c'),
        WA => $w->{a}, WB => $w->{b}, WC => $w->{c});
    $node->run;
}

node_conf($t);
node_conf($tb, weights => \%W_B);
node_conf($tc, max_fails => 1, prefix => 'mgc');
node_conf($td1, rport => $CLOSED);
node_conf($td2, rport => $CLOSED);

# node E: gettimeofday() shifted by MG_CLOCK_SKEW_MS (read once at load:
# nginx clears the workers' environment)
my $SKEW_SO;
if (!$ENV{MG_ASAN} && `sh -c 'command -v cc' 2>/dev/null`) {
    my $src = $t->dir . '/skew.c';
    MG::Test::_write_file($src, <<'EOC');
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>

static long long  skew_us;

__attribute__((constructor)) static void
skew_init(void)
{
    const char *s = getenv("MG_CLOCK_SKEW_MS");
    skew_us = s ? atoll(s) * 1000 : 0;
}

int
gettimeofday(struct timeval *tv, void *tz)
{
    static int (*real)(struct timeval *, void *);
    long long us;
    int rc;

    if (real == NULL) {
        real = (int (*)(struct timeval *, void *))
               dlsym(RTLD_NEXT, "gettimeofday");
    }
    rc = real(tv, tz);
    if (rc == 0 && tv) {
        us = (long long) tv->tv_sec * 1000000 + tv->tv_usec + skew_us;
        tv->tv_sec = us / 1000000;
        tv->tv_usec = us % 1000000;
    }
    return rc;
}
EOC
    my $so = $t->dir . '/skew.so';
    system('cc', '-shared', '-fPIC', '-O2', '-o', $so, $src, '-ldl') == 0
        and $SKEW_SO = $so;
}
if ($SKEW_SO) {
    local $ENV{LD_PRELOAD} = $SKEW_SO;
    local $ENV{MG_CLOCK_SKEW_MS} = -2000;
    node_conf($te);
}

my %NODE = (A => $t, B => $tb, C => $tc, D1 => $td1, D2 => $td2);
$NODE{E} = $te if $SKEW_SO;

# every worker of A, B and C connected to Redis
for my $n (grep { $NODE{$_} } qw(A B C E)) {
    ok($t->wait_for(sub { $NODE{$n}->grep_log(qr/redis \S+ is up/) >= 2 }, 10),
        "node $n: both workers connected to redis");
}

###########################################################################
# client helpers

# chat($node, $key, %o): $node->chat with the session key; $key undef: no
# session header. %o: path (default /v1/chat/completions), model (m),
# headers (extra). Adds {backend} (from X-Model-Gateway-Backend) and
# {session}.
sub chat {
    my ($node, $key, %o) = @_;
    my @h = @{$o{headers} || []};
    push @h, ['X-Session-Id', $key] if defined $key;
    my $r = $node->chat($o{model} // 'm', path => $o{path},
        messages => [{ role => 'user', content => 'sid=' . ($key // '') }],
        headers => \@h, timeout => $o{timeout} // 15);
    ($r->{backend}) = ($r->{headers}{'x-model-gateway-backend'} // '')
        =~ /^([^;\s]+)/;
    $r->{session} = $r->{headers}{'x-model-gateway-session'};
    $r->{code} = $r->{json} && ref $r->{json}{error} eq 'HASH'
        ? $r->{json}{error}{code} : undef;
    return $r;
}

sub desc { my $r = shift;
    return sprintf '%s %s/%s', $r->{status} // 'none',
        $r->{backend} // '-', $r->{session} // '-' }

# the pin of KEY for MODEL: (backend, created_ms) or () if none
sub pin {
    my ($key, $model, $prefix) = @_;
    my $v = $t->redis_cmd('GET', ($prefix // 'mg') . ":pin:$key:"
        . ($model // 'm'));
    return () unless defined $v && !ref $v;
    return $v =~ /^([^|]*)\|(\d+)$/ ? ($1, $2) : ('BAD:' . $v, 0);
}

sub pttl { $t->redis_cmd('PTTL', "mg:pin:$_[0]:" . ($_[1] // 'm')) }

sub redis_now_ms {
    my $tm = $t->redis_cmd('TIME');
    return $tm->[0] * 1000 + int($tm->[1] / 1000);
}

sub keyset { return { map { $_ => 1 } @{$t->redis_cmd('KEYS', '*')} } }

# keys present now that were not in $before (pins expiring meanwhile do not
# matter)
sub added_keys {
    my $before = shift;
    return [sort grep { !$before->{$_} } keys %{keyset()}];
}

# waits (max 2 s) until the pin of KEY names $want (undef: no pin)
sub pin_becomes {
    my ($key, $want, $model, $prefix) = @_;
    $t->wait_for(sub {
        my ($b) = pin($key, $model, $prefix);
        defined $want ? (defined $b && $b eq $want) : !defined $b;
    }, 2);
    my ($b) = pin($key, $model, $prefix);
    return $b;
}

# calls of a Redis command since the last CONFIG RESETSTAT
sub calls {
    my $cmd = lc shift;
    my $info = $t->redis_cmd('INFO', 'commandstats');
    return $info =~ /^cmdstat_\Q$cmd\E:calls=(\d+)/m ? $1 : 0;
}

###########################################################################
# the Perl port agrees with the module: a new session on A goes to the
# hashed backend, also for the less obvious keys

{
    my @bad;
    for my $key ('x', 'user:42', 'Z' x 64, 'sess-~!@#$%^&*()') {
        my $r = chat($t, $key);
        push @bad, "$key: " . desc($r) . ' expected ' . rv_pick($key, \%W_EQ)
            unless $r->{status} == 200 && ($r->{session} // '') eq 'new'
                && ($r->{backend} // '') eq rv_pick($key, \%W_EQ);
    }
    is_deeply(\@bad, [], 'new sessions go to the rendezvous-hashed backend');
}

###########################################################################
# a session started on A continues on B

{
    my (@bad, $differs);
    for my $i (1 .. 30) {
        my $key = "cont-$i";
        my $exp = rv_pick($key, \%W_EQ);
        $differs++ if rv_pick($key, \%W_B) ne $exp;
        my $r1 = chat($t, $key);
        my ($pb, $born) = pin($key);
        my $r2 = chat($tb, $key);
        my $r3 = chat($tb, $key);
        my $r4 = chat($t, $key);
        my @got = map { desc($_) } $r1, $r2, $r3, $r4;
        my @exp = ("200 $exp/new", "200 $exp/hit", "200 $exp/hit",
                   "200 $exp/hit");
        push @bad, "$key: got [@got] pin " . ($pb // 'none')
            . " expected [@exp]"
            unless "@got" eq "@exp" && ($pb // '') eq $exp;
    }
    is_deeply(\@bad, [], 'A then B: new on A, hit on B, same backend, '
        . 'pin names it (30 sessions)');
    ok($differs >= 10, "B alone would have hashed $differs of the 30 keys "
        . 'elsewhere (the test is meaningful)');
}

# pin value and expiry
{
    my ($b, $born) = pin('cont-1');
    my $now = redis_now_ms();
    ok(defined $born && $born <= $now && $now - $born < 60_000,
        "pin value BACKEND|CREATED_MS, created on Redis' clock ($b|$born)");
    my $ttl = pttl('cont-1');
    ok($ttl > 29 * 60_000 && $ttl <= 30 * 60_000,
        "default idle timeout 30m ($ttl ms)");
}

# per session and model: the same key on another model is another pin
{
    my $r = chat($t, 'cont-1', model => 'm2');
    is($r->{session}, 'new', 'same key, other model: a new session');
    my ($b) = pin('cont-1', 'm2');
    is($b, $r->{backend}, 'own pin <prefix>:pin:<key>:<model>');
    is($r->{backend}, rv_pick('cont-1', \%W_EQ),
        'the hash does not depend on the model');
}

###########################################################################
# an already-pinned session costs one Redis round trip (one command)

{
    chat($t, 'rt-1');
    is($t->redis_cmd('CONFIG', 'RESETSTAT'), 'OK', 'CONFIG RESETSTAT');
    my $before = $t->redis_cmd('INFO', 'commandstats');
    my @s = map { chat($_ % 2 ? $t : $tb, 'rt-1')->{session} // '-' } 1 .. 10;
    is("@s", join(' ', ('hit') x 10), 'round trips: 10 hits on A and B');
    my %c = map { $_ => calls($_) } qw(getex get evalsha eval pexpire set);
    my $total = 0;
    $total += $c{$_} for keys %c;
    is($total, 10, 'round trips: one Redis command per pinned request ('
        . join(', ', map { "$_=$c{$_}" } sort keys %c) . ')');
}

###########################################################################
# a pin naming a backend this node does not have (removed from the
# configuration): rebind moves it to the hashed backend, strict refuses

{
    my $key = 'gone-1';
    my $exp = rv_pick($key, \%W_EQ);
    $t->redis_cmd('SET', "mg:pin:$key:m", 'removed|' . redis_now_ms(),
        'PX', 60000);
    my $r = chat($t, $key, path => '/strict/v1/chat/completions');
    is($r->{status}, 503, 'pin to an unknown backend, strict: 503');
    is($r->{code}, 'session_backend_unavailable',
        'pin to an unknown backend, strict: session_backend_unavailable');
    is(mock_counts($key)->{$exp}, 0, 'pin to an unknown backend, strict: '
        . 'no backend request');
    $r = chat($t, $key);
    is(desc($r), "200 $exp/rebound", 'pin to an unknown backend, rebind: '
        . 'the hashed backend serves, rebound');
    is(pin_becomes($key, $exp), $exp, 'pin to an unknown backend, rebind: '
        . 'the pin follows');
}

###########################################################################
# concurrent first requests on A and B

# raw HTTP/1.1 request text for a chat request with a session key
sub raw_chat {
    my ($key, $path) = @_;
    my $body = JSON::PP->new->canonical->encode({ model => 'm',
        messages => [{ role => 'user', content => "sid=$key" }] });
    return "POST " . ($path // '/v1/chat/completions') . " HTTP/1.1\r\n"
        . "Host: localhost\r\nContent-Type: application/json\r\n"
        . "X-Session-Id: $key\r\nContent-Length: " . length($body) . "\r\n"
        . "Connection: close\r\n\r\n$body";
}

# reads a Connection: close response until EOF; returns a small hash
sub read_response {
    my ($s, $deadline) = @_;
    my $buf = '';
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        next unless $sel->can_read($deadline - time);
        my $n = sysread($s, $buf, 65536, length $buf);
        last if !defined $n || $n == 0;
    }
    close $s;
    my ($head, $body) = split /\r\n\r\n/, $buf, 2;
    $head //= '';
    my ($status) = $head =~ m{^HTTP/1\.\d (\d{3})};
    my %h;
    $h{lc $1} = $2 while $head =~ /^([^:\r\n]+):\s*([^\r\n]*)/mg;
    my $r = { status => $status, headers => \%h, body => $body // '' };
    ($r->{backend}) = ($h{'x-model-gateway-backend'} // '') =~ /^([^;\s]+)/;
    $r->{session} = $h{'x-model-gateway-session'};
    return $r;
}

sub connect_to {
    my $node = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $node->port('gw'), Proto => 'tcp', Timeout => 5);
    die "connect: $!" unless $s;
    return $s;
}

{
    my (@bad, %won, $n);
    for my $round (1 .. 3) {
        # 20 fresh keys per round that A and B hash to different backends
        my @keys;
        my $i = 0;
        while (@keys < 20) {
            my $k = "race-$round-" . $i++;
            push @keys, $k if rv_pick($k, \%W_EQ) ne rv_pick($k, \%W_B);
        }
        for my $k (@keys) {
            $n++;
            my ($sa, $sb) = (connect_to($t), connect_to($tb));
            my $req = raw_chat($k);
            # alternate which node gets its request first
            my @order = $n % 2 ? ($sa, $sb) : ($sb, $sa);
            syswrite($_, $req) for @order;
            my $deadline = time + 10;
            my $ra = read_response($sa, $deadline);
            my $rb = read_response($sb, $deadline);
            my ($pb) = pin($k);
            my @s = sort map { $_->{session} // '-' } $ra, $rb;
            my $winner = ($ra->{session} // '') eq 'new' ? 'A' : 'B';
            my $exp = $winner eq 'A' ? rv_pick($k, \%W_EQ)
                                     : rv_pick($k, \%W_B);
            $won{$winner}++;
            push @bad, "$k: A " . desc($ra) . ', B ' . desc($rb)
                . ' pin ' . ($pb // 'none') . " expected $exp"
                unless ($ra->{status} // 0) == 200
                    && ($rb->{status} // 0) == 200
                    && ($ra->{backend} // 'x') eq ($rb->{backend} // 'y')
                    && "@s" eq 'hit new'
                    && ($pb // '') eq $ra->{backend}
                    && $ra->{backend} eq $exp;
        }
    }
    is_deeply(\@bad, [], "concurrent first requests on A and B: one backend, "
        . "one 'new' and one 'hit', one pin naming it ($n sessions)");
    diag('first pin won by: ' . join ', ', map { "$_ $won{$_}" } sort keys %won)
        if $ENV{TEST_VERBOSE};
}

###########################################################################
# idle timeout: bounded, refreshed on use

{
    my $key = 'idle-1';
    my $r = chat($t, $key, path => '/idle/v1/chat/completions');
    is(desc($r), '200 ' . rv_pick($key, \%W_EQ) . '/new', 'idle: new session');
    my $ttl = pttl($key);
    ok($ttl > 0 && $ttl <= 1000, "idle: PTTL bounded by the idle timeout ($ttl)");

    my (@bad, @ttls);
    my $t0 = time;
    for my $i (1 .. 7) {
        sleep 0.5;
        my $node = $i % 2 ? $tb : $t;
        my $ri = chat($node, $key, path => '/idle/v1/chat/completions');
        my $tt = pttl($key);
        push @ttls, $tt;
        push @bad, "use $i: " . desc($ri) . " pttl $tt"
            unless desc($ri) eq "200 $r->{backend}/hit" && $tt > 600
                && $tt <= 1000;
    }
    is_deeply(\@bad, [], sprintf('idle: used every 0.5 s for %.1f s on A and '
        . 'B: hit each time, PTTL refreshed (%s)', time - $t0, "@ttls"));

    sleep 1.3;
    is($t->redis_cmd('EXISTS', "mg:pin:$key:m"), 0,
        'idle: unused for 1.3 s, the pin is gone');
    $r = chat($tb, $key, path => '/idle/v1/chat/completions');
    is($r->{session}, 'new', 'idle: the next request starts a new session');
}

###########################################################################
# max lifetime: expires even with continuous use

{
    my $key = 'life-1';
    my $r = chat($t, $key, path => '/life/v1/chat/completions');
    my $t0 = time;
    is($r->{session}, 'new', 'lifetime: new session');
    my ($b0, $born0) = pin($key);
    my (@seq, @bad, $renewed_at, $born1);
    while (time - $t0 < 5) {
        sleep 0.4;
        my $node = @seq % 2 ? $tb : $t;
        my $ri = chat($node, $key, path => '/life/v1/chat/completions');
        my $el = time - $t0;
        my $tt = pttl($key);
        my ($b, $born) = pin($key);
        my $age = redis_now_ms() - ($born // 0);
        push @seq, sprintf('%.1f:%s', $el, $ri->{session} // '-');
        if (!defined $renewed_at && ($ri->{session} // '') eq 'new') {
            $renewed_at = $el;
            $born1 = $born;
        }
        push @bad, sprintf('%.1f s: %s pttl %s age %s', $el, desc($ri), $tt, $age)
            unless $ri->{status} == 200 && $tt > 0 && $tt <= 1000;
    }
    is_deeply(\@bad, [], 'lifetime: every request served, PTTL <= idle timeout');
    ok(defined $renewed_at && $renewed_at > 2.5 && $renewed_at < 3.9,
        'lifetime: with use every 0.4 s, a new session after ~3 s ('
        . join(' ', @seq) . ')');
    my @before = grep { /^(\d+\.\d):/ && $1 < ($renewed_at // 99) - 0.05 } @seq;
    is(scalar(grep { !/:hit$/ } @before), 0, 'lifetime: hit until then');
    ok(defined $born1 && $born1 > $born0 + 2500,
        "lifetime: the new pin has a new creation time ($born0 -> "
        . ($born1 // 'none') . ')');
}

###########################################################################
# max lifetime on Redis' clock: node E, whose clock is 2 s behind, must
# agree that a pin created 3.2 s ago (by Redis' clock) is past its 3 s

SKIP: {
    skip 'no cc for the clock shim (or MG_ASAN)', 3 unless $SKEW_SO;
    my $key = 'skew-1';
    my $path = '/life/v1/chat/completions';
    my $r = chat($t, $key, path => $path);
    is($r->{session}, 'new', 'skewed clock: session created on A');
    my (undef, $born) = pin($key);
    my @seq;
    while (redis_now_ms() - $born < 2700) {
        push @seq, chat($t, $key, path => $path)->{session} // '-';
        sleep 0.3;
    }
    sleep 0.01 while redis_now_ms() - $born < 3200;
    my $age = redis_now_ms() - $born;
    $r = chat($te, $key, path => $path);
    is($r->{status}, 200, 'skewed clock: served');
    is($r->{session}, 'new', "skewed clock: at age $age ms (Redis' clock) "
        . 'the 3 s lifetime is over on every node: new session (A before: '
        . "@seq)");
}

###########################################################################
# rebind (default): the pin follows the backend that served

{
    my $key = 'rebind-1';
    my $x = rv_pick($key, \%W_EQ);
    my $r = chat($t, $key);
    is(desc($r), "200 $x/new", 'rebind: new session on the hashed backend');

    MG::Test::_write_file("$DIR/down-$x-$key", "1\n");
    $r = chat($t, $key);
    my $y = $r->{backend} // '';
    is($r->{status}, 200, 'rebind: pinned backend answers 503, request served');
    isnt($y, $x, "rebind: served by another backend ($y)");
    is($r->{session}, 'rebound', 'rebind: X-Model-Gateway-Session: rebound');
    is(mock_counts($key)->{$x}, 2, 'rebind: the pinned backend was tried first');
    is(pin_becomes($key, $y), $y, 'rebind: the pin now names the serving backend');

    $r = chat($tb, $key);
    is(desc($r), "200 $y/hit", 'rebind: next request (node B): hit on it');
    unlink "$DIR/down-$x-$key";
    $r = chat($t, $key);
    is(desc($r), "200 $y/hit", 'rebind: the old backend is back, the session '
        . 'stays where it moved');
    is(mock_counts($key)->{$x}, 2, 'rebind: the old backend got nothing more');
}

###########################################################################
# strict: only the pinned backend

{
    my $key = 'strict-1';
    my $x = rv_pick($key, \%W_EQ);
    my $r = chat($t, $key, path => '/strict/v1/chat/completions');
    is(desc($r), "200 $x/new", 'strict: new session');

    MG::Test::_write_file("$DIR/down-$x-$key", "1\n");
    $r = chat($t, $key, path => '/strict/v1/chat/completions');
    ok($r->{status} == 502 || $r->{status} == 503,
        "strict: pinned backend answers 503: $r->{status}");
    ok($r->{json} && ref $r->{json}{error} eq 'HASH',
        'strict: OpenAI error object') or diag($r->{body});
    my $c = mock_counts($key);
    is_deeply($c, { a => 0, b => 0, c => 0, $x => 2 },
        'strict: only the pinned backend was tried');
    my ($b) = pin($key);
    is($b, $x, 'strict: the pin stays');

    unlink "$DIR/down-$x-$key";
    $r = chat($tb, $key, path => '/strict/v1/chat/completions');
    is(desc($r), "200 $x/hit", 'strict: the backend is back: hit (node B)');
}

###########################################################################
# node C (max_fails 1): strict and a cooling-down pinned backend; the hash
# of a new session skips a cooling-down backend

{
    my $key = 'strictcool-1';
    my $x = rv_pick($key, \%W_EQ);
    my $path = '/strict/v1/chat/completions';
    my $r = chat($tc, $key, path => $path);
    is(desc($r), "200 $x/new", 'strict+cool-down: new session on C');

    # another session pinned to the same backend, for the rebind case
    my $rkey;
    for my $i (0 .. 1000) {
        next unless rv_pick("rbcool-$i", \%W_EQ) eq $x;
        $rkey = "rbcool-$i";
        last;
    }
    $r = chat($tc, $rkey);
    is(desc($r), "200 $x/new", 'cool-down: a rebind session on the same backend');

    MG::Test::_write_file("$DIR/down-$x-$key", "1\n");
    $r = chat($tc, $key, path => $path);
    ok($r->{status} == 502 || $r->{status} == 503,
        "strict+cool-down: the failure ($r->{status}) cools $x down on C");
    unlink "$DIR/down-$x-$key";

    $r = chat($tc, $key, path => $path);
    is($r->{status}, 503, 'strict+cool-down: 503');
    is($r->{code}, 'session_backend_unavailable',
        'strict+cool-down: code session_backend_unavailable') or diag($r->{body});
    like($r->{json} && $r->{json}{error}{message} // '',
        qr/the session's backend is unavailable/i, 'strict+cool-down: message');
    is_deeply(mock_counts($key), { a => 0, b => 0, c => 0, $x => 2 },
        'strict+cool-down: nothing sent while it cools down');

    # rebind while the pinned backend cools down: served elsewhere, rebound
    $r = chat($tc, $rkey);
    is($r->{status}, 200, 'cool-down, rebind: served');
    isnt($r->{backend}, $x, 'cool-down, rebind: by another backend');
    is($r->{session}, 'rebound', 'cool-down, rebind: rebound');
    is(mock_counts($rkey)->{$x}, 1, 'cool-down, rebind: the cooling backend '
        . 'was not tried');
    is(pin_becomes($rkey, $r->{backend}, 'm', 'mgc'), $r->{backend},
        'cool-down, rebind: the pin moved');
    ok(!defined((pin($rkey, 'm'))[0]) && defined((pin($key, 'm', 'mgc'))[0]),
        'model_gateway_redis_prefix mgc: pins under mgc:pin:..., none under mg:');

    # new sessions hash over the healthy candidates only
    my (@bad, $k2);
    for my $i (0 .. 200) {
        my $k = "newcool-$i";
        next unless rv_pick($k, \%W_EQ) eq $x;
        my $exp = rv_pick($k, \%W_EQ, $x);
        my $rr = chat($tc, $k);
        push @bad, "$k: " . desc($rr) . " expected $exp/new"
            unless desc($rr) eq "200 $exp/new";
        last if ++$k2 >= 5;
    }
    is_deeply(\@bad, [], "cool-down: new sessions that hash to $x go to the "
        . 'hash over the others');
}

###########################################################################
# a session whose first request failed everywhere leaves no pin; an
# existing session keeps its pin

{
    my $key = 'allfail-1';
    MG::Test::_write_file("$DIR/down-all-$key", "1\n");
    my $r = chat($t, $key);
    is($r->{status}, 502, 'all fail, new session: 502');
    is_deeply(mock_counts($key), { a => 1, b => 1, c => 1 },
        'all fail, new session: every backend tried');
    is(pin_becomes($key, undef), undef, 'all fail, new session: no pin left');
    unlink "$DIR/down-all-$key";
    $r = chat($tb, $key);
    is(desc($r), '200 ' . rv_pick($key, \%W_B) . '/new',
        'all fail: the next request is a new session (node B hash)');

    $key = 'allfail-2';
    my $x = rv_pick($key, \%W_EQ);
    $r = chat($t, $key);
    is(desc($r), "200 $x/new", 'all fail, existing session: created');
    MG::Test::_write_file("$DIR/down-all-$key", "1\n");
    $r = chat($t, $key);
    is($r->{status}, 502, 'all fail, existing session: 502');
    sleep 0.2;
    my ($b) = pin($key);
    is($b, $x, 'all fail, existing session: the pin stays');
    unlink "$DIR/down-all-$key";
    $r = chat($t, $key);
    is(desc($r), "200 $x/hit", 'all fail, existing session: hit afterwards');
}

###########################################################################
# invalid keys; no key

{
    my $before = keyset();
    my $reqs = total_mock_requests();
    my @bad;
    for my $case (['space', 'a b'], ['257 chars', 'k' x 257],
                  ['control char', "a\x01b"], ['DEL', "a\x7fb"],
                  ['non-ASCII', "caf\xc3\xa9"], ['tab', "a\tb"])
    {
        my ($what, $key) = @$case;
        my $r = chat($t, $key);
        push @bad, "$what: $r->{status} " . ($r->{code} // '-')
            . ' ' . ($r->{json} ? $r->{json}{error}{type} // '-' : $r->{body})
            unless $r->{status} == 400
                && ($r->{code} // '') eq 'invalid_session_key'
                && ($r->{json}{error}{type} // '') eq 'invalid_request_error';
    }
    is_deeply(\@bad, [], 'invalid keys: 400 invalid_session_key '
        . '(space, 257 chars, \x01, \x7f, non-ASCII, tab)');
    is_deeply(added_keys($before), [], 'invalid keys: nothing written to redis');
    is(total_mock_requests(), $reqs, 'invalid keys: no backend request');

    my $r = chat($t, 'k' x 256);
    is(desc($r), '200 ' . rv_pick('k' x 256, \%W_EQ) . '/new',
        'a 256-character key is valid');
    ok(scalar(pin('k' x 256)), 'its pin exists');
    $r = chat($t, '!');
    is($r->{session}, 'new', 'a one-character key is valid');

    $before = keyset();
    for my $node ($t, $tb) {
        for (1 .. 4) {
            $r = chat($node, undef);
            push @bad, 'no key: ' . desc($r) . ' session header '
                . ($r->{session} // 'none')
                unless $r->{status} == 200
                    && !exists $r->{headers}{'x-model-gateway-session'};
        }
    }
    $r = chat($t, undef, headers => [['X-Session-Id', '']]);
    push @bad, 'empty key: ' . desc($r)
        unless $r->{status} == 200
            && !exists $r->{headers}{'x-model-gateway-session'};
    is_deeply(\@bad, [], 'without a key (or an empty one): stateless, no '
        . 'X-Model-Gateway-Session');
    is_deeply(added_keys($before), [], 'stateless: nothing written to redis');

    # model_gateway_session_fallback fail changes nothing while Redis is up
    $r = chat($t, 'failmode-up', path => '/failmode/v1/chat/completions');
    is($r->{session}, 'new', 'fallback fail, redis up: new session');
}

###########################################################################
# Redis down from the start (D1, D2: a closed port)

{
    my (@bad, $n);
    for my $i (1 .. 20) {
        my $key = "nored-$i";
        my $exp = rv_pick($key, \%W_EQ);
        my @r = (chat($td1, $key), chat($td2, $key), chat($td2, $key),
                 chat($td1, $key));
        my @got = map { desc($_) } @r;
        push @bad, "$key: [@got] expected $exp/fallback"
            unless "@got" eq join ' ', ("200 $exp/fallback") x 4;
    }
    is_deeply(\@bad, [], 'redis down: fallback, the same (hashed) backend on '
        . 'both nodes (20 sessions)');

    my $r = chat($td1, 'nored-x', path => '/failmode/v1/chat/completions');
    is($r->{status}, 503, 'redis down, fallback fail: 503');
    is($r->{code}, 'session_store_unavailable',
        'redis down, fallback fail: session_store_unavailable') or diag($r->{body});
    is(mock_counts('nored-x')->{a} + mock_counts('nored-x')->{b}
        + mock_counts('nored-x')->{c}, 0, 'redis down, fallback fail: no '
        . 'backend request');
    $r = chat($td2, undef, path => '/failmode/v1/chat/completions');
    is($r->{status}, 200, 'redis down, fallback fail: stateless requests work');

    # strict fallback: only the hashed backend
    my $key = 'nored-strict';
    my $x = rv_pick($key, \%W_EQ);
    MG::Test::_write_file("$DIR/down-$x-$key", "1\n");
    $r = chat($td1, $key, path => '/strict/v1/chat/completions');
    ok($r->{status} == 502 || $r->{status} == 503,
        "redis down, strict: the hashed backend fails: $r->{status}");
    is_deeply(mock_counts($key), { a => 0, b => 0, c => 0, $x => 1 },
        'redis down, strict: only the hashed backend was tried');
    unlink "$DIR/down-$x-$key";

    for my $node ($td1, $td2) {
        my @down = $node->grep_log(qr/redis \S+ is down/);
        is(scalar @down, 2, 'redis down: "is down" logged once per worker')
            or diag(join "\n", @down);
    }
}

###########################################################################
# end: the other nodes' logs get the done_testing checks

sub check_node {
    my ($node, $label) = @_;
    $node->stop;
    my @lines = split /\n/, $node->error_log;
    my @alerts = grep { /\[(?:alert|emerg)\]/ } @lines;
    ok(!@alerts, "node $label: no alerts") or diag(join "\n", @alerts);
    my @crash = grep { /exited on signal/ } @lines;
    ok(!@crash, "node $label: no crashed workers") or diag(join "\n", @crash);
    my @san = grep { /Sanitizer|runtime error:/ } @lines,
        split /\n/, $node->stderr_log;
    ok(!@san, "node $label: no sanitizer reports") or diag(join "\n", @san);
}

check_node($NODE{$_}, $_) for grep { $NODE{$_} } qw(B C D1 D2 E);

{
    my @all = map { @{$t->mock_requests($_)} } @NAMES;
    ok(@all > 10, 'session requests reached the mocks');
    is(scalar(grep { exists $_->{headers}{'x-session-id'} } @all), 0,
        'the session key header was never sent to a provider');
}

$t->done_testing;
