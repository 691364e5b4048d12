package MG::Cluster;

# A real local Redis Cluster for the tests (README "Redis"): six
# redis-server processes on 127.0.0.1 (three primaries with a replica
# each), joined by `redis-cli --cluster create`, and the faults a test
# drives on it: a forced failover, a killed primary, a slot migration
# (paused midway, so that clients see ASK, then finished: MOVED).
#
#   my $c = MG::Cluster->new($t);        # $t: an MG::Test; starts it all
#   $c->seeds;                           # "127.0.0.1:P1 ... 127.0.0.1:P6"
#   my @p = $c->primaries;               # ports, by their first slot
#   my $slot = MG::Cluster::keyslot('mg:pin:s1:m');
#   my $port = $c->owner($slot);         # the primary serving it
#   $c->get('mg:pin:s1:m');              # GET, following MOVED and ASK
#   my $new = $c->failover($p[0]);       # CLUSTER FAILOVER on its replica
#   my $m = $c->migrate_slot($slot, $p[0], $p[1], pause => 1);
#   $c->finish_migration($m);
#   $new = $c->kill_primary($p[1]);      # SIGKILL, its replica promoted
#
#   # TLS only: no plain port (--port 0 --tls-port P), the cluster bus and
#   # replication over TLS too (tls-cluster, tls-replication); the nodes
#   # announce their TLS ports and every helper method talks TLS
#   my $c = MG::Cluster->new($t, tls => { cert => $crt, key => $key,
#                                         ca => $t->ca_path,
#                                         name => 'redis.test' });
#
# The nodes are MG::Test redis instances named cl1..cl6 ($t->{redis}), so
# the harness stops them at the end of the test, on die, or (its watchdog)
# when the test process is killed. Every wait is bounded; a wait that
# times out dies with what the nodes said. Only core Perl (and
# IO::Socket::SSL with the tls option).

use strict;
use warnings;

use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use MG::IO qw(_read_file);
use MG::Redis ();

###########################################################################
# key slots: CRC16 (XMODEM: polynomial 0x1021, initial value 0) of the
# key, or of its hash tag, modulo 16384 (the Redis Cluster specification)

my @CRC16 = map {
    my $c = $_ << 8;
    $c = ($c & 0x8000) ? (($c << 1) ^ 0x1021) : ($c << 1) for 1 .. 8;
    $c & 0xffff;
} 0 .. 255;

sub crc16 {
    my $crc = 0;
    $crc = (($crc << 8) & 0xff00) ^ $CRC16[(($crc >> 8) ^ $_) & 0xff]
        for unpack 'C*', $_[0];
    return $crc;
}

# MG::Cluster::keyslot($key): the slot of a key. A hash tag is the part
# between the first "{" and the first "}" after it, when not empty; only
# it is hashed then ("{user1}:a" and "{user1}:b" share a slot).
sub keyslot {
    my $k = shift;
    my $s = index $k, '{';
    if ($s >= 0) {
        my $e = index $k, '}', $s + 1;
        $k = substr $k, $s + 1, $e - $s - 1 if $e > $s + 1;
    }
    return crc16($k) & 16383;
}

# MG::Cluster::tag_for_slot($slot[, $prefix]): a short string TAG such
# that any key containing "{TAG}" (as its first brace) is in $slot: many
# keys of one slot without a search per key.
sub tag_for_slot {
    my ($slot, $prefix) = @_;
    $prefix //= 't';
    for my $i (0 .. 1_000_000) {
        return "$prefix$i" if (crc16("$prefix$i") & 16383) == $slot;
    }
    die "MG::Cluster: no tag for slot $slot\n";
}

