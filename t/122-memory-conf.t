#!/usr/bin/perl

# The repository's conf/memory.conf loads and works, its backends pointed
# at the provider mocks of t/lib/MG/Providers.pm (over TLS, with the real
# host names): a chain started on Anthropic goes on on Bedrock, with its
# whole history, when Anthropic fails; a Gemini turn continues it; a
# conversation holds its turns; callers need a gateway key and another
# tenant's ids are unknown; the metrics, the status page and the admin
# API answer.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP qw(decode_json);
use MG::Test;
use MG::Providers;

my $t = MG::Test->new;
$t->need_module;

plan skip_all => 'redis-server or redis-cli not installed'
    if system('command -v redis-server >/dev/null && '
              . 'command -v redis-cli >/dev/null') != 0;

my $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $DIR = $t->dir;

my %HOST = (ant => 'api.anthropic.com',
            bed => 'bedrock-runtime.us-east-1.amazonaws.com',
            gem => 'generativelanguage.googleapis.com');

my $RPORT = $t->redis;
MG::Providers::start($t, tls => { map { $_ => [$t->cert($HOST{$_})] }
                                  keys %HOST });
$ENV{ANTHROPIC_API_KEY} = $MG::Providers::ANT_KEY;
$ENV{GEMINI_API_KEY} = $MG::Providers::GEM_KEY;

sub mgkey {
    my @out = split /\n/, `$^X $ROOT/bin/mg-key @_ 2>$DIR/mgkey.err`;
    die "mg-key @_: " . MG::Test::_read_file("$DIR/mgkey.err") if $?;
    return $out[0];
}
my $ACME = mgkey('--tenant', 'acme', '--redis', "127.0.0.1:$RPORT");
my $GLOBEX = mgkey('--tenant', 'globex', '--redis', "127.0.0.1:$RPORT");

my $text = MG::Test::_read_file("$ROOT/conf/memory.conf");
my $mod = $t->module_path;
my $n;
$n = ($text =~ s/^load_module\s+\S+;/load_module $mod;\ndaemon off;\npid %%DIR%%\/nginx.pid;/m);
is($n, 1, 'load_module rewritten');
$n = ($text =~ s/^worker_processes\s+\S+;/worker_processes 1;/m);
is($n, 1, 'one worker');
$n = ($text =~ s/^error_log\s+\S+/error_log %%DIR%%\/error.log/m);
is($n, 1, 'error_log into the test dir');
$n = ($text =~ s/^(\s*access_log\s+)\S+/$1%%DIR%%\/memory.log/m);
is($n, 1, 'access_log into the test dir');
$n = ($text =~ s/^http\s*\{\n/http {\n    %%TEST_GLOBALS_HTTP%%\n    model_gateway_ssl_trusted_certificate %%CA%%;\n/m);
is($n, 1, 'temp paths and the test CA');
$n = ($text =~ s/model_gateway_redis 127\.0\.0\.1:6379;/model_gateway_redis 127.0.0.1:$RPORT;/);
is($n, 1, 'the test Redis');
for my $m (sort keys %HOST) {
    $n = ($text =~ s{^(\s*)(url\s+https://\Q$HOST{$m}\E\S*;)}
                    {$1$2\n$1connect 127.0.0.1:%%PORT_$m%%;}m);
    is($n, 1, "$HOST{$m} connects to its mock");
}
$n = ($text =~ s/listen\s+127\.0\.0\.1:8080;/listen 127.0.0.1:%%PORT_gw%%;/);
is($n, 1, 'listen port');
my ($ADMIN, $ADMIN_LINE) = split /\n/,
    `$^X $ROOT/bin/mg-key --tenant ops --id ops-1 2>/dev/null`;
MG::Test::_write_file("$DIR/admin.keys", "$ADMIN_LINE\n");
$n = ($text =~ s{/etc/nginx/admin\.keys}{$DIR/admin.keys});
is($n, 1, 'the admin keys in the test dir');
unlike($text, qr{/var/log|/usr/lib|/etc/nginx}, 'no system paths left');

$t->write_conf($text);
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t passes') or diag $out;
$t->run;
ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is up/) }, 10),
   'connected to redis');

sub create {
    my ($key, $body) = @_;
    return $t->request(method => 'POST', path => '/v1/responses',
                       json => $body,
                       headers => [['Authorization', "Bearer $key"]]);
}

