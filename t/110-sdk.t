#!/usr/bin/perl

# The official openai npm package (pinned in t/sdk/package-lock.json, run
# by t/sdk/client.mjs) against the gateway with a gateway key: a chat
# completion, a stream with stream_options.include_usage (raw and through
# the SDK's stream helper), embeddings in the SDK's default base64
# encoding, models.list and models.retrieve, and the SDK's error classes
# for an unknown model (NotFoundError 404 model_not_found) and a bad key
# (AuthenticationError 401 invalid_api_key).  The backend gets the SDK's
# request with the gateway's backend key, never the client's key.
#
# Needs node and t/sdk/node_modules (`make test` runs npm ci for it).

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use MG::Test;

my $top = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $sdk = "$top/t/sdk";

plan skip_all => "openai is not in t/sdk/node_modules (make sdk, or npm ci "
    . "--prefix t/sdk, installs the openai package)"
    unless -d "$sdk/node_modules/openai";

my $t = MG::Test->new;
$t->need_module;

my $dir = $t->dir;
my $J = JSON::PP->new->utf8->canonical;

# the SDK would read these
delete $ENV{$_} for grep { /^OPENAI_/ } keys %ENV;

###########################################################################
# keys: a gateway key for the client, a backend key for the mock

sub _write {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print {$fh} $s;
    close $fh;
}

my ($rc, $out) = MG::Test::_capture(
    [$^X, "$top/bin/mg-key", '--tenant', 'sdk', '--id', 'sdk-client']);
die "mg-key: $out" if $rc;
my ($KEY, $line) = split /\n/, $out;
_write("$dir/keys.txt", "$line\n");

my $BACKEND_KEY = 'sk-backend-' . ('b' x 24);
_write("$dir/backend.key", "$BACKEND_KEY\n");

my $BAD_KEY = 'mg-' . ('x' x 40);

###########################################################################
# the mock: OpenAI-shaped JSON and SSE

my @PIECES = ('Hel', 'lo', ' from', ' the', ' SDK', " \x{2713}");
my @VEC = ([0.5, -0.25, 0.125], [1, -1, 0.75]);

sub chunk {
    my ($model, $choices, %o) = @_;
    return 'data: ' . $J->encode({
        id => 'chatcmpl-sdk', object => 'chat.completion.chunk',
        created => 1717000000, model => $model,
        system_fingerprint => 'fp_sdk', choices => $choices,
        (exists $o{usage} ? (usage => $o{usage}) : ()),
    }) . "\n\n";
}

sub handler {
    my $req = shift;
    my $b = eval { JSON::PP::decode_json($req->{body}) } // {};
    my $model = $b->{model} // 'none';
    if ($req->{path} eq '/v1/embeddings') {
        my $b64 = ($b->{encoding_format} // '') eq 'base64';
        my $i = 0;
        my @data = map {
            { object => 'embedding', index => $i++,
              embedding => $b64 ? encode_base64(pack('f<*', @$_), '')
                                : $_ }
        } @VEC;
        return { status => 200,
                 headers => [['Content-Type', 'application/json']],
                 body => $J->encode({ object => 'list', model => $model,
                     data => \@data,
                     usage => { prompt_tokens => 4, total_tokens => 4 } }) };
    }
    if (!$b->{stream}) {
        return { status => 200,
                 headers => [['Content-Type', 'application/json']],
                 body => MG::Test::openai_completion(model => $model,
                     id => 'chatcmpl-sdk-1', content => 'Hi from the mock',
                     prompt_tokens => 11, completion_tokens => 4) };
    }
    my $usage = $b->{stream_options} && $b->{stream_options}{include_usage};
    my @ev = chunk($model, [{ index => 0,
        delta => { role => 'assistant', content => '' },
        logprobs => undef, finish_reason => undef }],
        $usage ? (usage => undef) : ());
    for my $p (@PIECES) {
        push @ev, chunk($model, [{ index => 0, delta => { content => $p },
            logprobs => undef, finish_reason => undef }],
            $usage ? (usage => undef) : ());
    }
    push @ev, chunk($model, [{ index => 0, delta => {}, logprobs => undef,
        finish_reason => 'stop' }], $usage ? (usage => undef) : ());
    push @ev, chunk($model, [], usage => { prompt_tokens => 9,
        completion_tokens => scalar @PIECES,
        total_tokens => 9 + @PIECES }) if $usage;
    push @ev, "data: [DONE]\n\n";
    return { status => 200,
             headers => [['Content-Type', 'text/event-stream'],
                         ['Cache-Control', 'no-cache']],
             chunks => \@ev, chunk_delay => 0.01 };
}

$t->mock('up', handler => \&handler);

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_backend up {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_up%%/v1;
        key_file %%DIR%%/backend.key;
        model m;
        model m2 provider-m2;
        model emb api=embeddings;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        location /v1/ {
            model_gateway;
            model_gateway_key_file %%DIR%%/keys.txt;
        }
    }
}
EOF

