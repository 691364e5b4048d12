package MG::Test;

# Test harness for the model gateway nginx module, in the spirit of
# nginx-tests' Test::Nginx: a private server root, generated nginx.conf,
# nginx started/stopped/reloaded, forked mock HTTP(S) upstreams that record
# what they receive, a real redis-server, a raw-socket HTTP client with SSE
# support, a throw-away CA, and end-of-file checks of the error log.
#
# Environment:
#   MG_MODULE=path.so    load the module in %%TEST_GLOBALS%%
#   MG_ASAN=1            module built with ASan/UBSan: preload the runtimes
#   MG_TEST_DEBUG=1      error_log level debug (default info)
#   MG_TEST_LOGLEVEL=lvl explicit error_log level (overrides the above)
#   MG_TEST_LEAVE=1      keep the server root directory after the test
#   MG_TEST_NGINX=path   nginx binary (default /usr/sbin/nginx)
#   MG_TEST_MOCK_LIFETIME=sec  maximum lifetime of a mock (default 120)
#
# Everything a test starts runs in its own process group and is killed at
# the end of the test (done_testing, END block, or by a watchdog process if
# the test process itself is killed).
#
# The harness object's methods live in modules by concern; MG::Test is the
# core and inherits the others' methods:
#   MG::Test    server root, ports, nginx.conf, nginx run/stop/reload,
#               logs, done_testing's error.log checks
#   MG::Proc    process groups, spawn/capture, the watchdog
#   MG::Mock    forked mock HTTP(S) providers and what they recorded
#   MG::Client  raw-socket HTTP client, streams, SSE, the chat helper
#   MG::Redis   redis-server, redis_cmd, the DNS responder
#   MG::CA      the test CA and its certificates
#   MG::IO      socket I/O, the HTTP body decoder, file helpers
# The package functions test files call as MG::Test::name (sse_data,
# openai_completion, _read_file, ...) are imported here under that name.
#
# Synopsis (see t/000-harness.t for a complete example):
#
#   use Test::More;
#   use MG::Test;
#   my $t = MG::Test->new;
#   $t->mock('up', handler => sub {
#       my $req = shift;                 # {n, conn, method, path, headers, body..}
#       return { chunks => [MG::Test::openai_stream_events()],
#                headers => [['Content-Type', 'text/event-stream']],
#                hold_after => 1, release => 'go' };
#   });
#   $t->write_conf(<<'EOF');
#   %%TEST_GLOBALS%%
#   events {}
#   http {
#       %%TEST_GLOBALS_HTTP%%
#       server {
#           listen 127.0.0.1:%%PORT_gw%%;
#           location / { proxy_pass http://127.0.0.1:%%PORT_up%%; }
#       }
#   }
#   EOF
#   $t->run;
#   my $s = $t->stream(method => 'POST', path => '/v1/chat/completions',
#                      json => { model => 'm', stream => JSON::PP::true });
#   my $first = $s->next_event(5);
#   $t->release('go');
#   my @data = MG::Test::sse_data($first . $s->rest(5));
#   is($t->mock_requests('up')->[0]{path}, '/v1/chat/completions');
#   $t->done_testing;                    # + no alerts / crashes / sanitizer

use strict;
use warnings;

use Test::More ();
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Path qw(remove_tree);
use File::Spec;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

use MG::IO qw(_bytes _read_file _read_from _write_file _take);
use MG::Proc qw(_stop_pid _capture _wait_status _install_signal_handlers);
use MG::CA;
use MG::Mock qw(default_handler openai_completion openai_stream_events);
use MG::Redis;
use MG::Client qw(sse_data sse_json _parse_response_head _body_decoder);

our @ISA = qw(MG::Proc MG::CA MG::Mock MG::Redis MG::Client);

our $VERSION = '0.1';

our $NGINX = $ENV{MG_TEST_NGINX} || '/usr/sbin/nginx';

our @INSTANCES;
my $INSTANCE_SEQ = 0;
my %USED_PORTS;

# `use MG::Test;` also imports Test::More's functions into the caller.
sub import {
    my $caller = caller;
    eval "package $caller; Test::More->import(); 1" or die $@;
}

###########################################################################
# construction, directory, ports

# MG::Test->new(%opt): creates the private server root (t/servroot-PID-N, or
# /tmp/mg-servroot-PID-N when t/ is not usable). No options are required.
sub new {
    my ($class, %opt) = @_;
    my $self = bless {
        opt     => \%opt,
        owner   => $$,
        ports   => {},
        mocks   => {},
        redis   => {},
        allow   => [],
        certs   => {},
        skip    => [],
        pgids   => {},
    }, $class;
    $self->{dir} = _make_dir();
    push @INSTANCES, $self;
    _install_signal_handlers();
    return $self;
}

