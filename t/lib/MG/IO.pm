package MG::IO;

# Low-level pieces shared by the test harness modules (see MG::Test): file
# helpers, the byte and header helpers of the HTTP code, and the packages
# MG::Test::IO (buffered socket I/O with timeouts) and MG::Test::Body
# (incremental HTTP body decoder).

use strict;
use warnings;

use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Exporter 'import';

our @EXPORT_OK = qw(_bytes _read_file _read_from _write_file _take
                    _parse_header_lines _norm_headers _has_header);

###########################################################################
# HTTP header helpers

sub _take { my $io = shift; my $b = $io->{buf}; $io->{buf} = ''; return $b }

sub _parse_header_lines {
    my $lines = shift;
    my (@hl, %h);
    for my $l (@$lines) {
        if ($l =~ /^[ \t]/ && @hl) {          # obsolete line folding
            $l =~ s/^\s+//;
            $hl[-1][1] .= " $l";
            next;
        }
        my ($n, $v) = $l =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/ or next;
        push @hl, [$n, $v];
    }
    for my $p (@hl) {
        my $n = lc $p->[0];
        $h{$n} = exists $h{$n} ? "$h{$n}, $p->[1]" : $p->[1];
    }
    return (\@hl, \%h);
}

sub _norm_headers {
    my $h = shift;
    return [] unless $h;
    return [map { [$_->[0], $_->[1]] } @$h] if ref $h eq 'ARRAY';
    return [map { [$_, $h->{$_}] } sort keys %$h];
}

sub _has_header {
    my ($list, $name) = @_;
    return scalar grep { lc $_->[0] eq lc $name } @$list;
}

###########################################################################
# utilities

# encodes (in place) a string holding characters above 0xFF as UTF-8
sub _bytes {
    utf8::encode($_[0]) if defined $_[0] && $_[0] =~ /[^\x00-\xff]/;
    return $_[0];
}

sub _read_file {
    my ($path, $quiet) = @_;
    open my $fh, '<', $path or do {
        return undef if $quiet;
        die "MG::Test: open $path: $!\n";
    };
    binmode $fh;
    local $/;
    my $c = <$fh>;
    close $fh;
    return $c // '';
}

sub _read_from {
    my ($path, $off) = @_;
    open my $fh, '<', $path or return '';
    seek $fh, $off, 0;
    local $/;
    my $c = <$fh> // '';
    close $fh;
    return $c;
}

sub _write_file {
    my ($path, $content) = @_;
    open my $fh, '>', $path or die "MG::Test: write $path: $!\n";
    binmode $fh;
    print $fh $content;
    close $fh or die "MG::Test: close $path: $!\n";
}

###########################################################################
# buffered socket I/O with timeouts (plain or IO::Socket::SSL)

package MG::Test::IO;

use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Time::HiRes qw(time);

sub new {
    my ($class, $sock) = @_;
    return bless { s => $sock, buf => '', raw => '', eof => 0 }, $class;
}

# reads once; returns bytes read, 0 on EOF/error, undef on timeout
sub fill {
    my ($self, $timeout) = @_;
    my $s = $self->{s};
    return 0 if $self->{eof} || !$s;
    $timeout = 0 if !defined $timeout || $timeout < 0;
    my $deadline = time + $timeout;
    my $ssl = $s->isa('IO::Socket::SSL');
    while (1) {
        unless ($ssl && $s->pending) {
            my $rin = '';
            vec($rin, fileno($s), 1) = 1;
            my $left = $deadline - time;
            $left = 0 if $left < 0;
            my $n = select(my $rout = $rin, undef, undef, $left);
            if ($n <= 0) {
                return undef if $n == 0 || !$!{EINTR} || time >= $deadline;
                next;
            }
        }
        my $chunk = '';
        my $r = sysread($s, $chunk, 65536);
        if (!defined $r) {
            if ($!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR}) {
                return undef if time >= $deadline;
                next;
            }
            $self->{eof} = 1;
            $self->{err} = "$!";
            return 0;
        }
        if ($r == 0) { $self->{eof} = 1; return 0 }
        $self->{buf} .= $chunk;
        $self->{raw} .= $chunk;
        return $r;
    }
}

