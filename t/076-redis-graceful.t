#!/usr/bin/perl

# Graceful reload and quit with requests waiting on Redis (README "Redis"):
#   - Redis is made slow (a delaying TCP proxy in front of a real
#     redis-server holds each reply back for 2 s), then session requests
#     (plain and streamed) and GET /v1/responses/{id} are sent, and nginx is
#     reloaded (twice) or quit while their commands are in flight: every
#     request gets its full, correct answer, through Redis (session "new",
#     not "fallback"; the stored id's backend, not a 503), and the backend
#     saw each one;
#   - the old workers stay until their waiters are done, then exit; none
#     logs a false "is down", and there is no [alert] (open socket left,
#     aborting: checked by done_testing);
#   - an outage (Redis stopped, then started again) logs one "is down" and
#     one "is up" line per worker; the reconnect attempts in between log at
#     info only;
#   - a Redis reply larger than model_gateway_redis_max_reply_size drops
#     the connection: the request falls back (session "fallback", 503 for a
#     stored id), the cause is logged, and the worker reconnects and uses
#     Redis again.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json encode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $DIR = $t->dir;
my $JSONH = ['Content-Type', 'application/json'];

###########################################################################
# the backend: echoes the request's message; answers GET /v1/responses/ID

$t->mock('a', handler => sub {
    my $req = shift;
    if ($req->{method} eq 'GET'
        && $req->{path} =~ m{^/v1/responses/([\w-]+)$})
    {
        return { status => 200, headers => [$JSONH],
                 body => encode_json({ id => $1, object => 'response',
                     status => 'completed', model => 'm', output => [] }) };
    }
    my $j = eval { decode_json($req->{body} // '') } || {};
    my $c = $j->{messages} ? $j->{messages}[0]{content} // '' : '';
    if ($j->{stream}) {
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => [MG::Test::openai_stream_events(model => 'm',
                     pieces => ['echo ', $c])] };
    }
    return { status => 200, headers => [$JSONH],
             body => MG::Test::openai_completion(model => 'm',
                 content => "echo $c") };
});

###########################################################################
# a TCP proxy in front of Redis that delays what Redis sends by the number
# of seconds in DIR/delay (read for every chunk); what nginx sends is
# appended to DIR/proxy-in.log

MG::Test::_write_file("$DIR/delay_proxy.pl", <<'EOF');
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);

my ($port, $rport, $delayfile, $inlog) = @ARGV;
$SIG{PIPE} = 'IGNORE';
my $lsn = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
    Listen => 128, ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
my $sel = IO::Select->new($lsn);
my %peer;       # fh -> the other side's fh
my %q;          # nginx-side fh -> [[due, data], ...] from Redis

sub delay {
    open my $f, '<', $delayfile or return 0;
    my $d = <$f> // 0;
    return $d + 0;
}

sub drop {
    my $fh = shift;
    my $o = delete $peer{$fh};
    for my $x ($fh, $o) {
        next unless $x;
        $sel->remove($x);
        delete $peer{$x};
        delete $q{$x};
        close $x;
    }
}

while (1) {
    my $to = 0.02;
    for my $fh ($sel->can_read($to)) {
        if ($fh == $lsn) {
            my $c = $lsn->accept or next;
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                PeerPort => $rport, Proto => 'tcp');
            unless ($s) { close $c; next }
            $peer{$c} = $s;
            $peer{$s} = $c;
            $q{$c} = [];
            $sel->add($c, $s);
            next;
        }
        my $o = $peer{$fh} or next;
        my $n = sysread($fh, my $buf, 65536);
        if (!$n) { drop($fh); next }
        if ($q{$fh}) {                  # from nginx: at once
            if (open my $l, ">>", $inlog) {
                printf $l "%.3f %s\n", time, $buf;
                close $l;
            }
            syswrite($o, $buf);
        } else {                        # from Redis: delayed
            push @{$q{$o}}, [time + delay(), $buf];
        }
    }
    my $now = time;
    for my $c (keys %q) {
        my $cq = $q{$c} or next;
        while (@$cq && $cq->[0][0] <= $now) {
            my $it = shift @$cq;
            my $fh = $peer{$peer{$c} // ''} or last;
            syswrite($fh, $it->[1]);
        }
    }
}
EOF

my $RPORT = $t->redis;
my $PPORT = $t->port('proxy');
MG::Test::_write_file("$DIR/delay", "0\n");
$t->_spawn(cmd => [$^X, "$DIR/delay_proxy.pl", $PPORT, $RPORT,
                   "$DIR/delay", "$DIR/proxy-in.log"],
           out => "$DIR/proxy.err");
$t->wait_for(sub { MG::Test::_tcp_listening()->{$PPORT} }, 5)
    or die "the delay proxy did not start";

