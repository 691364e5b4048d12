#!/usr/bin/perl

# Configuration: `nginx -t` rejects each kind of broken backend definition
# with a message naming the problem and the file:line; a https backend with
# `connect` is accepted without resolving its host name; the repository's
# example conf/nginx.conf loads, runs and serves a chat request.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP qw(decode_json);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $dir = $t->dir;
my $conf = $t->conf_path;
my $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/..');

open my $kf, '>', "$dir/good.key" or die;
print $kf "sk-config-test-key\n";
close $kf;

my $UNSET = 'MG_TEST_SURELY_UNSET_KEY_VAR';
delete $ENV{$UNSET};
$ENV{MG_TEST_SET_KEY_VAR} = 'sk-from-env';
delete $ENV{$_} for qw(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
                       AWS_SESSION_TOKEN);

# larger than any key or credentials file the module reads
open my $bf, '>', "$dir/huge.key" or die;
print $bf 'k' x 70000;
close $bf;

open my $af, '>', "$dir/aws-credentials" or die;
print $af "[gw]\naws_access_key_id = AKIDCONF\n"
    . "aws_secret_access_key = s3cr3t-conf-secret\n"
    . "[half]\naws_access_key_id = AKIDHALF\n"
    . "[spaced]\naws_access_key_id = AKID SPACED\n";
close $af;

###########################################################################
# nginx -t failures

# A valid configuration with one more backend block (and extra http and
# location directives) spliced in. Markers in comments: "# HERE" is the line
# the error must name, "# OPEN"/"# CLOSE" the lines of a block whose error
# is found at its end, "# FIRST" the first definition of a duplicate.
sub base_conf {
    my (%o) = @_;
    my $backend = $o{backend} // '';
    my $http = $o{http} // '';
    my $loc = $o{location} // '';
    return <<"EOF";
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%
$http
    model_gateway_backend good {
        type openai;
        url http://127.0.0.1:%%PORT_good%%/v1;
        key_file %%DIR%%/good.key;
        model good-model;
    }
$backend
    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
$loc
        }
    }
}
EOF
}

# line number (1-based) of the first line of the written nginx.conf
# containing $marker
sub line_of {
    my $marker = shift;
    my @l = split /\n/, MG::Test::_read_file($conf);
    for my $i (0 .. $#l) {
        return $i + 1 if index($l[$i], $marker) >= 0;
    }
    die "marker $marker not found in nginx.conf\n";
}

{
    $t->write_conf(base_conf());
    my ($rc, $out) = $t->nginx_t;
    is($rc, 0, 'control: the base configuration passes nginx -t')
        or diag($out);
    like($out, qr/test is successful/, 'control: test is successful');
}

my @cases = (
    {
        name    => 'unknown backend type',
        backend => <<'EOF',
    model_gateway_backend bad {
        type anthropic_v9;  # HERE
        url http://127.0.0.1:%%PORT_bad%%/v1;
        model bad-model;
    }
EOF
        problem => qr/anthropic_v9/,
    },
    {
        name    => 'key_file that does not exist',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        key_file %%DIR%%/no-such-dir/no-such.key;  # HERE
        model bad-model;
    }
EOF
        problem => qr{no-such-dir/no-such\.key},
    },
    {
        name    => 'key_file too large',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        key_file %%DIR%%/huge.key;  # HERE
        model bad-model;
    }
EOF
        problem => qr{file ".*huge\.key" for .* is too large},
    },
    {
        name    => 'key_env naming an unset variable',
        backend => <<"EOF",
    model_gateway_backend bad {
        type openai;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        key_env $UNSET;  # HERE
        model bad-model;
    }
EOF
        problem => qr/\Q$UNSET\E/,
    },
    {
        name    => 'bedrock without credentials in the environment',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type bedrock;
        url https://bedrock-runtime.us-east-1.amazonaws.com;
        model bad-model;
    }  # CLOSE
EOF
        at      => ['# OPEN', '# CLOSE'],
        problem => qr/AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/,
    },
    {
        name    => 'bedrock without region on a URL that has none',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        aws_credentials file %%DIR%%/aws-credentials gw;
        model bad-model;
    }  # CLOSE
