#!/usr/bin/perl

# SDK conformance of gateway-held Responses and Conversations: the
# official openai npm package (pinned in t/sdk/package-lock.json, run by
# t/sdk/memory.mjs) against "model_gateway_responses gateway" over each
# provider mock of t/lib/MG/Providers.pm (OpenAI chat, Azure OpenAI,
# Anthropic, Gemini, Bedrock), with a gateway key.  For every model: plain and streamed
# responses, previous_response_id and a fork, a function call answered in
# the next turn (plain and streamed), input items, a conversation (every
# call of the Conversations API and a response in it), delete, and the
# SDK's NotFoundError.  For every stream, the SDK's accumulated snapshot
# equals the response.completed object, and both equal GET
# /responses/{id}.  The mocks check the history they get in their own
# wire format.
#
# Needs node and t/sdk/node_modules (`make test` runs npm ci for it).

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP;
use MG::Test;
use MG::Providers;

my $top = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $sdk = "$top/t/sdk";

plan skip_all => "openai is not in t/sdk/node_modules (make sdk, or npm ci "
    . "--prefix t/sdk, installs the openai package)"
    unless -d "$sdk/node_modules/openai";

my $t = MG::Test->new;
$t->need_module;

my $dir = $t->dir;

delete $ENV{$_} for grep { /^OPENAI_/ } keys %ENV;

my ($rc, $out) = MG::Test::_capture(
    [$^X, "$top/bin/mg-key", '--tenant', 'sdk', '--id', 'sdk-memory']);
die "mg-key: $out" if $rc;
my ($KEY, $line) = split /\n/, $out;
open my $fh, '>', "$dir/keys.txt" or die;
print {$fh} "$line\n";
close $fh;

my $RPORT = $t->redis;
my $BACKENDS = MG::Providers::start($t);

$t->write_conf(<<"EOF", RPORT => $RPORT);
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_redis 127.0.0.1:%%RPORT%%;

$BACKENDS

    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
            model_gateway_responses gateway;
            model_gateway_key_file $dir/keys.txt;
        }
    }
}
EOF

$t->run;
ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is up/) }, 10),
   'connected to redis');

my $BASE = 'http://127.0.0.1:' . $t->port('gw') . '/v1';

for my $m (qw(m-oa m-az m-ant m-gem m-bed)) {
    my ($mock) = $m =~ /^m-(\w+)$/;
    my ($rc, $out) = MG::Test::_capture(['node', "$sdk/memory.mjs", $BASE,
                                         $KEY, $m]);
    my ($last) = grep { /^\{/ } reverse split /\n/, $out;
    my $r = defined $last ? eval { JSON::PP::decode_json($last) } : undef;
    ok(!$rc && $r && $r->{result}, "$m: the SDK ran every call")
        or diag("memory.mjs $m: exit $rc\n$out");
    $r = $r && $r->{result} ? $r->{result} : {};

    like($r->{first}{id} // '', qr/^resp_mgw_/, "$m: a gateway id");
    like($r->{first}{text} // '', qr/^$mock-reply-\d+$/,
         "$m: output_text is the backend's");
    is($r->{first}{status}, 'completed', "$m: completed");
    is($r->{first}{instructions}, 'Be brief.', "$m: instructions");
    ok(($r->{first}{usage}{output_tokens} // 0) > 0, "$m: usage");

    is($r->{second}{previous}, $r->{first}{id}, "$m: previous_response_id");
    is($r->{second}{instructions}, undef, "$m: instructions not carried");
    like($r->{fork}{text} // '', qr/^$mock-reply-/, "$m: a fork answered");

    my @types = @{$r->{stream}{types} || []};
    is_deeply([@types[0, 1]], ['response.created', 'response.in_progress'],
              "$m stream: created, in_progress first");
    is($types[-1], 'response.completed', "$m stream: completed last");
    is_deeply($r->{stream}{seqs}, [0 .. $#types],
              "$m stream: sequence_number 0, 1, 2, ...");
    like($r->{stream}{deltas} // '', qr/^$mock-reply-\d+$/,
       "$m stream: the deltas are the backend's text");
    ok($r->{stream}{snapshot_is_completed},
       "$m stream: the events add up to response.completed, the SDK's "
       . "final response too");
    ok($r->{stream}{completed_is_stored},
       "$m stream: response.completed equals GET /responses/{id}");

    is($r->{tools}{name}, 'get_weather', "$m tools: the call");
    is_deeply(eval { decode_json($r->{tools}{arguments} // '') },
              { city => 'Paris' }, "$m tools: its arguments");
    like($r->{tools}{answer} // '', qr/^$mock-reply-/,
         "$m tools: the output answered");
    is($r->{stream_tools}{arguments}, '{"city":"Paris"}',
       "$m streamed call: arguments done");
    is($r->{stream_tools}{item}, 'function_call',
       "$m streamed call: the item");
    ok($r->{stream_tools}{stored_equal}, "$m streamed call: stored equal");

    is_deeply($r->{input_items}[0] && [@{$r->{input_items}[0]}{qw(type role
              text)}], ['message', 'user', 'and then?'], "$m input items");
    like($r->{input_items}[0]{id} // '', qr/^msg_mgw_/, "$m input item id");

    my $c = $r->{conversation} || {};
    like($c->{id} // '', qr/^conv_mgw_/, "$m conversation: created");
    ok($c->{retrieved_equal}, "$m conversation: retrieved as created");
    is_deeply($c->{metadata}, { topic => 'sdk2' }, "$m conversation: update");
    is($c->{added}, 1, "$m conversation: an item added");
    is_deeply($c->{response_conversation}, { id => $c->{id} },
              "$m conversation: the response names it");
    is_deeply([@{$c->{items} || []}[0 .. 2]],
              ['Hi there', 'Second', 'in the conversation'],
              "$m conversation: its items, oldest first");
    is($c->{items}[3], $c->{response_text},
       "$m conversation: then the answer");
    is($c->{retrieved_item}, 'Second', "$m conversation: an item retrieved");
    is($c->{delete_item_returns}, $c->{id},
       "$m conversation: deleting an item returns the conversation");
    is($c->{left}, 3, "$m conversation: 3 items left");
    ok($c->{deleted}, "$m conversation: deleted");

    is_deeply($r->{not_found}, { class => 'NotFoundError', status => 404,
                                 code => 'response_not_found' },
              "$m: NotFoundError for an unknown id");
    is($r->{deleted_found}, 404, "$m: a deleted response is gone");

    my $h = MG::Providers::seen($t, $mock);
    ok($h && grep({ $_->[1] eq 'in the conversation' } @$h),
       "$m: the mock got the conversation's turn in its own format");
}

$t->done_testing;
