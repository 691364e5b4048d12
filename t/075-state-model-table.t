#!/usr/bin/perl

# Stored ids and the model table, over https: a previous_response_id or a
# conversation whose backend (recorded in Redis, or
# model_gateway_state_default_backend) does not serve the requested model is
# a 400 model_not_available, and nothing is sent anywhere. The model here has
# an OpenAI backend and a translated (Anthropic) one, so the request carries
# per-target translated bodies: routing to a backend outside that target list
# used to index them past their end (writev() EFAULT over http, a wild
# pointer over https; the ASan run of this file catches it). An id held by a
# backend that does serve the model goes there, with that backend's provider
# id for the model.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json encode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $dir = $t->dir;
for my $k (qw(o1 o2 an)) {
    open my $fh, '>', "$dir/$k.key" or die;
    print $fh "sk-$k-key\n";
    close $fh;
}

my ($crt, $key) = $t->cert('s.test');

# every mock answers a Responses create or a chat completion, naming itself
sub answer {
    my ($name) = @_;
    return sub {
        my $r = shift;
        my $b = eval { decode_json($r->{body}) } // {};
        return { status => 200,
                 headers => [['Content-Type', 'application/json']],
                 body => encode_json({ id => "resp_${name}_$r->{n}",
                     object => 'response', model => $b->{model} // '',
                     output => [] }) };
    };
}

$t->mock('o1', tls => [$crt, $key], handler => answer('o1'));
$t->mock('o2', tls => [$crt, $key], handler => answer('o2'));
$t->mock('an', tls => [$crt, $key], handler => sub {
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => encode_json({ id => 'msg_1', type => 'message',
                 role => 'assistant', model => 'claude',
                 content => [{ type => 'text', text => 'hi' }],
                 stop_reason => 'end_turn',
                 usage => { input_tokens => 1, output_tokens => 1 } }) };
});

my $RPORT = $t->redis;

my $CONF = <<'EOF';
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_redis 127.0.0.1:%%PORT_redis%%;
    %%DEFAULT%%
    model_gateway_ssl_trusted_certificate %%CA%%;

    model_gateway_backend o1 {
        type openai;
        url https://s.test:%%PORT_o1%%/v1;
        connect 127.0.0.1:%%PORT_o1%%;
        key_file %%DIR%%/o1.key;
        model mx gpt-provider-x;
    }

    model_gateway_backend an {
        type anthropic;
        url https://s.test:%%PORT_an%%/v1;
        connect 127.0.0.1:%%PORT_an%%;
        key_file %%DIR%%/an.key;
        model mx claude-provider-x;
    }

    # o2 serves no model the requests below name; among the OpenAI-type
    # backends it comes third, past the end of mx's two targets
    model_gateway_backend o2 {
        type openai;
        url https://s.test:%%PORT_o2%%/v1;
        connect 127.0.0.1:%%PORT_o2%%;
        key_file %%DIR%%/o2.key;
        model other;
    }

    model_gateway_backend zz1 {
        type openai;
        url https://s.test:%%PORT_o2%%/v1;
        connect 127.0.0.1:%%PORT_o2%%;
        key_file %%DIR%%/o2.key;
        model other2;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;
        server_name localhost;

        location /v1/ {
            model_gateway;
        }

    }
}
EOF

$t->write_conf($CONF, DEFAULT => '');
$t->run;
ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is up/) >= 1 }, 10),
    'redis connected');

sub nreq { scalar @{$t->mock_requests($_[0])} }
sub counts { join ' ', map { nreq($_) } qw(o1 o2 an) }

sub refused {
    my ($r, $id, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{status}, 400, "$name: 400") or diag($r->{body});
    my $e = ($r->{json} // {})->{error} // {};
    is($e->{code}, 'model_not_available', "$name: model_not_available");
    is($e->{type}, 'invalid_request_error', "$name: invalid_request_error");
    is($e->{param}, 'model', "$name: param model");
    like($e->{message} // '',
         qr/'\Q$id\E' is held by a backend that does not serve the model 'mx'/,
         "$name: the message names the id and the model");
    (my $rest = $r->{body} // '') =~ s/\Q$id\E//g;
    unlike($rest, qr/\bo2\b|zz1/, "$name: no backend name");
}

# ids recorded against a backend that does not serve mx

$t->redis_cmd('SET', 'mg:resp:resp_held_by_o2', 'o2');
$t->redis_cmd('SET', 'mg:resp:resp_held_by_zz1', 'zz1');
$t->redis_cmd('SET', 'mg:conv:conv_held_by_o2', 'o2');
$t->redis_cmd('SET', 'mg:resp:resp_held_by_o1', 'o1');


for my $id (qw(resp_held_by_o2 resp_held_by_zz1)) {
    for my $stream (0, 1) {
        my $r = $t->post_json('/v1/responses', { model => 'mx',
            input => 'hello', previous_response_id => $id,
            ($stream ? (stream => JSON::PP::true) : ()) });
        refused($r, $id, "previous_response_id $id"
                         . ($stream ? ', streamed' : ''));
    }
}

my $r = $t->post_json('/v1/responses', { model => 'mx', input => 'hello',
    conversation => 'conv_held_by_o2' });
refused($r, 'conv_held_by_o2', 'conversation held by o2');

$r = $t->post_json('/v1/responses', { model => 'mx', input => 'hello',
    conversation => { id => 'conv_held_by_o2' } });
refused($r, 'conv_held_by_o2', 'conversation object held by o2');

is(counts(), '0 0 0', 'none of them reached a backend');

# chat completions carry the translated bodies: still served
$r = $t->chat('mx');
is($r->{status}, 200, 'chat to mx still served') or diag($r->{body});
my $after_chat = nreq('o1') + nreq('an');
is($after_chat, 1, 'the chat went to one of mx\'s backends');

# an id held by a backend that serves mx: there, with its provider id

$r = $t->post_json('/v1/responses', { model => 'mx', input => 'hello',
    previous_response_id => 'resp_held_by_o1' });
is($r->{status}, 200, 'id held by o1: 200') or diag($r->{body});
my $got = $t->mock_requests('o1')->[-1] // {};
my $body = eval { decode_json($got->{body}) } // {};
is($body->{model}, 'gpt-provider-x', 'o1 received its own provider id');
is($body->{previous_response_id}, 'resp_held_by_o1', 'and the id');
is(nreq('o1') + nreq('an'), $after_chat + 1, 'o1 only');
is(nreq('o2'), 0, 'nothing at o2');

$t->stop;

###########################################################################
# the default backend obeys the same rule

$t->write_conf($CONF,
    DEFAULT => 'model_gateway_state_default_backend o2;');
$t->run;
ok($t->wait_for(sub { $t->grep_log(qr/redis \S+ is up/) >= 2 }, 10),
    'redis connected again');

my $before = nreq('o1') + nreq('an');
$r = $t->post_json('/v1/responses', { model => 'mx', input => 'hello',
    previous_response_id => 'resp_unknown_anywhere' });
refused($r, 'resp_unknown_anywhere', 'unknown id, default backend o2');

$r = $t->post_json('/v1/responses', { model => 'other', input => 'hello',
    previous_response_id => 'resp_unknown_anywhere' });
is($r->{status}, 200, 'unknown id, a model o2 serves: sent to o2')
    or diag($r->{body});
is(nreq('o2'), 1, 'only that one reached o2');
is(nreq('o1') + nreq('an'), $before, 'and nothing reached o1 or an');

$t->done_testing;
