#!/usr/bin/perl

# `make run` (bin/mg-run) as a newcomer meets it, with no provider key in
# the environment and MG_AUTH=1: it starts its own redis-server and the
# gateway with the demo backend, prints URLs and curl lines, and the
# printed lines work as they are (chat, a stream, a session, a Responses
# chain).  The second turn of the chain reaches the demo backend with the
# first turn in it (the backend's log holds each request's body).  The
# metrics and status URLs answer.  SIGINT (Ctrl-C) stops everything it
# started.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP qw(decode_json);
use POSIX ();
use Time::HiRes qw(sleep);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

# bin/mg-run starts nginx as a newcomer does, without the ASan runtime
# preloaded that the ASan build needs (its code paths run under ASan in
# the other files)
plan skip_all => 'bin/mg-run with the ASan build' if $ENV{MG_ASAN};

plan skip_all => 'redis-server or curl not installed'
    if system('command -v redis-server >/dev/null && '
              . 'command -v curl >/dev/null') != 0;

my $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $DIR = $t->dir;
my $PORT = $t->port('run');

delete @ENV{qw(OPENAI_API_KEY OPENAI_BASE_URL OPENAI_MODELS ANTHROPIC_API_KEY
               ANTHROPIC_MODELS)};
local $ENV{MG_PORT} = $PORT;
local $ENV{MG_RUN_DIR} = "$DIR/run";
local $ENV{MG_AUTH} = 1;
local $ENV{MG_REDIS_PORT} = $t->port('runredis');

my $pid = $t->_spawn(cmd => ['bash', "$ROOT/bin/mg-run", $t->module_path],
                     out => "$DIR/run.out");

sub out { MG::Test::_read_file("$DIR/run.out", 1) // "" }

ok($t->wait_for(sub { out() =~ /redis \S+ is up/ }, 20),
   'it starts, and the gateway reaches its Redis') or diag out();

my $text = out();
like($text, qr{^model gateway on http://127\.0\.0\.1:$PORT/v1}m,
     'it says where');
like($text, qr{metrics http://127\.0\.0\.1:$PORT/metrics, status http://127\.0\.0\.1:$PORT/status},
     'and the metrics and status URLs');
like($text, qr/authentication: on, with the demo key (mgk_\S+)/,
     'and the demo key');
like($text, qr/demo \(openai_compatible\).*demo-model/, 'the demo backend');

like($text, qr{admin API http://127\.0\.0\.1:$PORT/admin/ \(127\.0\.0\.1 only\), with the admin key mgk_\S+},
     'and the admin API with its key');

my @curl = $text =~ /^  (curl .*)$/mg;
is(scalar @curl, 6, 'six curl lines');

sub sh {
    my ($cmd) = @_;
    my ($rc, $out) = MG::Test::_capture(['sh', '-c', $cmd]);
    return $out;
}

my $chat = sh($curl[0]);
like($chat, qr/"object":"chat.completion".*demo backend/, 'chat works');

my $stream = sh($curl[1]);
like($stream, qr/chat\.completion\.chunk.*data: \[DONE\]/s, 'a stream works');

my $session = sh($curl[2]);
like($session, qr/^X-Model-Gateway-Session: new/mi, 'a session is pinned');
like(sh($curl[2]), qr/^X-Model-Gateway-Session: hit/mi, 'and found again');

my $first = eval { decode_json(sh($curl[3])) } || {};
like($first->{id} // '', qr/^resp_mgw_/, 'a Responses turn, held by the gateway');

(my $second_cmd = $curl[4]) =~ s/RESP_ID/$first->{id}/;
my $second = eval { decode_json(sh($second_cmd)) } || {};
is($second->{previous_response_id}, $first->{id}, 'its second turn');

my @demo = split /\n/, MG::Test::_read_file("$DIR/run/logs/demo.log", 1) // '';
my $last = $demo[-1] // '';
$last =~ s/\\"/"/g;
like($last, qr/"content":"My name is Ada\.".*"role":"assistant".*"content":"What is my name\?"/,
     'the demo backend got the second turn with the first one in it');

my ($key) = $text =~ /demo key (mgk_\S+)/;
like(sh("curl -s http://127.0.0.1:$PORT/v1/models"),
     qr/invalid_api_key/, 'without the key: refused');
like(sh("curl -s http://127.0.0.1:$PORT/metrics"),
     qr/^model_gateway_requests_total\{model="demo-model",backend="demo",operation="chat",status_class="2xx"\} [1-9]/m,
     'the metrics count the requests');
my $status = eval { decode_json(sh("curl -s http://127.0.0.1:$PORT/status")) };
is($status && $status->{backends}[0]{name}, 'demo', 'the status shows the backend');
my $admin = eval { decode_json(sh($curl[5])) };
is($admin && $admin->{backends}[0]{effective_weight}, 1,
   'the admin line lists the backends');
like(sh("curl -s http://127.0.0.1:$PORT/admin/backends"),
     qr/invalid_api_key/, 'the admin API without its key: refused');

# Ctrl-C: the whole process group gets SIGINT
my $ngx = MG::Test::_read_file("$DIR/run/nginx.pid", 1) // '';
chomp $ngx;
my $redis = MG::Test::_read_file("$DIR/run/redis.pid", 1) // '';
chomp $redis;
ok($ngx && kill(0, $ngx), 'nginx runs');
ok($redis && kill(0, $redis), 'its redis-server runs');
kill 'INT', -$pid;
ok($t->wait_for(sub { waitpid($pid, POSIX::WNOHANG()) == $pid }, 10),
   'mg-run exits on SIGINT');
ok($t->wait_for(sub { !kill(0, $ngx) && !kill(0, $redis) }, 10),
   'nginx and redis-server are gone');
unlike(out(), qr/\[(?:alert|emerg)\]|exited on signal|Sanitizer/,
       'no alert, crash or sanitizer report on the way');

$t->done_testing;
