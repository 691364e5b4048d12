#!/usr/bin/perl

# TLS to a Redis primary found through Redis Sentinel (README "Redis":
# model_gateway_redis_tls_name; "Sentinel", TLS). A TLS-only topology: a
# primary and a replica with no plain port (--port 0 --tls-port,
# --tls-replication yes), certificates from the test CA for "redis.test",
# and three real sentinels that reach them over TLS (their own client port
# stays plain: the gateway talks to them in plain text). The gateway
# (2 workers, sessions on, so that every request goes to Redis) is given
# the sentinels, the master's name and model_gateway_redis_tls on:
#   - model_gateway_redis_tls_name redis.test: it finds the primary through
#     the sentinels and connects over TLS ("redis primary ... via sentinel
#     ... is up"); sessions are "new" then "hit", the pins are in the
#     primary (read back over TLS);
#   - a forced failover (SENTINEL FAILOVER) under continuous traffic: no
#     client error, the fallbacks counted (diag) and bounded, and the pins
#     land on the promoted node, over TLS;
#   - model_gateway_redis_tls_name wrong.test against the redis.test
#     certificates: "redis certificate does not match", "is down: TLS
#     certificate name mismatch", requests fall back, no pin written;
#   - model_gateway_redis_tls_verify off without a name: works (no SNI);
#   - a primary (named by a scripted sentinel) whose certificate is for
#     wrong.test while the name is redis.test: refused the same way, and
#     the SNI it received was model_gateway_redis_tls_name;
#   - nginx -t: TLS with sentinels and verification needs
#     model_gateway_redis_tls_name; with verification off it does not.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use POSIX ();
use MG::Test;
use MG::Sentinel;
use MG::Sessions qw(session_key chat gw_conf traffic report check_node);

my $t = MG::Test->new;
$t->need_module;

plan(skip_all => 'IO::Socket::SSL is not installed')
    unless eval { require IO::Socket::SSL; 1 };

my $DIR = $t->dir;
my $MASTER = 'mymaster';
my $NAME = 'redis.test';

my $CA = $t->ca_path;
my ($CRT, $KEY) = $t->cert($NAME);
my ($WCRT, $WKEY) = $t->cert('wrong.test');

###########################################################################
# Redis over TLS only

# one command over TLS (the certificate verified for redis.test, as the
# gateway does), on its own connection; undef when it cannot be sent
sub tcmd {
    my ($port, @cmd) = @_;
    my $s = IO::Socket::SSL->new(
        PeerHost => '127.0.0.1', PeerPort => $port, Timeout => 2,
        SSL_ca_file => $CA,
        SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_PEER(),
        SSL_hostname => $NAME, SSL_verifycn_name => $NAME,
        SSL_verifycn_scheme => 'default')
        or return undef;
    my $io = MG::Test::IO->new($s);
    my $r = eval {
        $io->write(MG::Sentinel::resp(@cmd)) or die "write\n";
        MG::Redis::_resp_read($io, time + 3);
    };
    close $s;
    return $r;
}

my %RP;        # name => TLS port
my %RPID;

# a redis-server with a TLS port and no plain port
sub redis_tls {
    my ($name, @args) = @_;
    my $port = $t->port($name);
    $RPID{$name} = $t->_spawn(
        cmd => ['redis-server', '--port', '0', '--tls-port', $port,
                '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
                '--dir', $DIR, '--dbfilename', "$name.rdb",
                '--daemonize', 'no',
                '--tls-cert-file', $CRT, '--tls-key-file', $KEY,
                '--tls-ca-cert-file', $CA, '--tls-auth-clients', 'no',
                '--tls-replication', 'yes', @args],
        out => "$DIR/$name.log");
    $RP{$name} = $port;
    my $pong = $t->wait_for(sub {
        waitpid($RPID{$name}, POSIX::WNOHANG()) == $RPID{$name} and return -1;
        my $r = tcmd($port, 'PING');
        defined $r && !ref $r && $r eq 'PONG' }, 10, 0.05);
    return $pong && $pong ne '-1';
}

# this redis-server must have been built with TLS
unless (redis_tls('r1')) {
    my @log = split /\n/, MG::Test::_read_file("$DIR/r1.log", 1) // '';
    splice @log, 0, @log - 3 if @log > 3;
    plan(skip_all => 'redis-server does not answer on a TLS port '
         . '(built without TLS?): ' . join(' | ', @log));
}