sub set_delay { MG::Test::_write_file("$DIR/delay", "$_[0]\n") }
sub proxy_in { MG::Test::_read_file("$DIR/proxy-in.log", 1) // '' }

###########################################################################
# nginx

$t->write_conf(<<'EOF', RPORT => $PPORT, PA => $t->port('a'));
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_timeout 10s;
    model_gateway_redis_max_reply_size 64k;

    log_format gw '$request_uri $status session=$model_gateway_session_status '
                  'backend=$model_gateway_backend $request_time $pid';

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PA%%/v1;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        access_log %%DIR%%/gw.log gw;

        location /v1/ {
            model_gateway;
            model_gateway_session $http_x_session_id;
        }
    }
}
EOF
$t->run;

sub up_lines { scalar $t->grep_log(qr/model gateway: redis \S+ is up/) }
sub down_lines { scalar $t->grep_log(qr/model gateway: redis \S+ is down/) }

ok($t->wait_for(sub { up_lines() >= 2 }, 10), 'both workers connected');

###########################################################################
# a batch of requests that wait on Redis

my $SEQ = 0;

sub start_batch {
    my ($tag, $n) = @_;
    my @b;
    for my $i (1 .. $n) {
        $SEQ++;
        my $key = "$tag-s$i";
        push @b, { kind => 'chat', key => $key,
            p => $t->start_request(method => 'POST',
                path => '/v1/chat/completions', timeout => 30,
                headers => [['X-Session-Id', $key]],
                json => { model => 'm',
                    messages => [{ role => 'user', content => "sid=$key" }] }) };
        $key = "$tag-t$i";
        push @b, { kind => 'stream', key => $key,
            p => $t->start_request(method => 'POST',
                path => '/v1/chat/completions', timeout => 30,
                headers => [['X-Session-Id', $key]],
                json => { model => 'm', stream => JSON::PP::true,
                    messages => [{ role => 'user', content => "sid=$key" }] }) };
        my $id = "resp_${tag}_$i";
        push @b, { kind => 'get', key => $id,
            p => $t->start_request(method => 'GET', timeout => 30,
                path => "/v1/responses/$id") };
    }
    return @b;
}

# every command of the batch has reached Redis (through the proxy)
sub batch_in_flight {
    my @b = @_;
    return $t->wait_for(sub {
        my $in = proxy_in();
        !grep { index($in, $_->{key}) < 0 } @b;
    }, 10);
}

