#!/usr/bin/perl

# Every stored object belongs to a tenant (README "Sessions", "OpenAI
# Responses and Conversations", "Redis"):
#   - the same session key in two tenants is two pins, under
#     mg:{TENANT}:pin:KEY:MODEL, each free to name its own backend; without
#     identity the pin keeps its old key mg:pin:KEY:MODEL;
#   - a response or conversation id records its owner ("TENANT|BACKEND");
#     another tenant asking for it (GET, DELETE, previous_response_id,
#     conversation) gets the 404 an unknown id gets, and no backend
#     receives anything; so does a caller without identity;
#   - model_gateway_state_default_backend (node C) serves unknown ids and
#     ids no tenant owns (records from before tenants), never another
#     tenant's id; with Redis down a tenant's id is a 503, not the default;
#   - without identity, records and answers are as before.
#
# The tenant comes from a request header so that the test can set it.
# Mocks "a" and "b" answer every Responses/Conversations call with 200 (they
# do not check ids): what reached which mock is what the test checks.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;          # node A: mocks, Redis
$t->need_module;
my $tc = MG::Test->new;         # node C: state default backend b

my $DIR = $t->dir;
my $JSON = JSON::PP->new->utf8->canonical;

sub mock_handler {
    my $me = shift;
    return sub {
        my $req = shift;
        my $n = $req->{n};
        my $m = $req->{method};
        my ($path) = $req->{path} =~ /^([^?]*)/;
        my @h = (['Content-Type', 'application/json'],
                 ['x-request-id', "$me-$n"]);
        my $ok = sub { { status => 200, headers => [@h],
                         body => $JSON->encode($_[0]) } };

        if ($m eq 'POST' && $path eq '/v1/responses') {
            return $ok->({ id => "resp_${me}_$n", object => 'response',
                           status => 'completed', model => 'm',
                           output => [] });
        }
        if ($m eq 'POST' && $path eq '/v1/conversations') {
            return $ok->({ id => "conv_${me}_$n", object => 'conversation',
                           created_at => 1700000000, metadata => {} });
        }
        if ($path =~ m{^/v1/(responses|conversations)/([^/]+)}) {
            return $ok->({ id => $2, object => 'seen', from => $me });
        }
        return $ok->(MG::Test::openai_completion(model => 'm',
            content => "chat from $me", id => "chatcmpl-$me-$n"));
    };
}

for my $k (qw(a b)) {
    MG::Test::_write_file("$DIR/key-$k", "sk-test-key-of-$k\n");
    chmod 0644, "$DIR/key-$k";
    $t->mock($k, handler => mock_handler($k));
}

my $RPORT = $t->redis;

sub node_conf {
    my ($node, %o) = @_;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_connect_timeout 500ms;
    %%DEFAULT%%

    model_gateway_backend a {
        type openai;
        url http://127.0.0.1:%%PA%%/v1;
        key_file %%KDIR%%/key-a;
        model m;
    }

    model_gateway_backend b {
        type openai;
        url http://127.0.0.1:%%PB%%/v1;
        key_file %%KDIR%%/key-b;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        location /v1/ {
            model_gateway;
            model_gateway_identity $http_x_tenant;
            model_gateway_session $http_x_session_id;
        }

        location /open/v1/ {
            model_gateway;
            model_gateway_session $http_x_session_id;
        }
    }
}
EOF
        RPORT => $RPORT, PA => $t->port('a'), PB => $t->port('b'),
        KDIR => $DIR,
        DEFAULT => $o{default}
            ? "model_gateway_state_default_backend $o{default};" : '');
    $node->run;
}

node_conf($t);
node_conf($tc, default => 'b');

my %NODE = (A => $t, C => $tc);

for my $n (qw(A C)) {
    ok($t->wait_for(sub { $NODE{$n}->grep_log(qr/redis \S+ is up/) >= 1 },
                    10), "node $n: connected to redis");
}

sub nreq { scalar @{$t->mock_requests($_[0])} }
sub total { nreq('a') + nreq('b') }

