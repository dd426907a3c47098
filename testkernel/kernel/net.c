/*
 * rhyzome-testkernel: just enough Ethernet/ARP/IPv4/ICMP/UDP.
 *
 * Replies always go back to the source MAC of the request, so no ARP cache
 * is needed.  IP fragments and IP options are not supported (fragments are
 * dropped; options are skipped).
 *
 * Each NIC is its own interface: a frame is answered only on the NIC it came
 * in on, from that NIC's MAC and address (cfg.ipv4[nic]), and only if that
 * NIC has an address.  Nothing is routed between NICs.
 */
#include "kernel.h"

#define ETH_HLEN 14
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_ARP 0x0806
#define UDP_SERVICE_PORT 7

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* One's-complement sum, to be folded by csum_fold. */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, uint32_t len)
{
    while (len > 1) {
        sum += get16(p);
        p += 2;
        len -= 2;
    }
    if (len)
        sum += (uint32_t)p[0] << 8;
    return sum;
}
static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static void eth_header(int nic, uint8_t *f, const uint8_t *dst, uint16_t type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, vnet_mac(nic), 6);
    put16(f + 12, type);
}

/* Sends an ARP packet from NIC nic: op 1 (request) or 2 (reply), to the
 * Ethernet address dst, about target (MAC, which may be zero, and IP). */
static void arp_send(int nic, uint16_t op, const uint8_t *dst,
                     const uint8_t *target_mac, uint32_t target_ip)
{
    uint8_t *r = vnet_tx_buf(nic), *ra = r + ETH_HLEN;
    eth_header(nic, r, dst, ETHERTYPE_ARP);
    put16(ra, 1);
    put16(ra + 2, ETHERTYPE_IPV4);
    ra[4] = 6;
    ra[5] = 4;
    put16(ra + 6, op);
    memcpy(ra + 8, vnet_mac(nic), 6);
    put32(ra + 14, cfg.ipv4[nic].addr);
    memcpy(ra + 18, target_mac, 6);
    put32(ra + 24, target_ip);
    memset(ra + 28, 0, 18); /* pad to the 60-byte minimum */
    vnet_tx_send(nic, ETH_HLEN + 28 + 18);
}

static void arp_input(int nic, const uint8_t *f, uint32_t len)
{
    const struct ipv4_conf *ifc = &cfg.ipv4[nic];
    const uint8_t *a = f + ETH_HLEN;
    if (len < ETH_HLEN + 28 || !ifc->set)
        return;
    if (get16(a) != 1 || get16(a + 2) != ETHERTYPE_IPV4 || a[4] != 6 ||
        a[5] != 4)
        return;
    if (nic == 0)
        gossip_arp_seen(get32(a + 14), a + 8); /* the sender's address */
    if (get16(a + 6) != 1 /* request */ || get32(a + 24) != ifc->addr)
        return;
    arp_send(nic, 2, a + 8, a + 8, get32(a + 14)); /* reply to the requester */
}

/* Broadcasts an ARP request for ip from NIC nic (gossip.c resolves its
 * peers with it; the answer comes back through arp_input). */
void net_arp_request(int nic, uint32_t ip)
{
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t unknown[6];
    if (nic >= vnet_count() || !cfg.ipv4[nic].set)
        return;
    arp_send(nic, 1, bcast, unknown, ip);
}

/* Build an IPv4 header at ip (no options), for a reply from src to dst. */
static void ip_header(uint8_t *ip, uint32_t src, uint32_t dst, uint8_t proto,
                      uint16_t payload_len, uint16_t id)
{
    ip[0] = 0x45;
    ip[1] = 0;
    put16(ip + 2, (uint16_t)(20 + payload_len));
    put16(ip + 4, id);
    put16(ip + 6, 0x4000); /* DF */
    ip[8] = 64;
    ip[9] = proto;
    put16(ip + 10, 0);
    put32(ip + 12, src);
    put32(ip + 16, dst);
    put16(ip + 10, csum_fold(csum_add(0, ip, 20)));
}

