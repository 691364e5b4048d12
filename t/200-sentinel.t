#!/usr/bin/perl

# Redis Sentinel (README "Redis", "Sentinel"): a primary, a replica and
# three real sentinels (down-after-milliseconds 1000, requirepass on the
# sentinels); the gateway (2 workers, sessions on, so that every request
# goes to Redis) is given only the sentinels and the master's name:
#   - it finds the primary through them (session "new", the pins written
#     to the primary), logging "redis primary ... via sentinel ...";
#   - a forced failover (SENTINEL FAILOVER) under continuous traffic: no
#     client error (session fallback "hash"), the fallbacks are counted
#     and bounded, the workers got +switch-master, and the pins go to the
#     new primary within a bounded time;
#   - the new primary killed (SIGKILL): the sentinels promote the other
#     node and the gateway follows (pins on it again);
#   - a node whose sentinel names a replica: ROLE says "slave", the
#     connection is refused ("is not the primary"), requests fall back;
#   - a wrong sentinel password: a clear error, the password never logged;
#   - nginx -t: sentinels without a master name, a bad address, too many
#     sentinels, both model_gateway_redis and sentinels.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use IO::Socket::INET;
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $DIR = $t->dir;
my $SPASS = 'sentinel-secret-7fq2';
my $MASTER = 'mymaster';

MG::Test::_write_file("$DIR/spass", "$SPASS\n");
MG::Test::_write_file("$DIR/wrongpass", "not-the-password-x9\n");

###########################################################################
# the backend

$t->mock('a', handler => sub {
    return { status => 200,
             headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion(model => 'm',
                                                 content => 'ok') };
});

###########################################################################
# Redis: a primary, a replica, three sentinels

my %RP;
$RP{r1} = $t->redis(name => 'r1');
$RP{r2} = $t->redis(name => 'r2',
                    args => ['--replicaof', '127.0.0.1', $RP{r1}]);

my @SP = map { $t->port("s$_") } 1 .. 3;
my @STLS = map { $t->port("s${_}_tls") } 1 .. 3;
my $CA = $t->ca_path;
my ($CRT, $KEY) = $t->cert('localhost');

for my $i (0 .. 2) {
    MG::Test::_write_file("$DIR/s$i.conf", <<"EOF");
port $SP[$i]
bind 127.0.0.1
daemonize no
dir $DIR
requirepass $SPASS
sentinel resolve-hostnames no
sentinel monitor $MASTER 127.0.0.1 $RP{r1} 2
sentinel down-after-milliseconds $MASTER 1000
sentinel failover-timeout $MASTER 5000
sentinel parallel-syncs $MASTER 1
sentinel sentinel-pass $SPASS
tls-port $STLS[$i]
tls-cert-file $CRT
tls-key-file $KEY
tls-ca-cert-file $CA
tls-auth-clients no
EOF
    $t->_spawn(cmd => ['redis-server', "$DIR/s$i.conf", '--sentinel'],
               out => "$DIR/s$i.log");
}

# one command to a sentinel, after AUTH, on one connection
sub resp { '*' . @_ . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @_) }

sub scmd {
    my ($port, @cmd) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 2)
        or return undef;
    my $io = MG::Test::IO->new($s);
    $io->write(resp('AUTH', $SPASS) . resp(@cmd)) or return undef;
    my $deadline = time + 3;
    my $r = eval {
        MG::Redis::_resp_read($io, $deadline);
        MG::Redis::_resp_read($io, $deadline);
    };
    close $s;
    return $r;
}

# SENTINEL MASTER's fields as a hash
sub smaster {
    my $r = scmd(shift, 'SENTINEL', 'MASTER', $MASTER);
    return ref $r eq 'ARRAY' ? { @$r } : {};
}

sub primary_port {
    my $r = scmd($SP[0], 'SENTINEL', 'get-master-addr-by-name', $MASTER);
    return ref $r eq 'ARRAY' ? $r->[1] : 0;
}

