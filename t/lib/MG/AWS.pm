package MG::AWS;

# What a Bedrock mock needs, written from the AWS documentation and
# independent of the module's C code: a SigV4 verifier (the server side:
# it rebuilds the canonical request from what arrived on the wire) and an
# AWS eventstream encoder.  Core Perl only.

use strict;
use warnings;

use Compress::Zlib qw(crc32);
use Digest::SHA qw(sha256_hex hmac_sha256 hmac_sha256_hex);
use POSIX qw(strftime);
use Time::Local qw(timegm);

use Exporter 'import';
our @EXPORT_OK = qw(sigv4_check es_message es_event es_exception uri_encode);

# RFC 3986 unreserved kept, everything else %XY
sub uri_encode {
    my ($s, $keep_slash) = @_;
    my $re = $keep_slash ? qr{([^A-Za-z0-9\-._~/])} : qr{([^A-Za-z0-9\-._~])};
    $s =~ s/$re/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# Verifies a request's SigV4 Authorization as the service does.
# $req: { method, path (raw, with query), headers (lowercased names),
# body }; %o: access_key, secret, region, service, max_skew (seconds).
# Returns '' when valid, or why not.
sub sigv4_check {
    my ($req, %o) = @_;
    my $h = $req->{headers};
    my $auth = $h->{authorization} // return 'no Authorization';
    my ($akid, $date, $region, $service, $signed, $sig) = $auth =~
        m{^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, ?SignedHeaders=([a-z0-9\-;]+), ?Signature=([0-9a-f]{64})$}
        or return "malformed Authorization";
    return "unknown access key" unless $akid eq $o{access_key};
    return "wrong region $region" unless $region eq $o{region};
    return "wrong service $service" unless $service eq $o{service};

    my $amz = $h->{'x-amz-date'} // return 'no x-amz-date';
    my ($Y, $M, $D, $hh, $mm, $ss) =
        $amz =~ /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/
        or return 'malformed x-amz-date';
    return 'scope date is not the x-amz-date day' unless "$Y$M$D" eq $date;
    my $t = timegm($ss, $mm, $hh, $D, $M - 1, $Y);
    return 'request time too skewed' if abs(time - $t) > ($o{max_skew} // 300);

    my @signed = split /;/, $signed;
    return 'signed headers not sorted'
        unless join(';', sort @signed) eq $signed;
    for my $need ('host', 'x-amz-date',
                  defined $h->{'x-amz-security-token'}
                      ? 'x-amz-security-token' : ())
    {
        return "$need is not signed" unless grep { $_ eq $need } @signed;
    }

    my ($path, $query) = split /\?/, $req->{path}, 2;
    $query //= '';

    # every path segment encoded once more (all services but S3)
    my $curi = join '/', map { uri_encode($_) } split m{/}, $path, -1;
    $curi = '/' if $curi eq '';

    my $cquery = join '&', sort map {
        my ($k, $v) = split /=/, $_, 2;
        uri_encode(_unescape($k)) . '=' . uri_encode(_unescape($v // ''))
    } grep { length } split /&/, $query;

    my $cheaders = '';
    for my $name (@signed) {
        my @v = map { $_->[1] } grep { lc $_->[0] eq $name }
                @{ $req->{header_list} || [] };
        @v = ($h->{$name}) if !@v && defined $h->{$name};
        return "signed header $name is missing" unless @v;
        my $v = join ',', map { my $x = $_; $x =~ s/^\s+|\s+$//g;
                                $x =~ s/\s+/ /g; $x } @v;
        $cheaders .= "$name:$v\n";
    }

    my $body = $req->{body} // '';
    utf8::encode($body) if utf8::is_utf8($body);
    my $creq = join "\n", $req->{method}, $curi, $cquery, $cheaders, $signed,
        sha256_hex($body);
    my $scope = "$date/$region/$service/aws4_request";
    my $sts = join "\n", 'AWS4-HMAC-SHA256', $amz, $scope, sha256_hex($creq);

    my $k = hmac_sha256($date, "AWS4$o{secret}");
    $k = hmac_sha256($region, $k);
    $k = hmac_sha256($service, $k);
    $k = hmac_sha256('aws4_request', $k);

    return 'signature mismatch' unless hmac_sha256_hex($sts, $k) eq $sig;
    return '';
}

sub _unescape { my $s = shift; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s }

# One eventstream message; $headers: [[name, string value], ...]
sub es_message {
    my ($headers, $payload) = @_;
    my $hb = '';
    for my $hd (@$headers) {
        my ($n, $v) = @$hd;
        utf8::encode($v) if utf8::is_utf8($v);
        $hb .= pack('C', length $n) . $n . pack('C', 7) . pack('n', length $v)
               . $v;
    }
    utf8::encode($payload) if utf8::is_utf8($payload);
    my $total = 12 + length($hb) + length($payload) + 4;
    my $prelude = pack('NN', $total, length $hb);
    my $msg = $prelude . pack('N', crc32($prelude)) . $hb . $payload;
    return $msg . pack('N', crc32($msg));
}

sub es_event {
    my ($type, $json) = @_;
    return es_message([[':event-type', $type],
                       [':content-type', 'application/json'],
                       [':message-type', 'event']], $json);
}

sub es_exception {
    my ($type, $json) = @_;
    return es_message([[':exception-type', $type],
                       [':content-type', 'application/json'],
                       [':message-type', 'exception']], $json);
}

1;