static uint16_t ip_id;

static void icmp_input(int nic, const uint8_t *f, const uint8_t *ip,
                       const uint8_t *p, uint32_t plen)
{
    uint8_t *r, *rp;
    if (plen < 8 || p[0] != 8 /* echo request */ || p[1] != 0)
        return;
    if (plen > 1500 - 20)
        return;
    r = vnet_tx_buf(nic);
    eth_header(nic, r, f + 6, ETHERTYPE_IPV4);
    rp = r + ETH_HLEN + 20;
    memcpy(rp, p, plen);
    rp[0] = 0; /* echo reply */
    put16(rp + 2, 0);
    put16(rp + 2, csum_fold(csum_add(0, rp, plen)));
    ip_header(r + ETH_HLEN, get32(ip + 16), get32(ip + 12), 1,
              (uint16_t)plen, ip_id++);
    vnet_tx_send(nic, ETH_HLEN + 20 + plen < 60 ? 60 : ETH_HLEN + 20 + plen);
}

/* One UDP datagram from this NIC's address and port sport to dst_mac,
 * dst:dport. */
void net_udp_send(int nic, const uint8_t *dst_mac, uint32_t dst,
                     uint16_t sport, uint16_t dport, const void *data,
                     uint32_t dlen)
{
    uint8_t *r, *ru;
    uint32_t sum;
    uint32_t ulen;
    if (dlen > 1500 - 28)
        dlen = 1500 - 28;
    ulen = 8 + dlen;
    r = vnet_tx_buf(nic);
    eth_header(nic, r, dst_mac, ETHERTYPE_IPV4);
    ru = r + ETH_HLEN + 20;
    put16(ru, sport);
    put16(ru + 2, dport);
    put16(ru + 4, (uint16_t)ulen);
    put16(ru + 6, 0);
    memmove(ru + 8, data, dlen);
    ip_header(r + ETH_HLEN, cfg.ipv4[nic].addr, dst, 17, (uint16_t)ulen,
              ip_id++);
    /* checksum over the pseudo header and the datagram */
    sum = csum_add(0, r + ETH_HLEN + 12, 8);
    sum += 17 + ulen;
    sum = csum_add(sum, ru, ulen);
    sum = csum_fold(sum);
    put16(ru + 6, sum ? (uint16_t)sum : 0xFFFF);
    vnet_tx_send(nic, ETH_HLEN + 20 + ulen < 60 ? 60 : ETH_HLEN + 20 + ulen);
}

static void udp_reply(int nic, const uint8_t *f, const uint8_t *ip,
                      const uint8_t *u, const void *data, uint32_t dlen)
{
    net_udp_send(nic, f + 6, get32(ip + 12), get16(u + 2), get16(u), data, dlen);
}

static void udp_reply_str(int nic, const uint8_t *f, const uint8_t *ip,
                          const uint8_t *u, const char *s)
{
    udp_reply(nic, f, ip, u, s, strlen(s));
}

/*
 * Probe: this guest measures round trips to another one.  `probe A.B.C.D MAC
 * COUNT INTERVAL_MS` sends COUNT datagrams "probe-echo SEQ" from PROBE_PORT to
 * A.B.C.D port 7 (whose service echoes them), one per INTERVAL_MS (the clock
 * ticks at 100 Hz), to MAC directly (no ARP).  Two seconds after the last one
 * it prints, and sends to whoever asked, one line:
 *   probe sent=N received=M rtt_avg_us=A rtt_min_us=B rtt_max_us=C pattern=P
 * where P has one character per probe: 1 answered, 0 lost.
 */
#define PROBE_PORT 40007
#define PROBE_MAX 1000
#define PROBE_WAIT_MS 2000
static struct {
    int active, nic;
    uint32_t target, count, interval_ms, sent, received;
    uint8_t target_mac[6];
    uint64_t next_ms, last_ms;
    uint64_t sent_us[PROBE_MAX];
    uint32_t rtt_us[PROBE_MAX];
    uint8_t got[PROBE_MAX];
    uint8_t req_mac[6];
    uint32_t req_ip;
    uint16_t req_port;
} probe;

