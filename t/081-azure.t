#!/usr/bin/perl

# Azure OpenAI backends: the classic deployment URL with api-version, the v1
# form with the deployment as the model, the api-key header, failover from
# Azure to OpenAI, and Azure's empty-choices first stream chunk.

use strict;
use warnings;

use Test::More;
use JSON::PP qw(decode_json encode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $KEY = 'azure-key-0123456789';
my $dir = $t->dir;

open my $fh, '>', "$dir/azure.key" or die $!;
print $fh "$KEY\n";
close $fh;

# the mock answers like Azure only when it gets what Azure expects

$t->mock('az', handler => sub {
    my $r = shift;
    my $body = eval { decode_json($r->{body}) } // {};

    if (($r->{headers}{'api-key'} // '') ne $KEY
        || defined $r->{headers}{authorization})
    {
        return { status => 401, headers => [['Content-Type', 'application/json']],
                 body => '{"error":{"code":"401","message":"Access denied"}}' };
    }

    if ($r->{path} =~ m{^/openai/deployments/([^/]+)/(chat/completions|embeddings)\?api-version=([\w-]+)$}) {
        my ($dep, $what, $ver) = ($1, $2, $3);
        return { status => 400, body => 'api-version' } unless $ver eq '2024-10-21';
        return { status => 503, body => 'RAW-AZURE-503' } if $dep eq 'down';
        if ($body->{stream}) {
            return { status => 200,
                     headers => [['Content-Type', 'text/event-stream']],
                     chunks => [
                         "data: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\","
                         . "\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n",
                         "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
                         . "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi from $dep\"}}]}\n\n",
                         "data: [DONE]\n\n" ] };
        }
        return { status => 200, headers => [['Content-Type', 'application/json']],
                 body => encode_json({ via => 'classic', deployment => $dep,
                                       what => $what, model => $body->{model} }) };
    }

    if ($r->{path} =~ m{^/openai/v1/(chat/completions|embeddings)$}) {
        return { status => 200, headers => [['Content-Type', 'application/json']],
                 body => encode_json({ via => 'v1', what => $1,
                                       model => $body->{model} }) };
    }

    return { status => 404, body => 'no such path' };
});

$t->mock('oai', handler => sub {
    return { status => 200, headers => [['Content-Type', 'application/json']],
             body => encode_json({ via => 'openai' }) };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_max_fails 0;

    model_gateway_backend classic {
        type azure;
        url http://127.0.0.1:%%PORT_az%%/openai;
        key_file %%DIR%%/azure.key;
        model gpt-4o my-gpt4o;
        model emb my-emb;
        model flaky down;
        weight 100;
    }

    model_gateway_backend v1 {
        type azure;
        url http://127.0.0.1:%%PORT_az%%/openai/v1;
        key_file %%DIR%%/azure.key;
        model mini my-mini;
    }

    model_gateway_backend openai {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_oai%%/v1;
        model flaky;
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

my $r = $t->chat('gpt-4o');
is($r->{status}, 200, 'classic: 200');
is($r->{json}{via}, 'classic', 'classic: deployment URL with api-version');
is($r->{json}{deployment}, 'my-gpt4o', 'classic: the deployment is in the path');
is($r->{json}{model}, 'gpt-4o', 'classic: the body is sent as the client wrote it');

$r = $t->post_json('/v1/embeddings', { model => 'emb', input => 'x' });
is($r->{json}{what}, 'embeddings', 'classic embeddings');
is($r->{json}{deployment}, 'my-emb', 'classic embeddings deployment');

$r = $t->chat('mini');
is($r->{json}{via}, 'v1', 'v1: OpenAI paths');
is($r->{json}{model}, 'my-mini', 'v1: the deployment is the model');

my @reqs = @{ $t->mock_requests('az') };
is(scalar(grep { ($_->{headers}{'api-key'} // '') eq $KEY } @reqs),
   scalar @reqs, 'every request carries api-key');
is(scalar(grep { defined $_->{headers}{authorization} } @reqs), 0,
   'no Authorization header to Azure');

$r = $t->chat('flaky');
is($r->{status}, 200, 'Azure 503: failover');
is($r->{json}{via}, 'openai', 'failover to the OpenAI-compatible backend');
unlike($r->{body}, qr/RAW-AZURE/, 'the raw 503 body is not passed on');

my $s = $t->stream(path => '/v1/chat/completions',
    body => encode_json({ model => 'gpt-4o', stream => JSON::PP::true,
                          messages => [{ role => 'user', content => 'hi' }] }));
my $all = $s->rest(10) // '';
$s->close;
like($all, qr/prompt_filter_results/, 'stream: the empty-choices chunk passes');
like($all, qr/hi from my-gpt4o/, 'stream: content');
like($all, qr/data: \[DONE\]/, 'stream: [DONE]');

unlike($t->error_log, qr/\Q$KEY\E/, 'the key is not logged');

$t->done_testing;