ok(redis_tls('r2', '--replicaof', '127.0.0.1', $RP{r1}),
   'a replica over TLS only');

sub role { my $r = tcmd(@_, 'ROLE'); ref $r eq 'ARRAY' ? $r : [] }

ok($t->wait_for(sub { (role($RP{r2})->[3] // '') eq 'connected' }, 10, 0.1),
   'the replica replicates the primary over TLS');

###########################################################################
# three sentinels: plain client port, TLS to the data nodes (and to each
# other, on their tls-port, which is what they announce)

my @SP = map { $t->port("s$_") } 1 .. 3;
my @STLS = map { $t->port("s${_}_tls") } 1 .. 3;

for my $i (0 .. 2) {
    MG::Test::_write_file("$DIR/s$i.conf", <<"EOF");
port $SP[$i]
bind 127.0.0.1
daemonize no
dir $DIR
sentinel resolve-hostnames no
sentinel monitor $MASTER 127.0.0.1 $RP{r1} 2
sentinel down-after-milliseconds $MASTER 1000
sentinel failover-timeout $MASTER 5000
sentinel parallel-syncs $MASTER 1
tls-port $STLS[$i]
tls-replication yes
tls-cert-file $CRT
tls-key-file $KEY
tls-ca-cert-file $CA
tls-auth-clients no
EOF
    $t->_spawn(cmd => ['redis-server', "$DIR/s$i.conf", '--sentinel'],
               out => "$DIR/s$i.log");
}

# the sentinels, as a client (their plain client port, no password)
my $S = MG::Sentinel->new(ports => \@SP, master => $MASTER);

my $t0 = time;
ok($t->wait_for(sub { $S->ready($RP{r1}, 1) }, 20, 0.2),
   'the three sentinels know each other, the primary and the replica '
   . '(over TLS)')
    or BAIL_OUT('sentinels did not settle: ' . explain($S->master($SP[0])));
diag(sprintf 'sentinels ready after %.2f s', time - $t0);

###########################################################################
# the gateway

$t->mock('a', handler => sub {
    return { status => 200,
             headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion(model => 'm',
                                                 content => 'ok') };
});

# MG::Sessions::gw_conf (2 workers, sessions on) given the sentinels (all
# three, unless $o{sentinels}), the master's name, TLS on, and the TLS
# directives $o{tls} (the name redis.test and the CA, unless given)
sub sentinel_conf {
    my ($node, %o) = @_;
    gw_conf($node, backend => $t->port('a'), redis => join "\n",
        'model_gateway_redis_sentinel '
            . ($o{sentinels} // join(' ', map { "127.0.0.1:$_" } @SP)) . ';',
        'model_gateway_redis_sentinel_master mymaster;',
        'model_gateway_redis_tls on;',
        split /\n\s*/, $o{tls}
            // "model_gateway_redis_tls_name $NAME;\n"
             . "model_gateway_redis_tls_trusted_certificate $CA;");
}

my $r;

sub pin_in {
    my ($name, $key) = @_;
    my $v = tcmd($RP{$name}, 'GET', "mg:pin:$key:m");
    return defined $v && !ref $v;
}

# a certificate refused for not carrying NAME, from the node ADDR: the
# first failure is an [error] ("is down"), the next ones are at info
# ("reconnect failed"); under load the first one may have had another
# cause (a handshake past the connect timeout), so either will do
sub mismatch {
    my ($node, $name, $addr) = @_;
    return $node->wait_for(sub {
        $node->grep_log(qr/redis certificate does not match "\Q$name\E"/)
        && $node->grep_log(qr/redis[ ]\Q$addr\E[ ](?:is[ ]down|reconnect
                              [ ]failed):[ ]TLS[ ]certificate[ ]name
                              [ ]mismatch/x) }, 10);
}

my $SRE = join '|', @SP;
$SRE = qr/127\.0\.0\.1:(?:$SRE)/;

sentinel_conf($t);
$t->run;

ok($t->wait_for(sub {
        $t->grep_log(qr/redis[ ]primary[ ]127\.0\.0\.1:$RP{r1}\ via
                        [ ]sentinel[ ]$SRE[ ]is[ ]up/x) >= 2 }, 10),
   'both workers found the primary through the sentinels, over TLS')
    or diag($t->_log_tails(20));

my @bad;
for (1 .. 10) {
    my $key = session_key('first');
    my @r = (chat($t, $key), chat($t, $key));
    push @bad, "$key: $r[0]{status} $r[0]{session}, $r[1]{status} "
        . "$r[1]{session}" unless "$r[0]{status} $r[0]{session}" eq '200 new'
            && "$r[1]{status} $r[1]{session}" eq '200 hit'
            && pin_in('r1', $key);
}
ok(!@bad, 'sessions new then hit, pinned in the primary (read over TLS)')
    or diag(join "\n", @bad);

ok(!$t->grep_log(qr/redis certificate|TLS certificate|TLS handshake/),
   'no TLS error logged');

###########################################################################
# a forced failover under traffic (MG::Sessions::traffic): distinct
# session keys, one after the other, until 20 requests in a row were "new"
# and pinned on the promoted node, or MAX seconds

my $f = traffic(t => $t, tag => 'fo', max => 15,
                pinned => sub { pin_in('r2', shift) }, fire => sub {
    my $r = $S->cmd($SP[0], 'SENTINEL', 'FAILOVER', $MASTER);
    diag('SENTINEL FAILOVER: ' . (ref $r ? explain($r) : $r // 'undef'));
});
report('forced failover', $f);

is($f->{error}, 0, 'failover: no client errors');
is($f->{streak}, 20, 'failover: sessions pinned in the promoted node, '
   . 'over TLS');
ok(defined $f->{recover} && $f->{recover} < 10,
   'failover: recovered within 10 s');
ok($f->{fallback} <= $f->{total} / 2,
   "failover: fallbacks bounded ($f->{fallback} of $f->{total})");
ok($t->wait_for(sub { $t->grep_log(qr/redis[ ]primary[ ]127\.0\.0\.1:$RP{r2}
                                      [ ]via[ ]sentinel[ ]$SRE[ ]is[ ]up/x)
                      >= 2 }, 5),
   'failover: both workers are connected to the promoted node');
ok($t->grep_log(qr/\+switch-master mymaster to 127\.0\.0\.1:$RP{r2}\b/),
   'failover: +switch-master followed');
ok(!$t->grep_log(qr/redis certificate|TLS certificate|TLS handshake/),
   'failover: no TLS error logged');
is((role($RP{r2})->[0] // ''), 'master', 'r2 is the primary now');

###########################################################################
# model_gateway_redis_tls_name wrong.test: the certificates say redis.test

my $tw = MG::Test->new;
sentinel_conf($tw, tls => "model_gateway_redis_tls_name wrong.test;\n"
                    . "    model_gateway_redis_tls_trusted_certificate $CA;");
$tw->run;

ok(mismatch($tw, 'wrong.test', "127.0.0.1:$RP{r2}"),
   'wrong name: "does not match", "TLS certificate name mismatch"')
    or diag($tw->_log_tails(20));
@bad = ();
for my $i (1 .. 5) {
    my $r = chat($tw, "wrong-$i");
    push @bad, "wrong-$i: $r->{status} $r->{session}"
        unless "$r->{status} $r->{session}" eq '200 fallback';
}
ok(!@bad, 'wrong name: requests fall back') or diag("@bad");
ok(!(grep { pin_in('r1', "wrong-$_") || pin_in('r2', "wrong-$_") } 1 .. 5),
   'wrong name: no pin written');
ok($tw->wait_for(sub {
        $tw->grep_log(qr/\[info\].*redis\ 127\.0\.0\.1:$RP{r2}\ reconnect
                         \ failed:\ TLS\ certificate\ name\ mismatch/x)
        >= 2 }, 5),
   'wrong name: retried, the failed attempts logged at info');
my $errors = $tw->grep_log(qr/\[error\].*redis certificate does not match/);
ok($errors <= 2, "wrong name: the mismatch logged at error at most once "
   . "per worker ($errors)");
ok(!$tw->grep_log(qr/via sentinel \S+ is up/), 'wrong name: never up');
check_node($tw, 'wrong name');

###########################################################################
# model_gateway_redis_tls_verify off, no name: TLS without SNI, unverified

my $to = MG::Test->new;
sentinel_conf($to, tls => 'model_gateway_redis_tls_verify off;');
$to->run;
ok($to->wait_for(sub {
        $to->grep_log(qr/redis[ ]primary[ ]127\.0\.0\.1:$RP{r2}\ via
                         [ ]sentinel[ ]$SRE[ ]is[ ]up/x) >= 2 }, 10),
   'verify off, no name: both workers connected');
$r = chat($to, 'noverify-1');
ok($r->{status} == 200 && $r->{session} eq 'new'
   && pin_in('r2', 'noverify-1'), 'verify off, no name: sessions pinned');
check_node($to, 'verify off');

###########################################################################
# a primary whose certificate is for wrong.test, named by a scripted
# sentinel, which records the SNI it is sent

my $fake_port = $t->port('fake');
my $sni_port = $t->port('sni');

# a TLS server: the handshake with the given certificate, the SNI appended
# to a file, then the connection closed
MG::Test::_write_file("$DIR/sni.pl", <<'EOF');
use strict;
use warnings;
use IO::Socket::INET;
use IO::Socket::SSL;
use IO::Select;
my ($port, $crt, $key, $out, $life) = @ARGV;
$SIG{PIPE} = 'IGNORE';
$| = 1;
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
    Listen => 64, ReuseAddr => 1) or die "listen: $!";
my $sel = IO::Select->new($l);
my $end = time + $life;
while (time < $end) {
    next unless $sel->can_read(0.5);
    my $c = $l->accept or next;
    my $s = IO::Socket::SSL->start_SSL($c, SSL_server => 1,
        SSL_cert_file => $crt, SSL_key_file => $key, Timeout => 2);
    open my $fh, '>>', $out or die "$out: $!";
    print $fh $s ? 'sni=' . ($s->get_servername // '') . "\n"
                 : "handshake failed: $SSL_ERROR\n";
    close $fh;
    $s ? $s->close(SSL_fast_shutdown => 1) : close $c;
}
EOF

MG::Sentinel::scripted($t, $fake_port, $sni_port, 60);
$t->_spawn(cmd => [$^X, "$DIR/sni.pl", $sni_port, $WCRT, $WKEY,
                   "$DIR/sni.txt", 60],
           out => "$DIR/sni.log");
ok($t->wait_for(sub {
        my $ok = 1;
        for my $p ($fake_port, $sni_port) {
            $ok &&= IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                          PeerPort => $p);
        }
        $ok }, 5),
   'a scripted sentinel and a TLS server for wrong.test');

my $tf = MG::Test->new;
sentinel_conf($tf, sentinels => "127.0.0.1:$fake_port");
$tf->run;
ok(mismatch($tf, $NAME, "127.0.0.1:$sni_port"),
   'a primary with a certificate for another name: refused')
    or diag($tf->_log_tails(20));
$r = chat($tf, 'other-cert-1');
is("$r->{status} $r->{session}", '200 fallback', 'and requests fall back');
# (the readiness probe above made a handshake fail: not counted)
my @sni = grep { /^sni=/ }
    split /\n/, MG::Test::_read_file("$DIR/sni.txt", 1) // '';
ok(@sni && !grep({ $_ ne "sni=$NAME" } @sni),
   "the SNI sent is model_gateway_redis_tls_name (" . scalar(@sni)
   . ' handshakes)') or diag(join ', ', @sni);
check_node($tf, 'certificate for another name');

###########################################################################
# nginx -t

my $tc = MG::Test->new;
$tc->{ports}{a} = $t->port('a');

for my $c (
    [ 'TLS with sentinels and verification needs a name',
      "model_gateway_redis_tls on;", 1,
      qr/"model_gateway_redis_tls"[ ]with[ ]"model_gateway_redis_sentinel"
         [ ]needs[ ]"model_gateway_redis_tls_name"/x ],
    [ 'TLS with sentinels, verification off, no name',
      "model_gateway_redis_tls on;\n"
      . "    model_gateway_redis_tls_verify off;", 0,
      qr/test is successful/ ],
    [ 'TLS with sentinels and a name',
      "model_gateway_redis_tls on;\n"
      . "    model_gateway_redis_tls_name $NAME;\n"
      . "    model_gateway_redis_tls_trusted_certificate $CA;", 0,
      qr/test is successful/ ],
)
{
    my ($name, $directives, $fails, $re) = @$c;
    $tc->write_conf(<<"EOF");
%%TEST_GLOBALS%%
events {
}
http {
    %%TEST_GLOBALS_HTTP%%
    model_gateway_redis_sentinel 127.0.0.1:26379;
    model_gateway_redis_sentinel_master m;
    $directives
    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_a%%/v1;
        model m;
    }
}
EOF
    my ($rc, $out) = $tc->nginx_t;
    ok(($fails ? $rc != 0 : $rc == 0) && $out =~ $re, "nginx -t: $name")
        or diag($out);
}

$t->done_testing;
