package MG::Mock;

# Mock providers of the test harness (see MG::Test): forked HTTP/1.1(S)
# servers whose handler returns a response spec, recording every request
# and connection event to DIR/mock-NAME.log for the test to read.

use strict;
use warnings;

use Fcntl qw(:flock O_RDWR O_CREAT);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use MG::IO qw(_bytes _write_file _take _parse_header_lines _norm_headers
              _has_header);
use MG::Proc qw(_stop_pid _start_watchdog _flush_all _close_fds);
use Exporter 'import';

our @EXPORT_OK = qw(default_handler openai_completion openai_stream_events);

my $JSON = JSON::PP->new->ascii->canonical;   # raw bytes round-trip

my %REASON = (
    100 => 'Continue', 200 => 'OK', 201 => 'Created', 202 => 'Accepted',
    204 => 'No Content', 206 => 'Partial Content', 301 => 'Moved Permanently',
    302 => 'Found', 304 => 'Not Modified', 400 => 'Bad Request',
    401 => 'Unauthorized', 403 => 'Forbidden', 404 => 'Not Found',
    405 => 'Method Not Allowed', 408 => 'Request Timeout',
    409 => 'Conflict', 413 => 'Payload Too Large', 415 => 'Unsupported Media Type',
    422 => 'Unprocessable Entity', 429 => 'Too Many Requests',
    500 => 'Internal Server Error', 501 => 'Not Implemented',
    502 => 'Bad Gateway', 503 => 'Service Unavailable',
    504 => 'Gateway Timeout', 529 => 'Overloaded',
);

###########################################################################
# mocks

# $t->mock($name, %opt): starts a mock HTTP/1.1 server on
# 127.0.0.1:port($name) and returns the port. Options:
#   handler  => sub { my $req = shift; return { ...spec... } }
#               (runs in a forked child: it cannot change the test's state)
#   tls      => [$cert, $key]        serve https (SNI recorded in {sni})
#   lifetime => $sec                 hard limit (default 120)
# $req: {n, conn, conn_req, method, path, version, headers, header_list,
# body, sni}. Response spec keys: status, headers ([[n,v],..] or {n=>v}),
# body | chunks => [..] (chunked, one syswrite per chunk, empty elements
# skipped) | raw_pieces => [..] (verbatim, one syswrite each,
# piece_delay (default 0.02 s) between; the connection is closed afterwards
# unless keepalive => 1), chunk_delay => $sec, hold_after => $k with
# release => $file (relative to DIR; wait max hold_timeout, default 20 s),
# close_after => $k, delay => $sec, no_response => 1, close => 1,
# trailers => [[n,v],..].
# Options addr => '127.0.0.2' and port => N listen elsewhere than
# 127.0.0.1:port($name) (two mocks on one port, different addresses).
# Log records: requests as above; events {event => accept|closed|eof|
# hold_timeout|handler_error|bad_request|tls_error, conn => N, ...}.
sub mock {
    my ($self, $name, %opt) = @_;
    die "MG::Test: bad mock name '$name'\n" unless $name =~ /^\w+$/;
    die "MG::Test: mock $name already running\n" if $self->{mocks}{$name};
    my $port = $opt{port} // $self->port($name);
    $self->{ports}{$name} //= $port;
    my $dir = $self->{dir};
    my $ctx = {
        name     => $name,
        dir      => $dir,
        log      => "$dir/mock-$name.log",
        seq      => "$dir/mock-$name.seq",
        handler  => $opt{handler} || \&default_handler,
        tls      => $opt{tls},
        lifetime => $opt{lifetime} // $ENV{MG_TEST_MOCK_LIFETIME} // 120,
    };
    _write_file($ctx->{log}, '');
    _write_file($ctx->{seq}, "0\n");
    if ($ctx->{tls}) {
        require IO::Socket::SSL;
        die "MG::Test: tls => [cert, key] expected\n"
            unless ref $ctx->{tls} eq 'ARRAY' && -f $ctx->{tls}[0]
                && -f $ctx->{tls}[1];
    }
    my $lsn = IO::Socket::INET->new(LocalAddr => $opt{addr} // '127.0.0.1',
        LocalPort => $port, Proto => 'tcp', Listen => 128, ReuseAddr => 1)
        or die "MG::Test: mock $name cannot listen on $port: $!\n";

    _start_watchdog();
    _flush_all();
    my $pid = fork;
    die "MG::Test: fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        eval {
            POSIX::setpgid(0, 0);
            close $MG::Proc::WD_W if $MG::Proc::WD_W;
            @MG::Test::INSTANCES = ();
            open STDIN, '<', '/dev/null';
            open STDOUT, '>', '/dev/null';
            open STDERR, '>>', "$dir/mock-$name.err";
            _close_fds(fileno $lsn);
            $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP QUIT ALRM CHLD);
            $SIG{PIPE} = 'IGNORE';
            alarm($ctx->{lifetime});
            _mock_main($ctx, $lsn);
        };
        print STDERR "mock $name: $@" if $@;
        POSIX::_exit(0);
    }
    POSIX::setpgid($pid, $pid);
    close $lsn;
    $self->_remember_pgid($pid);
    $self->{mocks}{$name} = { pid => $pid, port => $port };
    return $port;
}

