package MG::Fleet;

# The fleet simulation (README "Tests", "Fleet simulation") shared by
# t/190-fleet.t (one Redis) and t/211-fleet-cluster.t (a Redis Cluster):
# three gateway nodes, three backends, N sessions, each asked of every
# node in turn:
#   - every node routes every session the same way: after its first
#     request, after a backend fails (its sessions rebind on one node; the
#     others follow within model_gateway_session_cache, the documented
#     staleness window, 5 s here, which the count leaves out) and
#     recovers, and after an admin weight change (new sessions then hash
#     by the new weights on every node);
#   - the Redis round trips per request are printed (pins cached per node:
#     about none for a hot session).
# Disagreements outside the documented windows fail the test.
#
#   MG::Fleet::run($t, sessions => N, redis => "model_gateway_redis ...;",
#                  calls => sub { ... }, report => sub { ... });
#
# $t is node 1 (it owns the mocks; the caller started Redis on it);
# `redis` is the configuration naming Redis; `calls` returns the number of
# the gateway's commands Redis has run so far (the round trips: GETEX,
# EVALSHA, EVAL, PEXPIRE), however the store counts them; `report`, if
# given, is called at the end with the three nodes. The caller ends with
# $t->done_testing.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use MG::Test ();
use MG::Rendezvous;

my @NAMES = qw(a b c);

# MG::Fleet::commands($info): the gateway's round trips in the text of
# INFO commandstats: the calls of GETEX, EVALSHA, EVAL and PEXPIRE; in
# list context also their rejected calls (a cluster's MOVED and ASK)
sub commands {
    my $info = shift // '';
    my ($n, $rej) = (0, 0);
    while ($info =~ /cmdstat_(?:getex|evalsha|eval|pexpire):calls=(\d+)
                     (?:.*?rejected_calls=(\d+))?/xg)
    {
        $n += $1;
        $rej += $2 // 0;
    }
    return wantarray ? ($n, $rej) : $n;
}

