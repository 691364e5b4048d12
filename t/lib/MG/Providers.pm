package MG::Providers;

# Five chat backends for the tests of gateway-held Responses (t/120-memory.t,
# t/121-sdk-memory.t), each checking what it receives in its own wire
# format and refusing, as the provider would, what breaks its rules:
#   oa   OpenAI chat completions: roles, a tool message answers a call of
#        an earlier assistant message by its id, no Responses fields;
#   az   Azure OpenAI: the same, at its deployment URL with api-version and
#        the api-key header (never Authorization);
#   ant  Anthropic Messages: x-api-key, anthropic-version, max_tokens,
#        system at the top, user/assistant alternating from user,
#        tool_result first in the user turn right after its tool_use;
#   gem  Gemini generateContent: x-goog-api-key, user/model roles, a
#        functionResponse named as a functionCall of the turn before, a
#        thoughtSignature only on a call and only its own model's (each
#        call it makes carries one, "sig-MODEL-N"; those it got are in
#        DIR/sigs-gem-N);
#   bed  Bedrock Converse: SigV4, alternating roles, toolResult answering
#        a toolUse of the turn before by toolUseId.
# Each reduces what it got to [role, text] / [call, name, args] /
# [result, output] entries, written to DIR/seen-NAME-N (N: the mock's
# request number), so that a test compares one history across providers.
# A mock answers "NAME-reply-N", or a call of get_weather when the last
# user text says CALL (oa: with 5,000 more bytes when it says LONG ANSWER;
# its stream without "data: [DONE]" for NO DONE, cut after two chunks for
# CUT); while DIR/fail-NAME exists it fails (503, 529 for
# ant).  Streams as each provider streams.
#
#   MG::Providers::start($t, [tls => {NAME => [cert, key]}]): starts the
#   five mocks (those named in tls over https); returns the
#   http-level configuration of their backends (with %%PORT_*%% and the
#   key files written to $t->dir), serving models m-oa, m-ant, m-gem,
#   m-gem2 (gem, another model), m-bed, m-az, m-cross (oa weight 100,
#   ant 1) and m-any (oa, ant, gem, bed).
#   MG::Providers::seen($t, NAME): what the mock's last request held.

use strict;
use warnings;

use JSON::PP qw(decode_json);
use MG::Test;
use MG::AWS qw(sigv4_check es_event);

my $J = JSON::PP->new->utf8->canonical;
my $DIR;

our $ANT_KEY = 'sk-ant-memory-test-key-0123456789';
our $GEM_KEY = 'gem-memory-test-key-abcdef';
our $AZ_KEY = 'az-memory-test-key-0123456789';
our $AWS_ID = 'AKIDMEMORYTEST';
our $AWS_SECRET = 'memory-test-secret-key/0123456789abcdef';

sub write_file {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print {$fh} $s;
    close $fh;
}

sub reply {
    my ($status, $obj, @h) = @_;
    return { status => $status,
             headers => [['Content-Type', 'application/json'], @h],
             body => $J->encode($obj) };
}

sub failing { -e "$DIR/fail-$_[0]" }

# the last entry's text when it is the user's: a call is asked for there
sub last_user {
    my $h = shift;
    return @$h && $h->[-1][0] eq 'user' ? $h->[-1][1] : '';
}

