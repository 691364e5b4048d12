#!/usr/bin/perl

# Choosing a backend (README "Choosing a backend"), with two workers: all
# balancing state is in the shared zone, so the properties below must hold
# whichever worker serves each request.
#
#   - round_robin: 1:1 alternates strictly, 3:1 repeats a a b a;
#   - least_outstanding: requests in flight (held by the mocks) steer the
#     next requests to the other backend;
#   - peak_ewma: a backend 0.3 s slower to its first byte is avoided;
#   - priority groups: the lower group only while the higher one is cooling
#     down (or was tried for this request); traffic returns afterwards;
#   - model_gateway_balance per model overrides the location's default, and
#     $model_gateway_policy shows the policy used.
#
# Each client request is a new connection; the listening socket has
# reuseport, so the kernel spreads the connections over both workers (the
# worker that served is in X-Model-Gateway-Backend, and both must show up).

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

sub body_model {
    my $req = shift;
    my $j = eval { decode_json($req->{body} // '') };
    return ref $j eq 'HASH' ? ($j->{model} // '') : '';
}

sub completion {
    my ($req, $who) = @_;
    return MG::Test::openai_completion(model => body_model($req),
        content => "answer from $who", id => "chatcmpl-$who-$req->{n}");
}

# answers at once
sub plain_mock {
    my $who = shift;
    return sub {
        my $req = shift;
        return { status => 200, headers => [['Content-Type', 'application/json']],
                 body => completion($req, $who) };
    };
}

# the head at once, the body only once DIR/$release-MODEL exists: the
# request stays in flight at the gateway (which reads a non-streamed body
# whole) until then
sub held {
    my ($req, $who, $release) = @_;
    return { status => 200, headers => [['Content-Type', 'application/json']],
             chunks => [completion($req, $who)], hold_after => 0,
             release => "$release-" . body_model($req), hold_timeout => 30 };
}

$t->mock('a', handler => plain_mock('a'));
$t->mock('b', handler => plain_mock('b'));
$t->mock('slow', handler => sub { held($_[0], 'slow', 'slow-go') });
$t->mock('fast', handler => sub {
    my $req = shift;
    return held($req, 'fast', 'fast-go') if -e "$DIR/fast-hold";
    return plain_mock('fast')->($req);
});
$t->mock('eslow', handler => sub {
    my $req = shift;
    return { %{plain_mock('eslow')->($req)}, delay => 0.3 };
});
$t->mock('efast', handler => plain_mock('efast'));
$t->mock('p1', handler => sub {
    my $req = shift;
    return { status => 503, headers => [['Content-Type', 'application/json']],
             body => '{"error":{"message":"p1 down","type":"server_error"}}' }
        if -e "$DIR/p1-fail";
    return plain_mock('p1')->($req);
});
$t->mock('p2', handler => plain_mock('p2'));

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;

events {
    accept_mutex off;
}

http {
    %%TEST_GLOBALS_HTTP%%

    # only p1 ever fails in this file (the priority test)
    model_gateway_max_fails 1;
    model_gateway_fail_window 10s;
    model_gateway_cooldown 3s;

    log_format pol '$uri $status model=$model_gateway_model '
                   'policy=$model_gateway_policy '
                   'backend=$model_gateway_backend '
                   'attempts=[$model_gateway_attempts] pid=$pid';

    # round robin 1:1 (models rr11, rr11b) and 3:1 (rr31, rr31b)
    model_gateway_backend ra1 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_a%%/v1;
        model rr11;
        model rr11b;
        model pol-rr;
        model lo-override;
    }
    model_gateway_backend rb1 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_b%%/v1;
        model rr11;
        model rr11b;
        model pol-rr;
        model lo-override;
    }
    model_gateway_backend ra3 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_a%%/v1;
        weight 3;
        model rr31;
        model rr31b;
    }
    model_gateway_backend rb3 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_b%%/v1;
        model rr31;
        model rr31b;
    }

    # least outstanding (model lo) and round robin in the same location
    # (model rr-in-lo)
    model_gateway_backend slow {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_slow%%/v1;
        model lo;
        model rr-in-lo;
    }
    model_gateway_backend fast {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_fast%%/v1;
        model lo;
        model rr-in-lo;
    }

    # peak EWMA
    model_gateway_backend eslow {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_eslow%%/v1;
        model gpt-x;
    }
    model_gateway_backend efast {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_efast%%/v1;
        model gpt-x;
    }

    # priority groups
    model_gateway_backend p1 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_p1%%/v1;
        priority 0;
        model prio;
    }
    model_gateway_backend p2 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_p2%%/v1;
        priority 1;
        weight 1000;
        model prio;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%% reuseport;
        server_name localhost;

        access_log %%DIR%%/pol.log pol;

        location /v1/ {
            model_gateway;
            model_gateway_balance peak_ewma gpt-x;
        }

        location /lo/ {
            model_gateway;
            model_gateway_balance least_outstanding;
            model_gateway_balance round_robin rr-in-lo lo-override;
        }
    }
}
EOF

