#!/usr/bin/perl

# Cool-downs (README "Cool-downs", "Errors"), with two workers sharing the
# state:
#   - max_fails failures within fail_window cool a backend down: no worker
#     sends it requests; then exactly one trial request (half-open) decides:
#     success puts it back in use, failure cools it down again at once;
#   - 401s cool a backend down after max_fails of them within fail_window
#     when nothing succeeded in that window, logged once even when two
#     requests fail at the same time; a client whose requests draw bursts
#     of 403s while other requests succeed never takes the backend out of
#     service;
#   - a 429 with Retry-After cools the pair (backend, model) down, not the
#     backend; when every candidate is rate limited the gateway answers 429
#     at once with the shortest remaining wait;
#   - every candidate cooling down after failures: 503 no_backend_available
#     with Retry-After, no backend reached.
#
# Every client request is a new connection; the listening socket has
# reuseport, so the kernel spreads them over both workers. Phases that
# assert "no worker sends ..." keep sending until both workers served in
# that phase (checked), within the time the cool-down surely still lasts.
#
# This file checks the wiring: that a cool-down happens, is logged once,
# is shared by both workers and ends with a trial.  The rules' timing
# (how long a cool-down or a rate limit lasts, which failure starts one)
# is checked without a clock in t/unit/test_breaker.c, and the statuses
# in t/unit/test_outcome.c.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $DIR = $t->dir;
my $MSGS = [{ role => 'user', content => 'hi' }];
my $JSONH = ['Content-Type', 'application/json'];

