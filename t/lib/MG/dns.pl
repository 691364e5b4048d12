#!/usr/bin/perl

# A minimal DNS responder for the tests, started by MG::Test->dns():
#   dns.pl PORT NAME ANSWER_FILE LIFETIME
# answers A queries for NAME with the IPv4 address written in ANSWER_FILE
# (read at every query, so a test changes the answer by rewriting it), TTL 1;
# NXDOMAIN for other names; no answer to other types.  Exits after
# LIFETIME seconds.

use strict;
use warnings;

use IO::Socket::INET;

my ($port, $want, $file, $lifetime) = @ARGV;
$want = lc $want;

my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                              Proto => 'udp')
    or die "dns.pl: cannot listen on $port: $!\n";

my $deadline = time + ($lifetime || 60);

while (time < $deadline) {
    my $rin = '';
    vec($rin, fileno($s), 1) = 1;
    next unless select(my $rout = $rin, undef, undef, 0.5);

    my $peer = $s->recv(my $q, 512) // next;
    next if length($q) < 17;

    my ($id) = unpack('n', $q);
    my $p = 12;
    my @labels;

    while ((my $l = ord(substr($q, $p, 1))) != 0) {
        push @labels, substr($q, $p + 1, $l);
        $p += $l + 1;
        last if $p >= length $q;
    }

    my ($qtype) = unpack('n', substr($q, $p + 1, 2));
    my $name = lc join('.', @labels);
    my $question = substr($q, 12, $p + 5 - 12);
    my ($ans, $n) = ('', 0);

    if ($name eq $want && $qtype == 1 && open(my $fh, '<', $file)) {
        my $ip = <$fh> // '';
        close $fh;
        $ip =~ s/\s+//g;

        if ($ip =~ /^\d+\.\d+\.\d+\.\d+$/) {
            $ans = pack('n n n N n', 0xc00c, 1, 1, 1, 4)
                   . pack('C4', split /\./, $ip);
            $n = 1;
        }
    }

    my $rcode = ($name eq $want) ? 0 : 3;

    $s->send(pack('n n n n n n', $id, 0x8180 | $rcode, 1, $n, 0, 0)
             . $question . $ans, 0, $peer);
}
