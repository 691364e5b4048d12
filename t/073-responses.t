#!/usr/bin/perl

# OpenAI Responses and Conversations (README "OpenAI Responses and
# Conversations", "Sessions", "Redis", "Errors"):
#   - chains of previous_response_id across two nginx nodes (one Redis),
#     non-streaming and streaming, each follow-up sent at once on the other
#     node, with weights that make a stateless choice pick the other backend;
#   - the id is recorded ("mg:resp:<id>" names the backend, PTTL about 30
#     days) before the last byte reaches the client, checked also while
#     Redis is made to stall (DEBUG SLEEP) when the id is written;
#   - GET / DELETE / input_items (with its query) / cancel of a response,
#     conversations ("mg:conv:<id>" without expiry; "conversation" as a
#     string and as {"id": ...}; .../items) all reach the creating backend;
#   - no failover for ids: the creating backend's 503 gives the client a
#     502 and the other backend receives nothing;
#   - an id wins over a session pinned to the other backend;
#   - unknown ids: 404 response_not_found / conversation_not_found, or the
#     backend of model_gateway_state_default_backend (node C);
#   - Redis down: 503 state_store_unavailable for ids (default backend on
#     node C), stateless requests work, recording resumes after a restart;
#   - Responses streams: no "data: [DONE]" added; a stream cut after its
#     content (or by an event above model_gateway_event_max_size) ends with
#     "event: error" / code stream_interrupted;
#   - large bodies, streams in 7-byte chunks, the top-level id after nested
#     ids, escaped ids, a model the creating backend does not list,
#     model_gateway_response_ttl / model_gateway_conversation_ttl (node C);
#   - the path after an id (/input_items, /items/...) reaches the backend as
#     one request line: no space, CR LF, injected header or smuggled
#     request (the path after an id must be plain path characters);
#   - GET /v1/responses/ID?stream=true passes events as they arrive.
#
# Mocks "a" and "b" behave like OpenAI's Responses and Conversations API
# and check what they get: the key, their path prefix (a: /v1, b:
# /openai/v1), a JSON body, and that every id they are asked about
# (previous_response_id, conversation, /responses/ID, /conversations/ID)
# is one they created; otherwise they answer an OpenAI 404, so wrong
# routing is visible. The ids each mock created are kept in DIR/ids-NAME
# (handlers run in forked processes). A mock answers 503 to everything
# while DIR/fail-NAME exists. Each answer carries x-request-id NAME-N (N:
# the mock's request number), which ties a client response to what the
# mock recorded.
#
# Nodes: A (weights a:1 b:3), B (a:3 b:1), C (a:1 b:1, with
# model_gateway_state_default_backend b); all on one Redis; mocks and
# Redis belong to A's harness object.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP qw(decode_json);
use Fcntl qw(:flock);
use IO::Socket::INET;
use MG::Test;

my $t = MG::Test->new;          # node A: mocks and Redis
$t->need_module;
my $tb = MG::Test->new;         # node B
my $tc = MG::Test->new;         # node C: state default backend b

my $DIR = $t->dir;
my $JSON = JSON::PP->new->utf8->canonical;

my %PREFIX = (a => '/v1', b => '/openai/v1');
my %KEY = (a => 'sk-test-key-of-a-0123', b => 'sk-test-key-of-b-4567');
my $DAY_MS = 86400 * 1000;

###########################################################################
# mocks

sub mock_ids {
    my $me = shift;
    my %ids;
    open my $fh, '<', "$DIR/ids-$me" or return \%ids;
    flock $fh, LOCK_SH;
    while (my $l = <$fh>) {
        chomp $l;
        if ($l =~ /^\+(.+)$/) { $ids{$1} = 1 }
        elsif ($l =~ /^-(.+)$/) { delete $ids{$1} }
    }
    close $fh;
    return \%ids;
}

sub mock_record {
    my ($me, $op, $id) = @_;
    open my $fh, '>>', "$DIR/ids-$me" or die "ids-$me: $!";
    flock $fh, LOCK_EX;
    print $fh "$op$id\n";
    close $fh;
}

