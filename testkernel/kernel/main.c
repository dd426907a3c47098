/*
 * rhyzome-testkernel: entry, command line, arguments and the main loop.
 */
#include "kernel.h"

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002
#define MB_INFO_CMDLINE (1u << 2)
#define CMDLINE_MAX 8192 /* like Solo5: at most 8191 bytes are kept */

struct config cfg;
static char cmdline[CMDLINE_MAX];
static size_t cmdline_len;

void solo5_exit(int code)
{
    kprintf("Solo5: solo5_exit(%d) called\n", code);
    platform_poweroff(code);
}

void solo5_abort(const char *file, int line, const char *msg)
{
    kprintf("Solo5: ABORT: %s:%d: %s\n", file, line, msg);
    platform_poweroff(255); /* SOLO5_EXIT_ABORT */
}

/* Copy the multiboot command line, dropping the first word (the kernel's
 * path that QEMU puts in front) exactly like Solo5: everything up to and
 * including the first ' ' goes; no ' ' at all means an empty command line. */
static void cmdline_init(uint32_t magic, const uint32_t *mbi)
{
    const char *src, *p;
    size_t n;
    if (magic != MULTIBOOT_BOOTLOADER_MAGIC || !mbi ||
        !(mbi[0] & MB_INFO_CMDLINE) || mbi[4] == 0)
        return;
    src = (const char *)(uintptr_t)mbi[4];
    for (p = src; *p && *p != ' '; p++)
        ;
    if (*p == ' ')
        p++;
    n = strlen(p);
    if (n >= CMDLINE_MAX) {
        n = CMDLINE_MAX - 1;
        kprintf(TK "warning: command line too long, truncated to %u bytes\n",
                (uint32_t)n);
    }
    memcpy(cmdline, p, n);
    cmdline[n] = 0;
    cmdline_len = n;
}

/* ---- arguments --------------------------------------------------------- */
enum { ARG_OK = 0, ARG_INVALID = -1, ARG_TOO_LONG = -2 };

static int set_cidr(struct ipv4_conf *c, const char *v, size_t n)
{
    size_t slash = 0;
    uint32_t addr, plen;
    while (slash < n && v[slash] != '/')
        slash++;
    if (slash == n || parse_ipv4(v, slash, &addr) < 0 ||
        slash + 1 >= n || n - slash - 1 > 2 ||
        parse_u32(v + slash + 1, n - slash - 1, &plen) < 0 || plen > 32)
        return ARG_INVALID;
    c->addr = addr;
    c->prefix = plen;
    c->set = 1;
    return ARG_OK;
}

static int set_ipv4(const char *v, size_t n)
{
    return set_cidr(&cfg.ipv4[0], v, n);
}

static int set_admin_ipv4(const char *v, size_t n)
{
    return set_cidr(&cfg.ipv4[1], v, n);
}

static int set_gateway(const char *v, size_t n)
{
    if (parse_ipv4(v, n, &cfg.gateway) < 0)
        return ARG_INVALID;
    cfg.have_gateway = 1;
    return ARG_OK;
}

static int set_name(const char *v, size_t n)
{
    if (n >= sizeof(cfg.name))
        return ARG_TOO_LONG;
    memcpy(cfg.name, v, n);
    cfg.name[n] = 0;
    cfg.have_name = 1;
    return ARG_OK;
}

static int set_exit_after(const char *v, size_t n)
{
    if (parse_u32(v, n, &cfg.exit_after_ms) < 0)
        return ARG_INVALID;
    cfg.have_exit_after = 1;
    return ARG_OK;
}

static int set_exit_code(const char *v, size_t n)
{
    if (parse_i32(v, n, &cfg.exit_code) < 0)
        return ARG_INVALID;
    cfg.have_exit_code = 1;
    return ARG_OK;
}

/* --blk-write=SECTOR:TEXT and --blk-read=SECTOR, done once the devices are up
 * (write first, then read) */
static struct {
    uint32_t write_sector, read_sector;
    char write_text[128];
    size_t write_len;
    uint8_t have_write, have_read;
} blk_args;

static int set_blk_write(const char *v, size_t n)
{
    size_t colon = 0;
    while (colon < n && v[colon] != ':')
        colon++;
    if (colon == n || parse_u32(v, colon, &blk_args.write_sector) < 0)
        return ARG_INVALID;
    if (n - colon - 1 >= sizeof(blk_args.write_text))
        return ARG_TOO_LONG;
    memcpy(blk_args.write_text, v + colon + 1, n - colon - 1);
    blk_args.write_len = n - colon - 1;
    blk_args.have_write = 1;
    return ARG_OK;
}