EOF
        at      => ['# OPEN', '# CLOSE'],
        problem => qr/needs "region"/,
    },
    {
        name    => 'bedrock with an invalid region',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        region US_EAST;
        aws_credentials file %%DIR%%/aws-credentials gw;
        model bad-model;
    }  # CLOSE
EOF
        at      => ['# OPEN', '# CLOSE'],
        problem => qr/invalid region "US_EAST"/,
    },
    {
        name    => 'region on a backend that is not bedrock',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        region us-east-1;
        model bad-model;
    }  # CLOSE
EOF
        at      => ['# OPEN', '# CLOSE'],
        problem => qr/backends of type bedrock/,
    },
    {
        name    => 'bedrock with an API key and AWS credentials',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        region us-east-1;
        key_file %%DIR%%/good.key;
        aws_credentials file %%DIR%%/aws-credentials gw;
        model bad-model;
    }  # CLOSE
EOF
        at      => ['# OPEN', '# CLOSE'],
        problem => qr/both a Bedrock API key and "aws_credentials"/,
    },
    {
        name    => 'aws_credentials with a profile the file lacks',
        backend => <<'EOF',
    model_gateway_backend bad {
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        region us-east-1;
        aws_credentials file %%DIR%%/aws-credentials nope;  # HERE
        model bad-model;
    }
EOF
        problem => qr/no aws_access_key_id .* in profile "nope"/,
    },
    {
        name    => 'aws_credentials with a key id but no secret',
        backend => <<'EOF',
    model_gateway_backend bad {
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        region us-east-1;
        aws_credentials file %%DIR%%/aws-credentials half;  # HERE
        model bad-model;
    }
EOF
        problem => qr/profile "half"/,
    },
    {
        name    => 'aws_credentials with an invalid value: its key and line',
        backend => <<'EOF',
    model_gateway_backend bad {
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        region us-east-1;
        aws_credentials file %%DIR%%/aws-credentials spaced;  # HERE
        model bad-model;
    }
EOF
        problem => qr/aws_access_key_id in line 7 of "[^"]*aws-credentials" contains an invalid character/,
    },
    {
        name    => 'aws_credentials file that does not exist',
        backend => <<'EOF',
    model_gateway_backend bad {
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        region us-east-1;
        aws_credentials file %%DIR%%/no-such-credentials;  # HERE
        model bad-model;
    }
EOF
        problem => qr/no-such-credentials" for the AWS credentials of backend "bad" failed/,
    },
    {
        name    => 'aws_credentials file too large',
        backend => <<'EOF',
    model_gateway_backend bad {
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        region us-east-1;
        aws_credentials file %%DIR%%/huge.key;  # HERE
        model bad-model;
    }
EOF
        problem => qr/huge\.key" for the AWS credentials of backend "bad" is too large/,
    },
    {
        name    => 'aws_credentials with a bad source',
        backend => <<'EOF',
    model_gateway_backend bad {
        type bedrock;
        url http://127.0.0.1:%%PORT_bad%%;
        region us-east-1;
        aws_credentials imds;  # HERE
        model bad-model;
    }
EOF
        problem => qr/expected "env" or "file PATH \[PROFILE\]"/,
    },
    {
        name    => 'embeddings on an anthropic backend',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type anthropic;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        key_file %%DIR%%/good.key;
        model bad-emb voyage-3 api=embeddings;
    }  # CLOSE
EOF
        at      => ['# OPEN', '# CLOSE'],
        problem => qr/do not serve embeddings/,
    },
    {
        name    => 'model with an unknown api',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        key_file %%DIR%%/good.key;
        model bad-model api=images;  # HERE
    }
EOF
        problem => qr/api=chat or api=embeddings/,
    },
    {
        name    => 'url without scheme',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai_compatible;
        url 127.0.0.1:%%PORT_bad%%/v1;  # HERE
        model bad-model;
    }
EOF
        problem => qr{"127\.0\.0\.1:\d+/v1".*http}i,
    },
    {
        name    => 'url with ftp scheme',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai_compatible;
        url ftp://x;  # HERE
        model bad-model;
    }
EOF
        problem => qr{"ftp://x".*http}i,
    },
    {
        name    => 'unresolvable host without connect',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type openai_compatible;
        url http://no-such-host.mg-test.invalid:8000/v1;  # HERE
        model bad-model;
    }