static int parse_mac(const char *p, size_t n, uint8_t *out)
{
    if (n != 17)
        return -1;
    for (int i = 0; i < 6; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char c = p[i * 3 + j];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= c - '0';
            else if (c >= 'a' && c <= 'f')
                v |= c - 'a' + 10;
            else if (c >= 'A' && c <= 'F')
                v |= c - 'A' + 10;
            else
                return -1;
        }
        if (i < 5 && p[i * 3 + 2] != ':')
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* Splits "a b c d" into up to max words; returns how many. */
int split_words(const char *p, size_t n, const char **w, size_t *len,
                       int max)
{
    int k = 0;
    size_t i = 0;
    while (i < n && k < max) {
        while (i < n && p[i] == ' ')
            i++;
        if (i == n)
            break;
        w[k] = p + i;
        while (i < n && p[i] != ' ')
            i++;
        len[k] = (size_t)(p + i - w[k]);
        k++;
    }
    return k;
}

static int probe_start(int nic, const uint8_t *f, const uint8_t *ip,
                       const uint8_t *u, const char *args, size_t n)
{
    const char *w[5];
    size_t len[5];
    uint32_t count, interval;
    if (split_words(args, n, w, len, 5) != 4 ||
        parse_ipv4(w[0], len[0], &probe.target) < 0 ||
        parse_mac(w[1], len[1], probe.target_mac) < 0 ||
        parse_u32(w[2], len[2], &count) < 0 || count == 0 ||
        count > PROBE_MAX || parse_u32(w[3], len[3], &interval) < 0 ||
        interval > 60000)
        return -1;
    probe.active = 1;
    probe.nic = nic;
    probe.count = count;
    probe.interval_ms = interval;
    probe.sent = probe.received = 0;
    memset(probe.got, 0, sizeof(probe.got));
    probe.next_ms = uptime_ms();
    memcpy(probe.req_mac, f + 6, 6);
    probe.req_ip = get32(ip + 12);
    probe.req_port = get16(u);
    return 0;
}

static void probe_echo(const uint8_t *data, uint32_t dlen)
{
    uint32_t seq;
    uint64_t now = uptime_us();
    if (!probe.active || dlen <= 11 || memcmp(data, "probe-echo ", 11) != 0 ||
        parse_u32((const char *)data + 11, dlen - 11, &seq) < 0 ||
        seq >= probe.sent || probe.got[seq])
        return;
    probe.got[seq] = 1;
    probe.rtt_us[seq] = (uint32_t)(now - probe.sent_us[seq]);
    probe.received++;
}

void net_tick(void)
{
    char line[64 + PROBE_MAX];
    uint64_t now = uptime_ms();
    uint64_t sum = 0;
    uint32_t min = 0xFFFFFFFF, max = 0, i;
    int k;
    gossip_tick();
    if (!probe.active)
        return;
    while (probe.sent < probe.count && now >= probe.next_ms) {
        k = ksnprintf(line, sizeof(line), "probe-echo %u", probe.sent);
        probe.sent_us[probe.sent] = uptime_us();
        net_udp_send(probe.nic, probe.target_mac, probe.target, PROBE_PORT,
                 UDP_SERVICE_PORT, line, (uint32_t)k);
        probe.sent++;
        probe.last_ms = now;
        probe.next_ms += probe.interval_ms;
    }
    if (probe.sent < probe.count ||
        (probe.received < probe.count && now < probe.last_ms + PROBE_WAIT_MS))
        return;
    probe.active = 0;
    for (i = 0; i < probe.count; i++) {
        if (!probe.got[i])
            continue;
        sum += probe.rtt_us[i];
        if (probe.rtt_us[i] < min)
            min = probe.rtt_us[i];
        if (probe.rtt_us[i] > max)
            max = probe.rtt_us[i];
    }
    if (!probe.received)
        min = 0;
    k = ksnprintf(line, sizeof(line),
                  "probe sent=%u received=%u rtt_avg_us=%u rtt_min_us=%u "
                  "rtt_max_us=%u pattern=",
                  probe.sent, probe.received,
                  probe.received ? (uint32_t)udiv64(sum, probe.received) : 0,
                  min, max);
    for (i = 0; i < probe.count && k < (int)sizeof(line) - 2; i++)
        line[k++] = probe.got[i] ? '1' : '0';
    line[k++] = '\n';
    line[k] = 0;
    kprintf(TK "%s", line);
    net_udp_send(probe.nic, probe.req_mac, probe.req_ip, UDP_SERVICE_PORT,
             probe.req_port, line, (uint32_t)k);
}

static void udp_service(int nic, const uint8_t *f, const uint8_t *ip,
                        const uint8_t *u, const uint8_t *data, uint32_t dlen)
{
    const char *cmd = (const char *)data;
    uint32_t n = dlen;
    char line[160];
    /* commands may carry one trailing newline (e.g. from nc) */
    if (n && cmd[n - 1] == '\n')
        n--;
    if (n && cmd[n - 1] == '\r')
        n--;

    if (mem_eq_str(cmd, n, "status")) {
        /* ipv4= is the receiving NIC's address: the one the client used */
        ksnprintf(line, sizeof(line),
                  "name=%s uptime_ms=%llu rx=%u tx=%u ipv4=%I/%u\n", cfg.name,
                  uptime_ms(), net_rx_packets, net_tx_packets,
                  cfg.ipv4[nic].addr, cfg.ipv4[nic].prefix);
        udp_reply_str(nic, f, ip, u, line);
    } else if (mem_eq_str(cmd, n, "clock") ||
               (n > 10 && memcmp(cmd, "clock-set ", 10) == 0)) {
        /* the wall clock (rtc.c): read it, or give it a sample of the
         * sender's clock first */
        uint64_t ms;
        if (n > 10) {
            if (parse_u64(cmd + 10, n - 10, &ms) < 0) {
                udp_reply_str(nic, f, ip, u,
                              "error: usage: clock-set EPOCH_MS\n");
                return;
            }
            wall_clock_set(ms);
        }
        ksnprintf(line, sizeof(line),
                  "wall_ms=%llu synced=%d set=%d rate=%s uptime_ms=%llu\n",
                  wall_clock_ms(), wall_clock_synced(), wall_clock_corrected(),
                  wall_clock_rate_measured() ? "rtc" : "boot", uptime_ms());
        udp_reply_str(nic, f, ip, u, line);
    } else if (n >= 4 && memcmp(cmd, "exit", 4) == 0 &&
               (n == 4 || cmd[4] == ' ')) {
        int32_t code = 0;
        if (n > 5 && parse_i32(cmd + 5, n - 5, &code) == 0) {
            udp_reply_str(nic, f, ip, u, "ok\n");
            vnet_tx_flush(nic);
            solo5_exit(code);
        }
        udp_reply_str(nic, f, ip, u, "error: usage: exit N\n");
    } else if (n >= 5 && memcmp(cmd, "print", 5) == 0 &&
               (n == 5 || cmd[5] == ' ')) {
        /* Console volume on demand, so that tests can make virtlogd rotate a log. */
        int32_t lines = 0;
        if (n > 6 && parse_i32(cmd + 6, n - 6, &lines) == 0 && lines > 0 &&
            lines <= 1000000) {
            udp_reply_str(nic, f, ip, u, "ok\n");
            vnet_tx_flush(nic);
            for (int32_t i = 0; i < lines; i++)
                kprintf("rhyzome-testkernel: filler %07d "
                        "............................\n", i);
            kprintf("rhyzome-testkernel: printed %d lines\n", lines);
            return;
        }
        udp_reply_str(nic, f, ip, u, "error: usage: print N (1 to 1000000)\n");
    } else if (n >= 6 && memcmp(cmd, "probe ", 6) == 0) {
        if (probe_start(nic, f, ip, u, cmd + 6, n - 6) == 0)
            udp_reply_str(nic, f, ip, u, "ok\n");
        else
            udp_reply_str(nic, f, ip, u,
                          "error: usage: probe A.B.C.D MAC COUNT INTERVAL_MS "
                          "(COUNT 1 to 1000)\n");
    } else if (mem_eq_str(cmd, n, "blk-capacity")) {
        ksnprintf(line, sizeof(line), "capacity=%llu sectors\n",
                  vblk_capacity());
        udp_reply_str(nic, f, ip, u, vblk_present() ? line
                                                     : "error: no block device\n");
    } else if (n > 9 && memcmp(cmd, "blk-read ", 9) == 0) {
        /* blk-read SECTOR: the same line as --blk-read prints */
        char out[700];
        uint32_t s;
        if (parse_u32(cmd + 9, n - 9, &s) < 0) {
            udp_reply_str(nic, f, ip, u, "error: usage: blk-read SECTOR\n");
            return;
        }
        vblk_read_text(s, out, sizeof(out));
        kputs(out);
        udp_reply_str(nic, f, ip, u, out);
    } else if (n > 10 && memcmp(cmd, "blk-write ", 10) == 0) {
        /* blk-write SECTOR TEXT: TEXT (the rest of the datagram) at SECTOR */
        char out[160];
        uint32_t s, i = 10;
        while (i < n && cmd[i] != ' ')
            i++;
        if (i >= n || parse_u32(cmd + 10, i - 10, &s) < 0) {
            udp_reply_str(nic, f, ip, u,
                          "error: usage: blk-write SECTOR TEXT\n");
            return;
        }
        vblk_write_text(s, cmd + i + 1, n - i - 1, out, sizeof(out));
        kputs(out);
        udp_reply_str(nic, f, ip, u, out);
    } else if (mem_eq_str(cmd, n, "crash")) {
        udp_reply_str(nic, f, ip, u, "ok\n");
        vnet_tx_flush(nic);
        PANIC("crash requested");
    } else {
        udp_reply(nic, f, ip, u, data, dlen);
    }
}

static void ipv4_input(int nic, const uint8_t *f, uint32_t len)
{
    const struct ipv4_conf *ifc = &cfg.ipv4[nic];
    const uint8_t *ip = f + ETH_HLEN;
    uint32_t ihl, tot;
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    if (!ifc->set || len < ETH_HLEN + 20)
        return;
    if (memcmp(f, vnet_mac(nic), 6) != 0 && memcmp(f, bcast, 6) != 0)
        return;
    ihl = (uint32_t)(ip[0] & 15) * 4;
    tot = get16(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl || tot > len - ETH_HLEN)
        return;
    if (csum_fold(csum_add(0, ip, ihl)) != 0)
        return;
    if ((get16(ip + 6) & 0x3FFF) != 0)
        return; /* fragment */
    if (get32(ip + 16) != ifc->addr)
        return;
    if (ip[9] == 1) {
        icmp_input(nic, f, ip, ip + ihl, tot - ihl);
    } else if (ip[9] == 17 && tot - ihl >= 8) {
        const uint8_t *u = ip + ihl;
        uint32_t ulen = get16(u + 4);
        if (ulen < 8 || ulen > tot - ihl)
            return;
        if (get16(u + 2) == UDP_SERVICE_PORT)
            udp_service(nic, f, ip, u, u + 8, ulen - 8);
        else if (get16(u + 2) == GOSSIP_PORT && nic == 0)
            gossip_input(f + 6, get32(ip + 12), u + 8, ulen - 8);
        else if (get16(u + 2) == PROBE_PORT && nic == probe.nic)
            probe_echo(u + 8, ulen - 8);
    }
}

void net_input(int nic, uint8_t *frame, uint32_t len)
{
    uint16_t type;
    if (len < ETH_HLEN)
        return;
    type = get16(frame + 12);
    if (type == ETHERTYPE_ARP)
        arp_input(nic, frame, len);
    else if (type == ETHERTYPE_IPV4)
        ipv4_input(nic, frame, len);
}
