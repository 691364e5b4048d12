#!/usr/bin/perl

# The repository's conf/tenants.conf loads and works: a key from its key
# file and one that bin/mg-key wrote to Redis are both accepted, a call
# without a key is refused, the tenant's limits show in the gateway's own
# x-ratelimit headers and refuse the request past them, the backend (a TLS
# mock of api.openai.com checking the operator's key) never sees a gateway
# key, a session is pinned under the tenant, and the access log says who
# spent how many tokens.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

plan skip_all => 'redis-server or redis-cli not installed'
    if system('command -v redis-server >/dev/null && '
              . 'command -v redis-cli >/dev/null') != 0;

my $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $DIR = $t->dir;
my $OPENAI_KEY = 'sk-operator-example-conf';
$ENV{OPENAI_API_KEY} = $OPENAI_KEY;

my $RPORT = $t->redis;

# two keys: one in the key file (tenant "other", the "*" limits), one in
# Redis (tenant "acme")
sub mgkey {
    my @out = split /\n/, `$^X $ROOT/bin/mg-key @_ 2>$DIR/mgkey.err`;
    die "mg-key @_: " . MG::Test::_read_file("$DIR/mgkey.err") if $?;
    return @out;
}
my ($file_key, $line) = mgkey('--tenant', 'other', '--id', 'other-1');
MG::Test::_write_file("$DIR/keys", "$line\n");
my ($redis_key) = mgkey('--tenant', 'acme', '--id', 'acme-1', '--redis',
                        "127.0.0.1:$RPORT");

my $text = MG::Test::_read_file("$ROOT/conf/tenants.conf");
my $mod = $t->module_path;
my $n;
$n = ($text =~ s/^load_module\s+\S+;/load_module $mod;\ndaemon off;\npid %%DIR%%\/nginx.pid;/m);
is($n, 1, 'load_module rewritten');
$n = ($text =~ s/^worker_processes\s+\S+;/worker_processes 1;/m);
is($n, 1, 'one worker');
$n = ($text =~ s/^error_log\s+\S+/error_log %%DIR%%\/error.log/m);
is($n, 1, 'error_log into the test dir');
$n = ($text =~ s/^(\s*access_log\s+)\S+/$1%%DIR%%\/tenants.log/m);
is($n, 1, 'access_log into the test dir');
$n = ($text =~ s/^http\s*\{\n/http {\n    %%TEST_GLOBALS_HTTP%%\n    model_gateway_ssl_trusted_certificate %%CA%%;\n/m);
is($n, 1, 'temp paths and the test CA');
$n = ($text =~ s/model_gateway_redis 127\.0\.0\.1:6379;/model_gateway_redis 127.0.0.1:$RPORT;/);
is($n, 1, 'the test Redis');
$n = ($text =~ s{^(\s*)(url\s+https://api\.openai\.com/v1;)}
                {$1$2\n$1connect 127.0.0.1:%%PORT_openai%%;}m);
is($n, 1, 'openai connects to its mock');
$n = ($text =~ s{/etc/nginx/model-gateway\.keys}{%%DIR%%/keys});
is($n, 1, 'the key file');
$n = ($text =~ s/listen\s+127\.0\.0\.1:8080;/listen 127.0.0.1:%%PORT_gw%%;/);
is($n, 1, 'listen port');
unlike($text, qr{/var/log|/usr/lib|/etc/nginx}, 'no system paths left');

$t->mock('openai', tls => [$t->cert('api.openai.com')], handler => sub {
    my $r = shift;
    my $auth = $r->{headers}{authorization} // '';
    my $ok = $auth eq "Bearer $OPENAI_KEY";
    return { status => 401, headers => [['Content-Type', 'application/json']],
             body => '{"error":{"message":"wrong key: ' . $auth . '"}}' }
        unless $ok;
    return { status => 200,
             headers => [['Content-Type', 'application/json'],
                         ['x-ratelimit-limit-requests', '10000']],
             body => MG::Test::openai_completion(model => 'gpt-4o-mini',
                         prompt_tokens => 11, completion_tokens => 7) };
});

$t->write_conf($text);
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t passes') or diag $out;
$t->run;
ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is up/) }, 10),
   'connected to redis');

# max_tokens 1: about 30 tokens reserved, so the request limit binds first
sub call {
    my ($key, @h) = @_;
    return $t->chat('gpt-4o-mini', body => { max_tokens => 1 },
                    headers => [($key ? (['Authorization', "Bearer $key"])
                                      : ()), @h]);
}

my $r = call(undef);
is($r->{status}, 401, 'no key: 401');

$r = call($redis_key, ['X-Session-Id', 'conv-1']);
is($r->{status}, 200, 'a key from Redis (tenant acme)');
is($r->{headers}{'x-ratelimit-limit-requests'}, 600,
   'acme\'s own request limit, not the backend\'s');
is($r->{headers}{'x-ratelimit-limit-tokens'}, 200000,
   'acme\'s tokens per minute');
is($r->{headers}{'x-model-gateway-session'}, 'new', 'a new session');
ok($t->redis_cmd('EXISTS', 'mg:{acme}:pin:conv-1:gpt-4o-mini'),
   'pinned under the tenant');

$r = call($file_key);
is($r->{status}, 200, 'a key from the key file (tenant other)');
is($r->{headers}{'x-ratelimit-limit-requests'}, 60, 'the "*" limits');

my %st;
for my $i (1 .. 60) {
    $r = call($file_key);
    $st{$r->{status}}++;
}
is($st{429}, 1, 'the 61st request of the minute is refused')
    or diag explain \%st;
like($r->{json}{error}{message}, qr/tenant 'other' on requests per minute/,
     'by the tenant\'s request limit');

my @req = @{$t->mock_requests('openai')};
ok(@req > 60, 'the backend was called');
ok(!(grep { join(' ', %{$_->{headers}}, $_->{body} // '')
            =~ /\Q$file_key\E|\Q$redis_key\E/ } @req),
   'no gateway key reached the backend');

ok($t->wait_for(sub {
       (MG::Test::_read_file("$DIR/tenants.log") // '')
           =~ /tenant=acme key=acme-1 model=gpt-4o-mini backend=openai tokens=11\/7/ }, 5),
   'the log names tenant, key id and tokens');
unlike(MG::Test::_read_file("$DIR/tenants.log") // '', qr/mgk_/,
       'and never a key');

$t->done_testing;