sub call {
    my ($node, $tenant, $method, $path, %o) = @_;
    my @h = defined $tenant ? (['X-Tenant', $tenant]) : ();
    push @h, ['X-Session-Id', $o{session}] if defined $o{session};
    my $r = $NODE{$node}->request(method => $method, path => $path,
        headers => \@h, exists $o{json} ? (json => $o{json}) : ());
    ($r->{backend}) = ($r->{headers}{'x-model-gateway-backend'} // '')
        =~ /^([^;\s]+)/;
    $r->{code} = $r->{json} && ref $r->{json}{error} eq 'HASH'
        ? $r->{json}{error}{code} : undef;
    return $r;
}

sub redis { $t->redis_cmd(@_) }

# the answer for an id, with the id itself blanked out
sub shape {
    my ($r, $id) = @_;
    my $b = $r->{body} // '';
    $b =~ s/\Q$id\E/ID/g;
    return "$r->{status} $b";
}

###########################################################################
# response ids

my $r = call('A', 't1', 'POST', '/v1/responses',
             json => { model => 'm', input => 'hi' });
is($r->{status}, 200, 't1 creates a response');
my $rid = $r->{json}{id};
my $rb = $r->{backend};
like($rid // '', qr/^resp_[ab]_\d+$/, 'response id');
is(redis('GET', "mg:resp:$rid"), "t1|$rb",
   'the id record names its tenant and backend');
cmp_ok(redis('PTTL', "mg:resp:$rid"), '>', 86400 * 1000,
       'the record keeps its expiry');

$r = call('A', 't1', 'GET', "/v1/responses/$rid");
is("$r->{status} $r->{backend}", "200 $rb", 't1 reads its own response');

my $unknown = 'resp_nobody_0001';
my $before = total();

for my $node (qw(A C)) {
    my $other = call($node, 't2', 'GET', "/v1/responses/$rid");
    my $none = call('A', 't2', 'GET', "/v1/responses/$unknown");
    is($other->{code}, 'response_not_found',
       "node $node: t2 GET of t1's response is response_not_found");
    is(shape($other, $rid), shape($none, $unknown),
       "node $node: ... exactly the answer to an unknown id");

    $other = call($node, 't2', 'DELETE', "/v1/responses/$rid");
    $none = call('A', 't2', 'DELETE', "/v1/responses/$unknown");
    is(shape($other, $rid), shape($none, $unknown),
       "node $node: t2 DELETE of t1's response: as unknown");
    is($other->{status}, 404, "node $node: ... 404");

    $other = call($node, 't2', 'POST', '/v1/responses',
        json => { model => 'm', input => 'x', previous_response_id => $rid });
    $none = call('A', 't2', 'POST', '/v1/responses',
        json => { model => 'm', input => 'x',
                  previous_response_id => $unknown });
    is($other->{code}, 'response_not_found',
       "node $node: previous_response_id of t1's response: 404");
    is(shape($other, $rid), shape($none, $unknown),
       "node $node: ... exactly the answer to an unknown id");
    is($other->{json}{error}{param}, 'previous_response_id', '... param');

    $other = call($node, undef, 'GET', "/open/v1/responses/$rid");
    is($other->{code}, 'response_not_found',
       "node $node: a caller without identity does not get t1's response");
}

# node C's unknown ids went to its default backend; t1's id never did
is(total(), $before, 'no backend received a request for t1\'s id')
    or diag explain [map { "$_->{method} $_->{path}" }
                     @{$t->mock_requests('a')}, @{$t->mock_requests('b')}];

$r = call('C', 't2', 'GET', "/v1/responses/$unknown");
is("$r->{status} $r->{backend}", '200 b',
   'node C: an id no tenant owns goes to the default backend');
is(total(), $before + 1, '... one request');

$r = call('A', 't1', 'POST', '/v1/responses',
          json => { model => 'm', input => 'again',
                    previous_response_id => $rid });
is("$r->{status} $r->{backend}", "200 $rb",
   't1 continues its own response on its backend');
is(redis('GET', "mg:resp:$r->{json}{id}"), "t1|$rb",
   '... and owns the new id');

$r = call('A', 't1', 'DELETE', "/v1/responses/$rid");
is("$r->{status} $r->{backend}", "200 $rb", 't1 deletes its own response');

###########################################################################
# conversations

$r = call('A', 't1', 'POST', '/v1/conversations', json => {});
is($r->{status}, 200, 't1 creates a conversation');
my $cid = $r->{json}{id};
my $cb = $r->{backend};
is(redis('GET', "mg:conv:$cid"), "t1|$cb", 'the conversation record');

my $cunknown = 'conv_nobody_0001';
$before = total();

for my $node (qw(A C)) {
    my $other = call($node, 't2', 'GET', "/v1/conversations/$cid");
    my $none = call('A', 't2', 'GET', "/v1/conversations/$cunknown");
    is($other->{code}, 'conversation_not_found',
       "node $node: t2 GET of t1's conversation: conversation_not_found");
    is(shape($other, $cid), shape($none, $cunknown),
       "node $node: ... exactly the answer to an unknown id");

    $other = call($node, 't2', 'GET', "/v1/conversations/$cid/items");
    is($other->{code}, 'conversation_not_found',
       "node $node: ... and of its items");

    $other = call($node, 't2', 'DELETE', "/v1/conversations/$cid");
    is($other->{code}, 'conversation_not_found',
       "node $node: t2 DELETE of t1's conversation: 404");

    $other = call($node, 't2', 'POST', '/v1/responses',
        json => { model => 'm', input => 'x', conversation => $cid });
    $none = call('A', 't2', 'POST', '/v1/responses',
        json => { model => 'm', input => 'x', conversation => $cunknown });
    is(shape($other, $cid), shape($none, $cunknown),
       "node $node: a response in t1's conversation: as unknown");
    is($other->{status}, 404, "node $node: ... 404");
}

is(total(), $before, 'no backend received a request for t1\'s conversation');

$r = call('C', 't2', 'GET', "/v1/conversations/$cunknown");
is("$r->{status} $r->{backend}", '200 b',
   'node C: a conversation no tenant owns goes to the default backend');

$r = call('C', 't1', 'GET', "/v1/conversations/$cid");
is("$r->{status} $r->{backend}", "200 $cb",
   'node C: t1 reaches its conversation on its backend');

###########################################################################
# ids from before tenants (no owner in the record)

my $lid = 'resp_legacy_0001';
redis('SET', "mg:resp:$lid", 'a');
$before = total();

$r = call('A', 't1', 'GET', "/v1/responses/$lid");
is($r->{code}, 'response_not_found',
   'an id from before tenants: 404 for a tenant without a default backend');
is(total(), $before, '... nothing sent');

$r = call('C', 't1', 'GET', "/v1/responses/$lid");
is("$r->{status} $r->{backend}", '200 b',
   '... the default backend (not its recorded backend) with one');

$r = call('A', undef, 'GET', "/open/v1/responses/$lid");
is("$r->{status} $r->{backend}", '200 a',
   '... its recorded backend without identity, as before');

###########################################################################
# identity off: the old layout

$r = call('A', undef, 'POST', '/open/v1/responses',
          json => { model => 'm', input => 'hi' });
my $oid = $r->{json}{id};
is(redis('GET', "mg:resp:$oid"), $r->{backend},
   'without identity the record is the bare backend');
$r = call('C', 't1', 'GET', "/v1/responses/$oid");
is("$r->{status} $r->{backend}", '200 b',
   '... and owned by no tenant (node C: default backend)');

###########################################################################
# session pins

my $ms = do { my $tm = redis('TIME'); $tm->[0] * 1000 + int($tm->[1] / 1000) };
redis('SET', 'mg:{t1}:pin:shared:m', "a|$ms", 'PX', 60000);
redis('SET', 'mg:{t2}:pin:shared:m', "b|$ms", 'PX', 60000);

for my $i (1 .. 2) {
    for my $tn ([t1 => 'a'], [t2 => 'b']) {
        $r = call('A', $tn->[0], 'POST', '/v1/chat/completions',
                  session => 'shared',
                  json => { model => 'm',
                            messages => [{ role => 'user', content => 'x' }] });
        is("$r->{status} $r->{backend} "
           . ($r->{headers}{'x-model-gateway-session'} // ''),
           "200 $tn->[1] hit",
           "round $i: $tn->[0]'s session \"shared\" is on its own pin");
    }
}

# new pins: each tenant's under its own hash tag
for my $tn (qw(t1 t2 t3)) {
    $r = call('A', $tn, 'POST', '/v1/chat/completions', session => 'fresh',
              json => { model => 'm',
                        messages => [{ role => 'user', content => 'x' }] });
    is($r->{headers}{'x-model-gateway-session'}, 'new',
       "$tn: session \"fresh\" is new");
    like(redis('GET', "mg:{$tn}:pin:fresh:m") // '',
         qr/^\Q$r->{backend}\E\|\d+$/, "$tn: its pin names its backend");
}

$r = call('A', undef, 'POST', '/open/v1/chat/completions', session => 'fresh',
          json => { model => 'm',
                    messages => [{ role => 'user', content => 'x' }] });
is($r->{headers}{'x-model-gateway-session'}, 'new',
   'without identity "fresh" is a session of its own');
like(redis('GET', 'mg:pin:fresh:m') // '', qr/^[ab]\|\d+$/,
     '... under the old key');

my @keys = sort @{redis('KEYS', 'mg:*')};
my @pins = grep { /:pin:/ } @keys;
is_deeply([grep { !/^mg:(?:\{t\d\}:)?pin:[^{}]+:m$/ } @pins], [],
          'every pin key is mg:{TENANT}:pin:... or mg:pin:...')
    or diag explain \@pins;
is(scalar(grep { /^mg:\{t\d\}:pin:/ } @pins), 5, 'five tenant pins');
is_deeply([grep { !/^mg:(?:pin|resp|conv|\{t\d\}):/ } @keys], [],
          'no other keys') or diag explain \@keys;

###########################################################################
# Redis down: a tenant's id cannot be checked, so no default backend

$t->stop_redis;
$before = total();

$r = call('C', 't2', 'GET', "/v1/responses/$unknown");
is("$r->{status} " . ($r->{code} // ''), '503 state_store_unavailable',
   'redis down: a tenant\'s id is a 503 even with a default backend');
is(total(), $before, '... nothing sent');

$r = call('C', undef, 'GET', "/open/v1/responses/$unknown");
is("$r->{status} $r->{backend}", '200 b',
   '... without identity the default backend serves, as before');

for my $n (qw(C A)) {
    $NODE{$n}->stop;
    my @bad = grep { /\[(?:alert|emerg)\]|exited on signal|Sanitizer/ }
        split /\n/, $NODE{$n}->error_log . ($NODE{$n}->stderr_log // '');
    ok(!@bad, "node $n: no alerts, crashes or sanitizer reports")
        or diag(join "\n", @bad);
}

$t->done_testing;