sub text_of {
    my $c = shift;
    return $c unless ref $c;
    return join '', map { $_->{text} // '' } @$c;
}

# --- OpenAI chat completions

sub oa_history {
    my $b = shift;
    my (@h, %calls);
    for my $m (@{$b->{messages}}) {
        my $role = $m->{role} // '';
        die "role $role\n" unless $role =~ /^(system|developer|user|assistant|tool)$/;
        if ($role eq 'tool') {
            die "tool message for unknown call $m->{tool_call_id}\n"
                unless $calls{$m->{tool_call_id} // ''};
            push @h, ['result', text_of($m->{content})];
            next;
        }
        my $text = text_of($m->{content});
        push @h, [$role eq 'developer' ? 'system' : $role, $text]
            if defined $m->{content} && length $text;
        for my $tc (@{$m->{tool_calls} || []}) {
            die "call without id\n" unless $tc->{id};
            $calls{$tc->{id}} = 1;
            push @h, ['call', $tc->{function}{name},
                      $tc->{function}{arguments}];
        }
    }
    die "Responses fields in a chat request\n"
        if grep { exists $b->{$_} } qw(input previous_response_id store
                                       instructions truncation);
    return \@h;
}

sub oa_handler { chat_handler('oa', shift) }

# Azure OpenAI: its deployment URL, api-version and api-key, then chat
sub az_handler {
    my $r = shift;
    return reply(401, { error => { code => '401', message => 'Access denied '
                                   . 'due to invalid subscription key.' } })
        unless ($r->{headers}{'api-key'} // '') eq $AZ_KEY
               && !defined $r->{headers}{authorization};
    return reply(404, { error => { code => 'DeploymentNotFound',
                                   message => "no deployment: $r->{path}" } })
        unless $r->{path} =~
            m{^/openai/deployments/my-deployment/chat/completions\?api-version=[\w-]+$};
    return chat_handler('az', $r);
}

# OpenAI chat completions, as NAME ("oa", "az")
sub chat_handler {
    my ($name, $r) = @_;
    return reply(503, { error => { message => 'down', type => 'server_error' } })
        if failing($name);
    my $b = eval { decode_json($r->{body}) };
    my $h = eval { oa_history($b) };
    return reply(400, { error => { message => "$name: $@",
                                   type => 'invalid_request_error' } })
        unless $h;
    write_file("$DIR/seen-$name-$r->{n}", $J->encode($h));
    my $call = last_user($h) =~ /CALL/;
    my $text = "$name-reply-$r->{n}";
    $text .= ' ' . ('z' x 5000) if last_user($h) =~ /LONG ANSWER/;
    if ($b->{stream}) {
        my %base = (id => "chatcmpl-$r->{n}", object => 'chat.completion.chunk',
                    created => 1700000000, model => $b->{model});
        my @ev = ({ %base, choices => [{ index => 0, delta => {
                       role => 'assistant', content => '' },
                       finish_reason => undef }] });
        if ($call) {
            push @ev, { %base, choices => [{ index => 0, delta => {
                tool_calls => [{ index => 0, id => "call_$name$r->{n}",
                    type => 'function', function => { name => 'get_weather',
                    arguments => '' } }] }, finish_reason => undef }] };
            push @ev, { %base, choices => [{ index => 0, delta => {
                tool_calls => [{ index => 0, function => {
                    arguments => $_ } }] }, finish_reason => undef }] }
                for ('{"city":', '"Paris"}');
        } else {
            push @ev, { %base, choices => [{ index => 0,
                delta => { content => $_ }, finish_reason => undef }] }
                for ("$name-", "reply-$r->{n}");
        }
        push @ev, { %base, choices => [{ index => 0, delta => {},
            finish_reason => $call ? 'tool_calls' : 'stop' }] };
        push @ev, { %base, choices => [], usage => { prompt_tokens => 11,
            completion_tokens => 4, total_tokens => 15 } }
            if $b->{stream_options} && $b->{stream_options}{include_usage};
        my $said = last_user($h);
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => [(map { 'data: ' . $J->encode($_) . "\n\n" } @ev),
                            $said =~ /NO DONE/ ? () : "data: [DONE]\n\n"],
                 $said =~ /CUT/ ? (close_after => 2) : () };
    }
    my $msg = $call
        ? { role => 'assistant', content => undef, tool_calls => [{
              id => "call_$name$r->{n}", type => 'function', function => {
              name => 'get_weather', arguments => '{"city":"Paris"}' } }] }
        : { role => 'assistant', content => $text };
    return reply(200, { id => "chatcmpl-$r->{n}", object => 'chat.completion',
        created => 1700000000, model => $b->{model},
        choices => [{ index => 0, message => $msg,
                      finish_reason => $call ? 'tool_calls' : 'stop' }],
        usage => { prompt_tokens => 11, completion_tokens => 4,
                   total_tokens => 15 } });
}

# --- Anthropic Messages

sub ant_history {
    my $b = shift;
    my @h;
    die "max_tokens\n" unless $b->{max_tokens};
    if (defined $b->{system}) {
        push @h, ['system', text_of($b->{system})];
    }
    my ($prev_role, %prev_calls) = ('');
    my $i = 0;
    for my $m (@{$b->{messages}}) {
        my $role = $m->{role} // '';
        die "role $role\n" unless $role =~ /^(user|assistant)$/;
        die "first message must be user\n" if $i++ == 0 && $role ne 'user';
        die "roles must alternate\n" if $role eq $prev_role;
        my $content = ref $m->{content} ? $m->{content}
                                        : [{ type => 'text', text => $m->{content} }];
        my (%calls, $seen_other);
        for my $blk (@$content) {
            if ($blk->{type} eq 'text') {
                $seen_other = 1;
                push @h, [$role, $blk->{text}];
            } elsif ($blk->{type} eq 'tool_use') {
                die "tool_use in a user turn\n" unless $role eq 'assistant';
                $calls{$blk->{id}} = 1;
                push @h, ['call', $blk->{name}, $J->encode($blk->{input})];
            } elsif ($blk->{type} eq 'tool_result') {
                die "tool_result in an assistant turn\n" if $role ne 'user';
                die "tool_result after text\n" if $seen_other;
                die "tool_result for unknown tool_use $blk->{tool_use_id}\n"
                    unless $prev_calls{$blk->{tool_use_id}};
                push @h, ['result', text_of($blk->{content})];
            } else {
                die "block $blk->{type}\n";
            }
        }
        ($prev_role, %prev_calls) = ($role, %calls);
    }
    return \@h;
}

sub ant_sse {
    my ($name, $data) = @_;
    return "event: $name\ndata: " . $J->encode($data) . "\n\n";
}

sub ant_handler {
    my $r = shift;
    return reply(529, { type => 'error', error => { type => 'overloaded_error',
                                                    message => 'Overloaded' } })
        if failing('ant');
    return reply(401, { type => 'error', error => {
                     type => 'authentication_error', message => 'key' } })
        unless ($r->{headers}{'x-api-key'} // '') eq $ANT_KEY
               && $r->{headers}{'anthropic-version'}
               && $r->{path} eq '/v1/messages';
    my $b = eval { decode_json($r->{body}) };
    my $h = eval { ant_history($b) };
    return reply(400, { type => 'error', error => {
                     type => 'invalid_request_error', message => "ant: $@" } })
        unless $h;
    write_file("$DIR/seen-ant-$r->{n}", $J->encode($h));
    my $call = last_user($h) =~ /CALL/;
    my $id = "toolu_ant$r->{n}";
    if ($b->{stream}) {
        my @ev = (ant_sse('message_start', { type => 'message_start',
            message => { id => "msg_$r->{n}", type => 'message',
                role => 'assistant', content => [], model => $b->{model},
                stop_reason => undef, stop_sequence => undef,
                usage => { input_tokens => 21, output_tokens => 1 } } }));
        if ($call) {
            push @ev, ant_sse('content_block_start', { type =>
                'content_block_start', index => 0, content_block => {
                type => 'tool_use', id => $id, name => 'get_weather',
                input => {} } });
            push @ev, ant_sse('content_block_delta', { type =>
                'content_block_delta', index => 0, delta => {
                type => 'input_json_delta', partial_json => $_ } })
                for ('{"city":', '"Paris"}');
        } else {
            push @ev, ant_sse('content_block_start', { type =>
                'content_block_start', index => 0, content_block => {
                type => 'text', text => '' } });
            push @ev, ant_sse('ping', { type => 'ping' });
            push @ev, ant_sse('content_block_delta', { type =>
                'content_block_delta', index => 0, delta => {
                type => 'text_delta', text => $_ } })
                for ('ant-', "reply-$r->{n}");
        }
        push @ev, ant_sse('content_block_stop', { type => 'content_block_stop',
                                                  index => 0 }),
                  ant_sse('message_delta', { type => 'message_delta',
                      delta => { stop_reason => $call ? 'tool_use' : 'end_turn',
                                 stop_sequence => undef },
                      usage => { output_tokens => 6 } }),
                  ant_sse('message_stop', { type => 'message_stop' });
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => \@ev };
    }
    return reply(200, { id => "msg_$r->{n}", type => 'message',
        role => 'assistant', model => $b->{model},
        content => $call
            ? [{ type => 'tool_use', id => $id, name => 'get_weather',
                 input => { city => 'Paris' } }]
            : [{ type => 'text', text => "ant-reply-$r->{n}" }],
        stop_reason => $call ? 'tool_use' : 'end_turn',
        usage => { input_tokens => 21, output_tokens => 6 } });
}

# --- Gemini

sub gem_history {
    my ($b, $model, $sigs) = @_;
    my @h;
    die "contents\n" unless ref $b->{contents} eq 'ARRAY' && @{$b->{contents}};
    die "unknown field\n" if exists $b->{messages} || exists $b->{model};
    if ($b->{systemInstruction}) {
        push @h, ['system', text_of($b->{systemInstruction}{parts})];
    }
    my %prev_calls;
    for my $c (@{$b->{contents}}) {
        my $role = $c->{role} // '';
        die "role $role\n" unless $role =~ /^(user|model)$/;
        my %calls;
        for my $p (@{$c->{parts} || []}) {
            if (defined $p->{text}) {
                push @h, [$role eq 'model' ? 'assistant' : 'user', $p->{text}];
            } elsif ($p->{functionCall}) {
                die "functionCall from user\n" unless $role eq 'model';
                if (defined $p->{thoughtSignature}) {
                    # Gemini 3 checks a signature is its own model's
                    die "Thought signature is not valid\n"
                        unless $p->{thoughtSignature} =~ /^sig-\Q$model\E-\d+$/;
                    push @$sigs, $p->{thoughtSignature};
                }
                $calls{$p->{functionCall}{name}} = 1;
                push @h, ['call', $p->{functionCall}{name},
                          $J->encode($p->{functionCall}{args})];
            } elsif ($p->{functionResponse}) {
                die "functionResponse for unknown $p->{functionResponse}{name}\n"
                    unless $prev_calls{$p->{functionResponse}{name}};
                my $resp = $p->{functionResponse}{response};
                push @h, ['result', ref $resp eq 'HASH' && exists $resp->{content}
                          ? text_of($resp->{content}) : $J->encode($resp)];
            } else {
                die "part\n";
            }
        }
        %prev_calls = %calls if $role eq 'model';
    }
    return \@h;
}

sub gem_handler {
    my $r = shift;
    return reply(503, { error => { code => 503, status => 'UNAVAILABLE',
                                   message => 'down' } })
        if failing('gem');
    return reply(403, { error => { code => 403, message => 'key' } })
        unless ($r->{headers}{'x-goog-api-key'} // '') eq $GEM_KEY;
    my ($model, $method) = $r->{path} =~
        m{^/v1beta/models/([\w.\-]+):(generateContent|streamGenerateContent\?alt=sse)$}
        or return reply(404, { error => { code => 404, message => 'path' } });
    my $b = eval { decode_json($r->{body}) };
    my @sigs;
    my $h = eval { gem_history($b, $model, \@sigs) };
    return reply(400, { error => { code => 400, status => 'INVALID_ARGUMENT',
                                   message => "gem: $@" } })
        unless $h;
    write_file("$DIR/seen-gem-$r->{n}", $J->encode($h));
    write_file("$DIR/sigs-gem-$r->{n}", $J->encode(\@sigs));
    my $call = last_user($h) =~ /CALL/;
    my @parts = $call
        ? ({ functionCall => { name => 'get_weather',
                               args => { city => 'Paris' } },
             thoughtSignature => "sig-$model-$r->{n}" })
        : ({ text => "gem-reply-$r->{n}" });
    my $cand = { content => { role => 'model', parts => \@parts },
                 finishReason => 'STOP', index => 0 };
    my $usage = { promptTokenCount => 13, candidatesTokenCount => 3,
                  totalTokenCount => 16 };
    if ($method =~ /^stream/) {
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => ['data: ' . $J->encode({ candidates => [$cand],
                                usageMetadata => $usage }) . "\r\n\r\n"] };
    }
    return reply(200, { candidates => [$cand], usageMetadata => $usage });
}

# --- Bedrock Converse

sub bed_history {
    my $b = shift;
    my @h;
    for my $s (@{$b->{system} || []}) {
        push @h, ['system', $s->{text}];
    }
    my ($prev_role, %prev_calls) = ('');
    for my $m (@{$b->{messages}}) {
        my $role = $m->{role} // '';
        die "role $role\n" unless $role =~ /^(user|assistant)$/;
        die "roles must alternate\n" if $role eq $prev_role;
        my %calls;
        for my $c (@{$m->{content}}) {
            if (defined $c->{text}) {
                push @h, [$role, $c->{text}];
            } elsif ($c->{toolUse}) {
                die "toolUse from user\n" unless $role eq 'assistant';
                die "toolUseId\n" unless ($c->{toolUse}{toolUseId} // '') =~ /^[a-zA-Z0-9_-]+$/;
                $calls{$c->{toolUse}{toolUseId}} = 1;
                push @h, ['call', $c->{toolUse}{name},
                          $J->encode($c->{toolUse}{input})];
            } elsif ($c->{toolResult}) {
                die "toolResult for unknown $c->{toolResult}{toolUseId}\n"
                    unless $prev_calls{$c->{toolResult}{toolUseId}};
                push @h, ['result', join '', map { $_->{text}
                          // $J->encode($_->{json}) } @{$c->{toolResult}{content}}];
            } else {
                die "content\n";
            }
        }
        ($prev_role, %prev_calls) = ($role, %calls);
    }
    return \@h;
}

sub bed_handler {
    my $r = shift;
    return reply(503, { message => 'down' },
                 ['x-amzn-ErrorType', 'ServiceUnavailableException'])
        if failing('bed');
    my $why = sigv4_check($r, access_key => $AWS_ID,
                          secret => $AWS_SECRET,
                          region => 'us-east-1', service => 'bedrock');
    return reply(403, { message => "signature: $why" },
                 ['x-amzn-ErrorType', 'InvalidSignatureException'])
        if $why;
    my ($id, $op) = $r->{path} =~ m{^/model/([^/]+)/(converse|converse-stream)$}
        or return reply(404, { message => 'path' });
    my $b = eval { decode_json($r->{body}) };
    my $h = eval { bed_history($b) };
    return reply(400, { message => "bed: $@" },
                 ['x-amzn-ErrorType', 'ValidationException'])
        unless $h;
    write_file("$DIR/seen-bed-$r->{n}", $J->encode($h));
    my $call = last_user($h) =~ /CALL/;
    my $content = $call
        ? [{ toolUse => { toolUseId => "tooluse_bed$r->{n}",
                          name => 'get_weather', input => { city => 'Paris' } } }]
        : [{ text => "bed-reply-$r->{n}" }];
    my $stop = $call ? 'tool_use' : 'end_turn';
    if ($op eq 'converse-stream') {
        my @f = (es_event('messageStart', '{"role":"assistant"}'));
        if ($call) {
            push @f, es_event('contentBlockStart', $J->encode({
                contentBlockIndex => 0, start => { toolUse => {
                toolUseId => "tooluse_bed$r->{n}", name => 'get_weather' } } }));
            push @f, es_event('contentBlockDelta', $J->encode({
                contentBlockIndex => 0, delta => { toolUse => {
                input => '{"city":"Paris"}' } } }));
        } else {
            push @f, es_event('contentBlockDelta', $J->encode({
                contentBlockIndex => 0, delta => { text => $_ } }))
                for ('bed-', "reply-$r->{n}");
        }
        push @f, es_event('contentBlockStop', '{"contentBlockIndex":0}'),
                 es_event('messageStop', $J->encode({ stopReason => $stop })),
                 es_event('metadata', $J->encode({ usage => {
                     inputTokens => 17, outputTokens => 5, totalTokens => 22 },
                     metrics => { latencyMs => 3 } }));
        return { status => 200,
                 headers => [['Content-Type',
                              'application/vnd.amazon.eventstream']],
                 chunks => \@f };
    }
    return reply(200, { output => { message => { role => 'assistant',
                                                 content => $content } },
                        stopReason => $stop,
                        usage => { inputTokens => 17, outputTokens => 5,
                                   totalTokens => 22 } });
}


sub start {
    my ($t, %o) = @_;
    $DIR = $t->dir;
    write_file("$DIR/ant.key", "$ANT_KEY\n");
    write_file("$DIR/gem.key", "$GEM_KEY\n");
    write_file("$DIR/az.key", "$AZ_KEY\n");
    $ENV{AWS_ACCESS_KEY_ID} = $AWS_ID;
    $ENV{AWS_SECRET_ACCESS_KEY} = $AWS_SECRET;
    delete $ENV{AWS_SESSION_TOKEN};
    my %tls = %{$o{tls} || {}};
    $t->mock('oa', handler => \&oa_handler, tls => $tls{oa});
    $t->mock('ant', handler => \&ant_handler, tls => $tls{ant});
    $t->mock('gem', handler => \&gem_handler, tls => $tls{gem});
    $t->mock('bed', handler => \&bed_handler, tls => $tls{bed});
    $t->mock('az', handler => \&az_handler, tls => $tls{az});
    return <<"CONF";
    model_gateway_backend oa {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_oa%%/v1;
        model m-oa;
        model m-cross;
        model m-any;
        weight 100;
    }

    model_gateway_backend ant {
        type anthropic;
        url http://127.0.0.1:%%PORT_ant%%/v1;
        key_file $DIR/ant.key;
        model m-ant claude-test;
        model m-cross claude-test;
        model m-any claude-test;
        weight 1;
    }

    model_gateway_backend gem {
        type gemini;
        url http://127.0.0.1:%%PORT_gem%%/v1beta;
        key_file $DIR/gem.key;
        model m-gem gemini-test;
        model m-gem2 gemini-other;
        model m-any gemini-test;
        weight 1;
    }

    model_gateway_backend az {
        type azure;
        url http://127.0.0.1:%%PORT_az%%/openai;
        key_file $DIR/az.key;
        model m-az my-deployment;
        weight 1;
    }

    model_gateway_backend bed {
        type bedrock;
        url http://127.0.0.1:%%PORT_bed%%;
        region us-east-1;
        model m-bed anthropic.claude-test-v1:0;
        model m-any anthropic.claude-test-v1:0;
        weight 1;
    }
CONF
}

# what the mock NAME's last request held, as entries; undef: none
sub seen {
    my ($t, $mock) = @_;
    my $reqs = $t->mock_requests($mock);
    return undef unless @$reqs;
    my $f = $t->dir . "/seen-$mock-$reqs->[-1]{n}";
    return undef unless -e $f;
    return decode_json(MG::Test::_read_file($f));
}

1;
