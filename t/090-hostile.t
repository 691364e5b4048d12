#!/usr/bin/perl

# A hostile client against one backend of each type (openai,
# openai_compatible, azure, anthropic, gemini, bedrock), each serving its
# own model from a mock that answers only what its provider would accept
# (its own credential, path and version header; Bedrock's SigV4 signature is
# verified) and counts every byte it receives.
#
# For each case the file asserts the status; that an answer >= 400 is an
# OpenAI error {"error":{"message","type","param","code"}}, except nginx's
# own HTML page for what nginx rejects before a location is chosen; and
# that the bytes all mocks received are at most 4 x the bytes sent + 64 KB,
# or none at all when the request is rejected. Over the whole file, the
# worker's peak RSS (VmHWM) grows by less than 150 MB (not under ASan), the
# worker is never replaced, and error.log is clean (done_testing).
#
#   1. deep nesting: 10,000 nested arrays in a message content, 10,000
#      nested objects in a tool schema: 400 invalid_json, nothing sent; a
#      62-deep tool schema is served or refused with a JSON 400;
#   2. a 3.5 MB message content: 200, the backend gets about as much; a
#      body over model_gateway_max_body_size (4m): 413 request_too_large,
#      with Content-Length and chunked;
#   3. many $refs: one 64 KB (then 256 KB) $defs entry referenced by 100
#      (then 1,000) properties: 400 or a bounded request (Gemini expanded
#      it into 262 MB before the translator bounds);
#   4. 20,000 tiny tools: served or refused, bounded;
#   5. invalid UTF-8 (a stray continuation byte, an overlong form, a
#      surrogate encoded in UTF-8, a lone \ud800 escape, in a content and
#      in a tool description): 400 invalid_json, nothing sent;
#   6. duplicate "model" or "messages" members, also through an escaped
#      name ("mod\u0065l"): 400 invalid_json, nothing sent (the gateway
#      would route on the last, a backend reading the first would run
#      another model);
#   7. headers: every credential, signing, version and Host header a client
#      may forge (Authorization, X-Amz-Date, X-Amz-Security-Token,
#      x-goog-api-key, anthropic-version, api-key, x-api-key, ...), a header
#      smuggled after a bare LF, 300 extra headers, a 6 KB header, an
#      absolute URI in the request line: served, and no client value reaches
#      any mock (allowlisted ones do); CR or NUL inside a header value, a
#      20 KB header line, two Host headers, a malformed request line: nginx's
#      own 400, nothing sent;
#   8. framing: Content-Length with Transfer-Encoding, a negative, a
#      garbage and two different Content-Lengths, HTTP/1.0 chunked: nginx's
#      400; an unknown Transfer-Encoding: nginx's 501; a bad chunk size, an
#      overflowing one, a chunk longer than declared: 400 JSON (the body is
#      read inside the gateway location); nothing sent in any of them;
#   9. slow bodies: half a body, 1 s pause, the rest (all six backends at
#      once): 200; a body that stops before its Content-Length and closes,
#      and one chunked body cut mid-chunk: no answer, nothing sent.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use IO::Socket::INET;
use IO::Select;
use Socket qw(SHUT_WR);
use Time::HiRes qw(time sleep);
use MG::Test;
use MG::AWS qw(sigv4_check uri_encode);

my $t = MG::Test->new;
$t->need_module;

my $dir = $t->dir;
my $J = JSON::PP->new->utf8->canonical;

###########################################################################
# backends and their mocks

my %KEY = (
    openai    => 'sk-openai-KEY-0123456789',
    azure     => 'azure-KEY-0123456789',
    anthropic => 'sk-ant-KEY-0123456789',
    gemini    => 'gemini-KEY-0123456789',
);
my %SECRET = (AKIDEXAMPLE0090 => 'gwSecret/K7MDENG+bPxRfiCYEXAMPLE');
$ENV{AWS_ACCESS_KEY_ID} = 'AKIDEXAMPLE0090';
$ENV{AWS_SECRET_ACCESS_KEY} = $SECRET{AKIDEXAMPLE0090};
delete $ENV{AWS_SESSION_TOKEN};

for my $k (keys %KEY) {
    open my $fh, '>', "$dir/key-$k" or die $!;
    print $fh "$KEY{$k}\n";
    close $fh;
}

