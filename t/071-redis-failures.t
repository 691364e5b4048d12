#!/usr/bin/perl

# Redis failures (README "Redis", "Sessions"): whatever Redis does,
# requests are served ("fallback" for session requests), stateless requests
# never notice, and the worker recovers on its own.
#   - a real Redis killed mid-run and restarted on the same port: fallback
#     during the outage, "new"/"hit" again after the restart within the
#     reconnect backoff (<= 5 s), one "is down" / "is up" per worker and
#     transition, the reconnect attempts in between at info, no log flood;
#   - NOSCRIPT (SCRIPT FLUSH on the real Redis between requests): the next
#     session request still works, and is a hit;
#   - a Redis that accepts connections and never answers; one that answers
#     the connection setup but never a script (in-flight commands time out
#     after model_gateway_redis_timeout, all at once);
#   - READONLY and LOADING replies: fallback for that request, reconnect,
#     logged;
#   - a client that goes away while its Redis command is in flight (reply
#     late, or never): the gateway stays healthy, the backend never gets
#     the request;
#   - the connection to Redis reset while the worker is busy (workers
#     stopped with SIGSTOP while the reset arrives, so that the worker
#     meets it when it writes, not when it reads): a new session request,
#     and a NOSCRIPT reply that must be re-sent as EVAL.
#
# The fake Redis is a small Perl RESP server (fake_redis.pl, written into
# the server root), one per nginx instance, behaviour read from a mode file
# on every command: ok, delay:SECS, silent, stall, readonly, loading,
# noscript-rst:SECS (the connection setup, INFO included, is always
# answered). It logs accepts, commands and closes.
#
# Instances: R (real Redis), SIL (silent fake), STL (stalling fake), RO
# (READONLY/LOADING fake), AB (client aborts, redis_timeout 2s), RST
# (resets). The mocks belong to R's harness object.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use IO::Socket::INET;
use IO::Select;
use MG::Test;
use MG::Rendezvous;

my $t = MG::Test->new;            # R: real redis; owns the mocks
$t->need_module;

my $DIR = $t->dir;
my @NAMES = qw(a b c);

# the backend a new session key gets (equal weights)
sub rv_pick { MG::Rendezvous::pick(shift, \@NAMES) }

###########################################################################
# mocks: 200 naming themselves; the session key is in the message