# $t->stop_mock($name): stops a mock (its whole process group); its log
# stays readable.
sub stop_mock {
    my ($self, $name) = @_;
    my $m = delete $self->{mocks}{$name} or return;
    kill 'TERM', -$m->{pid};
    _stop_pid($m->{pid}, [TERM => 2], [KILL => 2]);
    kill 'KILL', -$m->{pid};
    $self->_forget_pgid($m->{pid});
}

# $t->release($file): creates DIR/$file (or $file if absolute), releasing
# mocks holding on it.
sub release {
    my ($self, $file) = @_;
    $file = "$self->{dir}/$file" unless $file =~ m{^/};
    _write_file($file, "released\n");
}

sub _mock_records {
    my ($self, $name) = @_;
    my $path = "$self->{dir}/mock-$name.log";
    open my $fh, '<', $path or return [];
    flock $fh, LOCK_SH;
    my @r;
    while (my $l = <$fh>) {
        next unless $l =~ /\n\z/;
        my $rec = eval { $JSON->decode($l) } or next;
        push @r, $rec;
    }
    close $fh;
    return \@r;
}

# $t->mock_requests($name): arrayref of the recorded requests, by n.
sub mock_requests {
    my ($self, $name) = @_;
    return [sort { $a->{n} <=> $b->{n} }
        grep { !exists $_->{event} } @{$self->_mock_records($name)}];
}

# $t->mock_events($name): arrayref of the recorded events (in log order).
sub mock_events {
    my ($self, $name) = @_;
    return [grep { exists $_->{event} } @{$self->_mock_records($name)}];
}

# $t->mock_connections($name): number of connections the mock accepted.
sub mock_connections {
    my ($self, $name) = @_;
    return scalar grep { $_->{event} eq 'accept' } @{$self->mock_events($name)};
}