# every sentinel knows the two others and the replica(s), and agrees on
# the primary
sub sentinels_ready {
    my ($want, $replicas) = @_;
    for my $p (@SP) {
        my $m = smaster($p);
        return 0 unless ($m->{'num-other-sentinels'} // 0) == 2
            && ($m->{'num-slaves'} // 0) >= $replicas
            && ($m->{port} // 0) == $want
            && ($m->{flags} // '') eq 'master';
    }
    return 1;
}

ok($t->wait_for(sub { sentinels_ready($RP{r1}, 1) }, 30, 0.2),
   'the three sentinels know each other, the primary and the replica')
    or BAIL_OUT('sentinels did not settle: ' . explain(smaster($SP[0])));

###########################################################################
# the gateway

sub gw_conf {
    my ($node, %o) = @_;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_redis_sentinel %%SENTINELS%%;
    model_gateway_redis_sentinel_master mymaster;
    %%PASS%%
    %%EXTRA%%
    model_gateway_redis_connect_timeout 500ms;
    model_gateway_redis_timeout 500ms;

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PA%%/v1;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%% reuseport;
        server_name localhost;

        model_gateway_session $http_x_session_id;

        location /v1/ {
            model_gateway;
        }
    }
}
EOF
        SENTINELS => $o{sentinels}
            // join(' ', map { "127.0.0.1:$_" } @SP),
        PASS => $o{pass}
            // "model_gateway_redis_sentinel_password_file $DIR/spass;",
        EXTRA => $o{extra} // '',
        PA => $t->port('a'));
}

my $N = 0;
my $r;

sub chat {
    my ($node, $key) = @_;
    my $r = $node->chat('m', headers => [['X-Session-Id', $key]],
                        timeout => 10);
    return { status => $r->{status} // 0,
             session => $r->{headers}{'x-model-gateway-session'} // '-' };
}

sub pin_in {
    my ($name, $key) = @_;
    my $v = eval { $t->redis_cmd({ name => $name, timeout => 2 }, 'GET',
                                 "mg:pin:$key:m") };
    return defined $v && !ref $v;
}

gw_conf($t);
$t->run;

ok($t->wait_for(sub {
        $t->grep_log(qr/redis primary 127\.0\.0\.1:$RP{r1} via sentinel/)
            >= 2 }, 10),
   'both workers found the primary through the sentinels');

my @bad;
for (1 .. 20) {
    my $key = 'first-' . $N++;
    my $r = chat($t, $key);
    push @bad, "$key $r->{status} $r->{session}"
        unless $r->{status} == 200 && $r->{session} eq 'new'
               && pin_in('r1', $key);
}
ok(!@bad, 'sessions are new and pinned in the primary') or diag("@bad");

###########################################################################
# traffic through a failover: distinct session keys, one after the other,
# until WANT requests in a row were "new" and pinned on NEWPORT's node
# after the switch, or MAX seconds

sub traffic {
    my (%o) = @_;
    my %n = (total => 0, new => 0, fallback => 0, error => 0);
    my ($started, $recovered, $streak) = (time, undef, 0);
    my $fired;
    while (time - $started < $o{max}) {
        if (!$fired && $n{total} >= 10) {
            $o{fire}->();
            $fired = time;
        }
        my $key = "$o{tag}-" . $N++;
        my $r = chat($t, $key);
        $n{total}++;
        if ($r->{status} != 200) {
            $n{error}++;
            $streak = 0;
        } elsif ($r->{session} eq 'fallback') {
            $n{fallback}++;
            $streak = 0;
        } elsif ($r->{session} eq 'new') {
            $n{new}++;
            if ($fired && pin_in($o{to}, $key)) {
                $recovered //= time;
                last if ++$streak >= 20;
            } else {
                $streak = 0;
                $recovered = undef;
            }
        } else {
            $n{error}++;
        }
        sleep 0.01;
    }
    $n{recover} = defined $recovered ? $recovered - $fired : undef;
    $n{streak} = $streak;
    return \%n;
}

sub report {
    my ($what, $n) = @_;
    diag(sprintf '%s: %d requests, %d new, %d fallback, %d errors, '
         . 'primary usable again after %s s', $what, @$n{qw(total new
         fallback error)}, defined $n->{recover}
         ? sprintf('%.2f', $n->{recover}) : 'never');
}

# a forced failover: r2 becomes the primary

my $f = traffic(tag => 'fo', max => 15, to => 'r2', fire => sub {
    my $r = scmd($SP[0], 'SENTINEL', 'FAILOVER', $MASTER);
    diag('SENTINEL FAILOVER: ' . (ref $r ? explain($r) : $r // 'undef'));
});
report('forced failover', $f);

is($f->{error}, 0, 'failover: no client errors (fallback hash)');
is($f->{streak}, 20, 'failover: sessions pinned in the new primary again');
ok(defined $f->{recover} && $f->{recover} < 10,
   'failover: recovered within 10 s');
ok($f->{fallback} <= $f->{total} / 2, 'failover: fallbacks bounded '
   . "($f->{fallback} of $f->{total})");
ok($t->wait_for(sub { $t->grep_log(qr/\+switch-master mymaster to 127\.0\.0\.1:$RP{r2}\b/) >= 2 }, 5),
   'both workers got +switch-master from their subscription');

###########################################################################
# the new primary killed: the sentinels promote r1 (once it replicates r2)

ok($t->wait_for(sub { sentinels_ready($RP{r2}, 1)
                      && eval { ($t->redis_cmd({ name => 'r1' }, 'ROLE')
                          ->[3] // '') eq 'connected' } }, 20, 0.2),
   'r1 is a connected replica of r2');

my $k = traffic(tag => 'kill', max => 25, to => 'r1', fire => sub {
    kill 'KILL', $t->{redis}{r2}{pid};
    diag('r2 killed');
});
report('primary killed', $k);

is($k->{error}, 0, 'killed primary: no client errors (fallback hash)');
is($k->{streak}, 20, 'killed primary: sessions pinned in r1 again');
ok(defined $k->{recover} && $k->{recover} < 20,
   'killed primary: recovered within 20 s');
ok($t->grep_log(qr/redis[ ]sentinel[ ]\S+:[ ]\+switch-master[ ]mymaster
                   [ ]to[ ]127\.0\.0\.1:$RP{r1},[ ]following/x) >= 1,
   'killed primary: a worker followed +switch-master');
ok($t->grep_log(qr/redis 127\.0\.0\.1:$RP{r2} is down/),
   'the lost primary was logged');
ok(!$t->grep_log(qr/\Q$SPASS\E/), 'the sentinel password is never logged');

# an exiting worker does not wait for its sentinel connections: reload and
# quit are prompt (no request is in flight), with no socket left open
# (an [alert], checked by done_testing)

my $UP1 = qr/redis primary 127\.0\.0\.1:$RP{r1} via sentinel \S+ is up/;
my $ups = () = $t->grep_log($UP1);
my $t0 = time;
ok($t->reload(wait_old => 1, timeout => 5), 'reload: the old workers exit');
diag(sprintf 'reload: old workers gone after %.2f s', time - $t0);
ok($t->wait_for(sub { $t->grep_log($UP1) >= $ups + 2 }, 10),
   'reload: the new workers found the primary');
$r = chat($t, 'after-reload');
ok($r->{status} == 200 && $r->{session} eq 'new'
   && pin_in('r1', 'after-reload'), 'reload: sessions pinned');

$t0 = time;
is($t->stop(timeout => 5), 0, 'quit: nginx exits cleanly');
ok(time - $t0 < 3, sprintf 'quit: within %.2f s', time - $t0);

###########################################################################
# a sentinel that names a replica: ROLE refuses it

my $fake_port = $t->port('fake');
MG::Test::_write_file("$DIR/fake.pl", <<'EOF');
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
my ($port, $rport, $life) = @ARGV;
$SIG{PIPE} = 'IGNORE';
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
    Listen => 64, ReuseAddr => 1) or die "listen: $!";
my $sel = IO::Select->new($l);
my %buf;
my $end = time + $life;
while (time < $end) {
    for my $fh ($sel->can_read(0.5)) {
        if ($fh == $l) { $sel->add($l->accept); next }
        my $n = sysread($fh, my $d, 4096);
        if (!$n) { $sel->remove($fh); close $fh; next }
        $buf{$fh} .= $d;
        while ($buf{$fh} =~ s/\A\*(\d+)\r\n//) {
            my @a;
            for (1 .. $1) {
                $buf{$fh} =~ s/\A\$(\d+)\r\n// or last;
                push @a, substr($buf{$fh}, 0, $1 + 2, '');
            }
            my $c = uc($a[0] // '');
            $c =~ s/\r\n$//;
            if ($c eq 'SUBSCRIBE') {
                syswrite $fh, "*3\r\n\$9\r\nsubscribe\r\n\$14\r\n"
                    . "+switch-master\r\n:1\r\n";
            } elsif ($c eq 'SENTINEL') {
                syswrite $fh, "*2\r\n\$9\r\n127.0.0.1\r\n\$"
                    . length($rport) . "\r\n$rport\r\n";
            } else {
                syswrite $fh, "+OK\r\n";
            }
        }
    }
}
EOF
# r2 was killed: r1 is the primary now; a replica of it is the target
$RP{r3} = $t->redis(name => 'r3',
                    args => ['--replicaof', '127.0.0.1', $RP{r1}]);
$t->_spawn(cmd => [$^X, "$DIR/fake.pl", $fake_port, $RP{r3}, 60],
           out => "$DIR/fake.log");
$t->wait_for(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                         PeerPort => $fake_port) }, 5);

my $tr = MG::Test->new;
gw_conf($tr, sentinels => "127.0.0.1:$fake_port");
$tr->run;

ok($tr->wait_for(sub { $tr->grep_log(qr/redis\ 127\.0\.0\.1:$RP{r3}\ is\ down:
                        \ is\ not\ the\ primary\ \(role\ slave\)/x) }, 10),
   'a replica named by a sentinel is refused: "is not the primary"');
$r = chat($tr, 'role-1');
is("$r->{status} $r->{session}", '200 fallback',
   'no primary: the request falls back');
ok(!pin_in('r3', 'role-1') && !pin_in('r1', 'role-1'), 'and pins nothing');
$tr->stop;

###########################################################################
# a wrong sentinel password

my $tw = MG::Test->new;
gw_conf($tw, pass => "model_gateway_redis_sentinel_password_file "
                     . "$DIR/wrongpass;");
$tw->run;

ok($tw->wait_for(sub { $tw->grep_log(qr/\[error\].*redis\ sentinel
                        \ 127\.0\.0\.1:\d+:\ AUTH\ refused:\ WRONGPASS/x) }, 10),
   'a wrong sentinel password: a clear error');
ok($tw->wait_for(sub { $tw->grep_log(qr/redis\ mymaster\ is\ down:
                                        \ no\ sentinel\ named\ the\ primary/x) }, 5),
   'and the primary is unknown');
$r = chat($tw, 'wrong-1');
is("$r->{status} $r->{session}", '200 fallback', 'requests fall back');
ok(!$tw->grep_log(qr/not-the-password-x9/), 'the password is not logged');
$tw->stop;

###########################################################################
# TLS to the sentinels (their tls-port, a certificate for "localhost")

my $STLS_RE = join '|', @STLS;
$STLS_RE = qr/(?:$STLS_RE)/;
my $ts = MG::Test->new;
gw_conf($ts, sentinels => join(' ', map { "localhost:$_" } @STLS),
        extra => "model_gateway_redis_sentinel_tls on;\n"
                 . "    model_gateway_redis_tls_trusted_certificate $CA;");
$ts->run;

ok($ts->wait_for(sub { $ts->grep_log(qr/redis[ ]primary[ ]127\.0\.0\.1:$RP{r1}
                        [ ]via[ ]sentinel[ ]127\.0\.0\.1:$STLS_RE\ is\ up/x)
                       >= 2 },
                 10),
   'sentinels over TLS: both workers found the primary');
ok($ts->wait_for(sub { $ts->grep_log(qr/redis[ ]sentinel[ ]\S+[ ]\(subscription\)/x) == 0
                       && $ts->grep_log(qr/subscribed[ ]to[ ]\+switch/x)
                          >= 2 }, 10),
   'sentinels over TLS: both workers subscribed');
$r = chat($ts, 'tls-1');
ok($r->{status} == 200 && $r->{session} eq 'new' && pin_in('r1', 'tls-1'),
   'sentinels over TLS: sessions pinned in the primary');
$ts->stop;

# a certificate that does not name the sentinel's address
my $tn = MG::Test->new;
gw_conf($tn, sentinels => join(' ', map { "127.0.0.1:$_" } @STLS),
        extra => "model_gateway_redis_sentinel_tls on;\n"
                 . "    model_gateway_redis_tls_trusted_certificate $CA;");
$tn->run;
ok($tn->wait_for(sub { $tn->grep_log(qr/\[error\].*redis[ ]sentinel[ ]
                        127\.0\.0\.1:\d+:[ ]TLS[ ]certificate[ ]name
                        [ ]mismatch/x) }, 10),
   'sentinels over TLS: a certificate for another name is refused');
$r = chat($tn, 'tls-2');
is("$r->{status} $r->{session}", '200 fallback', 'and requests fall back');
$tn->stop;

# the other nodes' logs get the checks done_testing gives $t's
for my $node ($tr, $tw, $ts, $tn) {
    my @l = $node->grep_log(qr/\[(?:alert|emerg)\]|exited on signal|
                                Sanitizer|runtime\ error:/x);
    ok(!@l, 'no alerts or crashes on node ' . $node->dir) or diag("@l");
}

###########################################################################
# nginx -t

my $tc = MG::Test->new;
$tc->{ports}{a} = $t->port('a');

for my $c (
    [ 'no master name',
      "model_gateway_redis_sentinel 127.0.0.1:26379;",
      qr/"model_gateway_redis_sentinel" needs "model_gateway_redis_sentinel_master"/ ],
    [ 'bad address',
      "model_gateway_redis_sentinel 127.0.0.1:notaport;\n"
      . "model_gateway_redis_sentinel_master m;",
      qr/invalid sentinel address "127\.0\.0\.1:notaport"/ ],
    [ 'too many sentinels',
      'model_gateway_redis_sentinel '
      . join(' ', map { "127.0.0.1:" . (26000 + $_) } 1 .. 17) . ";\n"
      . "model_gateway_redis_sentinel_master m;",
      qr/too many sentinels \(at most 16\)/ ],
    [ 'with model_gateway_redis',
      "model_gateway_redis 127.0.0.1:6379;\n"
      . "model_gateway_redis_sentinel 127.0.0.1:26379;\n"
      . "model_gateway_redis_sentinel_master m;",
      qr/"model_gateway_redis_sentinel"[ ]directive[ ]cannot[ ]be[ ]used
         [ ]with[ ]"model_gateway_redis"/x ],
    [ 'master without sentinels',
      "model_gateway_redis 127.0.0.1:6379;\n"
      . "model_gateway_redis_sentinel_master m;",
      qr/"model_gateway_redis_sentinel_\*" directives need/ ],
)
{
    my ($name, $directives, $re) = @$c;
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
    ok($rc != 0 && $out =~ $re, "nginx -t: $name") or diag($out);
}

$t->done_testing;