$t->run;

my $BASE = 'http://127.0.0.1:' . $t->port('gw') . '/v1';

# runs one scenario of client.mjs; returns its JSON line decoded
sub sdk {
    my ($scenario, %o) = @_;
    my ($rc, $out) = MG::Test::_capture(['node', "$sdk/client.mjs", $BASE,
        $o{key} // $KEY, $scenario, $o{model} // 'm']);
    my ($last) = grep { /^\{/ } reverse split /\n/, $out;
    my $r = defined $last ? eval { JSON::PP::decode_json($last) } : undef;
    if ($rc || !$r || $r->{fatal}) {
        diag("client.mjs $scenario: exit $rc\n$out");
        return {};
    }
    return $r;
}

sub nreq { scalar @{$t->mock_requests('up')} }

# the backend request: the gateway's key, nothing of the client's key
sub check_backend_auth {
    my ($req, $what) = @_;
    is($req->{headers}{authorization}, "Bearer $BACKEND_KEY",
        "$what: the backend gets the backend key");
    my @leak = grep { index($_->[1], $KEY) >= 0 }
        @{$req->{header_list}};
    is_deeply(\@leak, [], "$what: the client's key in no backend header");
    ok(index($req->{body}, $KEY) < 0, "$what: nor in the body");
    ok(!exists $req->{headers}{'x-api-key'}
        && !exists $req->{headers}{'api-key'},
        "$what: no x-api-key or api-key");
}

###########################################################################
# chat completion

my $r = sdk('chat');
is_deeply($r->{result}, {
    id => 'chatcmpl-sdk-1', object => 'chat.completion', model => 'm',
    content => 'Hi from the mock', role => 'assistant',
    finish_reason => 'stop',
    usage => { prompt_tokens => 11, completion_tokens => 4,
               total_tokens => 15 },
}, 'chat: what the SDK returns');

my $reqs = $t->mock_requests('up');
is(scalar @$reqs, 1, 'chat: one backend request');
my $req = $reqs->[0] // {};
is($req->{method}, 'POST', 'chat: POST');
is($req->{path}, '/v1/chat/completions', 'chat: path');
my $body = eval { JSON::PP::decode_json($req->{body}) } // {};
is_deeply($body, { model => 'm', max_tokens => 16,
    messages => [{ role => 'user', content => 'Say hello' }] },
    "chat: the backend gets the SDK's body");
check_backend_auth($req, 'chat');

###########################################################################
# streams

my $text = join '', @PIECES;

$r = sdk('stream')->{result} // {};
is_deeply($r->{deltas}, \@PIECES, 'stream: the deltas as the mock sent them');
is($r->{text}, $text, 'stream: the text');
is($r->{finish_reason}, 'stop', 'stream: finish_reason');
is_deeply($r->{usage}, { prompt_tokens => 9,
    completion_tokens => scalar @PIECES, total_tokens => 9 + @PIECES },
    'stream: the usage chunk of include_usage');
is($r->{chunks}, @PIECES + 3, 'stream: every chunk');
is_deeply($r->{objects}, ['chat.completion.chunk'], 'stream: chunk objects');

$req = $t->mock_requests('up')->[-1] // {};
$body = eval { JSON::PP::decode_json($req->{body}) } // {};
is($req->{path}, '/v1/chat/completions', 'stream: path');
ok($body->{stream}, 'stream: stream true at the backend');
is_deeply($body->{stream_options}, { include_usage => JSON::PP::true },
    'stream: stream_options at the backend');
check_backend_auth($req, 'stream');

$r = sdk('stream-helper', model => 'm2')->{result} // {};
is_deeply($r->{deltas}, \@PIECES, 'stream helper: content events');
is($r->{content}, $text, 'stream helper: the final completion');
is($r->{finish_reason}, 'stop', 'stream helper: finish_reason');
is($r->{usage} && $r->{usage}{total_tokens}, 9 + @PIECES,
    'stream helper: usage');
$req = $t->mock_requests('up')->[-1] // {};
$body = eval { JSON::PP::decode_json($req->{body}) } // {};
is($body->{model}, 'provider-m2', 'stream helper: the provider model id');

###########################################################################
# embeddings: the SDK asks for base64 and decodes it

$r = sdk('embeddings', model => 'emb')->{result} // {};
is($r->{object}, 'list', 'embeddings: object');
is_deeply($r->{data}, [{ index => 0, embedding => $VEC[0] },
                       { index => 1, embedding => $VEC[1] }],
    'embeddings: the vectors, decoded by the SDK');
is_deeply($r->{usage}, { prompt_tokens => 4, total_tokens => 4 },
    'embeddings: usage');
$req = $t->mock_requests('up')->[-1] // {};
$body = eval { JSON::PP::decode_json($req->{body}) } // {};
is($req->{path}, '/v1/embeddings', 'embeddings: path');
is_deeply($body, { model => 'emb', input => ['first text', 'second text'],
    encoding_format => 'base64' }, "embeddings: the SDK's body");
check_backend_auth($req, 'embeddings');

###########################################################################
# models, answered by the gateway

my $n = nreq();
$r = sdk('models')->{result} // {};
is_deeply([sort @{$r->{ids} // []}], [qw(emb m m2)],
    'models.list: the configured models');
is_deeply($r->{objects}, ['model'], 'models.list: model objects');

$r = sdk('model', model => 'm2')->{result} // {};
is($r->{id}, 'm2', 'models.retrieve: id');
is($r->{object}, 'model', 'models.retrieve: object');

###########################################################################
# errors, as the SDK's classes

$r = sdk('chat', model => 'no-such-model')->{error} // {};
is($r->{class}, 'NotFoundError', 'unknown model: NotFoundError');
ok($r->{is_not_found}, 'unknown model: instanceof NotFoundError');
is($r->{status}, 404, 'unknown model: status 404');
is($r->{code}, 'model_not_found', 'unknown model: code');
is($r->{param}, 'model', 'unknown model: param');

$r = sdk('model', model => 'no-such-model')->{error} // {};
is($r->{class}, 'NotFoundError', 'models.retrieve unknown: NotFoundError');
is($r->{code}, 'model_not_found', 'models.retrieve unknown: code');

for my $s (qw(chat stream embeddings models)) {
    $r = sdk($s, key => $BAD_KEY,
             model => $s eq 'embeddings' ? 'emb' : 'm')->{error} // {};
    is($r->{class}, 'AuthenticationError', "bad key, $s: AuthenticationError");
    ok($r->{is_authentication}, "bad key, $s: instanceof");
    is($r->{status}, 401, "bad key, $s: status 401");
    is($r->{code}, 'invalid_api_key', "bad key, $s: code invalid_api_key");
}

is(nreq(), $n, 'models, errors and bad keys reach no backend');

$t->done_testing;
