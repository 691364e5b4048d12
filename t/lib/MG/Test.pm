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
use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Fcntl qw(:flock O_RDWR O_CREAT);
use File::Basename qw(dirname);
use File::Path qw(remove_tree make_path);
use File::Spec;
use IO::Handle;
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Scalar::Util ();
use Time::HiRes qw(time sleep);

our $VERSION = '0.1';

our $NGINX = $ENV{MG_TEST_NGINX} || '/usr/sbin/nginx';

my $JSON = JSON::PP->new->ascii->canonical;   # raw bytes round-trip
my @INSTANCES;
my $INSTANCE_SEQ = 0;
my %USED_PORTS;
our ($WD_PID, $WD_W);                           # watchdog process and pipe

my %REASON = (
    100 => 'Continue', 200 => 'OK', 201 => 'Created', 202 => 'Accepted',
    204 => 'No Content', 206 => 'Partial Content', 301 => 'Moved Permanently',
    302 => 'Found', 304 => 'Not Modified', 400 => 'Bad Request',
    401 => 'Unauthorized', 403 => 'Forbidden', 404 => 'Not Found',
    405 => 'Method Not Allowed', 408 => 'Request Timeout',
    409 => 'Conflict', 413 => 'Payload Too Large', 415 => 'Unsupported Media Type',
    422 => 'Unprocessable Entity', 429 => 'Too Many Requests',
    500 => 'Internal Server Error', 501 => 'Not Implemented',
    502 => 'Bad Gateway', 503 => 'Service Unavailable',
    504 => 'Gateway Timeout', 529 => 'Overloaded',
);

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

###########################################################################
# TLS

sub _openssl {
    my ($self, @args) = @_;
    my ($rc, $out) = _capture(['openssl', @args]);
    die "MG::Test: openssl @args failed ($rc):\n$out" if $rc;
    return $out;
}

