package MG::Sessions;

# The session helpers shared by the tests of a Redis that fails over
# (t/200-sentinel.t, t/201-sentinel-tls.t, t/210-cluster.t,
# t/212-cluster-tls.t): each starts a 2-worker gateway with sessions on,
# so that every request goes to Redis, drives a fault under continuous
# session traffic and counts what the clients saw. What differs between
# them (how Redis is named, how a pin is read back, the fault) is passed
# in; the topology and the assertions stay in the test files.
#
#   use MG::Sessions qw(chat traffic report gw_conf ...);
#   gw_conf($t, backend => $t->port('a'),
#           redis => "model_gateway_redis_cluster $seeds;", metrics => 1);
#   my $r = chat($t, session_key('first'));     # {status, session}
#   my $n = traffic(t => $t, tag => 'fo', max => 15,
#                   fire => sub { ... },            # the fault
#                   pinned => sub { pin_at($c, $new, shift) });
#   report('forced failover', $n);
#
# Only core Perl.

use strict;
use warnings;

use Exporter qw(import);
use Test::More ();
use Time::HiRes qw(time sleep);
use MG::Cluster ();

our @EXPORT_OK = qw(session_key chat gw_conf traffic report
                    pin_key pin_at in_ranges next_key
                    metrics msum per_worker all_up check_node);

###########################################################################
# sessions

# the session keys of a test are all distinct (a key used twice would be a
# "hit", not the "new" a count expects): one counter for the whole test,
# the tag only says which phase made the key
my $N = 0;

sub session_key { "$_[0]-" . $N++ }

# chat($node, $session): one chat request in that session; its status
# (0 when there was no response) and X-Model-Gateway-Session ('-' when
# absent: new, hit or fallback otherwise)
sub chat {
    my ($node, $key) = @_;
    my $r = $node->chat('m', headers => [['X-Session-Id', $key]],
                        timeout => 10);
    return { status => $r->{status} // 0,
             session => $r->{headers}{'x-model-gateway-session'} // '-' };
}

###########################################################################
# the gateway

# gw_conf($node, redis => LINES, backend => PORT[, metrics => 1]
#         [, session_log => 1]): writes $node's nginx.conf: 2 workers (so
# that a fault is met by each worker's own connections), one openai
# backend "a" serving model m at 127.0.0.1:PORT, sessions keyed by
# X-Session-Id, and the Redis directives LINES (one per line, written as
# given), with short Redis timeouts so that a dead node costs a request
# little. metrics: a /metrics location; session_log: each request's
# session outcome with a timestamp in DIR/sessions.log, to set beside the
# Redis nodes' logs when a count is off.
sub gw_conf {
    my ($node, %o) = @_;
    my $redis = join "\n", map { "    $_" } split /\n/, $o{redis};
    my $log = !$o{session_log} ? '' : <<'EOF';

    # each request's session outcome, with a timestamp, to set beside the
    # nodes' logs when a count is off
    log_format sessions '$msec $pid $http_x_session_id '
                        '$model_gateway_session_status $status';
EOF
    my $access = $o{session_log}
        ? "\n        access_log %%DIR%%/sessions.log sessions;\n" : '';
    my $metrics = !$o{metrics} ? '' : <<'EOF';

        location = /metrics {
            model_gateway_metrics;
        }
EOF
    $node->write_conf(<<"EOF",
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

$redis
    model_gateway_redis_connect_timeout 500ms;
    model_gateway_redis_timeout 500ms;

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PA%%/v1;
        model m;
    }
$log
    server {
        listen 127.0.0.1:%%PORT_gw%% reuseport;
        server_name localhost;
$access
        model_gateway_session \$http_x_session_id;

        location /v1/ {
            model_gateway;
        }
$metrics    }
}
EOF
        PA => $o{backend});
}

###########################################################################
# pins on a Redis Cluster

sub pin_key { "mg:pin:$_[0]:m" }

# pin_at($c, $port, $session[, $asking]): the session's pin is on node
# $port of the MG::Cluster $c itself (no redirection followed; with
# $asking, as a client sent there by ASK: in a slot it imports)
sub pin_at {
    my ($c, $port, $session, $asking) = @_;
    my $v = $c->get_at($port, pin_key($session), $asking);
    return defined $v && !ref $v;
}

# the ranges ([first, last] slots) that hold $slot
sub in_ranges {
    my ($slot, $ranges) = @_;
    return grep { $slot >= $_->[0] && $slot <= $_->[1] } @$ranges;
}

# a new session key whose pin's slot is in $ranges ($inside true, the
# default) or outside them
sub next_key {
    my ($tag, $ranges, $inside) = @_;
    $inside //= 1;
    while (1) {
        my $key = session_key($tag);
        my $in = in_ranges(MG::Cluster::keyslot(pin_key($key)), $ranges);
        return $key if $inside ? $in : !$in;
    }
}

###########################################################################
# traffic through a fault