sub _make_dir {
    $INSTANCE_SEQ++;
    my $tdir = abs_path(dirname(abs_path(__FILE__)) . '/../..');
    my $dir;
    if (defined $tdir && -d $tdir && -w $tdir && $tdir !~ /[\s;{}#'"\$]/) {
        $dir = "$tdir/servroot-$$-$INSTANCE_SEQ";
    } else {
        $dir = "/tmp/mg-servroot-$$-$INSTANCE_SEQ";
    }
    remove_tree($dir) if -e $dir;
    mkdir $dir or die "mkdir $dir: $!";
    chmod 0755, $dir;      # nginx workers run as nobody
    return $dir;
}

# $t->dir: the server root directory (absolute, no trailing slash).
sub dir { $_[0]{dir} }

# $t->port($name): a free TCP port on 127.0.0.1; the same name always gives
# the same port within this harness object.
sub port {
    my ($self, $name) = @_;
    $name = 'gw' unless defined $name;
    return $self->{ports}{$name} //= _free_port();
}

sub _free_port {
    my ($lo, $hi) = (20000, 45000);
    # prefer ports outside the kernel's ephemeral range, so an outgoing
    # connection cannot take the port between the probe and the bind
    my @ranges = ([$lo, $hi]);
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        my ($elo, $ehi) = split ' ', scalar <$fh>;
        if ($elo && $ehi) {
            my @r;
            push @r, [$lo, $elo - 1] if $elo - 1 - $lo >= 2000;
            push @r, [$ehi + 1, $hi] if $hi - $ehi - 1 >= 2000;
            @ranges = @r if @r;
        }
    }
    for (1 .. 1000) {
        my $r = $ranges[int rand @ranges];
        my $p = $r->[0] + int rand($r->[1] - $r->[0] + 1);
        next if $USED_PORTS{$p};
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
            LocalPort => $p, Proto => 'tcp', Listen => 1) or next;
        close $s;
        $USED_PORTS{$p} = 1;
        return $p;
    }
    die "MG::Test: no free port found\n";
}

###########################################################################
# configuration

sub _log_level {
    return $ENV{MG_TEST_LOGLEVEL} if $ENV{MG_TEST_LOGLEVEL};
    return $ENV{MG_TEST_DEBUG} ? 'debug' : 'info';
}

# $t->module_path: absolute path of $ENV{MG_MODULE}, or undef.
sub module_path {
    my $m = $ENV{MG_MODULE};
    return undef unless defined $m && length $m;
    return File::Spec->rel2abs($m);
}

# $t->has_module: true when MG_MODULE is set.
sub has_module { defined module_path() }

# $t->need_module: skip the whole test file unless MG_MODULE is set.
sub need_module {
    my $self = shift;
    return 1 if $self->has_module;
    Test::More::plan(skip_all => 'MG_MODULE is not set');
}

