#!/usr/bin/perl

# Gateway-held Responses (README "Gateway-held Responses"): the OpenAI
# Responses API in "model_gateway_responses gateway" mode, the gateway
# storing each turn's items in Redis and sending every turn as a chat
# request to whichever chat backend serves the model.
#
# The five provider mocks (t/lib/MG/Providers.pm: OpenAI chat, Azure
# OpenAI, Anthropic, Gemini, Bedrock) check what they receive in their own wire format,
# refuse what breaks the provider's rules, and record the history they got
# in one shape, so the test compares it across providers.
#
#   - a first turn, its follow-up on another provider with the whole
#     history (instructions not carried over), a fork, GET / DELETE /
#     input_items, unknown and foreign ids (another tenant: 404);
#   - tools across providers (the call in one cloud, its output answered
#     in another), streams from each provider with strictly increasing
#     sequence_number, response.completed = GET /responses/{id};
#   - a chain prefers its last backend, and moves with its whole history
#     when that one fails (cross-cloud); a second node reads the chain;
#   - store: false stores nothing; limits (items, bytes; truncation auto
#     drops whole turns); what gateway mode cannot serve is a 400 naming
#     the parameter; Redis down is a 503 before any backend is called;
#     items lost from Redis are a 500 history_missing, never a shorter
#     history; a write that fails leaves the answer whole.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json encode_json);
use Time::HiRes qw(time sleep);
use MG::Test;
use MG::Providers;

my $t = MG::Test->new;
$t->need_module;
my $t2 = MG::Test->new;         # a second node on the same Redis

my $DIR = $t->dir;
my $J = JSON::PP->new->utf8->canonical;

sub write_file {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print {$fh} $s;
    close $fh;
}

# two gateway keys of two tenants
my %GWKEY;
for my $tenant (qw(acme globex)) {
    my ($rc, $out) = MG::Test::_capture(
        [$^X, "$ENV{PWD}/bin/mg-key", '--tenant', $tenant, '--id',
         "$tenant-1"]);
    die "mg-key: $out" if $rc;
    my ($key, $line) = split /\n/, $out;
    $GWKEY{$tenant} = $key;
    open my $fh, '>>', "$DIR/keys.txt" or die;
    print {$fh} "$line\n";
    close $fh;
}

###########################################################################
# nginx

my $RPORT = $t->redis;
my $BACKENDS = MG::Providers::start($t);

my $CONF = <<'EOF';
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_redis_timeout 1s;

%%BACKENDS%%
    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
            model_gateway_responses gateway;
            model_gateway_backend_header on;
        }

        location /native/ {
            model_gateway;
            model_gateway_responses native;
            model_gateway_responses gateway m-ant;
        }

        location /small/ {
            model_gateway;
            model_gateway_responses gateway;
            model_gateway_history_max_items 4;
            model_gateway_history_max_bytes 4k;
        }

        location /bytes/ {
            model_gateway;
            model_gateway_responses gateway;
            model_gateway_history_max_items 100;
            model_gateway_history_max_bytes 4k;
        }

        location /keyed/ {
            model_gateway;
            model_gateway_responses gateway;
            model_gateway_key_file %%DIR%%/keys.txt;
        }
    }
}
EOF

$CONF =~ s/%%DIR%%/$DIR/g;    # node 2 reads node 1's key files
$CONF =~ s/%%BACKENDS%%/$BACKENDS/;
$t->write_conf($CONF, RPORT => $RPORT);
$t->run;
$t2->{ports}{$_} = $t->port($_) for qw(oa ant gem bed);
$t2->write_conf($CONF, RPORT => $RPORT);
$t2->run;

ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is up/) >= 1 }, 10),
   'connected to redis');
ok($t2->wait_for(sub { $t2->grep_log(qr/redis \S+ is up/) >= 1 }, 10),
   'node 2 connected to redis');

###########################################################################
# helpers

