#!/usr/bin/perl

# Redis Cluster over TLS (README "Redis Cluster", TLS): six redis-server
# nodes with no plain port (--port 0 --tls-port P), the cluster bus and
# replication over TLS too (tls-cluster yes, tls-replication yes), so the
# nodes announce their TLS ports; three primaries with a replica each,
# cluster-node-timeout 1000 ms (t/lib/MG/Cluster.pm, option tls). Every
# node's certificate is from the test CA for "redis.test" only (no IP
# address in it). The gateway (2 workers, sessions on, so that every
# request goes to Redis) is given the three replicas as seeds, with
# model_gateway_redis_tls on, the CA and model_gateway_redis_tls_name
# redis.test:
#   - both workers read the slot map over TLS ("redis cluster map: 3
#     primaries"), connect to the three primaries at the addresses and TLS
#     ports the map announced (their "is up" lines, redis_up 1,
#     cluster_primaries 3); sessions are new then hit, each
#     pin on the primary serving its key's slot (read back over TLS,
#     the certificate checked for redis.test), on all three;
#   - a forced failover (CLUSTER FAILOVER on a replica, over TLS) under
#     continuous session traffic: no client error, the fallbacks counted
#     (diag) and bounded, new pins of those slots on the promoted node
#     within a bounded time, the promoted node connected by both workers,
#     the old pins of its slots still hits;
#   - (gateways given all six nodes as seeds)
#     model_gateway_redis_tls_name wrong.test: "redis certificate does not
#     match", no map is read, requests fall back, no pin written;
#   - no model_gateway_redis_tls_name: the name is the first seed's host
#     as written (127.0.0.1, which the certificates do not carry): refused
#     the same way, naming "127.0.0.1";
#   - done_testing: no alerts, crashes or sanitizer reports (and the same
#     checks for the other gateways).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use MG::Test;
use MG::Cluster;
use MG::Sessions qw(session_key chat gw_conf traffic report pin_key
                    in_ranges metrics all_up check_node);

my $t = MG::Test->new;
$t->need_module;
my $why = MG::Cluster::available();
plan(skip_all => "no Redis Cluster: $why") if $why;
plan(skip_all => 'IO::Socket::SSL is not installed')
    unless eval { require IO::Socket::SSL; 1 };

my $T0 = time;
my $DIR = $t->dir;
my $NAME = 'redis.test';
my $CA = $t->ca_path;
my ($CRT, $KEY) = $t->cert($NAME);
my $TLS = { cert => $CRT, key => $KEY, ca => $CA, name => $NAME };

###########################################################################
# this redis-server must have been built with TLS: one node, TLS only,
# must answer PING over TLS (else skip, with the end of its log)

{
    my $port = $t->port('probe');
    my $pid = $t->_spawn(
        cmd => ['redis-server', '--port', '0', '--tls-port', $port,
                '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
                '--dir', $DIR, '--daemonize', 'no',
                '--tls-cert-file', $CRT, '--tls-key-file', $KEY,
                '--tls-ca-cert-file', $CA, '--tls-auth-clients', 'no'],
        out => "$DIR/probe.log");
    my $probe = bless { tls => $TLS }, 'MG::Cluster';
    my $pong = $t->wait_for(sub {
        return -1 if waitpid($pid, POSIX::WNOHANG()) == $pid;
        my $r = $probe->cmd($port, 'PING');
        defined $r && !ref $r && $r eq 'PONG' }, 10, 0.05);
    kill 'KILL', -$pid;
    waitpid($pid, 0);
    $t->_forget_pgid($pid);
    unless ($pong && $pong ne '-1') {
        my @log = split /\n/, MG::Test::_read_file("$DIR/probe.log", 1)
            // '';
        splice @log, 0, @log - 3 if @log > 3;
        plan(skip_all => 'redis-server does not answer on a TLS port '
             . '(built without TLS?): ' . join(' | ', @log));
    }
}

###########################################################################
# the backend

$t->mock('a', handler => sub {
    return { status => 200,
             headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion(model => 'm',
                                                 content => 'ok') };
});

###########################################################################
# the cluster, TLS only

my $c = MG::Cluster->new($t, tls => $TLS);
my @P = $c->primaries;
is(scalar @P, 3, 'three primaries') or BAIL_OUT($c->describe);
is(scalar(map { $c->replicas_of($_) } @P), 3, 'each with a replica');
diag(sprintf 'TLS cluster up after %.1f s: primaries %s', time - $T0,
     join ', ', map { "$_ (slots " . join(' ', map { "$_->[0]-$_->[1]" }
                                              $c->slots_of($_)) . ')' } @P);

