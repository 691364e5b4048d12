#!/usr/bin/perl

# bin/mg-key without nginx: the key it makes, its key file line read back
# with the gateway's own rules (src/mg_keys.c through t/unit/keyline.c),
# its SHA-256 checked with openssl, refusals the CLI and the parser agree
# on, and (with redis-server) the Redis record, its hash tag and revoking.

use strict;
use warnings;

use Cwd qw(abs_path);
use Digest::SHA qw(sha256_hex);
use File::Basename qw(dirname);
use POSIX ();
use MG::Test;

my $t = MG::Test->new;
my $top = abs_path(dirname(abs_path(__FILE__)) . '/..');
my $cli = "$top/bin/mg-key";
my $dir = $t->dir;

# runs a command with stdin from a file; returns (exit code, stdout, stderr)
sub run {
    my ($in, @cmd) = @_;
    MG::Proc::_flush_all();
    my $pid = open(my $fh, '-|');
    die "fork: $!\n" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', $in;
        open STDERR, '>', "$dir/run.err";
        exec { $cmd[0] } @cmd or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my $rc = $? >> 8;
    return ($rc, $out, MG::Test::_read_file("$dir/run.err") // '');
}

sub cli { run('/dev/null', $^X, $cli, @_) }

# the helper that reads records with src/mg_keys.c
my $keyline = "$dir/keyline";
my ($crc, $cout) = MG::Proc::_capture(['cc', '-std=gnu99', '-D_GNU_SOURCE',
    "-I$top/src", '-o', $keyline, "$top/t/unit/keyline.c",
    "$top/src/mg_keys.c", '-lcrypto']);
ok($crc == 0, 'the keyline helper builds') or diag($cout);

# feeds text to the helper; returns its output lines
sub parse {
    my ($text, @args) = @_;
    _write("$dir/in.txt", $text);
    my (undef, $out) = run("$dir/in.txt", $keyline, @args);
    return split /\n/, $out;
}

sub _write {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print {$fh} $s;
    close $fh;
}

sub openssl_sha256 {
    my $s = shift;
    _write("$dir/key.txt", $s);
    my ($rc, $out) = MG::Proc::_capture(['openssl', 'dgst', '-sha256', '-r',
                                         "$dir/key.txt"]);
    return $rc == 0 && $out =~ /^([0-9a-f]{64})/ ? $1 : "openssl: $out";
}

###########################################################################
# a key and its line

my @all = ('--tenant', 'acme', '--id', 'ci.key-1',
           '--expires', '2027-01-31T00:00:00Z', '--models', 'gpt-4o,claude-*',
           '--endpoints', 'chat,models', '--max-tokens', '4096',
           '--rpm', '60', '--tpm', '100000', '--tpd', '2000000',
           '--budget', '50000000');
my $canon_tail = 'expires=1801353600 models=gpt-4o,claude-* endpoints=17'
    . ' max_tokens=4096 rpm=60 tpm=100000 tpd=2000000 budget=50000000';

my ($rc, $out, $err) = cli(@all);
is($rc, 0, 'all options: exit 0') or diag($err);
my ($key, $line, @more) = split /\n/, $out;
is(scalar @more, 0, 'two lines: the key and its line');
like($key, qr/^mgk_[A-Za-z0-9_-]{43}\z/, 'mgk_ and 43 base64url characters');
my @f = split / /, $line;
is($f[0], 'ci.key-1', 'the line: id');
is($f[1], 'acme', 'the line: tenant');
my ($hex) = $f[2] =~ /^sha256:([0-9a-f]{64})\z/;
ok($hex, 'the line: sha256:HEX');
is($hex, openssl_sha256($key), 'the hash is the SHA-256 of the key (openssl)');
is($hex, sha256_hex($key), 'and of Digest::SHA');
unlike($line, qr/\Q$key\E/, 'the line does not hold the key');
is(join(' ', @f[3 .. $#f]), 'expires=2027-01-31T00:00:00Z '
   . 'models=gpt-4o,claude-* endpoints=chat,models max_tokens=4096 rpm=60 '
   . 'tpm=100000 tpd=2000000 budget=50000000', 'the line: options in order');
is_deeply([parse("$line\n")], ["ok ci.key-1 acme $hex $canon_tail"],
          'the gateway reads the line as given');

my ($rc2, $out2) = cli('--tenant', 'acme');
is($rc2, 0, 'only a tenant: exit 0');
my ($key2, $line2) = split /\n/, $out2;
isnt($key2, $key, 'another run, another key');
my $hex2 = sha256_hex($key2);
is($line2, "key-" . substr($hex2, 0, 12) . " acme sha256:$hex2",
   'default id key-<12 hex of the hash>, no options');
is_deeply([parse("# keys\n\n$line2\n")],
          ['skip', 'skip', "ok key-" . substr($hex2, 0, 12) . " acme $hex2 "
           . 'expires=0 models= endpoints=0 max_tokens=0 rpm=0 tpm=0 tpd=0 '
           . 'budget=0'], 'a file with a comment, a blank and the line');

###########################################################################
# the CLI and the parser agree on what a value may be

my $many = join ',', map { sprintf 'm%03d', $_ } 0 .. 63;
my $long = 'm' x 256;
my @values = (
    # option, value, field, accepted
    ['expires', '9999-12-31T23:59:59Z', 'expires', 1],
    ['expires', '2000-02-29T00:00:00Z', 'expires', 1],
    ['expires', '253402300799', 'expires', 1],
    ['expires', '1', 'expires', 1],
    ['expires', '253402300800', 'expires', 0],
    ['expires', '0', 'expires', 0],
    ['expires', '1970-01-01T00:00:00Z', 'expires', 0],
    ['expires', '2023-02-29T00:00:00Z', 'expires', 0],
    ['expires', '2100-02-29T00:00:00Z', 'expires', 0],
    ['expires', '2027-01-31T00:00:00z', 'expires', 0],
    ['expires', '2027-01-31T00:00:60Z', 'expires', 0],
    ['expires', '2027-01-31T00:00:00+00:00', 'expires', 0],
    ['expires', '2027-01-31', 'expires', 0],
    ['models', '*', 'models', 1],
    ['models', $many, 'models', 1],
    ['models', "$many,m064", 'models', 0],
    ['models', $long, 'models', 1],
    ['models', "${long}m", 'models', 0],
    # 15 patterns of 256 bytes, one of 241 and the commas: 4096 bytes
    ['models', join(',', ($long) x 15, 'm' x 241), 'models', 1],
    ['models', join(',', ($long) x 15, 'm' x 242), 'models', 0],
    ['models', 'a*b', 'models', 0],
    ['models', 'a,,b', 'models', 0],
    ['models', 'a,', 'models', 0],
    ['endpoints', 'chat,embeddings,responses,conversations,models',
     'endpoints', 1],
    ['endpoints', 'completions', 'endpoints', 0],
    ['endpoints', 'chat,', 'endpoints', 0],
    ['max-tokens', '2147483647', 'max_tokens', 1],
    ['max-tokens', '2147483648', 'max_tokens', 0],
    ['max-tokens', '0', 'max_tokens', 0],
    ['max-tokens', '1e3', 'max_tokens', 0],
    ['rpm', '1000000000000000', 'rpm', 1],
    ['rpm', '1000000000000001', 'rpm', 0],
    ['tpm', '-5', 'tpm', 0],
    ['tpd', '00007', 'tpd', 1],
    ['budget', '18446744073709551617', 'budget', 0],
);

my $zero = '0' x 64;
for my $v (@values) {
    my ($opt, $val, $field, $accept) = @$v;
    my $name = "--$opt " . (length $val > 40 ? substr($val, 0, 40) . '...'
                                             : $val);
    my ($rc, $out, $err) = cli('--tenant', 't', "--$opt", $val);
    my ($p) = parse("k t sha256:$zero $field=$val\n");
    if ($accept) {
        is($rc, 0, "$name: the CLI accepts") or diag($err);
        like($p, qr/^ok /, "$name: the parser accepts") or diag($p);
        my (undef, $l) = split /\n/, $out;
        like((parse("$l\n"))[0], qr/^ok /, "$name: the line parses");
    } else {
        is($rc, 2, "$name: the CLI refuses");
        is($out, '', "$name: no key printed");
        like($p, qr/^error: /, "$name: the parser refuses") or diag($p);
    }
}

for my $bad (['--tenant', 'a b'], ['--tenant', 'x' x 65],
             ['--tenant', 't', '--id', 'a/b'], ['--id', 'k'],
             ['--tenant', 't', '--nope', '1'], ['--tenant', 't', 'extra'],
             ['--tenant', 't', '--revoke', 'k'],
             ['--tenant', 't', '--redis', 'nohostport'],
             ['--tenant', 't', '--redis', 'h:1', '--prefix', 'a b'])
{
    my ($rc, $out) = cli(@$bad);
    is($rc, 2, "refused: @$bad");
    is($out, '', "refused, no key: @$bad");
}
my (undef, undef, $rerr) = cli('--revoke', 'k');
like($rerr, qr/--revoke needs --redis/, '--revoke without --redis says why');

###########################################################################
# Redis

SKIP: {
    my ($src) = MG::Proc::_capture(['/bin/sh', '-c',
        'command -v redis-server && command -v redis-cli']);
    skip 'redis-server or redis-cli not installed', 1 if $src != 0;

    my $port = $t->redis;
    my $at = "127.0.0.1:$port";

    my ($rc, $out, $err) = cli(@all, '--redis', $at);
    is($rc, 0, 'redis: exit 0') or diag($err);
    my ($rkey, @rest) = split /\n/, $out;
    like($rkey, qr/^mgk_[A-Za-z0-9_-]{43}\z/, 'redis: the key printed');
    is(scalar @rest, 0, 'redis: only the key on stdout');
    my $rhex = sha256_hex($rkey);
    is($rhex, openssl_sha256($rkey), 'redis: openssl agrees on the hash');
    like($err, qr/wrote mg:key:\{$rhex\}/, 'redis: says where');

    my $name = "mg:key:{$rhex}";
    my $h = $t->redis_cmd('HGETALL', $name);
    my %h = @{ref $h eq 'ARRAY' ? $h : []};
    is_deeply(\%h, { id => 'ci.key-1', tenant => 'acme',
                     hash => "sha256:$rhex",
                     expires => '2027-01-31T00:00:00Z',
                     models => 'gpt-4o,claude-*', endpoints => 'chat,models',
                     max_tokens => 4096, rpm => 60, tpm => 100000,
                     tpd => 2000000, budget => 50000000 },
              'redis: the record, with the key file\'s field names');
    is_deeply([parse(join('', map { "$_ $h{$_}\n" } sort keys %h), '-f')],
              ["ok ci.key-1 acme $rhex $canon_tail"],
              'redis: the gateway reads the record as the line');
    is_deeply([sort @{$t->redis_cmd('KEYS', '*')}], [sort 'mg:keys', $name],
              'redis: the record and the index of ids, nothing else');
    is($t->redis_cmd('HGET', 'mg:keys', 'acme/ci.key-1'), $rhex,
       'redis: the index names the record by tenant and id');
    ($rc, undef, $err) = cli(@all, '--redis', $at);
    is($rc, 1, 'redis: the same id of the tenant again: exit 1');
    like($err, qr/has a key of id ci\.key-1 already/, 'saying why');
    is(scalar @{$t->redis_cmd('KEYS', 'mg:key:*')}, 1,
       'and no second record written');
    # Redis Cluster hashes what is between the first '{' and the next '}'
    like($name, qr/^[^{}]*\{$rhex\}\z/,
         'redis: the hash tag is the first braces: one slot per record');

    # revoke by hash (sha256:HEX and bare HEX) and by id
    ($rc, undef, $err) = cli('--redis', $at, '--revoke', "sha256:$rhex");
    is($rc, 0, 'revoke sha256:HEX: exit 0') or diag($err);
    is($t->redis_cmd('EXISTS', $name), 0, 'revoke sha256:HEX: gone');
    is($t->redis_cmd('HEXISTS', 'mg:keys', 'acme/ci.key-1'), 0,
       'revoke sha256:HEX: its id left the index');
    ($rc) = cli('--redis', $at, '--revoke', "sha256:$rhex");
    is($rc, 1, 'revoke it again: nothing found, exit 1');

    my (undef, $o1) = cli('--tenant', 'acme', '--id', 'k-a', '--redis', $at);
    my (undef, $o2) = cli('--tenant', 'acme', '--id', 'k-b', '--redis', $at);
    my ($ha, $hb) = map { sha256_hex((split /\n/)[0]) } $o1, $o2;
    ($rc) = cli('--redis', $at, '--revoke', 'k-a');
    is($rc, 0, 'revoke by id: exit 0');
    is($t->redis_cmd('EXISTS', "mg:key:{$ha}"), 0, 'revoke by id: gone');
    is($t->redis_cmd('HEXISTS', 'mg:keys', 'acme/k-a'), 0,
       'revoke by id: its id left the index');
    is($t->redis_cmd('EXISTS', "mg:key:{$hb}"), 1,
       'revoke by id: the other key of the tenant stays');
    ($rc) = cli('--redis', $at, '--revoke', uc $hb);
    is($rc, 0, 'revoke by bare HEX: exit 0');
    is($t->redis_cmd('EXISTS', "mg:key:{$hb}"), 0, 'revoke by bare HEX: gone');
    ($rc) = cli('--redis', $at, '--revoke', 'no-such-id');
    is($rc, 1, 'revoke an unknown id: exit 1');

    # another prefix
    ($rc, $out) = cli('--tenant', 't', '--redis', $at, '--prefix', 'gw1');
    my $ph = sha256_hex((split /\n/, $out)[0]);
    is($t->redis_cmd('HGET', "gw1:key:{$ph}", 'tenant'), 't',
       '--prefix: the record under it');
    ($rc) = cli('--redis', $at, '--revoke', $ph);
    is($rc, 1, '--prefix: not revoked under the default prefix');
    ($rc) = cli('--redis', $at, '--prefix', 'gw1', '--revoke', $ph);
    is($rc, 0, '--prefix: revoked under it');

    # Redis down: no key is handed out for a record that was not written
    $t->stop_redis;
    ($rc, $out) = cli('--tenant', 't', '--redis', $at);
    is($rc, 1, 'redis down: exit 1');
    is($out, '', 'redis down: no key printed');
}

done_testing;
