#!/usr/bin/perl

# The admin API (README "Admin API"), on two nginx nodes that share one
# Redis and three mock backends:
#   - its key: none, a wrong one, an expired one: 401 invalid_api_key in
#     OpenAI's shape, and the key never in a log; nginx -t refuses the API
#     without Redis;
#   - weights: set on node A, in A's status at once and in B's within
#     model_gateway_admin_sync; new sessions on B then follow the new
#     weights (checked against a Perl port of the rendezvous hash); a
#     reset brings the configured weights back on both;
#   - drain: no new request reaches the drained backend on either node, a
#     request in flight on it finishes (status "draining", then
#     "drained"), a session pinned to it rebinds (rebind) or gets 503
#     (strict); undrain brings it back;
#   - a forced cool-down and its clear, on both nodes;
#   - the state survives a reload of A and a restart of B; every change is
#     logged at notice with the admin key's id;
#   - session pins, native id mappings and gateway-held records: inspect
#     and delete, another tenant's object is not found;
#   - gateway keys: create (the key is shown once and works), list,
#     duplicate id 409, invalid field 400, revoke (the key stops working);
#   - Redis down: a change answers 503 and changes nothing.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json encode_json);
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use MG::Test;
use MG::Rendezvous;
use Digest::SHA ();

my $t = MG::Test->new;          # node A; owns the mocks and Redis
$t->need_module;
my $tb = MG::Test->new;         # node B

my $DIR = $t->dir;
my $top = abs_path(dirname(__FILE__) . '/..');
my @NAMES = qw(a b c);

sub mock_handler {
    my $name = shift;
    return sub {
        my $req = shift;
        my $j = eval { decode_json($req->{body}) } || {};
        my $c = $j->{messages} && $j->{messages}[0]{content} // '';
        return { status => 200, delay => ($c eq 'slow' ? 1.5 : 0),
                 headers => [['Content-Type', 'application/json']],
                 body => MG::Test::openai_completion(
                     model => $j->{model} // 'm', content => "from $name",
                     id => "chatcmpl-$name-$req->{n}") };
    };
}

$t->mock($_, handler => mock_handler($_)) for @NAMES;
my $RPORT = $t->redis;

# admin keys: ops-1, and ops-old (expired)
sub mgkey {
    my @out = `$top/bin/mg-key @_ 2>/dev/null`;
    chomp @out;
    die "mg-key @_ failed\n" unless @out == 2;
    return @out;
}
my ($ADMIN, $ADMIN_LINE) = mgkey('--tenant', 'ops', '--id', 'ops-1');
my ($OLD, $OLD_LINE) = mgkey('--tenant', 'ops', '--id', 'ops-old',
                             '--expires', '2020-01-01T00:00:00Z');
MG::Test::_write_file("$DIR/admin.keys", "$ADMIN_LINE\n$OLD_LINE\n");

sub node_conf {
    my ($node, %o) = @_;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_connect_timeout 500ms;
    model_gateway_admin_sync 200ms;
    model_gateway_key_cache_time 200ms;

    log_format gw '$request_uri $status session=$model_gateway_session_status '
                  'backend=$model_gateway_backend';

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PA%%/v1;
        model m;
        weight 1;
    }

    model_gateway_backend b {
        type openai_compatible;
        url http://127.0.0.1:%%PB%%/v1;
        model m;
        weight 2;
    }

    model_gateway_backend c {
        type openai_compatible;
        url http://127.0.0.1:%%PC%%/v1;
        model m;
        weight 3;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        access_log %%DIR%%/gw.log gw;

        model_gateway_session $http_x_session_id;

        location /v1/ {
            model_gateway;
        }

        location /strict/ {
            model_gateway;
            model_gateway_session_mode strict;
        }

        location /keyed/ {
            model_gateway;
            model_gateway_key_redis on;
        }

        location /admin/ {
            allow 127.0.0.1;
            deny all;
            model_gateway_admin %%KEYS%%;
        }

        location = /status {
            model_gateway_status;
        }

        location = /metrics {
            model_gateway_metrics;
        }
    }
}
EOF
        RPORT => $o{rport} // $RPORT, KEYS => "$DIR/admin.keys",
        PA => $t->port('a'), PB => $t->port('b'), PC => $t->port('c'));
    $node->run;
}