sub run {
    my ($t, %o) = @_;
    my $N = $o{sessions};
    my @nodes = ($t, MG::Test->new, MG::Test->new);
    my $DIR = $t->dir;
    my $top = abs_path(dirname(abs_path(__FILE__)) . '/../../..');

    for my $name (@NAMES) {
        $t->mock($name, handler => sub {
            my $req = shift;
            if (-e "$DIR/down-$name") {
                return { status => 503, keepalive => 1,
                         headers => [['Content-Type', 'application/json']],
                         body => '{"error":{"message":"down","type":"x"}}' };
            }
            return { status => 200, keepalive => 1,
                     headers => [['Content-Type', 'application/json']],
                     body => '{"id":"c","object":"chat.completion",'
                             . '"created":1,"model":"m","choices":[{"index":'
                             . '0,"message":{"role":"assistant","content":"'
                             . $name . '"},"finish_reason":"stop"}]}' };
        });
    }

    my @out = `$top/bin/mg-key --tenant ops --id ops-1 2>/dev/null`;
    chomp @out;
    my ($ADMIN, $LINE) = @out;
    MG::Test::_write_file("$DIR/admin.keys", "$LINE\n");

    for my $node (@nodes) {
        $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    %%REDIS%%
    model_gateway_redis_connect_timeout 500ms;
    model_gateway_admin_sync 200ms;
    model_gateway_max_fails 1;
    model_gateway_cooldown 60s;
    model_gateway_cache_size 4m;

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PA%%/v1;
        model m;
        keepalive 8;
    }

    model_gateway_backend b {
        type openai_compatible;
        url http://127.0.0.1:%%PB%%/v1;
        model m;
        keepalive 8;
    }

    model_gateway_backend c {
        type openai_compatible;
        url http://127.0.0.1:%%PC%%/v1;
        model m;
        keepalive 8;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;
        keepalive_requests 100000;

        location /v1/ {
            model_gateway;
            model_gateway_session $http_x_session_id;
            model_gateway_session_cache 5s;
        }

        location /admin/ {
            model_gateway_admin %%KEYS%%;
        }

        location = /metrics {
            model_gateway_metrics;
        }
    }
}
EOF
            REDIS => $o{redis}, KEYS => "$DIR/admin.keys",
            PA => $t->port('a'), PB => $t->port('b'), PC => $t->port('c'));
        $node->run;
    }

    # a keepalive client per node: this test sends tens of thousands
    my @conn;

    my $ask = sub {
        my ($i, $sid) = @_;
        for my $try (1 .. 2) {
            my $s = $conn[$i] //= IO::Socket::INET->new(
                PeerAddr => '127.0.0.1', PeerPort => $nodes[$i]->port('gw'),
                Proto => 'tcp', Timeout => 5) or die "connect: $!";
            my $body = '{"model":"m","messages":[{"role":"user",'
                       . '"content":"hi"}]}';
            print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                . "Content-Type: application/json\r\nX-Session-Id: $sid\r\n"
                . "Content-Length: " . length($body) . "\r\n\r\n$body";
            my $buf = '';
            local $/ = "\r\n";
            my $status = <$s>;
            if (!defined $status) {
                close $s;
                $conn[$i] = undef;
                next;
            }
            my $len = 0;
            while (defined(my $l = <$s>)) {
                last if $l eq "\r\n";
                $len = $1 if $l =~ /^content-length:\s*(\d+)/i;
            }
            read($s, $buf, $len) if $len;
            my ($code) = $status =~ /^HTTP\/1\.1 (\d+)/;
            return $code == 200 && $buf =~ /"content":"(\w)"/ ? $1
                                                               : "e$code";
        }
        return 'eio';
    };

    my $round = sub {
        my ($label, $prefix, $n) = @_;
        $n //= $N;
        my ($dis, $err, $reqs) = (0, 0, 0);
        my %where;
        my $c0 = $o{calls}->();
        for my $k (1 .. $n) {
            my $sid = "$prefix$k";
            my %seen;
            for my $i (0 .. 2) {
                my $b = $ask->(($k + $i) % 3, $sid);
                $reqs++;
                if ($b =~ /^e/) { $err++; next }
                $seen{$b}++;
            }
            $dis++ if keys %seen > 1;
            my ($b) = keys %seen;
            $where{$sid} = $b if keys %seen == 1;
        }
        my $trips = ($o{calls}->() - $c0) / ($reqs || 1);
        diag(sprintf "%s: %d sessions x 3 nodes, %d disagreements, "
             . "%d errors, %.3f Redis round trips per request", $label, $n,
             $dis, $err, $trips);
        return ($dis, $err, \%where, $trips);
    };

    my $t0 = time;
    ok($t->wait_for(sub { $ask->(0, 'warm') =~ /^\w$/
                          && $ask->(1, 'warm') =~ /^\w$/
                          && $ask->(2, 'warm') =~ /^\w$/ }, 10),
       'three nodes up');

    # 1. new sessions, each asked of the three nodes
    my ($dis, $err, $where) = $round->('new sessions', 's');
    is($dis, 0, 'new sessions: every node routes every session the same way');
    is($err, 0, 'new sessions: no errors');
    my %count;
    $count{$_}++ for values %$where;
    ok((grep { ($count{$_} // 0) > $N / 6 } @NAMES) == 3,
       'spread over the three backends ('
       . join(', ', map { "$_ " . ($count{$_} // 0) } @NAMES) . ')');

    # 2. hot sessions: asked again within the cache time, pins come from
    #    each node's cache
    my $H = $N < 1000 ? $N : 1000;
    $round->('hot sessions, first', 'h', $H);
    my ($dis2, $err2, undef, $trips2) = $round->('hot sessions, again', 'h',
                                                 $H);
    is($dis2 + $err2, 0, 'hot sessions: the same, no errors');
    ok($trips2 < 0.2, sprintf 'hot sessions: %.3f round trips per request',
       $trips2);

    # 3. backend b fails: its sessions rebind; the other nodes follow once
    #    their cached pin is older than model_gateway_session_cache
    MG::Test::_write_file("$DIR/down-b", "1\n");
    my @on_b = grep { $where->{$_} eq 'b' } sort keys %$where;
    my $moved = 0;
    for my $sid (@on_b) {
        my $r = $ask->(0, $sid);
        $moved++ if $r =~ /^[ac]$/;
    }
    is($moved, scalar @on_b,
       'b down: its ' . scalar(@on_b) . ' sessions moved on node 1');
    sleep 5.2;                      # the staleness window
    my ($dis3, $err3) = $round->('b down', 's');
    is($dis3 + $err3, 0, 'b down: every node agrees (after the window)');

    # 4. b recovers: sessions stay where they moved; still one answer
    unlink "$DIR/down-b";
    for my $node (@nodes) {
        my $r = $node->request(method => 'DELETE',
            path => '/admin/backends/b/cooldown',
            headers => [['Authorization', "Bearer $ADMIN"]]);
        last if $r->{status} == 200;
    }
    sleep 0.5;
    my ($dis4, $err4) = $round->('b back', 's');
    is($dis4 + $err4, 0, 'b back: every node agrees');

    # 5. an admin weight change: new sessions hash by the new weights
    #    everywhere
    my $r = $nodes[1]->request(method => 'POST',
        path => '/admin/backends/c/weight',
        headers => [['Authorization', "Bearer $ADMIN"]],
        json => { weight => 20 });
    is($r->{status}, 200, 'weight of c set to 20 on node 2');
    sleep 0.5;                      # model_gateway_admin_sync
    my ($dis5, $err5, $w5) = $round->('after the weight change', 'w');
    is($dis5 + $err5, 0, 'new sessions after the change: every node agrees');
    my $match = grep { $w5->{$_} eq MG::Rendezvous::pick($_, \@NAMES,
                                       { a => 1, b => 1, c => 20 }) }
                keys %$w5;
    is($match, scalar keys %$w5, 'and they follow the new weights');

    diag(sprintf 'fleet simulation: %.1f s', time - $t0);

    $o{report}->(@nodes) if $o{report};

    # the other nodes' logs get the checks done_testing gives node 1's
    for my $node (@nodes[1, 2]) {
        $node->stop;
        my @l = $node->grep_log(qr/\[(?:alert|emerg)\]|exited on signal|
                                    Sanitizer|runtime\ error:/x);
        ok(!@l, 'no alerts or crashes on node ' . $node->dir) or diag("@l");
    }
    return \@nodes;
}

1;