sub body_model {
    my $req = shift;
    my $j = eval { decode_json($req->{body} // '') };
    return ref $j eq 'HASH' ? ($j->{model} // '') : '';
}

sub ok_spec {
    my ($req, $who) = @_;
    return { status => 200, headers => [$JSONH],
             body => MG::Test::openai_completion(model => body_model($req),
                 content => "answer from $who", id => "chatcmpl-$who-$req->{n}") };
}

sub err_spec {
    my ($status, @h) = @_;
    return { status => $status, headers => [$JSONH, @h],
             body => '{"error":{"message":"RAW-' . $status . '","type":"x"}}' };
}

# bad: 503, or 200 once DIR/bad-ok exists; held (until DIR/bad-go) while
# DIR/bad-hold exists
$t->mock('bad', handler => sub {
    my $req = shift;
    my $spec = -e "$DIR/bad-ok" ? ok_spec($req, 'bad') : err_spec(503);
    if (-e "$DIR/bad-hold") {
        $spec->{chunks} = [delete $spec->{body}];
        $spec->{hold_after} = 0;
        $spec->{release} = 'bad-go';
        $spec->{hold_timeout} = 30;
    }
    return $spec;
});
$t->mock('good', handler => sub { ok_spec($_[0], 'good') });
$t->mock('unauth1', handler => sub { err_spec(401) });
# picky refuses (403) a request whose message says "hostile", like a
# provider refusing something one client sent
$t->mock('picky', handler => sub {
    my $req = shift;
    return ($req->{body} // '') =~ /hostile/ ? err_spec(403)
                                               : ok_spec($req, 'picky');
});
# unauth2 sends nothing (not even the status line) until DIR/u2-go exists
$t->mock('unauth2', handler => sub {
    my $body = '{"error":{"message":"RAW-401","type":"x"}}';
    return { raw_pieces => ["HTTP/1.1 401 Unauthorized\r\n"
                 . "Content-Type: application/json\r\n"
                 . 'Content-Length: ' . length($body) . "\r\n"
                 . "Connection: close\r\n\r\n$body"],
             hold_after => 0, release => 'u2-go', hold_timeout => 30 };
});
$t->mock('ra', handler => sub {
    my $req = shift;
    return err_spec(429, ['Retry-After', '2'])
        if body_model($req) eq 'm1' && !-e "$DIR/ra-m1-ok";
    return ok_spec($req, 'ra');
});
$t->mock('rb', handler => sub { ok_spec($_[0], 'rb') });
$t->mock('rl1', handler => sub { err_spec(429, ['Retry-After', '5']) });
$t->mock('rl2', handler => sub { err_spec(429, ['Retry-After', '3']) });
$t->mock('dead1', handler => sub { err_spec(503) });
# strag: its first request is slow and succeeds; every later one fails
$t->mock('strag', handler => sub {
    my $req = shift;
    if ($req->{n} == 1) {
        my $body = MG::Test::openai_completion(model => 'st',
            content => 'late answer from strag');
        return { raw_pieces => ["HTTP/1.1 200 OK\r\n"
                     . "Content-Type: application/json\r\n"
                     . 'Content-Length: ' . length($body) . "\r\n"
                     . "Connection: close\r\n\r\n$body"],
                 hold_after => 0, release => 'st-go', hold_timeout => 30 };
    }
    return err_spec(503);
});
# flap: fails, answers, fails, answers, ...
$t->mock('flap', handler => sub {
    my $req = shift;
    return $req->{n} % 2 ? err_spec(503) : ok_spec($req, 'flap');
});
$t->mock('sparse', handler => sub { err_spec(503) });
$t->mock('dead2', handler => sub { err_spec(503) });

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;

events {
    accept_mutex off;
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 2;
    model_gateway_fail_window 5s;
    model_gateway_cooldown 2s;

    log_format cd '$status model=$model_gateway_model '
                  'backend=$model_gateway_backend '
                  'attempts=[$model_gateway_attempts] pid=$pid';

    # credential rejected (defined before good: the first picks of m401a
    # and m401b are unauth1 and unauth2, then unauth2 again)
    model_gateway_backend unauth1 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_unauth1%%/v1;
        weight 3;
        model m401a;
    }
    model_gateway_backend picky {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_picky%%/v1;
        model mh;
    }
    model_gateway_backend unauth2 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_unauth2%%/v1;
        weight 3;
        model m401b;
    }

    # failure window, half-open trial (model fw); the first pick is bad
    model_gateway_backend bad {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        weight 3;
        model fw;
    }
    model_gateway_backend good {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_good%%/v1;
        model fw;
        model m401a;
        model m401b;
    }

    # rate limits
    model_gateway_backend ra {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_ra%%/v1;
        weight 3;
        model m1;
        model m2;
    }
    model_gateway_backend rb {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_rb%%/v1;
        model m1;
    }
    model_gateway_backend rl1 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_rl1%%/v1;
        model m3;
    }
    model_gateway_backend rl2 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_rl2%%/v1;
        model m3;
    }

    # a success of a request sent before the cool-down (model st)
    model_gateway_backend strag {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_strag%%/v1;
        weight 3;
        model st;
    }
    model_gateway_backend good_st {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_good%%/v1;
        model st;
    }

    # failures with a success between them (model fl), failures further
    # apart than the window (model sp)
    model_gateway_backend flap {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_flap%%/v1;
        model fl;
    }
    model_gateway_backend sparse {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_sparse%%/v1;
        weight 3;
        model sp;
    }
    model_gateway_backend good_sp {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_good%%/v1;
        model sp;
    }

    # every candidate failing
    model_gateway_backend dead1 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_dead1%%/v1;
        model m5;
    }
    model_gateway_backend dead2 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_dead2%%/v1;
        model m5;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%% reuseport;
        server_name localhost;

        access_log %%DIR%%/cd.log cd;

        location /v1/ {
            model_gateway;
        }
    }
}
EOF

$t->run;

###########################################################################
# helpers

my %PIDS;

