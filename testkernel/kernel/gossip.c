/*
 * rhyzome-testkernel: a minimal gossip protocol, so that a test bed runs a
 * P2P workload and not idle nodes.
 *
 * `--peers=A,B,C` names this node's peers (IPv4, at most PEERS_MAX; may be
 * empty).  A UDP datagram `rumor ID HOPS ORIGIN_MS` to port GOSSIP_PORT
 * (7946, memberlist's) received for the first time is printed as
 *   RESULT rumor=ID hops=HOPS ms=T
 * with T = this guest's wall clock (rtc.c) minus ORIGIN_MS, the injector's
 * wall clock (ms since the Unix epoch) carried unchanged in the packet; then
 * it is forwarded once to every peer as `rumor ID HOPS+1 ORIGIN_MS`, from
 * port 7946 to port 7946.  A rumor seen before (the last RUMORS_MAX are
 * remembered) is dropped silently; so is a malformed datagram.
 *
 * Peers are on NIC 0's segment.  There is no ARP cache in the rest of the
 * kernel (replies go back to the requester's MAC), so peers' MACs are
 * resolved here: learnt from any ARP packet a peer sends (request or reply),
 * asked for once a second for a minute after boot (so that the first rumor
 * rarely waits for ARP), and asked again every 100 ms while a rumor waits for
 * a peer whose MAC is unknown (the rumor leaves as soon as the answer comes).
 */
#include "kernel.h"

#define PEERS_MAX 32
#define RUMORS_MAX 16
#define RUMOR_ID_MAX 32
#define ARP_EAGER_ROUNDS 60

static struct peer {
    uint32_t ip;
    uint8_t mac[6];
    uint8_t known;
    uint32_t pending; /* rumor slots waiting for this peer's MAC */
} peers[PEERS_MAX];
static int npeers, have_peers;

static struct rumor {
    char id[RUMOR_ID_MAX + 1];
    uint8_t len, used;
    uint32_t hops;
    uint64_t origin_ms;
} rumors[RUMORS_MAX];
static int next_slot;
static uint64_t next_arp_ms;
static uint32_t arp_rounds;

int gossip_set_peers(const char *v, size_t n)
{
    size_t i = 0;
    npeers = 0;
    while (i < n) {
        size_t j = i;
        uint32_t ip;
        while (j < n && v[j] != ',')
            j++;
        if (parse_ipv4(v + i, j - i, &ip) < 0)
            return -1;
        if (npeers == PEERS_MAX)
            return -2;
        peers[npeers].ip = ip;
        peers[npeers].known = 0;
        peers[npeers].pending = 0;
        npeers++;
        i = j + 1;
        if (j + 1 == n)
            return -1; /* trailing comma */
    }
    have_peers = 1;
    return 0;
}

void gossip_print_args(void)
{
    if (!have_peers)
        return;
    kputs(TK "arg peers=");
    for (int i = 0; i < npeers; i++)
        kprintf(i ? ",%I" : "%I", peers[i].ip);
    kputs("\n");
}

static void send_rumor(int p, const struct rumor *r)
{
    char msg[96];
    int k = ksnprintf(msg, sizeof(msg), "rumor %s %u %llu", r->id, r->hops + 1,
                      r->origin_ms);
    net_udp_send(0, peers[p].mac, peers[p].ip, GOSSIP_PORT, GOSSIP_PORT, msg,
                 (uint32_t)k);
}

static void learn(int p, const uint8_t *mac)
{
    memcpy(peers[p].mac, mac, 6);
    peers[p].known = 1;
    for (int s = 0; s < RUMORS_MAX; s++) {
        if (peers[p].pending & (1u << s))
            send_rumor(p, &rumors[s]);
    }
    peers[p].pending = 0;
}

void gossip_arp_seen(uint32_t ip, const uint8_t *mac)
{
    for (int p = 0; p < npeers; p++) {
        if (peers[p].ip == ip)
            learn(p, mac);
    }
}

static int is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

void gossip_input(const uint8_t *src_mac, uint32_t src_ip, const uint8_t *data,
                  uint32_t dlen)
{
    const char *w[5];
    size_t len[5];
    uint32_t hops;
    uint64_t origin, now;
    struct rumor *r;
    int slot;
    if (dlen && data[dlen - 1] == '\n')
        dlen--;
    if (split_words((const char *)data, dlen, w, len, 5) != 4 ||
        !mem_eq_str(w[0], len[0], "rumor") || len[1] == 0 ||
        len[1] > RUMOR_ID_MAX || parse_u32(w[2], len[2], &hops) < 0 ||
        parse_u64(w[3], len[3], &origin) < 0)
        return;
    for (size_t i = 0; i < len[1]; i++) {
        if (!is_id_char(w[1][i]))
            return;
    }
    for (int s = 0; s < RUMORS_MAX; s++) {
        if (rumors[s].used && rumors[s].len == len[1] &&
            memcmp(rumors[s].id, w[1], len[1]) == 0)
            return; /* a duplicate */
    }
    now = wall_clock_ms();
    slot = next_slot;
    next_slot = (next_slot + 1) % RUMORS_MAX;
    r = &rumors[slot];
    memcpy(r->id, w[1], len[1]);
    r->id[len[1]] = 0;
    r->len = (uint8_t)len[1];
    r->used = 1;
    r->hops = hops;
    r->origin_ms = origin;
    /* clock=rtc: never set by clock-set, so T is off by up to a second */
    if (!wall_clock_synced())
        kprintf("RESULT rumor=%s hops=%u clock=none\n", r->id, hops);
    else
        kprintf("RESULT rumor=%s hops=%u ms=%s%llu%s\n", r->id, hops,
                now >= origin ? "" : "-",
                now >= origin ? now - origin : origin - now,
                wall_clock_corrected() ? "" : " clock=rtc");
    /* The sender is on our segment: if it is a peer, its MAC is known now. */
    gossip_arp_seen(src_ip, src_mac);
    for (int p = 0; p < npeers; p++) {
        /* the slot's old rumor, if any, is forgotten */
        peers[p].pending &= ~(1u << slot);
        if (peers[p].known) {
            send_rumor(p, r);
        } else {
            peers[p].pending |= 1u << slot;
            net_arp_request(0, peers[p].ip);
        }
    }
}

/* ARP for peers whose MAC is unknown: eagerly after boot, and quickly while a
 * rumor waits for one. Called from the main loop. */
void gossip_tick(void)
{
    uint64_t now;
    int waiting = 0, unknown = 0;
    if (!npeers)
        return;
    now = uptime_ms();
    if (now < next_arp_ms)
        return;
    for (int p = 0; p < npeers; p++) {
        if (peers[p].known)
            continue;
        unknown = 1;
        waiting |= peers[p].pending != 0;
        if (peers[p].pending || arp_rounds < ARP_EAGER_ROUNDS)
            net_arp_request(0, peers[p].ip);
    }
    if (unknown)
        arp_rounds++;
    next_arp_ms = now + (waiting ? 100 : 1000);
}
