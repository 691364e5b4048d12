package MG::Rendezvous;

# The gateway's weighted rendezvous hashing, ported from
# src/mg_rendezvous.c, so that a test knows which backend a new session
# key must get: FNV-1a over key, 0xff, name; the splitmix64 finalizer; the
# top 53 bits as u in (0,1); score -weight / ln(u); the highest score
# wins, the first on ties.

use strict;
use warnings;

sub hash {
    my ($key, $name) = @_;
    use integer;
    my $P = 1099511628211;                      # 0x100000001b3
    my $h = -3750763034362895579;               # 0xcbf29ce484222325
    for my $c (unpack 'C*', $key)  { $h ^= $c; $h *= $P }
    $h ^= 0xff; $h *= $P;
    for my $c (unpack 'C*', $name) { $h ^= $c; $h *= $P }
    $h ^= ($h >> 30) & ((1 << 34) - 1); $h *= -4658895280553007687;
    $h ^= ($h >> 27) & ((1 << 37) - 1); $h *= -7723592293110705685;
    $h ^= ($h >> 31) & ((1 << 33) - 1);
    return $h;
}

# pick($key, \@names[, \%weights[, @skip]]): the name $key goes to, over
# @names in configuration order (weight 1 unless given), @skip left out.
sub pick {
    my ($key, $names, $w, @skip) = @_;
    my %skip = map { $_ => 1 } @skip;
    my ($best, $bs);
    for my $n (@$names) {
        next if $skip{$n};
        my $top;
        { use integer; $top = (hash($key, $n) >> 11) & ((1 << 53) - 1) }
        my $u = ($top + 0.5) / 9007199254740992.0;
        my $s = -($w ? $w->{$n} : 1) / log($u);
        ($best, $bs) = ($n, $s) if !defined $best || $s > $bs;
    }
    return $best;
}

1;
