#!/usr/bin/perl

# Metrics (README "Metrics"): model_gateway_metrics serves the Prometheus
# text of every worker's counters, from the shared zone.  After a known
# mix of traffic (answers, a failover, a stream, embeddings, refusals,
# sessions, gateway-held turns) the counters say exactly what happened:
# requests by backend, model, operation and status class, attempts and
# failovers, tokens (cached input included) and their cost at the
# configured prices, duration and time-to-first-token histograms, session
# outcomes, stored-state operations and each worker's Redis connection.
# promtool (Debian's prometheus package) checks the text.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $DIR = $t->dir;
my $J = JSON::PP->new->utf8->canonical;

sub usage_completion {
    my ($model, %o) = @_;
    return $J->encode({ id => 'chatcmpl-m', object => 'chat.completion',
        created => 1700000000, model => $model,
        choices => [{ index => 0, finish_reason => 'stop',
                      message => { role => 'assistant', content => 'ok' } }],
        usage => { prompt_tokens => 1000, completion_tokens => 200,
                   total_tokens => 1200,
                   prompt_tokens_details => { cached_tokens => 400 } } });
}

$t->mock('a', handler => sub {
    my $r = shift;
    my $b = eval { decode_json($r->{body}) } // {};
    if ($r->{path} eq '/v1/embeddings') {
        return { status => 200, headers => [['Content-Type', 'application/json']],
                 body => $J->encode({ object => 'list', model => 'e',
                     data => [{ object => 'embedding', index => 0,
                                embedding => [0.5] }],
                     usage => { prompt_tokens => 7, total_tokens => 7 } }) };
    }
    if ($b->{stream}) {
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => [MG::Test::openai_stream_events(usage => 1,
                     prompt_tokens => 10, completion_tokens => 2)] };
    }
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => usage_completion($b->{model}) };
});
# hc: a health-checked backend whose model list answers; hcdown's does not
$t->mock('hc', handler => sub {
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => '{"object":"list","data":[]}' };
});
$t->mock('hcdown', handler => sub {
    return { status => 500, headers => [['Content-Type', 'application/json']],
             body => '{}' };
});
$t->mock('down', handler => sub {
    return { status => 503, headers => [['Content-Type', 'application/json']],
             body => '{"error":{"message":"down"}}' };
});

my $RPORT = $t->redis;

# three tenants' keys; the table holds two
my %KEY;
for my $n (1 .. 3) {
    my ($rc, $out) = MG::Test::_capture([$^X, "$ENV{PWD}/bin/mg-key",
        '--tenant', "t$n", '--id', "k$n"]);
    die "mg-key: $out" if $rc;
    my ($key, $line) = split /\n/, $out;
    $KEY{$n} = $key;
    open my $fh, '>>', "$DIR/keys" or die;
    print {$fh} "$line\n";
    close $fh;
}

$t->write_conf(<<'EOF', RPORT => $RPORT);
%%TEST_GLOBALS%%
worker_processes 2;
events {}
http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_max_fails 0;

    model_gateway_price m input=3 output=15 cached=0.3;
    model_gateway_metrics_tenants 2;

    model_gateway_backend down {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_down%%/v1;
        model m;
        priority 0;
    }

    model_gateway_backend a {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_a%%/v1;
        model m;
        model e api=embeddings;
        priority 1;
    }

    model_gateway_backend hc {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_hc%%/v1;
        model hcm;
        health_check interval=1s timeout=500ms;
    }

    model_gateway_backend hcdown {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_hcdown%%/v1;
        model hcm;
        health_check interval=1s timeout=500ms;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
            model_gateway_session $http_x_session_id;
            model_gateway_responses gateway;
        }

        location /keyed/ {
            model_gateway;
            model_gateway_key_file %%DIR%%/keys;
        }

        location = /metrics {
            model_gateway_metrics;
        }

        location = /status {
            model_gateway_status;
        }
    }
}
EOF
$t->run;
ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is up/) >= 2 }, 10),
   'both workers connected to redis');