# $t->write_conf($text, %vars): writes DIR/nginx.conf after expanding
# %%TEST_GLOBALS%%, %%TEST_GLOBALS_HTTP%%, %%PORT_<name>%%, %%DIR%%, %%CA%%,
# %%MODULE%% and %%<KEY>%% for each KEY in %vars. Returns the path.
sub write_conf {
    my ($self, $text, %vars) = @_;
    my $dir = $self->{dir};
    my $mod = module_path();
    die "MG::Test: MG_MODULE=$mod does not exist\n" if $mod && !-f $mod;

    $text =~ s/%%TEST_GLOBALS%%/$self->_test_globals/ge;
    $text =~ s/%%TEST_GLOBALS_HTTP%%/$self->_test_globals_http/ge;
    $text =~ s/%%PORT_(\w+?)%%/$self->port($1)/ge;
    $text =~ s/%%DIR%%/$dir/g;
    $text =~ s/%%CA%%/$self->ca_path/ge;
    $text =~ s{%%MODULE%%}{$mod // ''}ge;
    for my $k (keys %vars) {
        $text =~ s/%%\Q$k\E%%/$vars{$k}/g;
    }
    if ($text =~ /(%%\w+%%)/) {
        die "MG::Test: unexpanded placeholder $1 in nginx.conf\n";
    }
    _write_file("$dir/nginx.conf", $text);
    $self->{conf_text} = $text;
    return "$dir/nginx.conf";
}

sub _test_globals {
    my $self = shift;
    my $dir = $self->{dir};
    my @l;
    my $mod = module_path();
    push @l, "load_module $mod;" if $mod;
    push @l, "daemon off;";
    push @l, "pid $dir/nginx.pid;";
    push @l, "error_log $dir/error.log " . _log_level() . ";";
    return join "\n", @l;
}

sub _test_globals_http {
    my $self = shift;
    my $dir = $self->{dir};
    return join "\n",
        "access_log $dir/access.log;",
        "client_body_temp_path $dir/client_body_temp;",
        "proxy_temp_path $dir/proxy_temp;",
        "fastcgi_temp_path $dir/fastcgi_temp;",
        "uwsgi_temp_path $dir/uwsgi_temp;",
        "scgi_temp_path $dir/scgi_temp;";
}

# $t->conf_path: DIR/nginx.conf
sub conf_path { "$_[0]{dir}/nginx.conf" }

###########################################################################
# nginx

sub _nginx_env {
    my %env;
    if ($ENV{MG_ASAN}) {
        my @libs;
        for my $lib ('libasan.so.8', 'libubsan.so.1') {
            chomp(my $p = `gcc -print-file-name=$lib 2>/dev/null` // '');
            die "MG::Test: MG_ASAN=1 but gcc cannot find $lib\n"
                unless $p && $p ne $lib && -e $p;
            push @libs, abs_path($p) // $p;
        }
        $env{LD_PRELOAD} = join ' ', @libs;
        $env{ASAN_OPTIONS} = $ENV{MG_ASAN_OPTIONS}
            || 'detect_leaks=0:abort_on_error=0';
        $env{UBSAN_OPTIONS} = $ENV{UBSAN_OPTIONS} || 'print_stacktrace=1';
    }
    return \%env;
}

sub _nginx_cmd {
    my $self = shift;
    my $dir = $self->{dir};
    return ($NGINX, '-p', "$dir/", '-c', "$dir/nginx.conf", @_);
}

# $t->run(%opt): starts nginx in the background (stderr to DIR/stderr.log)
# and waits (at most $opt{timeout}, default 10 s) until every
# `listen 127.0.0.1:PORT` of the config accepts connections and a worker
# process exists. Dies with the log tails if nginx fails to start.
sub run {
    my ($self, %opt) = @_;
    my $dir = $self->{dir};
    die "MG::Test: nginx already running\n" if $self->{nginx_pid};
    die "MG::Test: no nginx.conf written\n" unless -f "$dir/nginx.conf";
    my $conf = _read_file("$dir/nginx.conf");

    my $pid = $self->_spawn(
        cmd    => [$self->_nginx_cmd],
        out    => "$dir/stderr.log",
        env    => _nginx_env(),
    );
    $self->{nginx_pid} = $pid;

    my @ports = _listen_ports($conf);
    my $master = $conf !~ /^\s*master_process\s+off\s*;/m;
    my $deadline = time + ($opt{timeout} // 10);
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            my $st = $?;
            $self->_forget_pgid($pid);
            delete $self->{nginx_pid};
            die "MG::Test: nginx failed to start (" . _wait_status($st)
                . ")\n" . $self->_log_tails;
        }
        # listening sockets are checked in /proc/net/tcp rather than by
        # connecting, so that no stray connection shows up in the logs
        my $l = _tcp_listening();
        my $ok = !grep { !$l->{$_} } @ports;
        $ok &&= ($self->worker_pids > 0) if $master;
        return 1 if $ok;
        if (time > $deadline) {
            my $tails = $self->_log_tails;
            $self->stop(timeout => 2);
            die "MG::Test: nginx did not come up within the timeout "
                . "(ports @ports)\n$tails";
        }
        sleep 0.02;
    }
}

# ports with a socket in LISTEN state (this network namespace)
sub _tcp_listening {
    my %p;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        <$fh>;
        while (<$fh>) {
            my @f = split ' ';
            next unless @f > 3 && $f[3] eq '0A';
            $p{hex $1} = 1 if $f[1] =~ /:([0-9A-Fa-f]+)$/;
        }
        close $fh;
    }
    return \%p;
}

sub _listen_ports {
    my $conf = shift;
    $conf =~ s/#[^\n]*//g;
    my %p;
    while ($conf =~ /\blisten\s+([^;]+);/g) {
        my $args = $1;
        next if $args =~ /\budp\b/;
        my ($addr) = split ' ', $args;
        if ($addr =~ /^(?:127\.0\.0\.1|localhost|\*|0\.0\.0\.0):(\d+)$/
            || $addr =~ /^(\d+)$/)
        {
            $p{$1} = 1;
        }
    }
    return sort { $a <=> $b } keys %p;
}

