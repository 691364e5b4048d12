#!/usr/bin/perl

# The Redis host name is resolved again, through nginx's resolver, before
# each reconnect: a managed Redis that fails over to another address is
# followed.  "localhost" resolves to 127.0.0.1 when nginx loads; the test's
# DNS responder then answers 127.0.0.2, where the second Redis runs.

use strict;
use warnings;

use Test::More;
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

$t->dns(name => 'localhost', answer => $answer);

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
    my $r = $t->chat('m', headers => [['X-Session-Id', $key]]);
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