sub _genkey {
    my ($self, $path, $type) = @_;
    if (($type // 'ec') eq 'rsa') {
        $self->_openssl('genpkey', '-algorithm', 'RSA',
            '-pkeyopt', 'rsa_keygen_bits:2048', '-out', $path);
    } else {
        $self->_openssl('genpkey', '-algorithm', 'EC',
            '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', $path);
    }
    chmod 0644, $path;   # test keys; workers need not read them, but harmless
}

sub _leaf_cnf {
    my ($self, $path, $host) = @_;
    my $san = $host =~ /^[\d.]+$/ || $host =~ /:/ ? "IP:$host" : "DNS:$host";
    _write_file($path, <<"EOF");
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $host
[v3_leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = $san
EOF
}

# $t->make_ca(%opt): creates the test CA once (EC P-256, or RSA 2048 with
# type => 'rsa'); returns ($ca_cert_path, $ca_key_path).
sub make_ca {
    my ($self, %opt) = @_;
    return @{$self->{ca}} if $self->{ca};
    my $d = "$self->{dir}/ca";
    make_path($d);
    chmod 0755, $d;
    $self->_genkey("$d/ca.key", $opt{type});
    _write_file("$d/ca.cnf", <<"EOF");
[req]
distinguished_name = dn
prompt = no
[dn]
CN = MG Test CA $$
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
EOF
    $self->_openssl('req', '-x509', '-new', '-config', "$d/ca.cnf",
        '-extensions', 'v3_ca', '-key', "$d/ca.key", '-sha256',
        '-days', '30', '-out', "$d/ca.crt");
    $self->{ca} = ["$d/ca.crt", "$d/ca.key"];
    return @{$self->{ca}};
}

# $t->ca_path: path of the test CA certificate (creating the CA if needed).
sub ca_path { ($_[0]->make_ca)[0] }

# $t->cert($hostname, %opt): ($cert_path, $key_path) of a certificate for
# $hostname (subjectAltName DNS:$hostname, or IP: for an address) signed by
# the test CA. type => 'rsa' for RSA 2048 (default EC P-256). Cached.
sub cert {
    my ($self, $host, %opt) = @_;
    my $type = $opt{type} // 'ec';
    my $key = "ca:$host:$type";
    return @{$self->{certs}{$key}} if $self->{certs}{$key};
    my ($cacrt, $cakey) = $self->make_ca;
    my $d = "$self->{dir}/ca";
    (my $f = "$host-$type") =~ s/[^\w.-]/_/g;
    $self->_genkey("$d/$f.key", $type);
    $self->_leaf_cnf("$d/$f.cnf", $host);
    $self->_openssl('req', '-new', '-config', "$d/$f.cnf",
        '-key', "$d/$f.key", '-out', "$d/$f.csr");
    $self->_openssl('x509', '-req', '-in', "$d/$f.csr", '-CA', $cacrt,
        '-CAkey', $cakey, '-set_serial', sprintf('0x%x%06x', time, rand 1e6),
        '-days', '30', '-sha256', '-extfile', "$d/$f.cnf",
        '-extensions', 'v3_leaf', '-out', "$d/$f.crt");
    $self->{certs}{$key} = ["$d/$f.crt", "$d/$f.key"];
    return @{$self->{certs}{$key}};
}

# $t->rogue_cert($hostname, %opt): ($cert_path, $key_path) of a self-signed
# certificate for $hostname that is NOT issued by the test CA.
sub rogue_cert {
    my ($self, $host, %opt) = @_;
    my $type = $opt{type} // 'ec';
    my $key = "rogue:$host:$type";
    return @{$self->{certs}{$key}} if $self->{certs}{$key};
    my $d = "$self->{dir}/ca";
    make_path($d);
    chmod 0755, $d;
    (my $f = "rogue-$host-$type") =~ s/[^\w.-]/_/g;
    $self->_genkey("$d/$f.key", $type);
    $self->_leaf_cnf("$d/$f.cnf", $host);
    $self->_openssl('req', '-x509', '-new', '-config', "$d/$f.cnf",
        '-extensions', 'v3_leaf', '-key', "$d/$f.key", '-sha256',
        '-days', '30', '-out', "$d/$f.crt");
    $self->{certs}{$key} = ["$d/$f.crt", "$d/$f.key"];
    return @{$self->{certs}{$key}};
}

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

# $t->close_streams: closes the client side of every stream() still open
# (done by done_testing, so that a graceful stop does not wait for them).
sub close_streams {
    my $self = shift;
    $_ && $_->close for @{$self->{streams} || []};
    $self->{streams} = [];
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
        if ($WD_W) {
            print {$WD_W} "done\n";
            close $WD_W;
            undef $WD_W;
            waitpid($WD_PID, 0) if $WD_PID;
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

###########################################################################
# mocks

# $t->mock($name, %opt): starts a mock HTTP/1.1 server on
# 127.0.0.1:port($name) and returns the port. Options:
#   handler  => sub { my $req = shift; return { ...spec... } }
#               (runs in a forked child: it cannot change the test's state)
#   tls      => [$cert, $key]        serve https (SNI recorded in {sni})
#   lifetime => $sec                 hard limit (default 120)
# $req: {n, conn, conn_req, method, path, version, headers, header_list,
# body, sni}. Response spec keys: status, headers ([[n,v],..] or {n=>v}),
# body | chunks => [..] (chunked, one syswrite per chunk, empty elements
# skipped) | raw_pieces => [..] (verbatim, one syswrite each,
# piece_delay (default 0.02 s) between; the connection is closed afterwards
# unless keepalive => 1), chunk_delay => $sec, hold_after => $k with
# release => $file (relative to DIR; wait max hold_timeout, default 20 s),
# close_after => $k, delay => $sec, no_response => 1, close => 1,
# trailers => [[n,v],..].
# Options addr => '127.0.0.2' and port => N listen elsewhere than
# 127.0.0.1:port($name) (two mocks on one port, different addresses).
# Log records: requests as above; events {event => accept|closed|eof|
# hold_timeout|handler_error|bad_request|tls_error, conn => N, ...}.
sub mock {
    my ($self, $name, %opt) = @_;
    die "MG::Test: bad mock name '$name'\n" unless $name =~ /^\w+$/;
    die "MG::Test: mock $name already running\n" if $self->{mocks}{$name};
    my $port = $opt{port} // $self->port($name);
    $self->{ports}{$name} //= $port;
    my $dir = $self->{dir};
    my $ctx = {
        name     => $name,
        dir      => $dir,
        log      => "$dir/mock-$name.log",
        seq      => "$dir/mock-$name.seq",
        handler  => $opt{handler} || \&default_handler,
        tls      => $opt{tls},
        lifetime => $opt{lifetime} // $ENV{MG_TEST_MOCK_LIFETIME} // 120,
    };
    _write_file($ctx->{log}, '');
    _write_file($ctx->{seq}, "0\n");
    if ($ctx->{tls}) {
        require IO::Socket::SSL;
        die "MG::Test: tls => [cert, key] expected\n"
            unless ref $ctx->{tls} eq 'ARRAY' && -f $ctx->{tls}[0]
                && -f $ctx->{tls}[1];
    }
    my $lsn = IO::Socket::INET->new(LocalAddr => $opt{addr} // '127.0.0.1',
        LocalPort => $port, Proto => 'tcp', Listen => 128, ReuseAddr => 1)
        or die "MG::Test: mock $name cannot listen on $port: $!\n";

    _start_watchdog();
    _flush_all();
    my $pid = fork;
    die "MG::Test: fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        eval {
            POSIX::setpgid(0, 0);
            close $WD_W if $WD_W;
            @INSTANCES = ();
            open STDIN, '<', '/dev/null';
            open STDOUT, '>', '/dev/null';
            open STDERR, '>>', "$dir/mock-$name.err";
            _close_fds(fileno $lsn);
            $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP QUIT ALRM CHLD);
            $SIG{PIPE} = 'IGNORE';
            alarm($ctx->{lifetime});
            _mock_main($ctx, $lsn);
        };
        print STDERR "mock $name: $@" if $@;
        POSIX::_exit(0);
    }
    POSIX::setpgid($pid, $pid);
    close $lsn;
    $self->_remember_pgid($pid);
    $self->{mocks}{$name} = { pid => $pid, port => $port };
    return $port;
}

# $t->stop_mock($name): stops a mock (its whole process group); its log
# stays readable.
sub stop_mock {
    my ($self, $name) = @_;
    my $m = delete $self->{mocks}{$name} or return;
    kill 'TERM', -$m->{pid};
    _stop_pid($m->{pid}, [TERM => 2], [KILL => 2]);
    kill 'KILL', -$m->{pid};
    $self->_forget_pgid($m->{pid});
}

# $t->release($file): creates DIR/$file (or $file if absolute), releasing
# mocks holding on it.
sub release {
    my ($self, $file) = @_;
    $file = "$self->{dir}/$file" unless $file =~ m{^/};
    _write_file($file, "released\n");
}

sub _mock_records {
    my ($self, $name) = @_;
    my $path = "$self->{dir}/mock-$name.log";
    open my $fh, '<', $path or return [];
    flock $fh, LOCK_SH;
    my @r;
    while (my $l = <$fh>) {
        next unless $l =~ /\n\z/;
        my $rec = eval { $JSON->decode($l) } or next;
        push @r, $rec;
    }
    close $fh;
    return \@r;
}

# $t->mock_requests($name): arrayref of the recorded requests, by n.
sub mock_requests {
    my ($self, $name) = @_;
    return [sort { $a->{n} <=> $b->{n} }
        grep { !exists $_->{event} } @{$self->_mock_records($name)}];
}

# $t->mock_events($name): arrayref of the recorded events (in log order).
sub mock_events {
    my ($self, $name) = @_;
    return [grep { exists $_->{event} } @{$self->_mock_records($name)}];
}

# $t->mock_connections($name): number of connections the mock accepted.
sub mock_connections {
    my ($self, $name) = @_;
    return scalar grep { $_->{event} eq 'accept' } @{$self->mock_events($name)};
}

# $t->wait_mock_event($name, $event, $timeout, %match): polls until an event
# named $event (with keys equal to %match) is recorded (default 5 s);
# returns the event hashref or undef.
sub wait_mock_event {
    my ($self, $name, $event, $timeout, %match) = @_;
    my $found;
    $self->wait_for(sub {
        for my $e (@{$self->mock_events($name)}) {
            next unless $e->{event} eq $event;
            next if grep { ($e->{$_} // '') ne $match{$_} } keys %match;
            return $found = $e;
        }
        return;
    }, $timeout // 5);
    return $found;
}

# $t->wait_mock_requests($name, $count, $timeout): polls until the mock has
# recorded at least $count requests (default 5 s); returns mock_requests.
sub wait_mock_requests {
    my ($self, $name, $count, $timeout) = @_;
    my $r;
    $self->wait_for(sub { @{$r = $self->mock_requests($name)} >= $count },
        $timeout // 5);
    return $r;
}

# MG::Test::default_handler($req): the mocks' default response spec: 200
# with a small OpenAI chat.completion (model echoed from the request body).
sub default_handler {
    my $req = shift;
    my $model = 'mock-model';
    if (($req->{body} // '') =~ /^\s*\{/) {
        my $j = eval { JSON::PP::decode_json($req->{body}) };
        $model = $j->{model} if ref $j eq 'HASH' && defined $j->{model}
            && !ref $j->{model};
    }
    return {
        status  => 200,
        headers => [['Content-Type', 'application/json']],
        body    => openai_completion(model => $model,
            id => "chatcmpl-mock-$req->{n}"),
    };
}

# MG::Test::openai_completion(%o): JSON text of a non-streamed OpenAI
# chat.completion (content, model, id, prompt_tokens, completion_tokens,
# finish_reason).
sub openai_completion {
    my %o = @_;
    my ($pt, $ct) = ($o{prompt_tokens} // 5, $o{completion_tokens} // 3);
    return JSON::PP->new->utf8->canonical->encode({
        id      => $o{id} // 'chatcmpl-mock',
        object  => 'chat.completion',
        created => $o{created} // 1700000000,
        model   => $o{model} // 'mock-model',
        choices => [{
            index         => 0,
            message       => { role => 'assistant',
                               content => $o{content} // 'Hello from mock' },
            finish_reason => $o{finish_reason} // 'stop',
        }],
        usage => { prompt_tokens => $pt, completion_tokens => $ct,
                   total_tokens => $pt + $ct },
    });
}

# MG::Test::openai_stream_events(%o): list of SSE event texts ("data: ...\n\n")
# of a streamed chat.completion.chunk sequence: role, one event per element
# of $o{pieces} (default ['Hello', ' world']), finish (with usage when
# $o{usage}), then "data: [DONE]".
sub openai_stream_events {
    my %o = @_;
    my $j = JSON::PP->new->utf8->canonical;
    my %base = (id => $o{id} // 'chatcmpl-mock', object => 'chat.completion.chunk',
        created => $o{created} // 1700000000, model => $o{model} // 'mock-model');
    my @ev;
    push @ev, { %base, choices => [{ index => 0,
        delta => { role => 'assistant', content => '' }, finish_reason => undef }] };
    for my $p (@{$o{pieces} // ['Hello', ' world']}) {
        push @ev, { %base, choices => [{ index => 0,
            delta => { content => $p }, finish_reason => undef }] };
    }
    my $fin = { %base, choices => [{ index => 0, delta => {},
        finish_reason => $o{finish_reason} // 'stop' }] };
    if ($o{usage}) {
        my ($pt, $ct) = ($o{prompt_tokens} // 5, $o{completion_tokens} // 3);
        $fin->{usage} = { prompt_tokens => $pt, completion_tokens => $ct,
            total_tokens => $pt + $ct };
    }
    push @ev, $fin;
    return ((map { 'data: ' . $j->encode($_) . "\n\n" } @ev), "data: [DONE]\n\n");
}

sub _mock_log {
    my ($ctx, $rec, $assign_n) = @_;
    open my $fh, '>>', $ctx->{log} or return;
    flock $fh, LOCK_EX;
    if ($assign_n) {
        sysopen my $sf, $ctx->{seq}, O_RDWR | O_CREAT or die "seq: $!";
        my $n = (<$sf> // 0) + 1;
        seek $sf, 0, 0;
        truncate $sf, 0;
        print $sf "$n\n";
        close $sf;
        $rec->{n} = $n;
    }
    print $fh $JSON->encode($rec) . "\n";
    close $fh;
    return $rec->{n};
}

sub _mock_main {
    my ($ctx, $lsn) = @_;
    my $ppid = getppid;
    my $deadline = time + $ctx->{lifetime};
    my $sel = IO::Select->new($lsn);
    my $conn = 0;
    my %kids;
    # on TERM/ALRM: stop and reap the connection children (an orphaned
    # zombie would otherwise be left to init, which may not reap it here)
    my $quit = sub {
        kill 'TERM', keys %kids;
        my $until = time + 1;
        while (%kids && time < $until) {
            my $p = waitpid(-1, WNOHANG);
            if ($p > 0) { delete $kids{$p} } else { sleep 0.01 }
        }
        kill 'KILL', keys %kids;
        waitpid($_, 0) for keys %kids;
        POSIX::_exit(0);
    };
    $SIG{TERM} = $SIG{ALRM} = $SIG{INT} = $quit;
    while (1) {
        while ((my $p = waitpid(-1, WNOHANG)) > 0) { delete $kids{$p} }
        last if getppid() != $ppid;
        next unless $sel->can_read(0.2);
        my $c = $lsn->accept or next;
        $conn++;
        _mock_log($ctx, { event => 'accept', conn => $conn });
        my $pid = fork;
        if (!defined $pid) { close $c; next }
        if ($pid == 0) {
            close $lsn;
            $SIG{TERM} = $SIG{ALRM} = $SIG{INT} = 'DEFAULT';
            alarm(int($deadline - time) + 1);
            eval { _mock_conn($ctx, $c, $conn) };
            print STDERR "mock $ctx->{name} conn $conn: $@" if $@;
            POSIX::_exit(0);
        }
        $kids{$pid} = 1;
        close $c;
    }
    $quit->();
}

sub _mock_conn {
    my ($ctx, $sock, $conn) = @_;
    my $sni;
    if ($ctx->{tls}) {
        my $ok = IO::Socket::SSL->start_SSL($sock,
            SSL_server    => 1,
            SSL_cert_file => $ctx->{tls}[0],
            SSL_key_file  => $ctx->{tls}[1],
            Timeout       => 10,
        );
        unless ($ok) {
            _mock_log($ctx, { event => 'tls_error', conn => $conn,
                error => IO::Socket::SSL::errstr() });
            close $sock;
            return;
        }
        $sni = $sock->get_servername;
    }
    my $io = MG::Test::IO->new($sock);
    my $k = 0;
    while (1) {
        my $req = _mock_read_request($io, 60);
        if (!$req) {
            _mock_log($ctx, { event => 'eof', conn => $conn, requests => $k });
            last;
        }
        if ($req->{error}) {
            _mock_log($ctx, { event => 'bad_request', conn => $conn,
                error => $req->{error} });
            last if $req->{error} eq 'timeout';
            $io->write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                . "Connection: close\r\n\r\n");
            last;
        }
        $k++;
        my %r = (%$req, conn => $conn, conn_req => $k, sni => $sni);
        _mock_log($ctx, \%r, 1);
        my $spec = eval { $ctx->{handler}->({%r}) };
        if ($@) {
            my $err = "$@";
            _mock_log($ctx, { event => 'handler_error', conn => $conn,
                req => $r{n}, error => $err });
            $spec = { status => 500, body => "mock handler error: $err" };
        }
        $spec = default_handler(\%r) unless ref $spec eq 'HASH';
        my $keep = _mock_respond($ctx, $io, \%r, $spec);
        last unless $keep;
    }
    $io->close_gracefully;
}

# reads one request; undef on clean EOF before any byte
sub _mock_read_request {
    my ($io, $timeout) = @_;
    my $deadline = time + $timeout;
    while (1) {
        $io->{buf} =~ s/\A(?:\r?\n)+//;
        last if $io->{buf} =~ /\r?\n\r?\n/;
        return { error => 'header too large' } if length $io->{buf} > 65536;
        my $r = $io->fill($deadline - time);
        if (!defined $r) { return { error => 'timeout' } }
        if ($r == 0) {
            return undef unless length $io->{buf};
            return { error => 'eof in request header' };
        }
    }
    $io->{buf} =~ s/\A(.*?)\r?\n\r?\n//s;
    my @lines = split /\r?\n/, $1;
    my $rl = shift @lines;
    my ($method, $path, $ver) = $rl =~ m{^(\S+) (\S+) HTTP/(\d\.\d)$}
        or return { error => "bad request line: $rl" };
    my ($hl, $h) = _parse_header_lines(\@lines);
    my %req = (method => $method, path => $path, version => $ver,
        headers => $h, header_list => $hl, body => '');

    if (($h->{expect} // '') =~ /100-continue/i) {
        $io->write("HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        my $dec = MG::Test::Body->new('chunked');
        $dec->feed(_take($io));
        while (!$dec->{done} && !$dec->{error}) {
            my $r = $io->fill($deadline - time);
            return { error => 'timeout in body' } unless defined $r;
            return { error => 'eof in body' } if $r == 0;
            $dec->feed(_take($io));
        }
        return { error => "bad chunked body: $dec->{error}" } if $dec->{error};
        $io->{buf} = $dec->{in} . $io->{buf};   # pipelined leftovers
        $req{body} = $dec->{out};
    } elsif (defined $h->{'content-length'}) {
        my $len = $h->{'content-length'};
        return { error => "bad content-length: $len" } unless $len =~ /^\d+$/;
        while (length $io->{buf} < $len) {
            my $r = $io->fill($deadline - time);
            return { error => 'timeout in body' } unless defined $r;
            return { error => 'eof in body' } if $r == 0;
        }
        $req{body} = substr($io->{buf}, 0, $len, '');
    }
    return \%req;
}

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

# waits $secs for the release file (if given) while watching the peer;
# returns 'released', 'closed' or 'timeout'
sub _mock_wait {
    my ($io, $secs, $file) = @_;
    my $deadline = time + $secs;
    while (1) {
        return 'released' if defined $file && -e $file;
        my $left = $deadline - time;
        return 'timeout' if $left <= 0;
        my $r = $io->fill($left < 0.02 ? $left : 0.02);
        return 'closed' if defined $r && $r == 0;
    }
}

sub _mock_closed {
    my ($ctx, $req, $during) = @_;
    _mock_log($ctx, { event => 'closed', conn => $req->{conn},
        req => $req->{n}, during => $during });
}

# sends the response; returns true to keep the connection open
sub _mock_respond {
    my ($ctx, $io, $req, $spec) = @_;

    return 0 if $spec->{close};
    if ($spec->{no_response}) {
        my $r = _mock_wait($io, $spec->{no_response_timeout} // 30);
        _mock_closed($ctx, $req, 'no_response') if $r eq 'closed';
        return 0;
    }
    if ($spec->{delay}) {
        if (_mock_wait($io, $spec->{delay}) eq 'closed') {
            _mock_closed($ctx, $req, 'delay');
            return 0;
        }
    }

    my $release = $spec->{release};
    $release = "$ctx->{dir}/$release"
        if defined $release && $release !~ m{^/};
    my $hold = $spec->{hold_after};
    my $close_after = $spec->{close_after};

    # between element $i and $i+1: hold, close_after, delays
    my $between = sub {
        my ($i, $delay) = @_;
        if (defined $hold && $i == $hold) {
            my $r = _mock_wait($io, $spec->{hold_timeout} // 20, $release);
            if ($r eq 'closed') { _mock_closed($ctx, $req, 'hold'); return 0 }
            _mock_log($ctx, { event => 'hold_timeout', conn => $req->{conn},
                req => $req->{n} }) if $r eq 'timeout';
        }
        return 0 if defined $close_after && $i >= $close_after;
        if ($delay && _mock_wait($io, $delay) eq 'closed') {
            _mock_closed($ctx, $req, 'write');
            return 0;
        }
        return 1;
    };

    if ($spec->{raw_pieces}) {
        my @p = @{$spec->{raw_pieces}};
        return 0 unless $between->(0, 0);
        for my $i (1 .. @p) {
            unless ($io->write($p[$i - 1])) {
                _mock_closed($ctx, $req, 'write');
                return 0;
            }
            return 0 unless $between->($i,
                $i < @p ? $spec->{piece_delay} // 0.02 : 0);
        }
        return $spec->{keepalive} ? 1 : 0;
    }

    my $status = $spec->{status} // 200;
    my $hdrs = _norm_headers($spec->{headers});
    my $h = $req->{headers};
    my $keep = $req->{version} eq '1.1'
        ? (($h->{connection} // '') !~ /\bclose\b/i)
        : (($h->{connection} // '') =~ /\bkeep-alive\b/i);
    $keep = 0 if defined $close_after || $spec->{conn_close};
    push @$hdrs, ['Connection', 'close']
        if !$keep && !_has_header($hdrs, 'Connection');
    my $reason = $spec->{reason} // $REASON{$status} // 'Unknown';
    my $head = "HTTP/1.1 $status $reason\r\n";

    if ($spec->{chunks}) {
        push @$hdrs, ['Transfer-Encoding', 'chunked']
            unless _has_header($hdrs, 'Transfer-Encoding');
        $head .= join('', map { "$_->[0]: $_->[1]\r\n" } @$hdrs) . "\r\n";
        return 0 unless $io->write($head);
        return 0 unless $between->(0, 0);
        my @c = grep { length } @{$spec->{chunks}};
        for my $i (1 .. @c) {
            my $d = _bytes(my $tmp = $c[$i - 1]);
            unless ($io->write(sprintf("%x\r\n", length $d) . "$d\r\n")) {
                _mock_closed($ctx, $req, 'write');
                return 0;
            }
            return 0 unless $between->($i, $i < @c ? $spec->{chunk_delay} : 0);
        }
        my $tr = join '', map { "$_->[0]: $_->[1]\r\n" }
            @{_norm_headers($spec->{trailers})};
        unless ($io->write("0\r\n$tr\r\n")) {
            _mock_closed($ctx, $req, 'write');
            return 0;
        }
        return $keep;
    }

    my $body = _bytes(my $tmp = $spec->{body} // '');
    my $nobody = $req->{method} eq 'HEAD' || $status == 204 || $status == 304
        || $status < 200;
    push @$hdrs, ['Content-Length', length $body]
        unless _has_header($hdrs, 'Content-Length')
            || _has_header($hdrs, 'Transfer-Encoding')
            || $status == 204 || $status == 304 || $status < 200;
    $head .= join('', map { "$_->[0]: $_->[1]\r\n" } @$hdrs) . "\r\n";
    unless ($io->write($head . ($nobody ? '' : $body))) {
        _mock_closed($ctx, $req, 'write');
        return 0;
    }
    return $keep;
}

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
    MG::Test::_bytes($data);
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
    while (!($res = MG::Test::_parse_response_head($io))) {
        my $r = $io->fill($deadline - time);
        if (!defined $r) { $self->{error} = 'timeout reading response header'; return $self }
        if ($r == 0) { $self->{error} = 'closed before response header'; $self->{eof} = 1; return $self }
    }
    if (!defined $res->{status}) { $self->{error} = $res->{error}; return $self }
    @$self{qw(status version reason headers header_list)} =
        @$res{qw(status version reason headers header_list)};
    $self->{dec} = MG::Test::_body_decoder($res, $method);
    $self->_feed;
    return $self;
}

sub _feed {
    my $self = shift;
    my $dec = $self->{dec};
    $dec->feed(MG::Test::_take($self->{io}));
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
