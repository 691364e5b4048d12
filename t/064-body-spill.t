#!/usr/bin/perl

# Request bodies spill to client_body_temp_path like plain nginx's: 100
# clients that send most of a 3.9 MB body and then trickle it do not pin
# the body in worker memory (the RSS check is skipped under ASan, whose
# allocator keeps its own), bodies that spilled are forwarded byte for byte
# once complete, one big body sent at once is served normally, and the
# body limit still answers 413 with the JSON error, chunked bodies included.

use strict;
use warnings;

use Test::More;
use Digest::MD5 qw(md5_hex);
use JSON::PP ();
use IO::Select;
use IO::Socket::INET;
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use Time::HiRes qw(time sleep);
use MG::Test;

my $t = MG::Test->new;
$t->need_module;

my $CLIENTS = 100;
my $TRICKLE = 32;                 # bytes held back, then sent slowly
my $DONE    = 3;                  # trickled bodies then completed

# the mock answers with the length and MD5 of the body it received, so a
# client can compare them with what it sent
$t->mock('up', handler => sub {
    my $r = shift;
    my $b = $r->{body} // '';
    return {
        status  => 200,
        headers => [['Content-Type', 'application/json']],
        body    => MG::Test::openai_completion(
            content => sprintf('len=%d md5=%s', length $b, md5_hex($b))),
    };
});

$t->write_conf(<<'EOF');
%%TEST_GLOBALS%%
worker_processes 1;

events {
    worker_connections 1024;
}

http {
    %%TEST_GLOBALS_HTTP%%

    model_gateway_backend up {
        type openai_compatible;
        url http://127.0.0.1:%%PORT_up%%/v1;
        model big;
    }

    server {
        listen 127.0.0.1:%%PORT_gw%%;

        location /v1/ {
            model_gateway;
            model_gateway_max_body_size 4m;
        }
    }
}
EOF

$t->run;

# a body is a unique head, one shared 3.9 MB middle, and a unique tail of
# $TRICKLE bytes that is held back
my $MIDDLE = 'abcdefghijklmnopqrstuvwxyz0123456789 ' x 105000;