sub seen { MG::Providers::seen($t, $_[0]) }

my $r = $t->request(method => 'POST', path => '/v1/responses',
                    json => { model => 'claude-sonnet', input => 'hi' });
is($r->{status}, 401, 'no key: 401');

my $r1 = create($ACME, { model => 'claude-sonnet', input => 'first' });
is($r1->{status}, 200, 'a first turn') or diag $r1->{body};
like($r1->{json}{id}, qr/^resp_mgw_/, 'a gateway id');
like($r1->{json}{output}[0]{content}[0]{text}, qr/^ant-reply-/,
     'answered by Anthropic');

MG::Test::_write_file("$DIR/fail-ant", '');
my $r2 = create($ACME, { model => 'claude-sonnet', input => 'second',
                         previous_response_id => $r1->{json}{id} });
unlink "$DIR/fail-ant";
is($r2->{status}, 200, 'Anthropic failing: still 200') or diag $r2->{body};
like($r2->{json}{output}[0]{content}[0]{text}, qr/^bed-reply-/,
     'answered by Bedrock');
is_deeply(seen('bed'), [['user', 'first'],
          ['assistant', $r1->{json}{output}[0]{content}[0]{text}],
          ['user', 'second']], 'Bedrock got the whole history');

my $r3 = create($ACME, { model => 'gemini-flash', input => 'third',
                         previous_response_id => $r2->{json}{id} });
is($r3->{status}, 200, 'a Gemini turn continues the chain');
is(scalar @{seen('gem')}, 5, 'Gemini got the whole history');

my $g = $t->request(method => 'GET', path => "/v1/responses/$r3->{json}{id}",
                    headers => [['Authorization', "Bearer $GLOBEX"]]);
is($g->{status}, 404, 'another tenant: unknown');
$g = $t->request(method => 'GET', path => "/v1/responses/$r3->{json}{id}",
                 headers => [['Authorization', "Bearer $ACME"]]);
is_deeply($g->{json}, $r3->{json}, 'its tenant gets it back');

my $c = $t->request(method => 'POST', path => '/v1/conversations',
                    json => { metadata => { topic => 'conf' } },
                    headers => [['Authorization', "Bearer $ACME"]]);
is($c->{status}, 200, 'a conversation');
my $c1 = create($ACME, { model => 'claude-sonnet', input => 'in it',
                         conversation => $c->{json}{id} });
my $c2 = create($ACME, { model => 'claude-sonnet', input => 'again',
                         conversation => $c->{json}{id} });
is($c2->{status}, 200, 'a second turn in it');
is_deeply([map { $_->[1] } @{seen('ant')}],
          ['in it', $c1->{json}{output}[0]{content}[0]{text}, 'again'],
          'the conversation holds its turns');

ok($t->wait_for(sub {
       (MG::Test::_read_file("$DIR/memory.log") // '')
           =~ /tenant=acme model=claude-sonnet backend=bedrock tokens=17\/5 / }, 5),
   'the log names the tenant, the backend that served and its tokens');

my $s = $t->stream(method => 'POST', path => '/v1/responses',
                   json => { model => 'claude-sonnet', input => 'streamed',
                             stream => JSON::PP::true },
                   headers => [['Authorization', "Bearer $ACME"]]);
like($s->rest(10), qr/event: response\.completed/, 'a streamed turn');
ok($t->wait_for(sub {
       (MG::Test::_read_file("$DIR/memory.log") // '')
           =~ /backend=anthropic tokens=21\/6 / }, 5),
   'a streamed turn\'s tokens counted too');

# the operator's side
my $m = $t->get('/metrics');
like($m->{body}, qr/^model_gateway_requests_total\{model="claude-sonnet",backend="bedrock",/m,
     'metrics: the turns on Bedrock counted');
my $st = $t->get('/status');
is(scalar @{$st->{json}{backends} || []}, 3, 'status: three backends');
my $ad = $t->request(method => 'GET', path => '/admin/backends',
                     headers => [['Authorization', "Bearer $ADMIN"]]);
is($ad->{status}, 200, 'admin: the list of backends');
is(join(',', map { $_->{name} } @{$ad->{json}{backends} || []}),
   'anthropic,bedrock,gemini', 'admin: by name');
is($t->get('/admin/backends')->{status}, 401, 'admin: not without its key');

$t->done_testing;