$t->run;

###########################################################################
# helpers

my %PIDS;           # worker pid => responses it served

# backend name from X-Model-Gateway-Backend (and note the worker)
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

# a request sent now and read later (the harness' request() blocks)
sub start_chat {
    my ($model, %o) = @_;
    return $t->start_request(method => 'POST',
        path => ($o{prefix} // '/v1') . '/chat/completions',
        json => { model => $model, messages => $MSGS });
}

sub chat_ready { $t->request_ready(shift) }

sub finish_chat {
    my ($p, $timeout) = @_;
    return $t->finish_request($p, $timeout // 20);
}

# requests a mock received for a model
sub reqs_for {
    my ($mock, $model) = @_;
    return scalar grep { body_model($_) eq $model } @{$t->mock_requests($mock)};
}

sub wait_reqs {
    my ($mock, $model, $count, $timeout) = @_;
    return $t->wait_for(sub { reqs_for($mock, $model) >= $count },
        $timeout // 5);
}

sub pol_lines {
    open my $fh, '<', "$DIR/pol.log" or return ();
    return <$fh>;
}

###########################################################################
# 1. round robin 1:1: strict alternation, whichever worker serves

{
    my @seq;
    my %workers;
    my $not200 = 0;
    for my $i (1 .. 20) {
        my $r = chat('rr11');
        $not200++ if ($r->{status} // 0) != 200;
        my $b = backend_of($r);
        push @seq, $b;
        my ($pid) = ($r->{headers}{'x-model-gateway-backend'} // '')
            =~ /worker=(\d+)/;
        $workers{$pid}++ if $pid;
    }
    my $s = join ' ', @seq;
    is($not200, 0, 'rr 1:1: 20 requests answered 200');
    ok(!(grep { $_ ne 'ra1' && $_ ne 'rb1' } @seq), 'rr 1:1: served by ra1/rb1')
        or diag($s);
    my $alt = 1;
    for my $i (1 .. $#seq) { $alt = 0 if $seq[$i] eq $seq[$i - 1] }
    ok($alt, 'rr 1:1: 20 requests alternate strictly') or diag($s);
    is(scalar(grep { $_ eq 'ra1' } @seq), 10, 'rr 1:1: 10 each');
    is(reqs_for('a', 'rr11'), 10, 'rr 1:1: mock a got 10');
    is(reqs_for('b', 'rr11'), 10, 'rr 1:1: mock b got 10');
    note("rr 1:1 workers: " . join ', ', map { "$_ x$workers{$_}" }
        sort keys %workers);
}

###########################################################################
# 2. round robin 3:1: a a b a, whichever worker serves

{
    my @seq = map { backend_of(chat('rr31')) } 1 .. 24;
    my $s = join ' ', @seq;
    ok(!(grep { $_ ne 'ra3' && $_ ne 'rb3' } @seq), 'rr 3:1: served by ra3/rb3')
        or diag($s);
    is_deeply([@seq[0 .. 3]], [qw(ra3 ra3 rb3 ra3)],
        'rr 3:1: from a zero state: ra3 ra3 rb3 ra3') or diag($s);
    my $windows_ok = 1;
    for my $i (0 .. $#seq - 3) {
        my $n = grep { $_ eq 'rb3' } @seq[$i .. $i + 3];
        $windows_ok = 0 unless $n == 1;
    }
    ok($windows_ok, 'rr 3:1: every 4 consecutive requests: 3 ra3, 1 rb3')
        or diag($s);
    ok($s !~ /rb3 rb3/, 'rr 3:1: rb3 never twice in a row') or diag($s);
    is(reqs_for('a', 'rr31'), 18, 'rr 3:1: mock a got 18 of 24');
    is(reqs_for('b', 'rr31'), 6, 'rr 3:1: mock b got 6 of 24');
}

###########################################################################
# 3. round robin with concurrent clients: still exact (the counts do not
#    depend on which worker took which connection)

{
    my @p = map { start_chat('rr11b') } 1 .. 16;
    my @res = map { finish_chat($_) } @p;
    is(scalar(grep { ($_->{status} // 0) == 200 } @res), 16,
        'rr 1:1, 16 concurrent: all 200');
    my %n;
    $n{backend_of($_)}++ for @res;
    is($n{ra1} // 0, 8, 'rr 1:1, 16 concurrent: 8 on ra1');
    is($n{rb1} // 0, 8, 'rr 1:1, 16 concurrent: 8 on rb1');

    @p = map { start_chat('rr31b') } 1 .. 16;
    @res = map { finish_chat($_) } @p;
    %n = ();
    $n{backend_of($_)}++ for @res;
    is($n{ra3} // 0, 12, 'rr 3:1, 16 concurrent: 12 on ra3');
    is($n{rb3} // 0, 4, 'rr 3:1, 16 concurrent: 4 on rb3');
}

###########################################################################
# 4. least outstanding: requests in flight steer the choice

{
    # 4a. fast answers at once; send requests until one is held by slow
    my $held;
    my $fast_done = 0;
    for my $i (1 .. 6) {
        my $p = start_chat('lo', prefix => '/lo');
        my $landed = $t->wait_for(sub {
            return 'slow' if reqs_for('slow', 'lo') >= 1;
            return 'fast' if chat_ready($p);
            return;
        }, 10);
        if (($landed // '') eq 'slow') { $held = $p; last }
        my $r = finish_chat($p);
        is(backend_of($r), 'fast', 'lo: a request not held was served by fast');
        $fast_done++;
        sleep 0.02;
    }
    ok($held, 'lo: slow holds a request') or BAIL_OUT('no held request');
    ok($fast_done <= 1, "lo: ties rotate (slow got one of the first two "
        . "requests; fast answered $fast_done before)");

    # 4b. slow has 1 in flight: sequential requests (from both workers)
    #     all go to fast
    my (@seq, %w);
    while (@seq < 40 && (@seq < 10 || keys %w < 2)) {
        my $r = chat('lo', prefix => '/lo');
        push @seq, backend_of($r);
        $w{$1}++ if ($r->{headers}{'x-model-gateway-backend'} // '')
            =~ /worker=(\d+)/;
        sleep 0.02;
    }
    my $n_4b = @seq;
    is_deeply(\@seq, [('fast') x @seq], 'lo: while slow holds one request, '
        . @seq . ' sequential requests go to fast') or diag("@seq");
    is(scalar keys %w, 2, 'lo: both workers served them');
    is(reqs_for('slow', 'lo'), 1, 'lo: slow still received only one');
    ok(!chat_ready($held), 'lo: the held request is still in flight');

    # 4c. fast holds as well now: in-flight counts stay balanced
    $t->release('fast-hold');
    my @inflight = ($held);
    my $balanced = 1;
    for my $k (1 .. 7) {
        my $before = reqs_for('slow', 'lo') + reqs_for('fast', 'lo');
        push @inflight, start_chat('lo', prefix => '/lo');
        $t->wait_for(sub {
            reqs_for('slow', 'lo') + reqs_for('fast', 'lo') > $before }, 10);
        my $s = reqs_for('slow', 'lo');
        my $f = reqs_for('fast', 'lo') - $fast_done - $n_4b;  # held at fast
        $balanced = 0 if abs($s - $f) > 1;
        note("lo: in flight after $k more: slow $s, fast $f");
    }
    ok($balanced, 'lo: with both holding, in-flight counts never differ by '
        . 'more than one');
    is(reqs_for('slow', 'lo'), 4, 'lo: 8 in flight: 4 at slow');
    is(reqs_for('fast', 'lo') - $fast_done - $n_4b, 4,
        'lo: 8 in flight: 4 at fast');
    ok(!(grep { chat_ready($_) } @inflight), 'lo: all 8 still in flight');

    # 4d. fast lets its 4 go; slow still has 4 in flight: all new requests
    #     go to fast
    unlink "$DIR/fast-hold";
    $t->release('fast-go-lo');
    my $fast_ok = $t->wait_for(sub {
        (grep { chat_ready($_) } @inflight) >= 4 }, 10);
    ok($fast_ok, "lo: fast's four answered");
    my @fr = map { finish_chat($_) } grep { chat_ready($_) } @inflight;
    @inflight = grep { !chat_ready($_) } @inflight;
    is(scalar @inflight, 4, 'lo: four still held at slow');
    is(scalar(grep { backend_of($_) eq 'fast' && $_->{status} == 200 } @fr),
        4, "lo: fast's four answered 200 by fast");
    sleep 0.05;
    @seq = ();
    for (1 .. 8) {
        push @seq, backend_of(chat('lo', prefix => '/lo'));
        sleep 0.02;
    }
    is_deeply(\@seq, [('fast') x 8],
        'lo: slow with 4 in flight: 8 sequential requests go to fast')
        or diag("@seq");
    is(reqs_for('slow', 'lo'), 4, 'lo: slow received nothing more');

    # 4e. release slow: its four complete
    $t->release('slow-go-lo');
    my @sr = map { finish_chat($_) } @inflight;
    is(scalar(grep { ($_->{status} // 0) == 200 && backend_of($_) eq 'slow' }
        @sr), 4, 'lo: the four held at slow answered 200 by slow');

    # 4f. both idle again: ties rotate between the two
    sleep 0.05;
    my %n;
    for (1 .. 10) {
        $n{backend_of(chat('lo', prefix => '/lo'))}++;
        sleep 0.02;
    }
    note('lo idle: ' . join ', ', map { "$_ $n{$_}" } sort keys %n);
    ok(($n{slow} // 0) >= 1 && ($n{fast} // 0) >= 1,
        'lo: idle again, both backends get requests');
}

###########################################################################
# 5. round robin for one model inside a least_outstanding location: the
#    per-model policy ignores requests in flight

{
    # slow holds rr-in-lo until released; fast answers at once
    my (@held, @seq);
    for my $i (1 .. 6) {
        my $before = reqs_for('slow', 'rr-in-lo');
        my $p = start_chat('rr-in-lo', prefix => '/lo');
        my $landed = $t->wait_for(sub {
            return 'slow' if reqs_for('slow', 'rr-in-lo') > $before;
            return 'fast' if chat_ready($p);
            return;
        }, 10) // '';
        push @seq, $landed;
        if ($landed eq 'slow') { push @held, $p; next }
        is(backend_of(finish_chat($p)), 'fast', 'rr-in-lo: answered by fast');
        sleep 0.02;
    }
    my $alt = 1;
    for my $i (1 .. $#seq) { $alt = 0 if $seq[$i] eq $seq[$i - 1] }
    ok($alt, 'rr-in-lo: alternates although slow has requests in flight')
        or diag("@seq");
    is(scalar @held, 3, 'rr-in-lo: slow holds 3 of 6');
    $t->release('slow-go-rr-in-lo');
    is(scalar(grep { ($_->{status} // 0) == 200 } map { finish_chat($_) }
        @held), 3, 'rr-in-lo: held requests answered');
}

###########################################################################
# 6. peak EWMA: the backend 0.3 s slower to its first byte is avoided

{
    my %warm;
    for (1 .. 6) {
        $warm{backend_of(chat('gpt-x'))}++;
        sleep 0.02;
    }
    note('ewma warm-up: ' . join ', ', map { "$_ $warm{$_}" } sort keys %warm);
    ok($warm{eslow} && $warm{efast},
        'ewma: warm-up measured both (a backend never measured goes first)');
    my %n;
    for (1 .. 30) {
        $n{backend_of(chat('gpt-x'))}++;
        sleep 0.02;
    }
    note('ewma: ' . join ', ', map { "$_ $n{$_}" } sort keys %n);
    ok(($n{efast} // 0) >= 25, 'ewma: efast got at least 25 of 30 '
        . '(got ' . ($n{efast} // 0) . ')');
    is(($n{efast} // 0) + ($n{eslow} // 0), 30, 'ewma: all 30 served');
}

###########################################################################
# 7. priority groups

{
    my @seq = map { backend_of(chat('prio')) } 1 .. 8;
    is_deeply(\@seq, [('p1') x 8], 'prio: p1 healthy: all 8 to p1 '
        . '(p2 has weight 1000 but a worse priority)') or diag("@seq");
    is(reqs_for('p2', 'prio'), 0, 'prio: p2 received nothing');

    # p1 fails: failover to p2 within the request; p1 cools down
    $t->release('p1-fail');
    my $r = chat('prio');
    my $t_fail = time;
    is($r->{status}, 200, 'prio: p1 fails: 200');
    is(backend_of($r), 'p2', 'prio: p1 fails: served by p2 in the same request');
    is(reqs_for('p1', 'prio'), 9, 'prio: p1 got the failing attempt');
    ok($t->wait_log(qr/backend "p1" cools down/, 5),
        'prio: error.log: p1 cools down');

    # while p1 cools down: straight to p2, p1 sees nothing
    unlink "$DIR/p1-fail";      # p1 would answer again: only its cool-down
                                # keeps requests away
    my @during;
    while (time < $t_fail + 2 || @during < 6) {
        last if @during >= 40;
        push @during, backend_of(chat('prio'));
    }
    is_deeply(\@during, [('p2') x @during],
        'prio: p1 cooling down: ' . @during . ' requests straight to p2')
        or diag("@during");

    # after the cool-down (3 s): back to p1
    my $back = $t->wait_for(sub {
        sleep 0.1;
        backend_of(chat('prio')) eq 'p1';
    }, 10);
    my $el = time - $t_fail;
    ok($back, sprintf 'prio: traffic returns to p1 after the cool-down '
        . '(%.1f s)', $el);
    ok($el >= 2.5, 'prio: not before the cool-down ended');

    # the trial is recorded when its request is finalized, which a busy
    # machine may delay past the client's next request: wait for it
    ok($t->wait_log(qr/backend "p1" passed its trial request/, 5),
        'prio: error.log: p1 passed its trial');
    @seq = map { backend_of(chat('prio')) } 1 .. 6;
    is_deeply(\@seq, [('p1') x 6], 'prio: then all to p1 again')
        or diag("@seq");
}

###########################################################################
# 8. $model_gateway_policy, per-model policy overriding the location's

{
    # one more request of each kind with a distinct model name is not
    # possible (the model decides the policy); check the logged lines
    chat('pol-rr');
    chat('lo-override', prefix => '/lo');
    chat('pol-rr', prefix => '/lo');
    my @l;
    $t->wait_for(sub {
        @l = pol_lines();
        (grep { /model=pol-rr / && m{^/lo/} } @l) >= 1 }, 5);

    my %pol;
    for my $line (@l) {
        my ($uri, $model, $policy) =
            $line =~ m{^(/\w+)/\S+ \d+ model=(\S+) policy=(\S+) } or next;
        $pol{"$uri $model"}{$policy}++;
    }
    my $only = sub {
        my ($k, $p) = @_;
        my @ps = sort keys %{$pol{$k} || {}};
        is("@ps", $p, "policy variable: $k -> $p");
    };
    $only->('/v1 rr11', 'round_robin');
    $only->('/v1 rr31', 'round_robin');
    $only->('/v1 pol-rr', 'round_robin');
    $only->('/v1 gpt-x', 'peak_ewma');
    $only->('/v1 prio', 'round_robin');
    $only->('/lo lo', 'least_outstanding');
    $only->('/lo pol-rr', 'least_outstanding');
    $only->('/lo rr-in-lo', 'round_robin');
    $only->('/lo lo-override', 'round_robin');

    # the failover of the priority test in the attempts variable
    ok((grep { /model=prio .*backend=p2 attempts=\[p1:503, ?p2:200\]/ } @l),
        'attempts variable: p1:503,p2:200');
}

###########################################################################
# both workers served

{
    my @w = $t->worker_pids;
    note('responses per worker: ' . join ', ', map { "$_: $PIDS{$_}" }
        sort keys %PIDS);
    is(scalar keys %PIDS, 2, 'two distinct workers served responses');
    ok(!(grep { my $p = $_; !grep { $_ == $p } @w } keys %PIDS),
        'they are the current worker processes');
}

$t->done_testing;