sub body_parts {
    my ($i) = @_;
    my $head = qq({"model":"big","messages":[{"role":"user","content":")
        . "client $i: ";
    my $tail = sprintf('%-*s"}]}', $TRICKLE - 4, " end of $i");
    return ($head, $tail);
}

sub expect_content {
    my ($head, $tail) = @_;
    my $ctx = Digest::MD5->new;
    $ctx->add($head, $MIDDLE, $tail);
    return sprintf('len=%d md5=%s',
        length($head) + length($MIDDLE) + length($tail), $ctx->hexdigest);
}

sub request_head {
    my ($len) = @_;
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\nContent-Length: $len\r\n"
        . "Connection: close\r\n\r\n";
}

sub rss_kb {
    my ($pid, $field) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 if /^\Q$field\E:\s+(\d+)\s+kB/;
    }
    return undef;
}

# writes the pieces (string refs with offsets) of each connection without
# blocking, until every one is sent or $deadline
sub send_all {
    my ($conns, $deadline) = @_;
    while (time < $deadline) {
        my @busy = grep { @{$_->{out}} } @$conns;
        return 1 unless @busy;
        my $sel = IO::Select->new(map { $_->{s} } @busy);
        my %by = map { fileno($_->{s}) => $_ } @busy;
        for my $fh ($sel->can_write(1)) {
            my $c = $by{fileno $fh};
            my $o = $c->{out}[0];
            my $left = length(${$o->[0]}) - $o->[1];
            my $n = syswrite($fh, ${$o->[0]}, $left > 262144 ? 262144 : $left,
                $o->[1]);
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                $c->{error} = "write: $!";
                $c->{out} = [];
                next;
            }
            $o->[1] += $n;
            shift @{$c->{out}} if $o->[1] == length ${$o->[0]};
        }
    }
    return 0;
}

sub read_response {
    my ($s, $timeout) = @_;
    my $buf = '';
    my $deadline = time + $timeout;
    my $sel = IO::Select->new($s);
    while (time < $deadline) {
        next unless $sel->can_read(0.5);
        my $n = sysread($s, $buf, 65536, length $buf);
        next if !defined $n && ($! == EAGAIN || $! == EWOULDBLOCK);
        last unless $n;
    }
    my ($status) = $buf =~ m{^HTTP/1\.\d (\d{3})};
    my (undef, $body) = split /\r\n\r\n/, $buf, 2;
    my $json = eval { JSON::PP::decode_json($body // '') };
    return { status => $status // 0, body => $body // '', json => $json };
}

sub content_of {
    my $j = shift->{json};
    return ref $j eq 'HASH' && ref $j->{choices} eq 'ARRAY'
        ? $j->{choices}[0]{message}{content} // '' : '';
}

my ($worker) = $t->worker_pids;
ok($worker, 'worker pid found');
my $base = rss_kb($worker, 'VmRSS') // 0;

###########################################################################
# 100 slow uploads

my @conns;
for my $i (1 .. $CLIENTS) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('gw'), Proto => 'tcp', Timeout => 10)
        or last;
    $s->blocking(0);
    my ($head, $tail) = body_parts($i);
    my $len = length($head) + length($MIDDLE) + length($tail);
    my $req = request_head($len) . $head;
    push @conns, { i => $i, s => $s, head => $head, tail => $tail,
                   out => [[\$req, 0], [\$MIDDLE, 0]] };
}
is(scalar @conns, $CLIENTS, "$CLIENTS connections opened");

ok(send_all(\@conns, time + 40), 'all but the tails sent');
is(scalar(grep { $_->{error} } @conns), 0, 'no write errors')
    or diag(join "\n", map { $_->{error} // () } @conns);

# a few bytes per connection with pauses: the bodies stay incomplete while
# the worker has read everything sent so far
for my $k (0 .. 2) {
    sleep 1;
    for my $c (@conns) {
        my $b = substr($c->{tail}, $k, 1);
        syswrite($c->{s}, $b) == 1 or $c->{error} = "trickle: $!";
    }
}
sleep 1;

my $rss = rss_kb($worker, 'VmRSS') // 0;
my $hwm = rss_kb($worker, 'VmHWM') // 0;
diag(sprintf('worker RSS: %d kB before, %d kB with %d slow uploads '
    . '(peak %d kB)', $base, $rss, $CLIENTS, $hwm));

SKIP: {
    skip 'RSS is not meaningful under ASan', 1 if $ENV{MG_ASAN};
    # with the whole bodies in memory the growth is about 390 MB; spilled,
    # it is about client_body_buffer_size per connection
    cmp_ok($hwm - $base, '<', 64 * 1024,
        "$CLIENTS slow uploads of 3.9 MB: worker peak RSS grows < 64 MB");
}

is(scalar @{$t->mock_requests('up')}, 0, 'no incomplete body forwarded');
ok(scalar $t->grep_log(qr/client request body is buffered to a temporary/),
    'the bodies went to client_body_temp_path');

# a few of them complete: forwarded byte for byte
for my $c (@conns[0 .. $DONE - 1]) {
    my $rest = substr($c->{tail}, 3);
    $c->{out} = [[\$rest, 0]];
    send_all([$c], time + 10);
    my $r = read_response($c->{s}, 20);
    is($r->{status}, 200, "slow upload $c->{i} completed: 200");
    is(content_of($r), expect_content($c->{head}, $c->{tail}),
        "slow upload $c->{i}: the backend got the body byte for byte");
}

close $_->{s} for @conns;
@conns = ();

###########################################################################
# one big body at once, chunked bodies, and the limit

{
    my ($head, $tail) = body_parts('big');
    my $body = $head . $MIDDLE . $tail;
    my $r = $t->request(method => 'POST', path => '/v1/chat/completions',
        headers => [['Content-Type', 'application/json']], body => $body,
        timeout => 30);
    is($r->{status}, 200, 'big body sent at once: 200');
    is(content_of($r), expect_content($head, $tail),
        'big body sent at once: forwarded byte for byte');

    my $chunked = join '', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
        unpack('(a100000)*', $body);
    $r = $t->request(method => 'POST', path => '/v1/chat/completions',
        headers => [['Content-Type', 'application/json'],
                    ['Transfer-Encoding', 'chunked']],
        body => "${chunked}0\r\n\r\n", timeout => 30);
    is($r->{status}, 200, 'big chunked body: 200');
    is(content_of($r), expect_content($head, $tail),
        'big chunked body: forwarded byte for byte');

    my $over = $head . $MIDDLE . ('z' x (512 * 1024)) . $tail;
    $r = $t->request(method => 'POST', path => '/v1/chat/completions',
        headers => [['Content-Type', 'application/json']], body => $over,
        timeout => 30);
    is($r->{status}, 413, 'over the limit: 413');
    is(ref $r->{json} eq 'HASH' && ref $r->{json}{error} eq 'HASH'
        && $r->{json}{error}{code}, 'request_too_large',
        'over the limit: JSON error');

    $chunked = join '', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
        unpack('(a100000)*', $over);
    $r = $t->request(method => 'POST', path => '/v1/chat/completions',
        headers => [['Content-Type', 'application/json'],
                    ['Transfer-Encoding', 'chunked']],
        body => "${chunked}0\r\n\r\n", timeout => 30);
    is($r->{status}, 413, 'over the limit, chunked: 413');
    is(ref $r->{json} eq 'HASH' && ref $r->{json}{error} eq 'HASH'
        && $r->{json}{error}{code}, 'request_too_large',
        'over the limit, chunked: JSON error');
}

# a small body stays in memory and is forwarded as before
{
    my $small = '{"model":"big","messages":[{"role":"user","content":"hi"}]}';
    my $r = $t->request(method => 'POST', path => '/v1/chat/completions',
        headers => [['Content-Type', 'application/json']], body => $small);
    is($r->{status}, 200, 'small body: 200');
    is(content_of($r), sprintf('len=%d md5=%s', length $small,
        md5_hex($small)), 'small body: forwarded byte for byte');
}

$t->done_testing;
