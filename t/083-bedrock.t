#!/usr/bin/perl

# Amazon Bedrock backends: OpenAI chat requests become Converse (or
# ConverseStream) requests signed with SigV4 (credentials from the
# environment or a shared credentials file, session tokens too) or sent
# with a Bedrock API key; the model id is one encoded path segment.  The
# mock verifies every signature itself (t/lib/MG/AWS.pm, checked below
# against the @smithy/signature-v4 fixtures) and answers 403
# InvalidSignatureException to a wrong one.  Streams are AWS event
# streams, written split inside preludes and inside UTF-8 characters;
# exceptions before content fail over, after content they end the stream
# with an error event.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json encode_json);
use MG::Test;
use MG::AWS qw(sigv4_check es_event es_exception es_message uri_encode);

my $t = MG::Test->new;
$t->need_module;

my $dir = $t->dir;

# the verifier itself, on vectors signed by the AWS SDK's signer

{
    open my $fh, '<', 't/fixtures/sigv4/bedrock.json' or die $!;
    my $fx = decode_json(do { local $/; <$fh> });
    for my $c (grep { $_->{name} !~ /normalization/ } @{ $fx->{cases} }) {
        my @hl = (@{ $c->{wire_headers} },
                  ['Authorization', $c->{expected}{authorization}]);
        my %h = map { (lc $_->[0] => $_->[1]) } @hl;
        my $req = { method => $c->{method},
                    path => $c->{wire_path}
                            . (length $c->{wire_query}
                               ? "?$c->{wire_query}" : ''),
                    headers => \%h, header_list => \@hl,
                    body => $c->{body} };
        my %o = (access_key => $c->{access_key_id},
                 secret => $c->{secret_access_key}, region => $c->{region},
                 service => $c->{service}, max_skew => 1e10);
        is(sigv4_check($req, %o), '', "mock verifier accepts: $c->{name}");
        $req->{body} .= ' ';
        is(sigv4_check($req, %o), 'signature mismatch',
           "mock verifier rejects a changed body: $c->{name}");
    }
}

my %SECRET = (
    AKIDENVEXAMPLE  => 'envSecret/K7MDENG+bPxRfiCYEXAMPLEKEY',
    AKIDFILEEXAMPLE => 'fileSecret/Key+123',
);
my $TOKEN = 'FwoGZXIvYXdzEXAMPLETOKEN//////////wEaDPsessiontoken';
my $API_KEY = 'bedrock-api-key-ABSKexample0123456789';

$ENV{AWS_ACCESS_KEY_ID} = 'AKIDENVEXAMPLE';
$ENV{AWS_SECRET_ACCESS_KEY} = $SECRET{AKIDENVEXAMPLE};
delete $ENV{AWS_SESSION_TOKEN};
$ENV{BEDROCK_API_KEY} = $API_KEY;

open my $fh, '>', "$dir/aws-credentials" or die $!;
print $fh <<"EOF";
# written by the test
[default]
aws_access_key_id = AKIDDEFAULTUNUSED
aws_secret_access_key = unused

[profile gw]
aws_access_key_id=AKIDFILEEXAMPLE
  aws_secret_access_key = $SECRET{AKIDFILEEXAMPLE}\r
aws_session_token = $TOKEN

[wrong]
aws_access_key_id = AKIDFILEEXAMPLE
aws_secret_access_key = notTheSecret
EOF
close $fh;

sub aws_error {
    my ($status, $type, $message) = @_;
    return { status => $status,
             headers => [['Content-Type', 'application/json'],
                         ['x-amzn-ErrorType',
                          "$type:http://internal.amazon.com/coral/"
                          . "com.amazon.bedrock/"]],
             body => encode_json({ message => $message }) };
}

sub converse_reply {
    my ($text, %o) = @_;
    my @content = ({ text => $text });
    push @content, { toolUse => { toolUseId => 'tooluse_1',
                                  name => 'get_weather',
                                  input => { city => 'Paris' } } }
        if $o{tool};
    return { status => 200,
             headers => [['Content-Type', 'application/json']],
             body => encode_json({
                 output => { message => { role => 'assistant',
                                          content => \@content } },
                 stopReason => $o{tool} ? 'tool_use' : 'end_turn',
                 usage => { inputTokens => 11, outputTokens => 4,
                            totalTokens => 15, cacheReadInputTokens => 3 },
                 metrics => { latencyMs => 5 } }) };
}

