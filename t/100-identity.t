#!/usr/bin/perl

# Identity from nginx's own variables (model_gateway_identity TENANT
# [KEY_ID]), for deployments that already authenticate: the tenant and key
# id are decided in the access phase, before the body is read; a request
# without a valid tenant is a 401 invalid_api_key with nothing read past its
# headers and nothing sent; $model_gateway_tenant and $model_gateway_key_id
# log who called; "satisfy any" cannot pass the identity over; a location
# without identity works as before; with callers known, a backend's 401s
# cool it down only when two distinct callers drew them.
#
# The tests take the tenant from a request header so that they can set it;
# a real deployment takes it from what authenticated the request (the
# variables auth_request_set fills, $ssl_client_s_dn, njs).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use IO::Socket::INET;
use IO::Select;
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

$t->mock('up');
$t->mock('refuser', handler => sub {
    return { status => 401, headers => [['Content-Type', 'application/json']],
             body => '{"error":{"message":"bad key","type":"x"}}' };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format id '$request_uri $status tenant=$model_gateway_tenant '
                  'key=$model_gateway_key_id';

    model_gateway_max_fails 2;
    model_gateway_fail_window 30s;
    model_gateway_cooldown 30s;

    model_gateway_backend up {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_up%%/v1;
        model m;
        model mr;
    }

    model_gateway_backend refuser {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_refuser%%/v1;
        model mr;
        weight 1000;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        access_log %%DIR%%/id.log id;

        location /v1/ {
            model_gateway;
            model_gateway_identity $http_x_test_tenant $http_x_test_key;
        }

        location /any/ {
            model_gateway;
            model_gateway_identity $http_x_test_tenant;
            satisfy any;
            allow 127.0.0.1;
            deny all;
        }

        location /open/ {
            model_gateway;
        }
    }
}
EOF

$t->run;

sub nreq { scalar @{$t->mock_requests('up')} }

sub log_lines {
    open my $fh, '<', $t->dir . '/id.log' or return ();
    return map { chomp; $_ } <$fh>;
}

sub unauthorized {
    my ($r, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{status}, 401, "$name: 401");
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} // {} : {};
    is($e->{code}, 'invalid_api_key', "$name: invalid_api_key");
    is($e->{type}, 'invalid_request_error', "$name: invalid_request_error");
    is($e->{message}, 'Invalid or missing API key.',
       "$name: one message whatever was wrong");
}

# who calls

my $r = $t->chat('m', headers => [['X-Test-Tenant', 'acme'],
                                  ['X-Test-Key', 'key-1']]);
is($r->{status}, 200, 'a tenant and a key id: 200');
is(nreq(), 1, 'the request reached the backend');
ok($t->wait_for(sub { (grep { /tenant=acme key=key-1$/ }
                       log_lines()) == 1 }),
   '$model_gateway_tenant and $model_gateway_key_id log who called');

$r = $t->chat('m', headers => [['X-Test-Tenant', 'acme']]);
is($r->{status}, 200, 'a tenant without a key id: 200');

# who does not

my $before = nreq();

unauthorized($t->chat('m'), 'no tenant');
unauthorized($t->chat('m', headers => [['X-Test-Tenant', '']]),
             'an empty tenant');
for my $bad ('acme:other', 'a}b', 'x' x 65, "t\x{e9}") {
    (my $shown = $bad) =~ s/[^\x21-\x7e]/?/g;
    unauthorized($t->chat('m', headers => [['X-Test-Tenant', $bad]]),
                 'tenant "' . substr($shown, 0, 12) . '"');
}
unauthorized($t->chat('m', headers => [['X-Test-Tenant', 'acme'],
                                       ['X-Test-Key', 'bad key']]),
             'a key id with a space');
unauthorized($t->request(method => 'GET', path => '/v1/models'),
             'GET /models without a tenant');
is(nreq(), $before, 'none of them reached the backend');
ok($t->grep_log(qr/identity's tenant or key id is not a name/),
   'a malformed tenant is logged');

# refused before the body is read: a client that announces a large body
# and sends a few bytes gets its 401 at once

{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('gw'), Proto => 'tcp') or die "connect: $!";
    $s->autoflush(1);
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\nContent-Length: 3000000\r\n"
        . "\r\n{\"model\":\"m\",";
    my $t0 = time;
    my $head = '';
    my $sel = IO::Select->new($s);
    while (time - $t0 < 5 && $head !~ /\r\n\r\n/) {
        last unless $sel->can_read(5 - (time - $t0));
        sysread($s, $head, 4096, length $head) or last;
    }
    like($head // '', qr{^HTTP/1\.1 401 }, 'an unread body: 401');
    ok(time - $t0 < 4, 'at once, without waiting for the body');
    close $s;
}

# "satisfy any": allow lets the access phase pass, the identity still holds

unauthorized($t->chat('m', prefix => '/any/v1'),
             'satisfy any, allowed, no tenant');
$r = $t->chat('m', prefix => '/any/v1',
              headers => [['X-Test-Tenant', 'acme']]);
is($r->{status}, 200, 'satisfy any, allowed, a tenant: 200');

# without identity, nothing changes

$r = $t->chat('m', prefix => '/open/v1');
is($r->{status}, 200, 'a location without identity: 200');
ok($t->wait_for(sub { (grep { m{^/open/\S+ 200 tenant=- key=-$} }
                       log_lines()) == 1 }),
   'no tenant there');

# one caller's refusals never cool a backend down for the others; a second
# caller's do

{
    my $refused = sub { scalar @{$t->mock_requests('refuser')} };
    for my $i (1 .. 4) {
        my $x = $t->chat('mr', headers => [['X-Test-Tenant', 'acme'],
                                           ['X-Test-Key', 'k1']]);
        is($x->{status}, 200, "acme's request $i fails over: 200");
    }
    is($refused->(), 4, 'refuser refused all four');
    is(scalar($t->grep_log(qr/backend "refuser" cools down/)), 0,
       'one caller: refuser does not cool down');

    my $x = $t->chat('mr', headers => [['X-Test-Tenant', 'beta']]);
    is($x->{status}, 200, "beta's request fails over: 200");
    ok($t->wait_log(qr/backend "refuser" cools down .*credential was rejected/),
       'a second caller: refuser cools down');
    $x = $t->chat('mr', headers => [['X-Test-Tenant', 'acme'],
                                    ['X-Test-Key', 'k1']]);
    is($x->{status}, 200, 'then served');
    is($refused->(), 5, 'without trying refuser');
}

$t->done_testing;
