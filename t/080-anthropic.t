#!/usr/bin/perl

# Anthropic Messages backends (`type anthropic`): clients speak OpenAI chat
# completions, the backend is spoken to in Anthropic's Messages API.
#
# The Anthropic mocks check what they receive as the real API does: the
# x-api-key, one known anthropic-version, max_tokens, no field the Messages
# API does not know, roles user/assistant only and alternating, tool_use
# only in assistant turns, tool_result only in user turns, first in the
# turn and paired with the tool_use blocks of the turn before, valid
# image sources, tools with an object input_schema, a valid tool_choice.
# A request the gateway translated wrongly therefore fails with Anthropic's
# own 400 (whose message the client sees), not only an assertion here.
#
#   - the mock's own checks (direct requests, without nginx);
#   - non-streaming: system/user/assistant/user, model alias, max_tokens
#     (default 4096, max_completion_tokens, max_tokens, the backend's
#     max_tokens), headers (x-api-key, anthropic-version, custom
#     anthropic_version, no Authorization), parameters, the
#     chat.completion answer with finish_reason and usage mappings;
#   - tools both ways, tool_choice mappings, images;
#   - streaming: a realistic Anthropic SSE stream with text, ping and two
#     tool_use blocks, written with awkward splits, passed through as it
#     comes (held by the mock after the first text), with and without
#     stream_options.include_usage;
#   - a 200 stream that starts with an error event fails over (to an
#     openai_compatible and to another anthropic backend); a stream that
#     fails after content ends with an error event and [DONE];
#   - errors: 529 everywhere (503 overloaded), 529 then success, 429
#     everywhere (429 + Retry-After), 401 (502 backend_auth_failed, key
#     never logged), 401 then success, Anthropic 400 (message passed on, not
#     retried), prompt too long, 404;
#   - OpenAI features Anthropic cannot honour: 400 before sending, or the
#     OpenAI-type backend of the same model; embeddings.
#
# Candidate order: a model served by two backends is served by one of
# weight 100 (tried first by the smooth weighted round robin) and one of
# weight 1.

use strict;
use warnings;
use utf8;

use B ();
use Test::More;
use Time::HiRes qw(time);
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

{
    my $tb = Test::More->builder;
    binmode $_, ':encoding(UTF-8)'
        for $tb->output, $tb->failure_output, $tb->todo_output;
}

my $J = JSON::PP->new->utf8->canonical;

my $KEY_ANT  = 'sk-ant-api03-KEY-OF-ANT-0123456789abcdef';
my $KEY_ANT2 = 'sk-ant-api03-KEY-OF-ANT2-fedcba9876543210';
my $KEY_BAD  = 'sk-ant-api03-REVOKED-KEY-00000000000000';
my $CLIENT_KEY = 'sk-client-key-must-not-be-forwarded';

###########################################################################
# the Anthropic side: errors, messages, streams

sub ant_error {
    my ($status, $type, $msg, @h) = @_;
    return { status => $status,
             headers => [['Content-Type', 'application/json'],
                         ['request-id', 'req_011CMockError'], @h],
             body => $J->encode({ type => 'error',
                 error => { type => $type, message => $msg },
                 request_id => 'req_011CMockError' }) };
}

sub ant_bad { ant_error(400, 'invalid_request_error', $_[0]) }

sub ant_message {
    my (%o) = @_;
    return { status => 200,
             headers => [['Content-Type', 'application/json'],
                         ['request-id', 'req_011CMockOk'],
                         ['anthropic-organization-id', 'org-mock']],
             body => $J->encode({
                 id => $o{id} // 'msg_01Mock',
                 type => 'message',
                 role => 'assistant',
                 model => 'claude-sonnet-4-5-20250929',
                 content => $o{content}
                     // [{ type => 'text', text => $o{text} // 'ok' }],
                 stop_reason => $o{stop} // 'end_turn',
                 stop_sequence => $o{stop_sequence},
                 usage => { input_tokens => $o{in} // 12,
                            cache_creation_input_tokens => $o{cw} // 0,
                            cache_read_input_tokens => $o{cr} // 0,
                            output_tokens => $o{out} // 5,
                            service_tier => 'standard' },
             }) };
}

sub sse {
    my ($name, $data) = @_;
    return "event: $name\ndata: " . $J->encode($data) . "\n\n";
}

sub ev_start {
    my ($id, %u) = @_;
    return sse('message_start', { type => 'message_start', message => {
        id => $id, type => 'message', role => 'assistant', content => [],
        model => 'claude-sonnet-4-5-20250929', stop_reason => undef,
        stop_sequence => undef,
        usage => { input_tokens => $u{in} // 25,
                   cache_creation_input_tokens => $u{cw} // 0,
                   cache_read_input_tokens => $u{cr} // 0,
                   output_tokens => 1, service_tier => 'standard' } } });
}

sub ev_ping { sse('ping', { type => 'ping' }) }

sub ev_text_start {
    sse('content_block_start', { type => 'content_block_start',
        index => $_[0], content_block => { type => 'text', text => '' } });
}

sub ev_text {
    sse('content_block_delta', { type => 'content_block_delta',
        index => $_[0], delta => { type => 'text_delta', text => $_[1] } });
}

sub ev_block_stop {
    sse('content_block_stop', { type => 'content_block_stop',
        index => $_[0] });
}

sub ev_tool_start {
    my ($idx, $id, $name) = @_;
    sse('content_block_start', { type => 'content_block_start',
        index => $idx, content_block => { type => 'tool_use', id => $id,
            name => $name, input => {} } });
}

sub ev_json {
    sse('content_block_delta', { type => 'content_block_delta',
        index => $_[0],
        delta => { type => 'input_json_delta', partial_json => $_[1] } });
}

sub ev_end {
    my ($reason, $out) = @_;
    return (sse('message_delta', { type => 'message_delta',
                delta => { stop_reason => $reason, stop_sequence => undef },
                usage => { output_tokens => $out } }),
            sse('message_stop', { type => 'message_stop' }));
}