# the fixture itself: no plain port, the bus and replication over TLS,
# and CLUSTER SLOTS names the TLS ports
{
    my @bad;
    for my $p ($c->ports) {
        my $r = $c->cmd($p, 'CONFIG', 'GET', 'port');
        my %cf = ref $r eq 'ARRAY' ? @$r : ();
        $r = $c->cmd($p, 'CONFIG', 'GET', 'tls-cluster');
        %cf = (%cf, ref $r eq 'ARRAY' ? @$r : ());
        $r = $c->cmd($p, 'CONFIG', 'GET', 'tls-replication');
        %cf = (%cf, ref $r eq 'ARRAY' ? @$r : ());
        push @bad, "$p: " . join(' ', map { "$_=" . ($cf{$_} // '?') }
                                 qw(port tls-cluster tls-replication))
            unless ($cf{port} // '') eq '0'
                   && ($cf{'tls-cluster'} // '') eq 'yes'
                   && ($cf{'tls-replication'} // '') eq 'yes';
    }
    my $slots = $c->cmd($P[0], 'CLUSTER', 'SLOTS');
    my %announced = ref $slots eq 'ARRAY'
        ? map { $_->[2][1] => 1 } grep { ref $_ eq 'ARRAY' } @$slots : ();
    push @bad, 'CLUSTER SLOTS names ' . join(' ', sort keys %announced)
        unless join(' ', sort keys %announced) eq join(' ', sort @P);
    ok(!@bad, 'every node: no plain port, tls-cluster and tls-replication '
       . 'yes; CLUSTER SLOTS announces the TLS ports') or diag("@bad");
}

###########################################################################
# the gateway

# MG::Sessions::gw_conf (2 workers, sessions on, each session's outcome
# logged, /metrics) given seeds (all six nodes, unless $o{seeds}), TLS on,
# and the TLS directives $o{tls} (the name redis.test and the CA, unless
# given)
sub cluster_conf {
    my ($node, %o) = @_;
    gw_conf($node, backend => $t->port('a'), metrics => 1, session_log => 1,
        redis => join "\n",
            'model_gateway_redis_cluster ' . ($o{seeds} // $c->seeds) . ';',
            'model_gateway_redis_tls on;',
            split /\n\s*/, $o{tls}
                // "model_gateway_redis_tls_name $NAME;\n"
                 . "model_gateway_redis_tls_trusted_certificate $CA;");
}

# the session's pin is on node $port itself, read over TLS (no
# redirection followed)
sub pin_at { MG::Sessions::pin_at($c, @_) }

# no pin of the session anywhere: GET (over TLS, following MOVED) answers
# nil; undef when the cluster could not say
sub no_pin {
    my $session = shift;
    my $v = $c->get(pin_key($session));
    return ref $v ? undef : !defined $v;
}

# the lines saying node 127.0.0.1:$port is up (one per worker
# connection)
sub node_up {
    my ($node, $port) = @_;
    return scalar $node->grep_log(qr/redis\ cluster\ node\ 127\.0\.0\.1:$port
                                     \ is\ up$/x);
}

# the clients node $port has (CLIENT LIST, over TLS), but ours and the
# replication links: the gateway's connections, as {addr => last command}
sub clients {
    my $port = shift;
    my $r = eval { $c->pipeline($port, ['CLIENT', 'ID'],
                                ['CLIENT', 'LIST']) } or return {};
    my ($me, $list) = @$r;
    return {} if ref $list;
    my %cl;
    for my $l (split /\n/, $list) {
        my %f = map { /^([\w-]+)=(.*)$/ ? ($1 => $2) : () } split ' ', $l;
        next if !defined $f{id} || $f{id} == $me
                || ($f{flags} // '') =~ /[SM]/;
        $cl{$f{addr}} = $f{cmd};
    }
    return \%cl;
}

my $TLS_ERR = qr/redis certificate|TLS certificate|TLS handshake/;

# the seeds are the replicas only: a primary is connected to because the
# map read from a replica (over TLS) announced its address and TLS port
my @R = map { $c->replicas_of($_) } @P;
cluster_conf($t, seeds => join ' ', map { "127.0.0.1:$_" } @R);
$t->run;

ok($t->wait_for(sub { $t->grep_log(qr/\[notice\].*model\ gateway:\ redis
                                      \ cluster\ map:\ 3\ primaries,
                                      \ 16384\ of\ 16384\ slots/x) >= 2 },
                10),
   'both workers read the map over TLS: "redis cluster map: 3 primaries"')
    or diag($t->_log_tails(20));
ok($t->wait_for(sub { all_up($t) }, 10),
   'metrics: both workers connected to the 3 primaries '
   . '(redis_up 1, cluster_primaries 3)');
my @down = grep { node_up($t, $_) < 2 } @P;
ok(!@down, 'each primary "is up" for both workers (TLS, redis.test; '
   . 'known from the map only)')
    or diag("not up twice: @down\n" . $t->_log_tails(20));

# new sessions: each pin on the primary serving its key's slot
my (%on, @bad);
my @SPREAD;
for (1 .. 45) {
    my $key = session_key('spread');
    push @SPREAD, $key;
    my $owner = $c->key_owner(pin_key($key));
    my $r = chat($t, $key);
    if ($r->{status} == 200 && $r->{session} eq 'new' && pin_at($owner, $key))
    {
        $on{$owner}++;
    } else {
        push @bad, "$key $r->{status} $r->{session} (slot "
            . MG::Cluster::keyslot(pin_key($key)) . " on $owner)";
    }
}
ok(!@bad, 'new sessions, each pinned on the primary of its slot (read '
   . 'over TLS)') or diag("@bad");
is(scalar(grep { $on{$_} } @P), 3, 'pins on all three primaries ('
   . join(', ', map { "$_: " . ($on{$_} // 0) } @P) . ')');
my @hit = grep { my $r = chat($t, $_);
                 "$r->{status} $r->{session}" ne '200 hit' } @SPREAD;
ok(!@hit, 'and asked again, every one is a hit') or diag("@hit");
ok(!$t->grep_log($TLS_ERR), 'no TLS error logged');

###########################################################################
# a forced failover of the first primary (CLUSTER FAILOVER on its
# replica, over TLS) under traffic: distinct sessions of its slots, one
# after the other, until 20 in a row were "new" and pinned on the
# promoted node, or 15 s (MG::Sessions::traffic)

my $A = $P[0];
my @A_SLOTS = $c->slots_of($A);
my ($A_REPLICA) = $c->replicas_of($A);
my $A_NEW;
my $f = traffic(t => $t, tag => 'fo', max => 15, slots => \@A_SLOTS,
                pinned => sub { pin_at($A_REPLICA, shift) }, fire => sub {
    $A_NEW = $c->failover($A, wait => 0);
    diag("CLUSTER FAILOVER (over TLS) on $A_NEW, the replica of $A");
});
my $took = $c->wait_promoted($A_NEW);
report('forced failover', $f,
       promoted => $c->log_time($A_NEW, qr/Failover election won/));
diag(sprintf 'failover: the cluster agreed after %.2f s more', $took);

is($A_NEW, $A_REPLICA, 'failover: the replica was promoted');
is($f->{error}, 0, 'failover: no client errors');
is($f->{streak}, 20, 'failover: new pins of the slots on the promoted node '
   . '(read over TLS)');
ok(defined $f->{recover} && $f->{recover} < 10,
   'failover: recovered within 10 s');
# (t/210: none to 3 in plain text; a connection to the promoted node
# needs a TLS handshake here)
ok($f->{fallback} <= 20,
   "failover: fallbacks bounded ($f->{fallback} of $f->{total})");
ok(($f->{last_fallback} // 0) < 2, 'failover: none 2 s after the command');
# (a worker may still have the connection it made to that node as a seed,
# so its "is up" lines are not counted: the node's clients are)
ok($t->wait_for(sub { all_up($t) && keys %{clients($A_NEW)} >= 2 }, 10),
   'failover: both workers connected to the promoted node over TLS, and '
   . 'to every primary of the new map');
my @old = grep { my $r = chat($t, $_);
                 "$r->{status} $r->{session}" ne '200 hit' }
          grep { in_ranges(MG::Cluster::keyslot(pin_key($_)), \@A_SLOTS) }
          @SPREAD;
ok(!@old, 'failover: the old pins of those slots are hits, from the '
   . 'promoted node') or diag("@old");
ok(!$t->grep_log($TLS_ERR), 'failover: no TLS error logged');

###########################################################################
# a name the certificates do not carry; and no name, so the first seed's
# host as written: 127.0.0.1

sub refused {
    my ($label, $name, $tls, $tag) = @_;
    my $tw = MG::Test->new;
    cluster_conf($tw, tls => $tls);
    $tw->run;
    ok($tw->wait_for(sub {
            $tw->grep_log(qr/\[error\].*redis\ certificate\ does\ not\ match
                             \ "\Q$name\E"\ from\ 127\.0\.0\.1:\d+/x) }, 10),
       "$label: \"redis certificate does not match \\\"$name\\\"\"")
        or diag($tw->_log_tails(20));
    my (@bad, @pinned);
    my $t0 = time;
    for my $i (1 .. 5) {
        my $r = chat($tw, "$tag-$i");
        push @bad, "$tag-$i: $r->{status} $r->{session}"
            unless "$r->{status} $r->{session}" eq '200 fallback';
    }
    my $dt = time - $t0;
    ok(!@bad, "$label: requests fall back (5 in " . sprintf('%.2f s', $dt)
       . ')') or diag("@bad");
    @pinned = grep { !no_pin("$tag-$_") } 1 .. 5;
    ok(!@pinned, "$label: no pin written") or diag("@pinned");
    ok(!$tw->grep_log(qr/redis cluster map: |redis cluster node \S+ is up/),
       "$label: no map read, no node up");
    check_node($tw, $label);
}

refused('wrong name', 'wrong.test',
        "model_gateway_redis_tls_name wrong.test;\n"
        . "    model_gateway_redis_tls_trusted_certificate $CA;", 'wrong');
refused('no name (the first seed\'s host)', '127.0.0.1',
        "model_gateway_redis_tls_trusted_certificate $CA;", 'noname');

# the first gateway is still served
my $r = chat($t, 'last');
ok($r->{status} == 200 && $r->{session} eq 'new'
   && pin_at($c->key_owner(pin_key('last')), 'last'),
   'the first gateway still pins sessions');

diag(sprintf 't/212-cluster-tls.t: %.1f s', time - $T0);
$t->done_testing;