# writes everything (before $deadline, an absolute time, if given; only
# enforced on non-blocking sockets); returns true on success
sub write {
    my ($self, $data, $deadline) = @_;
    my $s = $self->{s} or return 0;
    MG::IO::_bytes($data);
    my $off = 0;
    while ($off < length $data) {
        my $w = syswrite($s, $data, length($data) - $off, $off);
        if (!defined $w) {
            return 0 unless $!{EINTR} || $!{EAGAIN} || $!{EWOULDBLOCK};
            if (defined $deadline) {
                my $left = $deadline - time;
                return 0 if $left <= 0;
                my $win = '';
                vec($win, fileno($s), 1) = 1;
                select(undef, my $wout = $win, undef, $left);
            }
            next;
        }
        $off += $w;
    }
    return 1;
}

# half-closes and drains briefly so unread input does not turn into a RST
sub close_gracefully {
    my $self = shift;
    my $s = $self->{s};
    if ($s->isa('IO::Socket::SSL')) {
        $s->close(SSL_fast_shutdown => 1);
        return;
    }
    shutdown($s, 1);
    my $deadline = time + 1;
    while (time < $deadline) {
        my $r = $self->fill($deadline - time);
        last if !defined $r || $r == 0;
        $self->{buf} = '';
    }
    close $s;
}

###########################################################################
# incremental body decoder: modes chunked, length, eof, none

package MG::Test::Body;

sub new {
    my ($class, $mode, $len) = @_;
    my $self = bless { mode => $mode, in => '', out => '', done => 0,
        error => undef, sizes => [], state => 'size', need => $len // 0,
        extra => '' },
        $class;
    $self->{done} = 1 if $mode eq 'none' || ($mode eq 'length' && !$len);
    return $self;
}

# bytes after the end of the body go to {extra}: a response that ends
# twice (a second chunked terminator, say) shows there
sub feed {
    my ($self, $data) = @_;
    return if $self->{error};
    if ($self->{done}) { $self->{extra} .= $data; return }
    my $m = $self->{mode};
    if ($m eq 'eof') { $self->{out} .= $data; return }
    if ($m eq 'length') {
        my $take = substr($data, 0, $self->{need});
        $self->{out} .= $take;
        $self->{extra} .= substr($data, length $take);
        $self->{need} -= length $take;
        $self->{done} = 1 if $self->{need} == 0;
        return;
    }
    $self->{in} .= $data;
    while (1) {
        my $st = $self->{state};
        if ($st eq 'size') {
            if ($self->{in} =~ s/\A([0-9a-fA-F]+)[ \t]*(?:;[^\r\n]*)?\r\n//) {
                my $n = hex $1;
                push @{$self->{sizes}}, $n;
                if ($n == 0) { $self->{state} = 'trailer' }
                else { $self->{need} = $n; $self->{state} = 'data' }
            } elsif ($self->{in} =~ /\A[^\r\n]*\r?\n/
                     || length $self->{in} > 1024)
            {
                $self->{error} = 'bad chunk size line';
                return;
            } else {
                return;
            }
        } elsif ($st eq 'data') {
            return unless length $self->{in};
            my $take = substr($self->{in}, 0, $self->{need}, '');
            $self->{out} .= $take;
            $self->{need} -= length $take;
            $self->{state} = 'crlf' if $self->{need} == 0;
        } elsif ($st eq 'crlf') {
            return if length $self->{in} < 2;
            if (substr($self->{in}, 0, 2, '') ne "\r\n") {
                $self->{error} = 'missing CRLF after chunk data';
                return;
            }
            $self->{state} = 'size';
        } elsif ($st eq 'trailer') {
            if ($self->{in} =~ s/\A\r\n//) {
                $self->{done} = 1;
                $self->{extra} .= $self->{in};
                $self->{in} = '';
                return;
            }
            if ($self->{in} =~ s/\A[^\r\n]+\r\n//) { next }
            return;
        }
    }
}

# the peer closed the connection
sub eof {
    my $self = shift;
    $self->{done} = 1 if $self->{mode} eq 'eof';
    $self->{eof} = 1;
}

1;
