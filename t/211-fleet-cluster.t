#!/usr/bin/perl

# The fleet simulation of t/190-fleet.t (t/lib/MG/Fleet.pm: three gateway
# nodes, three backends, every session asked of every node, a backend
# failing and recovering, an admin weight change) on a Redis Cluster
# (README "Redis Cluster"; six nodes, three primaries, see
# t/lib/MG/Cluster.pm) named with model_gateway_redis_cluster.
# MG_FLEET_SESSIONS sessions: 1000 here (300 under ASan), the issue's
# 10,000 with `make fleet-cluster`. The Redis round trips per request are
# summed over the primaries (INFO commandstats of each, redirected calls
# included); the pins must be spread over the three primaries, and a
# stable cluster must cost no redirect (the gateways' metrics).

use strict;
use warnings;

use Test::More;
use MG::Test;
use MG::Cluster;
use MG::Fleet;

my $t = MG::Test->new;          # node 1; owns the mocks and the cluster
$t->need_module;
my $why = MG::Cluster::available();
plan(skip_all => "no Redis Cluster: $why") if $why;

my $c = MG::Cluster->new($t);
my @P = $c->primaries;
my $N = $ENV{MG_FLEET_SESSIONS} || ($ENV{MG_ASAN} ? 300 : 1000);

# the nodes' metrics summed over their workers, by series name without
# the worker label
sub redis_metrics {
    my @nodes = @_;
    my %sum;
    for my $node (@nodes) {
        my $r = $node->request(method => 'GET', path => '/metrics');
        for (split /\n/, $r->{body} // '') {
            next unless /^(model_gateway_redis_\w+)\{worker="\d+"(,[^}]*)?\}
                          \ (\S+)$/x;
            my ($name, $labels, $v) = ($1, $2 // '', $3);
            $labels =~ s/^,//;
            $sum{$labels ? "$name\{$labels\}" : $name} += $v;
        }
    }
    return \%sum;
}

MG::Fleet::run($t,
    sessions => $N,
    redis => 'model_gateway_redis_cluster ' . $c->seeds . ';',
    calls => sub {
        my $n = 0;
        for my $p (@P) {
            my $info = $c->cmd($p, 'INFO', 'commandstats');
            my ($calls, $rejected) = MG::Fleet::commands($info);
            $n += $calls + $rejected;
        }
        return $n;
    },
    report => sub {
        my @nodes = @_;
        my %keys = map { $_ => $c->cmd($_, 'DBSIZE') // 0 } @P;
        diag('keys per primary: '
             . join(', ', map { "$_: $keys{$_}" } @P));
        ok((grep { $keys{$_} > $N / 2 } @P) == 3,
           'the pins are spread over the three primaries');
        my $m = redis_metrics(@nodes);
        diag(sprintf 'the three nodes: %d commands, %d errors, %d timeouts, '
             . '%d moved, %d ask, %d maps read',
             map { $m->{$_} // 0 } 'model_gateway_redis_commands_total',
             'model_gateway_redis_errors_total',
             'model_gateway_redis_timeouts_total',
             'model_gateway_redis_redirects_total{kind="moved"}',
             'model_gateway_redis_redirects_total{kind="ask"}',
             'model_gateway_redis_cluster_refreshes_total');
        is(($m->{'model_gateway_redis_redirects_total{kind="moved"}'} // 0)
           + ($m->{'model_gateway_redis_redirects_total{kind="ask"}'} // 0),
           0, 'a stable cluster: no redirect');
        is($m->{model_gateway_redis_errors_total} // 0, 0, 'and no error');
    });

$t->done_testing;
