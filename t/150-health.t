#!/usr/bin/perl

# Active health checks (README "model_gateway_backend", "Cool-downs",
# "Status"), with two workers sharing the schedule:
#   - the probe is the provider's model list, with the backend's own
#     credential and fixed headers: GET /v1/models for OpenAI (Bearer),
#     Anthropic (x-api-key, anthropic-version) and path= as given; Gemini's
#     x-goog-api-key; Azure's api-key and api-version (classic) or the v1
#     form; Bedrock is a connect check (a connection, no request);
#   - one probe per interval whatever the number of workers;
#   - a probe answered 500, then 401, cools the backend down after fails=2:
#     chat traffic goes only to the other backend, the status and metrics
#     say down; once /models answers again the backend is back after
#     passes=2, and takes traffic;
#   - a probe that gets no answer within its timeout fails;
#   - an https backend is probed over TLS with SNI, its certificate checked;
#   - a backend without health_check gets no probe;
#   - no key in error.log;
#   - nginx -t rejects bad parameters, with the file and line.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $DIR = $t->dir;
my $JSONH = ['Content-Type', 'application/json'];

my %KEY = (oai => 'sk-oai-SECRET-4242', ant => 'sk-ant-SECRET-4343',
           gem => 'gem-SECRET-4444', az => 'az-SECRET-4545',
           flaky => 'sk-flaky-SECRET-4646', tls => 'sk-tls-SECRET-4747',
           br => 'br-SECRET-4848');
for my $k (keys %KEY) {
    open my $fh, '>', "$DIR/$k.key" or die $!;
    print $fh "$KEY{$k}\n";
    close $fh;
}

sub models_ok {
    return { status => 200, headers => [$JSONH],
             body => '{"object":"list","data":[{"id":"m","object":"model"}]}' };
}

sub chat_ok {
    my ($req, $who) = @_;
    return { status => 200, headers => [$JSONH],
             body => MG::Test::openai_completion(model => 'x',
                 content => "answer from $who") };
}

# a mock that answers its model list (recorded) and chat
sub plain {
    my $who = shift;
    return sub {
        my $req = shift;
        return models_ok() if $req->{method} eq 'GET';
        return chat_ok($req, $who);
    };
}

$t->mock($_, handler => plain($_)) for qw(oai ant gem az azv1 nocheck steady);

# flaky: its model list answers 500 while DIR/flaky-500 exists, 401 while
# DIR/flaky-401 exists
$t->mock('flaky', handler => sub {
    my $req = shift;
    if ($req->{method} eq 'GET') {
        return { status => 500, headers => [$JSONH], body => '{}' }
            if -e "$DIR/flaky-500";
        return { status => 401, headers => [$JSONH],
                 body => '{"error":{"message":"bad key"}}' }
            if -e "$DIR/flaky-401";
        return models_ok();
    }
    return chat_ok($req, 'flaky');
});

# slow: accepts, reads the request and never answers
$t->mock('slow', handler => sub {
    return { no_response => 1, no_response_timeout => 5 };
});

# bedrock: a connect check, no request expected
$t->mock('br', handler => plain('br'));

my ($crt, $key) = $t->cert('h.test');
$t->mock('tls', tls => [$crt, $key], handler => plain('tls'));

# rogue: https with a certificate the test CA did not issue
my ($rcrt, $rkey) = $t->rogue_cert('r.test');
$t->mock('rogue', tls => [$rcrt, $rkey], handler => plain('rogue'));