sub create {
    my ($body, %o) = @_;
    return ($o{node} // $t)->request(method => 'POST',
        path => ($o{prefix} // '/v1') . '/responses', json => $body,
        headers => $o{headers} // []);
}

# the last request a mock recorded, as [role, text] entries
sub last_seen { MG::Providers::seen($t, $_[0]) }

sub texts_of_output {
    my $resp = shift;
    return join '|', map {
        $_->{type} eq 'message'
            ? join('', map { $_->{text} // '' } @{$_->{content}})
            : "$_->{type}:" . ($_->{name} // '')
    } @{$resp->{output} || []};
}

sub rkeys { my $p = shift // '*'; return [sort @{$t->redis_cmd('KEYS', $p)}] }

sub stream_events {
    my ($body, %o) = @_;
    my $s = ($o{node} // $t)->stream(method => 'POST',
        path => ($o{prefix} // '/v1') . '/responses',
        json => { %$body, stream => JSON::PP::true });
    my $raw = $s->rest(10);
    my @ev;
    for my $blk (split /\n\n/, $raw) {
        my ($name) = $blk =~ /^event: (.+)$/m;
        my ($data) = $blk =~ /^data: (.+)$/m;
        next unless defined $data;
        push @ev, { name => $name, data => decode_json($data) };
    }
    return ($s, \@ev, $raw);
}

###########################################################################
# a chain across providers

my $r1 = create({ model => 'm-oa', instructions => 'Be brief.',
                  input => 'hello' });
is($r1->{status}, 200, 'first turn: 200') or diag $r1->{body};
my $R1 = $r1->{json};
like($R1->{id}, qr/^resp_mgw_[0-9a-f]{32}$/, 'first turn: a gateway id');
is($R1->{object}, 'response', 'first turn: a response object');
is($R1->{status}, 'completed', 'first turn: completed');
is($R1->{instructions}, 'Be brief.', 'first turn: instructions echoed');
is($R1->{model}, 'm-oa', 'first turn: the client model');
is(texts_of_output($R1), 'oa-reply-' . $t->mock_requests('oa')->[-1]{n},
   'first turn: the backend text');
like($R1->{output}[0]{id}, qr/^msg_mgw_[0-9a-f]{24}$/,
     'first turn: a gateway item id');
is_deeply([@{$R1->{usage}}{qw(input_tokens output_tokens total_tokens)}],
          [11, 4, 15], 'first turn: usage from the chat usage');
is_deeply(last_seen('oa'), [['system', 'Be brief.'], ['user', 'hello']],
          'first turn: oa got the instructions and the input');
like($r1->{headers}{'x-model-gateway-backend'}, qr/^oa;/,
     'first turn: served by oa');

my $r2 = create({ model => 'm-ant', previous_response_id => $R1->{id},
                  input => 'and now?' });
is($r2->{status}, 200, 'follow-up on Anthropic: 200') or diag $r2->{body};
my $R2 = $r2->{json};
is($R2->{previous_response_id}, $R1->{id}, 'follow-up: previous id echoed');
is($R2->{instructions}, undef, 'follow-up: instructions not carried over');
is_deeply(last_seen('ant'), [['user', 'hello'],
          ['assistant', texts_of_output($R1)], ['user', 'and now?']],
          'follow-up: ant got the history in Messages form, no system');
is_deeply([@{$R2->{usage}}{qw(input_tokens output_tokens)}], [21, 6],
          'follow-up: Anthropic usage');

my $r3 = create({ model => 'm-gem', previous_response_id => $R2->{id},
                  instructions => 'Be kind.', input => 'third' });
is($r3->{status}, 200, 'third turn on Gemini: 200') or diag $r3->{body};
is_deeply(last_seen('gem'), [['system', 'Be kind.'], ['user', 'hello'],
          ['assistant', texts_of_output($R1)], ['user', 'and now?'],
          ['assistant', texts_of_output($R2)], ['user', 'third']],
          'third turn: gem got the whole chain and the new instructions');

my $r4 = create({ model => 'm-bed', previous_response_id => $r3->{json}{id},
                  input => 'fourth' });
is($r4->{status}, 200, 'fourth turn on Bedrock: 200') or diag $r4->{body};
is(scalar @{last_seen('bed')}, 7, 'fourth turn: bed got 7 entries');
is(last_seen('bed')->[-2][1], texts_of_output($r3->{json}),
   'fourth turn: with the Gemini answer');

my $r5 = create({ model => 'm-az', previous_response_id => $r4->{json}{id},
                  input => 'fifth' });
is($r5->{status}, 200, 'fifth turn on Azure: 200') or diag $r5->{body};
is(scalar @{last_seen('az')}, 9, 'fifth turn: az got 9 entries');
is(last_seen('az')->[-2][1], texts_of_output($r4->{json}),
   'fifth turn: with the Bedrock answer');

# a fork: another follow-up of the first turn
my $f1 = create({ model => 'm-oa', previous_response_id => $R1->{id},
                  input => 'fork' });
is($f1->{status}, 200, 'fork: 200');
is_deeply(last_seen('oa'), [['user', 'hello'],
          ['assistant', texts_of_output($R1)], ['user', 'fork']],
          'fork: only the first turn before it');
my $f2 = create({ model => 'm-oa', previous_response_id => $f1->{json}{id},
                  input => 'fork 2' });
is_deeply([map { $_->[1] } @{last_seen('oa')}],
          ['hello', texts_of_output($R1), 'fork', texts_of_output($f1->{json}),
           'fork 2'], 'fork of a fork: its own chain');
my $f3 = create({ model => 'm-oa', previous_response_id => $R2->{id},
                  input => 'fork 3' });
is(scalar @{last_seen('oa')}, 5, 'fork in the middle of a chain: 5 entries');

my $lists = rkeys('mg:{:}:gw:l:*');
is(scalar @$lists, 3, 'three lists: the chain, the fork, the middle fork');
my $tree = $t->redis_cmd('LRANGE', $lists->[0], 0, 0);
ok(defined $tree, 'list headers are readable');

# GET, input_items, DELETE

my $g = $t->request(method => 'GET', path => "/v1/responses/$R2->{id}");
is($g->{status}, 200, 'GET: 200');
is_deeply($g->{json}, $R2, 'GET: the response as it was answered');

$g = $t->request(method => 'GET',
                 path => "/v1/responses/$R2->{id}/input_items");
is($g->{status}, 200, 'input_items: 200');
is(scalar @{$g->{json}{data}}, 1, 'input_items: the turn input only');
is($g->{json}{data}[0]{content}[0]{text}, 'and now?',
   'input_items: the input message');
like($g->{json}{data}[0]{id}, qr/^msg_mgw_/, 'input_items: an item id');
is($g->{json}{first_id}, $g->{json}{data}[0]{id}, 'input_items: first_id');

$g = $t->request(method => 'GET',
                 path => "/v1/responses/$R2->{id}/input_items?limit=0");
is($g->{status}, 400, 'input_items: limit 0 is a 400');
is($g->{json}{error}{param}, 'limit', 'input_items: naming limit');

$g = $t->request(method => 'GET',
                 path => "/v1/responses/$R2->{id}?stream=true");
is($g->{status}, 400, 'GET ?stream=true: 400');
is($g->{json}{error}{param}, 'stream', 'GET ?stream=true: naming stream');

$g = $t->request(method => 'POST', path => "/v1/responses/$R2->{id}/cancel");
is($g->{status}, 400, 'cancel: 400');

my $unknown = 'resp_mgw_' . ('0' x 32);
$g = $t->request(method => 'GET', path => "/v1/responses/$unknown");
is($g->{status}, 404, 'GET unknown: 404');
is($g->{json}{error}{code}, 'response_not_found', 'GET unknown: code');

$g = create({ model => 'm-oa', previous_response_id => $unknown,
              input => 'x' });
is($g->{status}, 404, 'previous_response_id unknown: 404');
is($g->{json}{error}{param}, 'previous_response_id',
   'previous_response_id unknown: param');

$g = create({ model => 'm-oa', previous_response_id => 'resp_abc',
              input => 'x' });
is($g->{status}, 404, 'previous_response_id not a gateway id: 404');

$g = create({ model => 'm-oa', previous_response_id => $R1->{id},
              conversation => 'conv_1', input => 'x' });
is($g->{status}, 400, 'previous_response_id with conversation: 400');

my $d = $t->request(method => 'DELETE', path => "/v1/responses/$f3->{json}{id}");
is($d->{status}, 200, 'DELETE: 200');
is_deeply($d->{json}, { id => $f3->{json}{id}, object => 'response',
                        deleted => JSON::PP::true }, 'DELETE: the deleted object');
$d = $t->request(method => 'DELETE', path => "/v1/responses/$f3->{json}{id}");
is($d->{status}, 404, 'DELETE again: 404');
$g = $t->request(method => 'GET', path => "/v1/responses/$f3->{json}{id}");
is($g->{status}, 404, 'GET deleted: 404');

# the records carry the TTL of model_gateway_response_ttl (30 days)
my $pttl = $t->redis_cmd('PTTL', "mg:{:}:gw:r:$R1->{id}");
ok($pttl > 29 * 86400 * 1000 && $pttl <= 30 * 86400 * 1000,
   'record TTL about 30 days');
$pttl = $t->redis_cmd('PTTL', $lists->[0]);
ok($pttl > 29 * 86400 * 1000, 'list TTL about 30 days');

###########################################################################
# tools across clouds

my $tools = [{ type => 'function', name => 'get_weather',
               description => 'Weather of a city',
               parameters => { type => 'object', properties => {
                   city => { type => 'string' } }, required => ['city'] } }];

for my $pair (['m-oa', 'm-ant'], ['m-ant', 'm-bed'], ['m-bed', 'm-gem'],
              ['m-gem', 'm-az'], ['m-az', 'm-oa']) {
    my ($a, $b) = @$pair;
    my $c1 = create({ model => $a, tools => $tools, input => 'CALL weather' });
    is($c1->{status}, 200, "tools $a: 200") or diag $c1->{body};
    my $fc = $c1->{json}{output}[-1];
    is($fc->{type}, 'function_call', "tools $a: a function_call item");
    is($fc->{name}, 'get_weather', "tools $a: its name");
    is_deeply(decode_json($fc->{arguments}), { city => 'Paris' },
              "tools $a: its arguments");
    like($fc->{call_id}, qr/\S/, "tools $a: a call_id");

    my $c2 = create({ model => $b, tools => $tools,
                      previous_response_id => $c1->{json}{id},
                      input => [{ type => 'function_call_output',
                                  call_id => $fc->{call_id},
                                  output => 'sunny, 21C' }] });
    is($c2->{status}, 200, "tools $a -> $b: 200") or diag $c2->{body};
    my ($mock) = $b =~ /^m-(\w+)$/;
    my $h = last_seen($mock);
    is_deeply([grep { $_->[0] =~ /^(call|result)$/ } @$h],
              [['call', 'get_weather', '{"city":"Paris"}'],
               ['result', 'sunny, 21C']],
              "tools $a -> $b: $mock got the call and its output paired");
}

###########################################################################
# provider-only state: Gemini's thought signature goes back to Gemini's
# same model only, and never to the client

sub gem_sigs {
    my $n = $t->mock_requests('gem')->[-1]{n};
    return decode_json(MG::Test::_read_file("$DIR/sigs-gem-$n"));
}

for my $streamed (0, 1) {
    my $what = $streamed ? 'streamed' : 'plain';
    my ($c1, $fc, $raw);
    if ($streamed) {
        my ($s, $ev);
        ($s, $ev, $raw) = stream_events({ model => 'm-gem', tools => $tools,
                                          input => 'CALL signed' });
        $c1 = { json => $ev->[-1]{data}{response} };
    } else {
        $c1 = create({ model => 'm-gem', tools => $tools,
                       input => 'CALL signed' });
        $raw = $c1->{body};
    }
    my $made = 'sig-gemini-test-' . $t->mock_requests('gem')->[-1]{n};
    $fc = $c1->{json}{output}[0];
    is($fc->{type}, 'function_call', "signature $what: a call");
    unlike($raw, qr/sig-gemini|x_mgw_state|extra_content/,
           "signature $what: the client never sees it");
    my $g = $t->request(method => 'GET', path => "/v1/responses/$c1->{json}{id}");
    unlike($g->{body}, qr/sig-gemini|x_mgw_state/,
           "signature $what: nor GET /responses/{id}");

    my $out = [{ type => 'function_call_output', call_id => $fc->{call_id},
                 output => 'fine' }];
    my $c2 = create({ model => 'm-gem', tools => $tools, input => $out,
                      previous_response_id => $c1->{json}{id} });
    is($c2->{status}, 200, "signature $what: the same model, 200")
        or diag $c2->{body};
    is_deeply(gem_sigs(), [$made],
              "signature $what: sent back to the same model");

    my $c3 = create({ model => 'm-gem2', tools => $tools, input => $out,
                      previous_response_id => $c1->{json}{id} });
    is($c3->{status}, 200, "signature $what: another Gemini model, 200")
        or diag $c3->{body};
    is_deeply(gem_sigs(), [], "signature $what: not to another model");

    my $c4 = create({ model => 'm-ant', tools => $tools, input => $out,
                      previous_response_id => $c1->{json}{id} });
    is($c4->{status}, 200, "signature $what: Anthropic, 200");
    unlike($t->mock_requests('ant')->[-1]{body}, qr/sig-gemini|extra_content/,
           "signature $what: not across clouds");
    unlike($t->mock_requests('oa')->[-1]{body} // '', qr/sig-gemini/,
           "signature $what: nor to OpenAI");
}

{
    # a client cannot plant one
    my $c = create({ model => 'm-gem', tools => $tools, input => [
        { type => 'message', role => 'user', content => 'q' },
        { type => 'function_call', call_id => 'c_x', name => 'get_weather',
          arguments => '{}', x_mgw_state => { origin => 'gemini/gemini-test',
          extra_content => { google => { thought_signature =>
          'sig-gemini-test-1' } } } },
        { type => 'function_call_output', call_id => 'c_x', output => 'o' }] });
    is($c->{status}, 200, 'planted state: 200') or diag $c->{body};
    is_deeply(gem_sigs(), [], 'planted state: not sent');
    my $g = $t->request(method => 'GET',
                        path => "/v1/responses/$c->{json}{id}/input_items");
    unlike($g->{body}, qr/x_mgw_state/, 'planted state: not stored');
}

###########################################################################
# streams

for my $m (qw(m-oa m-az m-ant m-gem m-bed)) {
    my ($s, $ev, $raw) = stream_events({ model => $m, input => 'stream me',
                                         previous_response_id => $R1->{id} });
    is($s->status, 200, "stream $m: 200");
    like($s->header('content-type'), qr{^text/event-stream}, "stream $m: SSE");
    my @names = map { $_->{name} } @$ev;
    is_deeply([@names[0, 1]], ['response.created', 'response.in_progress'],
              "stream $m: created, in_progress");
    is($names[-1], 'response.completed', "stream $m: completed last");
    ok((grep { $_ eq 'response.output_text.delta' } @names) >= 1,
       "stream $m: text deltas");
    my @seq = map { $_->{data}{sequence_number} } @$ev;
    is_deeply(\@seq, [0 .. $#seq], "stream $m: sequence_number 0, 1, 2, ...");
    ok(!(grep { $_->{data}{type} ne $_->{name} } @$ev),
       "stream $m: every type is its event name");
    unlike($raw, qr/\[DONE\]|chat\.completion/, "stream $m: no chat left");
    my $final = $ev->[-1]{data}{response};
    my ($mock) = $m =~ /^m-(\w+)$/;
    is(texts_of_output($final), "$mock-reply-"
       . $t->mock_requests($mock)->[-1]{n}, "stream $m: the text");
    ok($final->{usage}{output_tokens} > 0, "stream $m: usage");
    my $got = $t->request(method => 'GET', path => "/v1/responses/$final->{id}");
    is_deeply($got->{json}, $final, "stream $m: GET = response.completed");
    my $text = join '', map { $_->{data}{delta} }
                        grep { $_->{name} eq 'response.output_text.delta' } @$ev;
    is($text, texts_of_output($final), "stream $m: deltas add up");
}

{
    # a stream that ends without "data: [DONE]" ends all the same
    my ($s, $ev) = stream_events({ model => 'm-oa', input => 'NO DONE here' });
    is($ev->[-1]{name}, 'response.completed', 'no [DONE]: completed');
    my $g = $t->request(method => 'GET',
                        path => "/v1/responses/$ev->[-1]{data}{response}{id}");
    is($g->{status}, 200, 'no [DONE]: stored');

    # one cut short fails, and nothing is stored
    ($s, $ev) = stream_events({ model => 'm-oa', input => 'CUT here' });
    is($ev->[-1]{name}, 'response.failed', 'cut: response.failed');
    is($ev->[-1]{data}{response}{status}, 'failed', 'cut: status failed');
    is($ev->[-1]{data}{response}{error}{code}, 'server_error',
       'cut: an error');
    my @seq = map { $_->{data}{sequence_number} } @$ev;
    is_deeply(\@seq, [0 .. $#seq], 'cut: sequence_number without a gap');
    $g = $t->request(method => 'GET',
                     path => "/v1/responses/$ev->[0]{data}{response}{id}");
    is($g->{status}, 404, 'cut: not stored');
}

{
    my ($s, $ev) = stream_events({ model => 'm-ant', tools => $tools,
                                   input => 'CALL please' });
    my @names = map { $_->{name} } @$ev;
    ok((grep { $_ eq 'response.function_call_arguments.delta' } @names) >= 1,
       'stream with a call: arguments deltas');
    my $done = (grep { $_->{name} eq 'response.function_call_arguments.done' }
                @$ev)[0];
    is($done->{data}{arguments}, '{"city":"Paris"}',
       'stream with a call: arguments done');
    my $final = $ev->[-1]{data}{response};
    is($final->{output}[0]{type}, 'function_call',
       'stream with a call: a function_call item');
    my $c2 = create({ model => 'm-oa', tools => $tools,
                      previous_response_id => $final->{id},
                      input => [{ type => 'function_call_output',
                                  call_id => $final->{output}[0]{call_id},
                                  output => 'rain' }] });
    is($c2->{status}, 200, 'streamed call answered on oa: 200');
    is_deeply([grep { $_->[0] =~ /^(call|result)$/ } @{last_seen('oa')}],
              [['call', 'get_weather', '{"city":"Paris"}'], ['result', 'rain']],
              'streamed call answered on oa: paired');
}

###########################################################################
# a chain prefers its last backend, and moves when that one fails

{
    # m-cross: oa (weight 100) and ant (weight 1); the first turn on ant
    write_file("$DIR/fail-oa", '');
    my $c1 = create({ model => 'm-cross', input => 'cross 1' });
    unlink "$DIR/fail-oa";
    is($c1->{status}, 200, 'cross: first turn 200');
    like($c1->{headers}{'x-model-gateway-backend'}, qr/^ant;/,
         'cross: first turn on ant (oa failing)');

    my $c2 = create({ model => 'm-cross', previous_response_id => $c1->{json}{id},
                      input => 'cross 2' });
    like($c2->{headers}{'x-model-gateway-backend'}, qr/^ant;/,
         'cross: second turn stays on ant, though oa weighs more');

    write_file("$DIR/fail-ant", '');
    my $c3 = create({ model => 'm-cross', previous_response_id => $c2->{json}{id},
                      input => 'cross 3' });
    unlink "$DIR/fail-ant";
    is($c3->{status}, 200, 'cross: ant down, third turn 200')
        or diag $c3->{body};
    like($c3->{headers}{'x-model-gateway-backend'}, qr/^oa;/,
         'cross: third turn on oa');
    is_deeply([map { $_->[1] } @{last_seen('oa')}],
              ['cross 1', texts_of_output($c1->{json}), 'cross 2',
               texts_of_output($c2->{json}), 'cross 3'],
              'cross: oa got the whole history');

    # the second node continues the chain
    my $c4 = create({ model => 'm-cross', previous_response_id => $c3->{json}{id},
                      input => 'cross 4' }, node => $t2);
    is($c4->{status}, 200, 'node 2: the chain continues');
    is(scalar @{last_seen('oa')}, 7, 'node 2: with the whole history');
    my $g2 = $t2->request(method => 'GET', path => "/v1/responses/$c1->{json}{id}");
    is_deeply($g2->{json}, $c1->{json}, 'node 2: GET finds node 1\'s response');
}

###########################################################################
# store: false; native mode beside gateway mode

{
    my $before = rkeys();
    my $n = create({ model => 'm-oa', input => 'forget me', store => JSON::PP::false });
    is($n->{status}, 200, 'store false: 200');
    is($n->{json}{store}, JSON::PP::false, 'store false: echoed');
    is_deeply(rkeys(), $before, 'store false: nothing written');
    my $g = $t->request(method => 'GET', path => "/v1/responses/$n->{json}{id}");
    is($g->{status}, 404, 'store false: GET 404');

    my $c = create({ model => 'm-oa', input => 'ephemeral follow-up',
                     previous_response_id => $R1->{id},
                     store => JSON::PP::false });
    is($c->{status}, 200, 'store false with previous_response_id: 200');
    is(scalar @{last_seen('oa')}, 3, 'store false: the history is read');

    my $nat = create({ model => 'm-ant', input => 'gw in native location' },
                     prefix => '/native');
    is($nat->{status}, 200, 'per-model gateway mode in a native location');
    like($nat->{json}{id}, qr/^resp_mgw_/, 'per-model: a gateway id');
}

###########################################################################
# what gateway mode refuses

for my $case (
    [{ background => JSON::PP::true }, 'background'],
    [{ tools => [{ type => 'web_search' }] }, 'tools'],
    [{ prompt => { id => 'pmpt_1' } }, 'prompt'],
    [{ include => ['reasoning.encrypted_content'] }, 'include'],
) {
    my ($extra, $param) = @$case;
    my $before = scalar @{$t->mock_requests('oa')};
    my $res = create({ model => 'm-oa', input => 'x', %$extra });
    is($res->{status}, 400, "refused: $param 400");
    is($res->{json}{error}{param} // '', $param, "refused: naming $param")
        or diag $res->{body};
    is(scalar @{$t->mock_requests('oa')}, $before, "refused: $param not sent");
}

###########################################################################
# limits: 4 items, 4 KB

{
    my $a = create({ model => 'm-oa', input => 'one' }, prefix => '/small');
    my $b = create({ model => 'm-oa', input => 'two',
                     previous_response_id => $a->{json}{id} }, prefix => '/small');
    is($b->{status}, 200, 'limits: 4 items fit');
    my $c = create({ model => 'm-oa', input => 'three',
                     previous_response_id => $b->{json}{id} }, prefix => '/small');
    is($c->{status}, 400, 'limits: 5 items do not');
    is($c->{json}{error}{code}, 'context_length_exceeded',
       'limits: context_length_exceeded');
    my $c2 = create({ model => 'm-oa', input => 'three', truncation => 'auto',
                      previous_response_id => $b->{json}{id} }, prefix => '/small');
    is($c2->{status}, 200, 'limits: truncation auto');
    is_deeply([map { $_->[1] } @{last_seen('oa')}],
              ['two', texts_of_output($b->{json}), 'three'],
              'limits: auto dropped the oldest whole turn');

    my $before = scalar @{$t->mock_requests('oa')};
    my $big = create({ model => 'm-oa', input => 'x' x 5000 }, prefix => '/small');
    is($big->{status}, 400, 'limits: a turn larger than the byte limit');
    is($big->{json}{error}{code}, 'context_length_exceeded',
       'limits: ... context_length_exceeded');
    is(scalar @{$t->mock_requests('oa')}, $before, 'limits: ... not sent');
    $big = create({ model => 'm-oa', input => 'x' x 5000,
                    store => JSON::PP::false }, prefix => '/small');
    is($big->{status}, 200, 'limits: ... unless it is not stored');

    # 4 KB of history in turns that fit one by one
    my $p1 = create({ model => 'm-oa', input => 'a' x 1500 }, prefix => '/bytes');
    my $p2 = create({ model => 'm-oa', input => 'b' x 1500,
                      previous_response_id => $p1->{json}{id} },
                    prefix => '/bytes');
    is($p2->{status}, 200, 'limits: 3 KB of history fits');
    my $e = create({ model => 'm-oa', input => 'c' x 1500,
                     previous_response_id => $p2->{json}{id} },
                   prefix => '/bytes');
    is($e->{status}, 400, 'limits: over 4 KB of history');
    is($e->{json}{error}{code}, 'context_length_exceeded',
       'limits: ... context_length_exceeded');
    my $e2 = create({ model => 'm-oa', input => 'c' x 1500,
                      truncation => 'auto',
                      previous_response_id => $p2->{json}{id} },
                    prefix => '/bytes');
    is($e2->{status}, 200, 'limits: auto drops the oldest turn');
    is_deeply([map { substr($_->[1], 0, 1) } @{last_seen('oa')}],
              ['b', 'o', 'c'], 'limits: ... and keeps the last one');

    # an answer that makes the turn too large: delivered, not stored
    my $l = create({ model => 'm-oa', input => 'LONG ANSWER please' },
                   prefix => '/bytes');
    is($l->{status}, 200, 'limits: a long answer is delivered');
    like(texts_of_output($l->{json}), qr/z{5000}$/, 'limits: ... whole');
    ok($t->grep_log(qr/"\Q$l->{json}{id}\E" not stored: the turn is larger/),
       'limits: ... and said not to be stored');
    my $g = $t->request(method => 'GET', path => "/bytes/responses/$l->{json}{id}");
    is($g->{status}, 404, 'limits: ... so its id is unknown');

    # a page of items stays within the byte limit
    my $cv = $t->request(method => 'POST', path => '/bytes/conversations',
                        json => { items => [map { { role => 'user',
                            content => "$_" x 1500 } } 1 .. 2] });
    is($cv->{status}, 200, 'limits: a conversation of 3 KB');
    my $add = $t->request(method => 'POST',
        path => "/bytes/conversations/$cv->{json}{id}/items",
        json => { items => [{ role => 'user', content => '3' x 1500 }] });
    is($add->{status}, 200, 'limits: 1.5 KB more');
    my $pg = $t->request(method => 'GET',
        path => "/bytes/conversations/$cv->{json}{id}/items?order=asc");
    is(scalar @{$pg->{json}{data}}, 2, 'limits: a page of 2 items, 3 KB');
    is($pg->{json}{has_more}, JSON::PP::true, 'limits: ... and more');
    my $pg2 = $t->request(method => 'GET',
        path => "/bytes/conversations/$cv->{json}{id}/items?order=asc&after="
                . $pg->{json}{last_id});
    is(scalar @{$pg2->{json}{data}}, 1, 'limits: the next page');
    my $too = $t->request(method => 'POST',
        path => "/bytes/conversations/$cv->{json}{id}/items",
        json => { items => [{ role => 'user', content => '4' x 5000 }] });
    is($too->{status}, 400, 'limits: items larger than the limit: 400');
}

{
    # the byte limit has to fit a Redis reply
    my $t4 = MG::Test->new;
    $t4->write_conf(<<'EOF');
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    model_gateway_redis 127.0.0.1:1;
    model_gateway_redis_max_reply_size 64k;
    model_gateway_backend x {
        type openai_compatible;
        url http://127.0.0.1:1/v1;
        model m;
    }
    server {
        listen 127.0.0.1:%%PORT_gw%%;
        location / { model_gateway; model_gateway_responses gateway m; }
    }
}
EOF
    my ($rc, $out) = $t4->nginx_t;
    isnt($rc, 0, 'config: 512k of history against a 64k reply cap fails');
    like($out, qr/"model_gateway_history_max_bytes" 524288 .* does not fit "model_gateway_redis_max_reply_size" 65536/,
         'config: ... naming both');

    my $t5 = MG::Test->new;
    $t5->write_conf(<<'EOF');
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    model_gateway_backend x {
        type openai_compatible;
        url http://127.0.0.1:1/v1;
        model m;
    }
    server {
        listen 127.0.0.1:%%PORT_gw%%;
        location / { model_gateway; model_gateway_responses gateway; }
    }
}
EOF
    ($rc, $out) = $t5->nginx_t;
    isnt($rc, 0, 'config: gateway mode without Redis fails');
    like($out, qr/"model_gateway_responses gateway" needs "model_gateway_redis"/,
         'config: ... saying so');
}

###########################################################################
# tenants

{
    my $h1 = [['Authorization', "Bearer $GWKEY{acme}"]];
    my $h2 = [['Authorization', "Bearer $GWKEY{globex}"]];
    my $a = create({ model => 'm-oa', input => 'acme secret' },
                   prefix => '/keyed', headers => $h1);
    is($a->{status}, 200, 'tenant acme: 200');
    ok(@{rkeys("mg:{acme}:gw:r:$a->{json}{id}")}, 'tenant acme: its hash tag');
    my $g = $t->request(method => 'GET', path => "/keyed/responses/$a->{json}{id}",
                        headers => $h2);
    is($g->{status}, 404, 'tenant globex: acme\'s id is unknown');
    $g = create({ model => 'm-oa', input => 'x',
                  previous_response_id => $a->{json}{id} },
                prefix => '/keyed', headers => $h2);
    is($g->{status}, 404, 'tenant globex: cannot continue acme\'s chain');
    $g = $t->request(method => 'DELETE', path => "/keyed/responses/$a->{json}{id}",
                     headers => $h2);
    is($g->{status}, 404, 'tenant globex: cannot delete it');
    $g = $t->request(method => 'GET', path => "/keyed/responses/$a->{json}{id}",
                     headers => $h1);
    is($g->{status}, 200, 'tenant acme: still there');
    $g = $t->request(method => 'GET', path => "/v1/responses/$a->{json}{id}");
    is($g->{status}, 404, 'without identity: acme\'s id is unknown');

    # the purge of one tenant
    my $b = create({ model => 'm-oa', input => 'globex keeps this' },
                   prefix => '/keyed', headers => $h2);
    my ($rc, $out) = MG::Test::_capture([$^X, "$ENV{PWD}/bin/mg-purge",
        '--redis', "127.0.0.1:$RPORT", '--tenant', 'acme', '--dry-run']);
    like($out, qr/^[1-9]\d* keys would be removed$/m, 'purge: dry run counts');
    ok(@{rkeys("mg:{acme}:gw:*")}, 'purge: dry run removes nothing');
    ($rc, $out) = MG::Test::_capture([$^X, "$ENV{PWD}/bin/mg-purge",
        '--redis', "127.0.0.1:$RPORT", '--tenant', 'acme']);
    is($rc, 0, 'purge: exit 0');
    like($out, qr/^[1-9]\d* keys removed$/m, 'purge: says how many');
    is_deeply(rkeys("mg:{acme}:gw:*"), [], 'purge: acme holds nothing');
    $g = $t->request(method => 'GET', path => "/keyed/responses/$a->{json}{id}",
                     headers => $h1);
    is($g->{status}, 404, 'purge: acme\'s response is gone');
    $g = $t->request(method => 'GET', path => "/keyed/responses/$b->{json}{id}",
                     headers => $h2);
    is($g->{status}, 200, 'purge: globex\'s is not');
    ($rc, $out) = MG::Test::_capture([$^X, "$ENV{PWD}/bin/mg-purge",
        '--redis', "127.0.0.1:$RPORT", '--tenant', 'a*']);
    is($rc, 2, 'purge: a pattern is no tenant');
}

###########################################################################
# conversations

sub conv_req {
    my ($method, $path, $body, %o) = @_;
    return $t->request(method => $method, path => "/v1/conversations$path",
                       $body ? (json => $body) : (), %o);
}

{
    my $c = conv_req('POST', '', { metadata => { topic => 'demo' },
        items => [{ type => 'message', role => 'user', content => 'Hello!' }] });
    is($c->{status}, 200, 'conversation: created') or diag $c->{body};
    my $C = $c->{json};
    like($C->{id}, qr/^conv_mgw_[0-9a-f]{32}$/, 'conversation: a gateway id');
    is($C->{object}, 'conversation', 'conversation: object');
    is_deeply($C->{metadata}, { topic => 'demo' }, 'conversation: metadata');
    ok($C->{created_at} > 1700000000, 'conversation: created_at');
    my $cid = $C->{id};

    my $g = conv_req('GET', "/$cid");
    is_deeply($g->{json}, $C, 'conversation: GET');

    my $u = conv_req('POST', "/$cid", { metadata => { topic => 'new' } });
    is($u->{status}, 200, 'conversation: metadata updated');
    is_deeply($u->{json}, { %$C, metadata => { topic => 'new' } },
              'conversation: created_at kept, metadata new');
    $g = conv_req('GET', "/$cid");
    is_deeply($g->{json}{metadata}, { topic => 'new' }, 'conversation: stored');

    my $items = conv_req('GET', "/$cid/items");
    is($items->{status}, 200, 'items: 200');
    is(scalar @{$items->{json}{data}}, 1, 'items: the one created with it');
    like($items->{json}{data}[0]{id}, qr/^msg_mgw_/, 'items: an id');
    is($items->{json}{data}[0]{content}[0]{text}, 'Hello!', 'items: its text');

    my $add = conv_req('POST', "/$cid/items", { items => [
        { type => 'message', role => 'assistant', content => 'Hi, how can I help?' },
        { type => 'message', role => 'user', content => 'Tell me a joke.' } ] });
    is($add->{status}, 200, 'items added: 200') or diag $add->{body};
    is(scalar @{$add->{json}{data}}, 2, 'items added: the two');
    is($add->{json}{has_more}, JSON::PP::false, 'items added: has_more false');

    my $r = create({ model => 'm-ant', conversation => $cid, input => 'Now.' });
    is($r->{status}, 200, 'response in a conversation: 200') or diag $r->{body};
    is_deeply($r->{json}{conversation}, { id => $cid },
              'response in a conversation: conversation echoed');
    is_deeply(last_seen('ant'), [['user', 'Hello!'],
              ['assistant', 'Hi, how can I help?'],
              ['user', 'Tell me a joke.'], ['user', 'Now.']],
              'response in a conversation: ant got its items');

    my $r2 = create({ model => 'm-gem', conversation => { id => $cid },
                      input => 'Again.' });
    is($r2->{status}, 200, 'second response, conversation as an object');
    is_deeply([map { $_->[1] } @{last_seen('gem')}],
              ['Hello!', 'Hi, how can I help?', 'Tell me a joke.', 'Now.',
               texts_of_output($r->{json}), 'Again.'],
              'second response: the first one\'s input and output were added');

    $items = conv_req('GET', "/$cid/items?order=asc&limit=2");
    is(scalar @{$items->{json}{data}}, 2, 'page: 2');
    is($items->{json}{has_more}, JSON::PP::true, 'page: more');
    my $next = conv_req('GET', "/$cid/items?order=asc&limit=100&after="
                        . $items->{json}{last_id});
    is(scalar @{$next->{json}{data}}, 5, 'page after: the other 5');
    is($next->{json}{has_more}, JSON::PP::false, 'page after: no more');
    is($next->{json}{data}[-1]{content}[0]{text}, texts_of_output($r2->{json}),
       'page after: the last answer last');
    my $bad = conv_req('GET', "/$cid/items?after=msg_nope");
    is($bad->{status}, 400, 'page after an unknown item: 400');
    $bad = conv_req('GET', "/$cid/items?limit=101");
    is($bad->{status}, 400, 'page of 101: 400');

    my $iid = $items->{json}{data}[1]{id};
    my $it = conv_req('GET', "/$cid/items/$iid");
    is($it->{status}, 200, 'item: 200');
    is($it->{json}{content}[0]{text}, 'Hi, how can I help?', 'item: it');
    my $di = conv_req('DELETE', "/$cid/items/$iid");
    is($di->{status}, 200, 'item deleted: 200');
    is($di->{json}{id}, $cid, 'item deleted: the conversation answers');
    $it = conv_req('GET', "/$cid/items/$iid");
    is($it->{status}, 404, 'item deleted: GET 404');
    is($it->{json}{error}{code}, 'item_not_found', 'item deleted: code');
    my $r3 = create({ model => 'm-oa', conversation => $cid, input => 'Third.' });
    is($r3->{status}, 200, 'after a delete: 200');
    ok(!(grep { $_->[1] eq 'Hi, how can I help?' } @{last_seen('oa')}),
       'after a delete: the item is gone from the history');
    is(scalar @{last_seen('oa')}, 7, 'after a delete: the rest is there');

    my $bad_c = create({ model => 'm-oa', conversation => 'conv_123',
                         input => 'x' });
    is($bad_c->{status}, 404, 'a conversation not of the gateway: 404');
    is($bad_c->{json}{error}{param}, 'conversation', 'naming conversation');

    $bad = conv_req('POST', '', { items => [map { { role => 'user',
        content => "m$_" } } 1 .. 21] });
    is($bad->{status}, 400, '21 items: 400');
    $bad = conv_req('POST', '', { metadata => { k => 1 } });
    is($bad->{status}, 400, 'metadata of a number: 400');
    is($bad->{json}{error}{param}, 'metadata', 'naming metadata');
    $bad = conv_req('POST', '', { items => [{ type => 'web_search_call' }] });
    is($bad->{status}, 400, 'an item gateway mode cannot hold: 400');
    $bad = conv_req('PUT', "/$cid");
    is($bad->{status}, 405, 'PUT: 405');

    my $h1 = [['Authorization', "Bearer $GWKEY{acme}"]];
    my $h2 = [['Authorization', "Bearer $GWKEY{globex}"]];
    my $ac = $t->request(method => 'POST', path => '/keyed/conversations',
                         json => {}, headers => $h1);
    is($ac->{status}, 200, 'tenant acme: a conversation');
    my $x = $t->request(method => 'GET',
                        path => "/keyed/conversations/$ac->{json}{id}",
                        headers => $h2);
    is($x->{status}, 404, 'tenant globex: acme\'s conversation is unknown');
    $x = create({ model => 'm-oa', conversation => $ac->{json}{id},
                  input => 'x' }, prefix => '/keyed', headers => $h2);
    is($x->{status}, 404, 'tenant globex: cannot use it');

    my $del = conv_req('DELETE', "/$cid");
    is_deeply($del->{json}, { id => $cid, object => 'conversation.deleted',
                              deleted => JSON::PP::true }, 'conversation deleted');
    $g = conv_req('GET', "/$cid");
    is($g->{status}, 404, 'conversation deleted: GET 404');
    $x = create({ model => 'm-oa', conversation => $cid, input => 'x' });
    is($x->{status}, 404, 'conversation deleted: a response in it 404');
    is($x->{json}{error}{code}, 'conversation_not_found',
       'conversation deleted: conversation_not_found');
    ok(!@{rkeys("mg:{:}:gw:c:$cid")}, 'conversation deleted: its key gone');
}

###########################################################################
# Redis trouble

{
    # items lost: never a shorter history
    my $a = create({ model => 'm-oa', input => 'to lose' });
    my $list = $t->redis_cmd('HGET', "mg:{:}:gw:r:$a->{json}{id}", 'l');
    $t->redis_cmd('DEL', "mg:{:}:gw:l:$list");
    my $before = scalar @{$t->mock_requests('oa')};
    my $b = create({ model => 'm-oa', input => 'next',
                     previous_response_id => $a->{json}{id} });
    is($b->{status}, 500, 'lost items: 500');
    is($b->{json}{error}{code}, 'history_missing', 'lost items: history_missing');
    is(scalar @{$t->mock_requests('oa')}, $before, 'lost items: no backend call');
    $t->grep_log(qr/has lost items/) or fail('lost items: logged');

    # a write that fails: the answer whole, the id unknown after
    $t->redis_cmd('CONFIG', 'SET', 'maxmemory', '1');
    my $w = create({ model => 'm-oa', input => 'unstorable' });
    $t->redis_cmd('CONFIG', 'SET', 'maxmemory', '0');
    is($w->{status}, 200, 'write fails: the answer is whole');
    ok($w->{json} && $w->{json}{status} eq 'completed', 'write fails: JSON');
    ok($t->grep_log(qr/storing "\Q$w->{json}{id}\E" failed/),
       'write fails: logged');
    my $g = $t->request(method => 'GET', path => "/v1/responses/$w->{json}{id}");
    is($g->{status}, 404, 'write fails: the id is unknown');

    # Redis down: 503 before any backend call, nothing half-written
    $t->stop_redis;
    $before = scalar @{$t->mock_requests('oa')};
    my $x = create({ model => 'm-oa', input => 'no redis' });
    is($x->{status}, 503, 'redis down: 503');
    is($x->{json}{error}{code}, 'state_store_unavailable',
       'redis down: state_store_unavailable');
    is(scalar @{$t->mock_requests('oa')}, $before, 'redis down: no backend call');
    $x = create({ model => 'm-oa', input => 'no redis, no store',
                  store => JSON::PP::false });
    is($x->{status}, 200, 'redis down: store false still works');
    $g = $t->request(method => 'GET', path => "/v1/responses/$R1->{id}");
    is($g->{status}, 503, 'redis down: GET 503');
}

###########################################################################
# a Redis that evicts is named at connect

{
    ok(!$t->grep_log(qr/evicts/), 'noeviction: no warning');
    my $t3 = MG::Test->new;
    my $lru = $t3->redis(args => ['--maxmemory-policy', 'allkeys-lru']);
    $t3->write_conf(<<'EOF', RPORT => $lru);
%%TEST_GLOBALS%%
events {}
http {
    %%TEST_GLOBALS_HTTP%%
    model_gateway_redis 127.0.0.1:%%RPORT%%;
    model_gateway_backend x {
        type openai_compatible;
        url http://127.0.0.1:1/v1;
        model m;
    }
    server {
        listen 127.0.0.1:%%PORT_gw%%;
        location / { model_gateway; model_gateway_responses gateway; }
    }
}
EOF
    $t3->run;
    ok($t3->wait_for(sub { $t3->grep_log(qr/redis \S+ is up/) }, 10),
       'allkeys-lru: connected all the same');
    ok($t3->grep_log(qr/\[warn\].*evicts any key \(maxmemory-policy allkeys-lru\)/),
       'allkeys-lru: a warning names the policy');
    $t3->stop;
    $t3->stop_redis;
}

# node 2's log gets the checks done_testing makes of node 1's
$t2->stop;
{
    my @lines = split /\n/, $t2->error_log;
    ok(!(grep { /\[(?:alert|emerg)\]|exited on signal/ } @lines),
       'node 2: no alerts, no crashed workers');
    ok(!(grep { /Sanitizer|runtime error:/ } @lines,
         split /\n/, $t2->stderr_log), 'node 2: no sanitizer reports');
}

$t->done_testing;
