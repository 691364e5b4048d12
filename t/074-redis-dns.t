#!/usr/bin/perl

# The Redis host name is resolved again, through nginx's resolver, before
# each reconnect: a managed Redis that fails over to another address is
# followed.  "localhost" resolves to 127.0.0.1 when nginx loads; the test's
# DNS responder then answers 127.0.0.2, where the second Redis runs.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use POSIX ();
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $dir = $t->dir;
my $answer = "$dir/dns-answer";

sub write_answer {
    open my $fh, '>', "$answer.tmp" or die $!;
    print $fh shift;
    close $fh;
    rename "$answer.tmp", $answer or die $!;
}

write_answer('127.0.0.2');

my $rport = $t->redis(name => 'one');
$t->redis(name => 'two', addr => '127.0.0.2', port => $rport);

$t->mock('m', handler => sub {
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion() };
});

# a minimal DNS responder: A for localhost, TTL 1, nothing else

my $dns_port = $t->port('dns');
my $dns_pid = fork // die "fork: $!";

if ($dns_pid == 0) {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                  LocalPort => $dns_port, Proto => 'udp')
        or POSIX::_exit(1);
    my $deadline = time + 60;
    while (time < $deadline) {
        my $rin = '';
        vec($rin, fileno($s), 1) = 1;
        next unless select(my $rout = $rin, undef, undef, 0.5);
        my $peer = $s->recv(my $q, 512) // next;
        next if length($q) < 17;
        my ($id) = unpack('n', $q);
        my $p = 12;
        my @labels;
        while ((my $l = ord(substr($q, $p, 1))) != 0) {
            push @labels, substr($q, $p + 1, $l);
            $p += $l + 1;
        }
        my $qend = $p + 5;
        my ($qtype) = unpack('n', substr($q, $p + 1, 2));
        my $name = lc join('.', @labels);
        my $question = substr($q, 12, $qend - 12);
        my $ans = '';
        my $n = 0;
        if ($name eq 'localhost' && $qtype == 1) {
            open my $fh, '<', $answer or next;
            my $ip = <$fh>;
            close $fh;
            $ip =~ s/\s+//g;
            $ans = pack('n n n N n', 0xc00c, 1, 1, 1, 4)
                   . pack('C4', split /\./, $ip);
            $n = 1;
        }
        my $rcode = ($name eq 'localhost') ? 0 : 3;
        $s->send(pack('n n n n n n', $id, 0x8180 | $rcode, 1, $n, 0, 0)
                 . $question . $ans, 0, $peer);
    }
    POSIX::_exit(0);
}

END { kill 'KILL', $dns_pid if $dns_pid; }

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    resolver 127.0.0.1:%%PORT_dns%% valid=1s ipv6=off;
    resolver_timeout 2s;

    model_gateway_redis localhost:%%PORT_one%%;
    model_gateway_redis_timeout 500ms;

    model_gateway_backend m {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_m%%/v1;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
            model_gateway_session $http_x_session_id;
        }
    }
}
EOF

$t->run;

sub session {
    my $key = shift;
    my $r = $t->post_json('/v1/chat/completions',
        { model => 'm', messages => [{ role => 'user', content => 'hi' }] },
        headers => [['X-Session-Id', $key]]);
    return ($r->{status}, $r->{headers}{'x-model-gateway-session'} // '');
}

my ($st, $s) = (0, '');
ok($t->wait_for(sub { ($st, $s) = session('first'); $s eq 'new' }, 10),
   'sessions use the Redis at 127.0.0.1') or diag "$st $s";
ok(defined $t->redis_cmd({ name => 'one' }, 'GET', 'mg:pin:first:m'),
   'the pin is in the first Redis');

$t->stop_redis('one');

ok($t->wait_for(sub { ($st, $s) = session('second'); $s eq 'new' }, 15),
   'after the first Redis went away, the worker resolved the name again '
   . 'and uses the one at 127.0.0.2') or diag "$st $s";
ok(defined $t->redis_cmd({ name => 'two' }, 'GET', 'mg:pin:second:m'),
   'the new pin is in the second Redis');
ok(scalar $t->grep_log(qr/redis 127\.0\.0\.2:\d+ is up/),
   'the new address is logged');

$t->done_testing;