EOF
        problem => qr/no-such-host\.mg-test\.invalid/,
        # resolution may happen when the block is complete: the url line
        # or the block's first line
        at      => ['# HERE', '# OPEN'],
    },
    {
        name    => 'unknown directive inside model_gateway_backend',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        bogus_directive on;  # HERE
        model bad-model;
    }
EOF
        problem => qr/unknown directive "bogus_directive"/,
    },
    {
        name    => 'missing url',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type openai_compatible;
        model bad-model;
    }  # CLOSE
EOF
        problem => qr/\burl\b/,
        at      => ['# OPEN', '# CLOSE'],
    },
    {
        name    => 'missing type',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        url http://127.0.0.1:%%PORT_bad%%/v1;
        model bad-model;
    }  # CLOSE
EOF
        problem => qr/\btype\b/,
        at      => ['# OPEN', '# CLOSE'],
    },
    {
        name    => 'type openai without a key',
        backend => <<'EOF',
    model_gateway_backend bad {  # OPEN
        type openai;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        model bad-model;
    }  # CLOSE
EOF
        problem => qr/\bkey/i,
        at      => ['# OPEN', '# CLOSE'],
    },
    {
        name    => 'duplicate backend name',
        backend => <<'EOF',
    model_gateway_backend twin {  # FIRST
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        model twin-model;
    }

    model_gateway_backend twin {  # OPEN
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad2%%/v1;
        model twin-model-2;
    }  # CLOSE
EOF
        problem => qr/duplicate.*"twin"/i,
        at      => ['# OPEN', '# CLOSE'],
        first   => 1,
    },
    {
        name    => 'weight 0',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        model bad-model;
        weight 0;  # HERE
    }
EOF
        problem => qr/weight/,
    },
    {
        name    => 'weight 1001',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        model bad-model;
        weight 1001;  # HERE
    }
EOF
        problem => qr/weight/,
    },
    (map { +{
        name     => "model_gateway_forward_headers $_",
        location => "            model_gateway_forward_headers X-Ok $_;  # HERE",
        problem  => qr/"\Q$_\E" is the gateway's own/,
    } } qw(X-Amz-Date x-goog-user-project Authorization api-key
           anthropic-beta Host Transfer-Encoding)),
    {
        name     => 'model_gateway_forward_headers with a bad name',
        http     => '    model_gateway_forward_headers "X-Bad:Name";  # HERE',
        problem  => qr/invalid header name/,
    },
    (map { my ($h, $type, $cred) = @$_; +{
        name    => "backend header $h ($type)",
        backend => <<"EOF",
    model_gateway_backend bad {
        type $type;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        $cred
        model bad-model;
        header $h fixed;  # HERE
    }
EOF
        problem => qr/"\Q$h\E" is written by the gateway/,
    } } (['Authorization', 'openai', 'key_file %%DIR%%/good.key;'],
         ['x-api-key', 'anthropic', 'key_file %%DIR%%/good.key;'],
         ['Content-Length', 'openai', 'key_file %%DIR%%/good.key;'],
         ['X-Amz-Date', 'bedrock',
          'region us-east-1; aws_credentials file %%DIR%%/aws-credentials gw;'])),
    {
        name    => 'keepalive_requests 0',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        keepalive_requests 0;  # HERE
        model bad-model;
    }
EOF
        problem => qr/invalid keepalive_requests "0"/,
    },
    {
        name    => 'keepalive_time 0',
        backend => <<'EOF',
    model_gateway_backend bad {
        type openai;
        url http://127.0.0.1:%%PORT_bad%%/v1;
        keepalive_time 0;  # HERE
        model bad-model;
    }
EOF
        problem => qr/invalid keepalive_time "0"/,
    },
    {
        name     => 'model_gateway_tries 0',
        location => '            model_gateway_tries 0;  # HERE',
        problem  => qr/model_gateway_tries|between 1 and 16/,
    },
    {
        name     => 'model_gateway_tries 17',
        location => '            model_gateway_tries 17;  # HERE',
        problem  => qr/model_gateway_tries|between 1 and 16/,
    },
    {
        name    => 'model_gateway_tries 0 in http',
        http    => '    model_gateway_tries 0;  # HERE',
        problem => qr/model_gateway_tries|between 1 and 16/,
    },
);