# $t->is_running: true while the nginx master started by run() is alive.
sub is_running {
    my $self = shift;
    my $pid = $self->{nginx_pid} or return 0;
    if (waitpid($pid, WNOHANG) == $pid) {
        $self->{nginx_exit} = $?;
        $self->_forget_pgid($pid);
        delete $self->{nginx_pid};
        return 0;
    }
    return 1;
}

# $t->master_pid: pid of the running nginx master (undef if none).
sub master_pid { $_[0]{nginx_pid} }

# $t->worker_pids: pids of the current nginx worker processes (including
# ones shutting down after a reload; excluding cache manager/loader).
sub worker_pids {
    my $self = shift;
    my $m = $self->{nginx_pid} or return ();
    return grep {
        my $cl = _read_file("/proc/$_/cmdline", 1) // '';
        $cl !~ /cache (?:manager|loader)/;
    } _children_of($m);
}

sub _children_of {
    my $ppid = shift;
    my @r;
    opendir my $dh, '/proc' or return ();
    for my $p (readdir $dh) {
        next unless $p =~ /^\d+$/;
        my $st = _read_file("/proc/$p/stat", 1) // next;
        push @r, $p if $st =~ /\)\s+\S+\s+(\d+)/ && $1 == $ppid;
    }
    closedir $dh;
    return sort { $a <=> $b } @r;
}

# $t->stop(%opt): graceful stop (SIGQUIT); after $opt{timeout} (default 10 s)
# fast shutdown (SIGTERM), then SIGKILL of the process group. Returns the
# master's wait status (0 = clean exit), or undef if nginx was not running.
sub stop {
    my ($self, %opt) = @_;
    my $pid = $self->{nginx_pid} or return undef;
    my $timeout = $opt{timeout} // 10;
    my $st = _stop_pid($pid, [QUIT => $timeout], [TERM => 3], [KILL => 2]);
    kill 'KILL', -$pid;              # leftovers of an abnormal exit
    $self->_forget_pgid($pid);
    delete $self->{nginx_pid};
    $self->{nginx_exit} = $st;
    return $st;
}

