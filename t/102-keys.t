#!/usr/bin/perl

# Gateway keys: presented as the three SDKs send them (Authorization:
# Bearer, x-api-key, api-key), found in a key file or in Redis (a record
# bin/mg-key writes); one 401 body for a missing, malformed, unknown,
# expired or revoked key; revocation through Redis within the cache time;
# unknown keys cached so that they cost one HGETALL; rotation by overlap;
# per-key models, endpoints and max tokens, and GET /models filtered;
# Redis down: 503 for a key not known otherwise; key file errors fail
# nginx -t naming file:line; the key in no log and at no backend; a
# location without key sources unaffected; $model_gateway_tenant and
# $model_gateway_key_id logged.

use strict;
use warnings;

use Cwd qw(abs_path);
use Digest::SHA ();
use File::Basename qw(dirname);
use JSON::PP;
use Time::HiRes qw(time sleep);
use MG::Test;

BEGIN { $ENV{MG_TEST_LOGLEVEL} = 'debug' }

my $t = MG::Test->new;
$t->need_module;

my $top = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $cli = "$top/bin/mg-key";
my $dir = $t->dir;

plan skip_all => 'redis-server or redis-cli not installed'
    if system('command -v redis-server >/dev/null && '
              . 'command -v redis-cli >/dev/null') != 0;

