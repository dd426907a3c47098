/*
 * rhyzome-testkernel: shared declarations.
 *
 * A tiny 32-bit multiboot v1 kernel that behaves, as far as a provisioner can
 * see, like a Solo5 "virtio" unikernel.  Everything runs in ring 0, flat
 * protected mode, no paging, one CPU, interrupts only for the PIT wake-up.
 */
#ifndef RHYZOME_TESTKERNEL_H
#define RHYZOME_TESTKERNEL_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned int size_t;
typedef unsigned int uintptr_t;

#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define TK "rhyzome-testkernel: "

/* ---- port I/O ---------------------------------------------------------- */
static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/* Full barrier: orders our ring writes against the device (QEMU thread). */
static inline void mb(void)
{
    __asm__ volatile("lock; addl $0, (%%esp)" : : : "memory", "cc");
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* ---- lib.c ------------------------------------------------------------- */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int mem_eq_str(const char *p, size_t n, const char *lit);
int parse_u32(const char *p, size_t n, uint32_t *out);
int parse_i32(const char *p, size_t n, int32_t *out);
int parse_u64(const char *p, size_t n, uint64_t *out);
int parse_ipv4(const char *p, size_t n, uint32_t *out);
uint64_t udiv64(uint64_t n, uint64_t d);

/* ---- console.c --------------------------------------------------------- */
void serial_init(void);
void console_write(const char *s, size_t n);
void kputs(const char *s);
/* printf subset: %s %c %d %u %x (with 0/width), %llu %llx, %q = quoted
 * escaped (char *, size_t) pair, %I = IPv4 address (uint32_t, host order). */
void kprintf(const char *fmt, ...);
int ksnprintf(char *buf, size_t cap, const char *fmt, ...);

/* ---- cpu.c ------------------------------------------------------------- */
void cpu_init(void);         /* IDT, PIC */
void time_init(void);        /* calibrate TSC against the PIT, start 100 Hz */
uint64_t uptime_ms(void);
uint64_t uptime_us(void);
int time_ready(void);
void idle_wait(void);        /* sti; hlt; cli: sleeps until the next tick */
void delay_ms(uint32_t ms);
uint64_t tsc_per_ms_rate(void);

/* ---- rtc.c ------------------------------------------------------------- */
void rtc_init(void);           /* update-ended interrupt on (time_init) */
int wall_clock_synced(void);   /* a second edge has been seen */
uint64_t wall_clock_ms(void);  /* ms since the Unix epoch; 0 until synced */
void wall_clock_set(uint64_t epoch_ms); /* a sample of the setter's clock */
int wall_clock_corrected(void); /* clock-set has been received */
int wall_clock_rate_measured(void); /* the TSC's rate comes from RTC edges */

/* ---- pci.c ------------------------------------------------------------- */
struct pci_dev {
    uint8_t bus, dev, fn;
    uint16_t vendor, device;
};
uint32_t pci_read32(const struct pci_dev *d, uint8_t off);
void pci_write16(const struct pci_dev *d, uint8_t off, uint16_t v);
typedef void (*pci_visit_fn)(const struct pci_dev *d);
void pci_scan(pci_visit_fn fn);

/* ---- virtio.c ---------------------------------------------------------- */
#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_DEV_NET_LEGACY 0x1000
#define VIRTIO_DEV_BLK_LEGACY 0x1001

struct vq {
    uint16_t num;        /* queue size as reported by the device */
    uint16_t index;      /* queue number */
    uint16_t last_used;  /* next used-ring entry we have not consumed */
    volatile uint8_t *mem;
    volatile uint8_t *desc;   /* 16 bytes per entry */
    volatile uint16_t *avail; /* flags, idx, ring[num] */
    volatile uint16_t *used;  /* flags, idx, then {u32 id, u32 len}[num] */
};
int virtio_legacy_begin(const struct pci_dev *d, uint16_t *iobase,
                        uint32_t *features);
int vq_setup(uint16_t iobase, uint16_t index, struct vq *q, uint8_t *mem,
             uint32_t memsize);
void vq_set_desc(struct vq *q, uint16_t i, uint32_t addr, uint32_t len,
                 uint16_t flags, uint16_t next);
void vq_push_avail(struct vq *q, uint16_t head);
int vq_pop_used(struct vq *q, uint32_t *id, uint32_t *len);
uint16_t vq_used_idx(struct vq *q);
void vq_notify(uint16_t iobase, struct vq *q);
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

/* ---- virtio_net.c / net.c ---------------------------------------------- */
/* NICs are indexed 0..vnet_count()-1 in PCI scan order. */
#define VNET_MAX 2
int vnet_init(const struct pci_dev *d); /* new NIC's index, or -1 */
int vnet_count(void);
const uint8_t *vnet_mac(int nic);
void vnet_poll(void);                   /* all NICs */
uint8_t *vnet_tx_buf(int nic);          /* frame area of the next tx slot */
void vnet_tx_send(int nic, uint32_t len);
void vnet_tx_flush(int nic);            /* wait (bounded) until the device
                                           took all */
extern uint32_t net_rx_packets, net_tx_packets;

void net_input(int nic, uint8_t *frame, uint32_t len);
void net_tick(void); /* timers of the probe command and of gossip */
void net_udp_send(int nic, const uint8_t *dst_mac, uint32_t dst,
                  uint16_t sport, uint16_t dport, const void *data,
                  uint32_t dlen);
void net_arp_request(int nic, uint32_t ip);
/* Splits "a b c d" into up to max words; returns how many. */
int split_words(const char *p, size_t n, const char **w, size_t *len, int max);

/* ---- gossip.c ---------------------------------------------------------- */
#define GOSSIP_PORT 7946
int gossip_set_peers(const char *v, size_t n); /* --peers; 0, -1, -2 */
void gossip_print_args(void);
void gossip_input(const uint8_t *src_mac, uint32_t src_ip, const uint8_t *data,
                  uint32_t dlen);
void gossip_arp_seen(uint32_t ip, const uint8_t *mac);
void gossip_tick(void);

/* ---- virtio_blk.c ------------------------------------------------------ */
#define VBLK_SECTOR 512
int vblk_init(const struct pci_dev *d);
int vblk_present(void);
uint64_t vblk_capacity(void); /* sectors */
/* 0 on success, else the Solo5 result name of the failure */
const char *vblk_read(uint64_t sector, uint8_t out[VBLK_SECTOR]);
const char *vblk_write(uint64_t sector, const uint8_t in[VBLK_SECTOR]);
size_t vblk_text_len(const uint8_t s[VBLK_SECTOR]);
void vblk_write_text(uint64_t sector, const char *text, size_t n, char *line,
                     size_t cap);
void vblk_read_text(uint64_t sector, char *line, size_t cap);

/* ---- acpi.c / exit ------------------------------------------------------ */
void platform_poweroff(int code) __attribute__((noreturn));

/* ---- main.c ------------------------------------------------------------ */
struct ipv4_conf {
    uint32_t addr, prefix;
    uint8_t set;
};
struct config {
    struct ipv4_conf ipv4[VNET_MAX]; /* per NIC: --ipv4, --admin-ipv4 */
    uint32_t gateway;
    char name[64];
    uint32_t exit_after_ms;
    int32_t exit_code;
    uint8_t have_gateway, have_name, have_exit_after, have_exit_code;
};
extern struct config cfg;

void solo5_exit(int code) __attribute__((noreturn));
void solo5_abort(const char *file, int line, const char *msg)
    __attribute__((noreturn));
#define PANIC(msg) solo5_abort(__FILE_NAME__, __LINE__, (msg))

#endif