static int set_blk_read(const char *v, size_t n)
{
    if (parse_u32(v, n, &blk_args.read_sector) < 0)
        return ARG_INVALID;
    blk_args.have_read = 1;
    return ARG_OK;
}

static const struct option {
    const char *name;
    int (*set)(const char *v, size_t n);
    int empty_ok; /* an empty value is a value (an empty list) */
} options[] = {
    {"ipv4", set_ipv4, 0},           {"ipv4-gateway", set_gateway, 0},
    {"admin-ipv4", set_admin_ipv4, 0},
    {"name", set_name, 0},           {"exit-after", set_exit_after, 0},
    {"exit-code", set_exit_code, 0},
    {"blk-write", set_blk_write, 0}, {"blk-read", set_blk_read, 0},
    {"peers", gossip_set_peers, 1},
};

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Next whitespace-separated token at or after *pos; 0 when none is left. */
static int next_token(size_t *pos, const char **tok, size_t *len)
{
    size_t i = *pos;
    while (i < cmdline_len && is_space(cmdline[i]))
        i++;
    if (i >= cmdline_len)
        return 0;
    *tok = cmdline + i;
    while (i < cmdline_len && !is_space(cmdline[i]))
        i++;
    *len = (size_t)(cmdline + i - *tok);
    *pos = i;
    return 1;
}

static void parse_args(void)
{
    size_t pos = 0, n, vn;
    const char *t, *v;
    while (next_token(&pos, &t, &n)) {
        const struct option *opt = NULL;
        size_t klen;
        int rc;
        if (n < 3 || t[0] != '-' || t[1] != '-') {
            kprintf(TK "warning: unknown argument %q\n", t, n);
            continue;
        }
        for (klen = 2; klen < n && t[klen] != '='; klen++)
            ;
        for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
            if (mem_eq_str(t + 2, klen - 2, options[i].name))
                opt = &options[i];
        }
        if (!opt) {
            kprintf(TK "warning: unknown argument %q\n", t, n);
            continue;
        }
        if (klen < n) {
            /* --key=value */
            v = t + klen + 1;
            vn = n - klen - 1;
        } else {
            /* --key value: the value is the next token, unless that is
             * missing or is itself an option */
            size_t save = pos;
            if (!next_token(&pos, &v, &vn) || (vn >= 2 && v[0] == '-' &&
                                               v[1] == '-')) {
                pos = save;
                vn = 0;
            }
        }
        if (vn == 0 && !opt->empty_ok) {
            kprintf(TK "warning: missing value for argument %q\n", t, klen);
            continue;
        }
        rc = opt->set(v, vn);
        if (rc == ARG_TOO_LONG)
            kprintf(TK "warning: value too long for argument %q\n", t, klen);
        else if (rc != ARG_OK)
            kprintf(TK "warning: invalid value for argument %q: %q\n", t,
                    klen, v, vn);
    }
}

static void print_args(void)
{
    if (cfg.ipv4[0].set)
        kprintf(TK "arg ipv4=%I/%u\n", cfg.ipv4[0].addr, cfg.ipv4[0].prefix);
    if (cfg.have_gateway)
        kprintf(TK "arg ipv4-gateway=%I\n", cfg.gateway);
    if (cfg.ipv4[1].set)
        kprintf(TK "arg admin-ipv4=%I/%u\n", cfg.ipv4[1].addr,
                cfg.ipv4[1].prefix);
    if (cfg.have_name)
        kprintf(TK "arg name=%s\n", cfg.name);
    if (cfg.have_exit_after)
        kprintf(TK "arg exit-after=%u\n", cfg.exit_after_ms);
    if (cfg.have_exit_code)
        kprintf(TK "arg exit-code=%d\n", cfg.exit_code);
    gossip_print_args();
}

/* ---- devices ----------------------------------------------------------- */
/* The kernel's own Solo5 manifest (solo5_notes.S): 104-byte entries, the
 * device type a u32 at offset 68. */
#define MFT_ENTRY_SIZE 104
#define MFT_TYPE_OFFSET 68
#define MFT_BLOCK_BASIC 1
#define MFT_NET_BASIC 2
extern const uint8_t solo5_mft_entries[], solo5_mft_end[];

