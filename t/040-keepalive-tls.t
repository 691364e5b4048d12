#!/usr/bin/perl

# Backend connections of the model gateway: keepalive reuse (http, https,
# after streams), the cases that must not reuse a connection (client
# disconnect mid-stream, "Connection: close", keepalive 0), connections kept
# per backend (Host and SNI), connections retired after keepalive_requests
# requests and at keepalive_time, TLS verification failures and ssl_verify
# off, and SNI taken from the URL host when `connect` points elsewhere.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

###########################################################################
# certificates

my ($k_crt, $k_key) = $t->cert('k.test');
my ($o_crt, $o_key) = $t->cert('other.test');
my ($r_crt, $r_key) = $t->rogue_cert('k.test');
my ($ab_crt, $ab_key) = san_cert($t, 'ab', 'a.test', 'b.test');

# a certificate from the test CA with several DNS names (the harness makes
# one name per certificate)
sub san_cert {
    my ($t, $name, @hosts) = @_;
    my ($cacrt, $cakey) = $t->make_ca;
    my $d = $t->dir . '/ca';
    my $san = join ',', map { "DNS:$_" } @hosts;
    open my $fh, '>', "$d/$name.cnf" or die "$d/$name.cnf: $!";
    print $fh <<"EOF";
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $hosts[0]
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $san
EOF
    close $fh;
    for my $cmd (
        ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
            '-out', "$d/$name.key"],
        ['req', '-new', '-config', "$d/$name.cnf", '-key', "$d/$name.key",
            '-out', "$d/$name.csr"],
        ['x509', '-req', '-in', "$d/$name.csr", '-CA', $cacrt, '-CAkey',
            $cakey, '-set_serial', '0x' . sprintf('%x', time) . '99',
            '-days', '30', '-sha256', '-extfile', "$d/$name.cnf",
            '-extensions', 'v3_leaf', '-out', "$d/$name.crt"])
    {
        my $out = qx{openssl @{[map { quotemeta } @$cmd]} 2>&1};
        die "openssl @$cmd: $out" if $?;
    }
    return ("$d/$name.crt", "$d/$name.key");
}

###########################################################################
# mocks

my @EVENTS = MG::Test::openai_stream_events(pieces => ['kept', ' alive']);
my $SSE = [['Content-Type', 'text/event-stream']];

sub req_json { eval { JSON::PP::decode_json($_[0]{body}) } || {} }

# streams when asked to, else the default chat.completion
my $std = sub {
    my $r = shift;
    return { headers => $SSE, chunks => [@EVENTS] } if req_json($r)->{stream};
    return MG::Test::default_handler($r);
};

