#!/usr/bin/perl

# A real Prometheus server (Debian's prometheus package, run here with its
# own port and data directory on 127.0.0.1, not the packaged service)
# scrapes the gateway's model_gateway_metrics every second while requests
# flow, and answers a rate() of them through its HTTP API: the text is
# what Prometheus itself takes, series by series.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json);
use Time::HiRes qw(time sleep);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

plan skip_all => 'prometheus not installed (Debian: prometheus)'
    unless system('command -v prometheus >/dev/null') == 0;

my $DIR = $t->dir;

$t->mock('up', handler => sub {
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion(model => 'm',
                         prompt_tokens => 20, completion_tokens => 5) };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_price m input=2 output=8;

    model_gateway_backend up {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_up%%/v1;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        location /v1/ { model_gateway; }
        location = /metrics { model_gateway_metrics; }
    }
}
EOF
$t->run;

my $PPORT = $t->port('prometheus');
my $GW = $t->port('gw');

MG::Test::_write_file("$DIR/prometheus.yml", <<"EOF");
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gateway
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:$GW']
EOF

mkdir "$DIR/tsdb";
$t->_spawn(cmd => ['prometheus', "--config.file=$DIR/prometheus.yml",
                   "--storage.tsdb.path=$DIR/tsdb",
                   "--web.listen-address=127.0.0.1:$PPORT",
                   '--log.level=warn'],
           out => "$DIR/prometheus.log");

sub query {
    my ($q) = @_;
    my $r = $t->request(method => 'GET', port => $PPORT,
                        path => '/api/v1/query?query=' . uri($q));
    return ($r->{status} // 0) == 200 ? eval { decode_json($r->{body}) }
                                       : undef;
}

sub uri {
    my $s = shift;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

ok($t->wait_for(sub {
       my $j = query('up{job="gateway"}');
       $j && @{$j->{data}{result} || []}
          && $j->{data}{result}[0]{value}[1] eq '1';
   }, 30), 'prometheus scrapes the gateway (up is 1)')
    or diag MG::Test::_read_file("$DIR/prometheus.log");

# requests while prometheus scrapes, for a few seconds
my $deadline = time + 4;
my $n = 0;
while (time < $deadline) {
    $n++ if $t->chat('m')->{status} == 200;
    sleep 0.1;
}
ok($n > 10, "$n requests sent");

my ($rate, $samples);
ok($t->wait_for(sub {
       my $j = query('rate(model_gateway_requests_total{model="m",'
                     . 'status_class="2xx",operation="chat"}[10s])');
       return 0 unless $j && $j->{status} eq 'success';
       my ($res) = @{$j->{data}{result} || []};
       $rate = $res ? $res->{value}[1] : 0;
       return $rate > 0;
   }, 15), 'rate() of the requests is positive') or diag explain $rate;

my $j = query('count_over_time(model_gateway_requests_total{model="m",'
              . 'status_class="2xx",operation="chat"}[1m])');
$samples = $j ? $j->{data}{result}[0]{value}[1] : 0;
ok($samples >= 2, "scraped at least twice ($samples samples)");

$j = query('sum(model_gateway_cost_usd_total)');
ok($j && $j->{data}{result}[0]{value}[1] > 0, 'the cost, a float, is read');

$j = query('histogram_quantile(0.5, sum by (le) (rate('
           . 'gen_ai_client_operation_duration_seconds_bucket[10s])))');
ok($j && $j->{status} eq 'success' && @{$j->{data}{result}},
   'a latency quantile from the duration histogram');

$t->done_testing;