# the bytes of a stream, cut into TCP writes at awkward places

sub es_stream {
    my ($frames, @cuts) = @_;
    my $all = join '', @$frames;
    my @chunks;
    my $at = 0;
    for my $cut (sort { $a <=> $b } @cuts) {
        next if $cut <= $at || $cut >= length $all;
        push @chunks, substr($all, $at, $cut - $at);
        $at = $cut;
    }
    push @chunks, substr($all, $at);
    return { status => 200,
             headers => [['Content-Type',
                          'application/vnd.amazon.eventstream'],
                         ['x-amzn-RequestId', 'req-1']],
             chunks => \@chunks, chunk_delay => 0.02 };
}

sub text_frames {
    my @text = @_;
    return (es_event('messageStart', encode_json({ role => 'assistant',
                                                   p => 'abcd' })),
            map({ es_event('contentBlockDelta',
                           JSON::PP->new->encode({
                               contentBlockIndex => 0,
                               delta => { text => $_ }, p => 'ab' })) }
                @text));
}

sub end_frames {
    my ($reason) = @_;
    return (es_event('contentBlockStop', '{"contentBlockIndex":0}'),
            es_event('messageStop',
                     encode_json({ stopReason => $reason // 'end_turn' })),
            es_event('metadata', encode_json({
                usage => { inputTokens => 7, outputTokens => 2,
                           totalTokens => 9 },
                metrics => { latencyMs => 12 } })));
}

# offsets inside the UTF-8 characters of a byte string

sub utf8_cuts {
    my ($bytes) = @_;
    my @cuts;
    while ($bytes =~ /([\xc0-\xf7])/g) {
        push @cuts, pos($bytes);        # right after a lead byte
    }
    return @cuts;
}

sub bedrock_handler {
    my ($region, $r) = @_;
    my $h = $r->{headers};
    my $auth = $h->{authorization} // '';
    my $cred;

    if ($auth =~ /^Bearer (.*)$/) {
        return aws_error(403, 'UnrecognizedClientException',
                         'The security token included in the request is '
                         . 'invalid.')
            unless $1 eq $API_KEY;
        $cred = 'bearer';

    } else {
        my ($akid) = $auth =~ m{Credential=([^/]+)/};
        $akid //= '';
        my $why = sigv4_check($r, access_key => $akid,
                              secret => $SECRET{$akid} // 'no such key',
                              region => $region, service => 'bedrock');
        return aws_error(403, 'InvalidSignatureException',
                         "The request signature we calculated does not "
                         . "match the signature you provided ($why)")
            if $why;
        if ($akid eq 'AKIDFILEEXAMPLE') {
            return aws_error(403, 'UnrecognizedClientException',
                             'bad session token')
                unless ($h->{'x-amz-security-token'} // '') eq $TOKEN;
        }
        $cred = $akid;
    }

    my ($seg, $op) = $r->{path} =~ m{^/model/([^/?]+)/(converse|converse-stream)$}
        or return aws_error(404, 'UnknownOperationException',
                            "no route for $r->{path}");
    (my $id = $seg) =~ s/%([0-9A-F]{2})/chr hex $1/ge;
    return aws_error(400, 'ValidationException', 'bad model id encoding')
        unless uri_encode($id) eq $seg;

    return aws_error(400, 'ValidationException', 'wrong Content-Type')
        unless ($h->{'content-type'} // '') eq 'application/json';

    my $b = eval { decode_json($r->{body}) }
        or return aws_error(400, 'ValidationException', 'malformed JSON');
    for my $k (keys %$b) {
        return aws_error(400, 'ValidationException',
                         "extraneous key [$k] is not permitted")
            unless $k =~ /^(messages|system|inferenceConfig|toolConfig|additionalModelRequestFields|additionalModelResponseFieldPaths|guardrailConfig|performanceConfig|promptVariables|requestMetadata)$/;
    }
    return aws_error(400, 'ValidationException', 'messages is required')
        unless ref $b->{messages} eq 'ARRAY' && @{ $b->{messages} };
    for my $m (@{ $b->{messages} }) {
        return aws_error(400, 'ValidationException', 'bad message')
            unless ($m->{role} // '') =~ /^(user|assistant)$/
                   && ref $m->{content} eq 'ARRAY';
    }

    my $echo = encode_json({ id => $id, cred => $cred, op => $op,
                             system => $b->{system},
                             inference => $b->{inferenceConfig},
                             roles => [map { $_->{role} }
                                       @{ $b->{messages} }],
                             tools => $b->{toolConfig} ? 1 : 0,
                             host => $h->{host} });

    if ($id eq 'throttled-model') {
        return aws_error(429, 'ThrottlingException',
                         'Too many requests, please wait before trying '
                         . 'again.');
    }
    if ($id eq 'invalid-model') {
        return aws_error(400, 'ValidationException',
                         'Input is too long for requested model.');
    }
    if ($id eq 'missing-model') {
        return aws_error(404, 'ResourceNotFoundException',
                         'Could not resolve the foundation model.');
    }

    if ($op eq 'converse') {
        if ($id eq 'echo-model') {
            my $u = join '', map { $_->{text} // '' }
                    @{ $b->{messages}[-1]{content} };
            return converse_reply("echo: $u");
        }
        return converse_reply($echo, tool => $b->{toolConfig});
    }

    # ConverseStream

    if ($id eq 'stream-throttle') {
        return es_stream([es_event('messageStart',
                                   '{"role":"assistant","p":"x"}'),
                          es_exception('throttlingException',
                              '{"message":"Too many requests"}')], 7);
    }
    if ($id eq 'stream-late-error') {
        return es_stream([text_frames('partial '),
                          es_exception('modelStreamErrorException',
                              '{"message":"RAW-MODEL-ERROR stopped"}')]);
    }
    if ($id eq 'stream-whole') {

        # the whole stream in one write, framed by a length
        return { status => 200,
                 headers => [['Content-Type',
                              'application/vnd.amazon.eventstream']],
                 body => join('', text_frames('one ', 'read'),
                              end_frames()) };
    }
    if ($id eq 'stream-cut') {
        return es_stream([text_frames('half')]);
    }
    if ($id eq 'stream-badcrc') {
        my $f = es_event('messageStart', '{"role":"assistant"}');
        substr($f, -1, 1) = chr(ord(substr($f, -1, 1)) ^ 1);
        return es_stream([$f, text_frames('never')]);
    }
    if ($b->{toolConfig}) {
        return es_stream([
            text_frames('Let me check.'),
            es_event('contentBlockStop', '{"contentBlockIndex":0}'),
            es_event('contentBlockStart', encode_json({
                contentBlockIndex => 1,
                start => { toolUse => { toolUseId => 'tooluse_9',
                                        name => 'get_weather' } } })),
            es_event('contentBlockDelta', encode_json({
                contentBlockIndex => 1,
                delta => { toolUse => { input => '{"city":' } } })),
            es_event('contentBlockDelta', encode_json({
                contentBlockIndex => 1,
                delta => { toolUse => { input => '"Paris"}' } } })),
            es_event('contentBlockStop', '{"contentBlockIndex":1}'),
            es_event('messageStop', '{"stopReason":"tool_use"}'),
            es_event('metadata', '{"usage":{"inputTokens":3,'
                     . '"outputTokens":5,"totalTokens":8},'
                     . '"metrics":{"latencyMs":1}}')]);
    }

    my @frames = (text_frames("H\x{e9}l", "lo \x{1F600}", " $op"),
                  end_frames());
    my $bytes = join '', @frames;
    # inside the first prelude, inside the second message's prelude CRC,
    # inside each multi-byte character
    my $second = length $frames[0];
    return es_stream(\@frames, 5, $second + 9, utf8_cuts($bytes));
}

$t->mock('bed', handler => sub { bedrock_handler('us-east-1', @_) });

my ($crt, $key) = $t->cert('bedrock-runtime.eu-west-3.amazonaws.com');
$t->mock('bedtls', tls => [$crt, $key],
         handler => sub { bedrock_handler('eu-west-3', @_) });

$t->mock('oai', handler => sub {
    my $r = shift;
    my $b = eval { decode_json($r->{body}) } // {};
    if ($b->{stream}) {
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => [MG::Test::openai_stream_events(
                             pieces => ['from openai'])] };
    }
    return { status => 200,
             headers => [['Content-Type', 'application/json']],
             body => encode_json({ via => 'openai' }) };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;

    model_gateway_backend bed {
        type bedrock;
        url http://127.0.0.1:%%PORT_bed%%;
        region us-east-1;
        max_tokens 512;
        model claude anthropic.claude-3-5-sonnet-20240620-v1:0;
        model profile arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123;
        model echo echo-model;
        model throttled throttled-model;
        model invalid invalid-model;
        model missing missing-model;
        model flaky stream-throttle;
        model throttled-stream stream-throttle;
        model late stream-late-error;
        model cut stream-cut;
        model whole stream-whole;
        model badcrc stream-badcrc;
        weight 100;
    }

    model_gateway_backend bed_file {
        type bedrock;
        url http://127.0.0.1:%%PORT_bed%%;
        region us-east-1;
        aws_credentials file %%DIR%%/aws-credentials gw;
        model filecreds amazon.nova-lite-v1:0;
    }

    model_gateway_backend bed_wrong {
        type bedrock;
        url http://127.0.0.1:%%PORT_bed%%;
        region us-east-1;
        aws_credentials file %%DIR%%/aws-credentials wrong;
        model badsig amazon.nova-lite-v1:0;
    }

    model_gateway_backend bed_key {
        type bedrock;
        url http://127.0.0.1:%%PORT_bed%%;
        region us-east-1;
        key_env BEDROCK_API_KEY;
        model apikey amazon.nova-lite-v1:0;
    }

    model_gateway_backend bed_tls {
        type bedrock;
        url https://bedrock-runtime.eu-west-3.amazonaws.com;
        connect 127.0.0.1:%%PORT_bedtls%%;
        ssl_trusted_certificate %%CA%%;
        model regional mistral.mistral-large-2402-v1:0;
    }

    model_gateway_backend oai {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_oai%%/v1;
        model flaky;
        model badcrc;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
        }
    }
}
EOF

my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t') or diag $out;

$t->run;

# a conversation with a system prompt and an assistant turn
my $CONV = [{ role => 'system', content => 'Be terse.' },
            { role => 'user', content => 'hi' },
            { role => 'assistant', content => 'hello' },
            { role => 'user', content => 'weather?' }];

sub echo_of {
    my ($r) = @_;
    return eval { decode_json(($r->{json} // {})->{choices}[0]{message}{content}) }
        // {};
}

# Converse, signed with the environment's credentials

my $r = $t->chat('claude', messages => $CONV,
    body => { temperature => 0.5, stop => ['END'] });
is($r->{status}, 200, 'converse: 200') or diag $r->{body};
my $j = $r->{json} // {};
is($j->{object}, 'chat.completion', 'an OpenAI chat.completion');
is($j->{model}, 'claude', 'the client\'s model name');
like($j->{id} // '', qr/^chatcmpl-[0-9a-f]{24}$/, 'a completion id');
my $e = echo_of($r);
is($e->{cred}, 'AKIDENVEXAMPLE', 'signed with the environment\'s key');
is($e->{id}, 'anthropic.claude-3-5-sonnet-20240620-v1:0',
   'the model id, with its colon, in the path');
is($e->{op}, 'converse', 'the converse operation');
is_deeply($e->{system}, [{ text => 'Be terse.' }], 'system');
is_deeply($e->{roles}, ['user', 'assistant', 'user'], 'messages');
is($e->{inference}{maxTokens}, 512, 'max_tokens default as maxTokens');
is($e->{inference}{temperature}, 0.5, 'temperature');
is_deeply($e->{inference}{stopSequences}, ['END'], 'stop sequences');
is($j->{choices}[0]{finish_reason}, 'stop', 'end_turn -> stop');
is($j->{usage}{prompt_tokens}, 11, 'usage prompt_tokens');
is($j->{usage}{completion_tokens}, 4, 'usage completion_tokens');
is($j->{usage}{prompt_tokens_details}{cached_tokens}, 3, 'cached tokens');

my $raw = $t->mock_requests('bed')->[-1];
is($raw->{path},
   '/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse',
   'the colon is percent-encoded in the request line');
unlike($raw->{body}, qr/"model"|"stream"/, 'no model or stream in the body');
ok(!defined $raw->{headers}{'x-amz-security-token'},
   'no session token when the environment has none');

# headers a client sends in the signature's name reach nothing: the request
# is signed and sent with the gateway's own, and the backend stays in use

{
    my @forged = (['X-Amz-Date', '20000101T000000Z'],
                  ['X-Amz-Security-Token', 'client-forged-token'],
                  ['X-Amz-Content-Sha256', 'UNSIGNED-PAYLOAD'],
                  ['X-Amzn-Bedrock-GuardrailIdentifier', 'client-guardrail'],
                  ['Authorization', 'AWS4-HMAC-SHA256 Credential=AKIDCLIENT/x'],
                  ['traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01']);
    for my $i (1 .. 4) {
        my $f = $t->chat('claude', messages => $CONV, headers => \@forged);
        is($f->{status}, 200, "forged X-Amz-* headers, request $i: 200")
            or diag $f->{body};
    }
    my $raw = $t->mock_requests('bed')->[-1];
    my @amz = grep { lc $_->[0] eq 'x-amz-date' } @{$raw->{header_list}};
    is(scalar @amz, 1, 'one X-Amz-Date, the gateway\'s');
    isnt($amz[0][1], '20000101T000000Z', 'not the client\'s date');
    my $all = join "\n", map { "$_->[0]: $_->[1]" } @{$raw->{header_list}};
    unlike($all, qr/client-forged-token|UNSIGNED-PAYLOAD|client-guardrail|AKIDCLIENT/,
           'no forged AWS header reached Bedrock');
    is($raw->{headers}{traceparent},
       '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
       'traceparent is forwarded (not signed)');
    is(echo_of($t->chat('claude', messages => $CONV))->{cred},
       'AKIDENVEXAMPLE', 'the backend is still in use after them');
}

$r = $t->chat('profile', messages => $CONV, body => { max_tokens => 20 });
is($r->{status}, 200, 'ARN model id: 200') or diag $r->{body};
$e = echo_of($r);
is($e->{id}, 'arn:aws:bedrock:us-east-1:123456789012:'
             . 'application-inference-profile/abc123',
   'the ARN, slash included, is one path segment');
is($e->{inference}{maxTokens}, 20, 'the client\'s max_tokens wins');
like($t->mock_requests('bed')->[-1]{path},
     qr{^/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A
         application-inference-profile%2Fabc123/converse$}x,
     'ARN: ":" and "/" encoded');

# tools both ways

$r = $t->chat('claude', messages => $CONV,
    body => { tools => [{ type => 'function', function => {
              name => 'get_weather',
              parameters => { type => 'object',
                              properties => { city => { type => 'string' } } }
          } }] });
is($r->{status}, 200, 'tools: 200') or diag $r->{body};
$j = $r->{json} // {};
is(echo_of($r)->{tools}, 1, 'toolConfig sent');
is($j->{choices}[0]{finish_reason}, 'tool_calls', 'tool_use -> tool_calls');
is($j->{choices}[0]{message}{tool_calls}[0]{function}{name}, 'get_weather',
   'the tool call');
is_deeply(eval { decode_json($j->{choices}[0]{message}{tool_calls}[0]
                             {function}{arguments}) },
          { city => 'Paris' }, 'arguments as a JSON string');

# long texts (the translation fast path) arrive exactly both ways

{
    my $long = join('', map { "line $_: a \"quoted\" word, a back\\slash,"
        . " a tab\t, caf\x{e9} \x{1F600} and \x{2028} done\n" } 1 .. 12);
    my $lr = $t->post_json('/v1/chat/completions', { model => 'echo',
        messages => [{ role => 'user', content => $long }] });
    is($lr->{status}, 200, 'long text: 200') or diag $lr->{body};
    is(($lr->{json} // {})->{choices}[0]{message}{content}, "echo: $long",
       'long text: exact both ways');
}

# credentials from a file (a profile with a session token), an API key,
# the region from the URL over TLS

$r = $t->chat('filecreds', messages => $CONV);
is($r->{status}, 200, 'file credentials: 200') or diag $r->{body};
is(echo_of($r)->{cred}, 'AKIDFILEEXAMPLE', 'signed with the profile\'s key');
is($t->mock_requests('bed')->[-1]{headers}{'x-amz-security-token'}, $TOKEN,
   'the session token is sent (and signed: the mock checked)');

$r = $t->chat('apikey', messages => $CONV);
is($r->{status}, 200, 'API key: 200') or diag $r->{body};
is(echo_of($r)->{cred}, 'bearer', 'a bearer token, no SigV4');
ok(!defined $t->mock_requests('bed')->[-1]{headers}{'x-amz-date'},
   'API key: no x-amz-date');

$r = $t->chat('regional', messages => $CONV);
is($r->{status}, 200, 'https with the region from the URL: 200')
    or diag $r->{body};
is(echo_of($r)->{host}, 'bedrock-runtime.eu-west-3.amazonaws.com',
   'the Host signed and sent is the URL\'s');

# a wrong signature: the mock refuses it, the client gets no detail

$r = $t->chat('badsig', messages => $CONV);
is($r->{status}, 502, 'InvalidSignatureException: 502');
like($r->{json}{error}{message} // '', qr/authentication/,
     'backend authentication failed');
unlike($r->{body}, qr/signature we calculated/, 'Bedrock\'s words not passed');
is($t->mock_requests('bed')->[-1]{path},
   '/model/amazon.nova-lite-v1%3A0/converse', 'the wrong one did arrive');

# errors with their statuses

$r = $t->chat('throttled', messages => $CONV);
is($r->{status}, 429, 'ThrottlingException: 429');
ok(defined $r->{headers}{'retry-after'}, 'with Retry-After');

$r = $t->chat('invalid', messages => $CONV);
is($r->{status}, 400, 'ValidationException: 400');
is($r->{json}{error}{code}, 'context_length_exceeded',
   'input too long -> context_length_exceeded');
like($r->{json}{error}{message} // '', qr/too long/, 'Bedrock\'s message');

$r = $t->chat('missing', messages => $CONV);
is($r->{status}, 404, 'ResourceNotFoundException: 404');
is($r->{json}{error}{code}, 'model_not_found', 'model_not_found');

$r = $t->chat('claude', messages => $CONV, body => { n => 2 });
is($r->{status}, 400, 'n > 1: 400');
is($r->{json}{error}{param}, 'n', 'names the parameter');

$r = $t->post_json('/v1/embeddings', { model => 'claude', input => 'x' });
is($r->{status}, 400, 'embeddings to a Bedrock-only model: 400');

# streams

sub stream_chat {
    my ($model, %o) = @_;
    my $s = $t->stream(path => '/v1/chat/completions',
        body => encode_json({ model => $model, stream => JSON::PP::true,
                              messages => [{ role => 'user',
                                             content => 'hi' }],
                              %o }));
    my $all = $s->rest(10) // '';
    my $ct = $s->header('content-type');
    my $extra = $s->trailing(5);
    $s->close;
    my @data = MG::Test::sse_data($all);
    my @json = map { eval { decode_json($_) } // { bad => $_ } }
               grep { $_ ne '[DONE]' } @data;
    return { data => \@data, json => \@json, ct => $ct, raw => $all,
             complete => $s->complete, extra => $extra };
}

sub text_of {
    my ($s) = @_;
    return join '', map { $_->{choices} && @{ $_->{choices} }
                          ? $_->{choices}[0]{delta}{content} // '' : '' }
                    @{ $s->{json} };
}

my $s = stream_chat('claude',
                    stream_options => { include_usage => JSON::PP::true });
is($s->{ct}, 'text/event-stream', 'stream: text/event-stream to the client');
is(text_of($s), "H\x{e9}llo \x{1F600} converse-stream",
   'stream: text split inside preludes and characters arrives whole');
is($s->{data}[-1], '[DONE]', 'stream: ends with [DONE]');
ok($s->{complete}, 'stream: response complete');
is($s->{extra}, '', 'stream: the response ends once');
my ($usage) = grep { $_->{usage} && !@{ $_->{choices} } } @{ $s->{json} };
is($usage && $usage->{usage}{total_tokens}, 9, 'stream: the usage chunk');
ok(scalar(grep { $_->{choices} && @{ $_->{choices} }
                 && ($_->{choices}[0]{finish_reason} // '') eq 'stop' }
           @{ $s->{json} }), 'stream: finish_reason stop');
is(scalar(grep { $_->{bad} } @{ $s->{json} }), 0, 'stream: all valid JSON');
is($t->mock_requests('bed')->[-1]{path},
   '/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream',
   'stream: the converse-stream operation');
is($t->mock_requests('bed')->[-1]{headers}{accept},
   'application/vnd.amazon.eventstream', 'stream: Accept eventstream');

$s = stream_chat('whole');
is(text_of($s), 'one read', 'stream in one read: the text');
is($s->{data}[-1], '[DONE]', 'stream in one read: ends with [DONE]');
ok($s->{complete}, 'stream in one read: response complete');
is($s->{extra}, '', 'stream in one read: the response ends once');

$s = stream_chat('claude', tools => [{ type => 'function', function => {
                     name => 'get_weather',
                     parameters => { type => 'object' } } }]);
my @calls = map { @{ $_->{choices}[0]{delta}{tool_calls} || [] } }
            grep { $_->{choices} && @{ $_->{choices} } } @{ $s->{json} };
is($calls[0]{function}{name}, 'get_weather', 'stream: the tool call starts');
is($calls[0]{id}, 'tooluse_9', 'stream: with its id');
is(join('', map { $_->{function}{arguments} // '' } @calls),
   '{"city":"Paris"}', 'stream: argument deltas');
is(scalar(grep { ($_->{index} // -1) != 0 } @calls), 0,
   'stream: the first call has index 0');
ok(scalar(grep { $_->{choices} && @{ $_->{choices} }
                 && ($_->{choices}[0]{finish_reason} // '') eq 'tool_calls' }
           @{ $s->{json} }), 'stream: finish_reason tool_calls');

# an exception before content fails over; alone, a throttle is a 429

$s = stream_chat('flaky');
is(text_of($s), 'from openai', 'exception before content: failover');

$r = $t->post_json('/v1/chat/completions', { model => 'throttled-stream',
    stream => JSON::PP::true, messages => [{ role => 'user',
                                             content => 'hi' }] });
is($r->{status}, 429, 'throttlingException frame, nothing else: 429')
    or diag $r->{body};

# a corrupt frame before content fails over too

$s = stream_chat('badcrc');
is(text_of($s), 'from openai', 'bad message CRC: failover');
like($t->error_log, qr/sent an invalid event stream: .*CRC/,
     'the log says why');

# after content: an error event, then [DONE]

$s = stream_chat('late');
is(text_of($s), 'partial ', 'exception after content: the content');
my ($err) = grep { $_->{error} } @{ $s->{json} };
ok($err, 'exception after content: an error event');
is($s->{data}[-1], '[DONE]', 'exception after content: [DONE]');
like($t->error_log, qr/stream from backend "bed" failed/,
     'the log says why');

$s = stream_chat('cut');
is(text_of($s), 'half', 'cut stream: the content');
($err) = grep { $_->{error} } @{ $s->{json} };
is($err && $err->{error}{code}, 'stream_interrupted',
   'cut stream: stream_interrupted');
is($s->{data}[-1], '[DONE]', 'cut stream: [DONE]');

# secrets stay secret

my $log = $t->error_log;
for my $secret (values(%SECRET), $TOKEN, $API_KEY) {
    unlike($log, qr/\Q$secret\E/, 'no credential in the log');
}

$t->done_testing;