$t->mock('ka', handler => $std);
$t->mock('kas', handler => $std);
$t->mock('ktls', tls => [$k_crt, $k_key], handler => $std);
$t->mock('k0', handler => $std);
$t->mock('kr', handler => $std);
$t->mock('krs', tls => [$k_crt, $k_key], handler => $std);
# a request asking for it is answered after 2.5 s
$t->mock('kt', handler => sub {
    my $r = shift;
    my $spec = $std->($r);
    $spec->{delay} = 2.5
        if (req_json($r)->{messages}[0]{content} // '') eq 'slow';
    return $spec;
});
$t->mock('hosts', handler => $std);
$t->mock('sni', tls => [$ab_crt, $ab_key], handler => $std);
$t->mock('rogue', tls => [$r_crt, $r_key], handler => $std);
$t->mock('other', tls => [$o_crt, $o_key], handler => $std);

# client disconnect: the first request streams and holds forever
$t->mock('dc', handler => sub {
    my $r = shift;
    return { headers => $SSE, chunks => [@EVENTS], hold_after => 2,
             release => 'never-dc', hold_timeout => 60 }
        if req_json($r)->{stream};
    return MG::Test::default_handler($r);
});

# "Connection: close" from the backend, while the mock itself would keep
# reading requests on that connection (so a reuse would show up as a
# second request on connection 1)
my $cc_body = MG::Test::openai_completion(id => 'chatcmpl-close',
    content => 'closing');
$t->mock('cc', handler => sub {
    my $r = shift;
    return MG::Test::default_handler($r) unless $r->{n} == 1;
    return { raw_pieces => ["HTTP/1.1 200 OK\r\n"
        . "Content-Type: application/json\r\n"
        . "Content-Length: " . length($cc_body) . "\r\n"
        . "Connection: close\r\n\r\n" . $cc_body], keepalive => 1 };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_ssl_trusted_certificate %%CA%%;
    model_gateway_connect_timeout 5s;     # bounds a failure's wait

    model_gateway_backend ka {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_ka%%/v1;
        model ka;
    }

    model_gateway_backend kas {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_kas%%/v1;
        model kas;
    }

    model_gateway_backend ktls {
        type openai_compatible;
        url https://k.test:%%PORT_ktls%%/v1;
        connect 127.0.0.1:%%PORT_ktls%%;
        ssl_trusted_certificate %%CA%%;
        model ktls;
    }

    model_gateway_backend dc {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_dc%%/v1;
        model dc;
    }

    model_gateway_backend cc {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_cc%%/v1;
        model cc;
    }

    model_gateway_backend k0 {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_k0%%/v1;
        model k0;
        keepalive 0;
    }

    model_gateway_backend kr {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_kr%%/v1;
        model kr;
        keepalive_requests 3;
    }

    model_gateway_backend krs {
        type openai_compatible;
        url https://k.test:%%PORT_krs%%/v1;
        connect 127.0.0.1:%%PORT_krs%%;
        ssl_trusted_certificate %%CA%%;
        model krs;
        keepalive_requests 2;
    }

    model_gateway_backend kt {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_kt%%/v1;
        model kt;
        keepalive_time 2s;
    }

    model_gateway_backend ha {
        type openai_compatible;
        url http://a.test:%%PORT_hosts%%/v1;
        connect 127.0.0.1:%%PORT_hosts%%;
        model ha;
    }

    model_gateway_backend hb {
        type openai_compatible;
        url http://b.test:%%PORT_hosts%%/v1;
        connect 127.0.0.1:%%PORT_hosts%%;
        model hb;
    }

    model_gateway_backend sa {
        type openai_compatible;
        url https://a.test:%%PORT_sni%%/v1;
        connect 127.0.0.1:%%PORT_sni%%;
        model sa;
    }

    model_gateway_backend sb {
        type openai_compatible;
        url https://b.test:%%PORT_sni%%/v1;
        connect 127.0.0.1:%%PORT_sni%%;
        model sb;
    }

    model_gateway_backend rogue {
        type openai_compatible;
        url https://k.test:%%PORT_rogue%%/v1;
        connect 127.0.0.1:%%PORT_rogue%%;
        ssl_trusted_certificate %%CA%%;
        model rogue;
    }

    model_gateway_backend rogue_noverify {
        type openai_compatible;
        url https://k.test:%%PORT_rogue%%/v1;
        connect 127.0.0.1:%%PORT_rogue%%;
        ssl_verify off;
        model rogue-noverify;
    }

    model_gateway_backend mismatch {
        type openai_compatible;
        url https://k.test:%%PORT_other%%/v1;
        connect 127.0.0.1:%%PORT_other%%;
        ssl_trusted_certificate %%CA%%;
        model mismatch;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
        }
    }
}
EOF

$t->run;

sub conns_of { [map { $_->{conn} } @{$t->mock_requests($_[0])}] }

###########################################################################
# keepalive reuse

{
    my @st = map { $t->chat('ka')->{status} } 1 .. 5;
    is_deeply(\@st, [(200) x 5], 'http keepalive: 5 requests answered');
    is(scalar @{$t->mock_requests('ka')}, 5, 'http keepalive: 5 requests seen');
    is($t->mock_connections('ka'), 1, 'http keepalive: one connection');
    is_deeply([map { $_->{conn_req} } @{$t->mock_requests('ka')}],
        [1 .. 5], 'http keepalive: requests 1..5 on that connection');
}

{
    my @st = map { $t->chat('ktls')->{status} } 1 .. 5;
    is_deeply(\@st, [(200) x 5], 'https keepalive: 5 requests answered');
    my $reqs = $t->mock_requests('ktls');
    is(scalar @$reqs, 5, 'https keepalive: 5 requests seen');
    is($t->mock_connections('ktls'), 1, 'https keepalive: one connection');
    ok(@$reqs >= 1, 'https: requests recorded');
    is_deeply([map { $_->{sni} } @$reqs], [('k.test') x @$reqs],
        'https: SNI is the url host although connect is 127.0.0.1');
    is_deeply([map { my $h = $_->{headers}{host} // ''; $h =~ s/:\d+$//; $h }
        @$reqs], [('k.test') x @$reqs], 'https: Host header is the url host');
    is(scalar @{[grep { $_->{event} eq 'tls_error' }
        @{$t->mock_events('ktls')}]}, 0, 'https: no handshake errors');
}

{
    my @ok;
    for my $i (1 .. 3) {
        my $s = $t->chat_stream('kas');
        my $body = $s->rest(10);
        push @ok, ($s->status // 0) == 200 && $s->complete
            && $body eq join('', @EVENTS) ? 1 : 0;
        $s->close;
    }
    is_deeply(\@ok, [1, 1, 1], 'streams: 3 streams read to the end');
    is(scalar @{$t->mock_requests('kas')}, 3, 'streams: 3 requests seen');
    is($t->mock_connections('kas'), 1,
        'streams: one connection reused after streamed responses');
}

###########################################################################
# no reuse

{
    my $s = $t->chat_stream('dc');
    is($s->status, 200, 'disconnect: stream started');
    ok(defined $s->next_event(10), 'disconnect: first event');
    $s->close;
    ok($t->wait_mock_event('dc', 'closed', 5, conn => 1),
        'disconnect: backend connection closed');
    my $r = $t->chat('dc');
    is($r->{status}, 200, 'disconnect: next request answered');
    is_deeply(conns_of('dc'), [1, 2],
        'disconnect: next request on a new connection');
    is($t->mock_connections('dc'), 2, 'disconnect: two connections');
}

{
    my $r1 = $t->chat('cc');
    is($r1->{status}, 200, 'connection close: first request answered');
    is($r1->{body}, $cc_body, 'connection close: first body');
    my $r2 = $t->chat('cc');
    is($r2->{status}, 200, 'connection close: second request answered');
    my $reqs = $t->mock_requests('cc');
    is(scalar @$reqs, 2, 'connection close: two requests seen');
    is_deeply(conns_of('cc'), [1, 2],
        'connection close: second request on a new connection');
    my $r3 = $t->chat('cc');
    is($r3->{status}, 200, 'connection close: third request answered');
    is_deeply(conns_of('cc'), [1, 2, 2],
        'connection close: the new connection is kept alive');
}

{
    my @st = map { $t->chat('k0')->{status} } 1 .. 3;
    is_deeply(\@st, [(200) x 3], 'keepalive 0: 3 requests answered');
    is_deeply(conns_of('k0'), [1, 2, 3],
        'keepalive 0: one connection per request');
    is($t->mock_connections('k0'), 3, 'keepalive 0: three connections');
}

###########################################################################
# connections retired by keepalive_requests and keepalive_time

{
    my @st = map { $t->chat('kr')->{status} } 1 .. 7;
    is_deeply(\@st, [(200) x 7], 'keepalive_requests 3: 7 requests answered');
    is_deeply(conns_of('kr'), [1, 1, 1, 2, 2, 2, 3],
        'keepalive_requests 3: a new connection after every 3 requests');
    ok($t->wait_mock_event('kr', 'eof', 5, conn => 2),
        'keepalive_requests 3: the retired connection is closed');
}

{
    my @st = map { $t->chat('krs')->{status} } 1 .. 5;
    is_deeply(\@st, [(200) x 5], 'keepalive_requests 2 (https): answered');
    is_deeply(conns_of('krs'), [1, 1, 2, 2, 3],
        'keepalive_requests 2 (https): a new connection after every 2');
}

{
    # back to back, well within 2 s, then after 2 s have passed
    my @st = map { $t->chat('kt')->{status} } 1 .. 2;
    is_deeply(conns_of('kt'), [1, 1],
        'keepalive_time 2s: a young connection is reused');
    ok($t->wait_mock_event('kt', 'eof', 6, conn => 1),
        'keepalive_time 2s: the idle connection is closed at its age');
    push @st, $t->chat('kt')->{status};
    push @st, $t->chat('kt')->{status};
    is_deeply(\@st, [(200) x 4], 'keepalive_time 2s: 4 requests answered');
    is_deeply(conns_of('kt'), [1, 1, 2, 2],
        'keepalive_time 2s: an old connection is not reused');

    # the connection reaches its age while it serves a request
    my $r = $t->post_json('/v1/chat/completions',
        { model => 'kt', messages => [{ role => 'user', content => 'slow' }] },
        timeout => 15);
    is($r->{status}, 200, 'keepalive_time 2s: slow request answered');
    is($t->chat('kt')->{status}, 200, 'keepalive_time 2s: next one answered');
    is_deeply(conns_of('kt'), [1, 1, 2, 2, 2, 3],
        'keepalive_time 2s: not kept after a request past its age');
}

###########################################################################
# connections are per backend (same connect address, different hosts)

{
    my @st = map { $t->chat($_)->{status} } qw(ha hb ha hb ha hb);
    is_deeply(\@st, [(200) x 6], 'per backend (http): 6 requests answered');
    my %hosts;
    for my $r (@{$t->mock_requests('hosts')}) {
        (my $h = $r->{headers}{host} // '') =~ s/:\d+$//;
        $hosts{$r->{conn}}{$h}++;
    }
    is(scalar(grep { keys %{$hosts{$_}} != 1 } keys %hosts), 0,
        'per backend (http): each connection used with one Host only')
        or diag(explain(\%hosts));
    is_deeply([sort map { keys %{$hosts{$_}} } keys %hosts],
        ['a.test', 'b.test'],
        'per backend (http): one kept-alive connection per backend');
}

{
    my @st = map { $t->chat($_)->{status} } qw(sa sb sa sb sa sb);
    is_deeply(\@st, [(200) x 6], 'per backend (https): 6 requests answered');
    my (%sni, %host, $match);
    $match = 0;
    for my $r (@{$t->mock_requests('sni')}) {
        (my $h = $r->{headers}{host} // '') =~ s/:\d+$//;
        $sni{$r->{conn}}{$r->{sni} // ''}++;
        $host{$r->{conn}}{$h}++;
        $match++ if defined $r->{sni} && $r->{sni} eq $h;
    }
    is(scalar(grep { keys %{$sni{$_}} != 1 || keys %{$host{$_}} != 1 }
        keys %sni), 0,
        'per backend (https): each connection used with one SNI and Host')
        or diag(explain([\%sni, \%host]));
    my $n = scalar @{$t->mock_requests('sni')};
    ok($n >= 2, 'per backend (https): requests recorded');
    is($match, $n, 'per backend (https): SNI equals the Host of the url');
    is_deeply([sort map { keys %{$sni{$_}} } keys %sni], ['a.test', 'b.test'],
        'per backend (https): one kept-alive connection per backend');
}

###########################################################################
# TLS verification

sub is_backend_error {
    my ($r, $name) = @_;
    is($r->{status}, 502, "$name: 502");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: JSON content type");
    is(ref $r->{json} eq 'HASH' && ref $r->{json}{error} eq 'HASH'
        && $r->{json}{error}{code}, 'backend_error',
        "$name: OpenAI error object, code backend_error") or diag($r->{body});
    is($r->{headers}{'x-should-retry'}, 'false', "$name: x-should-retry false");
}

{
    my $r = $t->chat('rogue');
    is_backend_error($r, 'rogue cert');
    ok($t->wait_log(qr/certificate verify error/),
        'rogue cert: error.log has the verify error');
    is(scalar @{$t->mock_requests('rogue')}, 0,
        'rogue cert: no request sent');
}

{
    my $r = $t->chat('mismatch');
    is_backend_error($r, 'name mismatch');
    ok($t->wait_log(qr/does not match/),
        'name mismatch: error.log says the certificate does not match');
    is(scalar @{$t->mock_requests('other')}, 0,
        'name mismatch: no request sent');
}

{
    my $r = $t->chat('rogue-noverify');
    is($r->{status}, 200, 'ssl_verify off: rogue certificate accepted');
    is($r->{json} && $r->{json}{object}, 'chat.completion',
        'ssl_verify off: completion passed on');
    my ($req) = @{$t->mock_requests('rogue')};
    is($req && $req->{sni}, 'k.test', 'ssl_verify off: SNI still sent');
}

$t->done_testing;