# tcool: its model list answers, its chat fails
$t->mock('tcool', handler => sub {
    my $req = shift;
    return models_ok() if $req->{method} eq 'GET';
    return { status => 503, headers => [$JSONH], body => '{}' };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 2;

events {
    accept_mutex off;
}

http {
    %%TEST_GLOBALS_HTTP%%

    # a cool-down longer than the test: only passing probes end it
    model_gateway_cooldown 60s;

    model_gateway_backend oai {
        type openai;
        url http://127.0.0.1:%%PORT_oai%%/v1;
        key_file %%DIR%%/oai.key;
        header OpenAI-Organization org-health;
        model m-oai;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend ant {
        type anthropic;
        url http://127.0.0.1:%%PORT_ant%%/v1;
        key_file %%DIR%%/ant.key;
        model m-ant;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend gem {
        type gemini;
        url http://127.0.0.1:%%PORT_gem%%/v1beta;
        key_file %%DIR%%/gem.key;
        model m-gem;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend az {
        type azure;
        url http://127.0.0.1:%%PORT_az%%/openai;
        key_file %%DIR%%/az.key;
        model m-az dep1;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend azv1 {
        type azure;
        url http://127.0.0.1:%%PORT_azv1%%/openai/v1;
        key_file %%DIR%%/az.key;
        model m-azv1;
        health_check interval=1s timeout=500ms path=/openai/v1/models?x=1;
    }

    model_gateway_backend br {
        type bedrock;
        url http://127.0.0.1:%%PORT_br%%;
        region us-east-1;
        key_file %%DIR%%/br.key;
        model m-br;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend tls {
        type openai;
        url https://h.test:%%PORT_tls%%/v1;
        connect 127.0.0.1:%%PORT_tls%%;
        ssl_trusted_certificate %%CA%%;
        key_file %%DIR%%/tls.key;
        model m-tls;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend nocheck {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_nocheck%%/v1;
        model m-nocheck;
    }

    model_gateway_backend flaky {
        type openai;
        url http://127.0.0.1:%%PORT_flaky%%/v1;
        key_file %%DIR%%/flaky.key;
        model pair;
        health_check interval=1s timeout=500ms fails=2 passes=2;
    }

    model_gateway_backend steady {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_steady%%/v1;
        model pair;
    }

    model_gateway_backend rogue {
        type openai;
        url https://r.test:%%PORT_rogue%%/v1;
        connect 127.0.0.1:%%PORT_rogue%%;
        ssl_trusted_certificate %%CA%%;
        key_file %%DIR%%/tls.key;
        model m-rogue;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend tcool {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_tcool%%/v1;
        model m-tcool;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend slow {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_slow%%/v1;
        model m-slow;
        health_check interval=1s timeout=300ms;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%% reuseport;
        server_name localhost;

        location /v1/ {
            model_gateway;
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

$t->run;

sub status_of {
    my $name = shift;
    my $r = $t->request(method => 'GET', path => '/status');
    my $j = eval { decode_json($r->{body}) } || {};
    my ($b) = grep { $_->{name} eq $name } @{$j->{backends} || []};
    return $b || {};
}

sub probes {
    my $name = shift;
    return [grep { $_->{method} eq 'GET' } @{$t->mock_requests($name)}];
}

sub metrics {
    my $r = $t->request(method => 'GET', path => '/metrics');
    return { map { /^(\S+) (\S+)$/ ? ($1 => $2) : () }
             grep { !/^#/ } split /\n/, $r->{body} };
}

###########################################################################
# what each provider's probe looks like

my $p = $t->wait_mock_requests('oai', 1, 5);
my ($g) = @{probes('oai')};
ok($g, 'openai: a probe arrived');
is($g->{method} . ' ' . $g->{path}, 'GET /v1/models', 'openai: GET /v1/models');
is($g->{headers}{authorization}, "Bearer $KEY{oai}",
   'openai: the backend key as Bearer');
is($g->{headers}{'openai-organization'}, 'org-health',
   'openai: the backend\'s fixed header');
is($g->{headers}{host}, '127.0.0.1:' . $t->port('oai'), 'openai: Host');
like($g->{headers}{connection} // '', qr/close/i, 'openai: Connection: close');
is($g->{body}, '', 'openai: no body');

$t->wait_mock_requests('ant', 1, 5);
($g) = @{probes('ant')};
is(($g->{method} // '') . ' ' . ($g->{path} // ''), 'GET /v1/models',
   'anthropic: GET /v1/models');
is($g->{headers}{'x-api-key'}, $KEY{ant}, 'anthropic: x-api-key');
is($g->{headers}{'anthropic-version'}, '2023-06-01',
   'anthropic: anthropic-version');
ok(!exists $g->{headers}{authorization}, 'anthropic: no Authorization');

$t->wait_mock_requests('gem', 1, 5);
($g) = @{probes('gem')};
is(($g->{method} // '') . ' ' . ($g->{path} // ''), 'GET /v1beta/models',
   'gemini: GET /v1beta/models');
is($g->{headers}{'x-goog-api-key'}, $KEY{gem}, 'gemini: x-goog-api-key');

$t->wait_mock_requests('az', 1, 5);
($g) = @{probes('az')};
is(($g->{method} // '') . ' ' . ($g->{path} // ''),
   'GET /openai/models?api-version=2024-10-21',
   'azure: GET /openai/models with the api-version');
is($g->{headers}{'api-key'}, $KEY{az}, 'azure: api-key');

$t->wait_mock_requests('azv1', 1, 5);
($g) = @{probes('azv1')};
is(($g->{method} // '') . ' ' . ($g->{path} // ''),
   'GET /openai/v1/models?x=1', 'path= replaces the default path');

$t->wait_mock_requests('tls', 1, 5);
($g) = @{probes('tls')};
is(($g->{method} // '') . ' ' . ($g->{path} // ''), 'GET /v1/models',
   'https: the probe arrived over TLS');
is($g->{sni}, 'h.test', 'https: with SNI of the URL\'s host');
is($g->{headers}{host}, 'h.test:' . $t->port('tls'), 'https: Host');
is(scalar(grep { $_->{event} eq 'tls_error' } @{$t->mock_events('tls')}), 0,
   'https: no handshake errors');

ok($t->wait_for(sub {
       (status_of('rogue')->{health_check}{state} // '') eq 'down' }, 5),
   'https: a certificate the CA did not issue fails the probe');
is(status_of('rogue')->{health_check}{last_error}, 'certificate not trusted',
   'https: the error says so');
is(scalar @{$t->mock_requests('rogue')}, 0,
   'https: nothing sent to an untrusted server');

# bedrock: connections accepted, and closed without a request
ok($t->wait_for(sub {
       grep { $_->{event} eq 'eof' } @{$t->mock_events('br')} }, 5),
   'bedrock: the connect check opened and closed a connection');
is(scalar @{$t->mock_requests('br')}, 0, 'bedrock: no request sent');
is(scalar(grep { $_->{event} eq 'eof' && $_->{requests} }
       @{$t->mock_events('br')}), 0, 'bedrock: no request on any connection');

ok($t->wait_for(sub { (status_of('br')->{health_check}{state} // '') eq 'up' },
                5), 'bedrock: up by its connect check');

###########################################################################
# one probe per interval, whatever the number of workers

{
    my $n0 = @{probes('oai')};
    my $t0 = time;
    sleep 6;
    my $n = @{probes('oai')} - $n0;
    my $secs = time - $t0;
    # two workers probing on their own would send about twice as many
    ok($n >= $secs - 3 && $n <= $secs + 2,
       "one probe per interval from two workers ($n in "
       . sprintf('%.1f', $secs) . ' s)');
}

my $st = status_of('oai');
is($st->{health_check}{checked}, JSON::PP::true, 'status: oai is checked');
is($st->{health_check}{state}, 'up', 'status: oai is up');
ok(defined $st->{health_check}{last_check_ms_ago}
   && $st->{health_check}{last_check_ms_ago} < 3000,
   'status: a recent check');
is($st->{health_check}{last_error}, undef, 'status: no error');
is($st->{health}, 'ok', 'status: the breaker\'s health is unchanged');

###########################################################################
# no health_check, no probe

is(scalar @{$t->mock_requests('nocheck')}, 0,
   'no health_check: the backend received nothing');
is($t->mock_connections('nocheck'), 0, 'no health_check: no connection');
$st = status_of('nocheck');
is($st->{health_check}{checked}, JSON::PP::false,
   'status: nocheck is not checked');
is($st->{health_check}{state}, 'unknown', 'status: its state is unknown');

###########################################################################
# a probe with no answer in time fails

ok($t->wait_for(sub { (status_of('slow')->{health_check}{state} // '') eq 'down' },
                5), 'timeout: a probe without an answer fails');
is(status_of('slow')->{health_check}{last_error}, 'timed out',
   'timeout: the error says so');
ok(@{$t->mock_requests('slow')} >= 1, 'timeout: the probe was sent');
ok(status_of('slow')->{cooldown_ms} > 0, 'timeout: the backend cools down');

###########################################################################
# a failing probe cools the backend down; traffic goes elsewhere

sub chat_to {
    my %n;
    for (1 .. shift) {
        my $r = $t->chat('pair');
        my ($b) = ($r->{headers}{'x-model-gateway-backend'} // '') =~ /^(\w+)/;
        $n{$r->{status} == 200 ? ($b // '?') : "status $r->{status}"}++;
    }
    return \%n;
}

my $before = chat_to(6);
ok($before->{flaky} && $before->{steady},
   'both backends take traffic while healthy');

$t->release('flaky-500');
ok($t->wait_for(sub { (status_of('flaky')->{health_check}{state} // '') eq 'down' },
                6), 'a 500 on /models: the backend is down after fails=2');
ok(scalar $t->grep_log(qr/backend "flaky" cools down for 60000 ms: health check failed \(HTTP 500\)/),
   'the cool-down is logged with its cause');
is(scalar $t->grep_log(qr/backend "flaky" cools down/), 1,
   'logged once, by one worker');

$st = status_of('flaky');
is($st->{health}, 'cooling_down', 'status: the breaker cools it down');
is($st->{health_check}{last_error}, 'HTTP 500', 'status: the last error');
ok($st->{health_check}{failed} >= 2, 'status: failed probes counted');

my $m = metrics();
is($m->{q{model_gateway_backend_health{backend="flaky"}}}, 0,
   'metrics: flaky is down');
is($m->{q{model_gateway_backend_health{backend="oai"}}}, 1,
   'metrics: oai is up');
ok($m->{q{model_gateway_health_checks_total{backend="flaky",result="fail"}}} >= 2,
   'metrics: failed probes');
ok(!exists $m->{q{model_gateway_backend_health{backend="nocheck"}}},
   'metrics: no health series without health_check');

my $chats = grep { $_->{method} eq 'POST' } @{$t->mock_requests('flaky')};
my $during = chat_to(8);
is_deeply($during, { steady => 8 }, 'while down, traffic goes to the other');
is(scalar(grep { $_->{method} eq 'POST' } @{$t->mock_requests('flaky')}),
   $chats, 'the failing backend\'s chat endpoint received nothing');

# a rejected credential fails too
unlink "$DIR/flaky-500";
$t->release('flaky-401');
ok($t->wait_for(sub {
       (status_of('flaky')->{health_check}{last_error} // '')
           eq 'HTTP 401: credential rejected' }, 5),
   'a 401 fails: credential rejected');
is(status_of('flaky')->{health_check}{state}, 'down', 'still down');

# recovery after passes=2
my $n0 = @{probes('flaky')};
unlink "$DIR/flaky-401";
ok($t->wait_for(sub { (status_of('flaky')->{health_check}{state} // '') eq 'up' },
                6), 'recovered: up again');
ok(@{probes('flaky')} - $n0 >= 2, 'after two passing probes');
ok(scalar $t->grep_log(qr/backend "flaky" passed its health check, in use again/),
   'the recovery is logged');
$st = status_of('flaky');
is($st->{health}, 'ok', 'the probe-made cool-down is lifted');
is($st->{cooldown_ms}, 0, 'no cool-down left');

my $after = chat_to(6);
ok($after->{flaky} && $after->{steady}, 'flaky takes traffic again');

###########################################################################
# a passing probe does not end a cool-down that traffic started: the
# breaker's trial does

for (1 .. 3) {
    my $r = $t->chat('m-tcool');
    isnt($r->{status}, 200, 'tcool: its chat fails');
}
$st = status_of('tcool');
is($st->{health}, 'cooling_down', 'tcool: cooled down by traffic');
my $np = @{probes('tcool')};
ok($t->wait_for(sub { @{probes('tcool')} >= $np + 2 }, 5),
   'tcool: probes go on while it cools down');
$st = status_of('tcool');
is($st->{health_check}{state}, 'up', 'tcool: its probes pass');
is($st->{health}, 'cooling_down', 'tcool: and it still cools down');

###########################################################################
# after a reload, the old workers stop probing: still one per interval

ok($t->reload(wait_old => 1), "reload (the old workers gone)");
{
    sleep 1;
    my $n0 = @{probes('oai')};
    my $t0 = time;
    sleep 4;
    my $n = @{probes('oai')} - $n0;
    my $secs = time - $t0;
    ok($n >= $secs - 3 && $n <= $secs + 2,
       "after a reload, one probe per interval ($n in "
       . sprintf('%.1f', $secs) . ' s)');
}
is(status_of('flaky')->{health_check}{state}, 'up',
   'the health state carries over a reload');

###########################################################################
# no key in the log

my $log = $t->error_log;
for my $k (sort keys %KEY) {
    unlike($log, qr/\Q$KEY{$k}\E/, "error.log: no $k key");
}
unlike($log, qr/SECRET/, 'error.log: nothing secret');

$t->stop;

###########################################################################
# nginx -t

my $base = <<'EOF';
%%TEST_GLOBALS%%
events {}
http {
    model_gateway_backend bad {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        model bad;
        health_check %%HC%%;
    }
}
EOF

for my $c (
    ['interval=50ms', qr/"interval=50ms" is out of range/],
    ['interval=2h', qr/"interval=2h" is out of range/],
    ['interval=1s timeout=1s', qr/timeout must be shorter than its interval/],
    ['interval=5s timeout=5ms', qr/"timeout=5ms" is out of range/],
    ['fails=0', qr/"fails=0" is out of range/],
    ['passes=101', qr/"passes=101" is out of range/],
    ['interval=abc', qr/invalid health_check parameter "interval=abc"/],
    ['path=models', qr/invalid health_check parameter "path=models"/],
    ['rise=2', qr/invalid health_check parameter "rise=2"/],
    ["interval=1s;\n        health_check", qr/"health_check" directive is duplicate/],
) {
    $t->write_conf($base, HC => $c->[0]);
    my ($rc, $out) = $t->nginx_t;
    (my $name = $c->[0]) =~ s/;?\s+/ /g;
    isnt($rc, 0, "nginx -t fails: health_check $name");
    like($out, qr/$c->[1].* in \S+nginx\.conf:\d+/,
         "nginx -t says why, with file:line ($name)") or diag $out;
}

$t->write_conf($base, HC => 'interval=2s path=/health');
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t passes a good health_check') or diag $out;
$t->write_conf($base, HC => 'interval=3s');
($rc, $out) = $t->nginx_t;
is($rc, 0, 'a short interval gets a shorter default timeout') or diag $out;

$t->done_testing;
