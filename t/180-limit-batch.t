#!/usr/bin/perl

# Leased limits (README "Limits", model_gateway_limit_batch), on two nginx
# nodes that share one Redis:
#   - a node admits a key's next requests from its lease, without a round
#     trip: N requests cost about N / batch LIMIT scripts (counted with
#     INFO commandstats; node A settles only every 10 s, so every EVALSHA
#     it sends is a LIMIT);
#   - the fleet never admits more than the limit (two nodes, requests
#     alternating), and refuses early at most the documented bound:
#     (batch - 1) requests per counter and node;
#   - what a lease leaves unused goes back to Redis when the lease time
#     passes: a budget's counter then holds the real usage, to the token;
#   - leased admissions carry the x-ratelimit headers;
#   - nginx -t checks the directives' bounds.

use strict;
use warnings;

use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP qw(decode_json);
use Time::HiRes qw(time sleep);
use MG::Test;

my $t = MG::Test->new;          # node A: settles every 10 s
$t->need_module;
my $tb = MG::Test->new;         # node B: settles every 100 ms

my $DIR = $t->dir;

# the usage of every answer: 5 prompt and 3 completion tokens
$t->mock('a', handler => sub {
    my $req = shift;
    return { status => 200,
             headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion(model => 'm',
                        prompt_tokens => 5, completion_tokens => 3) };
});

MG::Test::_write_file("$DIR/key-a", "sk-test-key-of-a\n");
chmod 0644, "$DIR/key-a";

my %KEYS = (
    hot  => ['th', 'rpm=1000000'],
    r40  => ['tr', 'rpm=40'],
    bud  => ['tb', 'budget=1000000'],
);
my (%K, @lines);
for my $n (sort keys %KEYS) {
    $K{$n} = "mgk_test_batch_$n" . ('x' x 20);
    push @lines, join(' ', "id-$n", $KEYS{$n}[0],
                      'sha256:' . sha256_hex($K{$n}), $KEYS{$n}[1]);
}
MG::Test::_write_file("$DIR/keys", join("\n", @lines) . "\n");

my $RPORT = $t->redis;

sub node_conf {
    my ($node, $settle) = @_;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_connect_timeout 500ms;
    model_gateway_admin_sync 60s;
    model_gateway_limit_default_max_tokens 100;
    model_gateway_limit_batch 10;
    model_gateway_limit_lease 500ms;
    model_gateway_limit_settle_interval %%SETTLE%%;

    model_gateway_backend a {
        type openai;
        url http://127.0.0.1:%%PA%%/v1;
        key_file %%KDIR%%/key-a;
        model m;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        location /v1/ {
            model_gateway;
            model_gateway_key_file %%KDIR%%/keys;
        }
    }
}
EOF
        RPORT => $RPORT, PA => $t->port('a'), KDIR => $DIR,
        SETTLE => $settle);
    $node->run;
}

node_conf($t, '10s');
node_conf($tb, '100ms');

for my $n ($t, $tb) {
    ok($n->wait_for(sub { $n->grep_log(qr/redis \S+ is up/) >= 2 }, 10),
       'connected to redis');
}

sub call {
    my ($node, $key) = @_;
    return $node->chat('m', headers => [['Authorization', "Bearer $K{$key}"]]);
}

sub evalsha {
    my $info = $t->redis_cmd('INFO', 'commandstats');
    return $info =~ /cmdstat_evalsha:calls=(\d+)/ ? $1 : 0;
}

###########################################################################
# round trips

{
    call($t, 'hot');            # the scripts are loaded
    sleep 0.6;                  # and that lease is over
    my $e0 = evalsha();
    my $ok = 0;
    for (1 .. 50) {
        my $r = call($t, 'hot');
        $ok++ if $r->{status} == 200;
        if ($_ == 1) {
            ok(defined $r->{headers}{'x-ratelimit-remaining-requests'},
               'the first answer has its headers');
        }
        if ($_ == 2) {
            ok(defined $r->{headers}{'x-ratelimit-remaining-requests'},
               'so does one admitted from the lease');
            ok($r->{headers}{'x-ratelimit-remaining-requests'} <= 1000000,
               'within the limit');
        }
    }
    is($ok, 50, '50 requests admitted');
    my $trips = evalsha() - $e0;
    ok($trips >= 5 && $trips <= 8,
       "about one LIMIT per 10 requests: $trips for 50");
    diag("50 requests: $trips LIMIT scripts");
}

###########################################################################
# the fleet never admits more than the limit

{
    my ($ok, $refused, $n) = (0, 0, 0);
    my $t0 = time;
    for my $i (1 .. 120) {
        my $r = call($i % 2 ? $t : $tb, 'r40');
        $n++;
        if ($r->{status} == 200) {
            $ok++;
        } elsif ($r->{status} == 429) {
            $refused++;
        }
    }
    my $secs = time - $t0;

    # GCRA refills 40 a minute: what the test's own time adds
    my $refill = int($secs * 40 / 60) + 1;
    ok($ok <= 40 + $refill,
       "never more than the limit: $ok admitted of $n in "
       . sprintf('%.1f s', $secs) . " (limit 40, refill $refill)");
    ok($ok >= 40 - 2 * 9,
       "refused early at most 2 nodes x 9 requests: $ok admitted");
    is($ok + $refused, $n, 'the rest refused with 429');
}

###########################################################################
# unused leases go back

{
    my $key = 'mg:{tb}:rl:key:id-bud:budget';
    my $ok = 0;
    for (1 .. 5) {
        $ok++ if call($tb, 'bud')->{status} == 200;
    }
    is($ok, 5, 'five budget requests on node B');
    my $during = $t->redis_cmd('GET', $key) // 0;
    ok($during > 5 * 8, "while the lease runs, Redis holds it too ($during)");
    ok($tb->wait_for(sub { ($t->redis_cmd('GET', $key) // 0) == 40 }, 5),
       'once it ends, the budget holds the real usage: 5 x 8 tokens')
        or diag('budget counter: ' . ($t->redis_cmd('GET', $key) // 'nil'));
}

###########################################################################
# nginx -t

{
    my $tn = MG::Test->new;
    for my $bad (['model_gateway_limit_batch 0;', 'batch 0'],
                 ['model_gateway_limit_batch 1001;', 'batch 1001'],
                 ['model_gateway_limit_lease 5ms;', 'lease 5ms']) {
        $tn->write_conf(<<"EOF");
%%TEST_GLOBALS%%
events {
}
http {
    %%TEST_GLOBALS_HTTP%%
    $bad->[0]
    server {
        listen 127.0.0.1:%%PORT_gw%%;
    }
}
EOF
        my ($rc, $out) = $tn->nginx_t;
        isnt($rc, 0, "$bad->[1]: nginx -t fails");
    }
}

$tb->stop;
$t->done_testing;