sub worker_of {
    my $r = shift;
    my ($pid) = ($r->{headers}{'x-model-gateway-backend'} // '')
        =~ /; worker=(\d+)$/;
    return $pid;
}

sub backend_of {
    my $r = shift;
    my $h = $r->{headers}{'x-model-gateway-backend'} // return '';
    my ($name, $pid) = $h =~ /^(.+); worker=(\d+)$/ or return "bad:$h";
    $PIDS{$pid}++;
    return $name;
}

sub chat {
    my ($model, %o) = @_;
    return $t->chat($model, messages => $MSGS, timeout => 20, %o);
}

sub start_chat {
    my ($model) = @_;
    return $t->start_request(method => 'POST', path => '/v1/chat/completions',
        json => { model => $model, messages => $MSGS });
}

sub chat_ready { $t->request_ready(shift) }

sub finish_chat {
    my ($p, $timeout) = @_;
    return $t->finish_request($p, $timeout // 20);
}

sub reqs_for {
    my ($mock, $model) = @_;
    return scalar grep { !defined $model || body_model($_) eq $model }
        @{$t->mock_requests($mock)};
}

sub cool_lines {
    my $name = shift;
    return $t->grep_log(qr/backend "\Q$name\E" cools down/);
}

# sends requests for $model until $until (absolute time) has passed or at
# least $min requests were served by both workers; returns the responses
# (at most $max)
sub phase {
    my ($model, $until, %o) = @_;
    my ($min, $max) = ($o{min} // 6, $o{max} // 60);
    my (@res, %w);
    while (@res < $max) {
        last if time >= $until && @res >= 1;
        last if @res >= $min && keys %w >= 2;
        my $r = chat($model);
        push @res, $r;
        my $pid = worker_of($r);
        $w{$pid}++ if $pid;
        backend_of($r);
    }
    return (\@res, scalar keys %w);
}

# pids (from the access log) of the requests for $model that ended with
# $status and no attempt
sub unattempted_pids {
    my ($model, $status) = @_;
    open my $fh, '<', "$DIR/cd.log" or return ();
    my %p;
    while (<$fh>) {
        $p{$1}++ if /^$status model=\Q$model\E backend=\S* attempts=\[-?\] pid=(\d+)$/;
    }
    return keys %p;
}

###########################################################################
# 1. failure window, cool-down, half-open trial

{
    for my $i (1, 2) {
        my $r = chat('fw');
        is($r->{status}, 200, "fw $i: 200 (failover)");
        is(backend_of($r), 'good', "fw $i: served by good");
    }
    my $t_cool = time;
    is(reqs_for('bad', 'fw'), 2, 'fw: bad was the first pick twice');
    my @cl = cool_lines('bad');
    is(scalar @cl, 1, 'fw: after 2 failures, one "cools down" line for bad')
        or diag(join "\n", @cl);
    like($cl[0] // '', qr/cools down for 2000 ms: it failed too often/,
        'fw: cool-down line says why');

    # cooling down: no worker sends bad anything
    my ($res, $nw) = phase('fw', $t_cool + 1.2, min => 10);
    is(scalar(grep { backend_of($_) eq 'good' && $_->{status} == 200 } @$res),
        scalar @$res, 'fw cooling: ' . @$res . ' requests, all served by good');
    is($nw, 2, 'fw cooling: both workers served in this phase');

    # after ~2 s: one trial request; bad holds it, and answers 200
    $t->release('bad-hold');
    $t->release('bad-ok');
    my $trial;
    my $not_good = 0;
    my $deadline = time + 10;
    while (time < $deadline) {
        my $p = start_chat('fw');
        my $landed = $t->wait_for(sub {
            return 'bad' if reqs_for('bad', 'fw') > 2;
            return 'good' if chat_ready($p);
            return;
        }, 5) // '';
        if ($landed eq 'bad') { $trial = $p; last }
        my $r = finish_chat($p);
        $not_good++ unless backend_of($r) eq 'good';
        sleep 0.1;
    }
    is($not_good, 0, 'fw: until the trial, good served');
    my $el = time - $t_cool;
    ok($trial, sprintf 'fw: a trial request reached bad (after %.1f s)', $el);
    ok($el >= 1.5, 'fw: not before the cool-down (2 s) ended');
    is(reqs_for('bad', 'fw'), 3, 'fw: exactly one trial');

    # while the trial is in flight: no other request goes to bad
    my @p = map { start_chat('fw') } 1 .. 6;
    my @r = map { finish_chat($_) } @p;
    my ($res2, $nw2) = phase('fw', time + 1, min => 10);
    push @r, @$res2;
    is(scalar(grep { ($_->{status} // 0) == 200 && backend_of($_) eq 'good' }
        @r), scalar @r, 'fw trial in flight: ' . @r
        . ' requests (6 concurrent), all served by good');
    is(reqs_for('bad', 'fw'), 3, 'fw trial in flight: bad received nothing more');
    is($nw2, 2, 'fw trial in flight: both workers served in this phase');
    ok(!chat_ready($trial), 'fw: the trial is still in flight');

    # the trial succeeds: bad is used again
    unlink "$DIR/bad-hold";
    $t->release('bad-go');
    my $tr = finish_chat($trial);
    is($tr->{status}, 200, 'fw trial: 200');
    is(backend_of($tr), 'bad', 'fw trial: answered by bad');
    ok($t->wait_log(qr/backend "bad" passed its trial request, in use again/),
        'fw trial: error.log: bad in use again');
    my %n;
    $n{backend_of(chat('fw'))}++ for 1 .. 8;
    ok(($n{bad} // 0) >= 5, 'fw: bad used again (' . ($n{bad} // 0)
        . ' of 8, weight 3:1)');
    is(scalar(cool_lines('bad')), 1, 'fw: still one "cools down" line');

    # bad fails again: after 2 failures it cools down once more
    unlink "$DIR/bad-ok";
    my $before = reqs_for('bad', 'fw');
    my $not200 = 0;
    my $ok = $t->wait_for(sub {
        my $r = chat('fw');
        $not200++ unless ($r->{status} // 0) == 200;
        scalar(cool_lines('bad')) >= 2;
    }, 5, 0);
    is($not200, 0, 'fw again: clients get 200 (failover)');
    my $t_cool2 = time;
    ok($ok, 'fw again: bad cools down again');
    is(reqs_for('bad', 'fw') - $before, 2, 'fw again: after 2 failures');

    # its trial fails: it cools down again after that one failure
    my $trial_r;
    my $n_before = reqs_for('bad', 'fw');
    $deadline = time + 10;
    while (time < $deadline) {
        my $r = chat('fw');
        if (reqs_for('bad', 'fw') > $n_before) { $trial_r = $r; last }
        sleep 0.1;
    }
    my $t_cool3 = time;
    $el = $t_cool3 - $t_cool2;
    ok($trial_r, sprintf 'fw: second trial reached bad (after %.1f s)', $el);
    ok($el >= 1.5, 'fw: second trial not before the cool-down ended');
    is($trial_r && $trial_r->{status}, 200, 'fw: failed trial: client gets 200');
    is($trial_r && backend_of($trial_r), 'good', 'fw: failed trial: from good');
    my @c3 = $t->wait_log(qr/backend "bad" cools down .*its trial request failed/);
    is(scalar @c3, 1, 'fw: error.log: bad cools down, its trial request failed');
    is(scalar(cool_lines('bad')), 3, 'fw: three "cools down" lines in all');

    my ($res3, $nw3) = phase('fw', $t_cool3 + 1.2, min => 10);
    is(scalar(grep { backend_of($_) eq 'good' } @$res3), scalar @$res3,
        'fw after the failed trial: all served by good');
    is($nw3, 2, 'fw after the failed trial: both workers served');
}

###########################################################################
# 2. 401: cool-down after max_fails 401s in a window with no success,
#    logged once; 403s drawn by one client's requests never cool a backend
#    down while other requests succeed

{
    my $r = chat('m401a');
    is($r->{status}, 200, '401: client gets 200 (failover)');
    is(backend_of($r), 'good', '401: served by good');
    unlike($r->{body}, qr/RAW-401/, "401: backend's body not passed on");
    is(reqs_for('unauth1'), 1, '401: unauth1 got one request');
    is(scalar(cool_lines('unauth1')), 0, '401: one is not enough to cool down');

    my $t0;
    ok($t->wait_for(sub {
        is(chat('m401a')->{status}, 200, '401: client gets 200');
        return 0 unless reqs_for('unauth1') >= 2;
        $t0 = time;
        return 1;
    }, 10, 0), '401: a second request reached unauth1');

    my ($res, $nw) = phase('m401a', $t0 + 1.2, min => 10);
    is(scalar(grep { backend_of($_) eq 'good' } @$res), scalar @$res,
        '401: then ' . @$res . ' requests, all served by good');
    is($nw, 2, '401: both workers served in this phase');
    my @cl = cool_lines('unauth1');
    is(scalar @cl, 1, '401: exactly one "cools down" line for unauth1')
        or diag(join "\n", @cl);
    like($cl[0] // '', qr/credential was rejected/, '401: the line says why');

    # two requests rejected at the same time: one cool-down, logged once
    my @p = map { start_chat('m401b') } 1, 2;
    ok($t->wait_for(sub { reqs_for('unauth2') >= 2 }, 10),
        '401 x2: both requests in flight at unauth2');
    $t->release('u2-go');
    my @r = map { finish_chat($_) } @p;
    my $t1 = time;
    is(scalar(grep { ($_->{status} // 0) == 200 && backend_of($_) eq 'good' }
        @r), 2, '401 x2: both fail over to good');
    ($res, $nw) = phase('m401b', $t1 + 1.2, min => 10);
    is(scalar(grep { backend_of($_) eq 'good' } @$res), scalar @$res,
        '401 x2: then all served by good');
    @cl = cool_lines('unauth2');
    is(scalar @cl, 1, '401 x2: exactly one "cools down" line for unauth2')
        or diag(join "\n", @cl);

    # a hostile client's requests draw 403s, over and over, while an
    # honest client's succeed: picky stays in service throughout
    my $hostile = [{ role => 'user', content => 'hostile request' }];
    my ($honest_ok, $refused) = (0, 0);
    chat('mh');
    for my $i (1 .. 12) {
        for (1, 2) {
            my $h = chat('mh', messages => $hostile);
            $refused++ if ($h->{status} // 0) == 502;
        }
        my $ok = chat('mh');
        $honest_ok++ if ($ok->{status} // 0) == 200
                        && backend_of($ok) eq 'picky';
    }
    is($refused, 24, 'hostile: each of the 24 refused requests got a 502');
    is($honest_ok, 12, 'hostile: every honest request was served by picky');
    is(scalar(cool_lines('picky')), 0, 'hostile: picky never cooled down');
    is(reqs_for('picky'), 37, 'hostile: picky received every request');
}

###########################################################################
# 3. 429 with Retry-After: 2 cools down (ra, m1), not ra

{
    my $r = chat('m1');
    my $t429 = time;
    is($r->{status}, 200, '429: client gets 200 (failover)');
    is(backend_of($r), 'rb', '429: served by rb');
    is(reqs_for('ra', 'm1'), 1, '429: ra got m1 once');

    my (@m1, @m2, %w);
    while (time < $t429 + 1.2 || @m1 < 4) {
        last if @m1 >= 40;
        my $a = chat('m1');
        my $b = chat('m2');
        push @m1, $a;
        push @m2, $b;
        $w{worker_of($_) // 0}++ for $a, $b;
        last if @m1 >= 8 && keys %w >= 2;
    }
    is(scalar(grep { backend_of($_) eq 'rb' } @m1), scalar @m1,
        '429: ' . @m1 . ' requests for m1, all to rb');
    is(scalar(grep { ($_->{status} // 0) == 200 && backend_of($_) eq 'ra' }
        @m2), scalar @m2,
        '429: meanwhile ' . @m2 . ' requests for m2, all served by ra');
    is(scalar(grep { $_ } keys %w), 2, '429: both workers served meanwhile');
    is(scalar(cool_lines('ra')), 0, '429: ra itself does not cool down');

    $t->release('ra-m1-ok');
    my $back = $t->wait_for(sub {
        sleep 0.1;
        backend_of(chat('m1')) eq 'ra';
    }, 10);
    my $el = time - $t429;
    ok($back, sprintf '429: after the wait ra gets m1 again (%.1f s)', $el);
    ok($el >= 1.5, '429: not before Retry-After (2 s)');
}

###########################################################################
# 4. every candidate rate limited

{
    my $r = chat('m3');
    is($r->{status}, 429, 'all limited: 429');
    is($r->{json} && $r->{json}{error}{code}, 'rate_limit_exceeded',
        'all limited: rate_limit_exceeded');
    is($r->{headers}{'retry-after'}, '3',
        'all limited: Retry-After 3 (the shortest wait given)');
    is($r->{headers}{'x-should-retry'}, 'false', 'all limited: x-should-retry');
    unlike($r->{body}, qr/RAW-429/, "all limited: backends' bodies not passed on");
    is(reqs_for('rl1'), 1, 'all limited: rl1 tried');
    is(reqs_for('rl2'), 1, 'all limited: rl2 tried');

    my $r2 = chat('m3');
    is($r2->{status}, 429, 'all limited, next request: 429');
    is($r2->{json} && $r2->{json}{error}{code}, 'rate_limit_exceeded',
        'all limited, next request: rate_limit_exceeded');
    my $ra = $r2->{headers}{'retry-after'} // '';
    ok($ra =~ /^\d+$/ && $ra >= 1 && $ra <= 3,
        "all limited, next request: 1 <= Retry-After <= 3 (got '$ra')");
    is($r2->{headers}{'x-should-retry'}, 'false',
        'all limited, next request: x-should-retry');
    is(reqs_for('rl1') + reqs_for('rl2'), 2,
        'all limited, next request: no backend reached');

    # from both workers
    my $t0 = time;
    my @r;
    while (@r < 40 && (@r < 6 || unattempted_pids('m3', 429) < 2)) {
        push @r, chat('m3');
        last if time > $t0 + 1.5;
    }
    is(scalar(grep { ($_->{status} // 0) == 429 } @r), scalar @r,
        'all limited: ' . @r . ' more requests, all 429');
    is(reqs_for('rl1') + reqs_for('rl2'), 2,
        'all limited: still no backend reached');
    $t->wait_for(sub { unattempted_pids('m3', 429) >= 2 }, 2);
    is(scalar(unattempted_pids('m3', 429)), 2,
        'all limited: both workers answered without an attempt');
}

###########################################################################
# 5. every candidate cooling down after failures: 503

{
    for my $i (1, 2) {
        my $r = chat('m5');
        is($r->{status}, 502, "all failing $i: 502 after trying both");
        is($r->{json} && $r->{json}{error}{code}, 'backend_error',
            "all failing $i: backend_error");
    }
    is(reqs_for('dead1'), 2, 'all failing: dead1 failed twice');
    is(reqs_for('dead2'), 2, 'all failing: dead2 failed twice');
    is(scalar(cool_lines('dead1')), 1, 'all failing: dead1 cools down');
    is(scalar(cool_lines('dead2')), 1, 'all failing: dead2 cools down');

    my $t0 = time;
    my @r;
    while (@r < 40 && (@r < 6 || unattempted_pids('m5', 503) < 2)) {
        push @r, chat('m5');
        last if time > $t0 + 1.2;
    }
    my $r = $r[0];
    is($r->{status}, 503, 'all cooling: 503');
    is($r->{json} && $r->{json}{error}{code}, 'no_backend_available',
        'all cooling: no_backend_available');
    my $ra = $r->{headers}{'retry-after'} // '';
    ok($ra =~ /^\d+$/ && $ra >= 1 && $ra <= 2,
        "all cooling: 1 <= Retry-After <= 2 (got '$ra')");
    is($r->{headers}{'x-should-retry'}, 'false', 'all cooling: x-should-retry');
    is(scalar(grep { ($_->{status} // 0) == 503
        && defined $_->{headers}{'retry-after'} } @r), scalar @r,
        'all cooling: ' . @r . ' requests, all 503 with Retry-After');
    $t->wait_for(sub { unattempted_pids('m5', 503) >= 2 }, 2);
    is(scalar(unattempted_pids('m5', 503)), 2,
        'all cooling: both workers answered without an attempt');
}

###########################################################################
# 6. the window: failures further apart than model_gateway_fail_window (5 s)
#    do not add up

{
    my $r = chat('sp');
    is(backend_of($r), 'good_sp', 'window: sparse fails once, good_sp serves');
    is(reqs_for('sparse'), 1, 'window: sparse got one request');
    sleep 5.5;
    my @r;
    for (1 .. 4) {
        push @r, chat('sp');
        last if reqs_for('sparse') >= 2;
    }
    is(reqs_for('sparse'), 2, 'window: 5.5 s later sparse gets a request '
        . 'again and fails');
    is(scalar(cool_lines('sparse')), 0,
        'window: two failures 5.5 s apart: no cool-down');
    for (1 .. 4) {
        chat('sp');
        last if reqs_for('sparse') >= 3;
    }
    is(reqs_for('sparse'), 3, 'window: sparse is still used');
    ok($t->wait_log(qr/backend "sparse" cools down/, 5),
        'window: a second failure within 5 s cools it down');
}

###########################################################################
# 7. a success between two failures within the window: README: "fails
#    model_gateway_max_fails times within model_gateway_fail_window"
#    (nginx's max_fails/fail_timeout meaning), so the second failure
#    cools flap down

{
    my $r1 = chat('fl');
    is($r1->{status}, 502, 'flap 1: fails (502, the only backend)');
    my $r2 = chat('fl');
    is($r2->{status}, 200, 'flap 2: succeeds');
    my $r3 = chat('fl');
    is($r3->{status}, 502, 'flap 3: fails: 2 failures within 5 s');
    is(reqs_for('flap'), 3, 'flap: three requests reached it');
    $t->wait_log(qr/backend "flap" cools down/, 5);
    is(scalar(cool_lines('flap')), 1,
        'flap: 2 failures within the window (a success between them): '
        . 'cools down');
}

###########################################################################
# 8. a cool-down lasts model_gateway_cooldown even when a request sent
#    before it started succeeds meanwhile (that success is no trial)

{
    my $held = start_chat('st');
    ok($t->wait_for(sub { reqs_for('strag') >= 1 }, 10),
        'straggler: the first request is held by strag');
    my ($n, $not200) = (0, 0);
    $t->wait_for(sub {
        my $r = chat('st');
        $n++;
        $not200++ unless ($r->{status} // 0) == 200;
        scalar(cool_lines('strag')) >= 1;
    }, 5, 0);
    is($not200, 0, 'straggler: clients get 200 (failover to good_st)');
    my $t_cool = time;
    is(scalar(cool_lines('strag')), 1, "straggler: strag cools down after "
        . "2 failures ($n requests)");

    $t->release('st-go');
    my $hr = finish_chat($held);
    is($hr->{status}, 200, 'straggler: the held request succeeds late');
    is(backend_of($hr), 'strag', 'straggler: answered by strag');

    my ($res, $nw) = phase('st', $t_cool + 1.2, min => 10);
    is(scalar(grep { backend_of($_) eq 'good_st' } @$res), scalar @$res,
        'straggler: all served by good_st');
    my @pass = $t->grep_log(qr/backend "strag" passed its trial/);
    is(scalar @pass, 0, 'straggler: no "passed its trial request" line '
        . '(there was no trial)') or diag(join "\n", @pass);
}

###########################################################################

{
    my @w = $t->worker_pids;
    note('responses per worker: ' . join ', ', map { "$_: $PIDS{$_}" }
        sort keys %PIDS);
    is(scalar keys %PIDS, 2, 'two distinct workers served responses');
}

$t->done_testing;
