#!/usr/bin/perl

# Redis Cluster (README "Redis", "Redis Cluster"): six real redis-server
# nodes (three primaries, a replica each, cluster-node-timeout 1000 ms,
# see t/lib/MG/Cluster.pm); the gateway (2 workers, sessions on and no pin
# cache, so that every request goes to Redis) is given the nodes as seeds
# with model_gateway_redis_cluster:
#   - each worker reads the slot map ("redis cluster map" at notice),
#     connects to every primary (model_gateway_redis_up 1,
#     model_gateway_redis_cluster_primaries 3), and session pins land on
#     the primary serving their key's slot, on all three (the slots
#     computed here: CRC16 with hash tags, checked against CLUSTER
#     KEYSLOT); a seed that is a replica is enough to find them all;
#   - under continuous session traffic (distinct sessions, one after the
#     other, counted new / hit / fallback / errors and printed):
#     (a) a forced failover (CLUSTER FAILOVER on a primary's replica): no
#         client error, fallbacks bounded, then new pins of those slots
#         on the promoted node;
#     (b) a slot holding pins migrated (SETSLOT IMPORTING / MIGRATING,
#         MIGRATE of half its keys, paused: clients meet ASK; then
#         finished: MOVED): no error and no fallback at all, the
#         redirects counted by kind, the slot's pins still "hit" after it;
#     (c) a primary killed (SIGKILL): no client error (fallbacks allowed,
#         counted and bounded; the other primaries' requests are counted
#         too: the whole cluster answers CLUSTERDOWN until the promotion),
#         redis_up 0 and cluster_primaries 2 meanwhile, pins on the
#         promoted replica within a bounded time, the map complete again
#         (redis_up 1);
#   - reload and quit with the cluster's connections are prompt;
#   - nginx -t: the cluster with model_gateway_redis, with sentinels,
#     with model_gateway_redis_database, a bad seed, 17 seeds.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use Digest::SHA ();
use MG::Test;
use MG::Cluster;
use MG::Sessions qw(session_key chat gw_conf traffic report pin_key
                    metrics msum per_worker all_up check_node);

my $t = MG::Test->new;
$t->need_module;
my $why = MG::Cluster::available();
plan(skip_all => "no Redis Cluster: $why") if $why;

my $T0 = time;
my $DIR = $t->dir;

###########################################################################
# the backend

$t->mock('a', handler => sub {
    return { status => 200,
             headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion(model => 'm',
                                                 content => 'ok') };
});

###########################################################################
# the cluster

my $c = MG::Cluster->new($t);
my @P = $c->primaries;
is(scalar @P, 3, 'three primaries') or BAIL_OUT($c->describe);
is(scalar(map { $c->replicas_of($_) } @P), 3, 'each with a replica');
diag(sprintf 'cluster up after %.1f s: primaries %s', time - $T0,
     join ', ', map { "$_ (slots " . join(' ', map { "$_->[0]-$_->[1]" }
                                              $c->slots_of($_)) . ')' } @P);

is_deeply([$c->self_check], [], 'our CRC16 key slots are CLUSTER KEYSLOT\'s');

###########################################################################
# the gateway