my @TYPES = qw(openai compat azure anthropic gemini bedrock);
my %MODEL = map { $_ => "m-$_" } @TYPES;             # client-visible
my %PID = (                                           # provider ids
    openai    => 'gpt-4o-mini',
    compat    => 'meta-llama/Llama-3.1-8B-Instruct',
    azure     => 'my-deployment',
    anthropic => 'claude-sonnet-4-5',
    gemini    => 'gemini-2.5-flash',
    bedrock   => 'anthropic.claude-3-5-sonnet-20240620-v1:0',
);
my $BYTES = "$dir/mock-bytes.log";

sub reply {
    my ($status, $obj) = @_;
    return { status => $status,
             headers => [['Content-Type', 'application/json']],
             body => ref $obj ? $J->encode($obj) : $obj };
}

# what each provider checks; the body is not decoded (3.5 MB in pure Perl
# would be slow): the test reads what was received from the mock log

my %CHECK = (
    openai => sub {
        my $r = shift;
        my $h = $r->{headers};
        return reply(401, { error => { message => 'bad key' } })
            unless ($h->{authorization} // '') eq "Bearer $KEY{openai}";
        return reply(404, { error => { message => "no $r->{path}" } })
            unless $r->{path} eq '/v1/chat/completions';
        return reply(200, MG::Test::openai_completion(model => $PID{openai}));
    },
    compat => sub {
        my $r = shift;
        return reply(401, { error => { message => 'no key expected' } })
            if defined $r->{headers}{authorization};
        return reply(404, { error => { message => "no $r->{path}" } })
            unless $r->{path} eq '/v1/chat/completions';
        return reply(200, MG::Test::openai_completion(model => $PID{compat}));
    },
    azure => sub {
        my $r = shift;
        my $h = $r->{headers};
        return reply(401, { error => { code => '401',
                                       message => 'Access denied' } })
            unless ($h->{'api-key'} // '') eq $KEY{azure}
                   && !defined $h->{authorization};
        return reply(404, { error => { message => "no $r->{path}" } })
            unless $r->{path} eq "/openai/deployments/$PID{azure}"
                                 . '/chat/completions?api-version=2024-10-21';
        return reply(200, MG::Test::openai_completion(model => 'gpt-4o'));
    },
    anthropic => sub {
        my $r = shift;
        my $h = $r->{headers};
        return reply(401, { type => 'error', error => {
                                type => 'authentication_error',
                                message => 'invalid x-api-key' } })
            unless ($h->{'x-api-key'} // '') eq $KEY{anthropic}
                   && !defined $h->{authorization};
        return reply(400, { type => 'error', error => {
                                type => 'invalid_request_error',
                                message => 'bad anthropic-version' } })
            unless ($h->{'anthropic-version'} // '') eq '2023-06-01';
        return reply(404, { type => 'error', error => {
                                type => 'not_found_error',
                                message => "no $r->{path}" } })
            unless $r->{path} eq '/v1/messages';
        return reply(200, { id => 'msg_01Hostile', type => 'message',
            role => 'assistant', model => $PID{anthropic},
            content => [{ type => 'text', text => 'ok' }],
            stop_reason => 'end_turn', stop_sequence => undef,
            usage => { input_tokens => 3, output_tokens => 1 } });
    },
    gemini => sub {
        my $r = shift;
        my $h = $r->{headers};
        return reply(403, { error => { code => 403, message => 'bad key',
                                       status => 'PERMISSION_DENIED' } })
            unless ($h->{'x-goog-api-key'} // '') eq $KEY{gemini}
                   && !defined $h->{authorization};
        return reply(404, { error => { code => 404, message => 'no path',
                                       status => 'NOT_FOUND' } })
            unless $r->{path} eq "/v1beta/models/$PID{gemini}:generateContent";
        return reply(200, { candidates => [{
                content => { role => 'model', parts => [{ text => 'ok' }] },
                finishReason => 'STOP', index => 0 }],
            usageMetadata => { promptTokenCount => 3,
                               candidatesTokenCount => 1,
                               totalTokenCount => 4 },
            modelVersion => $PID{gemini} });
    },
    bedrock => sub {
        my $r = shift;
        my $auth = $r->{headers}{authorization} // '';
        my ($akid) = $auth =~ m{Credential=([^/]+)/};
        $akid //= '';
        my $why = sigv4_check($r, access_key => $akid,
                              secret => $SECRET{$akid} // 'no such key',
                              region => 'us-east-1', service => 'bedrock');
        return { status => 403,
                 headers => [['Content-Type', 'application/json'],
                             ['x-amzn-ErrorType',
                              'InvalidSignatureException:http://internal.'
                              . 'amazon.com/coral/com.amazon.bedrock/']],
                 body => $J->encode({ message => "signature: $why" }) }
            if $why;
        return reply(404, { message => "no route for $r->{path}" })
            unless $r->{path} eq '/model/' . uri_encode($PID{bedrock})
                                 . '/converse';
        return reply(200, {
            output => { message => { role => 'assistant',
                                     content => [{ text => 'ok' }] } },
            stopReason => 'end_turn',
            usage => { inputTokens => 3, outputTokens => 1,
                       totalTokens => 4 },
            metrics => { latencyMs => 1 } });
    },
);

# every mock appends "TYPE BYTES" for each request it reads (request line,
# header lines, body), before it answers
for my $type (@TYPES) {
    my $check = $CHECK{$type};
    $t->mock($type, handler => sub {
        my $r = shift;
        my $n = length("$r->{method} $r->{path} HTTP/$r->{version}\r\n") + 2
            + length($r->{body} // '');
        $n += length($_->[0]) + length($_->[1]) + 4
            for @{ $r->{header_list} };
        open my $fh, '>>', $BYTES or die "$BYTES: $!";
        syswrite $fh, "$type $n\n";
        close $fh;
        return $check->($r);
    });
}

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;
    model_gateway_forward_headers X-Tenant-Trace;

    model_gateway_backend b_openai {
        type openai;
        url http://127.0.0.1:%%PORT_openai%%/v1;
        key_file %%DIR%%/key-openai;
        model m-openai gpt-4o-mini;
    }

    model_gateway_backend b_compat {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_compat%%/v1;
        model m-compat meta-llama/Llama-3.1-8B-Instruct;
    }

    model_gateway_backend b_azure {
        type azure;
        url http://127.0.0.1:%%PORT_azure%%/openai;
        key_file %%DIR%%/key-azure;
        model m-azure my-deployment;
    }

    model_gateway_backend b_anthropic {
        type anthropic;
        url http://127.0.0.1:%%PORT_anthropic%%/v1;
        key_file %%DIR%%/key-anthropic;
        model m-anthropic claude-sonnet-4-5;
    }

    model_gateway_backend b_gemini {
        type gemini;
        url http://127.0.0.1:%%PORT_gemini%%/v1beta;
        key_file %%DIR%%/key-gemini;
        model m-gemini gemini-2.5-flash;
    }

    model_gateway_backend b_bedrock {
        type bedrock;
        url http://127.0.0.1:%%PORT_bedrock%%;
        region us-east-1;
        model m-bedrock anthropic.claude-3-5-sonnet-20240620-v1:0;
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

###########################################################################
# measuring

sub status_kb {
    my ($pid, $field) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 if /^\Q$field\E:\s+(\d+)\s+kB/;
    }
    return undef;
}

my ($WORKER) = $t->worker_pids;
ok($WORKER, 'worker pid found');
my $HWM0 = status_kb($WORKER, 'VmHWM') // 0;

# what the mocks received since the last mark: bytes per type (from the
# byte log), decoded request records of moderate size per type (from the
# mock logs), events showing a partial request reached a mock, and new
# connections
my (%LOG_OFF, $BYTES_OFF);

sub mark {
    $BYTES_OFF = -s $BYTES // 0;
    $LOG_OFF{$_} = -s "$dir/mock-$_.log" // 0 for @TYPES;
}

sub since {
    my %got = (total => 0, by => {}, reqs => {}, partial => 0, conns => 0);
    if (open my $fh, '<', $BYTES) {
        seek $fh, $BYTES_OFF, 0;
        while (my $l = <$fh>) {
            my ($type, $n) = $l =~ /^(\w+) (\d+)$/ or next;
            $got{by}{$type} += $n;
            $got{total} += $n;
        }
    }
    for my $type (@TYPES) {
        open my $fh, '<', "$dir/mock-$type.log" or next;
        seek $fh, $LOG_OFF{$type}, 0;
        while (my $l = <$fh>) {
            if ($l =~ /"event":"bad_request"/) {
                $got{partial}++;
                next;
            }
            $got{conns}++ if $l =~ /"event":"accept"/;
            next if $l =~ /^\{"event"/ || length $l > 1024 * 1024;
            my $rec = eval { JSON::PP->new->decode($l) } or next;
            push @{ $got{reqs}{$type} }, $rec unless exists $rec->{event};
        }
    }
    return \%got;
}

my %RATIO;      # per type: the largest bytes received / bytes sent

sub note_ratio {
    my ($got, $sent) = @_;
    for my $type (keys %{ $got->{by} }) {
        my $ratio = $got->{by}{$type} / $sent;
        $RATIO{$type} = $ratio if $ratio > ($RATIO{$type} // 0);
    }
}

sub raw_post {
    my ($body, @h) = @_;
    my %seen = map { lc $_->[0] => 1 } @h;
    my $head = "POST /v1/chat/completions HTTP/1.1\r\n";
    $head .= "Host: localhost\r\n" unless $seen{host};
    $head .= "Content-Type: application/json\r\n"
        unless $seen{'content-type'};
    $head .= "Content-Length: " . length($body) . "\r\n"
        unless $seen{'content-length'} || $seen{'transfer-encoding'};
    $head .= "$_->[0]: $_->[1]\r\n" for @h;
    return "${head}Connection: close\r\n\r\n$body";
}

# sends raw request bytes; returns the response and what the mocks got
sub send_raw {
    my ($raw, %o) = @_;
    mark();
    my $r = $t->request(raw => $raw, timeout => $o{timeout} // 30);
    $r->{sent} = length $raw;
    $r->{got} = since();
    return $r;
}

sub is_openai_error {
    my ($r, $status, $name, $code) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = is($r->{status}, $status, "$name: $status");
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
    $ok &&= ok(ref $e eq 'HASH'
               && (grep { exists $e->{$_} } qw(message type param code)) == 4
               && defined $e->{message} && length $e->{message}
               && ($r->{header_list} && ($r->{headers}{'content-type'} // '')
                   =~ m{^application/json}),
               "$name: OpenAI JSON error")
        or diag("body: " . substr($r->{body} // '', 0, 300));
    if (defined $code) {
        $ok &&= is(ref $e eq 'HASH' ? $e->{code} : undef, $code,
                   "$name: code $code");
    }
    return $ok;
}

# nginx's own page, for what is refused before a location is chosen
sub is_nginx_page {
    my ($r, $status, $name, $title) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $title //= { 400 => 'Bad Request', 501 => 'Not Implemented' }->{$status};
    is($r->{status}, $status, "$name: nginx's $status");
    like($r->{body} // '', qr{^<html>\r?\n<head><title>$status \Q$title\E</title>.*<center>nginx(?:/[\d.]+)?</center>}s,
         "$name: nginx's own HTML page ($status $title)");
}

sub nothing_sent {
    my ($r, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{got}{total} + $r->{got}{partial} + $r->{got}{conns}, 0,
       "$name: nothing reached a mock")
        or diag(explain($r->{got}));
}

sub bounded {
    my ($r, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    note_ratio($r->{got}, $r->{sent});
    cmp_ok($r->{got}{total}, '<=', 4 * $r->{sent} + 65536,
           "$name: mocks got $r->{got}{total} bytes for $r->{sent} sent "
           . "(<= 4x + 64 KB)");
}

sub is_served {
    my ($r, $type, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{status}, 200, "$name: 200")
        or diag("body: " . substr($r->{body} // '', 0, 300));
    ok(ref $r->{json} eq 'HASH' && ref $r->{json}{choices} eq 'ARRAY'
       && $r->{json}{object} eq 'chat.completion',
       "$name: a chat.completion");
    is(join(',', sort keys %{ $r->{got}{by} }), $type,
       "$name: only the $type mock got it");
    bounded($r, $name);
}

# served, or refused with a JSON 4xx and nothing sent; bounded either way
sub served_or_refused {
    my ($r, $type, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    if (($r->{status} // 0) == 200) {
        is_served($r, $type, $name);
    } else {
        ok(($r->{status} // 0) >= 400 && $r->{status} < 500,
           "$name: 200 or 4xx (got " . ($r->{status} // 'none') . ")");
        is_openai_error($r, $r->{status}, $name);
        nothing_sent($r, $name);
    }
}

sub msgs { [{ role => 'user', content => $_[0] // 'hi' }] }

sub chat_body {
    my ($type, %extra) = @_;
    return $J->encode({ model => $MODEL{$type}, messages => msgs(),
                        %extra });
}

###########################################################################
# a normal request to each backend first

for my $type (@TYPES) {
    my $r = send_raw(raw_post(chat_body($type)));
    is_served($r, $type, "$type: plain chat");
}

###########################################################################
# 1. deep nesting

{
    my $N = 10000;
    for my $type (@TYPES) {
        my $arrays = qq({"model":"$MODEL{$type}","messages":[{"role":"user",)
            . '"content":' . ('[' x $N) . (']' x $N) . '}]}';
        my $r = send_raw(raw_post($arrays));
        is_openai_error($r, 400, "$type: $N nested arrays", 'invalid_json');
        nothing_sent($r, "$type: $N nested arrays");

        my $objects = qq({"model":"$MODEL{$type}","messages":)
            . $J->encode(msgs())
            . ',"tools":[{"type":"function","function":{"name":"f",'
            . '"parameters":' . ('{"type":"object","properties":{"a":' x $N)
            . '{"type":"string"}' . ('}}' x $N) . '}}]}';
        $r = send_raw(raw_post($objects));
        is_openai_error($r, 400, "$type: $N nested schema objects",
                        'invalid_json');
        nothing_sent($r, "$type: $N nested schema objects");

        # deep, but within the scanner's 64 levels
        my $d = 28;
        my $deep = qq({"model":"$MODEL{$type}","messages":)
            . $J->encode(msgs())
            . ',"tools":[{"type":"function","function":{"name":"f",'
            . '"parameters":' . ('{"type":"object","properties":{"a":' x $d)
            . '{"type":"string"}' . ('}}' x $d) . '}}]}';
        $r = send_raw(raw_post($deep));
        served_or_refused($r, $type, "$type: a schema $d objects deep");
    }
}

###########################################################################
# 2. huge strings, and the body limit

{
    my $big = 'x' x (3.5 * 1024 * 1024);
    for my $type (@TYPES) {
        my $r = send_raw(raw_post(chat_body($type,
                                            messages => msgs($big))));
        is_served($r, $type, "$type: 3.5 MB content");
        cmp_ok($r->{got}{total}, '>=', length $big,
               "$type: 3.5 MB content: the backend got all of it");
    }

    my $over = chat_body('openai', messages => msgs('y' x (4 * 1024 * 1024)));
    my $r = send_raw(raw_post($over));
    is_openai_error($r, 413, 'a body over 4m', 'request_too_large');
    nothing_sent($r, 'a body over 4m');

    my $chunked = join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
                           unpack('(a262144)*', $over)) . "0\r\n\r\n";
    $r = send_raw(raw_post($chunked, ['Transfer-Encoding', 'chunked']));
    is_openai_error($r, 413, 'a chunked body over 4m', 'request_too_large');
    nothing_sent($r, 'a chunked body over 4m');
}

###########################################################################
# 3. many $refs

sub ref_tools {
    my ($desc_len, $props) = @_;
    return [{ type => 'function', function => {
        name => 'amplify', description => 'refs',
        parameters => {
            type => 'object',
            '$defs' => { big => { type => 'string',
                                  description => 'd' x $desc_len } },
            properties => { map { ("p$_" => { '$ref' => '#/$defs/big' }) }
                            1 .. $props } } } }];
}

for my $type (@TYPES) {
    # expanded, 6.4 MB: over any bound a fixed translator keeps
    my $r = send_raw(raw_post(chat_body($type,
                                        tools => ref_tools(65536, 100))));
    my $amplified = $r->{got}{total} > 4 * $r->{sent} + 65536;
    # Gemini's translator used to expand each $ref into a copy of its
    # target: 6.5 MB from 69 KB
    served_or_refused($r, $type, "$type: 100 \$refs to 64 KB");

    # the case of the issue: 293 KB that became 262 MB (not sent when the
    # probe above already amplified)
    if ($amplified) {
        fail("$type: 1,000 \$refs to 256 KB: not sent, the probe amplified");
        next;
    }
    my $t0 = time;
    $r = send_raw(raw_post(chat_body($type,
                                     tools => ref_tools(262144, 1000))));
    served_or_refused($r, $type, "$type: 1,000 \$refs to 256 KB");
    diag(sprintf('%s: 1,000 $refs: %s in %.2f s, mocks got %d bytes '
                 . 'for %d', $type, $r->{status} // 'none', time - $t0,
                 $r->{got}{total}, $r->{sent}));
}

###########################################################################
# 4. huge tool arrays

{
    my @tools = map { { type => 'function', function => {
        name => "t$_", parameters => { type => 'object' } } } } 1 .. 20000;
    for my $type (@TYPES) {
        my $t0 = time;
        my $r = send_raw(raw_post(chat_body($type, tools => \@tools)));
        served_or_refused($r, $type, "$type: 20,000 tools");
        diag(sprintf('%s: 20,000 tools: %s in %.2f s', $type,
                     $r->{status} // 'none', time - $t0));
    }
}

###########################################################################
# 5. invalid UTF-8

{
    my %bad = (
        'a stray continuation byte' => "ab\x80cd",
        'an overlong /'             => "\xc0\xaf",
        'a UTF-8 surrogate'         => "\xed\xa0\x80",
        'a truncated sequence'      => "\xe2\x82",
        'bytes 0xfe 0xff'           => "\xfe\xff",
    );
    for my $type (@TYPES) {
        for my $what (sort keys %bad) {
            my $body = qq({"model":"$MODEL{$type}","messages":[{"role":)
                . qq("user","content":"hi $bad{$what} there"}]});
            my $r = send_raw(raw_post($body));
            is_openai_error($r, 400, "$type: $what in a content",
                            'invalid_json');
            nothing_sent($r, "$type: $what in a content");
        }

        my $body = qq({"model":"$MODEL{$type}","messages":[{"role":"user",)
            . qq("content":"lone \\ud800 surrogate"}]});
        my $r = send_raw(raw_post($body));
        is_openai_error($r, 400, "$type: a lone \\ud800 escape",
                        'invalid_json');
        nothing_sent($r, "$type: a lone \\ud800 escape");

        $body = qq({"model":"$MODEL{$type}","messages":[{"role":"user",)
            . qq("content":"hi"}],"tools":[{"type":"function","function":)
            . qq({"name":"f","description":"\xff bad","parameters":)
            . qq({"type":"object"}}}]});
        $r = send_raw(raw_post($body));
        is_openai_error($r, 400, "$type: invalid UTF-8 in a tool",
                        'invalid_json');
        nothing_sent($r, "$type: invalid UTF-8 in a tool");
    }
}

###########################################################################
# 6. duplicate members the gateway routes on: refused

for my $type (@TYPES) {
    my @others = grep { $_ ne $type } @TYPES;
    my $other = $others[0];
    my $msgs = $J->encode(msgs('LAST-MESSAGES'));
    my %dups = (
        'model twice' => qq({"model":"$MODEL{$other}","messages":$msgs,)
                         . qq("model":"$MODEL{$type}"}),
        'model twice, escaped name' =>
            qq({"model":"$MODEL{$other}","messages":$msgs,)
            . qq("mod\\u0065l":"$MODEL{$type}"}),
        'messages twice' =>
            qq({"model":"$MODEL{$type}","messages":)
            . $J->encode(msgs('FIRST-MESSAGES')) . qq(,"messages":$msgs}),
    );
    for my $what (sort keys %dups) {
        my $r = send_raw(raw_post($dups{$what}));
        my $name = "$type: $what";

        # the gateway would route on the last; a backend reading the first
        # would run another model: refused before anything is sent
        is_openai_error($r, 400, "$name (refused)", 'invalid_json');
        like($r->{json}{error}{message} // '', qr/more than one "(?:model|messages)" member/,
             "$name: the message names the duplicate");
        nothing_sent($r, $name);
    }
}

###########################################################################
# 7. headers

my @FORGED = (
    ['Authorization',         'Bearer hostile-authorization'],
    ['X-Amz-Date',            '20000101T000000Z-hostile'],
    ['X-Amz-Security-Token',  'hostile-security-token'],
    ['X-Amz-Content-Sha256',  'hostile-content-sha256'],
    ['X-Amz-Target',          'hostile-target'],
    ['x-goog-api-key',        'hostile-goog-key'],
    ['X-Goog-User-Project',   'hostile-project'],
    ['anthropic-version',     'hostile-version'],
    ['anthropic-beta',        'hostile-beta'],
    ['api-key',               'hostile-api-key'],
    ['x-api-key',             'hostile-x-api-key'],
    ['OpenAI-Organization',   'hostile-org'],
    ['OpenAI-Project',        'hostile-project'],
    ['Proxy-Authorization',   'Basic hostile-proxy'],
    ['X-Forwarded-Host',      'hostile.example.com'],
    ['X-Forwarded-For',       '203.0.113.66-hostile'],
    ['Forwarded',             'host=hostile.example.com'],
    ['X-Hostile',             'hostile-plain'],
    ['Cookie',                'session=hostile-cookie'],
    ['Expect',                '100-hostile'],
);

sub hostile_headers {
    my ($rec) = @_;
    return grep { "$_->[0]: $_->[1]" =~ /hostile/i }
        @{ $rec->{header_list} // [] };
}

for my $type (@TYPES) {
    my $port = $t->port($type);
    my %cases = (
        'forged credential and signing headers' => [
            raw_post(chat_body($type),
                     ['Host', 'hostile.example.com'], @FORGED,
                     ['X-Request-Id', 'req-allowed-1'],
                     ['X-Tenant-Trace', 'tenant-allowed-1'],
                     ['User-Agent', 'agent-allowed-1']),
            ['req-allowed-1', 'tenant-allowed-1', 'agent-allowed-1'] ],
        'a header smuggled after a bare LF' => [
            raw_post(chat_body($type),
                     ['X-Request-Id', "req-allowed-2\nAuthorization: Bearer "
                                      . "hostile-lf\nX-Amz-Date: "
                                      . '20000101T000000Z-hostile']),
            ['req-allowed-2'] ],
        '300 extra headers' => [
            raw_post(chat_body($type),
                     map({ ["X-Hostile-$_", "hostile-$_"] } 1 .. 300),
                     ['X-Request-Id', 'req-allowed-3']),
            ['req-allowed-3'] ],
        'a 6 KB header' => [
            raw_post(chat_body($type), ['X-Hostile-Big', 'hostile' x 880],
                     ['X-Request-Id', 'req-allowed-4']),
            ['req-allowed-4'] ],
        'an absolute URI in the request line' => [
            do {
                (my $raw = raw_post(chat_body($type),
                                    ['Host', 'hostile.example.org']))
                    =~ s{^POST /}{POST http://hostile.example.com:$port/};
                $raw;
            },
            [] ],
    );
    for my $what (sort keys %cases) {
        my ($raw, $allowed) = @{ $cases{$what} };
        my $r = send_raw($raw);
        my $name = "$type: $what";
        is_served($r, $type, $name);
        my $rec = ($r->{got}{reqs}{$type} // [])->[0];
        ok($rec, "$name: request recorded") or next;
        is_deeply([hostile_headers($rec)], [],
                  "$name: no client value reaches the mock");
        is($rec->{headers}{host}, "127.0.0.1:$port",
           "$name: Host is the backend's");
        for my $v (@$allowed) {
            ok((grep { $_->[1] eq $v } @{ $rec->{header_list} }),
               "$name: allowlisted '$v' forwarded");
        }
    }
}

# what nginx refuses before a location is chosen
{
    my $body = chat_body('openai');
    my %refused = (
        'CR inside a header value' =>
            raw_post($body, ['X-Request-Id', "a\rAuthorization: hostile"]),
        'NUL inside a header value' =>
            raw_post($body, ['X-Request-Id', "a\0hostile"]),
        'a 20 KB header line' =>
            raw_post($body, ['X-Hostile', 'h' x 20480]),
        'two Host headers' =>
            raw_post($body, ['Host', 'localhost'],
                     ['Host', 'hostile.example.com']),
        'a malformed request line' =>
            "POST /v1/chat/completions HTTP/1.1 hostile\r\nHost: x\r\n"
            . "Content-Length: " . length($body) . "\r\n\r\n$body",
    );
    for my $what (sort keys %refused) {
        my $r = send_raw($refused{$what});
        is_nginx_page($r, 400, $what, $what =~ /20 KB/
                      ? 'Request Header Or Cookie Too Large' : undef);
        nothing_sent($r, $what);
    }
}

###########################################################################
# 8. Content-Length and Transfer-Encoding

{
    my $body = chat_body('anthropic');
    my $len = length $body;
    my $chunked = sprintf("%x\r\n%s\r\n0\r\n\r\n", $len, $body);
    my %nginx = (
        'Content-Length and Transfer-Encoding' => [400,
            raw_post($chunked, ['Content-Length', $len],
                     ['Transfer-Encoding', 'chunked'])],
        'a negative Content-Length' => [400,
            raw_post($body, ['Content-Length', -1])],
        'a garbage Content-Length' => [400,
            raw_post($body, ['Content-Length', "${len}abc"])],
        'two different Content-Lengths' => [400,
            raw_post($body, ['Content-Length', $len],
                     ['Content-Length', $len - 10])],
        'HTTP/1.0 with chunked' => [400,
            do { (my $raw = raw_post($chunked,
                                     ['Transfer-Encoding', 'chunked']))
                     =~ s{HTTP/1\.1\r\n}{HTTP/1.0\r\n}; $raw }],
        'an unknown Transfer-Encoding' => [501,
            raw_post($chunked, ['Transfer-Encoding', 'gzip, chunked'])],
    );
    for my $what (sort keys %nginx) {
        my ($status, $raw) = @{ $nginx{$what} };
        my $r = send_raw($raw);
        is_nginx_page($r, $status, $what);
        nothing_sent($r, $what);
    }

    # chunked framing errors are found while the body is read, inside the
    # gateway location
    my %gateway = (
        'a bad chunk size' => "zz\r\n$body\r\n0\r\n\r\n",
        'an overflowing chunk size' =>
            "ffffffffffffffffffff\r\n$body\r\n0\r\n\r\n",
        'a chunk longer than its size' =>
            sprintf("%x\r\n%sXXXX\r\n0\r\n\r\n", $len, $body),
    );
    for my $what (sort keys %gateway) {
        my $r = send_raw(raw_post($gateway{$what},
                                  ['Transfer-Encoding', 'chunked']));
        is_openai_error($r, 400, $what);
        nothing_sent($r, $what);
    }
}

###########################################################################
# 9. slow bodies

sub gw_socket {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('gw'), Proto => 'tcp', Timeout => 10)
        or die "connect: $!";
    return $s;
}

sub read_all {
    my ($s, $timeout) = @_;
    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + $timeout;
    while (time < $deadline) {
        next unless $sel->can_read(0.2);
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }
    return $buf;
}

{
    # half a body, a pause, the rest: all six at once
    mark();
    my @c;
    my $sent = 0;
    for my $type (@TYPES) {
        my $raw = raw_post(chat_body($type,
                                     messages => msgs('slow ' x 2000)));
        my $half = int(length($raw) / 2);
        my $s = gw_socket();
        syswrite($s, substr($raw, 0, $half)) == $half or die "write: $!";
        push @c, [$type, $s, substr($raw, $half)];
        $sent += length $raw;
    }
    sleep 1;
    my $early = since();
    is($early->{total} + $early->{partial} + $early->{conns}, 0,
       'slow bodies: nothing forwarded before they are complete');
    for my $c (@c) {
        syswrite($c->[1], $c->[2]) == length $c->[2] or die "write: $!";
    }
    for my $c (@c) {
        my $resp = read_all($c->[1], 15);
        close $c->[1];
        like($resp, qr{^HTTP/1\.1 200 }, "$c->[0]: slow body: 200");
        like($resp, qr/"object":"chat\.completion"/,
             "$c->[0]: slow body: a chat.completion");
    }
    my $got = since();
    is(join(',', sort keys %{ $got->{by} }), join(',', sort @TYPES),
       'slow bodies: every mock got its request');
    note_ratio($got, $sent);
    cmp_ok($got->{total}, '<=', 4 * $sent + 65536, 'slow bodies: bounded');

    # bodies that stop early: a Content-Length body, a chunked one cut
    # inside a chunk
    for my $type (@TYPES) {
        my $body = chat_body($type);
        my %cut = (
            'Content-Length' => substr(raw_post($body), 0, -10),
            'chunked' => substr(raw_post(sprintf("%x\r\n%s\r\n0\r\n\r\n",
                                                 length $body, $body),
                                         ['Transfer-Encoding', 'chunked']),
                                0, -20),
        );
        for my $what (sort keys %cut) {
            mark();
            my $s = gw_socket();
            syswrite($s, $cut{$what});
            sleep 0.2;
            shutdown($s, SHUT_WR);
            my $resp = read_all($s, 10);
            close $s;
            is($resp, '', "$type: $what body cut short and closed: "
                          . 'no answer');
            my $got = since();
            is($got->{total} + $got->{partial} + $got->{conns}, 0,
               "$type: $what body cut short: nothing reached a mock");
        }
    }
}

###########################################################################
# the whole file: bounded worker memory, same worker

{
    my ($w) = $t->worker_pids;
    is($w, $WORKER, 'the same worker served the whole file');
    my $hwm = status_kb($WORKER, 'VmHWM') // 0;
    diag(sprintf('worker VmHWM: %d kB at start, %d kB at the end '
                 . '(+%d kB)', $HWM0, $hwm, $hwm - $HWM0));
    diag(join ', ', map { sprintf('%s %.2f', $_, $RATIO{$_} // 0) } @TYPES);
  SKIP: {
        skip 'RSS is not meaningful under ASan', 1 if $ENV{MG_ASAN};
        cmp_ok($hwm - $HWM0, '<', 150 * 1024,
               'worker peak RSS grew by less than 150 MB');
    }
}

$t->allow_log(qr/client sent|client prematurely closed|invalid chunked/);
$t->done_testing;
