package MG::CA;

# The test CA of the harness (see MG::Test): a throw-away CA per server
# root, certificates it issues, and self-signed ("rogue") certificates.

use strict;
use warnings;

use File::Path qw(make_path);
use Time::HiRes qw(time);
use MG::IO qw(_write_file);
use MG::Proc qw(_capture);

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

1;