node_conf($t);
node_conf($tb);

# [n, v, n, v] as [[n, v], [n, v]]
sub pairs { my @h = @_; [map { [@h[2 * $_, 2 * $_ + 1]] } 0 .. @h / 2 - 1] }

sub admin {
    my ($node, $method, $path, $body, %o) = @_;
    my @h = (Authorization => 'Bearer ' . ($o{key} // $ADMIN));
    @h = () if $o{nokey};
    return $node->request(method => $method, path => "/admin/$path",
        headers => pairs(@h, @{$o{headers} || []}),
        defined $body ? (json => $body) : ());
}

sub backend_state {
    my ($node, $name) = @_;
    my $r = $node->get('/status');
    my ($b) = grep { $_->{name} eq $name } @{$r->{json}{backends} || []};
    return $b || {};
}

sub chat {
    my ($node, %o) = @_;
    return $node->chat('m', prefix => $o{prefix} // '/v1',
        messages => [{ role => 'user', content => $o{content} // 'hi' }],
        headers => pairs($o{sid} ? ('X-Session-Id' => $o{sid}) : (),
                         @{$o{headers} || []}));
}

sub from { ($_[0]{json}{choices}[0]{message}{content} // '') =~ /from (\w)/
               ? $1 : '' }

sub count { scalar @{$t->mock_requests($_[0])} }

ok($t->wait_for(sub { defined backend_state($t, 'a')->{name}
                      && defined $t->get('/status')->{json}{redis}
                             {admin_synced_ms_ago} }, 5),
   'node A read the admin state');

###########################################################################
# the admin key

{
    my $r = admin($t, 'GET', 'backends', undef, nokey => 1);
    is($r->{status}, 401, 'no admin key: 401');
    is($r->{json}{error}{code}, 'invalid_api_key', 'OpenAI-shaped error');
    is($r->{headers}{'cache-control'}, 'no-store', 'not to be cached');

    $r = admin($t, 'GET', 'backends', undef,
               key => 'mgk_' . ('x' x 43));
    is($r->{status}, 401, 'an unknown admin key: 401');
    $r = admin($t, 'GET', 'backends', undef, key => $OLD);
    is($r->{status}, 401, 'an expired admin key: 401');

    $r = admin($t, 'GET', 'backends', undef,
               headers => []);
    is($r->{status}, 200, 'the admin key: 200');
    is(scalar @{$r->{json}{backends}}, 3, 'three backends listed');

    $r = $t->request(method => 'GET', path => '/admin/backends',
                     headers => pairs('api-key' => $ADMIN));
    is($r->{status}, 200, 'an Azure SDK style header works too');

    $r = admin($t, 'GET', 'nothing', undef);
    is($r->{status}, 404, 'an unknown admin path: 404');
    $r = admin($t, 'GET', 'backends/zz/weight', undef);
    is($r->{status}, 404, 'an unknown backend: 404');
    is($r->{json}{error}{code}, 'backend_not_found', 'named as such');
    $r = admin($t, 'GET', 'backends/a/weight', undef);
    is($r->{status}, 405, 'GET of a change: 405');

    for my $bad ({ weight => 0 }, { weight => 1001 }, { weight => '5' },
                 { weight => 2.5 }, {}) {
        $r = admin($t, 'POST', 'backends/a/weight', $bad);
        is($r->{status}, 400, 'weight ' . encode_json($bad) . ': 400');
    }
    $r = $t->request(method => 'POST', path => '/admin/backends/a/weight',
        headers => pairs(Authorization => "Bearer $ADMIN",
                         'Content-Type' => 'application/json'),
        body => '{"weight":5,"weight":6}');
    is($r->{status}, 400, 'a duplicate member: 400');
    $r = $t->request(method => 'POST', path => '/admin/backends/a/weight',
        headers => pairs(Authorization => "Bearer $ADMIN"),
        body => '{"weight":' . (' ' x 9000) . '5}');
    is($r->{status}, 413, 'a body over 8 KB: 413');
    is(backend_state($t, 'a')->{effective_weight}, 1,
       'nothing changed by refused requests');
}

###########################################################################
# weights, fleet-wide

{
    my $r = admin($t, 'POST', 'backends/a/weight', { weight => 50 });
    is($r->{status}, 200, 'weight of a set to 50');
    my ($a) = grep { $_->{name} eq 'a' } @{$r->{json}{backends}};
    is($a->{effective_weight}, 50, 'the answer shows it');
    is($a->{weight}, 1, 'and the configured weight');
    is(backend_state($t, 'a')->{effective_weight}, 50, 'A at once');
    ok($t->wait_for(sub { backend_state($tb, 'a')->{effective_weight}
                          == 50 }, 3),
       'B within the sync period');

    # new sessions on B follow the new weights
    my %w = (a => 50, b => 2, c => 3);
    my ($match, $n) = (0, 0);
    for my $i (1 .. 20) {
        my $sid = "w$i";
        my $r = chat($tb, sid => $sid);
        $n++;
        $match++ if from($r) eq MG::Rendezvous::pick($sid, \@NAMES, \%w);
    }
    is($match, $n, "B pinned $n new sessions by the new weights");
    like($tb->get('/metrics')->{body},
         qr/^model_gateway_backend_weight\{backend="a"\} 50$/m,
         "B's metrics: the weight in use");

    like($t->error_log,
         qr/\[notice\].*admin "ops-1" set the weight to 50 of backend "a"/,
         'the change is logged with the admin key id');
}

###########################################################################
# survives a reload of A and a restart of B

{
    $t->reload;
    ok($t->wait_for(sub { backend_state($t, 'a')->{effective_weight}
                          == 50 }, 5), 'after a reload of A');
    $tb->stop;
    $tb->run;
    ok($tb->wait_for(sub { backend_state($tb, 'a')->{effective_weight}
                           == 50 }, 5), 'after a restart of B');

    my $r = admin($tb, 'POST', 'backends/a/reset', undef);
    is($r->{status}, 200, 'reset of a, on B');
    is(backend_state($tb, 'a')->{effective_weight}, 1, 'B at once');
    ok($t->wait_for(sub { backend_state($t, 'a')->{effective_weight}
                          == 1 }, 3), 'A within the sync period');
}

###########################################################################
# drain

{
    # a session pinned to b before the drain
    my $sid;
    for my $i (1 .. 200) {
        if (MG::Rendezvous::pick("d$i", \@NAMES,
                                 { a => 1, b => 2, c => 3 }) eq 'b') {
            $sid = "d$i";
            last;
        }
    }
    my $r = chat($t, sid => $sid);
    is(from($r), 'b', "session $sid pinned to b");

    # a slow request in flight on b while it is drained
    my $slow;
    for (1 .. 30) {
        $slow = $t->start_request($t->_chat_request('m',
            messages => [{ role => 'user', content => 'slow' }],
            headers => pairs('X-Session-Id' => $sid)));
        last;
    }
    ok($t->wait_for(sub { backend_state($t, 'b')->{in_flight} == 1 }, 3),
       'a request in flight on b');

    $r = admin($t, 'POST', 'backends/b/drain', undef);
    is($r->{status}, 200, 'b drained');
    is(backend_state($t, 'b')->{drain}, 'draining',
       'status: draining while the request runs');
    my $res = $t->finish_request($slow);
    is($res->{status}, 200, 'the request in flight finished');
    is(from($res), 'b', 'on b');
    ok($t->wait_for(sub { backend_state($t, 'b')->{drain} eq 'drained' },
                    3), 'status: drained');
    ok($tb->wait_for(sub { backend_state($tb, 'b')->{drain} ne 'none' },
                     3), 'B sees the drain');

    like($tb->get('/metrics')->{body},
         qr/^model_gateway_backend_drained\{backend="b"\} 1$/m,
         "B's metrics: b drained");

    my $before = count('b');
    for my $i (1 .. 10) {
        chat($i % 2 ? $t : $tb);
        chat($i % 2 ? $t : $tb, sid => "new$i");
    }
    is(count('b'), $before, 'no new request reached b on either node');

    $r = chat($t, sid => $sid, prefix => '/strict');
    is($r->{status}, 503, 'strict: the session pinned to b gets 503');
    is($r->{json}{error}{code}, 'session_backend_unavailable',
       'session_backend_unavailable');

    $r = chat($t, sid => $sid);
    is($r->{status}, 200, 'rebind: the pinned session is served');
    isnt(from($r), 'b', 'elsewhere');
    is($r->{headers}{'x-model-gateway-session'}, 'rebound', 'rebound');
    is(from($r), MG::Rendezvous::pick($sid, \@NAMES,
                                      { a => 1, b => 2, c => 3 }, 'b'),
       'to where a new session would go');
    $r = chat($t, sid => $sid);
    is($r->{headers}{'x-model-gateway-session'}, 'hit',
       'and stays there');

    $r = admin($tb, 'POST', 'backends/b/undrain', undef);
    is($r->{status}, 200, 'b undrained, on B');
    ok($t->wait_for(sub { backend_state($t, 'b')->{drain} eq 'none' }, 3),
       'A sees it');
    $before = count('b');
    chat($t, sid => "new-after-$_") for 1 .. 12;
    chat($t) for 1 .. 6;
    ok(count('b') > $before, 'b receives requests again');
    like($tb->error_log, qr/admin "ops-1" undrained backend "b"/,
         'the undrain is logged');
}

###########################################################################
# forced cool-down and its clear

{
    my $r = admin($t, 'POST', 'backends/c/cooldown', { seconds => 30 });
    is($r->{status}, 200, 'c cooled down for 30 s');
    my $c = backend_state($t, 'c');
    ok($c->{cooldown_ms} > 25000, 'A: c cools down');
    ok($c->{forced_cooldown_ms} > 25000, 'A: forced');
    ok($tb->wait_for(sub { backend_state($tb, 'c')->{cooldown_ms}
                           > 20000 }, 3), 'B: c cools down');
    my $before = count('c');
    chat($_ % 2 ? $t : $tb) for 1 .. 10;
    is(count('c'), $before, 'no request reached c');

    $r = admin($t, 'POST', 'backends/c/cooldown', { seconds => 0 });
    is($r->{status}, 400, 'a cool-down of 0 s: 400');

    $r = admin($tb, 'DELETE', 'backends/c/cooldown', undef);
    is($r->{status}, 200, 'the cool-down cleared, on B');
    is(backend_state($tb, 'c')->{cooldown_ms}, 0, 'B at once');
    ok($t->wait_for(sub { backend_state($t, 'c')->{cooldown_ms} == 0 }, 3),
       'A within the sync period');
    chat($t) for 1 .. 12;
    ok(count('c') > $before, 'c receives requests again');

    # reset of every backend
    admin($t, 'POST', 'backends/a/weight', { weight => 9 });
    admin($t, 'POST', 'backends/b/drain', undef);
    $r = admin($t, 'POST', 'backends/reset', undef);
    is($r->{status}, 200, 'every backend reset');
    ok($tb->wait_for(sub {
           backend_state($tb, 'a')->{effective_weight} == 1
           && backend_state($tb, 'b')->{drain} eq 'none' }, 3),
       'B has the configured values back');
}

###########################################################################
# session pins and stored objects

{
    my $r = chat($t, sid => 'inspect-me');
    my $pinned = from($r);
    $r = admin($t, 'GET', 'sessions?model=m&session=inspect-me', undef);
    is($r->{status}, 200, 'a session pin inspected');
    is($r->{json}{backend}, $pinned, 'its backend');
    ok($r->{json}{created_at_ms} > 1e12, 'its creation time');
    $r = admin($t, 'GET', 'sessions?model=m&session=inspect-me&tenant=acme',
               undef);
    is($r->{status}, 404, 'the same key of a tenant: not found');
    $r = admin($t, 'GET', 'sessions?model=m', undef);
    is($r->{status}, 400, 'no session: 400');
    $r = admin($t, 'DELETE', 'sessions?model=m&session=inspect-me', undef);
    is($r->{status}, 200, 'the pin deleted');
    ok($r->{json}{deleted}, 'deleted: true');
    is($t->redis_cmd('EXISTS', 'mg:pin:inspect-me:m'), 0, 'gone in Redis');
    $r = admin($t, 'DELETE', 'sessions?model=m&session=inspect-me', undef);
    is($r->{status}, 404, 'twice: 404');
    like($t->error_log, qr/admin "ops-1" deleted sessions "inspect-me"/,
         'the delete is logged');

    $t->redis_cmd('SET', 'mg:resp:resp_abc', 'acme|b');
    $r = admin($t, 'GET', 'responses/resp_abc?tenant=acme', undef);
    is($r->{status}, 200, 'a native response id inspected');
    is_deeply([@{$r->{json}}{qw(mode backend tenant)}],
              ['native', 'b', 'acme'], 'its backend and tenant');
    $r = admin($t, 'GET', 'responses/resp_abc?tenant=other', undef);
    is($r->{status}, 404, "another tenant's id: 404");
    $r = admin($t, 'DELETE', 'responses/resp_abc', undef);
    is($r->{status}, 404, 'without the tenant: 404');
    $r = admin($t, 'DELETE', 'responses/resp_abc?tenant=acme', undef);
    is($r->{status}, 200, 'deleted');
    is($t->redis_cmd('EXISTS', 'mg:resp:resp_abc'), 0, 'gone in Redis');

    $t->redis_cmd('SET', 'mg:conv:conv_abc', 'c');
    $r = admin($t, 'GET', 'conversations/conv_abc', undef);
    is($r->{json}{backend}, 'c', 'a native conversation id inspected');
    $r = $t->get('/v1/conversations/conv_abc');
    is($r->{status}, 200, 'the conversation id routes (and is cached)');
    $r = admin($t, 'DELETE', 'conversations/conv_abc', undef);
    is($r->{status}, 200, 'its mapping deleted');
    $r = $t->get('/v1/conversations/conv_abc');
    is($r->{status}, 404, 'this node forgot it at once');

    $t->redis_cmd('HSET', 'mg:{acme}:gw:c:conv_mgw_0123', 'l', 'L1',
                  'o', '{"id":"conv_mgw_0123"}', 'b', 'a');
    $t->redis_cmd('RPUSH', 'mg:{acme}:gw:l:L1', '', '{"id":"msg_1"}');
    $r = admin($t, 'GET', 'conversations/conv_mgw_0123?tenant=acme', undef);
    is($r->{status}, 200, 'a gateway-held conversation inspected');
    is($r->{json}{mode}, 'gateway', 'gateway mode');
    is($r->{json}{record}{backend}, 'a', 'its last backend');
    $r = admin($t, 'GET', 'conversations/conv_mgw_0123', undef);
    is($r->{status}, 404, 'without its tenant: 404');
    $r = admin($t, 'DELETE', 'conversations/conv_mgw_0123?tenant=acme',
               undef);
    is($r->{status}, 200, 'deleted');
    is($t->redis_cmd('EXISTS', 'mg:{acme}:gw:c:conv_mgw_0123',
                     'mg:{acme}:gw:l:L1'), 0, 'record and list gone');
    $r = admin($t, 'GET', 'responses/bad%2Fid', undef);
    is($r->{status}, 400, 'a malformed id: 400');
}

###########################################################################
# gateway keys

{
    my $r = admin($t, 'POST', 'keys',
                  { tenant => 'acme', id => 'k1', models => 'm', rpm => 50 });
    is($r->{status}, 201, 'a key created');
    my $key = $r->{json}{key} // '';
    like($key, qr/^mgk_[A-Za-z0-9_-]{43}$/, 'the key, shown once');
    like($r->{json}{hash}, qr/^sha256:[0-9a-f]{64}$/, 'its hash');

    my $res = chat($t, prefix => '/keyed',
                   headers => [Authorization => "Bearer $key"]);
    is($res->{status}, 200, 'the new key works');
    $res = $t->chat('other', prefix => '/keyed',
                    headers => pairs(Authorization => "Bearer $key"));
    is($res->{status}, 404, 'with its policy (models=m)');

    $r = admin($t, 'POST', 'keys', { tenant => 'acme', id => 'k1' });
    is($r->{status}, 409, 'the same id again: 409');
    $r = admin($t, 'POST', 'keys', { tenant => 'acme', id => 'k2',
                                     rpm => 0 });
    is($r->{status}, 400, 'an invalid field: 400');
    like($r->{json}{error}{message}, qr/rpm/, 'naming the field');
    $r = admin($t, 'POST', 'keys', { tenant => 'acme', id => 'k3',
                                     hash => 'sha256:' . ('0' x 64) });
    is($r->{status}, 400, 'a hash sent: 400');
    $r = admin($t, 'POST', 'keys', { id => 'k4' });
    is($r->{status}, 400, 'no tenant: 400');
    admin($t, 'POST', 'keys', { tenant => 'beta', id => 'k1' });

    my ($cli_key) = `$top/bin/mg-key --tenant beta --id k2 --redis 127.0.0.1:$RPORT 2>/dev/null`;
    chomp $cli_key;
    like($cli_key, qr/^mgk_/, 'a key made by bin/mg-key');

    $r = admin($t, 'GET', 'keys?tenant=acme', undef);
    my @ids = sort map { "$_->{tenant}/$_->{id}" } @{$r->{json}{data}};
    is_deeply(\@ids, ['acme/k1'], "the tenant's keys listed");
    my @all;
    my $cursor = '';
    for (1 .. 20) {
        $r = admin($t, 'GET', "keys$cursor", undef);
        push @all, map { "$_->{tenant}/$_->{id}" } @{$r->{json}{data}};
        last unless defined $r->{json}{next_cursor};
        $cursor = "?cursor=$r->{json}{next_cursor}";
    }
    is_deeply([sort @all], ['acme/k1', 'beta/k1', 'beta/k2'],
              'every key listed, bin/mg-key\'s too');
    $r = admin($t, 'POST', 'keys', { tenant => 'beta', id => 'k2' });
    is($r->{status}, 409, "bin/mg-key's id is taken for the API too");
    $r = admin($t, 'DELETE', 'keys/beta/k2', undef);
    is($r->{status}, 200, "bin/mg-key's key revoked");
    is($t->redis_cmd('EXISTS', 'mg:key:{' . Digest::SHA::sha256_hex($cli_key)
                     . '}'), 0, 'its record gone');

    $r = admin($t, 'DELETE', 'keys/acme/k1', undef);
    is($r->{status}, 200, 'the key revoked');
    $r = admin($t, 'DELETE', 'keys/acme/k1', undef);
    is($r->{status}, 404, 'twice: 404');
    ok($t->wait_for(sub {
           chat($t, prefix => '/keyed',
                headers => [Authorization => "Bearer $key"])->{status}
           == 401 }, 3),
       'the revoked key stops working within the key cache time');
    like($t->error_log, qr/admin "ops-1" created key "k1" of tenant "acme"/,
         'creation logged');

    my $logs = join '', map { MG::Test::_read_file($_, 1) // '' }
        glob("$DIR/*.log"), glob($tb->dir . '/*.log');
    for my $secret ($key, $ADMIN, $OLD) {
        ok(index($logs, $secret) < 0, 'no key in any log');
    }
}

###########################################################################
# Redis down

{
    $t->stop_redis;
    my $r = admin($t, 'POST', 'backends/a/weight', { weight => 7 });
    is($r->{status}, 503, 'Redis down: 503');
    is($r->{json}{error}{code}, 'admin_store_unavailable',
       'admin_store_unavailable');
    is(backend_state($t, 'a')->{effective_weight}, 1, 'nothing changed');
    $r = admin($t, 'GET', 'backends', undef);
    is($r->{status}, 200, 'the list still answers');
}

###########################################################################
# nginx -t

{
    my $tn = MG::Test->new;
    $tn->write_conf(<<'EOF', KEYS => "$DIR/admin.keys");
%%TEST_GLOBALS%%
events {
}
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT_gw%%;
        location /admin/ {
            model_gateway_admin %%KEYS%%;
        }
    }
}
EOF
    my ($rc, $out) = $tn->nginx_t;
    isnt($rc, 0, 'the admin API without Redis: nginx -t fails');
    like($out, qr/"model_gateway_admin" needs "model_gateway_redis"/,
         'saying why');
}

$t->allow_log(qr/redis .* is down|admin request refused|could not change/);
$tb->stop;
$t->done_testing;