# $t->reload(%opt): SIGHUP; waits (at most $opt{timeout}, default 10 s)
# until a worker pid that did not exist before appears; with
# $opt{wait_old} also until the old workers have exited. Returns 1 on
# success, 0 on timeout or when the new configuration was rejected
# (an [emerg] appears in error.log).
sub reload {
    my ($self, %opt) = @_;
    my $pid = $self->{nginx_pid} or die "MG::Test: nginx is not running\n";
    my %old = map { $_ => 1 } $self->worker_pids;
    my $log = "$self->{dir}/error.log";
    my $off = -s $log // 0;
    kill 'HUP', $pid;
    my $deadline = time + ($opt{timeout} // 10);
    while (time < $deadline) {
        my @new = grep { !$old{$_} } $self->worker_pids;
        if (@new) {
            return 1 unless $opt{wait_old};
            return 1 unless grep { kill 0, $_ } keys %old;
        } elsif (_read_from($log, $off) =~ /\[emerg\]/) {
            return 0;
        }
        sleep 0.02;
    }
    return 0;
}

# $t->nginx_t: runs `nginx -t` on the current nginx.conf; returns
# ($exit_code, $output). [emerg] lines it appends to error.log while nginx
# is not running are excluded from the done_testing checks.
sub nginx_t {
    my $self = shift;
    my $log = "$self->{dir}/error.log";
    my $off = -s $log // 0;
    my ($rc, $out) = _capture([$self->_nginx_cmd('-t')], _nginx_env());
    my $end = -s $log // 0;
    push @{$self->{skip}}, [$off, $end]
        if $end > $off && !$self->{nginx_pid};
    return ($rc, $out);
}

###########################################################################
# logs

# $t->error_log: content of DIR/error.log ('' if absent).
sub error_log { _read_file("$_[0]{dir}/error.log", 1) // '' }

# $t->stderr_log: content of DIR/stderr.log ('' if absent).
sub stderr_log { _read_file("$_[0]{dir}/stderr.log", 1) // '' }

# $t->grep_log($re): lines of error.log matching $re.
sub grep_log {
    my ($self, $re) = @_;
    return grep { $_ =~ $re } split /\n/, $self->error_log;
}

# $t->wait_log($re, $timeout): polls error.log until a line matches
# (default timeout 5 s); returns the matching lines or () on timeout.
sub wait_log {
    my ($self, $re, $timeout) = @_;
    my @m;
    $self->wait_for(sub { @m = $self->grep_log($re) }, $timeout // 5);
    return @m;
}

# $t->allow_log($re): alert/emerg/crash lines matching $re do not fail the
# done_testing checks.
sub allow_log {
    my ($self, $re) = @_;
    push @{$self->{allow}}, $re;
}

sub _checked_log_lines {
    my $self = shift;
    my $log = $self->error_log;
    for my $r (reverse @{$self->{skip}}) {
        my ($from, $to) = @$r;
        next if $from >= length $log;
        substr($log, $from, $to - $from) = '';
    }
    return split /\n/, $log;
}

sub _log_tails {
    my ($self, $n) = @_;
    $n //= 30;
    my $s = '';
    for my $f ('error.log', 'stderr.log') {
        my $c = _read_file("$self->{dir}/$f", 1);
        next unless defined $c && length $c;
        my @l = split /\n/, $c;
        @l = @l[-$n .. -1] if @l > $n;
        $s .= "--- $f (tail) ---\n" . join("\n", @l) . "\n";
    }
    return $s;
}

# $t->wait_for($code, $timeout, $interval): polls $code (every $interval,
# default 0.02 s) until it returns true or $timeout (default 5 s) passes;
# returns the last result.
sub wait_for {
    my ($self, $code, $timeout, $interval) = @_;
    my $deadline = time + ($timeout // 5);
    while (1) {
        my $r = $code->();
        return $r if $r || time >= $deadline;
        sleep($interval // 0.02);
    }
}

# $t->cleanup: stops everything this object started and removes the server
# root (unless MG_TEST_LEAVE=1). Called automatically at the end.
sub cleanup {
    my $self = shift;
    return if $self->{cleaned} || $self->{owner} != $$;
    $self->{cleaned} = 1;
    local ($?, $!, $@);
    if (!$self->{tails_shown} && -e "$self->{dir}/error.log"
        && !Test::More->builder->is_passing)
    {
        Test::More::diag("MG::Test: server root $self->{dir}\n"
            . $self->_log_tails(40));
    }
    $self->close_streams;
    $self->stop(timeout => 3) if $self->{nginx_pid};
    $self->stop_mock($_) for keys %{$self->{mocks}};
    $self->stop_redis($_) for keys %{$self->{redis}};
    for my $g (keys %{$self->{pgids}}) {
        kill 'KILL', -$g;
        waitpid($g, WNOHANG);
        $self->_forget_pgid($g);
    }
    if ($ENV{MG_TEST_LEAVE}) {
        Test::More::diag("MG::Test: left $self->{dir}");
    } else {
        remove_tree($self->{dir});
    }
}

sub DESTROY { $_[0]->cleanup if ${^GLOBAL_PHASE} ne 'DESTRUCT' }

END {
    if (@INSTANCES && $INSTANCES[0]{owner} == $$) {
        local ($?, $!, $@);
        $_->cleanup for @INSTANCES;
        if ($MG::Proc::WD_W) {
            print {$MG::Proc::WD_W} "done\n";
            close $MG::Proc::WD_W;
            undef $MG::Proc::WD_W;
            waitpid($MG::Proc::WD_PID, 0) if $MG::Proc::WD_PID;
        }
    }
}

###########################################################################
# done_testing

# $t->done_testing(@args): stops nginx (graceful), the mocks and redis;
# adds the tests "no alerts", "no crashed workers", "no sanitizer reports";
# then calls Test::More::done_testing(@args).
sub done_testing {
    my ($self, @args) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $self->close_streams;
    $self->stop;
    $self->stop_mock($_) for keys %{$self->{mocks}};
    $self->stop_redis($_) for keys %{$self->{redis}};

    my @lines = $self->_checked_log_lines;
    my $allowed = sub {
        my $l = shift;
        for my $re (@{$self->{allow}}) { return 1 if $l =~ $re }
        return 0;
    };
    my @alerts = grep { /\[(?:alert|emerg)\]/ && !$allowed->($_) } @lines;
    Test::More::ok(!@alerts, 'no alerts')
        or Test::More::diag(join "\n", @alerts[0 .. ($#alerts > 20 ? 20 : $#alerts)]);

    my @crash = grep { /exited on signal/ && !$allowed->($_) } @lines;
    Test::More::ok(!@crash, 'no crashed workers')
        or Test::More::diag(join "\n", @crash);

    my @san = grep { /Sanitizer|runtime error:/ }
        @lines, split /\n/, $self->stderr_log;
    Test::More::ok(!@san, 'no sanitizer reports')
        or Test::More::diag(join "\n", @san[0 .. ($#san > 40 ? 40 : $#san)]);

    unless (Test::More->builder->is_passing) {
        $self->{tails_shown} = 1;
        Test::More::diag("MG::Test: server root $self->{dir}\n"
            . $self->_log_tails(40));
    }
    Test::More::done_testing(@args);
}

1;
