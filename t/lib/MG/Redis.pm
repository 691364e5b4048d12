package MG::Redis;

# Redis for the test harness (see MG::Test): a real redis-server per test,
# a one-command RESP client, and the small DNS responder (dns.pl) that
# tests of re-resolved names use.

use strict;
use warnings;

use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use MG::IO qw(_read_file);
use MG::Proc qw(_stop_pid);

###########################################################################
# redis

# $t->dns(name => HOST, answer => FILE): starts a DNS responder on
# 127.0.0.1:port('dns') that answers A queries for HOST with the address in
# FILE (re-read at every query), TTL 1; returns the port.
sub dns {
    my ($self, %opt) = @_;
    my $port = $self->port($opt{port_name} // 'dns');
    (my $script = $INC{'MG/Test.pm'}) =~ s{Test\.pm$}{dns.pl};
    my $pid = $self->_spawn(cmd => [$^X, $script, $port, $opt{name},
                                    $opt{answer}, $opt{lifetime} // 120],
                            out => "$self->{dir}/dns.log");
    # the responder is ready when it answers; probing by binding its port
    # could take the port at the moment the responder binds it
    my $deadline = time + 10;
    until (_dns_answers($port)) {
        if (waitpid($pid, POSIX::WNOHANG()) != 0 || time > $deadline) {
            die "MG::Test: the DNS responder did not start: "
                . (_read_file("$self->{dir}/dns.log", 1) // '') . "\n";
        }
        sleep 0.02;
    }
    return $port;
}

# does a DNS server on 127.0.0.1:$port answer a query within 0.1 s?
sub _dns_answers {
    my $port = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'udp') or return 0;
    my $id = int rand 65536;
    $s->send(pack('n n n n n n', $id, 0x0100, 1, 0, 0, 0)
             . "\x05ready\x07invalid\x00" . pack('n n', 1, 1));
    my $rin = '';
    vec($rin, fileno($s), 1) = 1;
    return 0 unless select(my $rout = $rin, undef, undef, 0.1);
    # an unbound port gives ICMP port unreachable: recv fails
    defined $s->recv(my $a, 512) or return 0;
    return length($a) >= 2 && unpack('n', $a) == $id;
}

# $t->redis(%opt): starts redis-server on 127.0.0.1:port($opt{name} //
# 'redis') with --save '' --appendonly no --dir DIR plus @{$opt{args}};
# waits until it answers PING (10 s); returns the port.
# Options addr => '127.0.0.2' and port => N bind elsewhere (redis_cmd
# then talks to that address).
sub redis {
    my ($self, %opt) = @_;
    my $name = $opt{name} // 'redis';
    die "MG::Test: redis $name already running\n" if $self->{redis}{$name};
    my $port = $opt{port} // $self->port($name);
    my $addr = $opt{addr} // '127.0.0.1';
    $self->{ports}{$name} //= $port;
    my $dir = $self->{dir};
    my $pid = $self->_spawn(
        cmd => ['redis-server', '--port', $port, '--bind', $addr,
                '--save', '', '--appendonly', 'no', '--dir', $dir,
                '--dbfilename', "$name.rdb", '--daemonize', 'no',
                @{$opt{args} || []}],
        out => "$dir/$name.log",
    );
    $self->{redis}{$name} = { pid => $pid, port => $port, addr => $addr };
    my $deadline = time + 10;
    while (1) {
        my $r = eval { $self->redis_cmd({ name => $name, port => $port,
                                          addr => $addr, timeout => 1 },
                                        'PING') };
        return $port if defined $r && !ref $r && $r eq 'PONG';
        if (waitpid($pid, WNOHANG) == $pid || time > $deadline) {
            my $log = _read_file("$dir/$name.log", 1) // '';
            $self->stop_redis($name);
            die "MG::Test: redis-server did not start:\n$log";
        }
        sleep 0.02;
    }
}

# $t->stop_redis($name): stops a redis started by redis() (default 'redis').
sub stop_redis {
    my ($self, $name) = @_;
    $name //= 'redis';
    my $r = delete $self->{redis}{$name} or return;
    _stop_pid($r->{pid}, [TERM => 5], [KILL => 2]);
    kill 'KILL', -$r->{pid};
    $self->_forget_pgid($r->{pid});
}

# $t->redis_cmd([{name => 'redis', port => N, timeout => 5},] @cmd): sends
# one command; returns the reply: string/integer, undef for nil, arrayref
# for arrays, {error => 'ERR ...'} for an error reply. Dies on I/O errors.
sub redis_cmd {
    my $self = shift;
    my $o = ref $_[0] eq 'HASH' ? shift : {};
    my $port = $o->{port} // $self->port($o->{name} // 'redis');
    my $peer = $o->{addr}
               // ($self->{redis}{$o->{name} // 'redis'} || {})->{addr}
               // '127.0.0.1';
    my $s = IO::Socket::INET->new(PeerAddr => $peer, PeerPort => $port,
        Proto => 'tcp', Timeout => $o->{timeout} // 5)
        or die "redis connect: $!\n";
    my $io = MG::Test::IO->new($s);
    my $cmd = '*' . @_ . "\r\n"
        . join('', map { '$' . length($_) . "\r\n$_\r\n" } @_);
    $io->write($cmd) or die "redis write: $!\n";
    my $deadline = time + ($o->{timeout} // 5);
    my $r = _resp_read($io, $deadline);
    close $s;
    return $r;
}

sub _resp_line {
    my ($io, $deadline) = @_;
    while ($io->{buf} !~ /\r\n/) {
        my $r = $io->fill($deadline - time);
        die "redis: timeout\n" unless defined $r;
        die "redis: eof\n" if $r == 0;
    }
    $io->{buf} =~ s/\A(.*?)\r\n//s;
    return $1;
}

sub _resp_read {
    my ($io, $deadline) = @_;
    my $l = _resp_line($io, $deadline);
    my ($t, $v) = (substr($l, 0, 1), substr($l, 1));
    return $v if $t eq '+';
    return 0 + $v if $t eq ':';
    return { error => $v } if $t eq '-';
    if ($t eq '$') {
        return undef if $v < 0;
        while (length $io->{buf} < $v + 2) {
            my $r = $io->fill($deadline - time);
            die "redis: short bulk\n" unless $r;
        }
        my $s = substr($io->{buf}, 0, $v + 2, '');
        return substr($s, 0, $v);
    }
    if ($t eq '*') {
        return undef if $v < 0;
        return [map { _resp_read($io, $deadline) } 1 .. $v];
    }
    die "redis: bad reply '$l'\n";
}

1;
