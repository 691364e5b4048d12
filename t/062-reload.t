#!/usr/bin/perl

# nginx -s reload (README "Cool-downs": "State is keyed by backend name:
# after nginx -s reload, counters and cool-downs of backends that still
# exist carry over"):
#   - a stream in flight survives a reload and ends normally;
#   - a backend cooling down before the reload is still cooling down after
#     it when it still exists (another backend added meanwhile);
#   - a failure counted before the reload still counts after it;
#   - a renamed backend starts fresh.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $DIR = $t->dir;
my $JSONH = ['Content-Type', 'application/json'];

sub body_model {
    my $req = shift;
    my $j = eval { decode_json($req->{body} // '') };
    return ref $j eq 'HASH' ? ($j->{model} // '') : '';
}

sub ok_mock {
    my $who = shift;
    return sub {
        my $req = shift;
        return { status => 200, headers => [$JSONH],
                 body => MG::Test::openai_completion(model => body_model($req),
                     content => "answer from $who") };
    };
}

sub fail_mock {
    return sub {
        return { status => 503, headers => [$JSONH],
                 body => '{"error":{"message":"down","type":"server_error"}}' };
    };
}

$t->mock('sse', handler => sub {
    my $req = shift;
    return { status => 200, headers => [['Content-Type', 'text/event-stream']],
             chunks => [MG::Test::openai_stream_events(model => 's1',
                 pieces => ['survives', ' the', ' reload'])],
             hold_after => 1, release => 'sse-go', hold_timeout => 30 };
});
$t->mock('bad', handler => fail_mock());
$t->mock('half', handler => fail_mock());
$t->mock('good', handler => ok_mock('good'));
$t->mock('extra', handler => ok_mock('extra'));

my $CONF = <<'EOF';
%%TEST_GLOBALS%%
worker_processes 2;

events {
    accept_mutex off;
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 2;
    model_gateway_fail_window 30s;
    model_gateway_cooldown 30s;

    log_format rl '$status model=$model_gateway_model '
                  'backend=$model_gateway_backend '
                  'attempts=[$model_gateway_attempts] pid=$pid';

    model_gateway_backend sse {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_sse%%/v1;
        model s1;
    }

    model_gateway_backend %%BAD%% {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        weight 3;
        model m;
    }

    model_gateway_backend half {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_half%%/v1;
        weight 3;
        model h;
    }

    model_gateway_backend good {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_good%%/v1;
        model m;
        model h;
        model g;
    }

%%EXTRA%%

    server {
        listen 127.0.0.1:%%PORT_gw%% reuseport;
        server_name localhost;

        access_log %%DIR%%/rl.log rl;

        location /v1/ {
            model_gateway;
        }
%%LOCATION%%
    }
}
EOF

my $EXTRA = <<'EOF';
    model_gateway_backend extra {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_extra%%/v1;
        model m;
    }
EOF

sub conf {
    my (%o) = @_;
    # write_conf() expands %%PORT_x%% before the variables: expand here
    (my $extra = $EXTRA) =~ s/%%PORT_(\w+)%%/$t->port($1)/ge;
    $t->write_conf($CONF, BAD => $o{bad} // 'bad',
        EXTRA => $o{extra} ? $extra : '',
        LOCATION => $o{location} // '');
}

conf();
$t->run;

###########################################################################
# helpers

sub worker_of {
    my $r = shift;
    my ($pid) = ($r->{headers}{'x-model-gateway-backend'} // '')
        =~ /; worker=(\d+)$/;
    return $pid // 0;
}

sub backend_of {
    my $r = shift;
    my ($name) = ($r->{headers}{'x-model-gateway-backend'} // '')
        =~ /^(.+); worker=\d+$/;
    return $name // '';
}

sub reqs { scalar @{$t->mock_requests($_[0])} }

sub cool_lines {
    my $name = shift;
    return $t->grep_log(qr/backend "\Q$name\E" cools down/);
}

# requests for $model until at least $min were sent and both workers of
# @$workers served (at most $max); returns the responses
sub spread {
    my ($model, $workers, %o) = @_;
    my ($min, $max) = ($o{min} // 10, $o{max} // 60);
    my (@res, %w);
    my %cur = map { $_ => 1 } @$workers;
    while (@res < $max) {
        last if @res >= $min && keys %w >= 2;
        my $r = $t->chat($model, timeout => 20);
        push @res, $r;
        my $pid = worker_of($r);
        $w{$pid}++ if $cur{$pid};
    }
    return \@res, scalar keys %w;
}

###########################################################################
# 1. a stream in flight survives a reload

{
    my @old = $t->worker_pids;
    is(scalar @old, 2, 'two workers');

    my $s = $t->chat_stream('s1', timeout => 10);
    is($s->status, 200, 'stream: 200');
    my $first = $s->next_event(10);
    ok(defined $first && $first =~ /^data: \{/,
        'stream: first event received before the reload');
    my ($spid) = ($s->header('x-model-gateway-backend') // '') =~ /worker=(\d+)/;
    ok($spid && (grep { $_ == $spid } @old), 'stream: served by a worker');

    # reload with a changed configuration (an extra location)
    conf(location => "        location /v2/ {\n            model_gateway;\n"
        . "        }\n");
    ok($t->reload, 'reload');

    # reload() returns once the first new worker runs: wait for the second
    my @new;
    $t->wait_for(sub {
        @new = grep { my $p = $_; !grep { $_ == $p } @old } $t->worker_pids;
        @new >= 2;
    }, 10);
    is(scalar @new, 2, 'reload: two new workers');
    ok(kill(0, $spid), "reload: the stream's worker is still running");

    # reload() returns once a new worker exists; the old ones may accept a
    # little longer, until they handle the shutdown: wait for that
    my @idle_old = grep { $_ != $spid } @old;
    ok($t->wait_for(sub {
        !(grep { kill 0, $_ } @idle_old)
        && $t->grep_log(qr/ $spid#\d+: gracefully shutting down/) }, 10),
        'reload: old workers stopped accepting');
    ok(kill(0, $spid), "reload: the stream's worker is still running");

    # new requests are served by the new workers
    my $r = $t->chat('g', prefix => '/v2');
    is($r->{status}, 200, 'reload: the new configuration is in use');
    ok((grep { $_ == worker_of($r) } @new), 'reload: served by a new worker');

    # nothing more arrived during the reload; then the rest
    my $more = $s->next_event(0.3);
    ok(!defined $more || $more !~ /survives/,
        'stream: still held by the backend');
    $t->release('sse-go');
    my $rest = $s->rest(10);
    my @data = MG::Test::sse_data($first, $more, $rest);
    my @json = MG::Test::sse_json($first, $more, $rest);
    is(join('', map { $_->{choices}[0]{delta}{content} // '' } @json),
        'survives the reload', 'stream: every content event arrived');
    is($data[-1], '[DONE]', 'stream: ends with [DONE]');
    ok(!(grep { exists $_->{error} } @json), 'stream: no error event');
    ok($s->complete, 'stream: chunked framing ended properly');
    # (nginx lingers on the client connection of an exiting worker until
    # the client closes it or lingering_timeout, as with proxy_pass)
    $s->close;

    ok($t->wait_for(sub { !kill(0, $spid) }, 10),
        "stream: the old worker exits once the stream ended");
    my @alerts = $t->grep_log(qr/\[(?:alert|emerg|crit)\]/);
    is(scalar @alerts, 0, 'no [alert]/[crit]/[emerg] in error.log')
        or diag(join "\n", @alerts);
}

###########################################################################
# 2. cool-downs and failure counts carry over a reload

my $bad_before;
{
    # bad: two failures, cooling down for 30 s; half: one failure
    for my $i (1, 2) {
        my $r = $t->chat('m', timeout => 20);
        is($r->{status}, 200, "m $i: 200 (failover)");
        is(backend_of($r), 'good', "m $i: served by good");
    }
    is(reqs('bad'), 2, 'bad failed twice');
    is(scalar(cool_lines('bad')), 1, 'bad cools down');

    my $r = $t->chat('h', timeout => 20);
    is(backend_of($r), 'good', 'h: half failed once, good served');
    is(reqs('half'), 1, 'half failed once');
    is(scalar(cool_lines('half')), 0, 'half is not cooling down');

    # reload: bad still exists, extra is added
    my @old = $t->worker_pids;
    conf(extra => 1);
    ok($t->reload(wait_old => 1), 'reload adding backend "extra"');
    my @new = $t->worker_pids;
    ok(!(grep { my $p = $_; grep { $_ == $p } @old } @new),
        'only new workers left');

    my ($res, $nw) = spread('m', \@new, min => 12);
    my %n;
    $n{backend_of($_)}++ for @$res;
    note('after reload: ' . join ', ', map { "$_ $n{$_}" } sort keys %n);
    is(scalar(grep { ($_->{status} // 0) == 200 } @$res), scalar @$res,
        'after reload: ' . @$res . ' requests for m, all 200');
    is(reqs('bad'), 2, "after reload: bad's cool-down carried over, its mock "
        . 'got nothing');
    ok($n{extra} && $n{good}, 'after reload: good and the new extra serve m');
    is($nw, 2, 'after reload: both new workers served');

    # half's first failure still counts: one more and it cools down
    $r = $t->chat('h', timeout => 20);
    is(backend_of($r), 'good', 'h after reload: half fails again, good served');
    is(reqs('half'), 2, 'h after reload: half got its second request');
    ok($t->wait_log(qr/backend "half" cools down/, 5),
        'h after reload: half cools down (failure count carried over)');
    ($res) = spread('h', \@new, min => 6);
    is(reqs('half'), 2, 'h after reload: then half gets nothing');
    $bad_before = reqs('bad');
}

###########################################################################
# 3. a renamed backend starts fresh

{
    my @old = $t->worker_pids;
    conf(extra => 1, bad => 'renamed');
    ok($t->reload(wait_old => 1), 'reload renaming "bad" to "renamed"');

    my @res;
    for (1 .. 6) {
        push @res, $t->chat('m', timeout => 20);
        last if reqs('bad') > $bad_before;
    }
    ok(reqs('bad') > $bad_before,
        'renamed: its mock is reached again (no cool-down: a new name) after '
        . @res . ' request(s)');
    is($res[-1]{status}, 200, 'renamed: client still gets 200 (failover)');
    my @lines;
    $t->wait_for(sub {
        open my $fh, '<', "$DIR/rl.log" or return;
        @lines = grep { /attempts=\[renamed:503/ } <$fh>;
    }, 5);
    ok(@lines >= 1, 'renamed: attempts variable shows renamed:503');
    is(scalar(cool_lines('renamed')), 0, 'renamed: not cooling down after one '
        . 'failure');
}

$t->done_testing;
