#!/usr/bin/perl

# TLS to Redis (README "Redis": model_gateway_redis_tls,
# model_gateway_redis_tls_verify, model_gateway_redis_tls_trusted_certificate;
# the certificate is checked against the host of model_gateway_redis):
#   - localhost:PORT, a certificate for localhost from the test CA: sessions
#     work (new, then hit), the pin is in Redis, and the gateway's
#     connections are on the TLS port;
#   - 127.0.0.1:PORT, a certificate for the IP address: works as well;
#   - a certificate not issued by the trusted CA: refused (logged), session
#     requests fall back; with model_gateway_redis_tls_verify off it works;
#   - a certificate for another name: refused (logged), fallback.
#
# Every redis-server also listens in plain text on its harness port, for
# inspection by the test only.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;            # owns the mocks and the redis servers
$t->need_module;

my @NAMES = qw(a b c);

for my $name (@NAMES) {
    $t->mock($name, handler => sub {
        my $req = shift;
        return { status => 200,
                 headers => [['Content-Type', 'application/json']],
                 body => MG::Test::openai_completion(model => 'm',
                     content => "from $name") };
    });
}

my $CA = $t->ca_path;

# redis_tls($name, $cert, $key): a redis-server with a TLS port (returned)
# next to its plain harness port
sub redis_tls {
    my ($name, $crt, $key) = @_;
    my $tls = $t->port("${name}_tls");
    $t->redis(name => $name, args => ['--tls-port', $tls,
        '--tls-cert-file', $crt, '--tls-key-file', $key,
        '--tls-ca-cert-file', $CA, '--tls-auth-clients', 'no']);
    return $tls;
}

my %TLS = (
    good  => redis_tls('good', $t->cert('localhost')),
    ip    => redis_tls('ip', $t->cert('127.0.0.1')),
    rogue => redis_tls('rogue', $t->rogue_cert('localhost')),
    other => redis_tls('other', $t->cert('other.test')),
);

# the fixtures themselves: every TLS port answers redis-cli (the rogue one
# without verification)
SKIP: {
    skip 'no redis-cli', 1 unless `sh -c 'command -v redis-cli' 2>/dev/null`;
    my @bad;
    for my $name (sort keys %TLS) {
        my @v = $name eq 'rogue' ? ('--insecure') : ('--cacert', $CA);
        my $out = `redis-cli --tls @v -h 127.0.0.1 -p $TLS{$name} PING 2>&1`;
        push @bad, "$name: $out" unless $out =~ /^PONG$/m;
    }
    is_deeply(\@bad, [], 'fixtures: redis-cli --tls gets PONG on every TLS port');
}

sub node {
    my (%o) = @_;
    my $n = MG::Test->new;
    $n->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;

    model_gateway_redis %%ADDR%%;
    model_gateway_redis_tls on;
    model_gateway_redis_tls_verify %%VERIFY%%;
    # the CA of the first test object, which issued the Redis certificates
    model_gateway_redis_tls_trusted_certificate %%RCA%%;
    model_gateway_redis_connect_timeout 1s;

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

        location /v1/ {
            model_gateway;
            model_gateway_session $http_x_session_id;
        }
    }
}
EOF
        ADDR => $o{addr}, VERIFY => $o{verify} // 'on', RCA => $CA,
        PA => $t->port('a'), PB => $t->port('b'), PC => $t->port('c'));
    $n->run;
    return $n;
}

sub chat {
    my ($node, $key) = @_;
    my $r = $node->chat('m', headers => [['X-Session-Id', $key]]);
    ($r->{backend}) = ($r->{headers}{'x-model-gateway-backend'} // '')
        =~ /^([^;\s]+)/;
    $r->{session} = $r->{headers}{'x-model-gateway-session'};
    return $r;
}

sub desc { my $r = shift;
    return sprintf '%s %s/%s', $r->{status} // 'none',
        $r->{backend} // '-', $r->{session} // '-' }

sub up_lines { scalar $_[0]->grep_log(qr/model gateway: redis \S+ is up/) }

# the done_testing checks, for the gateways (the harness runs them once)
sub check_node {
    my ($node, $label) = @_;
    $node->stop;
    my @lines = split /\n/, $node->error_log;
    my @alerts = grep { /\[(?:alert|emerg)\]/ } @lines;
    ok(!@alerts, "$label: no alerts") or diag(join "\n", @alerts);
    my @crash = grep { /exited on signal/ } @lines;
    ok(!@crash, "$label: no crashed workers") or diag(join "\n", @crash);
    my @san = grep { /Sanitizer|runtime error:/ } @lines,
        split /\n/, $node->stderr_log;
    ok(!@san, "$label: no sanitizer reports") or diag(join "\n", @san);
}

# a working TLS connection: sessions new then hit, pins in that redis
sub works {
    my ($node, $rname, $label) = @_;
    ok($node->wait_for(sub { up_lines($node) >= 2 }, 10),
        "$label: both workers connected")
        or diag($node->_log_tails(20));
    my @bad;
    for my $i (1 .. 6) {
        my $k = "$rname-$i";
        my @r = (chat($node, $k), chat($node, $k));
        my $pin = $t->redis_cmd({ name => $rname }, 'GET', "mg:pin:$k:m") // '';
        push @bad, "$k: " . join(', ', map { desc($_) } @r) . " pin '$pin'"
            unless $r[0]{status} == 200 && ($r[0]{session} // '') eq 'new'
                && desc($r[1]) eq "200 $r[0]{backend}/hit"
                && $pin =~ /^\Q$r[0]{backend}\E\|\d+$/;
    }
    is_deeply(\@bad, [], "$label: sessions new then hit, the pin in redis");
    my $list = $t->redis_cmd({ name => $rname }, 'CLIENT', 'LIST');
    my $on_tls = () = $list =~ /laddr=127\.0\.0\.1:$TLS{$rname}\b/g;
    ok($on_tls >= 2, "$label: $on_tls client connections on the TLS port");
}

# a refused TLS connection: logged, session requests fall back
sub refused {
    my ($node, $re, $label) = @_;
    ok(scalar $node->wait_log($re, 5), "$label: refused, logged");
    my @bad;
    for my $i (1 .. 4) {
        # a session key is printable ASCII without spaces
        my $r = chat($node, ($label =~ s/\W+/-/gr) . "-$i");
        push @bad, desc($r) unless $r->{status} == 200
            && ($r->{session} // '') eq 'fallback';
    }
    is_deeply(\@bad, [], "$label: session requests served via fallback");
    is(up_lines($node), 0, "$label: never up");
}

###########################################################################

my $n1 = node(addr => "localhost:$TLS{good}");
works($n1, 'good', 'localhost, CA-issued certificate');
check_node($n1, 'localhost');

my $n2 = node(addr => "127.0.0.1:$TLS{ip}");
works($n2, 'ip', '127.0.0.1, certificate for the IP address');
check_node($n2, '127.0.0.1');

my $n3 = node(addr => "localhost:$TLS{rogue}");
refused($n3, qr/redis certificate verify error/, 'untrusted certificate');
check_node($n3, 'untrusted');

my $n4 = node(addr => "localhost:$TLS{rogue}", verify => 'off');
works($n4, 'rogue', 'untrusted certificate, verify off');
check_node($n4, 'verify off');

my $n5 = node(addr => "localhost:$TLS{other}");
refused($n5, qr/redis certificate does not match "localhost"/,
    'certificate for another name');
check_node($n5, 'other name');

$t->done_testing;
