#!/usr/bin/env bash
# The TLS certificates that let one Rhyzome controller drive remote libvirt hosts over
# `qemu+tls://` (docs/hosts-tls.md walks through it). libvirt's PKI: one certificate
# authority; each host's libvirtd holds a server certificate signed by it; the controller holds
# a client certificate signed by it, which each libvirtd may restrict by its distinguished name
# (`tls_allowed_dn_list`). Keys are made with GnuTLS's certtool (Debian: gnutls-bin), as
# libvirt's own documentation does. Nothing is installed: the files are written under DIR, in
# the layout each side expects, and you copy them where they belong.
#
#   scripts/hosts-pki.sh ca DIR [ORGANIZATION]
#       DIR/ca/cacert.pem and DIR/ca/cakey.pem (keep cakey.pem offline).
#   scripts/hosts-pki.sh server DIR HOSTNAME [IP...]
#       DIR/server-HOSTNAME/{cacert.pem,servercert.pem,serverkey.pem}: for that host's
#       libvirtd (/etc/pki/CA/cacert.pem, /etc/pki/libvirt/servercert.pem,
#       /etc/pki/libvirt/private/serverkey.pem, or libvirtd.conf's ca_file, cert_file and
#       key_file). The certificate names HOSTNAME and every IP given, which is what the
#       controller's URI must use.
#   scripts/hosts-pki.sh client DIR NAME
#       DIR/client-NAME/{cacert.pem,clientcert.pem,clientkey.pem}: a directory to name in the
#       controller's URIs as `?pkipath=DIR/client-NAME`. Its distinguished name is printed, for
#       each host's tls_allowed_dn_list.
#
# Every file is created owner-only; keys never leave DIR. Re-running refuses to overwrite.
set -euo pipefail

die() {
  echo "error: $*" >&2
  exit 2
}
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
}

command -v certtool >/dev/null || die "certtool not found: install gnutls-bin (apt-get install gnutls-bin)"
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2
umask 077

# A name that ends up in a certificate template: plain DNS-like words only, so that nothing the
# caller passes can add a line (another option) to the template.
plain() {
  [[ $2 =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$ ]] || die "$1 must be a host name or plain word (letters, digits, '.', '-'), not '$2'"
}
ip_literal() {
  [[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || $1 =~ ^[0-9A-Fa-f:]+$ ]] || die "not an IP address: '$1'"
}

ca_dir=$dir/ca
fresh() { [ ! -e "$1" ] || die "$1 exists; refusing to overwrite it"; }
need_ca() {
  [ -f "$ca_dir/cacert.pem" ] && [ -f "$ca_dir/cakey.pem" ] ||
    die "no certificate authority in $ca_dir; run: $0 ca $dir"
}
sign() { # template key out
  certtool --generate-certificate --template "$1" --load-privkey "$2" \
    --load-ca-certificate "$ca_dir/cacert.pem" --load-ca-privkey "$ca_dir/cakey.pem" \
    --outfile "$3" 2>/dev/null
}

case $cmd in
  ca)
    org=${1:-Rhyzome}
    plain ORGANIZATION "$org"
    fresh "$ca_dir"
    mkdir -p "$ca_dir"
    printf 'cn = %s hosts CA\nca\ncert_signing_key\nexpiration_days = 3650\n' "$org" >"$ca_dir/ca.info"
    certtool --generate-privkey --outfile "$ca_dir/cakey.pem" 2>/dev/null
    certtool --generate-self-signed --template "$ca_dir/ca.info" --load-privkey "$ca_dir/cakey.pem" \
      --outfile "$ca_dir/cacert.pem" 2>/dev/null
    echo "$ca_dir/cacert.pem"
    ;;
  server)
    [ $# -ge 1 ] || usage
    host=$1
    shift
    plain HOSTNAME "$host"
    need_ca
    out=$dir/server-$host
    fresh "$out"
    mkdir -p "$out"
    {
      printf 'organization = Rhyzome\ncn = %s\ndns_name = %s\n' "$host" "$host"
      for ip in "$@"; do
        ip_literal "$ip"
        printf 'ip_address = %s\n' "$ip"
      done
      printf 'tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 825\n'
    } >"$out/server.info"
    certtool --generate-privkey --outfile "$out/serverkey.pem" 2>/dev/null
    sign "$out/server.info" "$out/serverkey.pem" "$out/servercert.pem"
    cp "$ca_dir/cacert.pem" "$out/cacert.pem"
    echo "$out"
    ;;
  client)
    [ $# -eq 1 ] || usage
    name=$1
    plain NAME "$name"
    need_ca
    out=$dir/client-$name
    fresh "$out"
    mkdir -p "$out"
    printf 'organization = Rhyzome\ncn = %s\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 825\n' \
      "$name" >"$out/client.info"
    certtool --generate-privkey --outfile "$out/clientkey.pem" 2>/dev/null
    sign "$out/client.info" "$out/clientkey.pem" "$out/clientcert.pem"
    cp "$ca_dir/cacert.pem" "$out/cacert.pem"
    echo "$out"
    # libvirt compares tls_allowed_dn_list with the name in its own order (O=...,CN=...), which
    # is the reverse of what certtool shows (CN=...,O=...); virt-pki-query-dn prints libvirt's.
    if command -v virt-pki-query-dn >/dev/null; then
      dn=$(virt-pki-query-dn "$out/clientcert.pem")
    else
      dn="O=Rhyzome,CN=$name"
    fi
    echo "distinguished name (for tls_allowed_dn_list): $dn"
    ;;
  *) usage ;;
esac
