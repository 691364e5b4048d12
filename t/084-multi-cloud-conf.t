#!/usr/bin/perl

# The repository's conf/multi-cloud.conf loads and works: every https
# backend is pointed at a TLS mock of its provider (certificates for the
# real host names, from the test CA) that checks what that provider
# checks; Anthropic's failure falls over to Bedrock (signed, verified by
# the mock), Gemini and both Azure deployments answer.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP qw(decode_json encode_json);
use MG::Test;
use MG::AWS qw(sigv4_check);

my $t = MG::Test->new;
$t->need_module;

my $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/..');

my %KEY = (ANTHROPIC_API_KEY => 'sk-ant-example-conf',
           GEMINI_API_KEY => 'gemini-example-conf',
           AZURE_OPENAI_API_KEY => 'azure-example-conf',
           AWS_ACCESS_KEY_ID => 'AKIDEXAMPLECONF',
           AWS_SECRET_ACCESS_KEY => 'exampleConfSecret/KEY');
$ENV{$_} = $KEY{$_} for keys %KEY;
delete $ENV{AWS_SESSION_TOKEN};

# the example, with paths into the test directory and each https backend
# connecting to its mock

my $text = MG::Test::_read_file("$ROOT/conf/multi-cloud.conf");
my $mod = $t->module_path;

my %HOST = (anthropic => 'api.anthropic.com',
            bedrock => 'bedrock-runtime.us-east-1.amazonaws.com',
            gemini => 'generativelanguage.googleapis.com',
            azure => 'my-resource.openai.azure.com');