sub check_batch {
    my ($label, @b) = @_;
    my @bad;
    for my $x (@b) {
        my $r = $t->finish_request($x->{p}, 30);
        my $st = $r->{status} // 'none';
        my $ok;
        if ($x->{kind} eq 'chat') {
            $ok = $st == 200 && $r->{complete} && $r->{json}
                && $r->{json}{choices}[0]{message}{content} eq "echo sid=$x->{key}"
                && ($r->{headers}{'x-model-gateway-session'} // '') eq 'new';
        } elsif ($x->{kind} eq 'stream') {
            my @d = MG::Test::sse_data($r->{body});
            my $text = join '', map { $_->{choices}[0]{delta}{content} // '' }
                MG::Test::sse_json($r->{body});
            $ok = $st == 200 && $r->{complete} && @d && $d[-1] eq '[DONE]'
                && $text eq "echo sid=$x->{key}"
                && ($r->{headers}{'x-model-gateway-session'} // '') eq 'new';
        } else {
            $ok = $st == 200 && $r->{complete} && $r->{json}
                && ($r->{json}{id} // '') eq $x->{key};
        }
        push @bad, "$x->{kind} $x->{key}: $st "
            . ($r->{error} // '') . ' ' . substr($r->{body} // '', 0, 120)
            unless $ok;
    }
    is_deeply(\@bad, [], "$label: every request answered in full, through "
        . 'Redis (' . scalar(@b) . ' requests)');

    my %seen;
    for my $m (@{$t->mock_requests('a')}) {
        my $j = eval { decode_json($m->{body} // '') };
        my $c = $j && $j->{messages} ? $j->{messages}[0]{content} // '' : '';
        $seen{$1}++ if $c =~ /^sid=(.*)$/;
        $seen{$1}++ if ($m->{path} // '') =~ m{^/v1/responses/([\w-]+)$};
    }
    my @missing = map { $_->{key} } grep { ($seen{$_->{key}} // 0) != 1 } @b;
    is_deeply(\@missing, [], "$label: the backend saw each request once");
}

sub store_ids {
    my ($tag, $n) = @_;
    $t->redis_cmd('SET', "mg:resp:resp_${tag}_$_", 'a') for 1 .. $n;
}

my $N = 6;      # x 3 kinds = 18 requests per batch

# a warm-up without delay
{
    store_ids('w', 2);
    my @b = start_batch('w', 2);
    check_batch('no delay', @b);
}

# reloads with requests waiting on Redis

for my $round (1 .. 2) {
    my $tag = "r$round";
    store_ids($tag, $N);
    set_delay(2);
    my @old = $t->worker_pids;
    my $down = down_lines();
    my @b = start_batch($tag, $N);
    ok(batch_in_flight(@b), "reload $round: all commands reached Redis");
    ok($t->reload, "reload $round: new workers");
    check_batch("reload $round", @b);
    ok($t->wait_for(sub { !grep { kill 0, $_ } @old }, 15),
        "reload $round: the old workers exited");
    is(down_lines(), $down, "reload $round: no \"is down\" from exiting "
        . 'workers');
    set_delay(0);
    ok($t->wait_for(sub { up_lines() >= 2 * ($round + 1) }, 10),
        "reload $round: the new workers connected");
}

###########################################################################
# a Redis reply above model_gateway_redis_max_reply_size (64k)

{
    set_delay(0);
    my $up = up_lines();
    my $big = 'a|' . int(time * 1000) . ('x' x 100_000);
    $t->redis_cmd('SET', 'mg:pin:big-1:m', $big, 'PX', 60000);
    my $r = $t->post_json('/v1/chat/completions',
        { model => 'm', messages => [{ role => 'user', content => 'sid=big-1' }] },
        headers => [['X-Session-Id', 'big-1']]);
    is($r->{status}, 200, 'reply too large: the session request is served');
    is($r->{headers}{'x-model-gateway-session'}, 'fallback',
        'reply too large: via the fallback');
    ok(scalar $t->wait_log(qr/\[error\].*redis \S+ is down: reply larger than model_gateway_redis_max_reply_size/, 3),
        'reply too large: the dropped connection is logged');
    ok($t->wait_for(sub { up_lines() > $up }, 10),
        'reply too large: the worker reconnects');

    $t->redis_cmd('SET', 'mg:resp:resp_big', 'a' x 100_000);
    $r = $t->get('/v1/responses/resp_big');
    is($r->{status}, 503, 'reply too large: a stored id gets 503');
    is($r->{json} && $r->{json}{error}{code}, 'state_store_unavailable',
        'reply too large: state_store_unavailable');

    # a value just under the cap is read as usual (it names no backend)
    ok($t->wait_for(sub { up_lines() >= $up + 2 }, 10),
        'reply too large: both workers up again');
    my $down = down_lines();
    $t->redis_cmd('SET', 'mg:resp:resp_big2', 'a' x 60_000);
    $r = $t->get('/v1/responses/resp_big2');
    is($r->{json} && $r->{json}{error}{code}, 'state_backend_unavailable',
        'a reply under the cap is read');
    is(down_lines(), $down, 'a reply under the cap keeps the connection');
    $r = $t->post_json('/v1/chat/completions',
        { model => 'm', messages => [{ role => 'user', content => 'sid=big-3' }] },
        headers => [['X-Session-Id', 'big-3']]);
    is("$r->{status} " . ($r->{headers}{'x-model-gateway-session'} // '-'),
        '200 new', 'reply too large: later session requests use Redis');
}

###########################################################################
# an outage: one down and one up line per worker, attempts at info

{
    my $off = length $t->error_log;
    $t->stop_redis;
    ok($t->wait_for(sub { down_lines() >= 2 }, 5) && sleep(2),
        'outage: both workers noticed');
    my $r = $t->post_json('/v1/chat/completions',
        { model => 'm', messages => [{ role => 'user', content => 'sid=out-1' }] },
        headers => [['X-Session-Id', 'out-1']]);
    is($r->{headers}{'x-model-gateway-session'}, 'fallback', 'outage: fallback');
    my $up = up_lines();
    $t->redis;
    ok($t->wait_for(sub { up_lines() >= $up + 2 }, 10),
        'outage: both workers reconnected');
    my @l = split /\n/, substr($t->error_log, $off);
    my @down = grep { /redis \S+ is down/ } @l;
    my @upl = grep { /redis \S+ is up/ } @l;
    is(scalar @down, 2, 'outage: one "is down" per worker')
        or diag(join "\n", @down);
    ok(!grep({ !/\[error\]/ } @down), 'outage: "is down" at error');
    is(scalar @upl, 2, 'outage: one "is up" per worker')
        or diag(join "\n", @upl);
    my @attempts = grep { /redis|\Q:$PPORT\E/ && !/is (?:down|up)/ } @l;
    ok(@attempts >= 2, 'outage: reconnect attempts are logged ('
        . scalar(@attempts) . ')');
    my @loud = grep { /\[(?:warn|error|crit)\]/ && !/ is down/ } @l;
    is_deeply(\@loud, [], 'outage: reconnect attempts at info only');
}

###########################################################################
# quit with requests waiting on Redis

{
    store_ids('q', $N);
    set_delay(2);
    my $down = down_lines();
    my @b = start_batch('q', $N);
    ok(batch_in_flight(@b), 'quit: all commands reached Redis');
    my $st = $t->stop(timeout => 20);
    is($st, 0, 'quit: nginx exited normally');
    check_batch('quit', @b);
    is(down_lines(), $down, 'quit: no "is down" from exiting workers');
}

$t->done_testing;