sub metrics {
    my $r = $t->request(method => 'GET', path => '/metrics');
    return ($r, { map { /^(\S+) (\S+)$/ ? ($1 => $2) : () }
                  grep { !/^#/ } split /\n/, $r->{body} });
}

my ($r0, $m0) = metrics();
is($r0->{status}, 200, 'metrics: 200');
like($r0->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'the Prometheus text format');

# three chat requests: each tries "down" first (503), then answers from "a"
for (1 .. 3) {
    my $r = $t->chat('m');
    is($r->{status}, 200, "chat $_: 200 after a failover");
}

# a stream, embeddings, a refusal, sessions
my $s = $t->chat_stream('m', body => { stream_options => { include_usage =>
                                           JSON::PP::true } });
like($s->rest(5), qr/\[DONE\]/, 'a stream');

# a request is counted when nginx logs it: after its lingering close
$s->close;
my $e = $t->request(method => 'POST', path => '/v1/embeddings',
                    json => { model => 'e', input => 'x' });
is($e->{status}, 200, 'embeddings');
is($t->chat('nope')->{status}, 404, 'an unknown model: refused');
is($t->chat('m', headers => [['X-Session-Id', 's1']])->{status}, 200,
   'a new session');
is($t->chat('m', headers => [['X-Session-Id', 's1']])->{status}, 200,
   'a session hit');

# a gateway-held turn and its follow-up
my $g1 = $t->request(method => 'POST', path => '/v1/responses',
                     json => { model => 'm', input => 'hi' });
is($g1->{status}, 200, 'a gateway-held turn');
my $g2 = $t->request(method => 'POST', path => '/v1/responses',
                     json => { model => 'm', input => 'more',
                               previous_response_id => $g1->{json}{id} });
is($g2->{status}, 200, 'its follow-up');
is($t->request(method => 'POST', path => '/v1/responses',
               json => { model => 'm', input => 'x',
                         previous_response_id => 'resp_mgw_' . ('0' x 32) }
              )->{status}, 404, 'an unknown chain');

# tenants: t1 twice, t2 once, t3 (no room left) once, one bad key
for my $n (1, 1, 2, 3) {
    is($t->chat('m', path => '/keyed/chat/completions',
                headers => [['Authorization', "Bearer $KEY{$n}"]])->{status},
       200, "tenant t$n: 200");
}
is($t->chat('m', path => '/keyed/chat/completions',
            headers => [['Authorization', 'Bearer mgk_nope']])->{status},
   401, 'a bad key: 401');

my ($r, $m);
$t->wait_for(sub {
    ($r, $m) = metrics();
    ($m->{q{model_gateway_requests_total{model="m",backend="a",operation="chat",status_class="2xx"}}} // 0) >= 12
        # the last refusal is counted when nginx logs it, maybe a moment
        # after its answer left
        && ($m->{q{model_gateway_refused_total{status_class="4xx"}}} // 0)
           >= 3
}, 5);
diag $r->{body} if $ENV{MG_DUMP};
my $pair = 'model="m",backend="a"';
my $chat = 'gen_ai_operation_name="chat",gen_ai_system="openai",'
         . 'gen_ai_request_model="m",backend="a"';

is($m->{qq{model_gateway_requests_total{$pair,operation="chat",status_class="2xx"}}},
   12, 'requests: 3 chats, a stream, 2 in sessions, 2 gateway-held turns, '
   . '4 of tenants');
is($m->{q{model_gateway_tenant_requests_total{tenant="t1",key="k1",status_class="2xx"}}},
   2, 'tenant t1: 2 requests');
is($m->{q{model_gateway_tenant_tokens_total{tenant="t1",key="k1",type="input"}}},
   2000, 'tenant t1: its input tokens');
is($m->{q{model_gateway_tenant_cost_usd_total{tenant="t1",key="k1"}}},
   '0.009840', 'tenant t1: its cost');
is($m->{q{model_gateway_tenant_requests_total{tenant="t2",key="k2",status_class="2xx"}}},
   1, 'tenant t2: 1 request');
is($m->{q{model_gateway_tenant_requests_total{tenant="_other",key="_other",status_class="2xx"}}},
   1, 'tenant t3: no room, counted as _other');
ok(!(grep { /tenant="t3"/ } keys %$m), 'tenant t3: no series of its own');
is($m->{qq{model_gateway_requests_total{model="e",backend="a",operation="embeddings",status_class="2xx"}}},
   1, 'requests: the embeddings');
# "down" comes first (priority) but for the session hit (pinned to "a")
# and the chain's second turn (it prefers the backend of its first)
is($m->{qq{model_gateway_attempts_total{model="m",backend="down",result="failed"}}},
   10, 'attempts: "down" failed whenever it was tried');
is($m->{qq{model_gateway_attempts_total{$pair,result="answered"}}}, 12,
   'attempts: "a" answered');
is($m->{qq{model_gateway_failovers_total{$pair}}}, 10,
   'failovers: the answers that came after a failure');
# 11 plain answers of 1000/200/400 cached, a stream of 10/2, embeddings of 7
is($m->{qq{model_gateway_tokens_total{$pair,type="input"}}}, 11 * 1000 + 10,
   'tokens: input');
is($m->{qq{model_gateway_tokens_total{$pair,type="output"}}}, 11 * 200 + 2,
   'tokens: output');
is($m->{qq{model_gateway_tokens_total{$pair,type="cached_input"}}}, 11 * 400,
   'tokens: cached input');
is($m->{qq{model_gateway_tokens_total{model="e",backend="a",type="input"}}},
   7, 'tokens: embeddings input');
# per answer: 600 * 3 + 200 * 15 + 400 * 0.3 = 4920 micro-USD (11 of
# them); the stream: 10 * 3 + 2 * 15 = 60
is($m->{qq{model_gateway_cost_usd_total{$pair}}}, '0.054180',
   'cost: at the configured prices');
ok(!exists $m->{qq{model_gateway_cost_usd_total{model="e",backend="a"}}},
   'cost: no series for a model without a price');
is($m->{qq{gen_ai_client_operation_duration_seconds_count{$chat}}}, 12,
   'duration: a count per answer');
is($m->{qq{gen_ai_client_operation_duration_seconds_bucket{$chat,le="+Inf"}}},
   12, 'duration: +Inf holds them all');
is($m->{qq{gen_ai_server_time_to_first_token_seconds_count{$chat}}}, 12,
   'time to first token: a count per answer');
is($m->{qq{gen_ai_client_token_usage_sum{$chat,gen_ai_token_type="input"}}},
   11010, 'token usage histogram: input sum');
is($m->{qq{gen_ai_client_token_usage_bucket{$chat,gen_ai_token_type="output",le="256"}}},
   12, 'token usage histogram: every output under 256');
is($m->{qq{gen_ai_client_token_usage_bucket{$chat,gen_ai_token_type="output",le="64"}}},
   1, 'token usage histogram: one (the stream) under 64');
is($m->{q{model_gateway_refused_total{status_class="4xx"}}}, 3,
   'refused: the unknown model, the unknown chain and the bad key');
is($m->{q{model_gateway_sessions_total{result="rebound"}}}, 1,
   'sessions: the first pinned to "down", rebound to "a"');
is($m->{q{model_gateway_sessions_total{result="hit"}}}, 1, 'sessions: hit');
is($m->{q{model_gateway_state_total{op="write"}}}, 2,
   'state: two turns written');
is($m->{q{model_gateway_state_total{op="read"}}}, 1, 'state: a chain read');
is($m->{q{model_gateway_state_total{op="miss"}}}, 1, 'state: a miss');
is($m->{q{model_gateway_backend_in_flight{backend="a"}}}, 0,
   'in flight: none now');
is($m->{q{model_gateway_backend_weight{backend="a"}}}, 1,
   'weight: the configured one');
is($m->{q{model_gateway_backend_drained{backend="a"}}}, 0, 'not drained');
my @up = grep { /^model_gateway_redis_up\{worker="\d+"\}$/ } keys %$m;
is(scalar @up, 2, 'redis: a series per worker');
is(join(',', map { $m->{$_} } @up), '1,1', 'redis: both up');
my $cmds = 0;
$cmds += $m->{$_} for grep { /^model_gateway_redis_commands_total/ } keys %$m;
ok($cmds >= 6, "redis: commands counted ($cmds)");

# active health checks: series of the checked backends only
ok($t->wait_for(sub {
       my $r = $t->request(method => 'GET', path => '/metrics');
       $r->{body} =~ /^model_gateway_backend_health\{backend="hc"\} 1$/m
       && $r->{body} =~ /^model_gateway_backend_health\{backend="hcdown"\} 0$/m
   }, 5), 'health: hc up (1), hcdown down (0)');
($r, $m) = metrics();
ok($m->{q{model_gateway_health_checks_total{backend="hc",result="pass"}}} >= 1,
   'health: hc\'s passed probes');
is($m->{q{model_gateway_health_checks_total{backend="hc",result="fail"}}}, 0,
   'health: hc failed none');
ok($m->{q{model_gateway_health_checks_total{backend="hcdown",result="fail"}}} >= 1,
   'health: hcdown\'s failed probes');
ok(!exists $m->{q{model_gateway_backend_health{backend="a"}}},
   'health: no series of a backend without health_check');

# the status page
my $st = $t->request(method => 'GET', path => '/status');
is($st->{status}, 200, 'status: 200');
my $sj = eval { decode_json($st->{body}) } || {};
my ($down) = grep { $_->{name} eq 'down' } @{$sj->{backends} || []};
my ($aa) = grep { $_->{name} eq 'a' } @{$sj->{backends} || []};
is($down->{health}, 'ok', 'status: "down" is in use (max_fails 0)');
is($aa->{type}, 'openai_compatible', 'status: a backend\'s type');
like($aa->{url}, qr{^http://127\.0\.0\.1:\d+/v1$}, 'status: its URL');
is_deeply([map { $_->{model} } @{$aa->{models}}], ['m', 'e'],
          'status: its models');
is($aa->{weight}, 1, 'status: its weight');
is($aa->{in_flight}, 0, 'status: nothing in flight');
is(scalar @{$sj->{redis}{workers} || []}, 2, 'status: two workers');
ok(!(grep { !$_->{up} } @{$sj->{redis}{workers}}), 'status: Redis up');

# every series conf/grafana-dashboard.json queries is in the text
{
    my $dash = decode_json(MG::Test::_read_file("$ENV{PWD}/conf/grafana-dashboard.json"));
    my %want;
    for my $p (@{$dash->{panels}}) {
        for my $q (@{$p->{targets} || []}) {
            # series names, not the labels of a "by (...)"
            (my $e = $q->{expr}) =~ s/\bby \([^)]*\)//g;
            $want{$1} = 1 while $e =~ /\b((?:model_gateway|gen_ai)_\w+)/g;
        }
    }
    my %have = map { /^(\w+)[{ ]/ ? ($1 => 1) : () } split /\n/, $r->{body};
    my @missing = grep { !$have{$_} } sort keys %want;
    ok(keys %want >= 12, scalar(keys %want) . ' series in the dashboard');
    is_deeply(\@missing, [], 'the dashboard queries only series the gateway serves');
}

# the text passes promtool
SKIP: {
    skip 'promtool not installed (Debian: prometheus)', 2
        unless system('command -v promtool >/dev/null') == 0;
    MG::Test::_write_file("$DIR/metrics.txt", $r->{body});
    my ($rc, $out) = MG::Test::_capture(['sh', '-c',
        "promtool check metrics < $DIR/metrics.txt"]);
    is($rc, 0, 'promtool check metrics passes') or diag $out;
    unlike($out, qr/\S/, 'promtool has nothing to say') or diag $out;
}

$t->done_testing;