# MG::Cluster::available(): '' when redis-server and redis-cli can run a
# cluster as this module does (7.0 or later: cluster-port, GETEX), else
# the reason, for plan skip_all.
sub available {
    for my $bin ('redis-server', 'redis-cli') {
        my $v = `$bin --version 2>/dev/null` // '';
        return "$bin is not installed" unless $v =~ /(\d+)\.(\d+)\.\d+/;
        return "$bin $1.$2 is older than 7.0" if $1 < 7;
    }
    my $help = `redis-cli --cluster help 2>&1` // '';
    return 'redis-cli has no --cluster' unless $help =~ /\bcreate\b/;
    return '';
}

###########################################################################
# start and stop

# MG::Cluster->new($t, %opt): starts the nodes and the cluster; returns
# once every node says cluster_state:ok, they agree on the slot map and
# every replica's link is up. Options: nodes (6), replicas (1 per
# primary), timeout (30 s for the whole start), args (more redis-server
# arguments for every node), tls => {cert, key, ca[, name]} (every node
# TLS only: --port 0, --tls-port on the port, --tls-cluster yes,
# --tls-replication yes, the certificate and key given, --tls-auth-clients
# no; redis-cli --tls --cacert CA creates the cluster, and this module's
# connections verify the nodes' certificates against CA, and against
# name when given; the port is the one announced).
sub new {
    my ($class, $t, %opt) = @_;
    my $self = bless { t => $t, n => $opt{nodes} // 6,
                       replicas => $opt{replicas} // 1, ports => [],
                       names => {}, dead => {} }, $class;
    my $dir = $t->dir;
    my $deadline = time + ($opt{timeout} // 30);
    if (my $x = $opt{tls}) {
        for (qw(cert key ca)) {
            die "MG::Cluster: tls => {$_} is missing\n" unless $x->{$_};
        }
        require IO::Socket::SSL;
        $self->{tls} = { %$x };
    }
    for my $i (1 .. $self->{n}) {
        my $name = "cl$i";
        my $port = $t->port($name);
        # the cluster bus port is given (cluster-port) rather than left at
        # PORT + 10000, which may fall in the kernel's ephemeral range
        my $bus = $t->port("${name}_bus");
        $self->{bus}{$port} = $bus;
        $self->{names}{$port} = $name;
        push @{$self->{ports}}, $port;
        my @args = (
            '--cluster-enabled', 'yes',
            '--cluster-config-file', "$dir/nodes-$port.conf",
            '--cluster-node-timeout', '1000',
            '--cluster-port', $bus,
            # a replica may be promoted however long it was cut off, and
            # stays with its primary: the faults are the test's only
            '--cluster-replica-validity-factor', '0',
            '--cluster-allow-replica-migration', 'no',
            # replicas sync at once, not after the default 5 s delay
            '--repl-diskless-sync', 'yes',
            '--repl-diskless-sync-delay', '0',
            @{$opt{args} || []});
        if ($self->{tls}) {
            $self->_start_tls_node($name, $port, \@args);
        } else {
            $t->redis(name => $name, args => \@args);
        }
    }
    my ($rc, $out) = $self->_run(
        ['redis-cli', $self->_cli_tls, '--cluster', 'create',
         (map { "127.0.0.1:$_" } @{$self->{ports}}),
         '--cluster-replicas', $self->{replicas}, '--cluster-yes'],
        $deadline - time);
    die "MG::Cluster: redis-cli --cluster create failed ($rc):\n$out"
        if $rc != 0;
    $self->wait_stable($deadline - time);
    return $self;
}

# a node with a TLS port only, started as MG::Test::redis() starts one
# (and registered as such, so that the harness stops it), answering PING
# over TLS within 10 s
sub _start_tls_node {
    my ($self, $name, $port, $args) = @_;
    my $t = $self->{t};
    my $x = $self->{tls};
    my $dir = $t->dir;
    die "MG::Test: redis $name already running\n" if $t->{redis}{$name};
    my $pid = $t->_spawn(
        cmd => ['redis-server', '--port', '0', '--tls-port', $port,
                '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
                '--dir', $dir, '--dbfilename', "$name.rdb",
                '--daemonize', 'no',
                '--tls-cluster', 'yes', '--tls-replication', 'yes',
                '--tls-cert-file', $x->{cert}, '--tls-key-file', $x->{key},
                '--tls-ca-cert-file', $x->{ca}, '--tls-auth-clients', 'no',
                @$args],
        out => "$dir/$name.log");
    $t->{redis}{$name} = { pid => $pid, port => $port, addr => '127.0.0.1',
                           tls => 1 };
    my $until = time + 10;
    while (1) {
        my $r = $self->cmd($port, 'PING');
        return $port if defined $r && !ref $r && $r eq 'PONG';
        if (waitpid($pid, WNOHANG) == $pid || time > $until) {
            my $why = $@ || 'no answer';
            my $log = _read_file("$dir/$name.log", 1) // '';
            $t->stop_redis($name);
            die "MG::Cluster: redis-server $name (TLS port $port) did not "
                . "start: $why\n$log";
        }
        sleep 0.05;
    }
}

# redis-cli's TLS options, when the cluster has TLS
sub _cli_tls {
    my $self = shift;
    my $x = $self->{tls} or return ();
    return ('--tls', '--cacert', $x->{ca},
            $x->{name} ? ('--sni', $x->{name}) : ());
}

# $c->tls: the tls option given to new(), or undef
sub tls { $_[0]{tls} }

# runs a command to its end, at most $timeout seconds (then killed);
# returns ($exit_code, $output)
sub _run {
    my ($self, $cmd, $timeout) = @_;
    my $t = $self->{t};
    my $out = $t->dir . "/cluster-cmd.log";
    unlink $out;
    my $pid = $t->_spawn(cmd => $cmd, out => $out);
    my $deadline = time + ($timeout > 1 ? $timeout : 1);
    my $st;
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) { $st = $?; last }
        if (time > $deadline) {
            kill 'KILL', -$pid;
            waitpid($pid, 0);
            $st = 9;
            last;
        }
        sleep 0.05;
    }
    $t->_forget_pgid($pid);
    my $text = _read_file($out, 1) // '';
    return (($st & 127) ? 128 + ($st & 127) : $st >> 8, $text);
}