# traffic(%o): distinct sessions sent to node $o{t}, one after the other,
# 10 ms apart; after the first 10, $o{fire} is called (the fault); then
# until $o{want} (20) requests in a row were "new" and $o{pinned}->($key)
# says their pin is where it must be now (the promoted node), or $o{max}
# seconds. The keys are tagged $o{tag}; with $o{slots} (a cluster's slot
# ranges) they are keys of those slots only, and with $o{others} every
# fourth request is a key of another slot, counted apart (other,
# other_fallback, other_error: a fault may stop the whole cluster).
# $o{watch}, if given, is called every fifth request after the fault.
# Returns the counts: total, new, fallback, error (a status other than
# 200, or an outcome that is neither new nor fallback), and in seconds
# after the fault: first_fallback, last_fallback, recover (when the last
# streak began; undef if it never reached $o{want}), slowest (the longest
# request); streak (the last one's length) and fired (when, as time()).
sub traffic {
    my (%o) = @_;
    my $t = $o{t};
    my $want = $o{want} // 20;
    my %n = (total => 0, new => 0, fallback => 0, error => 0,
             other => 0, other_fallback => 0, other_error => 0);
    my ($started, $recovered, $streak) = (time, undef, 0);
    my ($fired, $i) = (undef, 0);
    my $key_of = sub {
        $o{slots} ? next_key($o{tag}, $o{slots}, shift)
                  : session_key($o{tag});
    };
    while (time - $started < $o{max}) {
        $i++;
        # the time is taken before the fault: every figure after it
        # includes the time the fault itself took
        if (!$fired && $n{total} >= 10) {
            $fired = time;
            $o{fire}->();
        }
        $o{watch}->() if $o{watch} && $fired && $i % 5 == 0;
        if ($o{others} && $i % 4 == 0) {
            my $r = chat($t, $key_of->(0));
            $n{other}++;
            $n{other_fallback}++ if $r->{session} eq 'fallback';
            $n{other_error}++
                if $r->{status} != 200 || $r->{session} !~ /^(new|fallback)$/;
            next;
        }
        my $key = $key_of->(1);
        my $t1 = time;
        my $r = chat($t, $key);
        $t1 = time - $t1;
        $n{slowest} = $t1 if $fired && $t1 > ($n{slowest} // 0);
        $n{total}++;
        # anything but a "new" pinned where it must be ends the streak,
        # and the recovery is timed from the start of the last one
        if ($r->{status} != 200) {
            $n{error}++;
            ($streak, $recovered) = (0, undef);
        } elsif ($r->{session} eq 'fallback') {
            $n{fallback}++;
            $n{first_fallback} //= time - ($fired // time);
            $n{last_fallback} = time - ($fired // time);
            ($streak, $recovered) = (0, undef);
        } elsif ($r->{session} eq 'new') {
            $n{new}++;
            if ($fired && $o{pinned}->($key)) {
                $recovered //= time;
                last if ++$streak >= $want;
            } else {
                ($streak, $recovered) = (0, undef);
            }
        } else {
            $n{error}++;
            ($streak, $recovered) = (0, undef);
        }
        sleep 0.01;
    }
    $n{recover} = defined $recovered ? $recovered - $fired : undef;
    $n{streak} = $streak;
    $n{fired} = $fired;
    return \%n;
}

# report($what, $n[, promoted => TIME]): prints traffic()'s counts, and
# in seconds after the fault: when the new primary was promoted (TIME, as
# time(), from its own log, if given), the first and the last fallback,
# when the sessions were pinned on it again (20 in a row) and the slowest
# request; the other slots' counts if there were any
sub report {
    my ($what, $n, %o) = @_;
    my $s = sub { defined $_[0] ? sprintf('%.2f s', $_[0]) : 'never' };
    my $fired = $n->{fired};
    Test::More::diag(sprintf '%s: %d requests, %d new, %d fallback, '
        . '%d errors; %sfallbacks from %s to %s; pinned on the new primary '
        . '(%d in a row) after %s; the slowest request after the fault: '
        . '%s%s', $what, @$n{qw(total new fallback error)},
        exists $o{promoted}
            ? 'promoted after ' . $s->(defined $o{promoted} && $fired
                                       ? $o{promoted} - $fired : undef)
              . '; '
            : '',
        $s->($n->{first_fallback}), $s->($n->{last_fallback}),
        $n->{streak}, $s->($n->{recover}), $s->($n->{slowest}),
        $n->{other} ? sprintf('; other primaries: %d requests, %d fallback,'
                              . ' %d errors', @$n{qw(other other_fallback
                              other_error)}) : '');
}

###########################################################################
# metrics (gw_conf(metrics => 1))

# every series of the node's metrics: {series => value}
sub metrics {
    my $node = shift;
    my $r = $node->request(method => 'GET', path => '/metrics');
    return {} unless ($r->{status} // 0) == 200;
    return { map { /^(\S+) (\S+)$/ ? ($1 => $2) : () }
             grep { !/^#/ } split /\n/, $r->{body} };
}

# the sum of the series matching $re, and how many there are
sub msum {
    my ($m, $re) = @_;
    my ($sum, $n) = (0, 0);
    for (grep { $_ =~ $re } keys %$m) { $sum += $m->{$_}; $n++ }
    return wantarray ? ($sum, $n) : $sum;
}

# each worker's value of a per-worker gauge
sub per_worker {
    my ($m, $family) = @_;
    return map { $m->{$_} } sort grep { /^\Q$family\E\{worker="\d+"\}$/ }
        keys %$m;
}

# every worker (2) connected to every primary (3) of its map
sub all_up {
    my $m = metrics(shift);
    my @up = per_worker($m, 'model_gateway_redis_up');
    my @pr = per_worker($m, 'model_gateway_redis_cluster_primaries');
    return @up == 2 && @pr == 2 && !grep({ $_ != 1 } @up)
           && !grep({ $_ != 3 } @pr);
}

###########################################################################
# the other gateways of a test

# check_node($node, $label): stops it, then the done_testing checks (that
# only the test's first gateway gets) as one test: no alert, no crashed
# worker, no sanitizer report in its error log or stderr
sub check_node {
    my ($node, $label) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $node->stop;
    my @l = grep { /\[(?:alert|emerg)\]|exited\ on\ signal|Sanitizer
                    |runtime\ error:/x }
        split(/\n/, $node->error_log), split(/\n/, $node->stderr_log);
    Test::More::ok(!@l, "$label: no alerts, crashes or sanitizer reports")
        or Test::More::diag("@l");
}

1;