# runs bin/mg-key; returns its output lines
sub mgkey {
    my @a = map { "'$_'" } @_;
    my @out = split /\n/, `$^X $cli @a 2>$dir/mgkey.err`;
    die "mg-key @_: @out " . (MG::Test::_read_file("$dir/mgkey.err") // '')
        if $?;
    return @out;
}

sub _write {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print {$fh} $s;
    close $fh;
}

my %K;      # name => key
my @file;

for my $k (['plain', '--tenant', 'acme', '--id', 'plain'],
           ['old', '--tenant', 'acme', '--id', 'acme-old'],
           ['new', '--tenant', 'acme', '--id', 'acme-new'],
           ['expired', '--tenant', 'acme', '--id', 'gone',
            '--expires', '2001-01-01T00:00:00Z'],
           ['narrow', '--tenant', 'beta', '--id', 'narrow',
            '--models', 'm,x-*', '--endpoints', 'chat,models',
            '--max-tokens', '100'])
{
    my ($name, @args) = @$k;
    my ($key, $line) = mgkey(@args);
    $K{$name} = $key;
    push @file, $line;
}

_write("$dir/keys.txt", "# the test's keys\n\n" . join("\n", @file) . "\n");

my $RPORT = $t->redis;

$t->mock('up');

$t->write_conf(<<'EOF', RPORT => $RPORT);
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    log_format id '$request_uri $status tenant=$model_gateway_tenant '
                  'key=$model_gateway_key_id';

    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_prefix mgt;

    # the admin state is read at start, then not within the test: the
    # HGETALLs counted are the key lookups
    model_gateway_admin_sync 60s;
    model_gateway_redis_connect_timeout 300ms;
    model_gateway_key_cache_time 1s;
    model_gateway_key_cache_size 2;

    model_gateway_backend up {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_up%%/v1;
        model m;
        model m2;
        model x-1;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        access_log %%DIR%%/id.log id;

        location /v1/ {
            model_gateway;
            model_gateway_key_file %%DIR%%/keys.txt;
            model_gateway_key_redis on;
        }

        location /file/ {
            model_gateway;
            model_gateway_key_file keys.txt;
        }

        location /both/ {
            model_gateway;
            model_gateway_identity $http_x_test_tenant;
            model_gateway_key_file %%DIR%%/keys.txt;
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
    open my $fh, '<', "$dir/id.log" or return ();
    return map { chomp; $_ } <$fh>;
}

sub bearer { [['Authorization', "Bearer $_[0]"]] }

sub chat_with {
    my ($key, %o) = @_;
    return $t->chat($o{model} // 'm', headers => bearer($key), %o);
}

sub hgetalls {
    my $info = $t->redis_cmd('INFO', 'commandstats');
    return $info =~ /cmdstat_hgetall:calls=(\d+)/ ? $1 : 0;
}

my $REFUSAL;

sub unauthorized {
    my ($r, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{status}, 401, "$name: 401");
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} // {} : {};
    is($e->{code}, 'invalid_api_key', "$name: invalid_api_key");
    $REFUSAL //= $r->{body};
    is($r->{body}, $REFUSAL, "$name: the same body as every refusal");
}

# the three SDK header styles

my $r = chat_with($K{plain});
is($r->{status}, 200, 'Authorization: Bearer: 200');
$r = $t->chat('m', headers => [['x-api-key', $K{plain}]]);
is($r->{status}, 200, 'x-api-key: 200');
$r = $t->chat('m', headers => [['api-key', $K{plain}]]);
is($r->{status}, 200, 'api-key: 200');
$r = $t->chat('m', headers => [['Authorization', "bearer  $K{plain}"]]);
is($r->{status}, 200, 'bearer in lower case, two spaces: 200');
ok($t->wait_for(sub { (grep { /tenant=acme key=plain$/ } log_lines()) >= 4 }),
   '$model_gateway_tenant and $model_gateway_key_id log who called');

# refusals: one body whatever was wrong

my $before = nreq();

unauthorized($t->chat('m'), 'no key');
unauthorized($t->chat('m', headers => [['Authorization', 'Basic abc']]),
             'another scheme');
unauthorized(chat_with('short'), 'a malformed key');
unauthorized(chat_with('mgk_' . ('A' x 43)), 'an unknown key');
unauthorized(chat_with($K{expired}), 'an expired key');
unauthorized($t->request(method => 'GET', path => '/v1/models'),
             'GET /models without a key');
is(nreq(), $before, 'none of them reached the backend');
ok($t->grep_log(qr/refused an expired key \(id "gone"\)/),
   'the log says why, with the id');

# rotation by overlap: two keys of one tenant, both valid

$r = chat_with($K{old});
is($r->{status}, 200, 'rotation: the old key');
$r = chat_with($K{new});
is($r->{status}, 200, 'rotation: the new key');
ok($t->wait_for(sub { (grep { /tenant=acme key=acme-old$/ } log_lines())
                      && (grep { /tenant=acme key=acme-new$/ } log_lines()) }),
   'rotation: one tenant, two key ids');

# per-key policy

my $nosuch = $t->chat('zz', headers => bearer($K{plain}));
is($nosuch->{status}, 404, 'an unknown model: 404');
$r = chat_with($K{narrow}, model => 'm2');
is($r->{status}, 404, 'a model the key may not use: 404');
is($r->{json}{error}{code}, 'model_not_found', 'model_not_found');
(my $as_unknown = $r->{body}) =~ s/`m2`/`zz`/;
is($as_unknown, $nosuch->{body}, 'the same body as an unknown model');
$r = chat_with($K{narrow}, model => 'x-1');
is($r->{status}, 200, 'a model of a prefix the key may use: 200');

$r = $t->request(method => 'GET', path => '/v1/models',
                 headers => bearer($K{narrow}));
is_deeply([sort map { $_->{id} } @{$r->{json}{data} || []}], ['m', 'x-1'],
          'GET /models: only the models the key may use');
$r = $t->request(method => 'GET', path => '/v1/models',
                 headers => bearer($K{plain}));
is_deeply([sort map { $_->{id} } @{$r->{json}{data} || []}],
          ['m', 'm2', 'x-1'], 'GET /models: every model for another key');
$r = $t->request(method => 'GET', path => '/v1/models/m2',
                 headers => bearer($K{narrow}));
my $r2 = $t->request(method => 'GET', path => '/v1/models/zz',
                     headers => bearer($K{narrow}));
is($r->{status}, 404, 'GET /models/ID of a model the key may not use: 404');
($as_unknown = $r->{body}) =~ s/`m2`/`zz`/;
is($as_unknown, $r2->{body}, 'the same body as an unknown model');

$r = $t->post_json('/v1/embeddings', { model => 'm', input => 'x' },
                   headers => bearer($K{narrow}));
$r2 = $t->post_json('/v1/nothing', { model => 'm', input => 'x' },
                    headers => bearer($K{narrow}));
is($r->{status}, 404, 'an endpoint the key may not use: 404');
is($r->{json}{error}{code}, 'unknown_url', 'unknown_url');
($as_unknown = $r->{body}) =~ s/embeddings/nothing/;
is($as_unknown, $r2->{body}, 'as if the endpoint did not exist');
$r = $t->post_json('/v1/embeddings', { model => 'm', input => 'x' },
                   headers => bearer($K{plain}));
is($r->{status}, 200, 'the same endpoint for another key: 200');

$before = nreq();
$r = chat_with($K{narrow}, body => { max_tokens => 100 });
is($r->{status}, 200, 'max_tokens at the cap: 200');
$r = chat_with($K{narrow}, body => { max_tokens => 101 });
is($r->{status}, 400, 'max_tokens above the cap: 400');
is($r->{json}{error}{param}, 'max_tokens', 'the param is the field');
like($r->{json}{error}{message}, qr/\b100\b/, 'the message names the cap');
$r = chat_with($K{narrow}, body => { max_completion_tokens => 1e3 });
is($r->{status}, 400, 'max_completion_tokens above the cap: 400');
is($r->{json}{error}{param}, 'max_completion_tokens',
   'the param is that field');
$r = $t->chat('m', headers => bearer($K{narrow}),
              body => { max_output_tokens => '100.5' + 0 });
is($r->{status}, 400, 'max_output_tokens of 100.5: 400');
is(nreq(), $before + 1, 'only the request within the cap reached it');
$r = chat_with($K{plain}, body => { max_tokens => 100000 });
is($r->{status}, 200, 'a key without a cap: 200');

# Redis: a record bin/mg-key writes

my ($rkey) = mgkey('--tenant', 'red', '--id', 'red-1',
                   '--redis', "127.0.0.1:$RPORT", '--prefix', 'mgt');
$r = chat_with($rkey);
is($r->{status}, 200, 'a key from Redis: 200');
ok($t->wait_for(sub { (grep { /tenant=red key=red-1$/ } log_lines()) == 1 }),
   'its tenant and id logged');

$r = chat_with($rkey, prefix => '/file/v1');
is($r->{status}, 401, 'not in a location without model_gateway_key_redis');

# revocation through Redis: within the cache time (1s)

mgkey('--redis', "127.0.0.1:$RPORT", '--prefix', 'mgt',
      '--revoke', 'red-1');
my $t0 = time;
$t->wait_for(sub { chat_with($rkey)->{status} == 401 }, 3, 0.1);
my $took = time - $t0;
unauthorized(chat_with($rkey), 'a revoked key');
ok($took < 1.6, sprintf('revoked within the cache time (%.2fs)', $took));

# unknown keys are cached: one HGETALL for many requests

is($t->redis_cmd('CONFIG', 'RESETSTAT'), 'OK', 'CONFIG RESETSTAT');
my $unknown = 'mgk_' . ('u' x 43);
unauthorized(chat_with($unknown), "unknown key, request $_") for 1 .. 5;
is(hgetalls(), 1, '5 requests with one unknown key: 1 HGETALL');

# the cache is bounded (model_gateway_key_cache_size 2): a third unknown
# key pushes out the oldest, which costs a lookup again

is($t->redis_cmd('CONFIG', 'RESETSTAT'), 'OK', 'CONFIG RESETSTAT');
sleep 1.1;
chat_with("mgk_$_" . ('v' x 42)) for 1 .. 3;
chat_with("mgk_3" . ('v' x 42));
is(hgetalls(), 3, 'three unknown keys: three lookups, the last cached');
chat_with("mgk_1" . ('v' x 42));
is(hgetalls(), 4, 'the oldest was pushed out of a cache of 2');

# a record whose hash is not the one of its name lets nobody in

my $other = 'mgk_' . ('w' x 43);
my $hex = Digest::SHA::sha256_hex($other);
$t->redis_cmd('HSET', "mgt:key:{$hex}", 'id', 'forged', 'tenant', 'evil',
              'hash', 'sha256:' . ('0' x 64));
unauthorized(chat_with($other), 'a record with another hash');
ok($t->grep_log(qr/key record of id "forged" in Redis is invalid/),
   'the broken record is logged');

# identity variables and a key: variables win when set, else a key

$r = $t->chat('m', prefix => '/both/v1',
              headers => [['X-Test-Tenant', 'viavar']]);
is($r->{status}, 200, 'both: a tenant from variables');
$r = $t->chat('m', prefix => '/both/v1', headers => bearer($K{plain}));
is($r->{status}, 200, 'both: no variable, a key');
unauthorized($t->chat('m', prefix => '/both/v1'), 'both: neither');

# without key sources, nothing changes

$r = $t->chat('m', prefix => '/open/v1');
is($r->{status}, 200, 'a location without key sources: 200');
$r = $t->chat('m', prefix => '/open/v1', headers => bearer('whatever'));
is($r->{status}, 200, 'a location without key sources ignores keys');

# the key file is read again on reload

my ($fresh, $fline) = mgkey('--tenant', 'acme', '--id', 'fresh');
unauthorized(chat_with($fresh, prefix => '/file/v1'),
             'a key not in the file yet');
_write("$dir/keys.txt", join("\n", @file[1 .. $#file], $fline) . "\n");
ok($t->reload(wait_old => 1), 'reload');
ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is up/) >= 2 }),
   'the new worker connected to redis');
$r = chat_with($fresh, prefix => '/file/v1');
is($r->{status}, 200, 'reload: a key added to the file works');
unauthorized(chat_with($K{plain}, prefix => '/file/v1'),
             'reload: a key removed from the file');

# Redis down: a key not in the file nor the cache gets a 503

my ($rkey2) = mgkey('--tenant', 'red', '--id', 'red-2',
                    '--redis', "127.0.0.1:$RPORT", '--prefix', 'mgt');
# requests that present one new key while Redis is asked share the lookup

my ($rkey4) = mgkey('--tenant', 'red', '--id', 'red-4',
                    '--redis', "127.0.0.1:$RPORT", '--prefix', 'mgt');
is($t->redis_cmd('CONFIG', 'RESETSTAT'), 'OK', 'CONFIG RESETSTAT');
is($t->redis_cmd('CLIENT', 'PAUSE', '150'), 'OK', 'redis paused');
my @burst = map {
    $t->start_request(method => 'POST', path => '/v1/chat/completions',
                      headers => bearer($rkey4),
                      json => { model => 'm',
                                messages => [{ role => 'user',
                                               content => "burst $_" }] })
} 1 .. 10;
my %bs;
$bs{$t->finish_request($_)->{status} // 'none'}++ for @burst;
is($bs{200}, 10, 'a burst of one new key: 10 requests served')
    or diag explain \%bs;
is(hgetalls(), 1, 'a burst of one new key: 1 HGETALL');

# a client that goes away while Redis is asked: the lookup goes on (and
# fills the cache), touching nothing of the request

is($t->redis_cmd('CLIENT', 'PAUSE', '400'), 'OK', 'redis paused');
my $p = $t->start_request(method => 'POST', path => '/v1/chat/completions',
                          headers => bearer($rkey2),
                          json => { model => 'm',
                                    messages => [{ role => 'user',
                                                   content => 'hi' }] });
sleep 0.1;
close $p->{s};
sleep 0.5;
$r = chat_with($rkey2);
is($r->{status}, 200, 'after a client left during a lookup: 200');

$t->stop_redis;
ok($t->wait_log(qr/redis \S+ is down/, 5), 'redis is down');
my ($rkey3) = mgkey('--tenant', 'red', '--id', 'red-3');
$r = chat_with($rkey3);
is($r->{status}, 503, 'Redis down, a key not cached: 503');
is($r->{json}{error}{code}, 'key_store_unavailable', 'key_store_unavailable');
$r = chat_with($K{old});
is($r->{status}, 200, 'Redis down, a key of the file: 200');

# the key is never logged (debug level included, nginx's own dump of the
# request headers aside), nor sent to the backend

$t->stop;
my @keys = (values %K, $rkey, $rkey2, $rkey3, $unknown, $fresh);
my @leaks;
for my $l (split /\n/, $t->error_log) {
    next if $l =~ /\] \d+#\d+: \*\d+ http header: "/;
    push @leaks, $l if grep { index($l, $_) >= 0 } @keys;
}
is_deeply(\@leaks, [], 'no key in error.log at debug level');
ok($t->grep_log(qr/\[debug\]/), 'error.log was at debug level');
my $access = join '', map { MG::Test::_read_file("$dir/$_", 1) // '' }
    qw(access.log id.log);
ok(!(grep { index($access, $_) >= 0 } @keys), 'no key in access logs');
my $mock = MG::Test::_read_file("$dir/mock-up.log", 1) // '';
ok(length $mock, 'the backend saw requests');
ok(!(grep { index($mock, $_) >= 0 } @keys), 'no key sent to the backend');

# key file errors fail nginx -t with file:line

my $conf = MG::Test::_read_file($t->conf_path);

sub bad_file {
    my ($text, $re, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    _write("$dir/bad.txt", $text);
    (my $c = $conf) =~ s{model_gateway_key_file keys\.txt}
                        {model_gateway_key_file bad.txt};
    _write($t->conf_path, $c);
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, $re, "$name: names the file and line");
    unlike($out, qr/mgk_/, "$name: no key in the message");
}

bad_file("# c\n$file[0]\nx acme sha256:zz\n", qr{bad\.txt:3: .*hash},
         'a malformed hash');
bad_file("$file[0]\n\n$file[0]\n", qr{bad\.txt:3: .*id "plain"},
         'a duplicate id');
(my $dup = $file[1]) =~ s/^acme-old/acme-other/;
bad_file("$file[1]\n$dup\n", qr{bad\.txt:2: the hash is also on line 1},
         'a duplicate hash');
bad_file("$file[0] colour=blue\n", qr{bad\.txt:1: .*colour}, 'an unknown field');
unlink "$dir/bad.txt";
my ($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'a missing key file: nginx -t fails');
like($out, qr{bad\.txt}, 'a missing key file: named');
_write($t->conf_path, $conf);
($rc, $out) = $t->nginx_t;
is($rc, 0, 'the good file passes nginx -t') or diag($out);

$t->done_testing;