for my $c (@cases) {
    my $name = $c->{name};
    $t->write_conf(base_conf(map { $_ => $c->{$_} }
        grep { exists $c->{$_} } qw(backend http location)));
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, qr/\[emerg\]/, "$name: [emerg] reported");
    like($out, $c->{problem}, "$name: the message names the problem")
        or diag($out);
    unlike($out, qr/s3cr3t/, "$name: no secret in the output");

    # the emerg line (the first one: nginx -t stops at the first error)
    my ($emerg) = grep { /\[emerg\]/ } split /\n/, $out;
    $emerg //= '';
    my @at = map { line_of($_) } @{$c->{at} || ['# HERE']};
    my $alt = join '|', @at;
    like($emerg, qr/ in \Q$conf\E:(?:$alt)(?!\d)/,
        "$name: names $conf:" . join(' or :', @at)) or diag($out);
    if ($c->{first}) {
        my $first = line_of('# FIRST');
        like($emerg, qr/\Q$conf\E:$first(?!\d).* in \Q$conf\E:\d+$/,
            "$name: mentions the first definition ($conf:$first)")
            or diag($out);
    }
}

###########################################################################
# https backend with connect: the URL's host is not resolved

{
    $t->write_conf(base_conf(backend => <<'EOF'));
    model_gateway_backend remote {
        type openai;
        url https://api.example.invalid/v1;
        connect 127.0.0.1:%%PORT_remote%%;
        key_env MG_TEST_SET_KEY_VAR;
        ssl_trusted_certificate %%CA%%;
        model remote-model;
    }

    model_gateway_backend remote_port {
        type openai_compatible;
        url https://other.example.invalid:8443/prefix/v1;
        connect 127.0.0.1:%%PORT_remote2%%;
        model remote-model-2;
    }
EOF
    my ($rc, $out) = $t->nginx_t;
    is($rc, 0, 'https + connect to an unresolvable host name: nginx -t passes')
        or diag($out);
    like($out, qr/test is successful/, 'https + connect: test is successful');
}

###########################################################################
# the repository's example configuration