my $n;
$n = ($text =~ s/^load_module\s+\S+;/load_module $mod;\ndaemon off;\npid %%DIR%%\/nginx.pid;/m);
is($n, 1, 'load_module rewritten');
$n = ($text =~ s/^worker_processes\s+\S+;/worker_processes 1;/m);
is($n, 1, 'one worker');
$n = ($text =~ s/^error_log\s+\S+/error_log %%DIR%%\/error.log/m);
is($n, 1, 'error_log into the test dir');
$n = ($text =~ s/^(\s*access_log\s+)\S+/$1%%DIR%%\/gateway.log/m);
is($n, 1, 'access_log into the test dir');
$n = ($text =~ s/^http\s*\{\n/http {\n    %%TEST_GLOBALS_HTTP%%\n    model_gateway_ssl_trusted_certificate %%CA%%;\n/m);
is($n, 1, 'temp paths and the test CA');
for my $b (sort keys %HOST) {
    $n = ($text =~ s{^(\s*)(url\s+https://\Q$HOST{$b}\E\S*;)}
                    {$1$2\n$1connect 127.0.0.1:%%PORT_$b%%;}m);
    is($n, 1, "$b connects to its mock");
}
$n = ($text =~ s/listen\s+127\.0\.0\.1:8080;/listen 127.0.0.1:%%PORT_gw%%;/);
is($n, 1, 'listen port');
unlike($text, qr{/var/log|/usr/lib}, 'no system paths left');

sub reply {
    my ($status, $obj, @h) = @_;
    return { status => $status,
             headers => [['Content-Type', 'application/json'], @h],
             body => encode_json($obj) };
}

$t->mock('anthropic', tls => [$t->cert($HOST{anthropic})], handler => sub {
    my $r = shift;
    my $b = eval { decode_json($r->{body}) } // {};
    return reply(401, { type => 'error', error => {
                            type => 'authentication_error', message => 'key' } })
        unless ($r->{headers}{'x-api-key'} // '') eq $KEY{ANTHROPIC_API_KEY}
               && $r->{headers}{'anthropic-version'}
               && $r->{path} eq '/v1/messages' && $b->{max_tokens};
    my $u = $b->{messages}[-1]{content} // '';
    return reply(529, { type => 'error', error => {
                            type => 'overloaded_error', message => 'busy' } })
        if $u eq 'overloaded';
    return reply(200, { id => 'msg_1', type => 'message', role => 'assistant',
                        model => $b->{model},
                        content => [{ type => 'text',
                                      text => "anthropic $b->{model}" }],
                        stop_reason => 'end_turn',
                        usage => { input_tokens => 3, output_tokens => 2 } });
});

$t->mock('bedrock', tls => [$t->cert($HOST{bedrock})], handler => sub {
    my $r = shift;
    my $why = sigv4_check($r, access_key => $KEY{AWS_ACCESS_KEY_ID},
                          secret => $KEY{AWS_SECRET_ACCESS_KEY},
                          region => 'us-east-1', service => 'bedrock');
    return reply(403, { message => "signature: $why" },
                 ['x-amzn-ErrorType', 'InvalidSignatureException'])
        if $why;
    my ($id) = $r->{path} =~ m{^/model/([^/]+)/converse$}
        or return reply(404, { message => 'path' });
    $id =~ s/%([0-9A-F]{2})/chr hex $1/ge;
    return reply(200, { output => { message => { role => 'assistant',
                            content => [{ text => "bedrock $id" }] } },
                        stopReason => 'end_turn',
                        usage => { inputTokens => 3, outputTokens => 2,
                                   totalTokens => 5 } });
});

$t->mock('gemini', tls => [$t->cert($HOST{gemini})], handler => sub {
    my $r = shift;
    return reply(403, { error => { code => 403, message => 'key' } })
        unless ($r->{headers}{'x-goog-api-key'} // '') eq $KEY{GEMINI_API_KEY};
    my ($m) = $r->{path} =~ m{^/v1beta/models/([\w.\-]+):generateContent$}
        or return reply(404, { error => { code => 404, message => 'path' } });
    return reply(200, { candidates => [{
                            content => { role => 'model',
                                         parts => [{ text => "gemini $m" }] },
                            finishReason => 'STOP' }] });
});

$t->mock('azure', tls => [$t->cert($HOST{azure})], handler => sub {
    my $r = shift;
    return reply(401, { error => { message => 'key' } })
        unless ($r->{headers}{'api-key'} // '') eq $KEY{AZURE_OPENAI_API_KEY};
    my ($dep, $op) = $r->{path} =~
        m{^/openai/deployments/([^/]+)/(chat/completions|embeddings)\?api-version=[\w-]+$}
        or return reply(404, { error => { message => "path $r->{path}" } });
    return reply(200, { object => 'list', data => [{ object => 'embedding',
                            index => 0, embedding => [0.5] }],
                        model => $dep })
        if $op eq 'embeddings';
    return { status => 200,
             headers => [['Content-Type', 'application/json']],
             body => MG::Test::openai_completion(content => "azure $dep") };
});

$t->write_conf($text);
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t passes') or diag $out;

$t->run;

sub chat {
    my ($model, $content) = @_;
    my $r = $t->chat($model,
        messages => [{ role => 'user', content => $content // 'hi' }]);
    return ($r, ($r->{json} // {})->{choices}[0]{message}{content} // '');
}

my ($r, $c) = chat('claude-sonnet');
is($r->{status}, 200, 'claude-sonnet: 200') or diag $r->{body};
is($c, 'anthropic claude-sonnet-4-20250514', 'claude-sonnet: Anthropic first');

($r, $c) = chat('claude-sonnet', 'overloaded');
is($r->{status}, 200, 'Anthropic overloaded: 200') or diag $r->{body};
is($c, 'bedrock us.anthropic.claude-sonnet-4-20250514-v1:0',
   'Anthropic overloaded: Bedrock, signed, answers');

($r, $c) = chat('gemini-flash');
is($c, 'gemini gemini-2.5-flash', 'gemini-flash: Gemini');

($r, $c) = chat('gpt-4o-mini');
is($r->{status}, 200, 'gpt-4o-mini: 200') or diag $r->{body};
is($c, 'azure my-gpt-4o-mini', 'gpt-4o-mini: the Azure deployment');

$r = $t->post_json('/v1/embeddings',
                   { model => 'text-embedding-3-small', input => 'x' });
is($r->{status}, 200, 'embeddings: 200') or diag $r->{body};
is(($r->{json} // {})->{model}, 'my-embeddings', 'embeddings: the deployment');

$r = $t->post_json('/v1/embeddings', { model => 'gpt-4o-mini', input => 'x' });
is($r->{status}, 400, 'embeddings to the chat deployment: 400');

my @sni = map { $_->{sni} // '' } map { @{ $t->mock_requests($_) } }
          sort keys %HOST;
is(scalar(grep { !/\.com$/ } @sni), 0, 'TLS SNI is the URL host everywhere');

my $log = $t->error_log;
unlike($log, qr/\Q$KEY{$_}\E/, "$_ not in the log") for sort keys %KEY;

$t->done_testing;
