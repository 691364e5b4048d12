#!/usr/bin/perl

# Backend host names re-resolved at run time: with "resolver" configured,
# a "resolve" backend is looked up by the workers and followed as its DNS
# answer changes.  A tiny DNS responder in this file answers A queries for
# api.dns.test with the address written in a file.

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

write_answer('127.0.0.1');

# the same port on two loopback addresses: only DNS tells them apart

my $port = $t->port('one');
my $reply = sub {
    my $who = shift;
    return sub {
        return { status => 200,
                 headers => [['Content-Type', 'application/json']],
                 body => MG::Test::openai_completion(content => $who) };
    };
};

$t->mock('one', handler => $reply->('one'));
$t->mock('two', addr => '127.0.0.2', port => $port, handler => $reply->('two'));

$t->dns(name => 'api.dns.test', answer => $answer);

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    resolver 127.0.0.1:%%PORT_dns%% valid=1s ipv6=off;
    resolver_timeout 2s;

    model_gateway_backend api {
        type openai_compatible;
        url http://api.dns.test:%%PORT_one%%/v1;
        resolve;
        model m;
        keepalive 0;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
        }
    }
}
EOF

my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'a "resolve" backend needs no answer at load time') or diag $out;

$t->run;

sub who {
    my $r = $t->chat('m');
    return 'status ' . $r->{status} unless $r->{status} == 200;
    return $r->{json}{choices}[0]{message}{content};
}

my $got = '';
ok($t->wait_for(sub { ($got = who()) eq 'one' }, 10),
   'first answer 127.0.0.1: mock one serves') or diag $got;

write_answer('127.0.0.2');

ok($t->wait_for(sub { ($got = who()) eq 'two' }, 15),
   'answer changed to 127.0.0.2: mock two serves') or diag $got;

ok(scalar @{ $t->mock_requests('two') }, 'mock two received requests');
ok(scalar $t->grep_log(qr/api\.dns\.test now resolves to 127\.0\.0\.2/),
   'the change is logged');

$t->done_testing;