{
    my $text = MG::Test::_read_file("$ROOT/conf/nginx.conf");
    my $mod = $t->module_path;

    my $subst = sub {
        my ($re, $repl, $what) = @_;
        my $n = ref $repl
            ? ($text =~ s/$re/$repl->()/ge) : ($text =~ s/$re/$repl/g);
        is($n, 1, "example conf: $what") or diag("pattern $re");
    };

    $subst->(qr/^load_module\s+\S+;/m,
        "load_module $mod;\ndaemon off;\npid %%DIR%%/nginx.pid;",
        'load_module rewritten');
    $subst->(qr/^worker_processes\s+\S+;/m, 'worker_processes 1;',
        'worker_processes 1');
    $subst->(qr/^error_log\s+\S+/m, 'error_log %%DIR%%/error.log',
        'error_log into the test dir');
    $subst->(qr/^(\s*access_log\s+)\S+/m, sub { "$1%%DIR%%/gateway.log" },
        'access_log into the test dir');
    $subst->(qr/^http\s*\{\n/m,
        "http {\n    %%TEST_GLOBALS_HTTP%%\n"
        . "    model_gateway_ssl_trusted_certificate %%CA%%;\n",
        'temp paths and the test CA');
    $subst->(qr{^(\s*)url\s+https://api\.openai\.com/v1;}m,
        sub { "$1url https://api.openai.com/v1;\n$1connect 127.0.0.1:%%PORT_openai%%;" },
        'openai backend connects to the mock');
    $subst->(qr{url\s+http://127\.0\.0\.1:8000/v1;},
        'url http://127.0.0.1:%%PORT_vllm%%/v1;', 'vllm url to the mock');
    $subst->(qr/listen\s+127\.0\.0\.1:8080;/, 'listen 127.0.0.1:%%PORT_gw%%;',
        'listen port');
    unlike($text, qr{/var/log|/usr/lib}, 'example conf: no system paths left');

    my $KEY = 'sk-example-conf-KEY-31337';
    $ENV{OPENAI_API_KEY} = $KEY;

    $t->mock('openai', tls => [$t->cert('api.openai.com')]);
    $t->mock('vllm');

    $t->write_conf($text);
    my ($rc, $out) = $t->nginx_t;
    is($rc, 0, 'example conf: nginx -t passes') or diag($out);

    $t->run;

    my $msg = '{"role":"user","content":"Say hi \u00e9"}';
    my @res;
    for my $i (1 .. 4) {
        my $body = qq({"model":"gpt-4o-mini","messages":[$msg],"user":"u$i"});
        my $r = $t->request(method => 'POST', path => '/v1/chat/completions',
            headers => [['Content-Type', 'application/json']], body => $body);
        is($r->{status}, 200, "example conf: chat request $i: 200");
        is($r->{json} && $r->{json}{object}, 'chat.completion',
            "example conf: chat request $i: a chat.completion");
        push @res, $r;
    }

    my $oa = $t->mock_requests('openai');
    my $vl = $t->mock_requests('vllm');
    is(scalar @$oa, 3, 'example conf: weight 3: openai got 3 of 4');
    is(scalar @$vl, 1, 'example conf: vllm got 1 of 4');

    for my $q (@$oa) {
        my $u = ($q->{body} =~ /"user":"(u\d)"/)[0] // '?';
        is($q->{path}, '/v1/chat/completions', "openai ($u): path");
        is($q->{sni}, 'api.openai.com', "openai ($u): TLS SNI");
        is($q->{headers}{host}, 'api.openai.com', "openai ($u): Host");
        is($q->{headers}{authorization}, "Bearer $KEY",
            "openai ($u): key from OPENAI_API_KEY");
        is($q->{body},
            qq({"model":"gpt-4o-mini","messages":[$msg],"user":"$u"}),
            "openai ($u): body");
    }
    for my $q (@$vl) {
        my $u = ($q->{body} =~ /"user":"(u\d)"/)[0] // '?';
        is($q->{path}, '/v1/chat/completions', "vllm ($u): path");
        is($q->{headers}{host}, '127.0.0.1:' . $t->port('vllm'),
            "vllm ($u): Host");
        is($q->{body}, qq({"model":"meta-llama/Llama-3.1-8B-Instruct",)
            . qq("messages":[$msg],"user":"$u"}),
            "vllm ($u): the alias' provider id");
    }
    # the mocks echo the model id they received; the gateway passes their
    # bodies as sent, so both provider ids come back
    my %seen = map { ($_->{json} ? $_->{json}{model} : '') => 1 } @res;
    ok($seen{'gpt-4o-mini'} && $seen{'meta-llama/Llama-3.1-8B-Instruct'},
        'example conf: responses came from both backends');

    my $r = $t->request(method => 'POST', path => '/v1/embeddings',
        headers => [['Content-Type', 'application/json']],
        body => '{"model":"text-embedding-3-small","input":"abc"}');
    is($r->{status}, 200, 'example conf: embeddings 200');
    $oa = $t->mock_requests('openai');
    is(@$oa ? $oa->[-1]{path} : undef, '/v1/embeddings',
        'example conf: embeddings path');

    my $log = '';
    $t->wait_for(sub {
        $log = MG::Test::_read_file("$dir/gateway.log", 1) // '';
        ($log =~ tr/\n//) >= 5;
    }, 5);
    my @chat = grep { m{"POST /v1/chat/completions } } split /\n/, $log;
    is(scalar(grep { /\[(?:openai|vllm):200\]/ } @chat), 4,
        'example conf: each chat request succeeded on its first attempt')
        or diag($log);
    like($log, qr{^127\.0\.0\.1 "POST /v1/chat/completions HTTP/1\.1" 200 gpt-4o-mini openai \[openai:200\] [\d.]+$}m,
        'example conf: gateway log format (openai)');
    like($log, qr{^127\.0\.0\.1 "POST /v1/chat/completions HTTP/1\.1" 200 gpt-4o-mini vllm \[vllm:200\] [\d.]+$}m,
        'example conf: gateway log format (vllm)');
    unlike($log . $t->error_log, qr/\Q$KEY\E/, 'example conf: key not logged');
}

$t->done_testing;