/* Manifest devices of each kind not yet bound to a PCI device. */
static uint32_t free_net, free_blk;
static int pci_failed;

static void manifest_init(void)
{
    for (const uint8_t *e = solo5_mft_entries; e < solo5_mft_end;
         e += MFT_ENTRY_SIZE) {
        uint32_t type;
        memcpy(&type, e + MFT_TYPE_OFFSET, sizeof(type));
        if (type == MFT_NET_BASIC)
            free_net++;
        else if (type == MFT_BLOCK_BASIC)
            free_blk++;
    }
}

/* Like Solo5's virtio bindings: every virtio-net or virtio-blk device must
 * take a free manifest entry of its kind, in PCI order, or enumeration fails
 * and the unikernel aborts before its application starts.  The lines are
 * Solo5's own (`kind` is "net" or "block").
 * Returns whether the device may be driven. */
static int claim(const struct pci_dev *d, const char *kind,
                 uint32_t *free_entries)
{
    uint32_t base = pci_read32(d, 0x10) & ~3u;
    uint32_t irq = pci_read32(d, 0x3C) & 0xFF;
    kprintf("Solo5: PCI:%02x:%02x: virtio-%s device, base=0x%x, irq=%u\n",
            d->bus, d->dev, kind, base, irq);
    if (*free_entries == 0) {
        kprintf("Solo5: Virtio %s: PCI:%02x:%02x not in manifest\n",
                kind, d->bus, d->dev);
        pci_failed = 1;
        return 0;
    }
    (*free_entries)--;
    return 1;
}

static void pci_visit(const struct pci_dev *d)
{
    if (pci_failed || d->vendor != VIRTIO_VENDOR)
        return;
    if (d->device == VIRTIO_DEV_NET_LEGACY) {
        if (claim(d, "net", &free_net) && vnet_init(d) < 0)
            kprintf(TK "warning: virtio-net at %02x:%02x.%u: init failed\n",
                    d->bus, d->dev, d->fn);
    } else if (d->device == VIRTIO_DEV_BLK_LEGACY) {
        if (claim(d, "block", &free_blk))
            vblk_init(d);
    } else if (d->device >= 0x1040) {
        kprintf(TK "warning: modern-only virtio device %04x:%04x at "
                   "%02x:%02x.%u ignored (needs a transitional device)\n",
                d->vendor, d->device, d->bus, d->dev, d->fn);
    }
}

void kmain(uint32_t magic, const uint32_t *mbi);
void kmain(uint32_t magic, const uint32_t *mbi)
{
    serial_init();
    kputs(TK "banner v1\n");
    kputs("Solo5: Bindings version v0.0.0-rhyzome-testkernel-v1\n");
    cpu_init();
    cmdline_init(magic, mbi);
    kprintf(TK "cmdline %q\n", cmdline, cmdline_len);
    parse_args();
    print_args();
    time_init();

    manifest_init();
    pci_scan(pci_visit);
    if (pci_failed) {
        kputs("Solo5: PCI enumeration failed. Aborting.\n");
        kputs("Solo5: solo5_abort() called\n");
        platform_poweroff(255); /* SOLO5_EXIT_ABORT */
    }
    if (vnet_count() == 0)
        kputs(TK "net none\n");
    for (int nic = 0; nic < vnet_count(); nic++) {
        const uint8_t *m = vnet_mac(nic);
        /* NIC 0's line predates multi-NIC support and stays unnumbered */
        kputs(TK "net");
        if (nic > 0)
            kprintf("%d", nic);
        kprintf(" mac=%02x:%02x:%02x:%02x:%02x:%02x\n", m[0], m[1], m[2],
                m[3], m[4], m[5]);
    }
    if (blk_args.have_write || blk_args.have_read) {
        char line[700];
        if (!vblk_present()) {
            kputs(TK "warning: --blk-write/--blk-read without a block device\n");
        } else {
            if (blk_args.have_write) {
                vblk_write_text(blk_args.write_sector, blk_args.write_text,
                                blk_args.write_len, line, sizeof(line));
                kputs(line);
            }
            if (blk_args.have_read) {
                vblk_read_text(blk_args.read_sector, line, sizeof(line));
                kputs(line);
            }
        }
    }
    kputs(TK "ready\n");

    for (;;) {
        vnet_poll();
        net_tick();
        if (cfg.have_exit_after && uptime_ms() >= cfg.exit_after_ms)
            solo5_exit(cfg.exit_code);
        idle_wait();
    }
}