# a Responses object, "id" first as OpenAI writes it; with $nested_first,
# the output (with its own ids) comes before the top-level id
sub response_json {
    my (%o) = @_;
    my $output = $JSON->encode([{ type => 'message', id => "msg_$o{id}",
        status => 'completed', role => 'assistant',
        content => [{ type => 'output_text', text => $o{text} // '',
                      annotations => [] }] }]);
    my @kv = (
        ['id', $JSON->encode($o{id})],
        ['object', '"response"'],
        ['created_at', 1700000000],
        ['status', $JSON->encode($o{status} // 'completed')],
        ['background', 'false'],
        ['error', 'null'],
        ['model', $JSON->encode($o{model} // 'm')],
        ['output', $o{empty_output} ? '[]' : $output],
        ['previous_response_id', defined $o{prev} ? $JSON->encode($o{prev}) : 'null'],
        ['conversation', defined $o{conv}
            ? $JSON->encode({ id => $o{conv} }) : 'null'],
        ['usage', '{"input_tokens":5,"output_tokens":3,"total_tokens":8}'],
    );
    @kv = ((grep { $_->[0] ne 'id' } @kv), $kv[0]) if $o{nested_first};
    return '{' . join(',', map { "\"$_->[0]\":$_->[1]" } @kv) . '}';
}

sub sse { my ($name, $data) = @_; return "event: $name\ndata: $data\n\n" }

sub response_stream {
    my (%o) = @_;
    my $id = $o{id};
    my $seq = 0;
    my @ev;
    my $created = response_json(%o, status => 'in_progress',
        empty_output => 1);
    push @ev, sse('response.created', '{"type":"response.created",'
        . '"sequence_number":' . $seq++ . ',"response":' . $created . '}');
    push @ev, sse('response.in_progress', '{"type":"response.in_progress",'
        . '"sequence_number":' . $seq++ . ',"response":' . $created . '}');
    push @ev, sse('response.output_item.added', $JSON->encode({
        type => 'response.output_item.added', sequence_number => $seq++,
        output_index => 0, item => { id => "msg_$id", type => 'message',
        status => 'in_progress', role => 'assistant', content => [] } }));
    for my $d (@{$o{deltas}}) {
        push @ev, sse('response.output_text.delta', $JSON->encode({
            type => 'response.output_text.delta', sequence_number => $seq++,
            item_id => "msg_$id", output_index => 0, content_index => 0,
            delta => $d }));
    }
    push @ev, sse('response.output_text.done', $JSON->encode({
        type => 'response.output_text.done', sequence_number => $seq++,
        item_id => "msg_$id", output_index => 0, content_index => 0,
        text => join('', @{$o{deltas}}) }));
    push @ev, sse('response.completed', '{"type":"response.completed",'
        . '"sequence_number":' . $seq++ . ',"response":'
        . response_json(%o, text => join('', @{$o{deltas}})) . '}');
    return @ev;
}

sub mock_handler {
    my $me = shift;
    my $prefix = $PREFIX{$me};
    my $key = $KEY{$me};
    return sub {
        my $req = shift;
        my $n = $req->{n};
        my @h = (['Content-Type', 'application/json'],
                 ['x-request-id', "$me-$n"]);
        my $err = sub {
            my ($st, $msg, $type, $param, $code) = @_;
            return { status => $st, headers => [@h],
                     body => $JSON->encode({ error => { message => $msg,
                         type => $type, param => $param, code => $code } }) };
        };
        my $ok = sub { return { status => 200, headers => [@h],
                                body => $_[0] } };

        return $err->(401, 'Incorrect API key provided.',
            'invalid_request_error', undef, 'invalid_api_key')
            unless ($req->{headers}{authorization} // '') eq "Bearer $key";

        my ($path, $query) = $req->{path} =~ /^([^?]*)(?:\?(.*))?$/;
        $query //= '';
        return $err->(404, "Invalid URL ($req->{method} $req->{path})",
            'invalid_request_error', undef, 'unknown_url')
            unless $path =~ s/^\Q$prefix\E(?=\/)//;

        if (-e "$DIR/fail-$me") {
            return { status => 503, headers => [@h],
                     body => '{"error":{"message":"MOCK-OVERLOADED-BODY",'
                             . '"type":"server_error"}}' };
        }

        my $body;
        if (length($req->{body} // '')) {
            $body = eval { decode_json($req->{body}) };
            return $err->(400, 'We could not parse the JSON body of your '
                . 'request.', 'invalid_request_error', undef, 'invalid_json')
                unless ref $body eq 'HASH';
        }
        my $own = mock_ids($me);
        my $m = $req->{method};

        if ($m eq 'POST' && $path eq '/chat/completions') {
            return { status => 200,
                     headers => [['Content-Type', 'text/event-stream']],
                     chunks => [MG::Test::openai_stream_events(
                         model => $body->{model}, id => "chatcmpl-$me-$n")] }
                if $body->{stream};
            return $ok->(MG::Test::openai_completion(
                model => $body->{model}, content => "chat from $me",
                id => "chatcmpl-$me-$n"));
        }

        if ($m eq 'POST' && $path eq '/responses') {
            return $err->(400, 'Missing required parameter: \'model\'.',
                'invalid_request_error', 'model', 'missing_required_parameter')
                unless $body && defined $body->{model};
            my $prev = $body->{previous_response_id};
            if (defined $prev && !$own->{$prev}) {
                return $err->(404, "Previous response with id '$prev' not "
                    . 'found.', 'invalid_request_error',
                    'previous_response_id', 'previous_response_not_found');
            }
            my $conv = $body->{conversation};
            $conv = $conv->{id} if ref $conv eq 'HASH';
            if (defined $conv && !$own->{$conv}) {
                return $err->(404, "Conversation with id '$conv' not found.",
                    'invalid_request_error', 'conversation',
                    'conversation_not_found');
            }
            my $id = "resp_${me}_$n";
            mock_record($me, '+', $id);
            my $input = ref $body->{input} ? '' : $body->{input} // '';
            my %o = (id => $id, model => $body->{model}, prev => $prev,
                     conv => $conv, text => "from $me",
                     nested_first => $input =~ /nested-first/ ? 1 : 0);
            if ($input =~ /\bbig\b/) {
                $o{text} = 'x' x 200_000;
            }
            if ($body->{stream}) {
                my @deltas = ('from ', $me, '.');
                @deltas = map { "delta $_ " . ('y' x 30) } 1 .. 300
                    if $input =~ /\bbig\b/;
                # response.completed carries the whole text: 20 KB, above
                # model_gateway_event_max_size (16k here)
                @deltas = map { 'z' x 1000 } 1 .. 20 if $input =~ /\bhuge\b/;
                my @ev = response_stream(%o, deltas => \@deltas);
                if ($input =~ /\btiny\b/) {
                    my $all = join '', @ev;
                    @ev = $all =~ /(.{1,7})/gs;
                }
                my %spec = (status => 200,
                    headers => [['Content-Type', 'text/event-stream'],
                                ['x-request-id', "$me-$n"]],
                    chunks => \@ev);
                # created, in_progress, item added, two deltas: then cut
                $spec{close_after} = 5 if $input =~ /\bcut\b/;
                if ($input =~ /\bhold=(\S+)/) {
                    $spec{hold_after} = 0;
                    $spec{release} = $1;
                }
                return \%spec;
            }
            my $json = response_json(%o);
            if ($input =~ /\bhold=(\S+)/) {
                my $half = int(length($json) / 2);
                return { status => 200, headers => [@h],
                         chunks => [substr($json, 0, $half),
                                    substr($json, $half)],
                         hold_after => 1, release => $1 };
            }
            return $ok->($json);
        }

        if ($path =~ m{^/responses/([^/]+)(/input_items|/cancel)?$}) {
            my ($id, $sub) = ($1, $2 // '');
            return $err->(404, "No response found with id '$id'.",
                'invalid_request_error', undef, 'not_found_mock')
                unless $own->{$id};
            if ($sub eq '' && $m eq 'GET' && $query =~ /(?:^|&)stream=true/) {
                # a retrieval stream (background responses), resumable
                my @ev = grep { !/response\.(?:created|in_progress)\n/ }
                    response_stream(id => $id, deltas => ['again ', 'from ', $me]);
                return { status => 200,
                         headers => [['Content-Type', 'text/event-stream'],
                                     ['x-request-id', "$me-$n"]],
                         chunks => \@ev, hold_after => 2,
                         release => "release-get-$id", hold_timeout => 10 };
            }
            if ($sub eq '' && $m eq 'GET') {
                return $ok->(response_json(id => $id, text => "from $me"));
            }
            if ($sub eq '' && $m eq 'DELETE') {
                mock_record($me, '-', $id);
                return $ok->($JSON->encode({ id => $id, object => 'response',
                                             deleted => JSON::PP::true }));
            }
            if ($sub eq '/input_items' && $m eq 'GET') {
                my ($limit) = $query =~ /(?:^|&)limit=(\d+)/;
                $limit //= 20;
                my @items = map { { id => "msg_in_${id}_$_", type => 'message',
                    role => 'user', status => 'completed',
                    content => [{ type => 'input_text', text => "in $_" }] } }
                    1 .. $limit;
                return $ok->($JSON->encode({ object => 'list', data => \@items,
                    first_id => $items[0]{id}, last_id => $items[-1]{id},
                    has_more => JSON::PP::true }));
            }
            if ($sub eq '/cancel' && $m eq 'POST') {
                return $ok->(response_json(id => $id, status => 'cancelled',
                                           empty_output => 1));
            }
            return $err->(405, 'Method not allowed.', 'invalid_request_error',
                undef, 'method_not_allowed');
        }

        if ($m eq 'POST' && $path eq '/conversations') {
            my $id = "conv_${me}_$n";
            mock_record($me, '+', $id);
            return $ok->($JSON->encode({ id => $id, object => 'conversation',
                created_at => 1700000000,
                metadata => ($body && $body->{metadata}) || {} }));
        }

        if ($path =~ m{^/conversations/([^/]+)(/items(?:/[^/]+)?)?$}) {
            my ($id, $sub) = ($1, $2 // '');
            return $err->(404, "Conversation with id '$id' not found.",
                'invalid_request_error', undef, 'not_found_mock')
                unless $own->{$id};
            if ($sub eq '' && $m eq 'DELETE') {
                mock_record($me, '-', $id);
                return $ok->($JSON->encode({ id => $id,
                    object => 'conversation.deleted', deleted => JSON::PP::true }));
            }
            if ($sub eq '') {
                return $ok->($JSON->encode({ id => $id,
                    object => 'conversation', created_at => 1700000000,
                    metadata => {} }));
            }
            return $ok->($JSON->encode({ object => 'list', data => [
                { id => "msg_$id", type => 'message', role => 'user',
                  status => 'completed',
                  content => [{ type => 'input_text', text => 'hi' }] }],
                first_id => "msg_$id", last_id => "msg_$id",
                has_more => JSON::PP::false }));
        }

        return $err->(404, "Invalid URL ($m $req->{path})",
            'invalid_request_error', undef, 'unknown_url');
    };
}

for my $k (qw(a b)) {
    MG::Test::_write_file("$DIR/key-$k", "$KEY{$k}\n");
    chmod 0644, "$DIR/key-$k";
    MG::Test::_write_file("$DIR/ids-$k", '');
    chmod 0666, "$DIR/ids-$k";
    $t->mock($k, handler => mock_handler($k));
}

# DEBUG SLEEP makes Redis stall while the gateway writes an id
my ($RV) = `redis-server --version` =~ /v=(\d+)/;
my @RARGS = ($RV // 0) >= 7 ? ('--enable-debug-command', 'local') : ();
my $RPORT = $t->redis(args => \@RARGS);

###########################################################################
# nodes

sub node_conf {
    my ($node, %o) = @_;
    $node->write_conf(<<'EOF',
%%TEST_GLOBALS%%
worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;
    model_gateway_retry_after_max 0;

    # small enough for the "huge" stream's response.completed (20 KB)
    model_gateway_event_max_size 16k;

    model_gateway_redis 127.0.0.1:%%RPORT%%;

    # node B is to stay connected while Redis sleeps under node A: its
    # admin state is read at start only, not polled into the stall
    model_gateway_admin_sync 60s;

    # every lookup asks Redis here (the node's cache of mappings:
    # t/170-session-cache.t)
    model_gateway_state_cache 0;
    model_gateway_redis_connect_timeout 500ms;
    %%DEFAULT%%
    %%TTLS%%

    log_format gw '$request_method $request_uri $status '
                  'backend=$model_gateway_backend '
                  'attempts=[$model_gateway_attempts] '
                  'session=$model_gateway_session_status $pid';

    model_gateway_backend a {
        type openai;
        url http://127.0.0.1:%%PA%%/v1;
        key_file %%KDIR%%/key-a;
        model m;
        weight %%WA%%;
    }

    model_gateway_backend b {
        type openai;
        url http://127.0.0.1:%%PB%%/openai/v1;
        key_file %%KDIR%%/key-b;
        model m;
        model mb;
        weight %%WB%%;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        access_log %%DIR%%/gw.log gw;

        location /v1/ {
            model_gateway;
        }

        location /sess/ {
            model_gateway;
            model_gateway_session $http_x_session_id;
        }
    }
}
EOF
        RPORT => $RPORT, PA => $t->port('a'), PB => $t->port('b'),
        KDIR => $DIR, WA => $o{wa}, WB => $o{wb},
        DEFAULT => $o{default}
            ? "model_gateway_state_default_backend $o{default};" : '',
        TTLS => $o{ttls} // '');
    $node->run;
}

node_conf($t, wa => 1, wb => 3);
node_conf($tb, wa => 3, wb => 1);
node_conf($tc, wa => 1, wb => 1, default => 'b',
          ttls => "model_gateway_response_ttl 1h;\n"
                  . "    model_gateway_conversation_ttl 2d;");

my %NODE = (A => $t, B => $tb, C => $tc);
my %OTHER = (a => 'b', b => 'a');
my %OTHER_NODE = (A => 'B', B => 'A');

for my $n (qw(A B C)) {
    ok($t->wait_for(sub { $NODE{$n}->grep_log(qr/redis \S+ is up/) >= 2 }, 10),
        "node $n: both workers connected to redis");
}

###########################################################################
# client helpers

# adds {backend} (X-Model-Gateway-Backend), {rid} (x-request-id) and
# {mreq} (the request the mock recorded for it, by x-request-id)
sub annotate {
    my $r = shift;
    ($r->{backend}) = ($r->{headers}{'x-model-gateway-backend'} // '')
        =~ /^([^;\s]+)/;
    $r->{rid} = $r->{headers}{'x-request-id'};
    if (($r->{rid} // '') =~ /^([ab])-(\d+)$/) {
        my ($m, $n) = ($1, $2);
        ($r->{mreq}) = grep { $_->{n} == $n } @{$t->mock_requests($m)};
        $r->{mock} = $m;
    }
    $r->{code} = $r->{json} && ref $r->{json}{error} eq 'HASH'
        ? $r->{json}{error}{code} : undef;
    return $r;
}

sub post {
    my ($node, $path, $data, %o) = @_;
    return annotate($NODE{$node}->post_json($path, $data, %o));
}

sub call {
    my ($node, $method, $path, %o) = @_;
    return annotate($NODE{$node}->request(method => $method, path => $path,
                                          %o));
}

sub desc {
    my $r = shift;
    return sprintf '%s via %s (%s)%s', $r->{status} // 'none',
        $r->{backend} // '-', $r->{rid} // '-',
        $r->{code} ? " code=$r->{code}" : '';
}

# [event name, data] of every SSE event of a text
sub sse_events {
    my $text = shift;
    $text =~ s/\r\n?/\n/g;
    my @out;
    for my $ev (split /\n\n+/, $text) {
        my ($name, @d);
        for my $l (split /\n/, $ev) {
            $name = $1 if $l =~ /^event:\s?(.*)$/;
            push @d, $1 // '' if $l =~ /^data(?::\s?(.*))?$/;
        }
        push @out, [$name, join "\n", @d] if @d || defined $name;
    }
    return @out;
}

# the id of a created response: from the JSON body, or from the stream's
# response.created event
sub created_id {
    my $r = shift;
    return $r->{json}{id} if $r->{json} && !ref $r->{json}{id};
    for my $e (sse_events($r->{body} // '')) {
        next unless ($e->[0] // '') eq 'response.created';
        my $j = eval { decode_json($e->[1]) } or next;
        return $j->{response}{id};
    }
    return undef;
}

sub total_requests {
    return scalar(@{$t->mock_requests('a')}) + scalar(@{$t->mock_requests('b')});
}

sub nreq { scalar @{$t->mock_requests($_[0])} }

sub rget  { $t->redis_cmd('GET', $_[0]) }
sub rpttl { $t->redis_cmd('PTTL', $_[0]) }

# the JSON error contract of errors the gateway generates
sub contract {
    my ($r, $status, $type, $code, $param, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{status}, $status, "$name: status $status") or diag(desc($r) . " $r->{body}");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: content-type");
    is($r->{headers}{'x-should-retry'}, 'false', "$name: x-should-retry false");
    my $e = $r->{json} && ref $r->{json}{error} eq 'HASH' ? $r->{json}{error} : {};
    is(join(',', sort keys %$e), 'code,message,param,type',
        "$name: error object has its four keys") or diag($r->{body});
    is($e->{type}, $type, "$name: type $type");
    is($e->{code}, $code, "$name: code $code");
    is($e->{param}, $param, "$name: param " . ($param // 'null'));
    ok(defined $e->{message} && length $e->{message}, "$name: message");
}

my $CHAIN = 0;

# one response: node, previous id (or undef), stream flag
sub respond {
    my ($node, $prev, %o) = @_;
    my %body = (model => 'm', input => $o{input} // 'hello');
    $body{previous_response_id} = $prev if defined $prev;
    $body{stream} = JSON::PP::true if $o{stream};
    $body{conversation} = $o{conversation} if exists $o{conversation};
    my $r = post($node, $o{path} // '/v1/responses', \%body,
                 headers => $o{headers} // []);
    $r->{id} = created_id($r);
    return $r;
}

###########################################################################
# chains across nodes, non-streaming: each follow-up sent at once on the
# other node reaches the creating backend

# the weights make a stateless choice favour a on node B and b on node A
{
    my %n;
    for my $node (qw(A B)) {
        for (1 .. 8) {
            my $r = post($node, '/v1/responses', { model => 'm', input => 'weights' });
            $n{$node}{$r->{backend} // '-'}++;
        }
    }
    is_deeply(\%n, { A => { a => 2, b => 6 }, B => { a => 6, b => 2 } },
        'stateless responses: node A picks b 3 times in 4, node B a 3 times in 4');
}

my %ROOT;          # backend => a response id it created (non-streaming)
{
    for my $i (1 .. 8) {
        my $r = respond('A', undef, input => "root $i");
        is($r->{status}, 200, "root $i on node A: 200") or diag(desc($r));
        next unless $r->{status} == 200;
        is($r->{backend}, $r->{mock}, "root $i: header names the mock that answered");
        like($r->{id} // '', qr/^resp_\Q$r->{backend}\E_\d+$/, "root $i: id of $r->{backend}");
        $ROOT{$r->{backend}} //= $r->{id};
        last if $ROOT{a} && $ROOT{b};
    }
    ok($ROOT{a} && $ROOT{b}, 'roots created on both backends')
        or BAIL_OUT('no roots on both backends');

    for my $be (qw(a b)) {
        my $prev = $ROOT{$be};
        my $other_before = nreq($OTHER{$be});
        my @bad;
        my $node = 'B';
        for my $step (1 .. 20) {
            my $r = respond($node, $prev, input => "chain $be step $step");
            push @bad, "step $step on $node: " . desc($r) . " $r->{body}"
                unless $r->{status} == 200 && ($r->{backend} // '') eq $be
                    && ($r->{mock} // '') eq $be
                    && ($r->{id} // '') =~ /^resp_${be}_\d+$/
                    && ($r->{json}{previous_response_id} // '') eq $prev;
            $prev = $r->{id} if $r->{id};
            $node = $OTHER_NODE{$node};
        }
        is_deeply(\@bad, [], "chain on $be: 20 follow-ups alternating nodes "
            . "A/B all reached $be");
        is(nreq($OTHER{$be}), $other_before,
            "chain on $be: $OTHER{$be} received nothing");
        # the mock got previous_response_id byte for byte
        my $last = $t->mock_requests($be)->[-1];
        my $lb = eval { decode_json($last->{body}) } || {};
        ok(defined $lb->{previous_response_id}
            && $lb->{previous_response_id} =~ /^resp_${be}_\d+$/,
            "chain on $be: the backend received previous_response_id");
    }
}

###########################################################################
# the id is in Redis when the last byte arrives

{
    for my $be (qw(a b)) {
        my $r = respond('B', $ROOT{$be}, input => 'check key');
        is($r->{status}, 200, "follow-up of $be for the key check");
        my $id = $r->{id};
        # no delay: right after the response's last byte
        my $v = rget("mg:resp:$id");
        my $pttl = rpttl("mg:resp:$id");
        is($v, $be, "mg:resp:$id names $be right after the last byte");
        ok($pttl > 30 * $DAY_MS - 120_000 && $pttl <= 30 * $DAY_MS,
            "mg:resp:$id expires in about 30 days (PTTL $pttl)");
    }
}

###########################################################################
# streaming chains: the id comes from response.created; the stream is read
# to its end, then the follow-up goes at once to the other node

my %SROOT;         # backend => an id created by a streamed response
{
    for my $i (1 .. 8) {
        my $r = respond('A', undef, stream => 1, input => "sroot $i");
        is($r->{status}, 200, "streamed root $i: 200") or diag(desc($r));
        next unless $r->{status} == 200;
        my $be = $r->{backend};
        like($r->{headers}{'content-type'} // '', qr{^text/event-stream},
            "streamed root $i: event stream");
        ok($r->{complete}, "streamed root $i: stream ended properly");
        like($r->{id} // '', qr/^resp_\Q$be\E_\d+$/, "streamed root $i: id from response.created");
        my $v = rget("mg:resp:" . ($r->{id} // ''));
        is($v, $be, "streamed root $i: mg:resp:<id> names $be right after the stream's end");
        my $pttl = rpttl("mg:resp:" . ($r->{id} // ''));
        ok($pttl > 30 * $DAY_MS - 120_000 && $pttl <= 30 * $DAY_MS,
            "streamed root $i: PTTL about 30 days ($pttl)");
        $SROOT{$be} //= $r->{id};
        last if $SROOT{a} && $SROOT{b};
    }
    ok($SROOT{a} && $SROOT{b}, 'streamed roots on both backends');

    for my $be (grep { $SROOT{$_} } qw(a b)) {
        my $prev = $SROOT{$be};
        my $other_before = nreq($OTHER{$be});
        my (@bad, @done, @last);
        my $node = 'B';
        for my $step (1 .. 20) {
            my $r = respond($node, $prev, stream => 1,
                            input => "schain $be step $step");
            my @ev = sse_events($r->{body} // '');
            push @bad, "step $step on $node: " . desc($r)
                unless $r->{status} == 200 && $r->{complete}
                    && ($r->{backend} // '') eq $be
                    && ($r->{id} // '') =~ /^resp_${be}_\d+$/;
            push @done, $step if ($r->{body} // '') =~ /\[DONE\]/;
            push @last, "step $step: " . ($ev[-1][0] // 'none')
                unless @ev && ($ev[-1][0] // '') eq 'response.completed';
            $prev = $r->{id} if $r->{id};
            $node = $OTHER_NODE{$node};
        }
        is_deeply(\@bad, [], "streamed chain on $be: 20 streamed follow-ups "
            . "alternating nodes all reached $be");
        is_deeply(\@done, [], "streamed chain on $be: no [DONE] in Responses streams");
        is_deeply(\@last, [], "streamed chain on $be: every stream ends with response.completed");
        is(nreq($OTHER{$be}), $other_before,
            "streamed chain on $be: $OTHER{$be} received nothing");
    }

    # mixed: a streamed follow-up of a non-streamed response and back
    my $r = respond('B', $ROOT{a}, stream => 1, input => 'mixed 1');
    is("$r->{status} " . ($r->{backend} // '-'), '200 a',
        'streamed follow-up of a non-streamed response');
    my $r2 = respond('A', $r->{id}, input => 'mixed 2');
    is("$r2->{status} " . ($r2->{backend} // '-'), '200 a',
        'non-streamed follow-up of a streamed response');
}

###########################################################################
# Redis stalls while the id is written: the last byte waits for the write

sub redis_sleep {
    my $secs = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $RPORT,
        Proto => 'tcp', Timeout => 2) or die "redis: $!";
    my $l = length $secs;
    print $s "*3\r\n\$5\r\nDEBUG\r\n\$5\r\nSLEEP\r\n\$$l\r\n$secs\r\n";
    $s->flush;
    return $s;
}

SKIP: {
    skip 'DEBUG SLEEP needs redis >= 7 here', 12 unless @RARGS;
    my $probe = $t->redis_cmd('DEBUG', 'SLEEP', '0');
    skip 'DEBUG is disabled in this redis', 12 if ref $probe;

    for my $mode ('json', 'stream') {
        my $rel = "release-hold-$mode";
        my $before = { map { $_ => nreq($_) } qw(a b) };
        # the gateway sends nothing before the mock answers: a raw client
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $t->port('gw'), Proto => 'tcp', Timeout => 5)
            or die "connect: $!";
        my $io = MG::Test::IO->new($sock);
        $io->write($t->_build_request(method => 'POST', path => '/v1/responses',
            json => { model => 'm', input => "hold=$rel",
                      ($mode eq 'stream' ? (stream => JSON::PP::true) : ()) }));
        my $be;
        $t->wait_for(sub {
            for (qw(a b)) { return $be = $_ if nreq($_) > $before->{$_} }
            return 0;
        }, 5);
        ok($be, "$mode: the creation reached a backend, which holds its answer");
        my $rs = redis_sleep('0.2');
        sleep 0.03;                       # Redis is asleep now
        my $t0 = time;
        $t->release($rel);
        my ($tfirst, $tlast);
        my $deadline = $t0 + 5;
        while (1) {
            my $r = $io->fill($deadline - time);
            last unless $r;
            $tfirst //= time - $t0;
            $tlast = time - $t0;
        }
        $tlast //= -1;
        close $sock;
        my $p = MG::Test::IO->new(undef);
        $p->{buf} = $io->{raw};
        my $res = MG::Test::_parse_response_head($p) || {};
        my $dec = MG::Test::_body_decoder($res, 'POST');
        $dec->feed($p->{buf});
        my $body = $dec->{out};
        is($res->{status}, 200, "$mode: 200");
        ok($dec->{done}, "$mode: complete response");
        my $id;
        if ($mode eq 'stream') {
            ($id) = map { eval { decode_json($_->[1])->{response}{id} } }
                grep { ($_->[0] // '') eq 'response.created' } sse_events($body);
            like($body, qr/event: response\.completed\n[^\n]*\n\n\z/,
                'stream: the whole stream');
        } else {
            $id = eval { decode_json($body)->{id} };
            ok(defined $id, 'json: the whole body');
        }
        diag(sprintf "$mode: first bytes %.3fs, last byte %.3fs after the "
            . 'release (redis asleep for about 0.17s)', $tfirst // -1, $tlast);
        my $v = rget("mg:resp:" . ($id // ''));
        is($v, $be, "$mode: mg:resp:<id> written when the client had the last byte");
        cmp_ok($tlast, '>=', 0.1, "$mode: the last byte waited for the stalled "
            . 'Redis write');
        cmp_ok($tlast, '<', 2, "$mode: not much longer than the stall");
        ok(defined $tfirst && $tfirst < $tlast,
            "$mode: the rest was sent before the end");
        close $rs;
        # and the follow-up at once on the other node
        my $r = respond('B', $id, input => "after hold $mode");
        is("$r->{status} " . ($r->{backend} // '-'), "200 $be",
            "$mode: immediate follow-up on node B reaches $be");
    }
    my @to = $t->grep_log(qr/command timed out/);
    is(scalar @to, 0, 'no redis command timed out during the stalls')
        or diag(join "\n", @to);

    # the client goes away while the stream's end waits for the write
    {
        my $rel = 'release-hold-gone';
        my $before = { map { $_ => nreq($_) } qw(a b) };
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $t->port('gw'), Proto => 'tcp', Timeout => 5)
            or die "connect: $!";
        my $io = MG::Test::IO->new($sock);
        $io->write($t->_build_request(method => 'POST', path => '/v1/responses',
            json => { model => 'm', input => "hold=$rel", stream => JSON::PP::true }));
        my $be;
        $t->wait_for(sub {
            for (qw(a b)) { return $be = $_ if nreq($_) > $before->{$_} }
            return 0;
        }, 5);
        my $rs = redis_sleep('0.2');
        sleep 0.03;
        $t->release($rel);
        my $deadline = time + 2;
        while (time < $deadline && $io->{raw} !~ /response\.completed/) {
            last unless $io->fill($deadline - time);
        }
        like($io->{raw}, qr/response\.completed/, 'client gone: had the events');
        close $sock;                          # before the end arrives
        sleep 0.3;
        close $rs;
        my ($id) = $io->{raw} =~ /"id":"(resp_[ab]_\d+)"/;
        ok($t->wait_for(sub { defined rget("mg:resp:" . ($id // '')) }, 2),
            'client gone before the end: the id is recorded all the same');
        my $r = respond('B', $id, input => 'after gone');
        is("$r->{status} " . ($r->{backend} // '-'), "200 " . ($be // '?'),
            'client gone: the response can be followed up');
    }

    # Redis stalls past model_gateway_redis_timeout (250ms): the end is
    # released when the write times out, not when Redis wakes up
    {
        my $rel = 'release-hold-timeout';
        my $up = () = $t->grep_log(qr/redis \S+ is up/);
        my $before = { map { $_ => nreq($_) } qw(a b) };
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $t->port('gw'), Proto => 'tcp', Timeout => 5)
            or die "connect: $!";
        my $io = MG::Test::IO->new($sock);
        $io->write($t->_build_request(method => 'POST', path => '/v1/responses',
            json => { model => 'm', input => "hold=$rel" }));
        $t->wait_for(sub { grep { nreq($_) > $before->{$_} } qw(a b) }, 5);
        my $rs = redis_sleep('1');
        sleep 0.03;
        my $t0 = time;
        $t->release($rel);
        my $deadline = $t0 + 5;
        my $tlast = -1;
        while (1) { last unless $io->fill($deadline - time); $tlast = time - $t0 }
        close $sock;
        my $p = MG::Test::IO->new(undef);
        $p->{buf} = $io->{raw};
        my $res = MG::Test::_parse_response_head($p) || {};
        my $dec = MG::Test::_body_decoder($res, 'POST');
        $dec->feed($p->{buf});
        is($res->{status}, 200, 'redis past its timeout: 200');
        ok($dec->{done} && eval { decode_json($dec->{out}) },
            'redis past its timeout: the whole body');
        ok($tlast >= 0.15 && $tlast < 0.8,
            sprintf('redis past its timeout: the last byte came when the write '
                . 'timed out (%.3fs), not when redis woke up (0.97s)', $tlast));
        ok(scalar $t->grep_log(qr/redis \S+ is down: command timed out/),
            'redis past its timeout: logged');
        close $rs;
        ok($t->wait_for(sub {
            (() = $t->grep_log(qr/redis \S+ is up/)) > $up }, 10),
            'redis past its timeout: the worker reconnects');
    }
}

###########################################################################
# objects by id: GET, DELETE, input_items (query kept), cancel

{
    for my $be (qw(a b)) {
        # one on $be: a follow-up of its root
        my $r0 = respond('A', $ROOT{$be}, input => "object test $be");
        my $id = $r0->{id};
        is($r0->{backend}, $be, "object on $be created");
        my $other_before = nreq($OTHER{$be});
        my $p = $PREFIX{$be};

        my $r = call('B', 'GET', "/v1/responses/$id");
        is(desc($r), "200 via $be ($r->{rid})", "GET /v1/responses/$id on node B");
        is($r->{json}{id}, $id, "GET: the object");
        is($r->{mreq}{method}, 'GET', 'GET: method');
        is($r->{mreq}{path}, "$p/responses/$id", 'GET: path under the backend prefix');
        is($r->{mreq}{body}, '', 'GET: no body sent');

        $r = call('A', 'GET', "/v1/responses/$id/input_items?limit=2&order=asc");
        is(desc($r), "200 via $be ($r->{rid})", 'GET .../input_items?limit=2');
        is($r->{mreq}{path}, "$p/responses/$id/input_items?limit=2&order=asc",
            'input_items: path and query reach the backend');
        is(scalar @{$r->{json}{data} || []}, 2, 'input_items: the backend honoured limit=2');

        $r = call('B', 'POST', "/v1/responses/$id/cancel", body => '');
        is(desc($r), "200 via $be ($r->{rid})", 'POST .../cancel without a body');
        is($r->{mreq}{path}, "$p/responses/$id/cancel", 'cancel: path');
        is($r->{json}{status}, 'cancelled', 'cancel: answer of the backend');

        $r = call('A', 'POST', "/v1/responses/$id/cancel", json => {});
        is(desc($r), "200 via $be ($r->{rid})", 'POST .../cancel with {}');

        # the /responses/ID form without "v1/" under the location prefix
        $r = call('B', 'GET', "/sess/responses/$id");
        is(desc($r), "200 via $be ($r->{rid})", "GET /sess/responses/$id");

        $r = call('A', 'DELETE', "/v1/responses/$id");
        is(desc($r), "200 via $be ($r->{rid})", "DELETE /v1/responses/$id");
        is($r->{mreq}{method}, 'DELETE', 'DELETE: method');
        ok($r->{json}{deleted}, 'DELETE: deleted');

        # the backend no longer has it: its 404 is passed through
        $r = call('B', 'GET', "/v1/responses/$id");
        is("$r->{status} " . ($r->{backend} // '-'), "404 $be",
            'GET after DELETE still asks the creating backend (its 404 passes)');
        is($r->{code}, 'not_found_mock', 'the backend\'s own 404 body');

        is(nreq($OTHER{$be}), $other_before, "objects of $be: $OTHER{$be} received nothing");
    }
}

###########################################################################
# conversations

my %CONV;          # backend => conversation id
{
    for my $i (1 .. 8) {
        my $body = { metadata => { topic => "t$i" } };
        my $r = $i % 2 ? post('A', '/v1/conversations', $body)
                       : call('A', 'POST', '/v1/conversations', body => '');
        is($r->{status}, 200, "conversation $i created") or diag(desc($r) . $r->{body});
        next unless $r->{status} == 200;
        my $be = $r->{backend};
        my $id = $r->{json}{id};
        like($id, qr/^conv_\Q$be\E_\d+$/, "conversation $i: id of $be");
        is($r->{mreq}{path}, "$PREFIX{$be}/conversations", "conversation $i: path");
        is($r->{mreq}{body}, $i % 2 ? $JSON->encode($body) : '',
            "conversation $i: body passed unchanged (no model added)");
        is(rget("mg:conv:$id"), $be, "conversation $i: mg:conv:$id names $be");
        is(rpttl("mg:conv:$id"), -1, "conversation $i: no expiry");
        $CONV{$be} //= $id;
        last if $CONV{a} && $CONV{b};
    }
    ok($CONV{a} && $CONV{b}, 'conversations on both backends');

    for my $be (grep { $CONV{$_} } qw(a b)) {
        my $id = $CONV{$be};
        my $other_before = nreq($OTHER{$be});
        my $p = $PREFIX{$be};

        my $r = respond('B', undef, conversation => $id, input => 'in conv');
        is(desc($r), "200 via $be ($r->{rid})", "response in conversation \"$id\" (string) on node B");
        is(eval { decode_json($r->{mreq}{body})->{conversation} }, $id,
            'the backend received the conversation');

        $r = respond('A', undef, conversation => { id => $id }, input => 'in conv');
        is(desc($r), "200 via $be ($r->{rid})", "response in conversation {\"id\":\"$id\"} on node A");

        $r = respond('B', undef, conversation => { id => $id }, stream => 1,
                     input => 'in conv streamed');
        is(desc($r), "200 via $be ($r->{rid})", 'streamed response in the conversation');
        is(rget("mg:resp:" . ($r->{id} // '')), $be,
            'a response in a conversation has its own id recorded');

        $r = call('A', 'GET', "/v1/conversations/$id/items?limit=1");
        is(desc($r), "200 via $be ($r->{rid})", "GET /v1/conversations/$id/items");
        is($r->{mreq}{path}, "$p/conversations/$id/items?limit=1", 'items: path and query');

        $r = call('B', 'GET', "/v1/conversations/$id");
        is(desc($r), "200 via $be ($r->{rid})", "GET /v1/conversations/$id");

        $r = post('A', "/v1/conversations/$id", { metadata => { k => 'v' } });
        is(desc($r), "200 via $be ($r->{rid})", "POST /v1/conversations/$id (update)");

        $r = post('B', "/v1/conversations/$id/items",
                  { items => [{ type => 'message', role => 'user', content => 'x' }] });
        is(desc($r), "200 via $be ($r->{rid})", "POST /v1/conversations/$id/items");

        is(nreq($OTHER{$be}), $other_before, "conversation on $be: $OTHER{$be} received nothing");
    }
}

###########################################################################
# what follows the id in the path is the client's: it must reach the
# backend as one request line (escaped), never as extra headers or an
# extra request made with the gateway's key

{
    my $victim = respond('A', $ROOT{a}, input => 'victim')->{id};
    my $mine = respond('A', $ROOT{a}, input => 'attacker')->{id};
    my $bad_before = { map { my $m = $_; $m => scalar grep {
        $_->{event} eq 'bad_request' } @{$t->mock_events($m)} } qw(a b) };
    my $n_before = { map { $_ => nreq($_) } qw(a b) };

    my $smuggle = "/v1/responses/$mine/input_items%20HTTP/1.1%0D%0A"
        . "Host:%20x%0D%0AContent-Length:%200%0D%0A%0D%0A"
        . "DELETE%20/v1/responses/$victim%20HTTP/1.1%0D%0AX-Pad:%20";
    my $r = call('B', 'GET', $smuggle);
    ok(defined $r->{status}, "smuggling attempt answered ($r->{status})");
    # a smuggled request is recorded after the answer to the first one
    $t->wait_for(sub { grep { $_->{method} eq 'DELETE' }
        @{$t->mock_requests('a')}[$n_before->{a} .. nreq('a') - 1] }, 1);
    my @new = @{$t->mock_requests('a')}[$n_before->{a} .. nreq('a') - 1];
    my @del = grep { $_->{method} eq 'DELETE' } @new;
    is(scalar @del, 0, 'no DELETE the client did not send reached a')
        or diag(map { "a received: $_->{method} $_->{path} authorization="
            . ($_->{headers}{authorization} // '-') . "\n" } @new);
    my @nokey = grep { ($_->{headers}{authorization} // '') ne "Bearer $KEY{a}" } @new;
    is(scalar @nokey, 0, 'every request a received carries the gateway\'s key '
        . '(none was split off)');
    ok(@new <= 1, 'one client request, at most one backend request')
        or diag(scalar(@new) . ' requests reached a');
    my $rv = call('A', 'GET', "/v1/responses/$victim");
    is("$rv->{status} " . ($rv->{backend} // '-'), '200 a',
        'the other response still exists');

    # a space or CR LF decoded from the path must not reach the request line
    for my $case (['%20', 'space'],
                  ['%20HTTP/1.1%0D%0AX-Injected:%20yes%0D%0AX-Pad:%20', 'CR LF']) {
        my ($enc, $label) = @$case;
        for my $obj (["/v1/responses/$mine/input_items", 'a'],
                     ($CONV{b} ? ["/v1/conversations/$CONV{b}/items", 'b'] : ())) {
            my ($base, $be) = @$obj;
            my $before = nreq($be);
            $r = call('A', 'GET', "$base/x${enc}y");
            my @got = @{$t->mock_requests($be)}[$before .. nreq($be) - 1];
            my @inj = grep { exists $_->{headers}{'x-injected'} } @got;
            is(scalar @inj, 0, "$label after the id ($be): no header injected");
            ok(!grep({ $_->{path} =~ /[ \r\n]/ } @got),
                "$label after the id ($be): no raw $label in the backend's path");
        }
    }
    my $bad_after = { map { my $m = $_; $m => scalar grep {
        $_->{event} eq 'bad_request' } @{$t->mock_events($m)} } qw(a b) };
    is_deeply($bad_after, $bad_before,
        'the backends never received a malformed request line')
        or diag(join "\n", map { my $m = $_; map { "$m: $_->{error}" }
            grep { $_->{event} eq 'bad_request' } @{$t->mock_events($m)} } qw(a b));
}

###########################################################################
# ids wherever they are in the JSON

{
    # the top-level "id" follows output items with ids of their own
    my $r = respond('A', undef, input => 'nested-first');
    is($r->{status}, 200, 'nested-first: 200');
    my $id = $r->{json}{id} // '';
    like($id, qr/^resp_[ab]_\d+$/, 'nested-first: the top-level id');
    is(rget("mg:resp:$id"), $r->{backend}, 'nested-first: the top-level id is recorded');
    is(rget("mg:resp:msg_$id"), undef, 'nested-first: the output item id is not');
    my $r2 = respond('B', $id, input => 'after nested');
    is("$r2->{status} " . ($r2->{backend} // '-'), "200 $r->{backend}",
        'nested-first: follow-up reaches the creating backend');

    # an escaped id in the request names the same response
    (my $esc = $ROOT{b}) =~ s/_/\\u005f/g;
    my $body = '{"model":"m","input":"escaped","previous_response_id":"' . $esc . '"}';
    $r = annotate($tb->request(method => 'POST', path => '/v1/responses', body => $body,
        headers => [['Content-Type', 'application/json']]));
    is(desc($r), "200 via b ($r->{rid})", 'previous_response_id with JSON escapes');

    # previous_response_id null: a new response, routed like any request
    $r = post('A', '/v1/responses', { model => 'm', input => 'null prev',
        previous_response_id => undef });
    is($r->{status}, 200, 'previous_response_id null: routed like a new response');
}

###########################################################################
# large and fragmented answers; a model the creating backend does not list

{
    my $r = respond('A', $ROOT{a}, input => 'big');
    is(desc($r), "200 via a ($r->{rid})", 'a 200 KB response');
    ok(length($r->{body}) > 200_000 && $r->{json}, 'the whole 200 KB body');
    is(rget("mg:resp:$r->{id}"), 'a', '200 KB response: id recorded');
    my $r2 = respond('B', $r->{id}, input => 'after big');
    is(desc($r2), "200 via a ($r2->{rid})", '200 KB response: follow-up');

    $r = respond('B', $ROOT{b}, input => 'big', stream => 1);
    my @ev = sse_events($r->{body});
    is(desc($r), "200 via b ($r->{rid})", 'a 60 KB stream of 300 deltas');
    is(scalar(grep { ($_->[0] // '') eq 'response.output_text.delta' } @ev), 300,
        'every delta arrived');
    is($ev[-1][0], 'response.completed', 'the big stream ends with response.completed');
    is(rget("mg:resp:" . ($r->{id} // '')), 'b', 'big stream: id recorded');
    $r2 = respond('A', $r->{id}, input => 'after big stream');
    is(desc($r2), "200 via b ($r2->{rid})", 'big stream: follow-up');

    for my $be (qw(a b)) {
        $r = respond($be eq 'a' ? 'B' : 'A', $ROOT{$be}, input => 'tiny', stream => 1);
        @ev = sse_events($r->{body});
        is(desc($r), "200 via $be ($r->{rid})", "$be: a stream sent in 7-byte chunks");
        like($r->{id} // '', qr/^resp_${be}_\d+$/, "$be: 7-byte chunks: the id");
        is($ev[-1][0], 'response.completed', "$be: 7-byte chunks: whole stream");
        is(rget("mg:resp:" . ($r->{id} // '')), $be,
            "$be: 7-byte chunks: the id split across chunks is recorded");
        $r2 = respond('A', $r->{id}, input => 'after tiny');
        is(desc($r2), "200 via $be ($r2->{rid})", "$be: 7-byte chunks: follow-up");
    }

    # "mb" is served by b only: a follow-up of a's response cannot run it
    # on a's key, where the model table does not map it
    my %before = map { $_ => nreq($_) } qw(a b);
    $r = post('B', '/v1/responses', { model => 'mb', input => 'mb on a',
        previous_response_id => $ROOT{a} });
    contract($r, 400, 'invalid_request_error', 'model_not_available', 'model',
        'previous_response_id of a with a model only b lists');
    like($r->{json}{error}{message} // '',
        qr/^The response '\Q$ROOT{a}\E' is held by a backend that does not serve the model 'mb'\.$/,
        'the message names the id and the model, not the backend');
    $r = post('A', '/v1/responses', { model => 'mb', input => 'mb conv',
        conversation => $CONV{a} });
    is(($r->{status} // '') . ' ' . ($r->{code} // '-'),
        '400 model_not_available',
        'a conversation of a with a model only b lists: refused');
    is(nreq('a') . ' ' . nreq('b'), "$before{a} $before{b}",
        'neither backend received them');
    $r = post('A', '/v1/responses', { model => 'mb', input => 'mb stateless' });
    is($r->{backend}, 'b', 'without the id, mb goes to b');
}

###########################################################################
# node C: model_gateway_response_ttl 1h, model_gateway_conversation_ttl 2d

{
    my $r = respond('C', undef, input => 'ttl');
    my $pttl = rpttl("mg:resp:" . ($r->{id} // ''));
    ok($pttl > 3600_000 - 60_000 && $pttl <= 3600_000,
        "model_gateway_response_ttl 1h (PTTL $pttl)");
    $r = respond('C', undef, input => 'ttl', stream => 1);
    $pttl = rpttl("mg:resp:" . ($r->{id} // ''));
    ok($pttl > 3600_000 - 60_000 && $pttl <= 3600_000,
        "model_gateway_response_ttl 1h, streamed (PTTL $pttl)");
    $r = post('C', '/v1/conversations', {});
    $pttl = rpttl("mg:conv:" . ($r->{json}{id} // ''));
    ok($pttl > 2 * $DAY_MS - 60_000 && $pttl <= 2 * $DAY_MS,
        "model_gateway_conversation_ttl 2d (PTTL $pttl)");
    my $r2 = respond('A', undef, conversation => $r->{json}{id}, input => 'conv of C');
    is("$r2->{status} " . ($r2->{backend} // '-'), "200 $r->{backend}",
        'a conversation created on node C is followed on node A');
}

###########################################################################
# a retrieval stream (GET /v1/responses/ID?stream=true, background
# responses): events pass through as they arrive, no [DONE] added

{
    my $id = $ROOT{b};
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $tb->port('gw'), Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    my $io = MG::Test::IO->new($sock);
    $io->write($t->_build_request(method => 'GET',
        path => "/v1/responses/$id?stream=true&starting_after=3"));
    my $deadline = time + 3;
    while (time < $deadline && $io->{raw} !~ /output_text\.delta/) {
        last unless $io->fill(0.1) // 1;
    }
    my $early = $io->{raw};
    $t->release("release-get-$id");
    $deadline = time + 5;
    while (1) { last unless $io->fill($deadline - time) }
    close $sock;
    my $p = MG::Test::IO->new(undef);
    $p->{buf} = $io->{raw};
    my $res = MG::Test::_parse_response_head($p) || {};
    my $dec = MG::Test::_body_decoder($res, 'GET');
    $dec->feed($p->{buf});
    is($res->{status}, 200, 'retrieval stream: 200');
    like($res->{headers}{'content-type'} // '', qr{^text/event-stream},
        'retrieval stream: event stream');
    my ($mr) = grep { $_->{path} =~ /stream=true/ } @{$t->mock_requests('b')};
    is($mr->{path} // '', "/openai/v1/responses/$id?stream=true&starting_after=3",
        'retrieval stream: the query reaches the creating backend');
    like($early, qr/response\.output_text\.delta/,
        'retrieval stream: events pass through as they arrive (before the '
        . 'backend finished)');
    my @ev = sse_events($dec->{out});
    is($ev[-1][0] // '', 'response.completed', 'retrieval stream: ends with response.completed');
    unlike($dec->{out}, qr/\[DONE\]/, 'retrieval stream: no [DONE] added');
}

###########################################################################
# no failover for ids: the creating backend's 503 reaches the client as 502

{
    for my $be (qw(a b)) {
        my $before = { map { $_ => nreq($_) } qw(a b) };
        MG::Test::_write_file("$DIR/fail-$be", "1\n");
        my $r = respond('B', $ROOT{$be}, input => 'down');
        contract($r, 502, 'server_error', 'backend_error', undef,
                 "follow-up, $be answers 503");
        unlike($r->{body}, qr/MOCK-OVERLOADED-BODY/, "$be 503: the backend's body is not passed on");

        my $rs = respond('A', $ROOT{$be}, input => 'down', stream => 1);
        contract($rs, 502, 'server_error', 'backend_error', undef,
                 "streamed follow-up, $be answers 503");

        my $rg = call('A', 'GET', "/v1/responses/$ROOT{$be}");
        contract($rg, 502, 'server_error', 'backend_error', undef,
                 "GET of a response, $be answers 503");

        if ($CONV{$be}) {
            my $rc = respond('B', undef, conversation => $CONV{$be}, input => 'down');
            contract($rc, 502, 'server_error', 'backend_error', undef,
                     "response in a conversation, $be answers 503");
        }
        unlink "$DIR/fail-$be";

        is(nreq($OTHER{$be}), $before->{$OTHER{$be}},
            "$be 503: $OTHER{$be} received nothing");
        is(nreq($be) - $before->{$be}, $CONV{$be} ? 4 : 3,
            "$be 503: one attempt per request, no retry on $be either");
        my $uri = "/v1/responses/$ROOT{$be}";
        my @l;
        $t->wait_for(sub { @l = grep { /^GET \Q$uri\E 502 / } split /\n/,
            MG::Test::_read_file("$DIR/gw.log", 1) // '' }, 3);
        like($l[-1] // '', qr/attempts=\[$be:503\]/, "$be 503: attempts [$be:503]");
    }
    my $r = respond('B', $ROOT{a}, input => 'back up');
    is("$r->{status} " . ($r->{backend} // '-'), '200 a', 'a answers again');
}

###########################################################################
# an id wins over a session key pinned to the other backend

{
    my $sess = "sess-073-$$";
    my $r = annotate($t->post_json('/sess/v1/chat/completions',
        { model => 'm', messages => [{ role => 'user', content => 'pin' }] },
        headers => [['X-Session-Id', $sess]]));
    is($r->{status}, 200, 'session pinned by a chat request');
    my ($pin) = (rget("mg:pin:$sess:m") // '') =~ /^([^|]+)\|/;
    is($pin, $r->{backend}, "pin names $r->{backend}");
    $pin //= 'a';
    my $other = $OTHER{$pin};
    my $pin_before = rget("mg:pin:$sess:m");

    # a new response with the session key follows the pin
    my $rn = respond('B', undef, path => '/sess/v1/responses',
        headers => [['X-Session-Id', $sess]], input => 'new in session');
    is("$rn->{status} " . ($rn->{backend} // '-'), "200 $pin",
        'a new response with the session key goes to the pinned backend');

    my $before = nreq($pin);
    for my $node (qw(A B)) {
        my $rs = respond($node, $ROOT{$other}, path => '/sess/v1/responses',
            headers => [['X-Session-Id', $sess]], input => 'id vs session');
        is("$rs->{status} " . ($rs->{backend} // '-'), "200 $other",
            "node $node: previous_response_id of $other wins over the session pinned to $pin");
        my $rs2 = respond($node, $ROOT{$other}, path => '/sess/v1/responses',
            headers => [['X-Session-Id', $sess]], input => 'id vs session',
            stream => 1);
        is("$rs2->{status} " . ($rs2->{backend} // '-'), "200 $other",
            "node $node: streamed, the id wins too");
        my $rg = call($node, 'GET', "/sess/v1/responses/$ROOT{$other}",
            headers => [['X-Session-Id', $sess]]);
        is("$rg->{status} " . ($rg->{backend} // '-'), "200 $other",
            "node $node: GET of an id of $other with the session key");
        if ($CONV{$other}) {
            my $rc = respond($node, undef, path => '/sess/v1/responses',
                conversation => $CONV{$other},
                headers => [['X-Session-Id', $sess]], input => 'conv vs session');
            is("$rc->{status} " . ($rc->{backend} // '-'), "200 $other",
                "node $node: conversation of $other wins over the session");
        }
    }
    is(nreq($pin), $before, "the pinned backend $pin received none of them");
    my ($pin_after) = (rget("mg:pin:$sess:m") // '') =~ /^([^|]+)\|/;
    is($pin_after, $pin, 'the session pin is left alone');
}

###########################################################################
# unknown ids

{
    my $before = total_requests();
    for my $node (qw(A B)) {
        my $r = respond($node, 'resp_nope', input => 'unknown');
        contract($r, 404, 'invalid_request_error', 'response_not_found',
                 'previous_response_id', "node $node: unknown previous_response_id");
        like($r->{json}{error}{message} // '', qr/resp_nope/, 'the message names the id');

        $r = respond($node, 'resp_nope', input => 'unknown', stream => 1);
        contract($r, 404, 'invalid_request_error', 'response_not_found',
                 'previous_response_id', "node $node: unknown previous_response_id, streamed");

        $r = call($node, 'GET', '/v1/responses/resp_nope');
        contract($r, 404, 'invalid_request_error', 'response_not_found', undef,
                 "node $node: GET /v1/responses/resp_nope");

        $r = call($node, 'DELETE', '/v1/responses/resp_nope');
        contract($r, 404, 'invalid_request_error', 'response_not_found', undef,
                 "node $node: DELETE /v1/responses/resp_nope");

        $r = call($node, 'GET', '/v1/responses/resp_nope/input_items?limit=2');
        contract($r, 404, 'invalid_request_error', 'response_not_found', undef,
                 "node $node: input_items of resp_nope");

        $r = respond($node, undef, conversation => 'conv_nope', input => 'unknown');
        contract($r, 404, 'invalid_request_error', 'conversation_not_found',
                 'conversation', "node $node: unknown conversation (string)");

        $r = respond($node, undef, conversation => { id => 'conv_nope' }, input => 'unknown');
        contract($r, 404, 'invalid_request_error', 'conversation_not_found',
                 'conversation', "node $node: unknown conversation ({\"id\"})");

        $r = call($node, 'GET', '/v1/conversations/conv_nope/items');
        contract($r, 404, 'invalid_request_error', 'conversation_not_found', undef,
                 "node $node: GET /v1/conversations/conv_nope/items");
    }
    is(total_requests(), $before, 'unknown ids: no backend received anything');

    # a response id is not a conversation id and the reverse
    my $r = respond('A', undef, conversation => $ROOT{a}, input => 'wrong kind');
    contract($r, 404, 'invalid_request_error', 'conversation_not_found',
             'conversation', 'a response id used as a conversation');
    if ($CONV{a}) {
        $r = call('B', 'GET', "/v1/responses/$CONV{a}");
        contract($r, 404, 'invalid_request_error', 'response_not_found', undef,
                 'a conversation id used as a response id');
    }

    # malformed ids
    $r = post('A', '/v1/responses', { model => 'm', input => 'x',
        previous_response_id => 123 });
    contract($r, 400, 'invalid_request_error', 'invalid_type',
             'previous_response_id', 'previous_response_id not a string');
    $r = post('A', '/v1/responses', { model => 'm', input => 'x',
        conversation => { name => 'no id' } });
    contract($r, 400, 'invalid_request_error', 'invalid_type',
             'conversation', 'conversation object without id');
    is(total_requests(), $before, 'malformed ids: no backend received anything');
}

###########################################################################
# node C: model_gateway_state_default_backend b

{
    my $before_a = nreq('a');
    my $r = respond('C', 'resp_nope', input => 'default');
    is("$r->{status} " . ($r->{backend} // '-') . ' ' . ($r->{mock} // '-'),
        '404 b b', 'default backend: unknown previous_response_id goes to b');
    is($r->{code}, 'previous_response_not_found', 'b\'s own 404 is passed through');
    is(eval { decode_json($r->{mreq}{body})->{previous_response_id} }, 'resp_nope',
        'b received the request');

    $r = call('C', 'GET', '/v1/responses/resp_nope');
    is("$r->{status} " . ($r->{mock} // '-'), '404 b', 'default backend: GET unknown id goes to b');
    is($r->{mreq}{path}, '/openai/v1/responses/resp_nope', 'path on b');

    $r = respond('C', undef, conversation => 'conv_nope', input => 'default');
    is("$r->{status} " . ($r->{mock} // '-'), '404 b', 'default backend: unknown conversation goes to b');
    is($r->{code}, 'conversation_not_found', 'b\'s own conversation_not_found');

    # an id b created but the gateway never recorded: b answers it
    my $real = "resp_b_unrecorded";
    mock_record('b', '+', $real);
    $r = respond('C', $real, input => 'default known to b');
    is("$r->{status} " . ($r->{backend} // '-'), '200 b',
        'default backend: an unrecorded id of b is served by b');
    $r = respond('A', $real, input => 'no default on A');
    is($r->{status} . ' ' . ($r->{code} // '-'), '404 response_not_found',
        'node A (no default): the same id is unknown');

    # known ids still go to their backend
    $r = respond('C', $ROOT{a}, input => 'known on C');
    is("$r->{status} " . ($r->{backend} // '-'), '200 a', 'node C: a known id of a goes to a');
    $r = call('C', 'GET', "/v1/responses/$ROOT{a}");
    is("$r->{status} " . ($r->{backend} // '-'), '200 a', 'node C: GET of a known id of a');
    is(nreq('a'), $before_a + 2, 'a received only the known ids');
}

###########################################################################
# Redis down

{
    my $created_down;
    $t->stop_redis;
    for my $n (qw(A B C)) {
        ok($t->wait_for(sub { $NODE{$n}->grep_log(qr/redis \S+ is down/) >= 2 }, 10),
            "node $n: both workers saw redis go down");
    }
    my $before = { map { $_ => nreq($_) } qw(a b) };

    for my $node (qw(A B)) {
        my $r = respond($node, $ROOT{a}, input => 'redis down');
        contract($r, 503, 'server_error', 'state_store_unavailable', undef,
                 "node $node, redis down: previous_response_id");
        $r = respond($node, $SROOT{b} // $ROOT{b}, input => 'redis down', stream => 1);
        contract($r, 503, 'server_error', 'state_store_unavailable', undef,
                 "node $node, redis down: streamed follow-up");
        $r = call($node, 'GET', "/v1/responses/$ROOT{b}");
        contract($r, 503, 'server_error', 'state_store_unavailable', undef,
                 "node $node, redis down: GET /v1/responses/ID");
        $r = call($node, 'POST', "/v1/responses/$ROOT{b}/cancel", body => '');
        contract($r, 503, 'server_error', 'state_store_unavailable', undef,
                 "node $node, redis down: cancel");
        if ($CONV{a}) {
            $r = respond($node, undef, conversation => { id => $CONV{a} },
                         input => 'redis down');
            contract($r, 503, 'server_error', 'state_store_unavailable', undef,
                     "node $node, redis down: conversation");
            $r = call($node, 'GET', "/v1/conversations/$CONV{a}/items");
            contract($r, 503, 'server_error', 'state_store_unavailable', undef,
                     "node $node, redis down: conversation items");
        }
    }
    is_deeply({ map { $_ => nreq($_) } qw(a b) }, $before,
        'redis down: no follow-up reached a backend');

    for my $node (qw(A B)) {
        my $r = post($node, '/v1/chat/completions',
            { model => 'm', messages => [{ role => 'user', content => 'hi' }] });
        is($r->{status}, 200, "node $node, redis down: stateless chat works");
    }
    my $rn = respond('A', undef, input => 'created while redis is down');
    is($rn->{status}, 200, 'redis down: a new response is still served');
    $created_down = $rn->{id};
    my $rs = respond('B', undef, input => 'created while redis is down', stream => 1);
    is($rs->{status}, 200, 'redis down: a new streamed response is still served');
    ok($rs->{complete} && $rs->{body} =~ /response\.completed/,
        'redis down: the stream ends normally');

    # node C: to the default backend
    my $r = respond('C', $ROOT{a}, input => 'redis down on C');
    is("$r->{status} " . ($r->{mock} // '-'), '404 b',
        'node C, redis down: an id goes to the default backend b (which does not know it)');
    $r = respond('C', $ROOT{b}, input => 'redis down on C');
    is("$r->{status} " . ($r->{backend} // '-'), '200 b',
        'node C, redis down: an id of b is served by b');

    # Redis back: recording resumes
    my %up = map { $_ => scalar $NODE{$_}->grep_log(qr/redis \S+ is up/) } qw(A B C);
    $t->redis(args => \@RARGS);
    for my $n (qw(A B C)) {
        ok($t->wait_for(sub {
            $NODE{$n}->grep_log(qr/redis \S+ is up/) >= $up{$n} + 2 }, 15),
            "node $n: both workers reconnected to redis");
    }
    for my $node (qw(A B)) {
        my $r2 = respond($node, undef, input => 'after redis restart');
        is($r2->{status}, 200, "node $node: response after the restart");
        is(rget("mg:resp:" . ($r2->{id} // '')), $r2->{backend},
            "node $node: its id is recorded again");
        my $r3 = respond($OTHER_NODE{$node}, $r2->{id}, input => 'follow');
        is("$r3->{status} " . ($r3->{backend} // '-'), "200 $r2->{backend}",
            "node $node: immediate follow-up on the other node reaches its backend");
        my $r4 = respond($node, undef, input => 'after restart', stream => 1);
        is(rget("mg:resp:" . ($r4->{id} // '')), $r4->{backend},
            "node $node: streamed ids are recorded again");
    }
    my $rc = post('A', '/v1/conversations', {});
    is(rget("mg:conv:" . ($rc->{json}{id} // '')), $rc->{backend},
        'conversations are recorded again');

    $r = respond('B', $created_down, input => 'lost');
    is($r->{status} . ' ' . ($r->{code} // '-'), '404 response_not_found',
        'a response created while redis was down is unknown afterwards');
    ok(scalar $t->grep_log(qr/could not record|recording .* failed/),
        'the lost record is logged');
}

###########################################################################
# Responses streams: cut after content, clean end

{
    for my $node (qw(A B)) {
        my $r = respond($node, undef, input => 'cut', stream => 1);
        is($r->{status}, 200, "node $node: cut stream: 200 (content was sent)");
        my @ev = sse_events($r->{body});
        ok((grep { ($_->[0] // '') eq 'response.output_text.delta' } @ev) >= 2,
            'cut stream: the content before the cut reached the client');
        is($ev[-1][0], 'error', 'cut stream: ends with "event: error"');
        my $e = eval { decode_json($ev[-1][1]) } || {};
        is($e->{type}, 'error', 'cut stream: data type error');
        is($e->{code}, 'stream_interrupted', 'cut stream: code stream_interrupted');
        unlike($r->{body}, qr/\[DONE\]/, 'cut stream: no [DONE]');
        ok($r->{complete}, 'cut stream: the response to the client is terminated properly');
        is(scalar(grep { ($_->[0] // '') eq 'response.completed' } @ev), 0,
            'cut stream: no response.completed invented');
        # the response was created: its id is recorded
        my $id = $r->{id} // '';
        ok($t->wait_for(sub { defined rget("mg:resp:$id") }, 2),
            "cut stream: $id recorded");
        my @l = $NODE{$node}->grep_log(qr/stream from backend "[ab]" cut/);
        ok(@l, 'cut stream: logged');
    }

    my $r = respond('A', undef, input => 'clean', stream => 1);
    my @ev = sse_events($r->{body});
    is($ev[-1][0], 'response.completed', 'clean stream ends with response.completed');
    unlike($r->{body}, qr/\[DONE\]/, 'clean stream: no [DONE] added');
    is(scalar(grep { ($_->[0] // '') eq 'error' } @ev), 0, 'clean stream: no error event');
    is($r->{headers}{'cache-control'}, 'no-cache', 'clean stream: Cache-Control');

    # an event above model_gateway_event_max_size (a long answer repeated in
    # response.completed) cuts the stream: Responses-style error event
    $r = respond('B', undef, input => 'huge', stream => 1);
    @ev = sse_events($r->{body});
    is($r->{status}, 200, 'event over buffer_size: 200 (content was sent)');
    is(scalar(grep { ($_->[0] // '') eq 'response.output_text.delta' } @ev), 20,
        'event over buffer_size: the deltas before it arrived');
    is($ev[-1][0], 'error', 'event over buffer_size: ends with "event: error"');
    my $he = eval { decode_json($ev[-1][1]) } || {};
    is($he->{code}, 'stream_interrupted', 'event over buffer_size: stream_interrupted');
    unlike($r->{body}, qr/\[DONE\]/, 'event over buffer_size: no [DONE]');
    ok(scalar $tb->grep_log(qr/larger than model_gateway_event_max_size/),
        'event over buffer_size: logged');

    # chat streams still end with [DONE] (contrast)
    my $rc = post('B', '/v1/chat/completions', { model => 'm', stream => JSON::PP::true,
        messages => [{ role => 'user', content => 'x' }] });
    is($rc->{status}, 200, 'chat stream on the same nodes: 200');
    like($rc->{body}, qr/data: \[DONE\]\n\n\z/, 'chat streams keep their [DONE]');
}

###########################################################################
# end: the other nodes' logs get the done_testing checks

sub check_node {
    my ($node, $label) = @_;
    $node->stop;
    my @lines = split /\n/, $node->error_log;
    my @alerts = grep { /\[(?:alert|emerg)\]/ } @lines;
    ok(!@alerts, "node $label: no alerts") or diag(join "\n", @alerts);
    my @crash = grep { /exited on signal/ } @lines;
    ok(!@crash, "node $label: no crashed workers") or diag(join "\n", @crash);
    my @san = grep { /Sanitizer|runtime error:/ } @lines,
        split /\n/, $node->stderr_log;
    ok(!@san, "node $label: no sanitizer reports") or diag(join "\n", @san);
}

check_node($tb, 'B');
check_node($tc, 'C');

$t->done_testing;
