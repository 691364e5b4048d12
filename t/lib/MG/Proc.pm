package MG::Proc;

# Process management of the test harness (see MG::Test). Everything a test
# starts (nginx, mocks, redis-server, helper scripts) runs in its own
# process group, remembered here and killed at the end of the test, or by
# a watchdog process if the test process itself is killed.

use strict;
use warnings;

use Test::More ();
use File::Path qw(remove_tree);
use IO::Handle;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use Exporter 'import';

our @EXPORT_OK = qw(_stop_pid _capture _wait_status _flush_all
                    _start_watchdog _close_fds _install_signal_handlers);

our ($WD_PID, $WD_W);                           # watchdog process and pipe

###########################################################################
# process management

# forks and execs $o{cmd} in a new process group, stdout+stderr appended to
# $o{out}, extra environment $o{env}; returns the pid.
sub _spawn {
    my ($self, %o) = @_;
    _start_watchdog();
    _flush_all();
    my $pid = fork;
    die "MG::Test: fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        eval {
            POSIX::setpgid(0, 0);
            close $WD_W if $WD_W;
            open STDIN, '<', '/dev/null';
            open STDOUT, '>>', $o{out} or die "open $o{out}: $!";
            open STDERR, '>&', \*STDOUT;
            $SIG{$_} = 'DEFAULT' for qw(INT TERM PIPE HUP QUIT CHLD ALRM);
            %ENV = (%ENV, %{$o{env} || {}});
            exec { $o{cmd}[0] } @{$o{cmd}};
        };
        POSIX::_exit(127);
    }
    POSIX::setpgid($pid, $pid);
    $self->_remember_pgid($pid);
    return $pid;
}

# runs a command to completion; returns ($exit_code, $stdout_and_stderr).
sub _capture {
    my ($cmd, $env) = @_;
    _flush_all();
    my $pid = open(my $fh, '-|');
    die "MG::Test: fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        eval {
            close $WD_W if $WD_W;
            open STDIN, '<', '/dev/null';
            open STDERR, '>&', \*STDOUT;
            %ENV = (%ENV, %{$env || {}});
            exec { $cmd->[0] } @$cmd;
        };
        syswrite STDOUT, "exec $cmd->[0]: $!\n";
        POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my $st = $?;
    return (($st & 127) ? 128 + ($st & 127) : $st >> 8, $out);
}

sub _wait_status {
    my $st = shift;
    return 'unknown status' unless defined $st;
    return 'killed by signal ' . ($st & 127) if $st & 127;
    return 'exit code ' . ($st >> 8);
}

sub _flush_all {
    STDOUT->flush;
    STDERR->flush;
}

# A watchdog process kills every process group we started if the test
# process disappears without cleaning up (e.g. SIGKILL).
sub _start_watchdog {
    return if $WD_PID && $WD_W;
    pipe(my $r, my $w) or return;
    _flush_all();
    my $pid = fork;
    return unless defined $pid;
    if ($pid == 0) {
        close $w;
        $SIG{$_} = 'IGNORE' for qw(INT QUIT HUP TERM PIPE);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        _close_fds(fileno $r);
        my (%g, %d);
        while (defined(my $l = <$r>)) {
            chomp $l;
            POSIX::_exit(0) if $l eq 'done';
            if ($l =~ /^\+(\d+)$/) { $g{$1} = 1 }
            elsif ($l =~ /^-(\d+)$/) { delete $g{$1} }
            elsif ($l =~ /^dir (.+)$/) { $d{$1} = 1 }
        }
        kill 'TERM', -$_ for keys %g;
        sleep 1;
        kill 'KILL', -$_ for keys %g;
        remove_tree($_) for $ENV{MG_TEST_LEAVE} ? () : keys %d;
        POSIX::_exit(0);
    }
    close $r;
    my $old = select $w; $| = 1; select $old;
    ($WD_PID, $WD_W) = ($pid, $w);
}

# In a forked child that does not exec: points every socket/pipe file
# descriptor above 2 except @keep at /dev/null, so that the child does not
# keep e.g. a client socket of the test open after the test closed it, nor
# prove's TAP pipe. (dup2 rather than close: Perl's stale handles still
# count the descriptors as theirs, and a reused number would be mishandled.)
sub _close_fds {
    my %keep = map { $_ => 1 } 0, 1, 2, @_;
    open my $null, '+<', '/dev/null' or return;
    $keep{fileno $null} = 1;
    opendir my $dh, '/proc/self/fd' or return;
    my @fds = grep { /^\d+$/ && !$keep{$_} } readdir $dh;
    closedir $dh;
    for my $fd (@fds) {
        my $l = readlink("/proc/self/fd/$fd") // next;
        POSIX::dup2(fileno $null, $fd) if $l =~ /^(?:socket|pipe):/;
    }
    close $null;
}

sub _remember_pgid {
    my ($self, $pgid) = @_;
    print {$WD_W} "dir $self->{dir}\n" if $WD_W && !$self->{wd_dir}++;
    $self->{pgids}{$pgid} = 1;
    print {$WD_W} "+$pgid\n" if $WD_W;
}

sub _forget_pgid {
    my ($self, $pgid) = @_;
    delete $self->{pgids}{$pgid};
    print {$WD_W} "-$pgid\n" if $WD_W;
}

my $SIGNALS_SET;
sub _install_signal_handlers {
    return if $SIGNALS_SET++;
    for my $s (qw(INT TERM HUP)) {
        next if defined $SIG{$s} && $SIG{$s} ne 'DEFAULT';
        $SIG{$s} = sub { Test::More::diag("MG::Test: caught SIG$s"); exit 128 };
    }
    $SIG{PIPE} = 'IGNORE' if !defined $SIG{PIPE} || $SIG{PIPE} eq 'DEFAULT';
}

# Sends each signal in turn, waiting up to its timeout for $pid to exit.
sub _stop_pid {
    my ($pid, @steps) = @_;
    for my $step (@steps) {
        my ($sig, $wait) = @$step;
        if ($sig eq 'KILL') { kill 'KILL', -$pid; }
        kill $sig, $pid;
        my $deadline = time + $wait;
        while (1) {
            my $r = waitpid($pid, WNOHANG);
            return $? if $r == $pid;
            return undef if $r < 0;          # not our child any more
            last if time > $deadline;
            sleep 0.01;
        }
    }
    return undef;
}

1;