sub ev_error {
    my ($type, $msg) = @_;
    sse('error', { type => 'error',
        error => { type => $type // 'overloaded_error',
                   message => $msg // 'Overloaded' } });
}

sub text_stream {
    my ($id, $reason, @pieces) = @_;
    return (ev_start($id, in => 9), ev_text_start(0), ev_ping(),
        (map { ev_text(0, $_) } @pieces), ev_block_stop(0),
        ev_end($reason, 7));
}

my $SSE_CT = ['Content-Type', 'text/event-stream; charset=utf-8'];

# The main stream: text (with a 2-byte and a 4-byte UTF-8 character), pings,
# two tool_use blocks (Anthropic indexes 1 and 2: OpenAI indexes 0 and 1).
my @MAIN = (
    ev_start('msg_01MainStream', in => 25, cr => 10),
    ev_text_start(0),
    ev_ping(),
    ev_text(0, 'Hel'),
    ev_text(0, 'lo, wörld '),
    ev_text(0, '🌍'),
    ev_text(0, '!'),
    ev_block_stop(0),
    ev_tool_start(1, 'toolu_01A', 'get_weather'),
    ev_json(1, ''),
    ev_ping(),
    ev_json(1, '{"city": "Par'),
    ev_json(1, 'is"}'),
    ev_block_stop(1),
    ev_tool_start(2, 'toolu_01B', 'get_time'),
    ev_json(2, '{"tz":'),
    ev_json(2, ' "CET"}'),
    ev_block_stop(2),
    ev_end('tool_use', 42),
);
my $MAIN_TEXT = 'Hello, wörld 🌍!';

# The main stream as raw pieces: chunk boundaries inside an event line,
# inside a data line, inside a 2-byte and a 4-byte UTF-8 character, between
# the two newlines ending an event; TCP writes cut inside the header, inside
# chunk-size lines, between CR and LF, inside chunk data. The mock holds
# after the piece that completes the first text delta.
my ($MAIN_PIECES, $MAIN_HOLD) = do {
    my $body = join '', @MAIN;
    my @start;
    my $off = 0;
    for (@MAIN) { push @start, $off; $off += length }
    my $oe = index($body, "w\xc3\xb6rld") + 2;        # inside ö
    my $globe = index($body, "\xf0\x9f\x8c\x8d");
    die 'stream layout' if $oe < 2 || $globe < 0;
    my @cuts = (
        index($body, '"usage"'),                      # inside message_start
        $start[4] + 9,                                # "event: co|ntent_bl"
        $oe,
        $globe + 2,                                   # inside the globe
        index($body, 'Par') + 2,                      # inside partial_json
        $start[14] - 1,                               # between "\n" and "\n"
        index($body, 'message_stop') + 4,
    );
    my @b = (0, (sort { $a <=> $b } @cuts), length $body);
    my $head = "HTTP/1.1 200 OK\r\n"
        . "Content-Type: text/event-stream; charset=utf-8\r\n"
        . "Transfer-Encoding: chunked\r\n"
        . "request-id: req_011CMainStream\r\n"
        . "anthropic-organization-id: org-mock\r\n"
        . "Cache-Control: no-cache\r\n\r\n";
    my $raw = $head;
    my @seg;                 # [b_start, b_end, raw data start, raw end]
    for my $i (0 .. $#b - 1) {
        my $s = substr($body, $b[$i], $b[$i + 1] - $b[$i]);
        my $size = sprintf("%x\r\n", length $s);
        push @seg, [$b[$i], $b[$i + 1], length($raw) + length($size),
                    length($raw) + length($size) + length($s) + 2];
        $raw .= $size . $s . "\r\n";
    }
    $raw .= "0\r\n\r\n";
    my $r_of = sub {
        my $bo = shift;
        for (@seg) { return $_->[2] + $bo - $_->[0] if $bo >= $_->[0] && $bo < $_->[1] }
        die "offset $bo";
    };
    my ($held_seg) = grep { $_->[1] == $start[4] + 9 } @seg;
    my ($oe_seg) = grep { $_->[1] == $oe } @seg;
    my $hold = $held_seg->[3] + 1;                    # inside a size line
    my @rc = (
        index($head, 'Content-Ty') + 7,               # inside the header
        $hold,
        $oe_seg->[3] - 1,                             # between CR and LF
        $r_of->($globe + 3),                          # inside the globe
        $r_of->(index($body, 'get_time') + 3),
        length($raw) - 3,                             # inside "0\r\n\r\n"
    );
    my %u = map { $_ => 1 } @rc;
    my @p = sort { $a <=> $b } keys %u;
    my (@pieces, $k, $prev);
    $prev = 0;
    for my $c (@p, length $raw) {
        push @pieces, substr($raw, $prev, $c - $prev);
        $k = scalar @pieces if $c == $hold;
        $prev = $c;
    }
    (\@pieces, $k);
};

###########################################################################
# the Anthropic mock: checks like the real API, then answers by scenario

my %TOP = map { $_ => 1 } qw(model messages max_tokens system stop_sequences
    temperature top_p top_k stream tools tool_choice metadata thinking
    service_tier output_config container mcp_servers);
my %VERSIONS = map { $_ => 1 } qw(2023-06-01 2023-01-01);
my %MEDIA = map { $_ => 1 } qw(image/jpeg image/png image/gif image/webp);
my $ID_RE = qr/^[a-zA-Z0-9_-]+$/;

# a JSON number (not a string holding digits)
sub is_num {
    my $v = shift;
    return 0 if !defined $v || ref $v;
    my $f = B::svref_2object(\$v)->FLAGS;
    return ($f & (B::SVp_IOK | B::SVp_NOK)) && !($f & B::SVp_POK) ? 1 : 0;
}

sub is_int { my $v = shift; is_num($v) && $v == int $v }
sub is_str { my $v = shift; defined $v && !ref $v && !is_num($v) }
sub is_bool { ref $_[0] && JSON::PP::is_bool($_[0]) }

sub check_blocks_text {
    my ($v, $p) = @_;
    return undef if is_str($v) && length $v;
    return "$p: Input should be a valid string or list"
        unless ref $v eq 'ARRAY' && @$v;
    for my $k (0 .. $#$v) {
        my $b = $v->[$k];
        return "$p.$k.type: Input should be 'text'"
            unless ref $b eq 'HASH' && ($b->{type} // '') eq 'text';
        return "$p.$k.text: text content blocks must be non-empty"
            unless is_str($b->{text}) && length $b->{text};
    }
    return undef;
}

sub check_image {
    my ($b, $p) = @_;
    my $s = $b->{source};
    return "$p.source: Field required" unless ref $s eq 'HASH';
    my $st = $s->{type} // '';
    if ($st eq 'base64') {
        return "$p.source.media_type: Input should be 'image/jpeg', "
            . "'image/png', 'image/gif' or 'image/webp'"
            unless $MEDIA{$s->{media_type} // ''};
        return "$p.source.data: invalid base64 data"
            unless is_str($s->{data}) && $s->{data} =~ m{^[A-Za-z0-9+/]+=*$};
    } elsif ($st eq 'url') {
        return "$p.source.url: invalid url"
            unless is_str($s->{url}) && $s->{url} =~ m{^https?://};
    } else {
        return "$p.source.type: Input tag '$st' does not match any of the "
            . "expected tags: 'base64', 'url'";
    }
    return undef;
}

# undef when the body is a valid Messages request, else Anthropic's message
sub check_messages_request {
    my $j = shift;
    for my $k (sort keys %$j) {
        return "$k: Extra inputs are not permitted" unless $TOP{$k};
    }
    return 'model: Field required'
        unless is_str($j->{model}) && length $j->{model};
    return 'max_tokens: Field required' unless exists $j->{max_tokens};
    return 'max_tokens: Input should be a valid integer'
        unless is_int($j->{max_tokens}) && $j->{max_tokens} >= 1;
    return "max_tokens: $j->{max_tokens} > 64000, which is the maximum "
        . "allowed number of output tokens for $j->{model}"
        if $j->{max_tokens} > 64000;

    if (exists $j->{system}) {
        my $e = check_blocks_text($j->{system}, 'system');
        return $e if $e;
    }
    for my $k (qw(temperature top_p)) {
        next unless exists $j->{$k};
        return "$k: Input should be a valid number" unless is_num($j->{$k});
        return "$k: Input should be less than or equal to 1"
            if $j->{$k} > 1 || $j->{$k} < 0;
    }
    if (exists $j->{stop_sequences}) {
        return 'stop_sequences: Input should be a valid list'
            unless ref $j->{stop_sequences} eq 'ARRAY'
                && !grep { !is_str($_) } @{$j->{stop_sequences}};
    }
    if (exists $j->{stream}) {
        return 'stream: Input should be a valid boolean'
            unless is_bool($j->{stream});
    }
    if (exists $j->{metadata}) {
        my $md = $j->{metadata};
        return 'metadata: Input should be a valid dictionary'
            unless ref $md eq 'HASH';
        for (keys %$md) {
            return "metadata.$_: Extra inputs are not permitted"
                unless $_ eq 'user_id';
        }
        return 'metadata.user_id: Input should be a valid string'
            unless is_str($md->{user_id});
    }

    my $msgs = $j->{messages};
    return 'messages: Field required' unless ref $msgs eq 'ARRAY';
    return 'messages: at least one message is required' unless @$msgs;
    my ($prev_role, %prev_uses);
    for my $i (0 .. $#$msgs) {
        my $m = $msgs->[$i];
        return "messages.$i: Input should be a valid dictionary"
            unless ref $m eq 'HASH';
        for (sort keys %$m) {
            return "messages.$i.$_: Extra inputs are not permitted"
                unless $_ eq 'role' || $_ eq 'content';
        }
        my $role = $m->{role} // '';
        return "messages.$i.role: Input should be 'user' or 'assistant'"
            unless $role eq 'user' || $role eq 'assistant';
        return 'messages: first message must use the "user" role'
            if $i == 0 && $role ne 'user';
        return 'messages: roles must alternate between "user" and '
            . "\"assistant\", but found multiple \"$role\" roles in a row"
            if defined $prev_role && $prev_role eq $role;

        my $c = $m->{content};
        my @blocks;
        if (is_str($c)) {
            return "messages.$i.content: text content blocks must be "
                . 'non-empty' unless length $c;
        } elsif (ref $c eq 'ARRAY') {
            return "messages.$i.content: messages must have non-empty "
                . 'content' unless @$c;
            @blocks = @$c;
        } else {
            return "messages.$i.content: Input should be a valid list";
        }

        my (%uses, %results, $other);
        for my $k (0 .. $#blocks) {
            my $b = $blocks[$k];
            my $p = "messages.$i.content.$k";
            return "$p: Input should be a valid dictionary"
                unless ref $b eq 'HASH';
            my $type = $b->{type} // '';
            if ($type eq 'text') {
                return "$p.text: text content blocks must be non-empty"
                    unless is_str($b->{text}) && length $b->{text};
                $other = 1;
            } elsif ($type eq 'image') {
                return "$p: image blocks are only allowed in user messages"
                    unless $role eq 'user';
                my $e = check_image($b, $p);
                return $e if $e;
                $other = 1;
            } elsif ($type eq 'tool_use') {
                return "$p: tool_use blocks are only allowed in assistant "
                    . 'messages' unless $role eq 'assistant';
                return "$p.id: String should match pattern "
                    . "'^[a-zA-Z0-9_-]+\$'"
                    unless is_str($b->{id}) && $b->{id} =~ $ID_RE;
                return "$p.name: Field required"
                    unless is_str($b->{name}) && length $b->{name};
                return "$p.input: Input should be a valid dictionary"
                    unless ref $b->{input} eq 'HASH';
                return "$p: tool_use ids must be unique"
                    if $uses{$b->{id}}++;
                $other = 1;
            } elsif ($type eq 'tool_result') {
                return "$p: tool_result blocks are only allowed in user "
                    . 'messages' unless $role eq 'user';
                my $id = $b->{tool_use_id};
                return "$p.tool_use_id: String should match pattern "
                    . "'^[a-zA-Z0-9_-]+\$'"
                    unless is_str($id) && $id =~ $ID_RE;
                return "$p: unexpected `tool_use_id` found in "
                    . "`tool_result` blocks: $id. Each `tool_result` block "
                    . 'must have a corresponding `tool_use` block in the '
                    . 'previous message.' unless $prev_uses{$id};
                return "$p: tool_result blocks must come before any other "
                    . 'content in a user message' if $other;
                for (sort keys %$b) {
                    return "$p.$_: Extra inputs are not permitted"
                        unless /^(?:type|tool_use_id|content|is_error|cache_control)$/;
                }
                if (exists $b->{content}) {
                    my $rc = $b->{content};
                    if (ref $rc eq 'ARRAY') {
                        for my $q (0 .. $#$rc) {
                            my $rb = $rc->[$q];
                            my $rt = ref $rb eq 'HASH' ? $rb->{type} // '' : '';
                            if ($rt eq 'text') {
                                return "$p.content.$q.text: text content "
                                    . 'blocks must be non-empty'
                                    unless is_str($rb->{text})
                                        && length $rb->{text};
                            } elsif ($rt eq 'image') {
                                my $e = check_image($rb, "$p.content.$q");
                                return $e if $e;
                            } else {
                                return "$p.content.$q.type: Input tag "
                                    . "'$rt' does not match 'text', 'image'";
                            }
                        }
                    } elsif (!is_str($rc)) {
                        return "$p.content: Input should be a valid string "
                            . 'or list';
                    }
                }
                $results{$id} = 1;
            } elsif ($type eq 'document') {
                return "$p: document blocks are only allowed in user "
                    . 'messages' unless $role eq 'user';
                $other = 1;
            } else {
                return "$p.type: Input tag '$type' found using 'type' does "
                    . 'not match any of the expected tags';
            }
        }
        if (%prev_uses) {
            my @missing = grep { !$results{$_} } sort keys %prev_uses;
            return 'messages.' . ($i - 1) . ': `tool_use` ids were found '
                . 'without `tool_result` blocks immediately after: '
                . join(', ', @missing) . '. Each `tool_use` block must '
                . 'have a corresponding `tool_result` block in the next '
                . 'message.' if @missing;
        }
        %prev_uses = %uses;
        $prev_role = $role;
    }

    my %tool;
    if (exists $j->{tools}) {
        my $tools = $j->{tools};
        return 'tools: Input should be a valid list' unless ref $tools eq 'ARRAY';
        for my $i (0 .. $#$tools) {
            my $tl = $tools->[$i];
            return "tools.$i: Input should be a valid dictionary"
                unless ref $tl eq 'HASH';
            for (sort keys %$tl) {
                return "tools.$i.$_: Extra inputs are not permitted"
                    unless /^(?:name|description|input_schema|cache_control|strict)$/;
            }
            return "tools.$i.name: String should match pattern "
                . "'^[a-zA-Z0-9_-]{1,128}\$'"
                unless is_str($tl->{name})
                    && $tl->{name} =~ /^[a-zA-Z0-9_-]{1,128}$/;
            return "tools.$i.description: Input should be a valid string"
                if exists $tl->{description} && !is_str($tl->{description});
            return "tools.$i.input_schema: Field required"
                unless ref $tl->{input_schema} eq 'HASH';
            return "tools.$i.input_schema.type: Input should be 'object'"
                unless ($tl->{input_schema}{type} // '') eq 'object';
            return "tools: Tool names must be unique." if $tool{$tl->{name}}++;
        }
    }
    if (exists $j->{tool_choice}) {
        my $tc = $j->{tool_choice};
        return 'tool_choice: Input should be a valid dictionary'
            unless ref $tc eq 'HASH';
        my $type = $tc->{type} // '';
        return "tool_choice.type: Input tag '$type' does not match any of "
            . "the expected tags: 'auto', 'any', 'tool', 'none'"
            unless $type =~ /^(?:auto|any|tool|none)$/;
        return 'tool_choice: tool_choice may only be specified while '
            . 'providing tools.' unless %tool || $type eq 'none';
        for (sort keys %$tc) {
            return "tool_choice.$type.$_: Extra inputs are not permitted"
                unless $_ eq 'type'
                    || ($_ eq 'name' && $type eq 'tool')
                    || ($_ eq 'disable_parallel_tool_use' && $type ne 'none');
        }
        return 'tool_choice.tool.name: Field required'
            if $type eq 'tool' && !is_str($tc->{name});
        return "tool_choice.tool.name: no tool named $tc->{name}"
            if $type eq 'tool' && !$tool{$tc->{name}};
        return 'tool_choice.disable_parallel_tool_use: Input should be a '
            . 'valid boolean' if exists $tc->{disable_parallel_tool_use}
                && !is_bool($tc->{disable_parallel_tool_use});
    }
    return undef;
}

# %o: key, prefix, answer (the scenario sub)
sub ant_mock {
    my (%o) = @_;
    return sub {
        my $req = shift;
        my $h = $req->{headers};
        return ant_error(404, 'not_found_error', 'Not found')
            unless $req->{method} eq 'POST'
                && $req->{path} eq "$o{prefix}/messages";
        # the key first, as the real API: a wrong one is echoed back here,
        # so that a gateway logging the body would leak it
        return ant_error(401, 'authentication_error',
            'invalid x-api-key' . (defined $h->{'x-api-key'}
                ? ": $h->{'x-api-key'}" : ''))
            unless defined $h->{'x-api-key'} && $h->{'x-api-key'} eq $o{key};
        return ant_bad('anthropic-version: header is required')
            unless defined $h->{'anthropic-version'};
        return ant_bad("anthropic-version: invalid version "
            . "\"$h->{'anthropic-version'}\"")
            unless $VERSIONS{$h->{'anthropic-version'}};
        return ant_bad('content-type: must be application/json')
            unless ($h->{'content-type'} // '') =~ m{^application/json\b}i;
        my $j = eval { decode_json($req->{body}) };
        return ant_bad('There was an error parsing the body of your '
            . 'request') unless ref $j eq 'HASH';
        my $e = check_messages_request($j);
        return ant_bad($e) if defined $e;
        return $o{answer}->($req, $j);
    };
}

sub scenario {
    my $req = shift;
    my @s = $req->{body} =~ /SCN-([A-Za-z0-9-]+)/g;
    return $s[-1] // '';
}

sub streamed { ref $_[0]{stream} && $_[0]{stream} }

my $HOLD = 'release-main-stream';

my $answer_ant = sub {
    my ($req, $j) = @_;
    my $m = $j->{model};
    my $scn = scenario($req);
    my $st = streamed($j);

    if ($m eq 'claude-sonnet-4-5') {
        return ant_bad("test: scenario $scn needs stream")
            if $scn =~ /^stream/ && !$st;
        return ant_bad("test: unexpected stream") if $st && $scn !~ /^stream/;
        return { raw_pieces => $MAIN_PIECES, hold_after => $MAIN_HOLD,
                 release => $HOLD, keepalive => 1 } if $scn eq 'stream-held';
        return { status => 200, headers => [$SSE_CT],
                 chunks => [text_stream('msg_01Plain', 'max_tokens',
                     'Plain ', 'strëam')], chunk_delay => 0.01 }
            if $scn eq 'stream-plain';
        return { status => 200, headers => [$SSE_CT],
                 body => join('', text_stream('msg_01Whole', 'end_turn',
                     'Whole ', 'stream')) }
            if $scn eq 'stream-whole';
        return { status => 200, headers => [$SSE_CT], chunk_delay => 0.05,
                 chunks => [ev_start('msg_01Pings'), ev_text_start(0),
                     ev_text(0, 'tick '), ev_ping(), ev_ping(),
                     ev_text(0, 'tock'), ev_block_stop(0),
                     ev_end('end_turn', 3)] }
            if $scn eq 'stream-pings';
        return ant_message(id => 'msg_01Length', text => 'Truncated ans',
            stop => 'max_tokens', out => 300) if $scn eq 'length';
        return ant_message(id => 'msg_01StopSeq', text => 'Stopped',
            stop => 'stop_sequence', stop_sequence => "\n\nUser:")
            if $scn eq 'stopseq';
        return ant_message(id => 'msg_01Tool', stop => 'tool_use',
            in => 120, out => 48, content => [
                { type => 'text', text => 'Checking.' },
                { type => 'tool_use', id => 'toolu_01X', name => 'get_weather',
                  input => { city => 'Lyon', days => 2 } }])
            if $scn eq 'tool';
        return ant_bad('prompt is too long: 212345 tokens > 200000 maximum')
            if $scn eq 'too-long';
        if ($scn eq 'long-echo') {
            my $u = $j->{messages}[-1]{content};
            $u = join('', map { $_->{text} // '' } @$u) if ref $u;
            my $sy = $j->{system} // '';
            $sy = join('', map { $_->{text} // '' } @$sy) if ref $sy;
            return ant_message(id => 'msg_01Long',
                text => "echo: $u | system: $sy");
        }
        return ant_message(id => 'msg_01Chat', text => 'Bonjour! Ça va?',
            in => 12, cr => 3, out => 5);
    }
    if ($m eq 'claude-mixed') {
        return ant_message(text => 'answer from anthropic');
    }
    if ($m =~ /^(?:fo-529|all-529s?)$/) {
        return ant_error(529, 'overloaded_error',
            'Overloaded RAW-UPSTREAM-BODY');
    }
    if ($m eq 'all-429') {
        return ant_error(429, 'rate_limit_error',
            'This request would exceed the rate limit RAW-UPSTREAM-BODY',
            ['retry-after', '7'],
            ['anthropic-ratelimit-requests-remaining', '0']);
    }
    if ($m eq 'fo-stream' || $m eq 'fo-stream2') {
        return ant_bad('test: stream expected') unless $st;
        return { status => 200, headers => [$SSE_CT],
                 chunks => [ev_start('msg_01Doomed'),
                            ev_error('overloaded_error',
                                'Overloaded RAW-UPSTREAM-BODY')] };
    }
    if ($m eq 'mid-err') {
        return ant_bad('test: stream expected') unless $st;
        return { status => 200, headers => [$SSE_CT], chunk_delay => 0.02,
                 chunks => [ev_start('msg_01Mid'), ev_text_start(0),
                            ev_text(0, 'partial '), ev_text(0, 'answer'),
                            ev_error('overloaded_error', 'Overloaded')] };
    }
    if ($m eq 'close-body') {
        # no Content-Length, no chunks: the body ends with the connection
        my $body = $J->encode({ id => 'msg_01Close', type => 'message',
            role => 'assistant', model => 'claude-sonnet-4-5-20250929',
            content => [{ type => 'text', text => 'RAW-CLOSE-DELIMITED' }],
            stop_reason => 'end_turn',
            usage => { input_tokens => 1, output_tokens => 1 } });
        return { raw_pieces => ["HTTP/1.1 200 OK\r\n"
                     . "Content-Type: application/json\r\n"
                     . "Connection: close\r\n\r\n$body"] };
    }
    if ($m eq 'mid-err-long') {
        # a long message that JSON escaping makes longer still, with
        # two-byte characters so that any cut can split one
        return ant_bad('test: stream expected') unless $st;
        return { status => 200, headers => [$SSE_CT],
                 chunks => [ev_start('msg_01Long'), ev_text_start(0),
                            ev_text(0, 'partial'),
                            ev_error('overloaded_error',
                                     "\x{e9}\"\x01" x 200)] };
    }
    if ($m eq 'claude-nope') {
        return ant_error(404, 'not_found_error', 'model: claude-nope');
    }
    return ant_message(text => "answer from ant for $m");
};

my $answer_ant2 = sub {
    my ($req, $j) = @_;
    my $m = $j->{model};
    if ($m =~ /^all-529s?$/) {
        return ant_error(529, 'overloaded_error',
            'Overloaded RAW-UPSTREAM-BODY');
    }
    if ($m eq 'all-429') {
        return ant_error(429, 'rate_limit_error',
            'This request would exceed the rate limit RAW-UPSTREAM-BODY',
            ['retry-after', '3']);
    }
    if (streamed($j)) {
        return { status => 200, headers => [$SSE_CT],
                 chunks => [text_stream('msg_01Ant2', 'end_turn',
                     'answer ', 'from ant2')] };
    }
    return ant_message(id => 'msg_01Ant2', text => 'answer from ant2');
};

my ($crt2, $key2) = $t->cert('ant2.test');

$t->mock('ant', handler => ant_mock(key => $KEY_ANT, prefix => '/v1',
    answer => $answer_ant));
$t->mock('ant2', tls => [$crt2, $key2], handler => ant_mock(key => $KEY_ANT2,
    prefix => '/anthropic/v1', answer => $answer_ant2));
$t->mock('check', handler => ant_mock(key => $KEY_ANT, prefix => '/v1',
    answer => sub { ant_message(text => 'checked') }));

$t->mock('oai', handler => sub {
    my $req = shift;
    my $j = eval { decode_json($req->{body}) } || {};
    if ($j->{stream}) {
        return { status => 200,
                 headers => [['Content-Type', 'text/event-stream']],
                 chunks => [MG::Test::openai_stream_events(
                     model => $j->{model}, pieces => ['answer ', 'from oai'],
                     id => "chatcmpl-oai-$req->{n}")] };
    }
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion(model => $j->{model},
                 content => 'answer from oai', id => "chatcmpl-oai-$req->{n}") };
});

###########################################################################
# configuration

for my $k ([ant => $KEY_ANT], [bad => $KEY_BAD]) {
    my $path = $t->dir . "/key-$k->[0]";
    open my $fh, '>', $path or die "$path: $!";
    print $fh "$k->[1]\n";
    close $fh;
    chmod 0644, $path;
}
$ENV{MG_TEST_ANT2_KEY} = $KEY_ANT2;

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;

    model_gateway_ssl_trusted_certificate %%CA%%;

    log_format gw '$request_uri $status model=$model_gateway_model '
                  'backend=$model_gateway_backend '
                  'attempts=[$model_gateway_attempts]';

    model_gateway_backend ant {
        type anthropic;
        url http://ant.test:%%PORT_ant%%/v1;
        connect 127.0.0.1:%%PORT_ant%%;
        key_file %%DIR%%/key-ant;
        weight 100;
        model claude-chat claude-sonnet-4-5;
        model mixed claude-mixed;
        model fo-529;
        model all-529;
        model all-529s;
        model all-429;
        model fo-stream;
        model fo-stream2;
        model mid-err;
        model mid-err-long;
        model close-body;
        model bad-req;
        model nf-m claude-nope;
    }

    model_gateway_backend ant2 {
        type anthropic;
        url https://ant2.test:%%PORT_ant2%%/anthropic/v1;
        connect 127.0.0.1:%%PORT_ant2%%;
        key_env MG_TEST_ANT2_KEY;
        anthropic_version 2023-01-01;
        max_tokens 1000;
        weight 1;
        model claude-v claude-haiku-4-5;
        model fo-529;
        model all-529;
        model all-529s;
        model all-429;
        model fo-stream2;
        model mid-err;
        model bad-req;
        model auth-fo;
    }

    model_gateway_backend bad {
        type anthropic;
        url http://bad.test:%%PORT_ant%%/v1;
        connect 127.0.0.1:%%PORT_ant%%;
        key_file %%DIR%%/key-bad;
        weight 100;
        model auth-m;
        model auth-fo;
    }

    model_gateway_backend oai {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_oai%%/v1;
        weight 1;
        model mixed;
        model fo-stream;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        access_log %%DIR%%/gw.log gw;

        location /v1/ {
            model_gateway;
        }
    }
}
EOF

$t->run;

###########################################################################
# helpers

# options of every $t->chat({body}) here: the client's key both ways, a
# body without Content-Type, 20 s
my @CHAT = (headers => [['Authorization', "Bearer $CLIENT_KEY"],
                        ['x-api-key', $CLIENT_KEY]],
            no_content_type => 1, timeout => 20);

sub body_of {
    my $req = shift;
    my $j = eval { decode_json($req->{body} // '') };
    return ref $j eq 'HASH' ? $j : {};
}

# requests a mock received for one provider model id
sub reqs_for {
    my ($mock, $model) = @_;
    return [grep { (body_of($_)->{model} // '') eq $model }
        @{$t->mock_requests($mock)}];
}

sub last_req { my $r = reqs_for(@_); return $r->[-1] // {} }

sub nreq { scalar @{$t->mock_requests($_[0])} }

sub gw_log_line {
    my $model = shift;
    my @l;
    $t->wait_for(sub {
        open my $fh, '<', $t->dir . '/gw.log' or return;
        @l = grep { /model=\Q$model\E / } <$fh>;
        return @l;
    }, 5);
    my $line = $l[-1] // '';
    chomp $line;
    return $line;
}

# the OpenAI error contract of the gateway's own errors
sub contract {
    my ($name, $r, $status, $code) = @_;
    is($r->{status}, $status, "$name: status $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: application/json");
    is($r->{headers}{'x-should-retry'}, 'false', "$name: x-should-retry false");
    my $j = $r->{json};
    ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH' && keys(%$j) == 1,
        "$name: an OpenAI error object") or diag($r->{body});
    my $e = ref $j eq 'HASH' && ref $j->{error} eq 'HASH' ? $j->{error} : {};
    is_deeply([sort keys %$e], [qw(code message param type)],
        "$name: message, type, param, code");
    is($e->{code}, $code, "$name: code " . ($code // 'null'));
    ok(defined $e->{message} && length $e->{message}, "$name: a message");
    unlike($r->{body}, qr/RAW-UPSTREAM-BODY/,
        "$name: the backend's error body is not passed on");
    ok($r->{complete}, "$name: response complete");
    return $e;
}

sub system_text {
    my $s = shift;
    return $s unless ref $s;
    return join "\n", map { $_->{text} } @$s;
}

my $MSGS = [{ role => 'user', content => 'hi' }];

###########################################################################
# 0. the mock checks what it receives, like the real API

{
    my $ok_body = { model => 'claude-x', max_tokens => 10,
        messages => [{ role => 'user', content => 'hi' }] };
    my @h = (['x-api-key', $KEY_ANT], ['anthropic-version', '2023-06-01'],
             ['Content-Type', 'application/json']);
    my $direct = sub {
        my ($body, @hdr) = @_;
        return $t->request(port => 'check', method => 'POST',
            path => '/v1/messages', headers => [@hdr],
            body => ref $body ? $J->encode($body) : $body);
    };
    my $r = $direct->($ok_body, @h);
    is($r->{status}, 200, 'mock: a valid request is answered');
    $r = $direct->($ok_body, @h[1, 2]);
    is($r->{status}, 401, 'mock: no x-api-key: 401');
    is($r->{json} && $r->{json}{error}{type}, 'authentication_error',
        'mock: no x-api-key: authentication_error');
    $r = $direct->($ok_body, ['x-api-key', 'sk-wrong'], @h[1, 2]);
    is($r->{status}, 401, 'mock: wrong x-api-key: 401');
    $r = $direct->($ok_body, @h[0, 2]);
    is($r->{status}, 400, 'mock: no anthropic-version: 400');
    is($r->{json} && $r->{json}{error}{type}, 'invalid_request_error',
        'mock: no anthropic-version: invalid_request_error');
    my %bad = (
        'no max_tokens' => { %$ok_body, max_tokens => undef },
        'max_tokens as a string' => { %$ok_body, max_tokens => '10' },
        'a system role in messages' => { %$ok_body, messages => [
            { role => 'system', content => 'x' },
            { role => 'user', content => 'hi' }] },
        'two user messages in a row' => { %$ok_body, messages => [
            { role => 'user', content => 'a' },
            { role => 'user', content => 'b' }] },
        'tool_result in an assistant message' => { %$ok_body, messages => [
            { role => 'user', content => 'a' },
            { role => 'assistant', content => [{ type => 'tool_result',
                tool_use_id => 'toolu_1', content => 'x' }] }] },
        'tool_result without its tool_use' => { %$ok_body, messages => [
            { role => 'user', content => [{ type => 'tool_result',
                tool_use_id => 'toolu_1', content => 'x' }] }] },
        'an OpenAI field (stream_options)' => { %$ok_body,
            stream_options => { include_usage => JSON::PP::true } },
        'an OpenAI tool shape' => { %$ok_body, tools => [{ type => 'function',
            function => { name => 'f', parameters => { type => 'object' } } }] },
    );
    delete $bad{'no max_tokens'}{max_tokens};
    for my $name (sort keys %bad) {
        $r = $direct->($bad{$name}, @h);
        is($r->{status}, 400, "mock: $name: 400");
        is($r->{json} && $r->{json}{error}{type}, 'invalid_request_error',
            "mock: $name: invalid_request_error");
    }
    $r = $t->request(port => 'check', method => 'POST',
        path => '/v1/chat/completions', headers => [@h],
        body => $J->encode($ok_body));
    is($r->{status}, 404, 'mock: only <prefix>/messages exists');
}

###########################################################################
# 1. non-streaming

{
    my $r = $t->chat({ model => 'claude-chat', messages => [
            { role => 'system', content => 'You are terse.' },
            { role => 'user', content => 'Hello' },
            { role => 'assistant', content => 'Hi! How can I help?' },
            { role => 'user', content => 'Say bonjour.' }],
        temperature => 0.5, stop => ["\n\nUser:"], user => 'user-1234' },
        @CHAT);

    is($r->{status}, 200, 'basic: 200') or diag($r->{body});
    my $c = $r->{json} || {};
    is($c->{object}, 'chat.completion', 'basic: object chat.completion');
    like($c->{id} // '', qr/^chatcmpl-/, 'basic: chatcmpl id');
    is($c->{model}, 'claude-chat', "basic: the client's model name");
    ok(defined $c->{created} && $c->{created} =~ /^\d+$/, 'basic: created');
    is(scalar @{$c->{choices} || []}, 1, 'basic: one choice');
    my $ch = $c->{choices}[0] || {};
    is($ch->{index}, 0, 'basic: choice index 0');
    is($ch->{message}{role}, 'assistant', 'basic: role assistant');
    is($ch->{message}{content}, 'Bonjour! Ça va?', 'basic: content (UTF-8)');
    ok(!exists $ch->{message}{tool_calls}, 'basic: no tool_calls');
    is($ch->{finish_reason}, 'stop', 'basic: end_turn -> stop');
    is_deeply($c->{usage}, { prompt_tokens => 15, completion_tokens => 5,
        total_tokens => 20, prompt_tokens_details => { cached_tokens => 3 } },
        'basic: usage (prompt = input + cache reads, cached_tokens)')
        or diag($J->encode($c->{usage} // {}));
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        'basic: content type');
    ok(!defined $r->{headers}{'anthropic-organization-id'},
        "basic: the backend's other headers are dropped");
    like($r->{headers}{'x-model-gateway-backend'} // '', qr/^ant;/,
        'basic: served by ant');

    my $q = last_req('ant', 'claude-sonnet-4-5');
    my $j = body_of($q);
    is($q->{method}, 'POST', 'basic: backend method POST');
    is($q->{path}, '/v1/messages', 'basic: backend path <prefix>/messages');
    is($q->{headers}{host}, 'ant.test:' . $t->port('ant'), 'basic: Host');
    is($q->{headers}{'x-api-key'}, $KEY_ANT,
        "basic: x-api-key is the backend's key (the client's is dropped)");
    is($q->{headers}{'anthropic-version'}, '2023-06-01',
        'basic: anthropic-version 2023-06-01 by default');
    ok(!defined $q->{headers}{authorization}, 'basic: no Authorization');
    unlike(join("\n", map { "@$_" } @{$q->{header_list} || []}),
        qr/\Q$CLIENT_KEY\E/, "basic: the client's key is not forwarded");
    like($q->{headers}{'content-type'} // '', qr{^application/json},
        'basic: content type');
    is($j->{model}, 'claude-sonnet-4-5', 'basic: model = the provider id');
    is($j->{max_tokens}, 4096, 'basic: max_tokens defaults to 4096');
    is($j->{system}, 'You are terse.', 'basic: top-level system');
    is_deeply([map { $_->{role} } @{$j->{messages} || []}],
        [qw(user assistant user)], 'basic: user, assistant, user');
    is_deeply([map { system_text($_->{content}) } @{$j->{messages} || []}],
        ['Hello', 'Hi! How can I help?', 'Say bonjour.'],
        'basic: message texts');
    is($j->{temperature}, 0.5, 'basic: temperature');
    is_deeply($j->{stop_sequences}, ["\n\nUser:"], 'basic: stop -> stop_sequences');
    is_deeply($j->{metadata}, { user_id => 'user-1234' },
        'basic: user -> metadata.user_id');
    ok(!exists $j->{stream}, 'basic: no stream');
}

{
    my $r = $t->chat({ model => 'claude-chat', messages => $MSGS,
        max_completion_tokens => 300 }, @CHAT);
    is($r->{status}, 200, 'max_completion_tokens: 200');
    is(body_of(last_req('ant', 'claude-sonnet-4-5'))->{max_tokens}, 300,
        'max_completion_tokens -> max_tokens');

    $r = $t->chat({ model => 'claude-chat', messages => $MSGS,
        max_tokens => 200, temperature => 1.5 }, @CHAT);
    is($r->{status}, 200, 'max_tokens, temperature 1.5: 200')
        or diag($r->{body});
    my $j = body_of(last_req('ant', 'claude-sonnet-4-5'));
    is($j->{max_tokens}, 200, 'max_tokens passed on');
    ok(defined $j->{temperature} && $j->{temperature} == 1,
        "temperature 1.5 within Anthropic's 0..1");
}

{
    # a developer and a system message, two user messages in a row
    my $r = $t->chat({ model => 'claude-chat', messages => [
        { role => 'developer', content => 'Rule A.' },
        { role => 'system', content => [{ type => 'text', text => 'Rule B.' }] },
        { role => 'user', content => 'one' },
        { role => 'user', content => [{ type => 'text', text => 'two' }] }] },
        @CHAT);
    is($r->{status}, 200, 'developer+system, user+user: 200')
        or diag($r->{body});
    my $j = body_of(last_req('ant', 'claude-sonnet-4-5'));
    like(system_text($j->{system}) // '', qr/Rule A\..*Rule B\./s,
        'developer+system: both in top-level system, in order');
    is(scalar @{$j->{messages} || []}, 1, 'user+user: one user message');
    like($J->encode($j->{messages} || []), qr/one.*two/s,
        'user+user: both texts kept');
}

for my $case (['length', 'max_tokens', 'length'],
              ['stopseq', 'stop_sequence', 'stop'])
{
    my ($scn, $reason, $finish) = @$case;
    my $r = $t->chat({ model => 'claude-chat',
        messages => [{ role => 'user', content => "go SCN-$scn" }] }, @CHAT);
    is($r->{status}, 200, "$reason: 200");
    is($r->{json} && $r->{json}{choices}[0]{finish_reason}, $finish,
        "$reason -> $finish");
}

{
    # the custom anthropic_version and max_tokens of another backend
    my $r = $t->chat({ model => 'claude-v', messages => $MSGS }, @CHAT);
    is($r->{status}, 200, 'custom version: 200') or diag($r->{body});
    is($r->{json} && $r->{json}{choices}[0]{message}{content},
        'answer from ant2', "custom version: ant2's answer");
    is($r->{json} && $r->{json}{model}, 'claude-v', 'custom version: model');
    my $q = last_req('ant2', 'claude-haiku-4-5');
    is($q->{path}, '/anthropic/v1/messages', 'custom version: path prefix');
    is($q->{sni}, 'ant2.test', 'custom version: https, SNI');
    is($q->{headers}{host}, 'ant2.test:' . $t->port('ant2'),
        'custom version: Host');
    is($q->{headers}{'x-api-key'}, $KEY_ANT2, 'custom version: key_env key');
    is($q->{headers}{'anthropic-version'}, '2023-01-01',
        'custom version: anthropic_version 2023-01-01');
    ok(!defined $q->{headers}{authorization},
        'custom version: no Authorization');
    is(body_of($q)->{max_tokens}, 1000,
        "custom version: the backend's max_tokens default");
}

# Long texts take the translation fast path (set aside, put back as they
# were escaped): both ways they arrive exactly, escapes and all.

{
    my $long = join('', map { "line $_: a \"quoted\" word, a back\\slash,"
        . " a tab\t, caf\x{e9} \x{1F600} and \x{2028} done\n" } 1 .. 12);
    my $sys = 'You are a careful reviewer of long texts. ' x 5;
    my $r = $t->chat({ model => 'claude-chat', messages => [
            { role => 'system', content => $sys },
            { role => 'user', content => "$long SCN-long-echo" }] }, @CHAT);

    is($r->{status}, 200, 'long texts: 200') or diag($r->{body});
    my $c = ($r->{json} || {})->{choices}[0]{message}{content} // '';
    is($c, "echo: $long SCN-long-echo | system: $sys",
        'long texts: request and answer texts exact both ways');
}

###########################################################################
# 2. tools both ways

my $TOOLS = [
    { type => 'function', function => { name => 'get_weather',
        description => 'Current weather',
        parameters => { type => 'object',
            properties => { city => { type => 'string' },
                            days => { type => 'integer' } },
            required => ['city'] } } },
    { type => 'function', function => { name => 'get_time' } },
];

{
    my $r = $t->chat({ model => 'claude-chat',
        messages => [
            { role => 'system', content => 'Use tools.' },
            { role => 'user', content => 'Weather in Paris and Lyon?' },
            { role => 'assistant', content => undef, tool_calls => [
                { id => 'call_1', type => 'function', function => {
                    name => 'get_weather', arguments => '{"city":"Paris"}' } },
                { id => 'functions.get_weather:1', type => 'function',
                  function => { name => 'get_weather',
                                arguments => '{"city":"Lyon","days":2}' } }] },
            { role => 'tool', tool_call_id => 'call_1',
              content => '{"temp_c":18}' },
            { role => 'tool', tool_call_id => 'functions.get_weather:1',
              content => [{ type => 'text', text => '{"temp_c":20}' }] },
            { role => 'user', content => 'And tomorrow? SCN-tool' }],
        tools => $TOOLS,
        tool_choice => { type => 'function',
                         function => { name => 'get_weather' } } }, @CHAT);

    is($r->{status}, 200, 'tools: 200') or diag($r->{body});
    my $j = body_of(last_req('ant', 'claude-sonnet-4-5'));
    is($j->{system}, 'Use tools.', 'tools: system');
    is_deeply($j->{tools}, [
        { name => 'get_weather', description => 'Current weather',
          input_schema => { type => 'object',
              properties => { city => { type => 'string' },
                              days => { type => 'integer' } },
              required => ['city'] } },
        { name => 'get_time',
          input_schema => { type => 'object', properties => {} } }],
        'tools: function tools -> name, description, input_schema')
        or diag($J->encode($j->{tools} // []));
    is_deeply($j->{tool_choice}, { type => 'tool', name => 'get_weather' },
        'tools: named tool_choice -> {type: tool, name}');
    my $m = $j->{messages} || [];
    is_deeply([map { $_->{role} } @$m], [qw(user assistant user)],
        'tools: user, assistant, user (tool results in a user turn)');
    my $a = ref $m->[1]{content} eq 'ARRAY' ? $m->[1]{content} : [];
    is_deeply($a, [
        { type => 'tool_use', id => 'call_1', name => 'get_weather',
          input => { city => 'Paris' } },
        { type => 'tool_use', id => 'functions_get_weather_1',
          name => 'get_weather', input => { city => 'Lyon', days => 2 } }],
        'tools: tool_calls -> tool_use blocks, arguments as objects, ids '
        . 'made valid') or diag($J->encode($m->[1] // {}));
    my $u = ref $m->[2]{content} eq 'ARRAY' ? $m->[2]{content} : [];
    is_deeply([map { $_->{type} } @$u], [qw(tool_result tool_result text)],
        'tools: tool_result blocks first, then the user text');
    is_deeply([map { $_->{tool_use_id} } @$u[0, 1]],
        ['call_1', 'functions_get_weather_1'],
        'tools: tool_result ids pair with the tool_use ids');
    is(system_text($u->[0]{content}), '{"temp_c":18}',
        'tools: tool result content');
    is(system_text($u->[1]{content}), '{"temp_c":20}',
        'tools: tool result content from parts');

    my $c = $r->{json} || {};
    my $msg = $c->{choices}[0]{message} || {};
    is($c->{choices}[0]{finish_reason}, 'tool_calls',
        'tools: tool_use -> tool_calls');
    is($msg->{content}, 'Checking.', 'tools: text beside the call');
    is(scalar @{$msg->{tool_calls} || []}, 1, 'tools: one tool call');
    my $tc = $msg->{tool_calls}[0] || {};
    is($tc->{id}, 'toolu_01X', 'tools: call id');
    is($tc->{type}, 'function', 'tools: call type function');
    is($tc->{function}{name}, 'get_weather', 'tools: function name');
    my $args = $tc->{function}{arguments};
    ok(defined $args && !ref $args, 'tools: arguments is a JSON string');
    is_deeply(eval { decode_json($args) }, { city => 'Lyon', days => 2 },
        'tools: arguments decode to the tool input');
    is($c->{usage}{prompt_tokens}, 120, 'tools: usage prompt_tokens');
    is($c->{usage}{completion_tokens}, 48, 'tools: usage completion_tokens');
}

for my $case (['required', undef, { type => 'any' }],
              ['auto', JSON::PP::false,
               { type => 'auto', disable_parallel_tool_use => JSON::PP::true }],
              ['none', undef, { type => 'none' }])
{
    my ($choice, $ptc, $want) = @$case;
    my $r = $t->chat({ model => 'claude-chat', messages => $MSGS,
        tools => $TOOLS, tool_choice => $choice,
        (defined $ptc ? (parallel_tool_calls => $ptc) : ()) }, @CHAT);
    my $name = "tool_choice $choice" . (defined $ptc ? ', no parallel' : '');
    is($r->{status}, 200, "$name: 200") or diag($r->{body});
    is_deeply(body_of(last_req('ant', 'claude-sonnet-4-5'))->{tool_choice},
        $want, "$name: mapped");
}

###########################################################################
# 3. images

{
    my $r = $t->chat({ model => 'claude-chat', messages => [{ role => 'user',
        content => [
            { type => 'text', text => 'What is in these images?' },
            { type => 'image_url',
              image_url => { url => 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==' } },
            { type => 'image_url',
              image_url => { url => 'data:image/jpg;base64,/9j/4AAQSkZJRg==',
                             detail => 'low' } },
            { type => 'image_url',
              image_url => { url => 'https://example.com/cat.jpg' } }] }] },
        @CHAT);
    is($r->{status}, 200, 'images: 200') or diag($r->{body});
    my $m = body_of(last_req('ant', 'claude-sonnet-4-5'))->{messages} || [];
    is_deeply($m->[0]{content}, [
        { type => 'text', text => 'What is in these images?' },
        { type => 'image', source => { type => 'base64',
            media_type => 'image/png', data => 'iVBORw0KGgoAAAANSUhEUg==' } },
        { type => 'image', source => { type => 'base64',
            media_type => 'image/jpeg', data => '/9j/4AAQSkZJRg==' } },
        { type => 'image', source => { type => 'url',
            url => 'https://example.com/cat.jpg' } }],
        'images: data URLs -> base64 sources, http URL -> url source')
        or diag($J->encode($m));
}

###########################################################################
# 4. streaming

sub chunks_of { grep { ref $_ eq 'HASH' } MG::Test::sse_json(@_) }

sub tool_calls_of {
    my @chunks = @_;
    my (%tc, @order);
    for my $c (@chunks) {
        for my $d (@{$c->{choices}[0]{delta}{tool_calls} || []}) {
            my $i = $d->{index};
            push @order, $i;
            my $x = $tc{$i} //= { args => '' };
            $x->{id} //= $d->{id};
            $x->{type} //= $d->{type};
            $x->{name} //= $d->{function}{name};
            $x->{args} .= $d->{function}{arguments} // '';
        }
    }
    return (\%tc, \@order);
}

{
    my $s = $t->stream(method => 'POST', path => '/v1/chat/completions',
        headers => [['Authorization', "Bearer $CLIENT_KEY"]],
        json => { model => 'claude-chat', stream => JSON::PP::true,
            stream_options => { include_usage => JSON::PP::true },
            messages => [{ role => 'user', content => 'Hi SCN-stream-held' }],
            tools => $TOOLS });
    is($s->status, 200, 'stream: 200');
    like($s->header('content-type') // '', qr{^text/event-stream},
        'stream: event stream');
    ok(!defined $s->header('anthropic-organization-id'),
        "stream: the backend's other headers are dropped");

    my $e1 = $s->next_event(5);
    my $e2 = $s->next_event(5);
    my ($c1) = chunks_of($e1);
    my ($c2) = chunks_of($e2);
    is($c1 && $c1->{choices}[0]{delta}{role}, 'assistant',
        'stream: role chunk before the mock sent the rest');
    is($c2 && $c2->{choices}[0]{delta}{content}, 'Hel',
        'stream: first content before the mock sent the rest');
    ok(!-e $t->dir . "/$HOLD", 'stream: the mock is still holding');
    my $e3 = $s->next_event(0.5);
    is($e3, undef, 'stream: nothing more while the mock holds');
    $t->release($HOLD);
    my $rest = $s->rest(10);
    ok($s->complete, 'stream: response complete');
    is($s->trailing(5), '', 'stream: the response ends once');
    my $all = join '', grep { defined } $e1, $e2, $e3, $rest;

    my @data = MG::Test::sse_data($all);
    my @chunks = chunks_of($all);
    is($data[-1], '[DONE]', 'stream: ends with [DONE]');
    is(scalar(grep { $_ eq '[DONE]' } @data), 1, 'stream: one [DONE]');
    unlike($all, qr/^event:/m, 'stream: no Anthropic event names');
    ok(!(grep { exists $_->{error} } @chunks), 'stream: no error');
    is(scalar(grep { ($_->{object} // '') eq 'chat.completion.chunk' } @chunks),
        scalar @chunks, 'stream: every chunk is a chat.completion.chunk');
    is(scalar(grep { ($_->{model} // '') eq 'claude-chat' } @chunks),
        scalar @chunks, "stream: every chunk has the client's model");
    my %ids = map { ($_->{id} // '') => 1 } @chunks;
    is(scalar keys %ids, 1, 'stream: one id');
    like((keys %ids)[0], qr/^chatcmpl-/, 'stream: chatcmpl id');

    my @choice = grep { @{$_->{choices} || []} } @chunks;
    is_deeply($choice[0]{choices}[0]{delta},
        { role => 'assistant', content => '' }, 'stream: role chunk first');
    is(join('', map { $_->{choices}[0]{delta}{content} // '' } @choice),
        $MAIN_TEXT, 'stream: the text, across cut UTF-8 characters');
    my ($tc, $order) = tool_calls_of(@choice);
    is_deeply([sort keys %$tc], [0, 1], 'stream: tool call indexes 0 and 1');
    is_deeply($tc->{0}, { id => 'toolu_01A', type => 'function',
        name => 'get_weather', args => '{"city": "Paris"}' },
        'stream: first tool call (id, name, arguments pieces)');
    is_deeply($tc->{1}, { id => 'toolu_01B', type => 'function',
        name => 'get_time', args => '{"tz": "CET"}' },
        'stream: second tool call');
    ok((join(',', @$order) =~ /^(?:0,)+(?:1,?)+$/),
        'stream: tool call deltas in order') or diag("@$order");
    my @fin = grep { defined $_->{choices}[0]{finish_reason} } @choice;
    is(scalar @fin, 1, 'stream: one finish chunk');
    is($fin[0] && $fin[0]{choices}[0]{finish_reason}, 'tool_calls',
        'stream: tool_use -> tool_calls');
    is($choice[-1], $fin[0], 'stream: the finish chunk is the last choice chunk');

    my @usage = grep { ref $_->{usage} eq 'HASH' } @chunks;
    is(scalar @usage, 1, 'include_usage: one usage chunk');
    is($chunks[-1], $usage[0], 'include_usage: the usage chunk is last, '
        . 'before [DONE]');
    is_deeply($usage[0] && $usage[0]{choices}, [],
        'include_usage: its choices are []');
    is_deeply($usage[0] && $usage[0]{usage}, { prompt_tokens => 35,
        completion_tokens => 42, total_tokens => 77,
        prompt_tokens_details => { cached_tokens => 10 } },
        'include_usage: usage from message_start and message_delta')
        or diag($J->encode($usage[0] // {}));

    my $q = last_req('ant', 'claude-sonnet-4-5');
    my $j = body_of($q);
    ok(ref $j->{stream} && $j->{stream}, 'stream: the backend got stream true');
    ok(!exists $j->{stream_options}, 'stream: no stream_options sent');
    is($q->{headers}{'x-api-key'}, $KEY_ANT, 'stream: x-api-key');
    is($q->{headers}{'anthropic-version'}, '2023-06-01',
        'stream: anthropic-version');
    ok(!$t->wait_mock_event('ant', 'hold_timeout', 0.1),
        'stream: the mock was released, not timed out');
}

{
    # the whole stream in one read, framed by a length: its last events
    # and the end of the response leave together, and the response ends
    # only once
    my $s = $t->stream(method => 'POST', path => '/v1/chat/completions',
        json => { model => 'claude-chat', stream => JSON::PP::true,
            messages => [{ role => 'user',
                           content => 'Hi SCN-stream-whole' }] });
    is($s->status, 200, 'stream in one read: 200');
    my $body = $s->rest(10);
    ok($s->complete, 'stream in one read: response complete');
    is($s->trailing(5), '', 'stream in one read: the response ends once');
    my @data = MG::Test::sse_data($body);
    is($data[-1], '[DONE]', 'stream in one read: [DONE] last');
    is(scalar(grep { $_ eq '[DONE]' } @data), 1,
        'stream in one read: one [DONE]');
    is(join('', map { $_->{choices}[0]{delta}{content} // '' }
        grep { @{$_->{choices} || []} } chunks_of($body)), 'Whole stream',
        'stream in one read: text');
}

{
    my $r = $t->chat({ model => 'claude-chat', stream => JSON::PP::true,
        messages => [{ role => 'user', content => 'Hi SCN-stream-plain' }] },
        @CHAT);
    is($r->{status}, 200, 'stream without include_usage: 200');
    my @data = MG::Test::sse_data($r->{body});
    my @chunks = chunks_of($r->{body});
    ok($r->{complete}, 'stream without include_usage: response complete');
    is($data[-1], '[DONE]', 'stream without include_usage: [DONE] last')
        or diag($r->{body});
    is(join('', map { $_->{choices}[0]{delta}{content} // '' }
        grep { @{$_->{choices} || []} } @chunks), 'Plain strëam',
        'stream without include_usage: text');
    ok(!(grep { !@{$_->{choices} || []} } @chunks),
        'stream without include_usage: no chunk without choices');
    ok(!(grep { ref $_->{usage} eq 'HASH' } @chunks),
        'stream without include_usage: no usage');
    my @fin = grep { @{$_->{choices} || []}
        && defined $_->{choices}[0]{finish_reason} } @chunks;
    is(scalar @fin, 1, 'stream without include_usage: one finish chunk');
    is($fin[0] && $fin[0]{choices}[0]{finish_reason}, 'length',
        'stream: max_tokens -> length');
}

{
    # keep-alive pings on their own, as Anthropic sends them during a long
    # generation: they translate to nothing, and must not break the stream
    my $r = $t->chat({ model => 'claude-chat', stream => JSON::PP::true,
        messages => [{ role => 'user', content => 'Hi SCN-stream-pings' }] },
        @CHAT);
    is($r->{status}, 200, 'stream with lone pings: 200');
    ok($r->{complete}, 'stream with lone pings: response complete');
    my @data = MG::Test::sse_data($r->{body});
    my @chunks = chunks_of($r->{body});
    is(join('', map { $_->{choices}[0]{delta}{content} // '' }
        grep { @{$_->{choices} || []} } @chunks), 'tick tock',
        'stream with lone pings: all the text');
    is(scalar(grep { @{$_->{choices} || []}
        && ($_->{choices}[0]{finish_reason} // '') eq 'stop' } @chunks), 1,
        'stream with lone pings: finish chunk (end_turn -> stop)');
    ok(!(grep { exists $_->{error} } @chunks),
        'stream with lone pings: no error event');
    is($data[-1], '[DONE]', 'stream with lone pings: [DONE] last')
        or diag($r->{body});
}

###########################################################################
# 5. a 200 stream that begins with an error event fails over

{
    my $r = $t->chat({ model => 'fo-stream', stream => JSON::PP::true,
        messages => $MSGS }, @CHAT);
    is($r->{status}, 200, 'stream error first, then openai: 200');
    my @data = MG::Test::sse_data($r->{body});
    my @chunks = chunks_of($r->{body});
    is(join('', map { $_->{choices}[0]{delta}{content} // '' } @chunks),
        'answer from oai', "stream error first, then openai: oai's stream");
    ok(!(grep { ($_->{id} // '') !~ /^chatcmpl-oai-/ } @chunks),
        'stream error first, then openai: only oai chunks');
    ok(!(grep { exists $_->{error} } @chunks),
        'stream error first, then openai: no error event');
    unlike($r->{body}, qr/RAW-UPSTREAM-BODY|msg_01Doomed/,
        'stream error first, then openai: nothing of the first attempt');
    is(scalar(grep { $_ eq '[DONE]' } @data), 1,
        'stream error first, then openai: one [DONE]');
    is($data[-1], '[DONE]', 'stream error first, then openai: [DONE] last');
    is(scalar @{reqs_for('ant', 'fo-stream')}, 1,
        'stream error first, then openai: ant tried once');
    my $o = reqs_for('oai', 'fo-stream');
    is(scalar @$o, 1, 'stream error first, then openai: oai got it');
    is(body_of($o->[0] // {})->{messages}[0]{content}, 'hi',
        'stream error first, then openai: oai got the OpenAI body');
    like(gw_log_line('fo-stream'),
        qr/ 200 model=fo-stream backend=oai attempts=\[ant:stream_error, ?oai:200\]$/,
        'stream error first, then openai: attempts');
}

{
    my $r = $t->chat({ model => 'fo-stream2', stream => JSON::PP::true,
        messages => $MSGS }, @CHAT);
    is($r->{status}, 200, 'stream error first, then anthropic: 200');
    my @data = MG::Test::sse_data($r->{body});
    my @chunks = chunks_of($r->{body});
    is(join('', map { $_->{choices}[0]{delta}{content} // '' } @chunks),
        'answer from ant2', "stream error first, then anthropic: ant2's text");
    is(scalar(grep { ($_->{choices}[0]{delta}{role} // '') eq 'assistant' }
        @chunks), 1, 'stream error first, then anthropic: one role chunk');
    ok(!(grep { exists $_->{error} } @chunks),
        'stream error first, then anthropic: no error event');
    is($data[-1], '[DONE]', 'stream error first, then anthropic: [DONE] last');
    is(scalar(grep { $_ eq '[DONE]' } @data), 1,
        'stream error first, then anthropic: one [DONE]');
    is(scalar @{reqs_for('ant', 'fo-stream2')}, 1,
        'stream error first, then anthropic: ant tried once');
    is(scalar @{reqs_for('ant2', 'fo-stream2')}, 1,
        'stream error first, then anthropic: ant2 tried once');
}

###########################################################################
# 6. a stream that fails after content

{
    my $r = $t->chat({ model => 'mid-err', stream => JSON::PP::true,
        messages => $MSGS }, @CHAT);
    is($r->{status}, 200, 'error after content: 200');
    ok($r->{complete}, 'error after content: response complete');
    my @data = MG::Test::sse_data($r->{body});
    my @chunks = chunks_of($r->{body});
    my @text = grep { !exists $_->{error} } @chunks;
    is(join('', map { $_->{choices}[0]{delta}{content} // '' } @text),
        'partial answer', 'error after content: the text was sent');
    my @err = grep { exists $_->{error} } @chunks;
    is(scalar @err, 1, 'error after content: one error event');
    my $e = $err[0] && ref $err[0]{error} eq 'HASH' ? $err[0]{error} : {};
    ok(defined $e->{message} && length $e->{message},
        'error after content: an OpenAI error object with a message');
    ok(defined $e->{type}, 'error after content: with a type');
    is($e->{code}, 'overloaded', 'error after content: overloaded');
    is($data[-1], '[DONE]', 'error after content: [DONE] last');
    my $penult = eval { decode_json($data[-2] // '') };
    ok(ref $penult eq 'HASH' && exists $penult->{error},
        'error after content: the error event right before [DONE]')
        or diag($r->{body});
    is(scalar(grep { $_ eq '[DONE]' } @data), 1, 'error after content: one [DONE]');
    is(scalar @{reqs_for('ant', 'mid-err')}, 1, 'error after content: one attempt');
    is(scalar @{reqs_for('ant2', 'mid-err')}, 0,
        'error after content: not retried once content was sent');
    ok($t->wait_log(qr/stream from backend "ant" failed/),
        'error after content: logged');

    # a close-delimited answer cannot be translated: rejected, never raw
    $r = $t->chat({ model => 'close-body', messages => $MSGS }, @CHAT);
    is($r->{status}, 502, 'close-delimited answer: 502');
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        'close-delimited answer: a JSON error');
    ok(ref(($r->{json} // {})->{error}) eq 'HASH',
        'close-delimited answer: an OpenAI error object');
    unlike($r->{body} // '', qr/RAW-CLOSE-DELIMITED|msg_01Close/,
        'close-delimited answer: the provider\'s body is not passed raw');
    ok($t->wait_log(qr/backend "ant" sent a response delimited by the connection's end/),
        'close-delimited answer: logged');

    # a provider message longer than the error event's room: the event is
    # still whole JSON, the message a prefix cut on a character boundary
    $r = $t->chat({ model => 'mid-err-long', stream => JSON::PP::true,
        messages => $MSGS }, @CHAT);
    is($r->{status}, 200, 'long error after content: 200');
    @data = MG::Test::sse_data($r->{body});
    is($data[-1], '[DONE]', 'long error after content: [DONE] last');
    my $ev = eval { JSON::PP->new->utf8->decode($data[-2] // '') };
    ok(ref $ev eq 'HASH' && ref $ev->{error} eq 'HASH',
        'long error after content: the error event is valid JSON')
        or diag($data[-2]);
    my $msg = ($ev && ref $ev->{error} eq 'HASH') ? $ev->{error}{message} : '';
    ok(length($msg // '') > 10, 'long error after content: with a message');
    ok(index("\x{e9}\"\x01" x 200, $msg) >= 0
       || index("\x{e9}\"\x01" x 200, $msg =~ s/^.*?: //sr) >= 0,
       'long error after content: the message is the provider\'s, cut '
       . 'whole characters') or diag($msg);
}

###########################################################################
# 7. errors

{
    my $r = $t->chat({ model => 'all-529', messages => $MSGS }, @CHAT);
    contract('529 everywhere', $r, 503, 'overloaded');
    is(scalar @{reqs_for('ant', 'all-529')}, 1, '529 everywhere: ant tried');
    is(scalar @{reqs_for('ant2', 'all-529')}, 1, '529 everywhere: ant2 tried');
    like(gw_log_line('all-529'), qr/attempts=\[ant:529, ?ant2:529\]$/,
        '529 everywhere: attempts');

    $r = $t->chat({ model => 'all-529s', messages => $MSGS,
        stream => JSON::PP::true }, @CHAT);
    contract('529 everywhere, streaming request', $r, 503, 'overloaded');
    is(scalar @{reqs_for('ant', 'all-529s')}, 1,
        '529 everywhere, streaming request: ant tried');
    is(scalar @{reqs_for('ant2', 'all-529s')}, 1,
        '529 everywhere, streaming request: ant2 tried');
}

{
    my $r = $t->chat({ model => 'fo-529', messages => $MSGS }, @CHAT);
    is($r->{status}, 200, '529 then success: 200');
    is($r->{json} && $r->{json}{choices}[0]{message}{content},
        'answer from ant2', "529 then success: ant2's answer");
    unlike($r->{body}, qr/RAW-UPSTREAM-BODY/, '529 then success: 529 body hidden');
    is(scalar @{reqs_for('ant', 'fo-529')}, 1, '529 then success: ant tried');
    is(scalar @{reqs_for('ant2', 'fo-529')}, 1, '529 then success: ant2 tried');
    like(gw_log_line('fo-529'),
        qr/ 200 model=fo-529 backend=ant2 attempts=\[ant:529, ?ant2:200\]$/,
        '529 then success: attempts');
}

{
    my $r = $t->chat({ model => 'all-429', messages => $MSGS }, @CHAT);
    contract('429 everywhere', $r, 429, 'rate_limit_exceeded');
    is($r->{headers}{'retry-after'}, '3',
        '429 everywhere: Retry-After, the shortest wait');
    is(scalar @{reqs_for('ant', 'all-429')}, 1, '429 everywhere: ant tried');
    is(scalar @{reqs_for('ant2', 'all-429')}, 1, '429 everywhere: ant2 tried');
}

{
    my $r = $t->chat({ model => 'auth-m', messages => $MSGS }, @CHAT);
    my $e = contract('401', $r, 502, 'backend_auth_failed');
    is($e->{message}, 'backend authentication failed', '401: message');
    unlike($r->{body}, qr/\Q$KEY_BAD\E|x-api-key/, '401: no key in the answer');
    my $q = reqs_for('ant', 'auth-m');
    is(scalar @$q, 1, '401: one attempt');
    is($q->[0] && $q->[0]{headers}{'x-api-key'}, $KEY_BAD,
        "401: the backend got bad's key");
    is($q->[0] && $q->[0]{headers}{host}, 'bad.test:' . $t->port('ant'),
        '401: Host of bad');
    ok($t->wait_log(qr/backend "bad" rejected the gateway's credential/),
        '401: logged (without the body)');

    $r = $t->chat({ model => 'auth-fo', messages => $MSGS }, @CHAT);
    is($r->{status}, 200, '401 then success: 200');
    is($r->{json} && $r->{json}{choices}[0]{message}{content},
        'answer from ant2', "401 then success: ant2's answer");
    like(gw_log_line('auth-fo'), qr/attempts=\[bad:401, ?ant2:200\]$/,
        '401 then success: attempts');
}

{
    # Anthropic judges the request: its message reaches the client
    my $r = $t->chat({ model => 'bad-req', messages => $MSGS,
        max_tokens => 100000 }, @CHAT);
    is($r->{status}, 400, 'Anthropic 400: 400');
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
    ok(ref $e eq 'HASH', 'Anthropic 400: an OpenAI error object')
        or diag($r->{body});
    $e = {} unless ref $e eq 'HASH';
    is($e->{type}, 'invalid_request_error', 'Anthropic 400: type');
    is($e->{message}, 'max_tokens: 100000 > 64000, which is the maximum '
        . 'allowed number of output tokens for bad-req',
        "Anthropic 400: Anthropic's message");
    ok(!exists $r->{json}{type}, 'Anthropic 400: not the Anthropic shape');
    is(scalar @{reqs_for('ant', 'bad-req')}, 1, 'Anthropic 400: one attempt');
    is(scalar @{reqs_for('ant2', 'bad-req')}, 0, 'Anthropic 400: not retried');

    $r = $t->chat({ model => 'claude-chat', messages => [
        { role => 'user', content => 'a very long prompt SCN-too-long' }] },
        @CHAT);
    is($r->{status}, 400, 'prompt too long: 400');
    is($r->{json} && $r->{json}{error}{code}, 'context_length_exceeded',
        'prompt too long: context_length_exceeded');
    like($r->{json} && $r->{json}{error}{message} // '',
        qr/prompt is too long/, "prompt too long: Anthropic's message");
}

{
    my $r = $t->chat({ model => 'nf-m', messages => $MSGS }, @CHAT);
    is($r->{status}, 404, 'Anthropic 404: 404');
    my $e = $r->{json} && ref $r->{json}{error} eq 'HASH' ? $r->{json}{error} : {};
    is($e->{type}, 'invalid_request_error', 'Anthropic 404: type');
    is($e->{code}, 'model_not_found', 'Anthropic 404: model_not_found');
    is(scalar @{reqs_for('ant', 'claude-nope')}, 1, 'Anthropic 404: one attempt');
}

###########################################################################
# 8. what Anthropic cannot honour

for my $case (['n', 2], ['logprobs', JSON::PP::true]) {
    my ($field, $value) = @$case;
    my $before = nreq('ant');
    my $r = $t->chat({ model => 'claude-chat', messages => $MSGS,
        $field => $value }, @CHAT);
    my $e = contract("$field only on anthropic", $r, 400, undef);
    is($e->{param}, $field, "$field only on anthropic: param $field");
    is($e->{type}, 'invalid_request_error',
        "$field only on anthropic: invalid_request_error");
    is(nreq('ant'), $before, "$field only on anthropic: nothing sent");
}

for my $case (['frequency_penalty', 0.5], ['presence_penalty', 0.5],
              ['logit_bias', { '50256' => -100 }],
              ['response_format', { type => 'json_object' }])
{
    my ($field, $value) = @$case;
    my $before = nreq('ant');
    my $r = $t->chat({ model => 'claude-chat', messages => $MSGS,
        $field => $value }, @CHAT);
    my $e = contract("$field only on anthropic", $r, 400, undef);
    is($e->{param}, $field, "$field only on anthropic: param $field");
    is(nreq('ant'), $before, "$field only on anthropic: nothing sent");
}

{
    # values that ask for nothing Anthropic lacks are fine (and not sent)
    my $r = $t->chat({ model => 'claude-chat', messages => $MSGS, n => 1,
        logprobs => JSON::PP::false, frequency_penalty => 0 }, @CHAT);
    is($r->{status}, 200, 'n 1, logprobs false, penalty 0: 200')
        or diag($r->{body});
}

{
    # a client's own anthropic-version header: the backend gets exactly
    # the configured one (two would make an invalid request)
    my $r = $t->request(method => 'POST', path => '/v1/chat/completions',
        headers => [['anthropic-version', '2023-01-01'],
                    ['anthropic-beta', 'prompt-caching-2024-07-31']],
        body => $J->encode({ model => 'claude-chat', messages => $MSGS }));
    is($r->{status}, 200, "client's anthropic-version header: 200")
        or diag($r->{body});
    my $q = last_req('ant', 'claude-sonnet-4-5');
    is(scalar(grep { lc $_->[0] eq 'anthropic-version' }
        @{$q->{header_list} || []}), 1,
        "client's anthropic-version header: one anthropic-version sent");
    is($q->{headers}{'anthropic-version'}, '2023-06-01',
        "client's anthropic-version header: the backend's version");
}

{
    my $r = $t->chat({ model => 'mixed', messages => $MSGS }, @CHAT);
    is($r->{status}, 200, 'mixed: 200');
    is($r->{json} && $r->{json}{choices}[0]{message}{content},
        'answer from anthropic', 'mixed: anthropic (weight 100) first');

    for my $case (['n', 2], ['logprobs', JSON::PP::true]) {
        my ($field, $value) = @$case;
        my $before = nreq('ant');
        my $obefore = nreq('oai');
        my $body = { model => 'mixed', messages => $MSGS, $field => $value };
        $r = $t->chat($body, @CHAT);
        is($r->{status}, 200, "$field, mixed: 200") or diag($r->{body});
        is($r->{json} && $r->{json}{choices}[0]{message}{content},
            'answer from oai', "$field, mixed: the openai backend answers");
        is(nreq('ant'), $before, "$field, mixed: anthropic got nothing");
        is(nreq('oai'), $obefore + 1, "$field, mixed: oai got it");
        my $q = $t->mock_requests('oai')->[-1] // {};
        is($q->{body}, $J->encode($body),
            "$field, mixed: the client's body, byte for byte");
    }
}

{
    my $before = nreq('ant');
    my $r = $t->request(method => 'POST', path => '/v1/embeddings',
        body => $J->encode({ model => 'claude-chat', input => 'hello' }));
    ok(defined $r->{status} && $r->{status} >= 400 && $r->{status} < 500,
        'embeddings on anthropic: 4xx') or diag($r->{status});
    ok(ref $r->{json} eq 'HASH' && ref $r->{json}{error} eq 'HASH'
        && defined $r->{json}{error}{message},
        'embeddings on anthropic: an OpenAI error') or diag($r->{body});
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        'embeddings on anthropic: application/json');
    is($r->{headers}{'x-should-retry'}, 'false',
        'embeddings on anthropic: x-should-retry false');
    is(nreq('ant'), $before, 'embeddings on anthropic: nothing sent');
}

###########################################################################
# keys never in logs

{
    my $log = $t->error_log;
    for my $k ($KEY_ANT, $KEY_ANT2, $KEY_BAD) {
        unlike($log, qr/\Q$k\E/, 'key not in error.log');
    }
}

$t->done_testing;