# $c->stop: stops every node (the harness does it anyway at the end)
sub stop {
    my $self = shift;
    $self->{t}->stop_redis($self->{names}{$_}) for @{$self->{ports}};
    $self->{dead}{$_} = 1 for @{$self->{ports}};
}

###########################################################################
# talking to the nodes

# $c->pipeline($port, [@cmd], ...): the commands on one connection, in
# order; returns an arrayref of the replies (as MG::Redis::redis_cmd
# gives them). Dies on an I/O error or after 2 s (after the connection,
# and with TLS the handshake, were made: 1 s at most).
sub pipeline {
    my ($self, $port, @cmds) = @_;
    my $s = $self->_connect($port);
    my $io = MG::Test::IO->new($s);
    my $req = '';
    for my $c (@cmds) {
        $req .= '*' . @$c . "\r\n"
            . join('', map { '$' . length($_) . "\r\n$_\r\n" } @$c);
    }
    $io->write($req) or die "redis 127.0.0.1:$port: write: $!\n";
    my $deadline = time + 2;
    my @r = map { MG::Redis::_resp_read($io, $deadline) } @cmds;
    close $s;
    return \@r;
}

# a connection to a node: plain, or TLS with the certificate verified
# (against the CA, and the name when one was given)
sub _connect {
    my ($self, $port) = @_;
    my $x = $self->{tls};
    unless ($x) {
        return IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $port, Proto => 'tcp',
                                     Timeout => 1)
            || die "redis 127.0.0.1:$port: connect: $!\n";
    }
    my $s = IO::Socket::SSL->new(
        PeerHost => '127.0.0.1', PeerPort => $port, Timeout => 1,
        SSL_ca_file => $x->{ca},
        SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_PEER(),
        $x->{name} ? (SSL_hostname => $x->{name},
                      SSL_verifycn_name => $x->{name},
                      SSL_verifycn_scheme => 'default')
                   : (SSL_verifycn_scheme => 'none'));
    return $s if $s;
    no warnings 'once';
    die "redis 127.0.0.1:$port: TLS connect: "
        . ($IO::Socket::SSL::SSL_ERROR || $!) . "\n";
}

