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
use MG::Sentinel;
use MG::Sessions qw(session_key chat gw_conf traffic report check_node);

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

# the sentinels, as a client (AUTH first: they have requirepass)
my $S = MG::Sentinel->new(ports => \@SP, master => $MASTER,
                          password => $SPASS);

ok($t->wait_for(sub { $S->ready($RP{r1}, 1) }, 30, 0.2),
   'the three sentinels know each other, the primary and the replica')
    or BAIL_OUT('sentinels did not settle: ' . explain($S->master($SP[0])));

###########################################################################
# the gateway

# MG::Sessions::gw_conf (2 workers, sessions on) given the sentinels (all
# three, unless $o{sentinels}), the master's name, their password (unless
# $o{pass}) and the directives $o{extra}
sub sentinel_conf {
    my ($node, %o) = @_;
    gw_conf($node, backend => $t->port('a'), redis => join "\n",
        'model_gateway_redis_sentinel '
            . ($o{sentinels} // join(' ', map { "127.0.0.1:$_" } @SP)) . ';',
        'model_gateway_redis_sentinel_master mymaster;',
        $o{pass} // "model_gateway_redis_sentinel_password_file $DIR/spass;",
        split /\n\s*/, $o{extra} // '');
}

my $r;

sub pin_in {
    my ($name, $key) = @_;
    my $v = eval { $t->redis_cmd({ name => $name, timeout => 2 }, 'GET',
                                 "mg:pin:$key:m") };
    return defined $v && !ref $v;
}

sentinel_conf($t);
$t->run;

ok($t->wait_for(sub {
        $t->grep_log(qr/redis primary 127\.0\.0\.1:$RP{r1} via sentinel/)
            >= 2 }, 10),
   'both workers found the primary through the sentinels');

my @bad;
for (1 .. 20) {
    my $key = session_key('first');
    my $r = chat($t, $key);
    push @bad, "$key $r->{status} $r->{session}"
        unless $r->{status} == 200 && $r->{session} eq 'new'
               && pin_in('r1', $key);
}
ok(!@bad, 'sessions are new and pinned in the primary') or diag("@bad");

###########################################################################
# traffic through a failover (MG::Sessions::traffic): distinct session
# keys, one after the other, until 20 requests in a row were "new" and
# pinned on the new primary after the switch, or MAX seconds

# a forced failover: r2 becomes the primary

my $f = traffic(t => $t, tag => 'fo', max => 15,
                pinned => sub { pin_in('r2', shift) }, fire => sub {
    my $r = $S->cmd($SP[0], 'SENTINEL', 'FAILOVER', $MASTER);
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

ok($t->wait_for(sub { $S->ready($RP{r2}, 1)
                      && eval { ($t->redis_cmd({ name => 'r1' }, 'ROLE')
                          ->[3] // '') eq 'connected' } }, 20, 0.2),
   'r1 is a connected replica of r2');

my $k = traffic(t => $t, tag => 'kill', max => 25,
                pinned => sub { pin_in('r1', shift) }, fire => sub {
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
# r2 was killed: r1 is the primary now; a replica of it is the target
$RP{r3} = $t->redis(name => 'r3',
                    args => ['--replicaof', '127.0.0.1', $RP{r1}]);
MG::Sentinel::scripted($t, $fake_port, $RP{r3}, 60);
$t->wait_for(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                         PeerPort => $fake_port) }, 5);

my $tr = MG::Test->new;
sentinel_conf($tr, sentinels => "127.0.0.1:$fake_port");
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
sentinel_conf($tw, pass => "model_gateway_redis_sentinel_password_file "
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
sentinel_conf($ts, sentinels => join(' ', map { "localhost:$_" } @STLS),
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
sentinel_conf($tn, sentinels => join(' ', map { "127.0.0.1:$_" } @STLS),
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
check_node($tr, 'a replica named by a sentinel');
check_node($tw, 'a wrong sentinel password');
check_node($ts, 'sentinels over TLS');
check_node($tn, 'sentinels over TLS, another name');

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