# $t->wait_mock_event($name, $event, $timeout, %match): polls until an event
# named $event (with keys equal to %match) is recorded (default 5 s);
# returns the event hashref or undef.
sub wait_mock_event {
    my ($self, $name, $event, $timeout, %match) = @_;
    my $found;
    $self->wait_for(sub {
        for my $e (@{$self->mock_events($name)}) {
            next unless $e->{event} eq $event;
            next if grep { ($e->{$_} // '') ne $match{$_} } keys %match;
            return $found = $e;
        }
        return;
    }, $timeout // 5);
    return $found;
}

# $t->wait_mock_requests($name, $count, $timeout): polls until the mock has
# recorded at least $count requests (default 5 s); returns mock_requests.
sub wait_mock_requests {
    my ($self, $name, $count, $timeout) = @_;
    my $r;
    $self->wait_for(sub { @{$r = $self->mock_requests($name)} >= $count },
        $timeout // 5);
    return $r;
}

# MG::Test::default_handler($req): the mocks' default response spec: 200
# with a small OpenAI chat.completion (model echoed from the request body).
sub default_handler {
    my $req = shift;
    my $model = 'mock-model';
    if (($req->{body} // '') =~ /^\s*\{/) {
        my $j = eval { JSON::PP::decode_json($req->{body}) };
        $model = $j->{model} if ref $j eq 'HASH' && defined $j->{model}
            && !ref $j->{model};
    }
    return {
        status  => 200,
        headers => [['Content-Type', 'application/json']],
        body    => openai_completion(model => $model,
            id => "chatcmpl-mock-$req->{n}"),
    };
}

# MG::Test::openai_completion(%o): JSON text of a non-streamed OpenAI
# chat.completion (content, model, id, prompt_tokens, completion_tokens,
# finish_reason).
sub openai_completion {
    my %o = @_;
    my ($pt, $ct) = ($o{prompt_tokens} // 5, $o{completion_tokens} // 3);
    return JSON::PP->new->utf8->canonical->encode({
        id      => $o{id} // 'chatcmpl-mock',
        object  => 'chat.completion',
        created => $o{created} // 1700000000,
        model   => $o{model} // 'mock-model',
        choices => [{
            index         => 0,
            message       => { role => 'assistant',
                               content => $o{content} // 'Hello from mock' },
            finish_reason => $o{finish_reason} // 'stop',
        }],
        usage => { prompt_tokens => $pt, completion_tokens => $ct,
                   total_tokens => $pt + $ct },
    });
}

# MG::Test::openai_stream_events(%o): list of SSE event texts ("data: ...\n\n")
# of a streamed chat.completion.chunk sequence: role, one event per element
# of $o{pieces} (default ['Hello', ' world']), finish (with usage when
# $o{usage}), then "data: [DONE]".
sub openai_stream_events {
    my %o = @_;
    my $j = JSON::PP->new->utf8->canonical;
    my %base = (id => $o{id} // 'chatcmpl-mock', object => 'chat.completion.chunk',
        created => $o{created} // 1700000000, model => $o{model} // 'mock-model');
    my @ev;
    push @ev, { %base, choices => [{ index => 0,
        delta => { role => 'assistant', content => '' }, finish_reason => undef }] };
    for my $p (@{$o{pieces} // ['Hello', ' world']}) {
        push @ev, { %base, choices => [{ index => 0,
            delta => { content => $p }, finish_reason => undef }] };
    }
    my $fin = { %base, choices => [{ index => 0, delta => {},
        finish_reason => $o{finish_reason} // 'stop' }] };
    if ($o{usage}) {
        my ($pt, $ct) = ($o{prompt_tokens} // 5, $o{completion_tokens} // 3);
        $fin->{usage} = { prompt_tokens => $pt, completion_tokens => $ct,
            total_tokens => $pt + $ct };
    }
    push @ev, $fin;
    return ((map { 'data: ' . $j->encode($_) . "\n\n" } @ev), "data: [DONE]\n\n");
}

sub _mock_log {
    my ($ctx, $rec, $assign_n) = @_;
    open my $fh, '>>', $ctx->{log} or return;
    flock $fh, LOCK_EX;
    if ($assign_n) {
        sysopen my $sf, $ctx->{seq}, O_RDWR | O_CREAT or die "seq: $!";
        my $n = (<$sf> // 0) + 1;
        seek $sf, 0, 0;
        truncate $sf, 0;
        print $sf "$n\n";
        close $sf;
        $rec->{n} = $n;
    }
    print $fh $JSON->encode($rec) . "\n";
    close $fh;
    return $rec->{n};
}

sub _mock_main {
    my ($ctx, $lsn) = @_;
    my $ppid = getppid;
    my $deadline = time + $ctx->{lifetime};
    my $sel = IO::Select->new($lsn);
    my $conn = 0;
    my %kids;
    # on TERM/ALRM: stop and reap the connection children (an orphaned
    # zombie would otherwise be left to init, which may not reap it here)
    my $quit = sub {
        kill 'TERM', keys %kids;
        my $until = time + 1;
        while (%kids && time < $until) {
            my $p = waitpid(-1, WNOHANG);
            if ($p > 0) { delete $kids{$p} } else { sleep 0.01 }
        }
        kill 'KILL', keys %kids;
        waitpid($_, 0) for keys %kids;
        POSIX::_exit(0);
    };
    $SIG{TERM} = $SIG{ALRM} = $SIG{INT} = $quit;
    while (1) {
        while ((my $p = waitpid(-1, WNOHANG)) > 0) { delete $kids{$p} }
        last if getppid() != $ppid;
        next unless $sel->can_read(0.2);
        my $c = $lsn->accept or next;
        $conn++;
        _mock_log($ctx, { event => 'accept', conn => $conn });
        my $pid = fork;
        if (!defined $pid) { close $c; next }
        if ($pid == 0) {
            close $lsn;
            $SIG{TERM} = $SIG{ALRM} = $SIG{INT} = 'DEFAULT';
            alarm(int($deadline - time) + 1);
            eval { _mock_conn($ctx, $c, $conn) };
            print STDERR "mock $ctx->{name} conn $conn: $@" if $@;
            POSIX::_exit(0);
        }
        $kids{$pid} = 1;
        close $c;
    }
    $quit->();
}

sub _mock_conn {
    my ($ctx, $sock, $conn) = @_;
    my $sni;
    if ($ctx->{tls}) {
        my $ok = IO::Socket::SSL->start_SSL($sock,
            SSL_server    => 1,
            SSL_cert_file => $ctx->{tls}[0],
            SSL_key_file  => $ctx->{tls}[1],
            Timeout       => 10,
        );
        unless ($ok) {
            _mock_log($ctx, { event => 'tls_error', conn => $conn,
                error => IO::Socket::SSL::errstr() });
            close $sock;
            return;
        }
        $sni = $sock->get_servername;
    }
    my $io = MG::Test::IO->new($sock);
    my $k = 0;
    while (1) {
        my $req = _mock_read_request($io, 60);
        if (!$req) {
            _mock_log($ctx, { event => 'eof', conn => $conn, requests => $k });
            last;
        }
        if ($req->{error}) {
            _mock_log($ctx, { event => 'bad_request', conn => $conn,
                error => $req->{error} });
            last if $req->{error} eq 'timeout';
            $io->write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                . "Connection: close\r\n\r\n");
            last;
        }
        $k++;
        my %r = (%$req, conn => $conn, conn_req => $k, sni => $sni);
        _mock_log($ctx, \%r, 1);
        my $spec = eval { $ctx->{handler}->({%r}) };
        if ($@) {
            my $err = "$@";
            _mock_log($ctx, { event => 'handler_error', conn => $conn,
                req => $r{n}, error => $err });
            $spec = { status => 500, body => "mock handler error: $err" };
        }
        $spec = default_handler(\%r) unless ref $spec eq 'HASH';
        my $keep = _mock_respond($ctx, $io, \%r, $spec);
        last unless $keep;
    }
    $io->close_gracefully;
}

# reads one request; undef on clean EOF before any byte
sub _mock_read_request {
    my ($io, $timeout) = @_;
    my $deadline = time + $timeout;
    while (1) {
        $io->{buf} =~ s/\A(?:\r?\n)+//;
        last if $io->{buf} =~ /\r?\n\r?\n/;
        return { error => 'header too large' } if length $io->{buf} > 65536;
        my $r = $io->fill($deadline - time);
        if (!defined $r) { return { error => 'timeout' } }
        if ($r == 0) {
            return undef unless length $io->{buf};
            return { error => 'eof in request header' };
        }
    }
    $io->{buf} =~ s/\A(.*?)\r?\n\r?\n//s;
    my @lines = split /\r?\n/, $1;
    my $rl = shift @lines;
    my ($method, $path, $ver) = $rl =~ m{^(\S+) (\S+) HTTP/(\d\.\d)$}
        or return { error => "bad request line: $rl" };
    my ($hl, $h) = _parse_header_lines(\@lines);
    my %req = (method => $method, path => $path, version => $ver,
        headers => $h, header_list => $hl, body => '');

    if (($h->{expect} // '') =~ /100-continue/i) {
        $io->write("HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        my $dec = MG::Test::Body->new('chunked');
        $dec->feed(_take($io));
        while (!$dec->{done} && !$dec->{error}) {
            my $r = $io->fill($deadline - time);
            return { error => 'timeout in body' } unless defined $r;
            return { error => 'eof in body' } if $r == 0;
            $dec->feed(_take($io));
        }
        return { error => "bad chunked body: $dec->{error}" } if $dec->{error};
        $io->{buf} = $dec->{in} . $io->{buf};   # pipelined leftovers
        $req{body} = $dec->{out};
    } elsif (defined $h->{'content-length'}) {
        my $len = $h->{'content-length'};
        return { error => "bad content-length: $len" } unless $len =~ /^\d+$/;
        while (length $io->{buf} < $len) {
            my $r = $io->fill($deadline - time);
            return { error => 'timeout in body' } unless defined $r;
            return { error => 'eof in body' } if $r == 0;
        }
        $req{body} = substr($io->{buf}, 0, $len, '');
    }
    return \%req;
}

# waits $secs for the release file (if given) while watching the peer;
# returns 'released', 'closed' or 'timeout'
sub _mock_wait {
    my ($io, $secs, $file) = @_;
    my $deadline = time + $secs;
    while (1) {
        return 'released' if defined $file && -e $file;
        my $left = $deadline - time;
        return 'timeout' if $left <= 0;
        my $r = $io->fill($left < 0.02 ? $left : 0.02);
        return 'closed' if defined $r && $r == 0;
    }
}

sub _mock_closed {
    my ($ctx, $req, $during) = @_;
    _mock_log($ctx, { event => 'closed', conn => $req->{conn},
        req => $req->{n}, during => $during });
}

# sends the response; returns true to keep the connection open
sub _mock_respond {
    my ($ctx, $io, $req, $spec) = @_;

    return 0 if $spec->{close};
    if ($spec->{no_response}) {
        my $r = _mock_wait($io, $spec->{no_response_timeout} // 30);
        _mock_closed($ctx, $req, 'no_response') if $r eq 'closed';
        return 0;
    }
    if ($spec->{delay}) {
        if (_mock_wait($io, $spec->{delay}) eq 'closed') {
            _mock_closed($ctx, $req, 'delay');
            return 0;
        }
    }

    my $release = $spec->{release};
    $release = "$ctx->{dir}/$release"
        if defined $release && $release !~ m{^/};
    my $hold = $spec->{hold_after};
    my $close_after = $spec->{close_after};

    # between element $i and $i+1: hold, close_after, delays
    my $between = sub {
        my ($i, $delay) = @_;
        if (defined $hold && $i == $hold) {
            my $r = _mock_wait($io, $spec->{hold_timeout} // 20, $release);
            if ($r eq 'closed') { _mock_closed($ctx, $req, 'hold'); return 0 }
            _mock_log($ctx, { event => 'hold_timeout', conn => $req->{conn},
                req => $req->{n} }) if $r eq 'timeout';
        }
        return 0 if defined $close_after && $i >= $close_after;
        if ($delay && _mock_wait($io, $delay) eq 'closed') {
            _mock_closed($ctx, $req, 'write');
            return 0;
        }
        return 1;
    };

    if ($spec->{raw_pieces}) {
        my @p = @{$spec->{raw_pieces}};
        return 0 unless $between->(0, 0);
        for my $i (1 .. @p) {
            unless ($io->write($p[$i - 1])) {
                _mock_closed($ctx, $req, 'write');
                return 0;
            }
            return 0 unless $between->($i,
                $i < @p ? $spec->{piece_delay} // 0.02 : 0);
        }
        return $spec->{keepalive} ? 1 : 0;
    }

    my $status = $spec->{status} // 200;
    my $hdrs = _norm_headers($spec->{headers});
    my $h = $req->{headers};
    my $keep = $req->{version} eq '1.1'
        ? (($h->{connection} // '') !~ /\bclose\b/i)
        : (($h->{connection} // '') =~ /\bkeep-alive\b/i);
    $keep = 0 if defined $close_after || $spec->{conn_close};
    push @$hdrs, ['Connection', 'close']
        if !$keep && !_has_header($hdrs, 'Connection');
    my $reason = $spec->{reason} // $REASON{$status} // 'Unknown';
    my $head = "HTTP/1.1 $status $reason\r\n";

    if ($spec->{chunks}) {
        push @$hdrs, ['Transfer-Encoding', 'chunked']
            unless _has_header($hdrs, 'Transfer-Encoding');
        $head .= join('', map { "$_->[0]: $_->[1]\r\n" } @$hdrs) . "\r\n";
        return 0 unless $io->write($head);
        return 0 unless $between->(0, 0);
        my @c = grep { length } @{$spec->{chunks}};
        for my $i (1 .. @c) {
            my $d = _bytes(my $tmp = $c[$i - 1]);
            unless ($io->write(sprintf("%x\r\n", length $d) . "$d\r\n")) {
                _mock_closed($ctx, $req, 'write');
                return 0;
            }
            return 0 unless $between->($i, $i < @c ? $spec->{chunk_delay} : 0);
        }
        my $tr = join '', map { "$_->[0]: $_->[1]\r\n" }
            @{_norm_headers($spec->{trailers})};
        unless ($io->write("0\r\n$tr\r\n")) {
            _mock_closed($ctx, $req, 'write');
            return 0;
        }
        return $keep;
    }

    my $body = _bytes(my $tmp = $spec->{body} // '');
    my $nobody = $req->{method} eq 'HEAD' || $status == 204 || $status == 304
        || $status < 200;
    push @$hdrs, ['Content-Length', length $body]
        unless _has_header($hdrs, 'Content-Length')
            || _has_header($hdrs, 'Transfer-Encoding')
            || $status == 204 || $status == 304 || $status < 200;
    $head .= join('', map { "$_->[0]: $_->[1]\r\n" } @$hdrs) . "\r\n";
    unless ($io->write($head . ($nobody ? '' : $body))) {
        _mock_closed($ctx, $req, 'write');
        return 0;
    }
    return $keep;
}

1;