# $c->cmd($port, @cmd): one command; its reply, or undef when the node
# cannot be reached ($@ says why)
sub cmd {
    my ($self, $port, @cmd) = @_;
    my $r = eval { $self->pipeline($port, \@cmd)->[0] };
    return $r;
}

# $c->ports: every node's port; $c->seeds: all of them as the
# model_gateway_redis_cluster directive takes them
sub ports { @{$_[0]{ports}} }
sub seeds { join ' ', map { "127.0.0.1:$_" } @{$_[0]{ports}} }

# $c->pid($port), $c->name($port): the node's process and harness name
sub pid { $_[0]{t}{redis}{$_[0]{names}{$_[1]}}{pid} }
sub name { $_[0]{names}{$_[1]} }

# $c->alive: the ports of the nodes not killed or stopped
sub alive { my $self = shift; grep { !$self->{dead}{$_} } $self->ports }

# $c->nodes($port): CLUSTER NODES as node $port sees the cluster: a list
# of {id, port, flags => {master, slave, fail, 'fail?', myself, ...},
# master (its primary's id or '-'), link, slots => [[lo, hi], ...],
# migrating => {slot => id}, importing => {slot => id}}; () on error.
sub nodes {
    my ($self, $port) = @_;
    my $r = $self->cmd($port, 'CLUSTER', 'NODES');
    return () unless defined $r && !ref $r;
    my @n;
    for my $l (split /\n/, $r) {
        my ($id, $addr, $flags, $master, undef, undef, undef, $link, @s)
            = split ' ', $l;
        next unless defined $link;
        my ($p) = $addr =~ /:(\d+)@/ or next;
        my $node = { id => $id, port => 0 + $p, master => $master,
                     link => $link, slots => [], migrating => {},
                     importing => {},
                     flags => { map { $_ => 1 } split /,/, $flags } };
        for my $s (@s) {
            if ($s =~ /^\[(\d+)->-(\w+)\]$/) { $node->{migrating}{$1} = $2 }
            elsif ($s =~ /^\[(\d+)-<-(\w+)\]$/) { $node->{importing}{$1} = $2 }
            elsif ($s =~ /^(\d+)(?:-(\d+))?$/) {
                push @{$node->{slots}}, [$1, $2 // $1];
            }
        }
        push @n, $node;
    }
    return @n;
}

# $c->id($port): the node's id (asked of the node itself)
sub id {
    my ($self, $port) = @_;
    return $self->{ids}{$port} //= do {
        my ($me) = grep { $_->{flags}{myself} } $self->nodes($port);
        $me or die "MG::Cluster: node $port does not answer\n";
        $me->{id};
    };
}

