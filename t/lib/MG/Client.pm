package MG::Client;

# The HTTP client of the test harness (see MG::Test): one request per
# raw-socket connection (request, start_request/finish_request, get,
# post_json), streamed responses (stream, MG::Test::Stream), the SSE
# parsers, and the chat helper (chat, chat_stream).

use strict;
use warnings;

use IO::Socket::INET;
use JSON::PP ();
use Scalar::Util ();
use Time::HiRes qw(time sleep);
use MG::IO qw(_bytes _take _parse_header_lines _norm_headers _has_header);
use Exporter 'import';

our @EXPORT_OK = qw(sse_data sse_json _parse_response_head _body_decoder);

###########################################################################
# HTTP client

sub _build_request {
    my ($self, %o) = @_;
    return $o{raw} if defined $o{raw};
    my $body = $o{body};
    my $hdrs = _norm_headers($o{headers});
    if (exists $o{json}) {
        $body = JSON::PP->new->utf8->canonical->encode($o{json});
        push @$hdrs, ['Content-Type', 'application/json']
            unless _has_header($hdrs, 'Content-Type');
    }
    _bytes($body);
    my $method = $o{method} // (defined $body ? 'POST' : 'GET');
    my $path = $o{path} // '/';
    unshift @$hdrs, ['Host', $o{host} // 'localhost']
        unless _has_header($hdrs, 'Host');
    push @$hdrs, ['Content-Length', length $body]
        if defined $body && !_has_header($hdrs, 'Content-Length')
            && !_has_header($hdrs, 'Transfer-Encoding');
    push @$hdrs, ['Connection', 'close']
        unless _has_header($hdrs, 'Connection');
    my $ver = $o{http_version} // '1.1';
    _bytes($body);
    return "$method $path HTTP/$ver\r\n"
        . join('', map { "$_->[0]: $_->[1]\r\n" } @$hdrs) . "\r\n"
        . ($body // '');
}

sub _connect {
    my ($self, %o) = @_;
    my $port = $o{port} // 'gw';
    $port = $self->port($port) unless $port =~ /^\d+$/;
    my $s = IO::Socket::INET->new(PeerAddr => $o{addr} // '127.0.0.1',
        PeerPort => $port, Proto => 'tcp', Timeout => $o{timeout} // 15)
        or return undef;
    $s->blocking(0);
    return $s;
}

# parses a response head from $io->{buf}; skips 1xx; returns a hashref or
# undef if incomplete
sub _parse_response_head {
    my $io = shift;
    while (1) {
        return undef unless $io->{buf} =~ /\r?\n\r?\n/;
        $io->{buf} =~ s/\A(.*?)\r?\n\r?\n//s;
        my @lines = split /\r?\n/, $1;
        my $sl = shift @lines;
        my ($ver, $status, $reason) = $sl =~ m{^HTTP/(\d\.\d) (\d{3})(?: (.*))?$}
            or return { error => "bad status line: $sl", status => undef };
        next if $status >= 100 && $status < 200 && $status != 101;
        my ($hl, $h) = _parse_header_lines(\@lines);
        return { version => $ver, status => 0 + $status, reason => $reason // '',
                 headers => $h, header_list => $hl };
    }
}

sub _body_decoder {
    my ($res, $method) = @_;
    my $h = $res->{headers};
    my $s = $res->{status};
    return MG::Test::Body->new('none')
        if ($method // '') eq 'HEAD' || $s == 204 || $s == 304;
    return MG::Test::Body->new('chunked')
        if ($h->{'transfer-encoding'} // '') =~ /chunked/i;
    return MG::Test::Body->new('length', $h->{'content-length'})
        if defined $h->{'content-length'} && $h->{'content-length'} =~ /^\d+$/;
    return MG::Test::Body->new('eof');
}

# $t->request(%opt): one HTTP/1.1 request with Connection: close over a raw
# socket. Options: method (GET, or POST with a body), path ('/'), headers
# (arrayref of pairs or hashref), body, json (data: encoded as the body with
# Content-Type application/json), host ('localhost'), port (a number or a
# port name; default port('gw')),
# timeout (15 s), http_version ('1.1'), raw (bytes sent verbatim),
# read_all (keep reading until EOF; everything received is in {raw}).
# Returns {status, version, reason, headers (lowercased, repeats joined with
# ", "), header_list, body (de-chunked), raw, complete (body framing ended
# properly), timeout, error, chunk_sizes, json (decoded body or undef)}.
sub request {
    my ($self, %o) = @_;
    return $self->finish_request($self->start_request(%o));
}

# $t->start_request(%opt): connects and sends a request as request() does,
# and returns at once: a pending request for request_ready() and
# finish_request(), so that a test can hold several at a time.
sub start_request {
    my ($self, %o) = @_;
    my $p = { o => \%o, deadline => time + ($o{timeout} // 15) };
    $p->{s} = $self->_connect(%o) or do {
        $p->{error} = "connect: $!";
        return $p;
    };
    $p->{io} = MG::Test::IO->new($p->{s});
    my $req = $self->_build_request(%o);
    ($p->{method}) = $req =~ /^(\S+)/;
    $p->{io}->write($req, $p->{deadline});
    return $p;
}

# $t->request_ready($pending): true once its response (or EOF) began.
sub request_ready {
    my ($self, $p) = @_;
    my $io = $p->{io} or return 1;
    $io->fill(0) unless $io->{eof};
    return length($io->{buf}) || $io->{eof};
}

# $t->finish_request($pending[, $timeout]): reads the response (within
# $timeout from now, else by the request's own timeout from its start) and
# returns it as request() does.
sub finish_request {
    my ($self, $p, $timeout) = @_;
    my %o = %{$p->{o}};
    my $deadline = defined $timeout ? time + $timeout : $p->{deadline};
    return { status => undef, error => $p->{error}, body => '',
             headers => {}, header_list => [], raw => '' }
        unless $p->{io};
    my ($io, $s) = ($p->{io}, $p->{s});
    my $res;
    my $to = 0;
    while (!($res = _parse_response_head($io))) {
        my $r = $io->fill($deadline - time);
        if (!defined $r) { $to = 1; last }
        last if $r == 0;
    }
    unless ($res && defined $res->{status}) {
        close $s;
        return { status => undef, headers => {}, header_list => [],
            body => '', raw => $io->{raw}, complete => 0, timeout => $to,
            error => $res ? $res->{error}
                : $to ? 'timeout reading response header'
                      : 'connection closed before response header' };
    }
    my $dec = _body_decoder($res, $p->{method});
    $dec->feed(_take($io));
    while ($o{read_all} ? !$io->{eof} : !$dec->{done} && !$dec->{error}) {
        my $r = $io->fill($deadline - time);
        if (!defined $r) { $to = 1; last }
        if ($r == 0) { $dec->eof; last }
        $dec->feed(_take($io));
    }
    $io->{buf} = '';
    close $s;
    $res->{body} = $dec->{out};
    $res->{complete} = $dec->{done} ? 1 : 0;
    $res->{timeout} = $to;
    $res->{error} = $dec->{error} if $dec->{error};
    $res->{raw} = $io->{raw};
    $res->{chunk_sizes} = $dec->{sizes};
    $res->{json} = ($res->{body} =~ /^\s*[\[{]/)
        ? eval { JSON::PP::decode_json($res->{body}) } : undef;
    return $res;
}

# $t->get($path, %opt) / $t->post_json($path, $data, %opt): shorthands
# for request().
sub get { my ($self, $path, %o) = @_; $self->request(%o, path => $path) }
sub post_json {
    my ($self, $path, $data, %o) = @_;
    $self->request(%o, method => 'POST', path => $path, json => $data);
}

# $t->stream(%opt): sends a request like request() and reads the response
# head (waits at most timeout, default 15 s); returns an MG::Test::Stream
# with ->status, ->headers, ->header($name), ->header_list,
# ->next_event($timeout), ->rest($timeout), ->complete, ->close, ->raw.
sub stream {
    my ($self, %o) = @_;
    my $s = MG::Test::Stream->new($self, %o);
    push @{$self->{streams}}, $s;
    Scalar::Util::weaken($self->{streams}[-1]);
    return $s;
}

# $t->close_streams: closes the client side of every stream() still open
# (done by done_testing, so that a graceful stop does not wait for them).
sub close_streams {
    my $self = shift;
    $_ && $_->close for @{$self->{streams} || []};
    $self->{streams} = [];
}

# $t->chat($model, %opt): POST of a chat completion, read as request()
# does. The JSON body is {model => $model, messages => $opt{messages}}
# (default: one user message "hi"), with "stream": true when $opt{stream},
# and the fields of $opt{body} added last (they win). $model may instead be
# a hash reference: the whole body, without the default model and messages.
# The path is $opt{path}, or "$opt{prefix}/chat/completions" (prefix
# default '/v1'); no_content_type => 1 sends the same bytes without the
# Content-Type header; headers, timeout, port and the other options of
# request() pass through.
sub chat {
    my ($self, $model, %o) = @_;
    return $self->request($self->_chat_request($model, %o));
}

# $t->chat_stream($model, %opt): the same request with "stream": true, read
# through stream(): returns an MG::Test::Stream.
sub chat_stream {
    my ($self, $model, %o) = @_;
    return $self->stream($self->_chat_request($model, %o, stream => 1));
}

sub _chat_request {
    my ($self, $model, %o) = @_;
    my %body = ref $model eq 'HASH' ? %$model
        : (model    => $model,
           messages => $o{messages} // [{ role => 'user', content => 'hi' }]);
    $body{stream} = JSON::PP::true if $o{stream};
    %body = (%body, %{$o{body} || {}});
    my $path = $o{path} // ($o{prefix} // '/v1') . '/chat/completions';
    my $bare = delete $o{no_content_type};
    delete @o{qw(messages stream body prefix path)};
    return (%o, method => 'POST', path => $path,
            $bare ? (body => JSON::PP->new->utf8->canonical->encode(\%body))
                  : (json => \%body));
}

# MG::Test::sse_data(@texts): the data payloads (multi-line data joined with
# "\n") of the SSE events in the concatenation of @texts, in order; events
# without data are skipped.
sub sse_data {
    my $text = join '', grep { defined } @_;
    $text =~ s/\r\n/\n/g;
    $text =~ s/\r/\n/g;
    my @out;
    for my $ev (split /\n\n+/, $text) {
        my @d;
        for my $line (split /\n/, $ev) {
            push @d, $1 // '' if $line =~ /^data(?::[ ]?(.*))?$/;
        }
        push @out, join("\n", @d) if @d;
    }
    return @out;
}

# MG::Test::sse_json(@texts): sse_data decoded as JSON, skipping "[DONE]"
# and payloads that are not JSON.
sub sse_json {
    return grep { defined } map {
        $_ eq '[DONE]' ? undef : eval { JSON::PP::decode_json($_) }
    } sse_data(@_);
}

###########################################################################
# streamed response reader

package MG::Test::Stream;

use Time::HiRes qw(time);

sub new {
    my ($class, $t, %o) = @_;
    my $self = bless { status => undef, headers => {}, header_list => [],
        body => '', eof => 0 }, $class;
    my $deadline = time + ($o{timeout} // 15);
    my $s = $t->_connect(%o) or do { $self->{error} = "connect: $!"; return $self };
    my $io = $self->{io} = MG::Test::IO->new($s);
    my $req = $t->_build_request(%o);
    my ($method) = $req =~ /^(\S+)/;
    $io->write($req, $deadline);
    my $res;
    while (!($res = MG::Client::_parse_response_head($io))) {
        my $r = $io->fill($deadline - time);
        if (!defined $r) { $self->{error} = 'timeout reading response header'; return $self }
        if ($r == 0) { $self->{error} = 'closed before response header'; $self->{eof} = 1; return $self }
    }
    if (!defined $res->{status}) { $self->{error} = $res->{error}; return $self }
    @$self{qw(status version reason headers header_list)} =
        @$res{qw(status version reason headers header_list)};
    $self->{dec} = MG::Client::_body_decoder($res, $method);
    $self->_feed;
    return $self;
}

sub _feed {
    my $self = shift;
    my $dec = $self->{dec};
    $dec->feed(MG::IO::_take($self->{io}));
    $self->{body} .= $dec->{out};
    $dec->{out} = '';
}

# reads more body; returns false on EOF/done/timeout
sub _more {
    my ($self, $deadline) = @_;
    my $dec = $self->{dec} or return 0;
    return 0 if $dec->{done} || $dec->{error} || $self->{eof};
    my $r = $self->{io}->fill($deadline - time);
    if (!defined $r) { $self->{timed_out} = 1; return 0 }
    if ($r == 0) { $self->{eof} = 1; $dec->eof; $self->_feed; return 0 }
    $self->_feed;
    return 1;
}

# ->status, ->version, ->headers (hashref), ->header_list, ->error
sub status      { $_[0]{status} }
sub version     { $_[0]{version} }
sub headers     { $_[0]{headers} }
sub header_list { $_[0]{header_list} }
sub error       { $_[0]{error} // ($_[0]{dec} ? $_[0]{dec}{error} : undef) }

# ->header($name): value of a response header (case-insensitive)
sub header { $_[0]{headers}{lc $_[1]} }

# ->raw: every byte received so far
sub raw { $_[0]{io} ? $_[0]{io}{raw} : '' }

# ->timed_out: the last next_event/rest stopped on its timeout
sub timed_out { $_[0]{timed_out} }

# ->complete: the body's framing ended properly (chunked terminator seen,
# Content-Length reached, or EOF for a close-delimited body)
sub complete { $_[0]{dec} && $_[0]{dec}{done} ? 1 : 0 }

# ->chunk_sizes: sizes of the chunks received so far (chunked responses)
sub chunk_sizes { $_[0]{dec} ? $_[0]{dec}{sizes} : [] }

# ->next_event($timeout): the next complete SSE event text (including its
# terminating blank line), or undef on EOF/timeout (default 10 s).
sub next_event {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    $self->{timed_out} = 0;
    while (1) {
        if ($self->{body} =~ /(?>\r\n|\n|\r)(?>\r\n|\n|\r)/) {
            my $end = $+[0];
            # a lone trailing CR may be the first half of a CRLF
            unless (substr($self->{body}, $end - 1, 1) eq "\r"
                && $end == length $self->{body} && $self->_more($deadline))
            {
                return substr($self->{body}, 0, $end, '');
            }
            next;
        }
        return undef unless $self->_more($deadline);
    }
}

# ->rest($timeout): all remaining body until EOF/end of body (default 10 s)
sub rest {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    $self->{timed_out} = 0;
    1 while $self->_more($deadline);
    my $b = $self->{body};
    $self->{body} = '';
    return $b;
}

# ->trailing($timeout): reads until the server closes the connection
# (default 5 s) and returns what came after the end of the body: '' for a
# response that ended once (the request had Connection: close)
sub trailing {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // 5);
    my $dec = $self->{dec} or return undef;
    1 while $self->_more($deadline);
    while (!$self->{eof} && $self->{io}{s}) {
        my $r = $self->{io}->fill($deadline - time);
        last if !defined $r;
        if ($r == 0) { $self->{eof} = 1; last }
        $self->_feed;
    }
    $self->_feed;
    return $dec->{extra};
}

# ->close: closes the client connection
sub close {
    my $self = shift;
    if ($self->{io} && $self->{io}{s}) {
        CORE::close($self->{io}{s});
        delete $self->{io}{s};
        $self->{eof} = 1;
    }
}

1;