# MG::Sessions::gw_conf (2 workers, sessions on, each session's outcome
# logged, /metrics) given the cluster's nodes as seeds (all six, unless
# $o{seeds})
sub cluster_conf {
    my ($node, %o) = @_;
    gw_conf($node, backend => $t->port('a'), metrics => 1, session_log => 1,
            redis => 'model_gateway_redis_cluster '
                     . ($o{seeds} // $c->seeds) . ';');
}

# the session's pin is on node $port itself (no redirection followed;
# with $asking, as a client sent there by ASK: in a slot it imports)
sub pin_at { MG::Sessions::pin_at($c, @_) }

my $REDIRECT_MOVED = qr/^model_gateway_redis_redirects_total\{worker="\d+",
                         kind="moved"\}$/x;
my $REDIRECT_ASK = qr/^model_gateway_redis_redirects_total\{worker="\d+",
                       kind="ask"\}$/x;
my $REFRESHES = qr/^model_gateway_redis_cluster_refreshes_total
                   \{worker="\d+"\}$/x;

cluster_conf($t);
$t->run;

ok($t->wait_for(sub { $t->grep_log(qr/\[notice\].*model\ gateway:\ redis
                                      \ cluster\ map:\ /x) >= 2 }, 10),
   'both workers read the cluster map');
ok($t->wait_for(sub { all_up($t) }, 10),
   'metrics: both workers connected to the 3 primaries '
   . '(redis_up 1, cluster_primaries 3)');
my $m0 = metrics($t);
my ($refr, $nrefr) = msum($m0, $REFRESHES);
ok($nrefr == 2 && $refr >= 2, "metrics: cluster_refreshes_total ($refr)");
my ($moved0, $nmoved) = msum($m0, $REDIRECT_MOVED);
my ($ask0, $nask) = msum($m0, $REDIRECT_ASK);
ok($nmoved == 2 && $nask == 2,
   'metrics: redirects_total of kinds moved and ask for each worker');

# new sessions: each pin on the primary serving its key's slot
my (%on, @bad);
for (1 .. 60) {
    my $key = session_key('spread');
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
ok(!@bad, 'new sessions, each pinned on the primary of its slot')
    or diag("@bad");
is(scalar(grep { $on{$_} } @P), 3, 'pins on all three primaries ('
   . join(', ', map { "$_: " . ($on{$_} // 0) } @P) . ')');
my @hit = grep { chat($t, "spread-$_")->{session} ne 'hit' } 0 .. 9;
ok(!@hit, 'and asked again, they are hits') or diag("@hit");

# a hash tag: the pin's slot is the tag's
my $TAG = MG::Cluster::tag_for_slot(($c->slots_of($P[2]))[0][0] + 7);
my $r = chat($t, "{$TAG}-x");
ok($r->{session} eq 'new' && pin_at($P[2], "{$TAG}-x"),
   "a session key with a hash tag is pinned in the tag's slot");

###########################################################################
# traffic through a fault (MG::Sessions::traffic): distinct sessions, one
# after the other (keys of the slots in $o{slots} only, and with $o{others}
# every fourth one elsewhere), until 20 requests in a row were "new" and
# pinned on the promoted node after the fault, or MAX seconds; report()
# prints the counts, and when the node was promoted (its own log) and the
# fallbacks, in seconds after the fault

###########################################################################
# (a) a forced failover of the first primary

my $A = $P[0];
my @A_SLOTS = $c->slots_of($A);
my $A_NEW;
my $t0 = time;
my ($A_REPLICA) = $c->replicas_of($A);
my $f = traffic(t => $t, tag => 'fo', max => 15, slots => \@A_SLOTS,
                pinned => sub { pin_at($A_REPLICA, shift) }, fire => sub {
    $A_NEW = $c->failover($A, wait => 0);
    diag("CLUSTER FAILOVER on $A_NEW, the replica of $A");
});
my $took = $c->wait_promoted($A_NEW);
report('forced failover', $f,
       promoted => $c->log_time($A_NEW, qr/Failover election won/));
diag(sprintf 'failover: the cluster agreed after %.2f s more', $took);

is($f->{error}, 0, 'failover: no client errors');
is($f->{streak}, 20, "failover: new pins of the slots on the promoted node");
ok(defined $f->{recover} && $f->{recover} < 10,
   'failover: recovered within 10 s');
# a redirect to a node not connected yet fails its command (README): the
# requests of the moment each worker takes to connect to the promoted
# node fall back (2 or 3 in all here, 2 to 9 under ASan, all within
# 0.15 s of the command)
ok($f->{fallback} <= 20, 'failover: fallbacks bounded '
   . "($f->{fallback} of $f->{total})");
ok(($f->{last_fallback} // 0) < 1, 'failover: none 1 s after the command');
ok($t->wait_for(sub { all_up($t) }, 10),
   'failover: every primary of the new map connected (redis_up 1)');

###########################################################################
# (b) a slot holding pins migrated from one primary to another, paused
# halfway (ASK), then finished (MOVED)

my $FROM = $P[1];
my $TO = $P[2];
my $SLOT = ($c->slots_of($FROM))[0][0] + 100;
my $MTAG = MG::Cluster::tag_for_slot($SLOT, 'mig');
my @OLD = map { "{$MTAG}-old-$_" } 1 .. 40;

@bad = ();
for my $key (@OLD) {
    my $r = chat($t, $key);
    push @bad, "$key $r->{status} $r->{session}"
        unless $r->{status} == 200 && $r->{session} eq 'new'
               && pin_at($FROM, $key);
}
ok(!@bad, "40 sessions pinned in slot $SLOT on $FROM") or diag("@bad");

# the requests of a phase: the old sessions (hits) and NEW new ones of
# the slot; counts by the session header
sub slot_round {
    my ($phase, $new) = @_;
    my %n;
    my @keys = (@OLD, map { "{$MTAG}-$phase-$_" } 1 .. $new);
    for my $key (@keys) {
        my $r = chat($t, $key);
        my $k = $r->{status} != 200 ? 'error' : $r->{session};
        $n{$k}++;
        $n{misplaced}++ if $k eq 'new'
                           && !pin_at($TO, $key, $phase eq 'during');
    }
    diag(sprintf 'slot %d, %s: %d requests: %s', $SLOT, $phase,
         scalar @keys, join ', ', map { "$n{$_} $_" } sort keys %n);
    return \%n;
}

$m0 = metrics($t);
my $mg = $c->migrate_slot($SLOT, $FROM, $TO, pause => 1, part => 0.5);
diag("slot $SLOT: IMPORTING on $TO, MIGRATING on $FROM, $mg->{moved} of "
     . scalar(@OLD) . " keys moved, paused");
my $asks = grep { my $v = $c->get_at($FROM, pin_key($_));
                  ref $v && $v->{error} =~ /^ASK / } @OLD;
is($asks, $mg->{moved}, "the source answers ASK for the $asks keys moved");

my $during = slot_round('during', 20);
is(($during->{hit} // 0), scalar @OLD, 'migrating: every old session a hit');
is(($during->{new} // 0), 20,
   'migrating: new sessions of the slot new (pinned on the target)');
ok(!$during->{fallback} && !$during->{error} && !$during->{misplaced},
   'migrating: no fallback, no error');
my $m1 = metrics($t);
my $da = msum($m1, $REDIRECT_ASK) - msum($m0, $REDIRECT_ASK);
ok($da >= $mg->{moved}, "redirects_total{kind=\"ask\"} went up by $da");

$c->finish_migration($mg);
is($c->owner($SLOT), $TO, "slot $SLOT now on $TO");
my $moved_at = $c->get_at($FROM, pin_key($OLD[0]));
like(ref $moved_at ? $moved_at->{error} : '', qr/^MOVED /,
     'the old owner answers MOVED');

my $after = slot_round('after', 20);
is(($after->{hit} // 0), scalar @OLD,
   'migrated: every old session still a hit');
is(($after->{new} // 0), 20, 'migrated: new sessions pinned on the target');
ok(!$after->{fallback} && !$after->{error} && !$after->{misplaced},
   'migrated: no fallback, no error');
my $m2 = metrics($t);
my $dm = msum($m2, $REDIRECT_MOVED) - msum($m1, $REDIRECT_MOVED);
ok($dm >= 1, "redirects_total{kind=\"moved\"} went up by $dm");
diag(sprintf 'slot refreshes: %d (were %d)', scalar msum($m2, $REFRESHES),
     scalar msum($m0, $REFRESHES));
@bad = grep { !pin_at($TO, $_) } @OLD;
ok(!@bad, 'every old pin is on the target') or diag("@bad");

###########################################################################
# (c) a primary killed: its replica is promoted, the gateway follows

my $K = $c->owner($SLOT);              # the target of the migration
my @K_SLOTS = $c->slots_of($K);
my ($K_REPLICA) = $c->replicas_of($K);
my $K_NEW;
my %seen;                               # the metrics seen in the outage
my $k = traffic(t => $t, tag => 'kill', max => 25, slots => \@K_SLOTS,
                others => 1, pinned => sub { pin_at($K_REPLICA, shift) },
                fire => sub {
    $K_NEW = $c->kill_primary($K, wait => 0);
    diag("$K killed (SIGKILL), its replica $K_NEW");
}, watch => sub {
    my $m = metrics($t);
    $seen{"up $_"}++ for per_worker($m, 'model_gateway_redis_up');
    $seen{"primaries $_"}++
        for per_worker($m, 'model_gateway_redis_cluster_primaries');
});
$took = $c->wait_promoted($K_NEW, 15);
report('primary killed', $k,
       promoted => $c->log_time($K_NEW, qr/Failover election won/));
# the whole cluster refuses commands (CLUSTERDOWN) from when the nodes
# agree the primary failed until its replica is promoted
# (cluster-require-full-coverage, yes by default): the other primaries'
# requests fall back meanwhile
my @cs = map { my $x = $c->log_time($FROM, qr/Cluster state changed: $_/);
               defined $x ? sprintf('%.2f', $x - $k->{fired}) : '?' }
         qw(fail ok);
diag("killed primary: the cluster's state was fail from $cs[0] s to $cs[1] s"
     . " after the kill (node ${FROM}'s log)");
diag(sprintf 'killed primary: the cluster agreed after %.2f s more', $took);

is($k->{error} + $k->{other_error}, 0, 'killed primary: no client errors');
is($k->{streak}, 20, "killed primary: new pins on the promoted replica");
ok(defined $k->{recover} && $k->{recover} < 15,
   'killed primary: recovered within 15 s');
ok(($k->{last_fallback} // 0) < 10, 'killed primary: fallbacks bounded, '
   . "none 10 s after the kill ($k->{fallback} of $k->{total})");
diag('killed primary: metrics seen meanwhile (value: times): '
     . join(', ', map { "$_: $seen{$_}" } sort keys %seen));
ok($seen{'up 0'} && $seen{'primaries 2'},
   'killed primary: redis_up 0 and cluster_primaries 2 meanwhile');
ok($t->wait_for(sub { all_up($t) }, 10),
   'killed primary: every primary of the new map connected (redis_up 1)');
@bad = grep { chat($t, $_)->{session} ne 'hit' } @OLD[0 .. 9];
ok(!@bad, 'the migrated pins are served by the promoted replica')
    or diag("@bad");

###########################################################################
# one seed, a replica: the map read from it names every primary

my ($SEED) = grep { !$c->{dead}{$_} } $c->replicas_of($P[1]);
my $t1 = MG::Test->new;
cluster_conf($t1, seeds => "127.0.0.1:$SEED");
$t1->run;
ok($t1->wait_for(sub { $t1->grep_log(qr/redis cluster map: /) >= 2 }, 10),
   "one seed, a replica ($SEED): both workers read the map");
ok($t1->wait_for(sub { all_up($t1) }, 10), 'and connected to 3 primaries');
%on = ();
for (1 .. 30) {
    my $key = session_key('seed');
    my $owner = $c->key_owner(pin_key($key));
    my $r = chat($t1, $key);
    $on{$owner}++ if $r->{session} eq 'new' && pin_at($owner, $key);
}
is(scalar(grep { $on{$_} } $c->primaries), 3,
   'one seed: pins on all three primaries');
check_node($t1, 'one seed');

###########################################################################
# reload and quit: prompt with the cluster's connections (an open socket
# left would be an [alert], checked by done_testing)

my $maps = () = $t->grep_log(qr/redis cluster map: /);
$t0 = time;
ok($t->reload(wait_old => 1, timeout => 5), 'reload: the old workers exit');
diag(sprintf 'reload: old workers gone after %.2f s', time - $t0);
ok($t->wait_for(sub { $t->grep_log(qr/redis cluster map: /) >= $maps + 2 },
                10), 'reload: the new workers read the map');
$r = chat($t, 'after-reload');
ok($r->{status} == 200 && $r->{session} eq 'new'
   && pin_at($c->key_owner(pin_key('after-reload')), 'after-reload'),
   'reload: sessions pinned');

$t0 = time;
is($t->stop(timeout => 5), 0, 'quit: nginx exits cleanly');
ok(time - $t0 < 3, sprintf 'quit: within %.2f s', time - $t0);

###########################################################################
# the tools: bin/mg-purge given a node that does not serve the tenant's
# slot finds the one that does; bin/mg-key --redis follows redirects

{
    my $owner = $c->key_owner('mg:{acme}:gw:r:x');
    my ($other) = grep { $_ != $owner } $c->primaries;
    $c->cmd($owner, 'SET', "mg:{acme}:gw:r:resp_$_", 'x') for 1 .. 3;
    $c->cmd($owner, 'SET', 'mg:{acme}:pin:s:m', 'a|1');
    my ($rc, $out) = MG::Test::_capture([$^X, "$ENV{PWD}/bin/mg-purge",
        '--redis', "127.0.0.1:$other", '--tenant', 'acme']);
    is($rc, 0, 'mg-purge on a cluster: exit 0') or diag($out);
    like($out, qr/^3 keys removed$/m, 'mg-purge: the tenant\'s three keys');
    ok(!defined $c->cmd($owner, 'GET', 'mg:{acme}:gw:r:resp_1')
       && defined $c->cmd($owner, 'GET', 'mg:{acme}:pin:s:m'),
       'mg-purge: removed on the slot\'s primary, the pin kept');

    ($rc, $out) = MG::Test::_capture([$^X, "$ENV{PWD}/bin/mg-key",
        '--tenant', 'acme', '--id', 'cluster-key',
        '--redis', "127.0.0.1:$other"]);
    is($rc, 0, 'mg-key --redis on a cluster: exit 0') or diag($out);
    my ($key) = $out =~ /^(mgk_\S+)$/m;
    my $hex = $key && Digest::SHA::sha256_hex($key);
    ok($hex && ($c->cmd($c->key_owner("mg:key:{$hex}"), 'HGET',
                        "mg:key:{$hex}", 'tenant') // '') eq 'acme',
       'mg-key: the record written on its slot\'s primary');
}

###########################################################################
# nginx -t

my $tc = MG::Test->new;
$tc->{ports}{a} = $t->port('a');
my $SEEDS = $c->seeds;

for my $x (
    [ 'with model_gateway_redis (after it)',
      "model_gateway_redis 127.0.0.1:6379;\n"
      . "model_gateway_redis_cluster $SEEDS;",
      qr/"model_gateway_redis_cluster"[ ]directive[ ]cannot[ ]be[ ]used
         [ ]with[ ]"model_gateway_redis"/x ],
    [ 'with model_gateway_redis (before it)',
      "model_gateway_redis_cluster $SEEDS;\n"
      . "model_gateway_redis 127.0.0.1:6379;",
      qr/"model_gateway_redis"[ ]directive[ ]cannot[ ]be[ ]used
         [ ]with[ ]"model_gateway_redis_cluster"/x ],
    [ 'with sentinels',
      "model_gateway_redis_sentinel 127.0.0.1:26379;\n"
      . "model_gateway_redis_sentinel_master m;\n"
      . "model_gateway_redis_cluster $SEEDS;",
      qr/"model_gateway_redis_cluster"[ ]directive[ ]cannot[ ]be[ ]used
         [ ]with[ ]"model_gateway_redis_sentinel"/x ],
    [ 'with model_gateway_redis_database',
      "model_gateway_redis_cluster $SEEDS;\n"
      . "model_gateway_redis_database 0;",
      qr/model_gateway_redis_database.*cluster|cluster.*database/ ],
    [ 'a bad seed',
      "model_gateway_redis_cluster 127.0.0.1:6379 127.0.0.1:notaport;",
      qr/invalid[ ].*address[ ]"127\.0\.0\.1:notaport"/x ],
    [ '17 seeds',
      'model_gateway_redis_cluster '
      . join(' ', map { "127.0.0.1:" . (7000 + $_) } 1 .. 17) . ';',
      qr/too many .*\(at most 16\)/ ],
    [ '16 seeds, default port', 'model_gateway_redis_cluster 127.0.0.1 '
      . join(' ', map { "127.0.0.1:" . (7000 + $_) } 1 .. 15) . ';',
      undef ],
)
{
    my ($name, $directives, $re) = @$x;
    $tc->write_conf(<<"EOF");
%%TEST_GLOBALS%%
events {
}
http {
    %%TEST_GLOBALS_HTTP%%
    $directives
    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_a%%/v1;
        model m;
    }
}
EOF
    my ($rc, $out) = $tc->nginx_t;
    if ($re) {
        ok($rc != 0 && $out =~ $re, "nginx -t: $name") or diag($out);
    } else {
        is($rc, 0, "nginx -t: $name accepted") or diag($out);
    }
}

diag(sprintf 't/210-cluster.t: %.1f s', time - $T0);
$t->done_testing;