# the cluster as node $port sees it: the slot map ("lo-hi=port ...",
# sorted) and the role of every live node ("port<primary" for a replica),
# so that two nodes agree only when both match
sub _map_text {
    my ($self, $port) = @_;
    my @n = $self->nodes($port);
    my %port_of = map { $_->{id} => $_->{port} } @n;
    my (@r, @roles);
    for my $n (@n) {
        push @r, map { [$_->[0], "$_->[0]-$_->[1]=$n->{port}"] }
            @{$n->{slots}};
        next if $self->{dead}{$n->{port}};
        push @roles, $n->{flags}{slave}
            ? "$n->{port}<" . ($port_of{$n->{master}} // '?')
            : "$n->{port}";
    }
    return join ' ', (map { $_->[1] } sort { $a->[0] <=> $b->[0] } @r),
                     sort @roles;
}

# $c->slot_map([$port]): {slot range start => [lo, hi, primary port]}, as
# one live node (the first that answers, or $port) sees it
sub slot_map {
    my ($self, $port) = @_;
    for my $p (defined $port ? ($port) : $self->alive) {
        my @n = $self->nodes($p) or next;
        my %m;
        for my $n (@n) {
            $m{$_->[0]} = [$_->[0], $_->[1], $n->{port}] for @{$n->{slots}};
        }
        return \%m;
    }
    return {};
}

# $c->owner($slot): the port of the primary serving $slot
sub owner {
    my ($self, $slot) = @_;
    for my $r (values %{$self->slot_map}) {
        return $r->[2] if $slot >= $r->[0] && $slot <= $r->[1];
    }
    return undef;
}

# $c->key_owner($key): the port of the primary serving $key's slot
sub key_owner { $_[0]->owner(keyslot($_[1])) }

# $c->primaries: the ports of the primaries that own slots, by their
# first slot
sub primaries {
    my $self = shift;
    my $m = $self->slot_map;
    my %first;
    for my $r (values %$m) {
        $first{$r->[2]} = $r->[0]
            if !defined $first{$r->[2]} || $r->[0] < $first{$r->[2]};
    }
    my @p = sort { $first{$a} <=> $first{$b} } keys %first;
    return @p;
}

# $c->slots_of($port): the [lo, hi] ranges $port serves
sub slots_of {
    my ($self, $port) = @_;
    my @s = sort { $a->[0] <=> $b->[0] }
            map { [$_->[0], $_->[1]] }
            grep { $_->[2] == $port } values %{$self->slot_map};
    return @s;
}

# $c->replicas_of($primary): the ports of its live replicas
sub replicas_of {
    my ($self, $primary) = @_;
    my $id = $self->id($primary);
    my %dead = %{$self->{dead}};
    my @r = sort { $a <=> $b }
            map { $_->{port} }
            grep { $_->{master} eq $id && !$_->{flags}{fail}
                   && !$dead{$_->{port}} }
            $self->nodes($primary);
    return @r;
}

# $c->info($port[, $section]): INFO as a hash
sub info {
    my ($self, $port, $section) = @_;
    my $r = $self->cmd($port, 'INFO', $section // ());
    return {} unless defined $r && !ref $r;
    return { map { /^(\w+):(.*?)\r?$/ ? ($1 => $2) : () } split /\n/, $r };
}

# $c->cluster_info($port): CLUSTER INFO as a hash
sub cluster_info {
    my ($self, $port) = @_;
    my $r = $self->cmd($port, 'CLUSTER', 'INFO');
    return {} unless defined $r && !ref $r;
    return { map { /^(\w+):(.*?)\r?$/ ? ($1 => $2) : () } split /\n/, $r };
}

###########################################################################
# keys

# $c->get_at($port, $key[, $asking]): GET on that node only, no
# redirection followed (a MOVED or ASK is returned as {error => ...})
sub get_at {
    my ($self, $port, $key, $asking) = @_;
    my $r = eval {
        $self->pipeline($port, ($asking ? (['ASKING']) : ()), ['GET', $key])
    } or return { error => "unreachable: $@" };
    return $r->[-1];
}

# $c->get($key): GET from the node that serves the key, following MOVED
# and ASK (at most 5 redirections) as a cluster client does; the value
# (undef for no key), or {error => ...}
sub get {
    my ($self, $key) = @_;
    my $port = $self->key_owner($key) // ($self->alive)[0];
    my $asking = 0;
    my $r;
    for (1 .. 6) {
        $r = $self->get_at($port, $key, $asking);
        return $r unless ref $r eq 'HASH';
        if ($r->{error} =~ /^MOVED \d+ [\d.]+:(\d+)/) {
            ($port, $asking) = ($1, 0);
        } elsif ($r->{error} =~ /^ASK \d+ [\d.]+:(\d+)/) {
            ($port, $asking) = ($1, 1);
        } else {
            return $r;
        }
    }
    return $r;
}

# $c->log_time($port, $re): the time (epoch seconds, with milliseconds)
# of the last line of the node's log matching $re, or undef: when the
# node itself says a thing happened ("Failover election won")
sub log_time {
    my ($self, $port, $re) = @_;
    my $log = _read_file($self->{t}->dir . "/$self->{names}{$port}.log", 1)
        // return undef;
    my %mon = (Jan => 0, Feb => 1, Mar => 2, Apr => 3, May => 4, Jun => 5,
               Jul => 6, Aug => 7, Sep => 8, Oct => 9, Nov => 10, Dec => 11);
    my $at;
    for my $l (grep { $_ =~ $re } split /\n/, $log) {
        # "PID:ROLE DD Mon YYYY HH:MM:SS.mmm ...", in local time
        my ($d, $m, $y, $hh, $mm, $ss, $ms) = $l =~
            /^\d+:\w (\d+) (\w{3}) (\d{4}) (\d+):(\d+):(\d+)\.(\d+)/ or next;
        $at = POSIX::mktime($ss, $mm, $hh, $d, $mon{$m}, $y - 1900, 0, 0, -1)
              + $ms / 1000;
    }
    return $at;
}

# $c->commandstats($port): {command => calls} of INFO commandstats
sub commandstats {
    my ($self, $port) = @_;
    my $r = $self->cmd($port, 'INFO', 'commandstats') // '';
    return {} if ref $r;
    my %c;
    $c{$1} = $2 while $r =~ /^cmdstat_([\w|]+):calls=(\d+)/mg;
    return \%c;
}

# MG::Cluster::self_check($c): keyslot() against CLUSTER KEYSLOT for keys
# with and without hash tags; returns the mismatches ("key: ours theirs")
sub self_check {
    my $self = shift;
    my ($port) = $self->alive;
    my @bad;
    my @keys = ('', 'a', '123456789', 'mg:pin:s1:m', 'mg:pin:{t}:x:m',
                '{user1000}.following', '{user1000}.followers',
                'foo{}{bar}', 'foo{{bar}}zap', 'foo{bar}{zap}', '{}x',
                '{', '}', 'x{y', 'mg:{admin}:backends', "bin\x00\xff",
                map { "k$_:" . ('z' x ($_ % 7)) } 1 .. 40);
    for my $k (@keys) {
        my $r = $self->cmd($port, 'CLUSTER', 'KEYSLOT', $k);
        my $mine = keyslot($k);
        push @bad, "'$k': $mine " . (defined $r ? (ref $r ? $r->{error} : $r)
                                                : 'no answer')
            unless defined $r && !ref $r && $r == $mine;
    }
    return @bad;
}

###########################################################################
# waiting

# $c->wait_stable([$timeout]): waits (10 s by default) until every live
# node says cluster_state:ok with all 16384 slots assigned, they all see
# the same slot map, no slot is being migrated, and every live replica's
# link to its primary is up. Dies with the nodes' views on timeout.
sub wait_stable {
    my ($self, $timeout, $what) = @_;
    my $ok = $self->{t}->wait_for(sub { $self->_stable }, $timeout // 10,
                                  0.05);
    return 1 if $ok;
    die "MG::Cluster: " . ($what // 'the cluster') . " did not settle "
        . "within " . ($timeout // 10) . " s\n" . $self->describe;
}

sub _stable {
    my $self = shift;
    my %maps;
    for my $p ($self->alive) {
        my $ci = $self->cluster_info($p);
        return 0 unless ($ci->{cluster_state} // '') eq 'ok'
            && ($ci->{cluster_slots_assigned} // 0) == 16384;
        my @n = $self->nodes($p) or return 0;
        my ($me) = grep { $_->{flags}{myself} } @n;
        return 0 if grep { %{$_->{migrating}} || %{$_->{importing}} } @n;
        if ($me->{flags}{slave}) {
            my $ri = $self->info($p, 'replication');
            return 0 unless ($ri->{master_link_status} // '') eq 'up';
        } elsif (!@{$me->{slots}}) {
            return 0;       # a demoted primary that does not know it yet
        }
        $maps{$self->_map_text($p)}++;
    }
    return keys %maps == 1;
}

# $c->describe: every live node's CLUSTER NODES, for a diagnosis
sub describe {
    my $self = shift;
    my $s = '';
    for my $p ($self->alive) {
        my $r = $self->cmd($p, 'CLUSTER', 'NODES');
        $s .= "--- node $p ---\n"
            . (defined $r ? (ref $r ? "$r->{error}\n" : $r) : "($@)\n");
    }
    return $s;
}

###########################################################################
# faults

# $c->failover($primary[, timeout => 10, wait => 1]): CLUSTER FAILOVER
# on one of its replicas (a manual failover: the primary stops writes,
# the replica catches up, takes the slots, the old primary becomes its
# replica); waits until every node agrees and the old primary's link to
# the new one is up. Returns the new primary's port. With wait => 0 it
# returns at once (traffic can go on meanwhile): wait_promoted() waits.
sub failover {
    my ($self, $primary, %o) = @_;
    my ($replica) = $self->replicas_of($primary)
        or die "MG::Cluster: $primary has no replica\n";
    $self->{took}{$replica} = [$primary, [$self->slots_of($primary)],
                               "failover of $primary to $replica"];
    my $r = $self->cmd($replica, 'CLUSTER', 'FAILOVER');
    die "MG::Cluster: CLUSTER FAILOVER on $replica: "
        . (ref $r ? $r->{error} : $r // $@) . "\n"
        unless defined $r && !ref $r && $r eq 'OK';
    $self->wait_promoted($replica, $o{timeout} // 10) if $o{wait} // 1;
    return $replica;
}

# $c->kill_primary($primary[, timeout => 15, wait => 1]): SIGKILL; waits
# until its replica is promoted (the other nodes flag the primary as
# failed after cluster-node-timeout, 1 s, then the replica wins an
# election) and every live node agrees. Returns the new primary's port;
# wait => 0 as for failover().
sub kill_primary {
    my ($self, $primary, %o) = @_;
    my ($replica) = $self->replicas_of($primary)
        or die "MG::Cluster: $primary has no replica\n";
    $self->{took}{$replica} = [$primary, [$self->slots_of($primary)],
                               "promotion of $replica after $primary was "
                               . "killed"];
    $self->kill_node($primary);
    $self->wait_promoted($replica, $o{timeout} // 15) if $o{wait} // 1;
    return $replica;
}

# $c->wait_promoted($new[, $timeout]): after failover() or kill_primary()
# with wait => 0, waits (10 s by default) until every live node sees $new
# serving the old primary's slots and the cluster is stable; returns the
# seconds waited. Dies on timeout.
sub wait_promoted {
    my ($self, $new, $timeout) = @_;
    my $x = delete $self->{took}{$new}
        or die "MG::Cluster: $new is not being promoted\n";
    my ($old, $slots, $what) = @$x;
    $timeout //= 10;
    my $want = join ' ', map { "$_->[0]-$_->[1]" } @$slots;
    my $t0 = time;
    my $ok = $self->{t}->wait_for(sub {
        for my $p ($self->alive) {
            my $have = join ' ', map { "$_->[0]-$_->[1]" }
                $self->_slots_seen_by($p, $new);
            return 0 unless $have eq $want;
        }
        return $self->_stable;
    }, $timeout, 0.05);
    die "MG::Cluster: $what: not done within $timeout s\n" . $self->describe
        unless $ok;
    return time - $t0;
}

# $c->kill_node($port): SIGKILL, nothing waited for
sub kill_node {
    my ($self, $port) = @_;
    kill 'KILL', $self->pid($port);
    $self->{dead}{$port} = 1;
}

# the ranges node $p thinks $owner serves
sub _slots_seen_by {
    my ($self, $p, $owner) = @_;
    my ($n) = grep { $_->{port} == $owner } $self->nodes($p);
    return $n ? sort { $a->[0] <=> $b->[0] } @{$n->{slots}} : ();
}

# $c->migrate_slot($slot, $from, $to, %opt): moves a slot between
# primaries as redis-cli --cluster reshard does: SETSLOT IMPORTING on
# $to, SETSLOT MIGRATING on $from, then GETKEYSINSLOT and MIGRATE ...
# KEYS in batches, then SETSLOT NODE on $to, $from and every other
# primary. With pause => 1 it returns after moving only a part of the
# keys (part => fraction, 0.5 by default): clients then get ASK for the
# keys already moved (and the new ones) and MOVED nowhere yet;
# finish_migration() does the rest. Returns the migration (a hash:
# slot, from, to, moved => keys moved so far).
sub migrate_slot {
    my ($self, $slot, $from, $to, %o) = @_;
    my $m = { slot => $slot, from => $from, to => $to, moved => 0,
              from_id => $self->id($from), to_id => $self->id($to) };
    $self->_ok($to, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $m->{from_id});
    $self->_ok($from, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $m->{to_id});
    if ($o{pause}) {
        my $keys = $self->cmd($from, 'CLUSTER', 'GETKEYSINSLOT', $slot,
                              100000);
        $keys = [] unless ref $keys eq 'ARRAY';
        my $n = int(@$keys * ($o{part} // 0.5));
        $self->_move($m, @$keys[0 .. $n - 1]) if $n > 0;
        $m->{paused} = 1;
        return $m;
    }
    return $self->finish_migration($m);
}

# $c->finish_migration($m[, timeout => 10]): moves the keys left, gives
# the slot to its new owner everywhere, waits until every node agrees.
sub finish_migration {
    my ($self, $m, %o) = @_;
    my ($slot, $from, $to) = @$m{qw(slot from to)};
    for (1 .. 1000) {
        my $keys = $self->cmd($from, 'CLUSTER', 'GETKEYSINSLOT', $slot, 100);
        die "MG::Cluster: GETKEYSINSLOT on $from: "
            . (ref $keys eq 'HASH' ? $keys->{error} : $@) . "\n"
            unless ref $keys eq 'ARRAY';
        last unless @$keys;
        $self->_move($m, @$keys);
    }
    # the destination first, so that it serves the slot before the
    # source starts redirecting there (as redis-cli does)
    $self->_ok($to, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $m->{to_id});
    $self->_ok($from, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $m->{to_id});
    for my $p (grep { $_ != $from && $_ != $to } $self->primaries) {
        $self->_ok($p, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $m->{to_id});
    }
    my $ok = $self->{t}->wait_for(sub {
        for my $p ($self->alive) {
            return 0 unless grep { $slot >= $_->[0] && $slot <= $_->[1] }
                $self->_slots_seen_by($p, $to);
        }
        return $self->_stable;
    }, $o{timeout} // 10, 0.05);
    die "MG::Cluster: slot $slot to $to: not agreed within "
        . ($o{timeout} // 10) . " s\n" . $self->describe unless $ok;
    delete $m->{paused};
    $m->{done} = 1;
    return $m;
}

sub _move {
    my ($self, $m, @keys) = @_;
    while (my @batch = splice @keys, 0, 100) {
        my $r = $self->cmd($m->{from}, 'MIGRATE', '127.0.0.1', $m->{to}, '',
                           0, 5000, 'REPLACE', 'KEYS', @batch);
        die "MG::Cluster: MIGRATE to $m->{to}: "
            . (ref $r ? $r->{error} : $r // $@) . "\n"
            unless defined $r && !ref $r && ($r eq 'OK' || $r eq 'NOKEY');
        $m->{moved} += @batch;
    }
}

# a command that must answer +OK
sub _ok {
    my ($self, $port, @cmd) = @_;
    my $r = $self->cmd($port, @cmd);
    return 1 if defined $r && !ref $r && $r eq 'OK';
    die "MG::Cluster: @cmd on $port: "
        . (ref $r ? $r->{error} : $r // $@) . "\n";
}

1;