sub body_sid {
    my $req = shift;
    my $j = eval { decode_json($req->{body} // '') } or return '';
    my $c = $j->{messages} && $j->{messages}[0]{content} // '';
    return $c =~ /^sid=(.*)$/s ? $1 : '';
}

for my $name (@NAMES) {
    $t->mock($name, handler => sub {
        my $req = shift;
        return { status => 200,
                 headers => [['Content-Type', 'application/json']],
                 body => MG::Test::openai_completion(model => 'm',
                     content => "from $name", id => "chatcmpl-$name-$req->{n}") };
    });
}

sub mock_requests_for {
    my $re = shift;
    my $n = 0;
    for my $m (@NAMES) {
        $n += grep { body_sid($_) =~ $re } @{$t->mock_requests($m)};
    }
    return $n;
}

###########################################################################
# the fake Redis

MG::Test::_write_file("$DIR/fake_redis.pl", <<'EOF');
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Socket qw(SOL_SOCKET SO_LINGER);
use Time::HiRes qw(time);
use Digest::SHA qw(sha1_hex);

my ($port, $modefile, $log) = @ARGV;
$SIG{PIPE} = 'IGNORE';
my $lsn = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
    Listen => 128, ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
my $sel = IO::Select->new($lsn);
my (%conn, $n);
my $NEVER = 9e99;

sub logl {
    open my $f, '>>', $log or return;
    printf $f "%.3f %s\n", time, join ' ', @_;
    close $f;
}

sub mode {
    open my $f, '<', $modefile or return 'ok';
    my $m = <$f> // 'ok';
    $m =~ s/\s+$//;
    return $m;
}

# one RESP array of bulk strings from $$buf, or undef if incomplete
sub parse {
    my $buf = shift;
    return undef unless $$buf =~ /\A\*(\d+)\r\n/;
    my ($cnt, $pos) = ($1, $+[0]);
    my @a;
    for (1 .. $cnt) {
        pos($$buf) = $pos;
        return undef unless $$buf =~ /\G\$(\d+)\r\n/gc;
        my $len = $1;
        $pos = pos($$buf);
        return undef if length($$buf) < $pos + $len + 2;
        push @a, substr($$buf, $pos, $len);
        $pos += $len + 2;
    }
    substr($$buf, 0, $pos, '');
    return \@a;
}

sub bulk { '$' . length($_[0]) . "\r\n$_[0]\r\n" }

sub reset_conn {
    my $c = shift;
    setsockopt($c->{fh}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
    logl("rst $c->{id}");
    $sel->remove($c->{fh});
    delete $conn{$c->{fh}};
    close $c->{fh};
}

# an in-memory key space, enough for the module's commands and scripts
my (%store, %sha);

sub sget {
    my $k = shift;
    my $e = $store{$k} or return undef;
    if (defined $e->[1] && $e->[1] <= time) { delete $store{$k}; return undef }
    return $e->[0];
}

sub nil { "\$-1\r\n" }

sub script {
    my ($body, @a) = @_;            # @a: numkeys, key, args...
    my ($key, @argv) = @a[1 .. $#a];
    my $now = time;
    if ($body =~ /'TIME'/) {                                   # PIN
        my $v = sget($key);
        if (defined $v && $v =~ /^(.*)\|/) {
            return "*2\r\n" . bulk($1) . ":0\r\n";
        }
        $store{$key} = ["$argv[0]|" . int($now * 1000), $now + $argv[1] / 1000];
        return "*2\r\n" . bulk($argv[0]) . ":1\r\n";
    }
    if ($body =~ /KEEPTTL/) {                                  # MOVE
        my $v = sget($key);
        return ":0\r\n" unless defined $v && $v =~ /^(.*?)(\|.*)$/ && $1 eq $argv[0];
        $store{$key}[0] = "$argv[1]$2";
        return ":1\r\n";
    }
    if ($body =~ /'DEL'/) {                                    # DROP
        my $v = sget($key);
        return ":0\r\n" unless defined $v && $v =~ /^(.*?)\|/ && $1 eq $argv[0];
        delete $store{$key};
        return ":1\r\n";
    }
    if ($body =~ /^return redis\.call\('GET'/) {              # LOOKUP
        my $v = sget($key);
        return defined $v ? bulk($v) : nil();
    }
    $store{$key} = [$argv[0], ($argv[1] // 0) ? $now + $argv[1] / 1000 : undef];
    return "+OK\r\n";                                         # STORE
}

sub handle {
    my ($c, $cmd) = @_;
    my $name = uc($cmd->[0] // '');
    my $m = mode();
    my $sub = $name eq 'SCRIPT' ? ' ' . uc($cmd->[1] // '') : '';
    my $key = $name =~ /^EVAL/ ? $cmd->[3] // '' : $name =~ /^GET/ ? $cmd->[1] // '' : '';
    logl("cmd $c->{id} $name$sub" . ($key ne '' ? " $key" : '') . " mode=$m");
    my $q = $c->{q};
    if ($m eq 'silent') { push @$q, [$NEVER, undef]; return }

    # connection setup: always answered
    if ($name eq 'SCRIPT' && uc($cmd->[1] // '') eq 'LOAD') {
        my $h = sha1_hex($cmd->[2] // '');
        $sha{$h} = $cmd->[2];
        push @$q, [0, bulk($h)];
        return;
    }
    if ($name eq 'SCRIPT') { %sha = (); push @$q, [0, "+OK\r\n"]; return }
    if ($name eq 'PING') { push @$q, [0, "+PONG\r\n"]; return }
    if ($name eq 'TIME') {
        my ($sec, $usec) = Time::HiRes::gettimeofday();
        push @$q, [0, sprintf("*2\r\n\$%d\r\n%d\r\n\$%d\r\n%d\r\n",
                              length $sec, $sec, length $usec, $usec)];
        return;
    }
    if ($name eq 'AUTH' || $name eq 'SELECT') { push @$q, [0, "+OK\r\n"]; return }
    if ($name eq 'INFO') {
        push @$q, [0, bulk("# Memory\r\nmaxmemory_policy:noeviction\r\n")];
        return;
    }

    # the data commands
    if ($m eq 'stall') { push @$q, [$NEVER, undef]; return }
    if ($m eq 'readonly') {
        push @$q, [0, "-READONLY You can't write against a read only replica.\r\n"];
        return;
    }
    if ($m eq 'loading') {
        push @$q, [0, "-LOADING Redis is loading the dataset in memory\r\n"];
        return;
    }
    if ($m =~ /^noscript-rst:([\d.]+)$/ && $name eq 'EVALSHA') {
        # NOSCRIPT after a while, then reset the connection at once
        push @$q, [time + $1, "-NOSCRIPT No matching script. Please use EVAL.\r\n", 'rst'];
        return;
    }
    my $due = $m =~ /^delay:([\d.]+)$/ ? time + $1 : 0;
    my $reply;
    if ($name eq 'GETEX' || $name eq 'GET') {
        my $v = sget($cmd->[1]);
        if (defined $v && $name eq 'GETEX' && uc($cmd->[2] // '') eq 'PX') {
            $store{$cmd->[1]}[1] = time + $cmd->[3] / 1000;
        }
        $reply = defined $v ? bulk($v) : nil();
    } elsif ($name eq 'SET') {
        $store{$cmd->[1]} = [$cmd->[2], undef];
        $reply = "+OK\r\n";
    } elsif ($name eq 'EVALSHA') {
        my $body = $sha{lc($cmd->[1] // '')};
        $reply = defined $body ? script($body, @$cmd[2 .. $#$cmd])
            : "-NOSCRIPT No matching script. Please use EVAL.\r\n";
    } elsif ($name eq 'EVAL') {
        $reply = script($cmd->[1], @$cmd[2 .. $#$cmd]);
    } else {
        $reply = "-ERR unknown command '$name'\r\n";
    }
    push @$q, [$due, $reply];
}

while (1) {
    my $now = time;
    my $to = 0.02;
    for my $c (values %conn) {
        next unless @{$c->{q}};
        my $d = $c->{q}[0][0] - $now;
        $to = $d if $d < $to;
    }
    $to = 0 if $to < 0;
    for my $fh ($sel->can_read($to)) {
        if ($fh == $lsn) {
            my $s = $lsn->accept or next;
            $s->blocking(0);
            $n++;
            $conn{$s} = { fh => $s, id => $n, in => '', q => [] };
            $sel->add($s);
            logl("accept $n");
            next;
        }
        my $c = $conn{$fh} or next;
        my $r = sysread($fh, my $buf, 65536);
        next if !defined $r && $!{EAGAIN};
        if (!$r) {
            logl("close $c->{id}");
            $sel->remove($fh);
            delete $conn{$fh};
            close $fh;
            next;
        }
        $c->{in} .= $buf;
        while (defined(my $cmd = parse(\$c->{in}))) { handle($c, $cmd) }
    }
    if (-e "$modefile.rst") {
        unlink "$modefile.rst";
        reset_conn($_) for sort { $a->{id} <=> $b->{id} } values %conn;
    }
    $now = time;
    for my $c (sort { $a->{id} <=> $b->{id} } values %conn) {
        while (@{$c->{q}} && $c->{q}[0][0] <= $now) {
            my $it = shift @{$c->{q}};
            syswrite($c->{fh}, $it->[1]) if defined $it->[1];
            if (($it->[2] // '') eq 'rst') { reset_conn($c); last }
        }
    }
}
EOF

# fake_redis($node, $mode): starts a fake Redis for $node on a port of R's
# harness object; returns the port. Killed with R's processes at the end.
my %FAKE;
sub fake_redis {
    my ($name, $mode) = @_;
    my $port = $t->port("fake_$name");
    set_mode($name, $mode);
    my $pid = $t->_spawn(
        cmd => [$^X, "$DIR/fake_redis.pl", $port, "$DIR/fake-$name.mode",
                "$DIR/fake-$name.log"],
        out => "$DIR/fake-$name.err");
    $FAKE{$name} = $pid;
    $t->wait_for(sub { MG::Test::_tcp_listening()->{$port} }, 5)
        or die "fake redis $name did not start";
    return $port;
}

sub set_mode { MG::Test::_write_file("$DIR/fake-$_[0].mode", "$_[1]\n") }

sub fake_log {
    my $name = shift;
    return split /\n/, MG::Test::_read_file("$DIR/fake-$name.log", 1) // '';
}

sub fake_accepts { scalar grep { / accept \d+$/ } fake_log($_[0]) }

###########################################################################
# nginx instances

my $RPORT = $t->redis;

sub node_conf {
    my ($node, %o) = @_;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;

    model_gateway_redis 127.0.0.1:%%RPORT%%;

    # the fake Redis logs and stalls commands: no admin poll among them
    # after the first
    model_gateway_admin_sync 60s;
    model_gateway_redis_timeout %%RTIMEOUT%%;
    model_gateway_redis_connect_timeout 500ms;

    log_format gw '$request_uri $status session=$model_gateway_session_status '
                  'backend=$model_gateway_backend $request_time $pid';

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PA%%/v1;
        model m;
    }

    model_gateway_backend b {
        type openai_compatible;
        url http://127.0.0.1:%%PB%%/v1;
        model m;
    }

    model_gateway_backend c {
        type openai_compatible;
        url http://127.0.0.1:%%PC%%/v1;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%% reuseport;
        server_name localhost;

        access_log %%DIR%%/gw.log gw;

        location /v1/ {
            model_gateway;
            model_gateway_session $http_x_session_id;
        }
    }
}
EOF
        RPORT => $o{rport}, RTIMEOUT => $o{timeout} // '250ms',
        PA => $t->port('a'), PB => $t->port('b'), PC => $t->port('c'));
    $node->run;
}

sub up_lines   { scalar $_[0]->grep_log(qr/model gateway: redis \S+ is up/) }
sub down_lines { scalar $_[0]->grep_log(qr/model gateway: redis \S+ is down/) }

###########################################################################
# client helpers

sub chat {
    my ($node, $key, %o) = @_;
    my @h = defined $key ? (['X-Session-Id', $key]) : ();
    my $t0 = time;
    my $r = $node->chat('m',
        messages => [{ role => 'user', content => 'sid=' . ($key // '') }],
        headers => \@h, timeout => $o{timeout} // 15);
    $r->{elapsed} = time - $t0;
    ($r->{backend}, $r->{worker}) = ($r->{headers}{'x-model-gateway-backend'}
        // '') =~ /^([^;\s]+)(?:;\s*worker=(\d+))?/;
    $r->{session} = $r->{headers}{'x-model-gateway-session'};
    return $r;
}

sub desc { my $r = shift;
    return sprintf '%s %s/%s', $r->{status} // 'none',
        $r->{backend} // '-', $r->{session} // '-' }

sub raw_chat {
    my ($key, %o) = @_;
    my $body = JSON::PP->new->canonical->encode({ model => 'm',
        messages => [{ role => 'user', content => 'sid=' . ($key // '') }] });
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\n"
        . (defined $key ? "X-Session-Id: $key\r\n" : '')
        . 'Content-Length: ' . length($body) . "\r\n"
        . 'Connection: ' . ($o{keepalive} ? 'keep-alive' : 'close')
        . "\r\n\r\n$body";
}

sub connect_to {
    my $node = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $node->port('gw'), Proto => 'tcp', Timeout => 5);
    die "connect: $!" unless $s;
    return $s;
}

# reads one response (Content-Length framed, or until EOF)
sub read_response {
    my ($s, $deadline) = @_;
    my $buf = '';
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        if ($buf =~ /\r\n\r\n/) {
            my ($head, $body) = split /\r\n\r\n/, $buf, 2;
            last if $head =~ /^content-length:\s*(\d+)/mi && length $body >= $1;
        }
        next unless $sel->can_read($deadline - time);
        my $n = sysread($s, $buf, 65536, length $buf);
        last if !defined $n || $n == 0;
    }
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

# N session requests sent at once; returns (elapsed, responses)
sub concurrent {
    my ($node, @keys) = @_;
    my @s = map { connect_to($node) } @keys;
    my $t0 = time;
    syswrite($s[$_], raw_chat($keys[$_])) for 0 .. $#keys;
    my @r = map { read_response($_, $t0 + 10) } @s;
    close $_ for @s;
    return (time - $t0, @r);
}

# the done_testing checks, for the instances other than R
sub check_node {
    my ($node, $label) = @_;
    $node->stop;
    my @lines = split /\n/, $node->error_log;
    my @alerts = grep { /\[(?:alert|emerg)\]/ } @lines;
    ok(!@alerts, "$label: no alerts") or diag(join "\n", @alerts[0 .. ($#alerts > 20 ? 20 : $#alerts)]);
    my @crash = grep { /exited on signal/ } @lines;
    ok(!@crash, "$label: no crashed workers") or diag(join "\n", @crash);
    my @san = grep { /Sanitizer|runtime error:/ } @lines,
        split /\n/, $node->stderr_log;
    ok(!@san, "$label: no sanitizer reports") or diag(join "\n", @san);
    diag("$label: server root " . $node->dir . "\n" . $node->_log_tails(30))
        if @alerts || @crash || @san;
}

###########################################################################
# R: a real Redis killed and restarted

node_conf($t, rport => $RPORT);
ok($t->wait_for(sub { up_lines($t) >= 2 }, 10), 'R: both workers connected');

{
    my @bad;
    for my $i (1 .. 10) {
        my $k = "pre-$i";
        my @r = (chat($t, $k), chat($t, $k));
        push @bad, "$k: " . join(', ', map { desc($_) } @r)
            unless desc($r[0]) eq '200 ' . rv_pick($k) . '/new'
                && desc($r[1]) eq '200 ' . rv_pick($k) . '/hit';
    }
    is_deeply(\@bad, [], 'R: sessions work (new, hit)');
}

# NOSCRIPT: the script cache flushed between requests. An existing pin is
# read with a plain command; the scripts run for new sessions (PIN), a
# rebind (MOVE) and a new session whose attempts all failed (DROP).
{
    my (@bad, %workers);
    for my $i (1 .. 10) {
        my $k = "noscript-$i";
        my $fl = $t->redis_cmd('SCRIPT', 'FLUSH');
        my @r = (chat($t, $k), chat($t, $k));
        $workers{$_->{worker} // '?'}++ for @r;
        push @bad, "$k: flush $fl, " . join(', ', map { desc($_) } @r)
            unless $fl eq 'OK'
                && desc($r[0]) eq '200 ' . rv_pick($k) . '/new'
                && desc($r[1]) eq '200 ' . rv_pick($k) . '/hit';
    }
    is_deeply(\@bad, [], 'NOSCRIPT: after SCRIPT FLUSH a new session is '
        . 'still pinned (new, then hit; 10 flushes)');
    diag('NOSCRIPT: requests per worker: '
        . join ', ', map { "$_=$workers{$_}" } sort keys %workers)
        if $ENV{TEST_VERBOSE};

    # MOVE after a flush: the pin names a backend that does not serve m
    # here ("gone"), so the request is served elsewhere and rebinds
    my $k = 'noscript-move';
    $t->redis_cmd('SET', "mg:pin:$k:m", 'gone|' . int(time * 1000), 'PX', 60000);
    $t->redis_cmd('SCRIPT', 'FLUSH');
    my $r = chat($t, $k);
    is($r->{session}, 'rebound', 'NOSCRIPT: a pin naming an unknown backend '
        . 'is rebound');
    ok($t->wait_for(sub {
        ($t->redis_cmd('GET', "mg:pin:$k:m") // '') =~ /^\Q$r->{backend}\E\|/ }, 2),
        'NOSCRIPT: the MOVE script ran after the flush');
    is(scalar $t->grep_log(qr/unexpected reply|NOSCRIPT/), 0,
        'NOSCRIPT: nothing logged');
}

# kill
{
    my $log_off = length $t->error_log;
    $t->stop_redis;
    my $t_down = time;
    ok($t->wait_for(sub { down_lines($t) >= 2 }, 5),
        'outage: both workers noticed ("is down")');

    my (@bad, $slow);
    for my $i (1 .. 20) {
        my $k = $i <= 10 ? "pre-$i" : "out-$i";
        my $r = chat($t, $k);
        push @bad, "$k: " . desc($r)
            unless desc($r) eq '200 ' . rv_pick($k) . '/fallback';
        $slow = $r->{elapsed} if $r->{elapsed} > ($slow // 0);
    }
    is_deeply(\@bad, [], 'outage: session requests served by the hashed '
        . 'backend, "fallback" (20 requests)');
    ok($slow < 1, sprintf 'outage: none waited (slowest %.3f s)', $slow);
    my @sl;
    for (1 .. 10) {
        my $r = chat($t, undef);
        push @sl, desc($r) unless $r->{status} == 200
            && !exists $r->{headers}{'x-model-gateway-session'};
    }
    is_deeply(\@sl, [], 'outage: stateless requests work');

    # an outage of 6.5 s: reconnect attempts after 0.1, 0.3, 0.7, 1.5, 3.1,
    # 6.3 s, the next one 5 s later (the cap): the restart is noticed within
    # 5 s, not 6.4 s
    sleep 6.5 - (time - $t_down) if time - $t_down < 6.5;
    $t->redis;
    my $t_restart = time;
    my $ok = $t->wait_for(sub { up_lines($t) >= 4 }, 8, 0.05);
    my $took = time - $t_restart;
    ok($ok, sprintf 'restart: both workers reconnected after %.2f s', $took);
    ok($took < 5.5, 'restart: within the maximum backoff of 5 s');

    @bad = ();
    for my $i (1 .. 10) {
        my $k = "post-$i";
        my @r = (chat($t, $k), chat($t, $k), chat($t, $k));
        push @bad, "$k: " . join(', ', map { desc($_) } @r)
            unless join(' ', map { desc($_) } @r) eq
                join ' ', map { '200 ' . rv_pick($k) . "/$_" } qw(new hit hit);
    }
    is_deeply(\@bad, [], 'restart: sessions new/hit again');

    my @lines = split /\n/, substr($t->error_log, $log_off);
    my @down = grep { /redis \S+ is down/ } @lines;
    my @up = grep { /redis \S+ is up/ } @lines;
    is(scalar @down, 2, 'outage: one "is down" per worker') or diag(join "\n", @down);
    is(scalar @up, 2, 'restart: one "is up" per worker') or diag(join "\n", @up);
    my @redis = grep { /\Q:$RPORT\E|redis/ } @lines;
    ok(@redis <= 2 * 10, 'outage: no log flood (' . scalar(@redis)
        . ' lines about redis over the outage)') or diag(join "\n", @redis);
    ok(!grep({ !/\[error\]/ } @down), 'outage: "is down" at error');

    # the failed reconnect attempts (connection refused) in between: at
    # info
    my @tries = grep { !/ is (?:down|up)/ } @redis;
    ok(scalar(grep { /redis \S+ reconnect failed/ } @tries) >= 2,
        'outage: the reconnect attempts are logged');
    ok(scalar(grep { /\(111: Connection refused\)/ } @tries),
        'outage: with their cause');
    # nothing else above notice: nginx's own lines about the attempts
    # (recv() failed: connection refused) name no Redis, so all lines count
    my @loud = grep { /\[(?:warn|error|crit)\]/ && !/ is down/ } @lines;
    is_deeply(\@loud, [], 'outage: the reconnect attempts at info only');
}

###########################################################################
# SIL: a Redis that accepts connections and never answers

my $tsil = MG::Test->new;
{
    my $port = fake_redis('sil', 'silent');
    node_conf($tsil, rport => $port, timeout => '300ms');
    ok($tsil->wait_for(sub { fake_accepts('sil') >= 2 }, 5),
        'silent redis: both workers connected');
    sleep 0.5;

    my (@bad, $slow);
    for my $i (1 .. 10) {
        my $k = "sil-$i";
        my $r = chat($tsil, $k);
        push @bad, "$k: " . desc($r)
            unless desc($r) eq '200 ' . rv_pick($k) . '/fallback';
        $slow = $r->{elapsed} if $r->{elapsed} > ($slow // 0);
    }
    is_deeply(\@bad, [], 'silent redis: session requests served via fallback');
    ok($slow < 3, sprintf 'silent redis: each within 3 s (slowest %.3f s)', $slow);
    my $r = chat($tsil, undef);
    ok($r->{status} == 200 && $r->{elapsed} < 1, 'silent redis: stateless '
        . 'request unaffected');
    ok(scalar $tsil->wait_log(qr/redis \S+ is down: command timed out after 300 ms/, 3),
        'silent redis: the timeout is logged');
    ok(down_lines($tsil) <= 2, 'silent redis: "is down" at most once per worker');
    check_node($tsil, 'silent redis');
}

###########################################################################
# STL: connection setup answered, scripts never

my $tstl = MG::Test->new;
{
    my $port = fake_redis('stl', 'stall');
    # a 1 s timeout leaves room between "waited for it" and "did not wait"
    # on a loaded machine
    node_conf($tstl, rport => $port, timeout => '1s');
    ok($tstl->wait_for(sub { up_lines($tstl) >= 2 }, 5),
        'stalling redis: both workers ready');

    my $r = chat($tstl, 'stl-1');
    is(desc($r), '200 ' . rv_pick('stl-1') . '/fallback',
        'stalling redis: served via fallback');
    ok($r->{elapsed} >= 0.95 && $r->{elapsed} < 4,
        sprintf 'stalling redis: after the command timeout (%.3f s)', $r->{elapsed});
    ok(scalar $tstl->wait_log(qr/redis \S+ is down: command timed out after 1000 ms/, 2),
        'stalling redis: the timeout is logged');

    # let both workers reconnect, then 8 requests at once
    $tstl->wait_for(sub { up_lines($tstl) >= 3 }, 3);
    my ($el, @rs) = concurrent($tstl, map { "stl-c$_" } 1 .. 8);
    my @bad = map { "stl-c" . ($_ + 1) . ': ' . desc($rs[$_]) }
        grep { desc($rs[$_]) ne '200 ' . rv_pick('stl-c' . ($_ + 1)) . '/fallback' }
        0 .. $#rs;
    is_deeply(\@bad, [], 'stalling redis: 8 concurrent session requests '
        . 'served via fallback');
    ok($el < 4, sprintf 'stalling redis: all within %.3f s (failed together, '
        . 'not one timeout after another)', $el);

    my $slow = 0;
    for (1 .. 5) {
        my $ri = chat($tstl, undef);
        $slow = $ri->{elapsed} if $ri->{elapsed} > $slow;
        push @bad, 'stateless: ' . desc($ri) if $ri->{status} != 200;
    }
    is_deeply(\@bad, [], 'stalling redis: stateless requests served');
    ok($slow < 0.6, sprintf 'stalling redis: stateless requests never wait '
        . '(slowest %.3f s)', $slow);
    my $acc = fake_accepts('stl');
    ok($acc >= 3, "stalling redis: reconnected after the timeout ($acc connections)");
    check_node($tstl, 'stalling redis');
}

###########################################################################
# RO: READONLY and LOADING

my $tro = MG::Test->new;
{
    my $port = fake_redis('ro', 'ok');
    node_conf($tro, rport => $port, timeout => '1s');
    ok($tro->wait_for(sub { up_lines($tro) >= 2 }, 5), 'READONLY: workers ready');
    my $r = chat($tro, 'ro-0');
    is($r->{session}, 'new', 'READONLY: the fake answers pins (new)');

    for my $case (['readonly', qr/redis answered "READONLY You can't write against a read only replica\.", reconnecting/],
                  ['loading', qr/redis answered "LOADING Redis is loading the dataset in memory", reconnecting/])
    {
        my ($mode, $re) = @$case;
        my $up = up_lines($tro);
        my $acc = fake_accepts('ro');
        set_mode('ro', $mode);
        my $k = "ro-$mode";
        $r = chat($tro, $k);
        is(desc($r), '200 ' . rv_pick($k) . '/fallback',
            "$mode: the request is served via fallback");
        ok($r->{elapsed} < 0.6, sprintf "$mode: at once (%.3f s), no timeout",
            $r->{elapsed});
        ok(scalar $tro->wait_log($re, 2), "$mode: logged");
        set_mode('ro', 'ok');
        ok($tro->wait_for(sub { fake_accepts('ro') > $acc }, 3),
            "$mode: the worker reconnected (the fake saw a new connection)");
        my @l = fake_log('ro');
        my ($cmd_i) = grep { $l[$_] =~ / GETEX mg:pin:\Q$k\E:m / } 0 .. $#l;
        my ($acc_i) = grep { $l[$_] =~ / accept \d+$/ && $_ > ($cmd_i // 1e9) } 0 .. $#l;
        ok(defined $acc_i, "$mode: the new connection came after the reply");
        ok($tro->wait_for(sub { up_lines($tro) > $up }, 3), "$mode: up again");
        my @bad;
        for my $i (1 .. 6) {
            my $ri = chat($tro, "$k-after-$i");
            push @bad, desc($ri) unless ($ri->{session} // '') eq 'new';
        }
        is_deeply(\@bad, [], "$mode: later session requests use redis again");
    }
    check_node($tro, 'READONLY');
}

###########################################################################
# AB: clients that go away while their command is in flight

my $tab = MG::Test->new;
{
    my $port = fake_redis('ab', 'delay:1');
    node_conf($tab, rport => $port, timeout => '2s');
    ok($tab->wait_for(sub { up_lines($tab) >= 2 }, 5), 'abort: workers ready');
    my @pids = sort $tab->worker_pids;

    my $r = chat($tab, 'ab-0');
    is($r->{session}, 'new', 'abort: a session request waits for the reply');
    ok($r->{elapsed} >= 0.9, sprintf 'abort: (%.3f s)', $r->{elapsed});

    # one client closes right after sending; one once the command reached
    # redis; then 10 at once
    my $s = connect_to($tab);
    syswrite($s, raw_chat('ab-early'));
    close $s;
    $s = connect_to($tab);
    syswrite($s, raw_chat('ab-late'));
    ok($tab->wait_for(sub { grep { / GETEX mg:pin:ab-late:m / } fake_log('ab') }, 3),
        'abort: the command is in flight');
    close $s;
    my @ss = map { connect_to($tab) } 1 .. 10;
    syswrite($ss[$_ - 1], raw_chat("ab-many-$_")) for 1 .. 10;
    $tab->wait_for(sub { (grep { / GETEX mg:pin:ab-many-/ } fake_log('ab')) >= 10 }, 3);
    close $_ for @ss;

    sleep 1.5;     # the late replies arrive for cancelled commands
    my @bad;
    for my $i (1 .. 4) {
        my $ri = chat($tab, "ab-next-$i");
        push @bad, desc($ri) unless desc($ri) eq '200 ' . rv_pick("ab-next-$i") . '/new';
        my $rs = chat($tab, undef);
        push @bad, 'stateless ' . desc($rs) unless $rs->{status} == 200;
    }
    is_deeply(\@bad, [], 'abort: the next requests are fine');
    is_deeply([sort $tab->worker_pids], \@pids, 'abort: same workers');
    is(mock_requests_for(qr/^ab-(?:early|late|many)/), 0,
        'abort: the backends never got the aborted requests');

    # a command that never gets an answer: aborted, then timed out
    set_mode('ab', 'stall');
    my $up = up_lines($tab);
    $s = connect_to($tab);
    syswrite($s, raw_chat('ab-stall'));
    ok($tab->wait_for(sub { grep { / GETEX mg:pin:ab-stall:m / } fake_log('ab') }, 3),
        'abort/timeout: the command is in flight');
    close $s;
    ok(scalar $tab->wait_log(qr/redis \S+ is down: command timed out after 2000 ms/, 4),
        'abort/timeout: the command timed out');
    set_mode('ab', 'ok');
    ok($tab->wait_for(sub { up_lines($tab) > $up }, 3), 'abort/timeout: up again');
    $r = chat($tab, 'ab-after-stall');
    is(desc($r), '200 ' . rv_pick('ab-after-stall') . '/new',
        'abort/timeout: next session request fine');
    is_deeply([sort $tab->worker_pids], \@pids, 'abort/timeout: same workers');
    is(mock_requests_for(qr/^ab-stall$/), 0, 'abort/timeout: no backend request');
    check_node($tab, 'abort');
}

###########################################################################
# RST: the connection to Redis reset while the workers are stopped, so that
# a worker meets the reset when it writes to Redis

my $trst = MG::Test->new;
{
    my $port = fake_redis('rst', 'ok');
    node_conf($trst, rport => $port, timeout => '300ms');
    ok($trst->wait_for(sub { up_lines($trst) >= 2 }, 5), 'reset: workers ready');
    my @pids = $trst->worker_pids;

    # (1) a session request in the same event loop iteration as the reset:
    # the request arrives on an idle keepalive connection first
    my $s = connect_to($trst);
    syswrite($s, raw_chat(undef, keepalive => 1));
    my $r0 = read_response($s, time + 5);
    is($r0->{status}, 200, 'reset: keepalive connection open');
    kill 'STOP', @pids;
    syswrite($s, raw_chat('rst-1'));
    sleep 0.1;
    MG::Test::_write_file("$DIR/fake-rst.mode.rst", "1\n");
    $trst->wait_for(sub { !-e "$DIR/fake-rst.mode.rst" }, 2);
    sleep 0.1;
    kill 'CONT', @pids;
    my $r = read_response($s, time + 5);
    close $s;
    is(desc($r), '200 ' . rv_pick('rst-1') . '/fallback',
        'reset met on write: the request is served via fallback');
    is(mock_requests_for(qr/^rst-1$/), 1, 'reset met on write: exactly one '
        . 'backend request');
    ok($trst->wait_for(sub { up_lines($trst) >= 4 }, 3),
        'reset met on write: both workers reconnected');
    my $r2 = chat($trst, 'rst-2');
    is($r2->{session}, 'new', 'reset met on write: redis used again');

    # (2) a NOSCRIPT reply followed at once by a reset: the EVAL re-send
    # meets the reset
    set_mode('rst', 'noscript-rst:0.5');
    my $up = up_lines($trst);
    $s = connect_to($trst);
    syswrite($s, raw_chat('rst-3'));
    $trst->wait_for(sub { grep { / EVALSHA mg:pin:rst-3:m / } fake_log('rst') }, 3);
    @pids = $trst->worker_pids;
    kill 'STOP', @pids;
    $trst->wait_for(sub { grep { / rst \d+$/ } fake_log('rst') }, 3);
    sleep 0.1;
    kill 'CONT', @pids;
    set_mode('rst', 'ok');
    $r = read_response($s, time + 5);
    close $s;
    is(desc($r), '200 ' . rv_pick('rst-3') . '/fallback',
        'NOSCRIPT then reset: the request is served via fallback');
    ok($trst->wait_for(sub { up_lines($trst) > $up }, 3),
        'NOSCRIPT then reset: reconnected');
    $r2 = chat($trst, 'rst-4');
    is($r2->{session}, 'new', 'NOSCRIPT then reset: redis used again');
    check_node($trst, 'reset');
}

$t->done_testing;
