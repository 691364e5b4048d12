package MG::Sentinel;

# Talking to the real Redis Sentinels of t/200-sentinel.t and
# t/201-sentinel-tls.t (their plain client ports), as a client does:
#
#   my $s = MG::Sentinel->new(ports => \@SP, master => 'mymaster'
#                             [, password => $pass]);
#   $s->cmd($SP[0], 'SENTINEL', 'FAILOVER', 'mymaster');  # one reply
#   $s->master($SP[0]);            # SENTINEL MASTER's fields, as a hash
#   $s->primary_port;              # get-master-addr-by-name, the port
#   $s->ready($port, $replicas);   # every sentinel agrees: see below
#
#   # a scripted sentinel on $port that names 127.0.0.1:$rport as the
#   # primary (whatever it is: a replica, a server with another
#   # certificate), for $life seconds
#   MG::Sentinel::scripted($t, $port, $rport, $life);
#
# MG::Sentinel::resp(@args) is a command in RESP. Only core Perl.

use strict;
use warnings;

use IO::Socket::INET;
use Time::HiRes qw(time);
use MG::IO ();
use MG::Redis ();

sub new {
    my ($class, %o) = @_;
    return bless { %o }, $class;
}

# a command in RESP
sub resp { '*' . @_ . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @_) }

# $s->cmd($port, @cmd): one command to a sentinel (after AUTH when it has
# a password, in the same write), on its own connection; its reply, or
# undef when it could not be sent or read (a sentinel that is down)
sub cmd {
    my ($self, $port, @cmd) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 2)
        or return undef;
    my $io = MG::Test::IO->new($s);
    my $auth = defined $self->{password}
        ? resp('AUTH', $self->{password}) : '';
    my $deadline = time + 3;
    my $r = eval {
        $io->write($auth . resp(@cmd)) or die "write\n";
        MG::Redis::_resp_read($io, $deadline) if $auth;
        MG::Redis::_resp_read($io, $deadline);
    };
    close $s;
    return $r;
}

# SENTINEL MASTER's fields as a hash
sub master {
    my ($self, $port) = @_;
    my $r = $self->cmd($port, 'SENTINEL', 'MASTER', $self->{master});
    return ref $r eq 'ARRAY' ? { @$r } : {};
}

# the primary's port, as the first sentinel names it (0: none)
sub primary_port {
    my $self = shift;
    my $r = $self->cmd($self->{ports}[0], 'SENTINEL',
                       'get-master-addr-by-name', $self->{master});
    return ref $r eq 'ARRAY' ? $r->[1] : 0;
}

# $s->ready($port, $replicas): every sentinel knows all the others and at
# least $replicas replicas, and agrees that the primary is on $port (what
# a failover must wait for before the next fault: else the sentinels may
# not have the quorum, or promote a node that is not in sync)
sub ready {
    my ($self, $want, $replicas) = @_;
    my $others = @{$self->{ports}} - 1;
    for my $p (@{$self->{ports}}) {
        my $m = $self->master($p);
        return 0 unless ($m->{'num-other-sentinels'} // 0) == $others
            && ($m->{'num-slaves'} // 0) >= $replicas
            && ($m->{port} // 0) == $want
            && ($m->{flags} // '') eq 'master';
    }
    return 1;
}

# MG::Sentinel::scripted($t, $port, $rport, $life): a scripted sentinel
# (DIR/fake.pl, its output in DIR/fake.log), started by the MG::Test $t so
# that it is stopped with the test: it listens on $port, answers any
# SENTINEL command with 127.0.0.1:$rport, confirms a SUBSCRIBE (and never
# publishes), and +OK to anything else (AUTH). A real sentinel would not
# name a node that is not the primary: this one is for the gateway's
# checks of what a sentinel names. Returns its pid; the caller waits for
# its port.
sub scripted {
    my ($t, $port, $rport, $life) = @_;
    my $dir = $t->dir;
    MG::IO::_write_file("$dir/fake.pl", <<'EOF');
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
my ($port, $rport, $life) = @ARGV;
$SIG{PIPE} = 'IGNORE';
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
    Listen => 64, ReuseAddr => 1) or die "listen: $!";
my $sel = IO::Select->new($l);
my %buf;
my $end = time + $life;
while (time < $end) {
    for my $fh ($sel->can_read(0.5)) {
        if ($fh == $l) { $sel->add($l->accept); next }
        my $n = sysread($fh, my $d, 4096);
        if (!$n) { $sel->remove($fh); delete $buf{$fh}; close $fh; next }
        $buf{$fh} .= $d;
        while ($buf{$fh} =~ s/\A\*(\d+)\r\n//) {
            my @a;
            for (1 .. $1) {
                $buf{$fh} =~ s/\A\$(\d+)\r\n// or last;
                push @a, substr($buf{$fh}, 0, $1 + 2, '');
            }
            my $c = uc($a[0] // '');
            $c =~ s/\r\n$//;
            if ($c eq 'SUBSCRIBE') {
                syswrite $fh, "*3\r\n\$9\r\nsubscribe\r\n\$14\r\n"
                    . "+switch-master\r\n:1\r\n";
            } elsif ($c eq 'SENTINEL') {
                syswrite $fh, "*2\r\n\$9\r\n127.0.0.1\r\n\$"
                    . length($rport) . "\r\n$rport\r\n";
            } else {
                syswrite $fh, "+OK\r\n";
            }
        }
    }
}
EOF
    return $t->_spawn(cmd => [$^X, "$dir/fake.pl", $port, $rport, $life],
                      out => "$dir/fake.log");
}

1;
